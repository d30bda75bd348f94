//! Workload simulator, in the spirit of kwok: Deployments get ReplicaSets, ReplicaSets,
//! StatefulSets and DaemonSets get Pods, and Pods become Running/Ready after a delay unless
//! they reference a Secret that does not exist (then they wait in
//! `CreateContainerConfigError` until it appears) or their workload carries the
//! `sandbox.secretsync.io/hang-rollout: "true"` annotation. A workload annotated
//! `sandbox.secretsync.io/bad-secrets: "db-v2,…"` stands for an app that cannot use those
//! credentials: its Pods that reference one of those Secrets never become Ready, the others
//! do. Workload status is kept the way `kubectl rollout status` reads it.
//!
//! Driven by the store's change feed: a change enqueues the affected objects, each is
//! reconciled idempotently (writing only on difference), so the loop settles and never
//! polls.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::api::{Core, DeleteOpts, Propagation, Target, WriteOpts};
use crate::store::{Change, ChangeKind, Key};
use crate::util::{self, now_rfc3339};

pub const HANG_ANNOTATION: &str = "sandbox.secretsync.io/hang-rollout";
/// Comma-separated Secret names whose Pods never become Ready (see the module docs).
pub const BAD_SECRETS_ANNOTATION: &str = "sandbox.secretsync.io/bad-secrets";
const MANAGER: &str = "sandbox-simulator";

