//! The workloads a SecretSync rolls out to, and everything in a namespace that may still use
//! one of its versions. The pod-spec rules are in [`crate::podspec`]; this module keeps the
//! cache and does the reading and patching.
//!
//! Memory follows the work, not the cluster: the cache keeps each Deployment, StatefulSet
//! and DaemonSet reduced to what a decision reads — name, labels, resourceVersion, replica
//! counts, pause, update strategy, selector, status, and the Secret references of its pod template at their original list
//! positions (so a patch built from the reduced copy addresses the real object). Other
//! fields (images, commands, plain env values, annotations, managedFields) are dropped as
//! the watch delivers them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use secretsync_api::{SecretSync, WorkloadKind, selector};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::podspec::object_secret_names;

/// Reduces a workload to what rollout decisions read (see the module docs). Works on any of
/// the kinds, whose pod templates sit at the same place.
pub fn reduce(object: &Value) -> Value {
    let pick = |from: &Value, keys: &[&str]| -> Value {
        let mut out = Map::new();
        for key in keys {
            if let Some(v) = from.get(*key) {
                out.insert((*key).to_owned(), v.clone());
            }
        }
        Value::Object(out)
    };
    let metadata = pick(
        &object["metadata"],
        &[
            "name",
            "namespace",
            "labels",
            "resourceVersion",
            "generation",
            "uid",
        ],
    );
    let mut metadata = metadata;
    if let Some(manager) = last_writer(&object["metadata"]) {
        // Who wrote the workload last, to name in a `RolloutReverted` event; not the rest
        // of managedFields, which is most of an object's metadata.
        metadata["managedFields"] = json!([{"manager": manager}]);
    }
    // `paused` and `updateStrategy` change what done means; the selector finds the Pods
    // whose failures a failed rollout reports.
    let mut spec = pick(&object["spec"], &["replicas", "paused", "selector"]);
    if let Some(strategy) = object.pointer("/spec/updateStrategy/type") {
        spec["updateStrategy"] = json!({"type": strategy});
    }
    if let Some(pod_spec) = object.pointer("/spec/template/spec") {
        spec["template"] = json!({"spec": reduce_pod_spec(pod_spec)});
    }
    let mut reduced = json!({"metadata": metadata, "spec": spec});
    if let Some(status) = object.get("status") {
        reduced["status"] = reduce_status(status);
    }
    reduced
}

