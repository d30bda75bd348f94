//! The workloads a SecretSync rolls out to, and everything in a namespace that may still
//! use one of its versions. The decisions are in [`crate::rollout`]; this module does the
//! reading and patching.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use secretsync_api::{SecretSync, WorkloadKind, selector};
use serde::Serialize;
use serde_json::Value;

use crate::rollout::referenced_versions;

/// Reflected Deployments, StatefulSets and DaemonSets (full objects: progress needs status).
#[derive(Clone)]
pub struct Workloads {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub daemonsets: Store<DaemonSet>,
}

fn to_value<K: Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).expect("Kubernetes objects serialize")
}

impl Workloads {
    /// The rollout targets of a SecretSync: the listed ones and every workload of the three
    /// kinds in its namespace that matches `rollout.selector`; sorted, without duplicates.
    pub fn targets(&self, sync: &SecretSync) -> Vec<(WorkloadKind, String)> {
        let Some(rollout) = &sync.spec.rollout else {
            return Vec::new();
        };
        let namespace = sync.namespace().unwrap_or_default();
        let mut targets: BTreeSet<(WorkloadKind, String)> = rollout
            .targets
            .iter()
            .flatten()
            .map(|t| (t.kind, t.name.clone()))
            .collect();
        if let Some(sel) = &rollout.selector {
            let mut add = |kind: WorkloadKind,
                           ns: Option<String>,
                           name: String,
                           labels: &BTreeMap<String, String>| {
                if ns.as_deref() == Some(namespace.as_str()) && selector::matches(sel, labels) {
                    targets.insert((kind, name));
                }
            };
            for d in self.deployments.state() {
                add(
                    WorkloadKind::Deployment,
                    d.namespace(),
                    d.name_any(),
                    d.labels(),
                );
            }
            for s in self.statefulsets.state() {
                add(
                    WorkloadKind::StatefulSet,
                    s.namespace(),
                    s.name_any(),
                    s.labels(),
                );
            }
            for d in self.daemonsets.state() {
                add(
                    WorkloadKind::DaemonSet,
                    d.namespace(),
                    d.name_any(),
                    d.labels(),
                );
            }
        }
        targets.into_iter().collect()
    }

    /// Whether a workload is (or may be) a target of `sync`, to wake it on workload events.
    pub fn may_target(
        sync: &SecretSync,
        kind: WorkloadKind,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let Some(rollout) = &sync.spec.rollout else {
            return false;
        };
        rollout
            .targets
            .iter()
            .flatten()
            .any(|t| t.kind == kind && t.name == name)
            || rollout
                .selector
                .as_ref()
                .is_some_and(|s| selector::matches(s, labels))
            || sync
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .is_some_and(|r| r.targets.iter().any(|t| t.kind == kind && t.name == name))
    }

    /// A workload as JSON, from the reflector (no API call).
    pub fn get(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Value> {
        let key = |n: &str| (n.to_owned(), namespace.to_owned());
        let (name, namespace) = key(name);
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(&name).within(&namespace))
                .map(|o| to_value(&*o)),
            WorkloadKind::StatefulSet => self
                .statefulsets
                .get(&ObjectRef::new(&name).within(&namespace))
                .map(|o| to_value(&*o)),
            WorkloadKind::DaemonSet => self
                .daemonsets
                .get(&ObjectRef::new(&name).within(&namespace))
                .map(|o| to_value(&*o)),
        }
    }
}

/// Applies a JSON patch (from [`crate::rollout::rewrite_patch`]) to a workload.
pub async fn patch_workload(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    patch: Value,
) -> kube::Result<()> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).expect("rewrite_patch builds valid JSON patches");
    let params = PatchParams::default();
    let patch = Patch::<()>::Json(patch);
    match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}

/// Which versions of `base` are still in use in a namespace, and by what (`Kind/name`):
/// every Pod that has not finished and every pod template that can still make Pods
/// (Deployments, StatefulSets, DaemonSets, ReplicaSets with replicas, unfinished Jobs,
/// CronJobs). A ReplicaSet scaled to zero only remembers an old Deployment revision, so it
/// does not hold a version back.
pub async fn references(
    client: &Client,
    workloads: &Workloads,
    namespace: &str,
    base: &str,
) -> kube::Result<BTreeMap<i64, Vec<String>>> {
    let mut used: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut note = |kind: &str, name: String, value: &Value| {
        for v in referenced_versions(kind, value, base) {
            used.entry(v).or_default().push(format!("{kind}/{name}"));
        }
    };
    for d in workloads.deployments.state() {
        if d.namespace().as_deref() == Some(namespace) {
            note("Deployment", d.name_any(), &to_value(&*d));
        }
    }
    for s in workloads.statefulsets.state() {
        if s.namespace().as_deref() == Some(namespace) {
            note("StatefulSet", s.name_any(), &to_value(&*s));
        }
    }
    for d in workloads.daemonsets.state() {
        if d.namespace().as_deref() == Some(namespace) {
            note("DaemonSet", d.name_any(), &to_value(&*d));
        }
    }
    let lp = ListParams::default();
    for rs in Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let wanted = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let running = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
        if wanted > 0 || running > 0 {
            note("ReplicaSet", rs.name_any(), &to_value(&rs));
        }
    }
    for job in Api::<Job>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let finished = job.status.as_ref().is_some_and(|s| {
            s.completion_time.is_some()
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
        if !finished {
            note("Job", job.name_any(), &to_value(&job));
        }
    }
    for cj in Api::<CronJob>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        note("CronJob", cj.name_any(), &to_value(&cj));
    }
    for pod in Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, Some("Succeeded" | "Failed")) {
            note("Pod", pod.name_any(), &to_value(&pod));
        }
    }
    for users in used.values_mut() {
        users.sort();
        users.dedup();
    }
    Ok(used)
}
