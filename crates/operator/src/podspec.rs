//! Pure rollout helpers (guarantees 3–5, docs/reference/guarantees.md): find the Secret references in a pod spec,
//! build the JSON Patch that moves a workload onto the active version, and read a workload's
//! status as rollout progress. Everything works on whole objects as `serde_json::Value`, so the
//! same code serves typed and dynamic objects and is tested from YAML. No I/O here.

use std::collections::BTreeSet;

use secretsync_api::WorkloadKind;
use secretsync_api::naming::parse_versioned_name;
use serde_json::{Value, json};

/// One Secret name referenced by a pod spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// JSON pointer (RFC 6901) to the name string, relative to the pod spec that was scanned,
    /// e.g. `/containers/0/env/2/valueFrom/secretKeyRef/name`. Prefix it with
    /// [`pod_spec_pointer`] to address it in the whole object.
    pub path: String,
    pub name: String,
}

/// How far a workload's own controller has got with rolling out its pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Complete,
    /// `reason` is short text for status messages, such as "2/3 replicas updated".
    Progressing {
        reason: String,
    },
    /// The workload's controller gave up (Deployment `ProgressDeadlineExceeded`).
    Failed {
        reason: String,
    },
    /// The workload's controller will not roll it now: a paused Deployment or Rollout
    /// (`spec.paused`). Not a failure, and no timeout runs.
    Paused {
        reason: String,
    },
}

const ALL_CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
/// Ephemeral containers cannot be set in a pod template nor changed by a patch of the owner,
/// so the rewrite leaves them alone (they can only exist in Pods, which we only read).
const TEMPLATE_CONTAINER_LISTS: [&str; 2] = ["containers", "initContainers"];

/// Every Secret name referenced by `pod_spec` through env `secretKeyRef`, envFrom
/// `secretRef` (in containers, initContainers and ephemeralContainers), secret volumes,
/// projected secret sources and `imagePullSecrets` (a registry credential is a version like
/// any other). This is the one list of where a pod spec names a Secret: the rewrite, the
/// in-use check before pruning and the docs follow it.
pub fn secret_refs(pod_spec: &Value) -> Vec<SecretRef> {
    collect_refs(pod_spec, &ALL_CONTAINER_LISTS)
}