/// Who set the pod template's Secret references: of the managedFields entries other than the
/// operator's own that manage pod-template fields, the newest that owns the name of a Secret
/// reference (a field moves to whoever last changed its value), else the newest of them.
/// Entry times have one-second resolution, so "newest" alone cannot tell a creation from an
/// undo in the same second. Status writers and the Deployment controller's revision
/// annotation do not count.
fn last_writer(metadata: &Value) -> Option<&str> {
    let time = |m: &Value| {
        m.get("time")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let template_writers: Vec<&Value> = metadata
        .get("managedFields")?
        .as_array()?
        .iter()
        .filter(|m| {
            m.get("manager").and_then(Value::as_str) != Some(secretsync_api::labels::FIELD_MANAGER)
        })
        .filter(|m| m.pointer("/fieldsV1/f:spec/f:template").is_some())
        .collect();
    template_writers
        .iter()
        .filter(|m| owns_reference_name(&m["fieldsV1"]["f:spec"]["f:template"]))
        .max_by_key(|m| time(m))
        .or_else(|| template_writers.iter().max_by_key(|m| time(m)))?
        .get("manager")?
        .as_str()
}

/// Whether a fieldsV1 subtree holds the name of a Secret reference. What is atomic has one
/// owner for the whole and fieldsV1 lists nothing under it (as a real kube-apiserver writes
/// them): a `secretKeyRef`, the `envFrom` list and a projected volume's `sources` list.
/// Otherwise the name itself: a volume's `secret.secretName` (or `secret.name`).
fn owns_reference_name(fields: &Value) -> bool {
    let Some(fields) = fields.as_object() else {
        return false;
    };
    fields.iter().any(|(key, inner)| {
        let names = match key.as_str() {
            "f:secretKeyRef" | "f:envFrom" | "f:sources" => true,
            "f:secretRef" => inner.get("f:name").is_some(),
            "f:secret" => inner.get("f:name").is_some() || inner.get("f:secretName").is_some(),
            _ => false,
        };
        names || owns_reference_name(inner)
    })
}

/// Who last wrote a reduced workload (see [`reduce`]), if its managedFields said.
pub fn last_manager(reduced: &Value) -> Option<&str> {
    reduced
        .pointer("/metadata/managedFields/0/manager")?
        .as_str()
}

/// The status fields `podspec::rollout_progress` reads, for any of the kinds, and of the
/// conditions only the Deployment controller's verdict that progress stalled. The whole
/// status (every condition with its messages and times) was most of a cached workload.
fn reduce_status(status: &Value) -> Value {
    const READ: &[&str] = &[
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "currentRevision",
        "updateRevision",
        "desiredNumberScheduled",
        "updatedNumberScheduled",
        "numberReady",
        "numberAvailable",
        "phase",
        "message",
    ];
    let mut out: Map<String, Value> = READ
        .iter()
        .filter_map(|key| Some(((*key).to_owned(), status.get(*key)?.clone())))
        .collect();
    let stalled: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded"))
        .map(|c| json!({"type": c.get("type"), "reason": c.get("reason"), "message": c.get("message")}))
        .collect();
    if !stalled.is_empty() {
        out.insert("conditions".to_owned(), Value::Array(stalled));
    }
    Value::Object(out)
}

/// Keeps every container, env entry, envFrom entry, volume, projected source and image pull
/// secret at its index, but only their Secret references.
fn reduce_pod_spec(pod_spec: &Value) -> Value {
    let list = |value: Option<&Value>, keep: &dyn Fn(&Value) -> Value| -> Value {
        Value::Array(
            value
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(keep)
                .collect(),
        )
    };
    let at = |value: &Value, pointer: &str, wrap: &dyn Fn(Value) -> Value| -> Value {
        value
            .pointer(pointer)
            .map(|name| wrap(name.clone()))
            .unwrap_or_else(|| json!({}))
    };
    let container = |c: &Value| {
        json!({
            "env": list(c.get("env"), &|e| at(e, "/valueFrom/secretKeyRef/name", &|n| json!({"valueFrom": {"secretKeyRef": {"name": n}}}))),
            "envFrom": list(c.get("envFrom"), &|e| at(e, "/secretRef/name", &|n| json!({"secretRef": {"name": n}}))),
        })
    };
    let volume = |v: &Value| {
        if let Some(name) = v.pointer("/secret/secretName") {
            return json!({"secret": {"secretName": name}});
        }
        match v.pointer("/projected/sources") {
            Some(sources) => {
                json!({"projected": {"sources": list(Some(sources), &|s| at(s, "/secret/name", &|n| json!({"secret": {"name": n}})))}})
            }
            None => json!({}),
        }
    };
    json!({
        "containers": list(pod_spec.get("containers"), &container),
        "initContainers": list(pod_spec.get("initContainers"), &container),
        "volumes": list(pod_spec.get("volumes"), &volume),
        "imagePullSecrets": list(pod_spec.get("imagePullSecrets"), &|r| at(r, "/name", &|n| json!({"name": n}))),
    })
}

type Key = (WorkloadKind, String);

/// Every (Secret name, `Kind/name` of its user) found in one namespace.
type References = Arc<Vec<(String, String)>>;
/// Reference scans by namespace, with when they were made.
type Scans = HashMap<String, (Instant, References)>;

#[derive(Default)]
struct Inner {
    /// namespace → (kind, name) → reduced workload
    by_namespace: HashMap<String, BTreeMap<Key, Arc<Value>>>,
    relist: HashMap<WorkloadKind, Vec<(String, Key, Arc<Value>)>>,
}

/// Reduced Deployments, StatefulSets, DaemonSets and (when served) Argo Rollouts by
/// namespace, fed by their watches.
pub struct Workloads {
    inner: Mutex<Inner>,
    /// Whether the API server serves Argo Rollouts (found by discovery at start), so a
    /// missing Rollout target can be told apart from a missing CRD.
    rollouts_served: AtomicBool,
    /// Namespace-wide reference scans share one result for a few seconds, and at most two
    /// run at once, so many SecretSyncs waiting on old versions cost a bounded load.
    scans: Mutex<Scans>,
    scan_permits: Semaphore,
}

/// How long a namespace's reference scan is reused.
const SCAN_REUSE: Duration = Duration::from_secs(5);
/// Page size of the lists a reference scan makes.
pub(crate) const SCAN_PAGE: u32 = 250;

impl Default for Workloads {
    fn default() -> Self {
        Self::new()
    }
}

impl Workloads {
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
            rollouts_served: AtomicBool::new(false),
            scans: Mutex::default(),
            scan_permits: Semaphore::new(2),
        }
    }

    pub fn set_rollouts_served(&self, served: bool) {
        self.rollouts_served.store(served, Ordering::Release);
    }

    /// Whether targets of `kind` can exist at all: Rollouts only when their CRD is served.
    pub fn kind_served(&self, kind: WorkloadKind) -> bool {
        kind != WorkloadKind::Rollout || self.rollouts_served.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a workload (reduced); returns the reduced copy.
    pub fn apply(&self, kind: WorkloadKind, object: &Value) -> Arc<Value> {
        let reduced = Arc::new(reduce(object));
        let (namespace, name) = names(object);
        self.lock()
            .by_namespace
            .entry(namespace)
            .or_default()
            .insert((kind, name), reduced.clone());
        reduced
    }

    pub fn delete(&self, kind: WorkloadKind, object: &Value) {
        let (namespace, name) = names(object);
        let mut inner = self.lock();
        if let Some(workloads) = inner.by_namespace.get_mut(&namespace) {
            workloads.remove(&(kind, name));
            if workloads.is_empty() {
                inner.by_namespace.remove(&namespace);
            }
        }
    }

    pub fn relist_start(&self, kind: WorkloadKind) {
        self.lock().relist.insert(kind, Vec::new());
    }

    pub fn relist_apply(&self, kind: WorkloadKind, object: &Value) {
        let (namespace, name) = names(object);
        let reduced = Arc::new(reduce(object));
        if let Some(buffer) = self.lock().relist.get_mut(&kind) {
            buffer.push((namespace, (kind, name), reduced));
        }
    }

    /// A relist of one kind completed: its objects replace that kind's entries.
    pub fn relist_done(&self, kind: WorkloadKind) {
        let mut inner = self.lock();
        let listed = inner.relist.remove(&kind).unwrap_or_default();
        for workloads in inner.by_namespace.values_mut() {
            workloads.retain(|(k, _), _| *k != kind);
        }
        for (namespace, key, reduced) in listed {
            inner
                .by_namespace
                .entry(namespace)
                .or_default()
                .insert(key, reduced);
        }
        inner.by_namespace.retain(|_, w| !w.is_empty());
    }

    /// The reduced workload (no API call).
    pub fn get(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .by_namespace
            .get(namespace)?
            .get(&(kind, name.to_owned()))
            .cloned()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_namespace.values().map(BTreeMap::len).sum()
    }

    /// The rollout targets of a SecretSync: the listed ones and every cached workload in its namespace that matches `rollout.selector`; sorted, without duplicates.
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
            let inner = self.lock();
            for ((kind, name), workload) in inner.by_namespace.get(&namespace).into_iter().flatten()
            {
                let labels: BTreeMap<String, String> = workload
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                if selector::matches(sel, &labels) {
                    targets.insert((*kind, name.clone()));
                }
            }
        }
        targets.into_iter().collect()
    }

    /// Which of the versions `names` (Secret name → version) are still in use in a
    /// namespace, and by what (`Kind/name`): every Pod that has not finished, every pod
    /// template that can still make Pods
    /// (Deployments, StatefulSets, DaemonSets, Argo Rollouts, ReplicaSets with replicas,
    /// unfinished Jobs, CronJobs) and every ServiceAccount's `imagePullSecrets`. A ReplicaSet scaled to zero only remembers an old Deployment revision, so
    /// it does not hold a version back.
    pub async fn references(
        &self,
        client: &Client,
        namespace: &str,
        names: &BTreeMap<&str, i64>,
    ) -> kube::Result<BTreeMap<i64, Vec<String>>> {
        let mut used: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (secret, user) in self.namespace_references(client, namespace).await?.iter() {
            if let Some(&v) = names.get(secret.as_str()) {
                used.entry(v).or_default().push(user.clone());
            }
        }
        for users in used.values_mut() {
            users.sort();
            users.dedup();
        }
        Ok(used)
    }

    /// Every (Secret name, `Kind/name` of its user) in a namespace, reused for a few seconds.
    async fn namespace_references(
        &self,
        client: &Client,
        namespace: &str,
    ) -> kube::Result<References> {
        let fresh = |scans: &Scans| {
            scans
                .get(namespace)
                .filter(|(at, _)| at.elapsed() < SCAN_REUSE)
                .map(|(_, refs)| refs.clone())
        };
        if let Some(refs) = fresh(&self.scans_lock()) {
            return Ok(refs);
        }
        let _permit = self
            .scan_permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        // Another pass may have scanned while this one waited.
        if let Some(refs) = fresh(&self.scans_lock()) {
            return Ok(refs);
        }
        let refs = Arc::new(self.scan(client, namespace).await?);
        let mut scans = self.scans_lock();
        scans.retain(|_, (at, _)| at.elapsed() < SCAN_REUSE);
        scans.insert(namespace.to_owned(), (Instant::now(), refs.clone()));
        Ok(refs)
    }

    fn scans_lock(&self) -> MutexGuard<'_, Scans> {
        self.scans.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn scan(&self, client: &Client, namespace: &str) -> kube::Result<Vec<(String, String)>> {
        let mut refs = Vec::new();
        let mut note = |kind: &str, name: &str, object: &Value| {
            for secret in object_secret_names(kind, object) {
                refs.push((secret, format!("{kind}/{name}")));
            }
        };
        let cached: Vec<(Key, Arc<Value>)> = self
            .lock()
            .by_namespace
            .get(namespace)
            .map(|w| w.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for ((kind, name), workload) in &cached {
            note(kind.as_str(), name, workload);
        }
        for_each_page::<ReplicaSet>(client, namespace, |rs| {
            let wanted = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let running = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
            if wanted > 0 || running > 0 {
                note("ReplicaSet", &rs.name_any(), &to_value(rs));
            }
        })
        .await?;
        for_each_page::<Job>(client, namespace, |job| {
            let finished = job.status.as_ref().is_some_and(|s| {
                s.completion_time.is_some()
                    || s.conditions.iter().flatten().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
            });
            if !finished {
                note("Job", &job.name_any(), &to_value(job));
            }
        })
        .await?;
        for_each_page::<CronJob>(client, namespace, |cj| {
            note("CronJob", &cj.name_any(), &to_value(cj));
        })
        .await?;
        // A ServiceAccount's imagePullSecrets go into every Pod made to run as it.
        for_each_page::<ServiceAccount>(client, namespace, |sa| {
            note("ServiceAccount", &sa.name_any(), &to_value(sa));
        })
        .await?;
        for_each_page::<Pod>(client, namespace, |pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if !matches!(phase, Some("Succeeded" | "Failed")) {
                note("Pod", &pod.name_any(), &to_value(pod));
            }
        })
        .await?;
        Ok(refs)
    }
}