pub async fn run(core: Arc<Core>) {
    let mut feed = core.store.subscribe();
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Key>();
    let mut sim = Sim {
        core: core.clone(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        first_seen: HashMap::new(),
        timers: HashSet::new(),
        blocked: HashMap::new(),
        progress: HashMap::new(),
        timer_tx,
    };
    sim.resync();
    loop {
        tokio::select! {
            r = feed.recv() => match r {
                Ok(c) => sim.on_change(&c),
                Err(RecvError::Lagged(_)) => sim.resync(),
                Err(RecvError::Closed) => return,
            },
            Some(k) = timer_rx.recv() => {
                sim.timers.remove(&k);
                sim.enqueue(k);
            }
        }
        // Drain whatever is already in the feed before reconciling, so bursts coalesce.
        while let Ok(c) = feed.try_recv() {
            sim.on_change(&c);
        }
        while let Some(k) = sim.queue.pop_front() {
            sim.queued.remove(&k);
            sim.reconcile(&k);
        }
    }
}

struct Sim {
    core: Arc<Core>,
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    /// When each pod was first seen startable; it becomes ready `ready_delay` later.
    first_seen: HashMap<Key, Instant>,
    timers: HashSet<Key>,
    /// namespace -> pods waiting for a Secret.
    blocked: HashMap<String, HashSet<Key>>,
    /// Deployment -> (new ReplicaSet name, when its rollout started), for progress deadlines.
    progress: HashMap<Key, (String, Instant)>,
    timer_tx: mpsc::UnboundedSender<Key>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn controller_of(key: &Key, obj: &Value) -> Option<Key> {
    let refs = obj.pointer("/metadata/ownerReferences")?.as_array()?;
    let r = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    let (group, resource) = match (s(r, "/apiVersion"), s(r, "/kind")) {
        ("apps/v1", "ReplicaSet") => ("apps", "replicasets"),
        ("apps/v1", "Deployment") => ("apps", "deployments"),
        ("apps/v1", "StatefulSet") => ("apps", "statefulsets"),
        ("apps/v1", "DaemonSet") => ("apps", "daemonsets"),
        _ => return None,
    };
    Some(Key::new(group, resource, &key.namespace, s(r, "/name")))
}

fn owner_ref(kind: &str, obj: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": s(obj, "/metadata/name"),
        "uid": s(obj, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Drops nulls and empty maps/lists, which the Go types omit: templates that differ only
/// there hash alike (so `kubectl rollout undo` finds the old ReplicaSet again).
fn normalized(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "creationTimestamp")
                .filter_map(|(k, v)| normalized(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(normalized).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

fn template_hash(template: &Value) -> String {
    let mut t = normalized(template).unwrap_or(Value::Null);
    // The hash label the ReplicaSet adds is not part of the Deployment's template.
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    let d = Sha256::digest(t.to_string().as_bytes());
    util::safe_encode(&d, 10)
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
}

/// Whether `pod` never becomes Ready because of `owner` (the pod itself or a workload that
/// controls it): a hang annotation, or a reference to a Secret it marks bad.
fn hangs(owner: &Value, pod: &Value) -> bool {
    let annotation = |name: &str| {
        owner
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
    };
    if annotation(HANG_ANNOTATION) == Some("true") {
        return true;
    }
    let Some(bad) = annotation(BAD_SECRETS_ANNOTATION) else {
        return false;
    };
    let used = required_secrets(pod.get("spec").unwrap_or(&Value::Null));
    bad.split(',')
        .map(str::trim)
        .any(|b| used.iter().any(|u| u == b))
}

/// Secrets a pod needs (non-optional references) that do not exist.
fn missing_secrets(core: &Core, ns: &str, spec: &Value) -> Vec<String> {
    required_secrets(spec)
        .into_iter()
        .filter(|n| core.store.get(&Key::new("", "secrets", ns, n)).is_none())
        .collect()
}

/// Secrets a pod spec needs: its non-optional references.
fn required_secrets(spec: &Value) -> Vec<String> {
    let mut wanted: Vec<String> = Vec::new();
    let mut want = |name: &str, optional: Option<&Value>| {
        if !name.is_empty()
            && optional.and_then(Value::as_bool) != Some(true)
            && !wanted.iter().any(|w| w == name)
        {
            wanted.push(name.to_string());
        }
    };
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                    want(s(r, "/name"), r.get("optional"));
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = e.get("secretRef") {
                    want(s(r, "/name"), r.get("optional"));
                }
            }
        }
    }
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(sec) = v.get("secret") {
            want(s(sec, "/secretName"), sec.get("optional"));
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sec) = src.get("secret") {
                want(s(sec, "/name"), sec.get("optional"));
            }
        }
    }
    wanted
}

/// Conditions with their transition times kept when nothing but the time would change.
fn keep_times(old: Option<&Value>, mut new: Vec<Value>) -> Value {
    let olds = old.and_then(Value::as_array).cloned().unwrap_or_default();
    for c in &mut new {
        if let Some(o) = olds.iter().find(|o| s(o, "/type") == s(c, "/type"))
            && s(o, "/status") == s(c, "/status")
        {
            for t in ["lastTransitionTime", "lastUpdateTime", "lastProbeTime"] {
                if let Some(v) = o.get(t) {
                    c[t] = v.clone();
                }
            }
            if s(o, "/reason") != s(c, "/reason")
                && let Some(m) = c.as_object_mut()
            {
                m.insert("lastUpdateTime".into(), json!(now_rfc3339()));
            }
        }
    }
    Value::Array(new)
}

impl Sim {
    /// Reconciles `k` again at `due` (one pending timer per key).
    fn schedule(&mut self, k: &Key, due: Instant) {
        if self.timers.insert(k.clone()) {
            let tx = self.timer_tx.clone();
            let key = k.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                let _ = tx.send(key);
            });
        }
    }

    fn enqueue(&mut self, k: Key) {
        if self.queued.insert(k.clone()) {
            self.queue.push_back(k);
        }
    }

    fn resync(&mut self) {
        for (g, r) in [
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("", "pods"),
        ] {
            for k in self.core.store.keys_of_resource(g, r) {
                self.enqueue(k);
            }
        }
    }

    fn on_change(&mut self, c: &Change) {
        let k = &c.key;
        match (k.group.as_str(), k.resource.as_str()) {
            ("apps", "deployments") if c.kind == ChangeKind::Deleted => {
                self.progress.remove(k);
            }
            ("apps", "deployments" | "statefulsets" | "daemonsets") => self.enqueue(k.clone()),
            ("apps", "replicasets") => {
                self.enqueue(k.clone());
                if let Some(o) = controller_of(k, &c.object) {
                    self.enqueue(o);
                }
            }
            ("", "pods") => {
                if c.kind == ChangeKind::Deleted {
                    self.first_seen.remove(k);
                    if let Some(b) = self.blocked.get_mut(&k.namespace) {
                        b.remove(k);
                    }
                } else {
                    self.enqueue(k.clone());
                }
                if let Some(o) = controller_of(k, &c.object) {
                    self.enqueue(o);
                }
            }
            ("", "secrets") => {
                if let Some(pods) = self.blocked.get(&k.namespace) {
                    let pods: Vec<Key> = pods.iter().cloned().collect();
                    for p in pods {
                        self.enqueue(p);
                    }
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, k: &Key) {
        match (k.group.as_str(), k.resource.as_str()) {
            ("apps", "deployments") => self.deployment(k),
            ("apps", "replicasets") => self.replicaset(k),
            ("apps", "statefulsets") => self.statefulset(k),
            ("apps", "daemonsets") => self.daemonset(k),
            ("", "pods") => self.pod(k),
            _ => {}
        }
    }

    fn target(&self, k: &Key, sub: &str) -> Option<Target> {
        let mut t = self.core.target_for(k)?;
        t.sub = sub.to_string();
        Some(t)
    }

    fn create(&self, k: &Key, obj: Value) {
        if let Some(t) = self.target(k, "") {
            let _ = self.core.create(&t, obj, None, &WriteOpts::system(MANAGER));
        }
    }

    fn delete(&self, k: &Key) {
        if let Some(t) = self.target(k, "") {
            let _ = self.core.delete(
                &t,
                &DeleteOpts {
                    propagation: Some(Propagation::Background),
                    ..DeleteOpts::default()
                },
            );
        }
    }

    fn write_status(&self, k: &Key, status: Value) {
        let Some(cur) = self.core.store.get(k) else {
            return;
        };
        if cur.get("status") == Some(&status) {
            return;
        }
        let mut next = (*cur).clone();
        next["status"] = status;
        if let Some(t) = self.target(k, "status") {
            let _ = self
                .core
                .update(&t, next, None, &WriteOpts::system(MANAGER));
        }
    }

    fn set_spec_replicas(&self, k: &Key, n: i64) {
        let Some(cur) = self.core.store.get(k) else {
            return;
        };
        if replicas(&cur) == n {
            return;
        }
        let mut next = (*cur).clone();
        next["spec"]["replicas"] = json!(n);
        if let Some(t) = self.target(k, "") {
            let _ = self
                .core
                .update(&t, next, None, &WriteOpts::system(MANAGER));
        }
    }

    /// Pods controlled by `owner`, not being deleted.
    fn pods_of(&self, ns: &str, owner: &Value) -> Vec<(Key, Arc<Value>)> {
        self.core
            .store
            .dependents(s(owner, "/metadata/uid"))
            .into_iter()
            .filter(|k| k.group.is_empty() && k.resource == "pods" && k.namespace == ns)
            .filter_map(|k| self.core.store.get(&k).map(|o| (k, o)))
            .filter(|(_, o)| !deleting(o))
            .collect()
    }

    fn new_pod(
        &self,
        owner_kind: &str,
        owner: &Value,
        template: &Value,
        name: &str,
        extra_labels: Value,
        node: Option<String>,
    ) -> Value {
        let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        if let Some(x) = extra_labels.as_object() {
            for (k, v) in x {
                meta["labels"][k] = v.clone();
            }
        }
        meta["name"] = json!(name);
        meta["ownerReferences"] = json!([owner_ref(owner_kind, owner)]);
        let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
        let node = node.unwrap_or_else(|| {
            let h = Sha256::digest(name.as_bytes());
            format!("sandbox-node-{}", h[0] as u32 % self.core.nodes.max(1))
        });
        spec["nodeName"] = json!(node);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }

    // ---- Pods -------------------------------------------------------------------------

    /// Whether the workload controlling this pod (or the pod itself) hangs rollouts.
    fn pod_hangs(&self, k: &Key, pod: &Value) -> bool {
        if hangs(pod, pod) {
            return true;
        }
        let mut cur = controller_of(k, pod);
        while let Some(ok) = cur {
            let Some(o) = self.core.store.get(&ok) else {
                return false;
            };
            if hangs(&o, pod) {
                return true;
            }
            cur = controller_of(&ok, &o);
        }
        false
    }

    fn pod(&mut self, k: &Key) {
        let Some(pod) = self.core.store.get(k) else {
            return;
        };
        if deleting(&pod) || pod_ready(&pod) {
            return;
        }
        let spec = pod.get("spec").cloned().unwrap_or(json!({}));
        let containers: Vec<Value> = spec
            .get("containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let missing = missing_secrets(&self.core, &k.namespace, &spec);
        let now = now_rfc3339();
        if !missing.is_empty() {
            self.blocked
                .entry(k.namespace.clone())
                .or_default()
                .insert(k.clone());
            self.first_seen.remove(k);
            let message = format!("secret \"{}\" not found", missing[0]);
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| json!({
                    "name": s(c, "/name"), "image": s(c, "/image"), "imageID": "", "ready": false, "started": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
                }))
                .collect();
            let old = pod.pointer("/status/conditions");
            let status = json!({
                "phase": "Pending",
                "hostIP": "10.0.0.1",
                "startTime": pod.pointer("/status/startTime").cloned().unwrap_or(json!(now)),
                "qosClass": "BestEffort",
                "conditions": keep_times(old, vec![
                    json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
                    json!({"type": "Initialized", "status": "True", "lastTransitionTime": now}),
                    json!({"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status", "lastTransitionTime": now}),
                    json!({"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status", "lastTransitionTime": now}),
                ]),
                "containerStatuses": statuses,
            });
            self.write_status(k, status);
            return;
        }
        if let Some(b) = self.blocked.get_mut(&k.namespace) {
            b.remove(k);
        }
        if self.pod_hangs(k, &pod) {
            return;
        }
        let seen = *self
            .first_seen
            .entry(k.clone())
            .or_insert_with(Instant::now);
        let due = seen + self.core.ready_delay;
        if Instant::now() < due {
            self.schedule(k, due);
            return;
        }
        self.first_seen.remove(k);
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| json!({
                "name": s(c, "/name"), "image": s(c, "/image"), "imageID": format!("sandbox://{}", s(c, "/image")),
                "containerID": format!("sandbox://{}", util::random_suffix(12)),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }))
            .collect();
        let h = Sha256::digest(k.name.as_bytes());
        let status = json!({
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": format!("10.244.{}.{}", h[0], h[1].max(1)),
            "startTime": pod.pointer("/status/startTime").cloned().unwrap_or(json!(now)),
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
        });
        self.write_status(k, status);
    }

    // ---- ReplicaSets ------------------------------------------------------------------

    fn replicaset(&mut self, k: &Key) {
        let Some(rs) = self.core.store.get(k) else {
            return;
        };
        if deleting(&rs) {
            return;
        }
        let want = replicas(&rs);
        let mut pods = self.pods_of(&k.namespace, &rs);
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in (pods.len() as i64)..want {
            let name = format!("{}-{}", k.name, util::random_suffix(5));
            let pod = self.new_pod("ReplicaSet", &rs, &template, &name, json!({}), None);
            self.create(&Key::new("", "pods", &k.namespace, &name), pod);
        }
        if (pods.len() as i64) > want {
            // Scale down not-ready pods first, then the newest.
            pods.sort_by_key(|(_, p)| {
                (
                    pod_ready(p),
                    std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
                )
            });
            for (pk, _) in pods.iter().take(pods.len() - want as usize) {
                self.delete(pk);
            }
        }
        let pods = self.pods_of(&k.namespace, &rs);
        let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count();
        let status = json!({
            "replicas": pods.len(),
            "fullyLabeledReplicas": pods.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        self.write_status(k, status);
    }

    // ---- Deployments ------------------------------------------------------------------

    fn deployment(&mut self, k: &Key) {
        let Some(d) = self.core.store.get(k) else {
            return;
        };
        if deleting(&d) {
            return;
        }
        let want = replicas(&d);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = template_hash(&template);
        let rss: Vec<(Key, Arc<Value>)> = self
            .core
            .store
            .dependents(s(&d, "/metadata/uid"))
            .into_iter()
            .filter(|rk| rk.group == "apps" && rk.resource == "replicasets")
            .filter_map(|rk| self.core.store.get(&rk).map(|o| (rk, o)))
            .filter(|(_, o)| !deleting(o))
            .collect();
        let revision = |o: &Value| -> i64 {
            o.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        };
        let max_rev = rss.iter().map(|(_, o)| revision(o)).max().unwrap_or(0);
        let new_rs = rss
            .iter()
            .find(|(_, o)| s(o, "/metadata/labels/pod-template-hash") == hash)
            .cloned();
        let rs_name = format!("{}-{hash}", k.name);
        let rs_key = Key::new("apps", "replicasets", &k.namespace, &rs_name);
        match &new_rs {
            None => {
                let mut tpl = template.clone();
                if !tpl
                    .pointer("/metadata/labels")
                    .is_some_and(Value::is_object)
                {
                    tpl["metadata"]["labels"] = json!({});
                }
                tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                if !selector.get("matchLabels").is_some_and(Value::is_object) {
                    selector["matchLabels"] = json!({});
                }
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "labels": tpl["metadata"]["labels"].clone(),
                        "annotations": {
                            "deployment.kubernetes.io/revision": (max_rev + 1).to_string(),
                            "deployment.kubernetes.io/desired-replicas": want.to_string(),
                        },
                        "ownerReferences": [owner_ref("Deployment", &d)],
                    },
                    "spec": {"replicas": want, "selector": selector, "template": tpl},
                });
                self.create(&rs_key, rs);
                // The new ReplicaSet's own change event brings us back here.
                return;
            }
            Some((nk, no)) => {
                self.set_spec_replicas(nk, want);
                // A ReplicaSet that becomes current again (rollback) gets the next revision.
                if revision(no) < max_rev {
                    let mut next = (**no).clone();
                    next["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                        json!((max_rev + 1).to_string());
                    if let Some(t) = self.target(nk, "") {
                        let _ = self
                            .core
                            .update(&t, next, None, &WriteOpts::system(MANAGER));
                    }
                }
            }
        }
        let (new_key, new_obj) = new_rs.expect("matched above");
        let new_obj = self.core.store.get(&new_key).unwrap_or(new_obj);
        let new_ready = new_obj
            .pointer("/status/readyReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_count = new_obj
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_done = new_ready >= want && new_count == want;
        let olds: Vec<&(Key, Arc<Value>)> = rss.iter().filter(|(rk, _)| *rk != new_key).collect();
        if new_done {
            for (ok, _) in &olds {
                self.set_spec_replicas(ok, 0);
            }
        }
        // Pods of the new ReplicaSet may have been waiting on the hang annotation.
        for (pk, p) in self.pods_of(&k.namespace, &new_obj) {
            if !pod_ready(&p) {
                self.enqueue(pk);
            }
        }
        let mut total = 0;
        let mut ready = 0;
        for (rk, _) in &rss {
            if let Some(o) = self.core.store.get(rk) {
                total += o
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                ready += o
                    .pointer("/status/readyReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
            }
        }
        let old_total = total - new_count;
        let complete = new_done && old_total == 0;
        let rs_name = s(&new_obj, "/metadata/name").to_string();
        let rs_label = format!("ReplicaSet \"{rs_name}\"");
        let deadline_exceeded = if complete {
            self.progress.remove(k);
            false
        } else {
            let start = match self.progress.get(k) {
                Some((name, at)) if *name == rs_name => *at,
                _ => {
                    let now = Instant::now();
                    self.progress.insert(k.clone(), (rs_name.clone(), now));
                    now
                }
            };
            let secs = d
                .pointer("/spec/progressDeadlineSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(600);
            let due = start + std::time::Duration::from_secs(secs);
            if Instant::now() >= due {
                true
            } else {
                self.schedule(k, due);
                false
            }
        };
        let now = now_rfc3339();
        let available = ready >= want;
        let conditions = keep_times(
            d.pointer("/status/conditions"),
            vec![
                json!({"type": "Available", "status": if available { "True" } else { "False" },
                       "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                       "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                       "lastUpdateTime": now, "lastTransitionTime": now}),
                if deadline_exceeded {
                    json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                           "message": format!("{rs_label} has timed out progressing."),
                           "lastUpdateTime": now, "lastTransitionTime": now})
                } else {
                    json!({"type": "Progressing", "status": "True",
                           "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                           "message": if complete { format!("{rs_label} has successfully progressed.") } else { format!("{rs_label} is progressing.") },
                           "lastUpdateTime": now, "lastTransitionTime": now})
                },
            ],
        );
        let mut status = json!({
            "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": total,
            "updatedReplicas": new_count,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        });
        let unavailable = (want.max(total) - ready).max(0);
        if unavailable > 0 {
            status["unavailableReplicas"] = json!(unavailable);
        }
        self.write_status(k, status);
    }

    // ---- StatefulSets -----------------------------------------------------------------

    fn statefulset(&mut self, k: &Key) {
        let Some(sts) = self.core.store.get(k) else {
            return;
        };
        if deleting(&sts) {
            return;
        }
        let want = replicas(&sts);
        let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let update_rev = format!("{}-{}", k.name, template_hash(&template));
        let pods = self.pods_of(&k.namespace, &sts);
        let by_ordinal: HashMap<i64, (Key, Arc<Value>)> = pods
            .iter()
            .filter_map(|(pk, p)| {
                let ord = pk
                    .name
                    .strip_prefix(&format!("{}-", k.name))?
                    .parse()
                    .ok()?;
                Some((ord, (pk.clone(), p.clone())))
            })
            .collect();
        let all_ready = pods.iter().all(|(_, p)| pod_ready(p));
        // OrderedReady: create the lowest missing ordinal once all existing pods are ready.
        if all_ready && let Some(ord) = (0..want).find(|o| !by_ordinal.contains_key(o)) {
            let name = format!("{}-{ord}", k.name);
            let labels = json!({"controller-revision-hash": update_rev, "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": ord.to_string()});
            let pod = self.new_pod("StatefulSet", &sts, &template, &name, labels, None);
            self.create(&Key::new("", "pods", &k.namespace, &name), pod);
        } else if all_ready {
            // Scale down from the highest ordinal, then roll outdated pods highest first.
            let extra = by_ordinal.keys().filter(|o| **o >= want).max();
            let outdated = by_ordinal
                .iter()
                .filter(|(_, (_, p))| {
                    s(p, "/metadata/labels/controller-revision-hash") != update_rev
                })
                .map(|(o, _)| *o)
                .max();
            if let Some(o) = extra.copied().or(outdated) {
                self.delete(&by_ordinal[&o].0);
            }
        }
        let pods = self.pods_of(&k.namespace, &sts);
        let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
        let updated = pods
            .iter()
            .filter(|(_, p)| s(p, "/metadata/labels/controller-revision-hash") == update_rev)
            .count() as i64;
        let prev_current = sts
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&update_rev)
            .to_string();
        let done = updated == want && ready == want && pods.len() as i64 == want;
        let current_rev = if done {
            update_rev.clone()
        } else {
            prev_current
        };
        let current = pods
            .iter()
            .filter(|(_, p)| s(p, "/metadata/labels/controller-revision-hash") == current_rev)
            .count();
        let status = json!({
            "observedGeneration": sts.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": pods.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        self.write_status(k, status);
    }

    // ---- DaemonSets -------------------------------------------------------------------

    fn daemonset(&mut self, k: &Key) {
        let Some(ds) = self.core.store.get(k) else {
            return;
        };
        if deleting(&ds) {
            return;
        }
        let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let rev = template_hash(&template);
        let nodes: Vec<String> = (0..self.core.nodes)
            .map(|i| format!("sandbox-node-{i}"))
            .collect();
        let pods = self.pods_of(&k.namespace, &ds);
        let all_ready = pods.iter().all(|(_, p)| pod_ready(p));
        let mut rolled = false;
        for node in &nodes {
            let on_node: Vec<&(Key, Arc<Value>)> = pods
                .iter()
                .filter(|(_, p)| s(p, "/spec/nodeName") == node)
                .collect();
            match on_node.first() {
                None => {
                    let name = format!("{}-{}", k.name, util::random_suffix(5));
                    let labels = json!({"controller-revision-hash": rev, "pod-template-generation": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)).to_string()});
                    let pod = self.new_pod(
                        "DaemonSet",
                        &ds,
                        &template,
                        &name,
                        labels,
                        Some(node.clone()),
                    );
                    self.create(&Key::new("", "pods", &k.namespace, &name), pod);
                }
                // maxUnavailable 1: replace one outdated pod at a time, once all are ready.
                Some((pk, p))
                    if s(p, "/metadata/labels/controller-revision-hash") != rev
                        && all_ready
                        && !rolled =>
                {
                    self.delete(pk);
                    rolled = true;
                }
                _ => {}
            }
        }
        for (pk, p) in &pods {
            if !nodes.iter().any(|n| n == s(p, "/spec/nodeName")) {
                self.delete(pk);
            }
        }
        let pods = self.pods_of(&k.namespace, &ds);
        let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count();
        let updated = pods
            .iter()
            .filter(|(_, p)| s(p, "/metadata/labels/controller-revision-hash") == rev)
            .count();
        let mut status = json!({
            "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "desiredNumberScheduled": nodes.len(),
            "currentNumberScheduled": pods.len(),
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        });
        if nodes.len() > ready {
            status["numberUnavailable"] = json!(nodes.len() - ready);
        }
        self.write_status(k, status);
    }
}