/// Every Secret name an object of `kind` references: its pod spec's ([`secret_refs`]), or a
/// ServiceAccount's `imagePullSecrets`, which the admission plugin copies into each Pod that
/// runs as it. Empty for other kinds.
pub fn object_secret_names(kind: &str, object: &Value) -> Vec<String> {
    if kind == "ServiceAccount" {
        return items(object.get("imagePullSecrets"))
            .filter_map(|(_, r)| r.get("name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
    }
    pod_spec_pointer(kind)
        .and_then(|p| object.pointer(p))
        .map(|spec| secret_refs(spec).into_iter().map(|r| r.name).collect())
        .unwrap_or_default()
}

/// Where the PodSpec sits in an object of `kind`, as a JSON pointer; `None` for kinds that
/// carry no pod spec.
pub fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "Rollout" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The version number N of `name` when it is `<base>-v<N>` for one of `bases` (every base
/// name a SecretSync has used, so renaming `target.name` keeps old references its own).
pub fn version_among(bases: &[String], name: &str) -> Option<i64> {
    bases
        .iter()
        .find_map(|base| parse_versioned_name(base, name))
}

/// The versions N of `<base>-v<N>`, for any of `bases`, that the pod spec of `object` (of
/// `kind`) references. Empty for kinds without a pod spec.
pub fn referenced_versions(kind: &str, object: &Value, bases: &[String]) -> BTreeSet<i64> {
    template_refs(kind, object)
        .iter()
        .filter_map(|r| version_among(bases, &r.name))
        .collect()
}

/// Every Secret reference in the pod spec of `object` (of `kind`).
pub fn template_refs(kind: &str, object: &Value) -> Vec<SecretRef> {
    pod_spec_pointer(kind)
        .and_then(|p| object.pointer(p))
        .map(secret_refs)
        .unwrap_or_default()
}

/// A JSON Patch (RFC 6902) that points every reference to another version of one of `bases`
/// in the workload's pod template at `active_name`, or `None` when nothing needs to change —
/// so a resync or restart of the operator never writes.
///
/// Each `replace` follows a `test` that the path still holds the name read from `workload`,
/// so the patch fails (422) instead of replacing at list indices that moved since it was
/// read. Not a `test` of `metadata.resourceVersion`: the workload controller's status writes
/// change that several times a second during a rollout (on a real cluster, every rewrite
/// then met a conflict or three), while only the referencing fields matter. Names that are
/// not exactly `<base>-v<N>` are never touched.
pub fn rewrite_patch(
    kind: WorkloadKind,
    workload: &Value,
    bases: &[String],
    active_name: &str,
) -> Option<Value> {
    rewrites_patch(kind, workload, &[(bases, active_name)])
}

/// [`rewrite_patch`] for several SecretSyncs at once, each `(bases, active_name)`: one patch,
/// so the workload sees one template change.
pub fn rewrites_patch(
    kind: WorkloadKind,
    workload: &Value,
    rewrites: &[(&[String], &str)],
) -> Option<Value> {
    let prefix = pod_spec_pointer(kind.as_str())?;
    let pod_spec = workload.pointer(prefix)?;
    let ops: Vec<Value> = collect_refs(pod_spec, &TEMPLATE_CONTAINER_LISTS)
        .into_iter()
        .filter_map(|r| {
            let (_, active_name) = rewrites.iter().find(|(bases, active_name)| {
                r.name != *active_name && version_among(bases, &r.name).is_some()
            })?;
            let path = format!("{prefix}{}", r.path);
            Some([
                json!({"op": "test", "path": path, "value": r.name}),
                json!({"op": "replace", "path": path, "value": active_name}),
            ])
        })
        .flatten()
        .collect();
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// Reads the workload's status as rollout progress, per guarantee 3, docs/reference/guarantees.md.
///
/// Until `status.observedGeneration` reaches `metadata.generation` the status describes an
/// older template, so nothing else in it is trusted (including a stale
/// `ProgressDeadlineExceeded`). Missing status numbers count as 0, as the API server omits
/// zeros; a missing `spec.replicas` means 1. An Argo `Rollout` is read from its
/// `status.phase`, since Argo's own canary steps and analysis decide when it is done.
pub fn rollout_progress(kind: WorkloadKind, workload: &Value) -> Progress {
    let generation = int(workload, "/metadata/generation").unwrap_or(0);
    match observed_generation(workload) {
        Some(observed) if observed >= generation => {}
        Some(observed) => {
            return progressing(format!(
                "generation {generation} not yet observed (observed {observed})"
            ));
        }
        None => return progressing(format!("generation {generation} not yet observed")),
    }
    match kind {
        WorkloadKind::Deployment => deployment_progress(workload),
        WorkloadKind::StatefulSet => statefulset_progress(workload),
        WorkloadKind::DaemonSet => daemonset_progress(workload),
        WorkloadKind::Rollout => argo_progress(workload),
    }
}

/// A number of `status`, 0 when absent (the API server omits zeros).
fn status(workload: &Value, field: &str) -> i64 {
    int(workload, &format!("/status/{field}")).unwrap_or(0)
}

fn paused(workload: &Value) -> bool {
    workload.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

fn deployment_progress(workload: &Value) -> Progress {
    let desired = int(workload, "/spec/replicas").unwrap_or(1);
    let (updated, ready, available, total) = (
        status(workload, "updatedReplicas"),
        status(workload, "readyReplicas"),
        status(workload, "availableReplicas"),
        status(workload, "replicas"),
    );
    if [updated, ready, available, total]
        .iter()
        .all(|&n| n == desired)
    {
        return Progress::Complete;
    }
    if paused(workload) {
        return Progress::Paused {
            reason: format!(
                "Deployment is paused at {updated}/{desired} replicas updated; it rolls once resumed (kubectl rollout resume)"
            ),
        };
    }
    if let Some(reason) = deadline_exceeded(workload) {
        return Progress::Failed { reason };
    }
    if updated < desired {
        progressing(format!("{updated}/{desired} replicas updated"))
    } else if total > updated {
        progressing(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else {
        replica_counts(desired, updated, ready, available)
    }
}

fn statefulset_progress(workload: &Value) -> Progress {
    let desired = int(workload, "/spec/replicas").unwrap_or(1);
    let (updated, ready, available) = (
        status(workload, "updatedReplicas"),
        status(workload, "readyReplicas"),
        status(workload, "availableReplicas"),
    );
    let revisions = (
        str_at(workload, "/status/currentRevision"),
        str_at(workload, "/status/updateRevision"),
    );
    let counts_done = [updated, ready, available].iter().all(|&n| n == desired);
    // With OnDelete the controller never advances currentRevision
    // (kubernetes/kubernetes#73492): every Pod at updateRevision, counted in
    // updatedReplicas, is what done means there.
    let on_delete = str_at(workload, "/spec/updateStrategy/type") == Some("OnDelete");
    match revisions {
        _ if on_delete && counts_done => Progress::Complete,
        _ if on_delete && updated < desired => progressing(format!(
            "{updated}/{desired} Pods run the new template (updateStrategy OnDelete: delete the old Pods to roll them)"
        )),
        (Some(current), Some(update)) if current != update && counts_done => {
            progressing(format!("revision {update} not yet current (at {current})"))
        }
        _ if counts_done => Progress::Complete,
        _ if updated < desired => progressing(format!("{updated}/{desired} replicas updated")),
        _ => replica_counts(desired, updated, ready, available),
    }
}

fn daemonset_progress(workload: &Value) -> Progress {
    let desired = status(workload, "desiredNumberScheduled");
    let (updated, ready, available) = (
        status(workload, "updatedNumberScheduled"),
        status(workload, "numberReady"),
        status(workload, "numberAvailable"),
    );
    let on_delete = str_at(workload, "/spec/updateStrategy/type") == Some("OnDelete");
    if [updated, ready, available].iter().all(|&n| n == desired) {
        Progress::Complete
    } else if updated < desired && on_delete {
        progressing(format!(
            "{updated}/{desired} nodes run the new template (updateStrategy OnDelete: delete the old Pods to roll them)"
        ))
    } else if updated < desired {
        progressing(format!("{updated}/{desired} nodes updated"))
    } else {
        progressing(format!(
            "{updated} updated, {ready} ready, {available} available of {desired} nodes"
        ))
    }
}

fn argo_progress(workload: &Value) -> Progress {
    let message = str_at(workload, "/status/message");
    let with_message = |phase: &str| match message {
        Some(message) => format!("{phase}: {message}"),
        None => phase.to_owned(),
    };
    match str_at(workload, "/status/phase") {
        Some("Healthy") => Progress::Complete,
        _ if paused(workload) => Progress::Paused {
            reason: "Rollout is paused (spec.paused); it rolls once resumed".into(),
        },
        Some("Degraded") => Progress::Failed {
            reason: with_message("Degraded"),
        },
        Some(phase) => progressing(with_message(phase)),
        None => progressing("phase not yet reported".into()),
    }
}

/// `status.observedGeneration`: a number, or — as some Argo Rollouts versions write it — a
/// string holding one. Anything else (older Argo versions wrote a hash) counts as not observed.
fn observed_generation(workload: &Value) -> Option<i64> {
    match workload.pointer("/status/observedGeneration")? {
        Value::String(text) => text.parse().ok(),
        other => other.as_i64(),
    }
}

fn progressing(reason: String) -> Progress {
    Progress::Progressing { reason }
}

fn replica_counts(desired: i64, updated: i64, ready: i64, available: i64) -> Progress {
    if ready < desired {
        progressing(format!("{ready}/{desired} replicas ready"))
    } else if available < desired {
        progressing(format!("{available}/{desired} replicas available"))
    } else {
        progressing(format!(
            "{updated} updated, {ready} ready, {available} available of {desired} replicas"
        ))
    }
}

/// The Deployment controller's verdict that the rollout is stuck: a `Progressing` condition
/// with reason `ProgressDeadlineExceeded`.
fn deadline_exceeded(workload: &Value) -> Option<String> {
    let condition = items(workload.pointer("/status/conditions")).find(|(_, c)| {
        c.get("type").and_then(Value::as_str) == Some("Progressing")
            && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    })?;
    Some(match condition.1.get("message").and_then(Value::as_str) {
        Some(message) if !message.is_empty() => format!("progress deadline exceeded: {message}"),
        _ => "progress deadline exceeded".to_owned(),
    })
}

fn collect_refs(pod_spec: &Value, container_lists: &[&str]) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    let mut push = |segments: &[&str], name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str) {
            refs.push(SecretRef {
                path: pointer(segments),
                name: name.to_owned(),
            });
        }
    };
    for &list in container_lists {
        for (i, container) in items(pod_spec.get(list)) {
            let i = i.to_string();
            for (j, env) in items(container.get("env")) {
                let j = j.to_string();
                push(
                    &[list, &i, "env", &j, "valueFrom", "secretKeyRef", "name"],
                    env.pointer("/valueFrom/secretKeyRef/name"),
                );
            }
            for (j, source) in items(container.get("envFrom")) {
                let j = j.to_string();
                push(
                    &[list, &i, "envFrom", &j, "secretRef", "name"],
                    source.pointer("/secretRef/name"),
                );
            }
        }
    }
    for (i, pull) in items(pod_spec.get("imagePullSecrets")) {
        let i = i.to_string();
        push(&["imagePullSecrets", &i, "name"], pull.get("name"));
    }
    for (i, volume) in items(pod_spec.get("volumes")) {
        let i = i.to_string();
        push(
            &["volumes", &i, "secret", "secretName"],
            volume.pointer("/secret/secretName"),
        );
        for (j, source) in items(volume.pointer("/projected/sources")) {
            let j = j.to_string();
            push(
                &["volumes", &i, "projected", "sources", &j, "secret", "name"],
                source.pointer("/secret/name"),
            );
        }
    }
    refs
}

/// The elements of a JSON array with their indices; nothing for a missing field, `null` or a
/// non-array.
fn items(value: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A JSON pointer from unescaped reference tokens.
fn pointer(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", escape_segment(s)))
        .collect()
}

/// RFC 6901: `~` becomes `~0` and `/` becomes `~1` (in that order, so `~1` in a key stays
/// distinct from `/`).
fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Vec<String> {
        vec!["db".to_owned()]
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML parses")
    }

    /// Applies `test` and `replace` ops as RFC 6902 does (a `replace` target must exist), so
    /// the tests check the patch's effect, not only its text.
    fn apply(object: &Value, patch: &Value) -> Value {
        let mut object = object.clone();
        for op in patch.as_array().expect("a patch is an array") {
            let path = op["path"].as_str().expect("op has a path");
            match op["op"].as_str() {
                Some("test") => assert_eq!(object.pointer(path), Some(&op["value"]), "{path}"),
                Some("replace") => {
                    *object
                        .pointer_mut(path)
                        .unwrap_or_else(|| panic!("{path} exists")) = op["value"].clone();
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
        object
    }

    /// `__DB__` marks the seven references to the `db` SecretSync (an imagePullSecret among
    /// them); every other name, including a ConfigMap literally called `db-v1`, must stay as
    /// it is.
    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: payments, generation: 4, resourceVersion: "81234"}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: api}}
    spec:
      imagePullSecrets: [{name: __DB__}, {name: registry}]
      initContainers:
        - name: migrate
          image: migrate:1
          env:
            - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: __DB__, key: password}}}
          envFrom:
            - secretRef: {name: __DB__}
      containers:
        - name: app
          image: app:1
          env:
            - {name: LOG_LEVEL, value: info}
            - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: __DB__, key: password}}}
            - {name: OTHER, valueFrom: {secretKeyRef: {name: other-v1, key: token}}}
            - {name: OLD, valueFrom: {secretKeyRef: {name: db-v1-old, key: password}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: MODE, valueFrom: {configMapKeyRef: {name: db-v1, key: mode}}}
          envFrom:
            - configMapRef: {name: db-v1}
            - secretRef: {name: __DB__}
            - secretRef: {name: db-config}
        - name: sidecar
          image: sidecar:1
      volumes:
        - {name: creds, secret: {secretName: __DB__}}
        - {name: other, secret: {secretName: other-v1}}
        - {name: settings, configMap: {name: db-v1}}
        - name: bundle
          projected:
            sources:
              - configMap: {name: db-v1}
              - secret: {name: __DB__}
              - secret: {name: db-config}
              - serviceAccountToken: {path: token}
status: {observedGeneration: 4}
"#;

    fn deployment(db: &str) -> Value {
        yaml(&DEPLOYMENT.replace("__DB__", db))
    }

    const DB_PATHS: [&str; 7] = [
        "/spec/template/spec/imagePullSecrets/0/name",
        "/spec/template/spec/containers/0/env/1/valueFrom/secretKeyRef/name",
        "/spec/template/spec/containers/0/envFrom/1/secretRef/name",
        "/spec/template/spec/initContainers/0/env/0/valueFrom/secretKeyRef/name",
        "/spec/template/spec/initContainers/0/envFrom/0/secretRef/name",
        "/spec/template/spec/volumes/0/secret/secretName",
        "/spec/template/spec/volumes/3/projected/sources/1/secret/name",
    ];

    #[test]
    fn patch_replaces_exactly_the_seven_db_references() {
        let patch = rewrite_patch(
            WorkloadKind::Deployment,
            &deployment("db-v1"),
            &db(),
            "db-v3",
        )
        .expect("references to db-v1 need a patch");
        let ops = patch.as_array().unwrap();
        let mut replaced: Vec<&str> = ops
            .chunks(2)
            .map(|pair| {
                // Each replace is guarded by a test of the name it replaces.
                assert_eq!(pair[0]["op"], "test");
                assert_eq!(pair[0]["value"], "db-v1");
                assert_eq!(pair[1]["op"], "replace");
                assert_eq!(pair[1]["value"], "db-v3");
                assert_eq!(pair[0]["path"], pair[1]["path"]);
                pair[1]["path"].as_str().unwrap()
            })
            .collect();
        replaced.sort_unstable();
        let mut expected = DB_PATHS.to_vec();
        expected.sort_unstable();
        assert_eq!(replaced, expected);
    }

    #[test]
    fn applied_patch_yields_the_template_on_the_active_version() {
        let before = deployment("db-v1");
        let patch = rewrite_patch(WorkloadKind::Deployment, &before, &db(), "db-v3").unwrap();
        let after = apply(&before, &patch);
        assert_eq!(after, deployment("db-v3"));
        assert_eq!(
            referenced_versions("Deployment", &after, &db()),
            BTreeSet::from([3])
        );
    }

    #[test]
    fn patched_or_unreferencing_workloads_need_no_patch() {
        let patched = deployment("db-v3");
        assert_eq!(
            rewrite_patch(WorkloadKind::Deployment, &patched, &db(), "db-v3"),
            None
        );
        // The other names in the fixture are not `db` versions, so for another base nothing
        // in it is a reference.
        assert_eq!(
            rewrite_patch(
                WorkloadKind::Deployment,
                &patched,
                &["cache".to_owned()],
                "cache-v1"
            ),
            None
        );
        let bare = yaml(
            "{kind: Deployment, metadata: {resourceVersion: '1'}, spec: {template: {spec: {containers: [{name: a, env: null}]}}}}",
        );
        assert_eq!(
            rewrite_patch(WorkloadKind::Deployment, &bare, &db(), "db-v1"),
            None
        );
    }

    #[test]
    fn rollback_and_mixed_versions_rewrite_only_what_differs() {
        let sts = yaml(
            r#"
kind: StatefulSet
metadata: {name: pg, resourceVersion: "7"}
spec:
  template:
    spec:
      containers:
        - name: pg
          env:
            - {name: A, valueFrom: {secretKeyRef: {name: db-v2, key: a}}}
            - {name: B, valueFrom: {secretKeyRef: {name: db-v4, key: b}}}
            - {name: C, valueFrom: {secretKeyRef: {name: db-v02, key: c}}}
"#,
        );
        // pinVersion: 2 after v4 was active: only the v4 reference moves; `db-v02` is not a
        // version name.
        let patch = rewrite_patch(WorkloadKind::StatefulSet, &sts, &db(), "db-v2").unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/spec/template/spec/containers/0/env/1/valueFrom/secretKeyRef/name", "value": "db-v4"},
                {"op": "replace", "path": "/spec/template/spec/containers/0/env/1/valueFrom/secretKeyRef/name", "value": "db-v2"},
            ])
        );
    }

    /// The guard is the referencing fields, not the resourceVersion: a status write (or any
    /// other change) between the read and the patch lets it land; a reference moved to
    /// another index makes it fail instead of rewriting the wrong entry.
    #[test]
    fn the_patch_lands_after_unrelated_changes_and_fails_when_the_list_moved() {
        let read = yaml(
            "{kind: DaemonSet, metadata: {resourceVersion: '5'}, spec: {template: {spec: {containers: [{name: a, env: [{name: A, valueFrom: {secretKeyRef: {name: db-v1, key: a}}}]}]}}}}",
        );
        let patch = rewrite_patch(WorkloadKind::DaemonSet, &read, &db(), "db-v2").unwrap();
        let mut status_written = read.clone();
        status_written["metadata"]["resourceVersion"] = json!("9");
        status_written["status"] = json!({"numberReady": 3});
        let after = apply(&status_written, &patch);
        assert_eq!(template_refs("DaemonSet", &after)[0].name, "db-v2");

        let mut moved = read.clone();
        moved["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .insert(
                0,
                json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "x"}}}),
            );
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        let mut target = moved.clone();
        assert!(json_patch::patch(&mut target, &patch).is_err(), "{target}");
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(escape_segment("a/b~c"), "a~1b~0c");
        assert_eq!(escape_segment("~1"), "~01");
        let path = pointer(&["annotations", "example.com/x~y", "0"]);
        assert_eq!(path, "/annotations/example.com~1x~0y/0");
        let object =
            json!({"annotations": {"example.com/x~y": ["hit"], "example.com": {"x~y": ["miss"]}}});
        assert_eq!(object.pointer(&path), Some(&json!("hit")));
    }

    #[test]
    fn a_service_account_names_its_image_pull_secrets() {
        let sa = yaml(
            "{kind: ServiceAccount, imagePullSecrets: [{name: reg-v2}, {}], secrets: [{name: token}]}",
        );
        assert_eq!(object_secret_names("ServiceAccount", &sa), ["reg-v2"]);
        let pod = yaml("{spec: {imagePullSecrets: [{name: reg-v1}], containers: []}}");
        assert_eq!(object_secret_names("Pod", &pod), ["reg-v1"]);
        assert!(object_secret_names("ConfigMap", &sa).is_empty());
    }

    #[test]
    fn secret_refs_are_relative_to_the_pod_spec() {
        let spec = yaml(
            r#"
containers: [{name: a, envFrom: [{secretRef: {name: x}}]}]
volumes: [{name: v, projected: {sources: [{secret: {name: y}}]}}]
"#,
        );
        assert_eq!(
            secret_refs(&spec),
            vec![
                SecretRef {
                    path: "/containers/0/envFrom/0/secretRef/name".into(),
                    name: "x".into()
                },
                SecretRef {
                    path: "/volumes/0/projected/sources/0/secret/name".into(),
                    name: "y".into()
                },
            ]
        );
    }

    #[test]
    fn pod_spec_pointers() {
        let table = [
            ("Pod", Some("/spec")),
            ("Deployment", Some("/spec/template/spec")),
            ("StatefulSet", Some("/spec/template/spec")),
            ("DaemonSet", Some("/spec/template/spec")),
            ("ReplicaSet", Some("/spec/template/spec")),
            ("Job", Some("/spec/template/spec")),
            ("CronJob", Some("/spec/jobTemplate/spec/template/spec")),
            ("Rollout", Some("/spec/template/spec")),
            ("Service", None),
            ("deployment", None),
        ];
        for (kind, expected) in table {
            assert_eq!(pod_spec_pointer(kind), expected, "{kind}");
        }
        for kind in WorkloadKind::ALL {
            assert!(pod_spec_pointer(kind.as_str()).is_some(), "{kind:?}");
        }
    }

    #[test]
    fn referenced_versions_for_every_kind_that_holds_pods() {
        let table: [(&str, &str, &[i64]); 7] = [
            (
                "Pod",
                r#"
kind: Pod
spec:
  containers: [{name: a, env: [{name: X, valueFrom: {secretKeyRef: {name: db-v7, key: k}}}]}]
  ephemeralContainers: [{name: debug, envFrom: [{secretRef: {name: db-v5}}]}]
  imagePullSecrets: [{name: db-v9}]
  volumes: [{name: v, secret: {secretName: db-v0}}, {name: w, secret: {secretName: db-v}}]
"#,
                &[5, 7, 9],
            ),
            (
                "ReplicaSet",
                r#"
kind: ReplicaSet
spec: {template: {spec: {initContainers: [{name: i, envFrom: [{secretRef: {name: db-v3}}]}], containers: []}}}
"#,
                &[3],
            ),
            (
                "Job",
                r#"
kind: Job
spec: {template: {spec: {containers: [{name: j}], volumes: [{name: v, secret: {secretName: db-v12}}]}}}
"#,
                &[12],
            ),
            (
                "CronJob",
                r#"
kind: CronJob
spec:
  schedule: "@hourly"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: c, env: [{name: A, valueFrom: {secretKeyRef: {name: db-v2, key: k}}}]}]
          volumes:
            - name: p
              projected: {sources: [{secret: {name: db-v1}}, {secret: {name: dbx-v4}}]}
"#,
                &[1, 2],
            ),
            (
                // A CronJob's pod spec is not at the Job's place.
                "CronJob",
                "{kind: CronJob, spec: {template: {spec: {volumes: [{name: v, secret: {secretName: db-v1}}]}}}}",
                &[],
            ),
            (
                "Service",
                "{kind: Service, spec: {template: {spec: {volumes: [{name: v, secret: {secretName: db-v1}}]}}}}",
                &[],
            ),
            (
                "Deployment",
                "{kind: Deployment, metadata: {name: empty}}",
                &[],
            ),
        ];
        for (kind, object, expected) in table {
            assert_eq!(
                referenced_versions(kind, &yaml(object), &db()),
                expected.iter().copied().collect::<BTreeSet<_>>(),
                "{kind}: {object}"
            );
        }
    }

    fn progress(kind: WorkloadKind, object: &str) -> Progress {
        rollout_progress(kind, &yaml(object))
    }

    fn is_progressing(p: &Progress, needle: &str) -> bool {
        matches!(p, Progress::Progressing { reason } if reason.contains(needle))
    }

    #[test]
    fn deployment_progress() {
        use WorkloadKind::Deployment as D;
        let table: [(&str, &str, &str); 9] = [
            (
                "complete",
                "{metadata: {generation: 5}, spec: {replicas: 3}, status: {observedGeneration: 5, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3}}",
                "Complete",
            ),
            (
                "replicas default to 1",
                "{metadata: {generation: 2}, spec: {}, status: {observedGeneration: 2, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1}}",
                "Complete",
            ),
            (
                "zero replicas, status numbers omitted",
                "{metadata: {generation: 3}, spec: {replicas: 0}, status: {observedGeneration: 3}}",
                "Complete",
            ),
            (
                "updating",
                "{metadata: {generation: 5}, spec: {replicas: 3}, status: {observedGeneration: 5, replicas: 4, updatedReplicas: 2, readyReplicas: 3, availableReplicas: 3}}",
                "2/3 replicas updated",
            ),
            (
                "old pods still terminating",
                "{metadata: {generation: 5}, spec: {replicas: 3}, status: {observedGeneration: 5, replicas: 4, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3}}",
                "1 old replicas pending termination",
            ),
            (
                "not yet available",
                "{metadata: {generation: 5}, spec: {replicas: 3}, status: {observedGeneration: 5, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 2}}",
                "2/3 replicas available",
            ),
            (
                // Numbers that look done but describe the template before our patch.
                "stale observedGeneration",
                "{metadata: {generation: 6}, spec: {replicas: 3}, status: {observedGeneration: 5, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3}}",
                "generation 6 not yet observed (observed 5)",
            ),
            (
                "stale deadline condition from the previous template",
                "{metadata: {generation: 6}, spec: {replicas: 3}, status: {observedGeneration: 5, updatedReplicas: 1, conditions: [{type: Progressing, status: 'False', reason: ProgressDeadlineExceeded}]}}",
                "not yet observed",
            ),
            (
                "no status yet",
                "{metadata: {generation: 1}, spec: {replicas: 3}}",
                "generation 1 not yet observed",
            ),
        ];
        for (case, object, expected) in table {
            let got = progress(D, object);
            if expected == "Complete" {
                assert_eq!(got, Progress::Complete, "{case}");
            } else {
                assert!(is_progressing(&got, expected), "{case}: {got:?}");
            }
        }
        let failed = progress(
            D,
            r#"
metadata: {generation: 6}
spec: {replicas: 3}
status:
  observedGeneration: 6
  replicas: 4
  updatedReplicas: 1
  readyReplicas: 3
  availableReplicas: 3
  conditions:
    - {type: Available, status: "True", reason: MinimumReplicasAvailable}
    - type: Progressing
      status: "False"
      reason: ProgressDeadlineExceeded
      message: ReplicaSet "api-5d4f9" has timed out progressing.
"#,
        );
        assert_eq!(
            failed,
            Progress::Failed {
                reason: r#"progress deadline exceeded: ReplicaSet "api-5d4f9" has timed out progressing."#.into()
            }
        );
    }

    #[test]
    fn statefulset_progress() {
        use WorkloadKind::StatefulSet as S;
        let done = "observedGeneration: 4, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3";
        let table = [
            (
                "complete",
                format!("{{metadata: {{generation: 4}}, spec: {{replicas: 3}}, status: {{{done}, currentRevision: pg-7c, updateRevision: pg-7c}}}}"),
                "Complete",
            ),
            (
                "complete without revisions",
                format!("{{metadata: {{generation: 4}}, spec: {{replicas: 3}}, status: {{{done}}}}}"),
                "Complete",
            ),
            (
                "revision not yet current",
                format!("{{metadata: {{generation: 4}}, spec: {{replicas: 3}}, status: {{{done}, currentRevision: pg-6b, updateRevision: pg-7c}}}}"),
                "revision pg-7c not yet current (at pg-6b)",
            ),
            (
                "updating",
                "{metadata: {generation: 4}, spec: {replicas: 3}, status: {observedGeneration: 4, updatedReplicas: 1, readyReplicas: 3, availableReplicas: 3, currentRevision: a, updateRevision: b}}".to_owned(),
                "1/3 replicas updated",
            ),
            (
                "updated, not ready",
                "{metadata: {generation: 4}, spec: {replicas: 3}, status: {observedGeneration: 4, updatedReplicas: 3, readyReplicas: 2, availableReplicas: 2}}".to_owned(),
                "2/3 replicas ready",
            ),
            (
                "zero replicas",
                "{metadata: {generation: 2}, spec: {replicas: 0}, status: {observedGeneration: 2, replicas: 0, currentRevision: a, updateRevision: a}}".to_owned(),
                "Complete",
            ),
            (
                "stale observedGeneration",
                format!("{{metadata: {{generation: 5}}, spec: {{replicas: 3}}, status: {{{done}}}}}"),
                "generation 5 not yet observed (observed 4)",
            ),
        ];
        for (case, object, expected) in table {
            let got = progress(S, &object);
            if expected == "Complete" {
                assert_eq!(got, Progress::Complete, "{case}");
            } else {
                assert!(is_progressing(&got, expected), "{case}: {got:?}");
            }
        }
        // A deadline condition means nothing outside Deployments.
        let sts = "{metadata: {generation: 4}, spec: {replicas: 3}, status: {observedGeneration: 4, updatedReplicas: 1, conditions: [{type: Progressing, reason: ProgressDeadlineExceeded}]}}";
        assert!(is_progressing(&progress(S, sts), "1/3 replicas updated"));
    }

    #[test]
    fn daemonset_progress() {
        use WorkloadKind::DaemonSet as DS;
        let table = [
            (
                "complete",
                "{metadata: {generation: 3}, status: {observedGeneration: 3, desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberReady: 4, numberAvailable: 4}}",
                "Complete",
            ),
            (
                "no nodes",
                "{metadata: {generation: 3}, status: {observedGeneration: 3, desiredNumberScheduled: 0, currentNumberScheduled: 0, numberMisscheduled: 0, numberReady: 0}}",
                "Complete",
            ),
            (
                "updating",
                "{metadata: {generation: 3}, status: {observedGeneration: 3, desiredNumberScheduled: 4, updatedNumberScheduled: 2, numberReady: 4, numberAvailable: 4}}",
                "2/4 nodes updated",
            ),
            (
                "updated, not available",
                "{metadata: {generation: 3}, status: {observedGeneration: 3, desiredNumberScheduled: 4, updatedNumberScheduled: 4, numberReady: 4, numberAvailable: 3}}",
                "4 updated, 4 ready, 3 available of 4 nodes",
            ),
            (
                "stale observedGeneration",
                "{metadata: {generation: 4}, status: {observedGeneration: 3, desiredNumberScheduled: 4, updatedNumberScheduled: 4, numberReady: 4, numberAvailable: 4}}",
                "generation 4 not yet observed (observed 3)",
            ),
        ];
        for (case, object, expected) in table {
            let got = progress(DS, object);
            if expected == "Complete" {
                assert_eq!(got, Progress::Complete, "{case}");
            } else {
                assert!(is_progressing(&got, expected), "{case}: {got:?}");
            }
        }
    }

    #[test]
    fn argo_rollout_progress() {
        use WorkloadKind::Rollout as R;
        let table = [
            (
                "healthy, observedGeneration as a string",
                "{metadata: {generation: 6}, status: {observedGeneration: '6', phase: Healthy}}",
                "Complete",
            ),
            (
                "healthy, observedGeneration as a number",
                "{metadata: {generation: 6}, status: {observedGeneration: 6, phase: Healthy}}",
                "Complete",
            ),
            (
                "healthy but for the old template",
                "{metadata: {generation: 7}, status: {observedGeneration: '6', phase: Healthy}}",
                "generation 7 not yet observed (observed 6)",
            ),
            (
                "an old Argo's hash is not a generation",
                "{metadata: {generation: 7}, status: {observedGeneration: 5c9f8d7b, phase: Healthy}}",
                "generation 7 not yet observed",
            ),
            (
                "paused at a canary step",
                "{metadata: {generation: 6}, status: {observedGeneration: '6', phase: Paused, message: CanaryPauseStep}}",
                "Paused: CanaryPauseStep",
            ),
            (
                "progressing",
                "{metadata: {generation: 6}, status: {observedGeneration: '6', phase: Progressing}}",
                "Progressing",
            ),
            (
                "no phase yet",
                "{metadata: {generation: 6}, status: {observedGeneration: '6'}}",
                "phase not yet reported",
            ),
        ];
        for (case, object, expected) in table {
            let got = progress(R, object);
            if expected == "Complete" {
                assert_eq!(got, Progress::Complete, "{case}");
            } else {
                assert!(is_progressing(&got, expected), "{case}: {got:?}");
            }
        }
        let degraded = "{metadata: {generation: 6}, status: {observedGeneration: '6', phase: Degraded, message: 'RolloutAborted: metric error-rate assessed Failed'}}";
        assert_eq!(
            progress(R, degraded),
            Progress::Failed {
                reason: "Degraded: RolloutAborted: metric error-rate assessed Failed".into()
            }
        );
        // A Degraded status about the previous template says nothing about this one.
        let stale =
            "{metadata: {generation: 7}, status: {observedGeneration: '6', phase: Degraded}}";
        assert!(is_progressing(&progress(R, stale), "not yet observed"));
    }

    #[test]
    fn argo_rollout_templates_are_rewritten_like_deployments() {
        let mut rollout = deployment("db-v1");
        rollout["apiVersion"] = json!("argoproj.io/v1alpha1");
        rollout["kind"] = json!("Rollout");
        rollout["spec"]["strategy"] =
            json!({"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}});
        assert_eq!(
            rewrite_patch(WorkloadKind::Rollout, &rollout, &db(), "db-v3"),
            rewrite_patch(WorkloadKind::Deployment, &rollout, &db(), "db-v3"),
        );
        assert!(rewrite_patch(WorkloadKind::Rollout, &rollout, &db(), "db-v3").is_some());
        assert_eq!(
            referenced_versions("Rollout", &rollout, &db()),
            BTreeSet::from([1])
        );
    }

    /// A reference name: one of the SecretSync's versions, a look-alike, or anything.
    fn any_name() -> impl proptest::strategy::Strategy<Value = String> + Clone {
        use proptest::prelude::*;
        prop_oneof![
            (0i64..30).prop_map(|n| format!("db-v{n}")),
            Just("db-v".to_owned()),
            Just("db-v01".to_owned()),
            Just("db-vx".to_owned()),
            Just("dbv1".to_owned()),
            (0i64..5).prop_map(|n| format!("db-v{n}-old")),
            "[a-z0-9.-]{0,12}",
        ]
    }

    /// A pod spec with references in every place the contract lists, in random numbers.
    fn any_pod_spec() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        let container = || {
            (vec(any_name(), 0..3), vec(any_name(), 0..3)).prop_map(|(env, from)| {
            json!({
                "name": "c", "image": "i",
                "env": env.iter().map(|n| json!({"name": "E", "valueFrom": {"secretKeyRef": {"name": n, "key": "k"}}})).collect::<Vec<_>>(),
                "envFrom": from.iter().map(|n| json!({"secretRef": {"name": n}})).collect::<Vec<_>>(),
            })
        })
        };
        (
            vec(container(), 0..3),
            vec(container(), 0..2),
            vec(any_name(), 0..3),
            vec(vec(any_name(), 0..3), 0..2),
            vec(any_name(), 0..2),
        )
            .prop_map(|(containers, init, volumes, projected, pull)| {
                json!({
                    "containers": containers,
                    "initContainers": init,
                    "volumes": volumes.iter().map(|n| json!({"name": "v", "secret": {"secretName": n}}))
                        .chain(projected.iter().map(|ns| json!({"name": "p", "projected": {"sources": ns.iter().map(|n| json!({"secret": {"name": n}})).collect::<Vec<_>>()}})))
                        .collect::<Vec<_>>(),
                    "imagePullSecrets": pull.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
                })
            })
    }

    proptest::proptest! {
        /// Over any pod template: exactly the references that are versions of `db` move to
        /// the active version, every other name stays, and a second pass changes nothing.
        #[test]
        fn rewriting_moves_exactly_the_versions_and_is_idempotent(pod in any_pod_spec(), active in 1i64..40) {
            let workload = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "resourceVersion": "7"},
                "spec": {"template": {"spec": pod}},
            });
            let active_name = format!("db-v{active}");
            let before = secret_refs(&workload["spec"]["template"]["spec"]);
            let after_value = match rewrite_patch(WorkloadKind::Deployment, &workload, &db(), &active_name) {
                Some(patch) => apply(&workload, &patch),
                None => workload.clone(),
            };
            let after = secret_refs(&after_value["spec"]["template"]["spec"]);
            proptest::prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                let expected = if parse_versioned_name("db", &b.name).is_some() { &active_name } else { &b.name };
                proptest::prop_assert_eq!(&a.name, expected);
            }
            proptest::prop_assert!(rewrite_patch(WorkloadKind::Deployment, &after_value, &db(), &active_name).is_none());
        }
    }
}