/// Lists a namespace's objects of one kind page by page, so a namespace with thousands of
/// Pods never sits in memory whole.
async fn for_each_page<K>(
    client: &Client,
    namespace: &str,
    mut each: impl FnMut(&K),
) -> kube::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let mut params = ListParams::default().limit(SCAN_PAGE);
    loop {
        let page = api.list(&params).await?;
        page.items.iter().for_each(&mut each);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

fn names(object: &Value) -> (String, String) {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

pub fn to_value<K: Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).expect("Kubernetes objects serialize")
}

/// The [`Workloads`] of one kind, as the cache its watch fills.
pub struct WorkloadsOf<K> {
    workloads: Arc<Workloads>,
    kind: WorkloadKind,
    of: std::marker::PhantomData<fn(K)>,
}

/// A workload that changed or went: the SecretSyncs rolling out to it are woken.
pub struct WorkloadChange {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl<K: kube::Resource + Serialize> WorkloadsOf<K> {
    pub fn new(workloads: Arc<Workloads>, kind: WorkloadKind) -> Self {
        Self {
            workloads,
            kind,
            of: std::marker::PhantomData,
        }
    }

    fn change(&self, workload: &K) -> Vec<WorkloadChange> {
        vec![WorkloadChange {
            namespace: workload.namespace().unwrap_or_default(),
            name: workload.name_any(),
            labels: workload.labels().clone(),
        }]
    }
}

impl<K: kube::Resource + Serialize + 'static> super::Cache<K> for WorkloadsOf<K> {
    type Change = WorkloadChange;

    fn relist_start(&self) {
        self.workloads.relist_start(self.kind);
    }

    fn relist_apply(&self, workload: &K) {
        self.workloads.relist_apply(self.kind, &to_value(workload));
    }

    fn relist_done(&self) -> Vec<WorkloadChange> {
        self.workloads.relist_done(self.kind);
        Vec::new()
    }

    fn apply(&self, workload: &K) -> Vec<WorkloadChange> {
        self.workloads.apply(self.kind, &to_value(workload));
        self.change(workload)
    }

    fn delete(&self, workload: &K) -> Vec<WorkloadChange> {
        self.workloads.delete(self.kind, &to_value(workload));
        self.change(workload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podspec::{Progress, rewrite_patch, rollout_progress, secret_refs};

    fn db() -> Vec<String> {
        vec!["db".to_owned()]
    }

    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: payments
  resourceVersion: "77"
  generation: 3
  labels: {team: payments}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{...a large blob...}"}
  managedFields:
    - {manager: kubectl, operation: Apply, time: "2026-11-23T10:00:00Z", fieldsV1: {f:spec: {f:template: {}}}}
    - {manager: kube-controller-manager, operation: Update, time: "2026-11-23T10:00:05Z", fieldsV1: {f:metadata: {}}}
    - {manager: secretsync, operation: Update, time: "2026-11-23T10:00:09Z", fieldsV1: {f:spec: {f:template: {}}}}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      imagePullSecrets: [{name: registry}, {name: db-v1}]
      initContainers:
        - name: migrate
          image: migrate:1
          envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: db-v1}}]
      containers:
        - name: app
          image: app:2
          command: [serve, --port, "8080"]
          env:
            - {name: MODE, value: production}
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: db-v1, key: password}}
            - name: NODE
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
      volumes:
        - {name: cache, emptyDir: {}}
        - {name: creds, secret: {secretName: db-v1}}
        - name: all
          projected:
            sources:
              - configMap: {name: cfg}
              - secret: {name: db-v1}
status: {observedGeneration: 3, replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2}
"#;

    fn deployment() -> Value {
        serde_yaml::from_str(DEPLOYMENT).unwrap()
    }

    #[test]
    fn the_reduced_copy_patches_and_reads_like_the_original() {
        let full = deployment();
        let reduced = reduce(&full);
        assert_eq!(
            rewrite_patch(WorkloadKind::Deployment, &reduced, &db(), "db-v2"),
            rewrite_patch(WorkloadKind::Deployment, &full, &db(), "db-v2"),
            "same paths, same guards"
        );
        assert_eq!(
            rollout_progress(WorkloadKind::Deployment, &reduced),
            Progress::Complete
        );
        assert_eq!(
            secret_refs(reduced.pointer("/spec/template/spec").unwrap()),
            secret_refs(full.pointer("/spec/template/spec").unwrap())
        );
    }

    #[test]
    fn a_stalled_rollout_reads_as_failed_in_the_reduced_copy() {
        let mut full = deployment();
        full["spec"]["replicas"] = json!(2);
        full["status"] = json!({
            "observedGeneration": full["metadata"]["generation"],
            "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"api-7d\" has timed out progressing."},
            ],
        });
        let reduced = reduce(&full);
        let progress = rollout_progress(WorkloadKind::Deployment, &reduced);
        assert!(matches!(progress, Progress::Failed { .. }), "{progress:?}");
        assert_eq!(progress, rollout_progress(WorkloadKind::Deployment, &full));
        assert!(!reduced.to_string().contains("MinimumReplicasAvailable"));
    }

    #[test]
    fn the_reduced_copy_keeps_no_unrelated_data() {
        let reduced = reduce(&deployment()).to_string();
        for dropped in [
            "last-applied",
            "Apply",
            "fieldsV1",
            "app:2",
            "--port",
            "production",
            "cfg",
            "nodeName",
            "emptyDir",
        ] {
            assert!(!reduced.contains(dropped), "{dropped} kept: {reduced}");
        }
        assert!(reduced.len() < DEPLOYMENT.len() / 2, "{}", reduced.len());
        // Of managedFields, only who wrote it last (for `RolloutReverted` events).
        assert_eq!(last_manager(&reduce(&deployment())), Some("kubectl"));
    }

    /// `kubectl rollout undo` in the same second as the Deployment's creation (a real API
    /// server's managedFields times are whole seconds): the undo owns the reference's name,
    /// the creator only the rest of the template, so the undo is named. The entries are as
    /// a real kube-apiserver 1.37 wrote them: `secretKeyRef` is an atomic struct, owned
    /// whole (`{}`), while the creator keeps `valueFrom` itself.
    #[test]
    fn the_writer_of_a_reference_wins_a_same_second_tie() {
        let env = |value_from: Value| {
            json!({"f:containers": {"k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"DB\"}": {
                "f:valueFrom": value_from}}}}})
        };
        let metadata = json!({"managedFields": [
            {"manager": "kubectl-rollout", "operation": "Update", "time": "2026-11-23T10:00:00Z",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": env(json!({"f:secretKeyRef": {}}))}}}},
            {"manager": "unknown", "operation": "Update", "time": "2026-11-23T10:00:00Z",
             "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": env(json!({}))}}}},
        ]});
        assert_eq!(last_writer(&metadata), Some("kubectl-rollout"));
        // envFrom and projected sources are atomic lists; a volume's secretName is a field.
        for owned in [
            json!({"f:containers": {"k:{\"name\":\"app\"}": {"f:envFrom": {}}}}),
            json!({"f:volumes": {"k:{\"name\":\"p\"}": {"f:projected": {"f:sources": {}}}}}),
            json!({"f:volumes": {"k:{\"name\":\"s\"}": {"f:secret": {"f:secretName": {}}}}}),
        ] {
            let mut undone = metadata.clone();
            undone["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"] = owned;
            assert_eq!(last_writer(&undone), Some("kubectl-rollout"));
        }
        // Without a reference name owned anywhere, the newest template writer.
        let mut creator_only = metadata.clone();
        creator_only["managedFields"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        assert_eq!(last_writer(&creator_only), Some("unknown"));
    }

    #[test]
    fn targets_by_selector_are_found_within_the_namespace() {
        let workloads = Workloads::new();
        workloads.apply(WorkloadKind::Deployment, &deployment());
        let mut elsewhere = deployment();
        elsewhere["metadata"]["namespace"] = json!("shop");
        elsewhere["metadata"]["name"] = json!("other");
        workloads.apply(WorkloadKind::Deployment, &elsewhere);
        let sync: SecretSync = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
            "metadata": {"name": "db", "namespace": "payments"},
            "spec": {"storeRef": {"name": "v"}, "rollout": {"selector": {"matchLabels": {"team": "payments"}}}},
        }))
        .unwrap();
        assert_eq!(
            workloads.targets(&sync),
            [(WorkloadKind::Deployment, "api".to_owned())]
        );
        workloads.delete(WorkloadKind::Deployment, &deployment());
        assert!(workloads.targets(&sync).is_empty());
        assert_eq!(workloads.len(), 1);
    }
}
