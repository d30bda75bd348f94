//! The simulation itself, independent of where objects live: a kubelet layer (Pods are
//! bound to a simulated node and become Running/Ready after a delay, unless a Secret or
//! key they reference is missing: then they wait in `CreateContainerConfigError` until it
//! appears) and, when asked for, a controllers layer (Deployments get ReplicaSets,
//! ReplicaSets, StatefulSets and DaemonSets get Pods, workload status is kept the way
//! `kubectl rollout status` reads it). A workload or Pod annotated
//! `sandbox.secretsync.io/hang-rollout: "true"` never becomes Ready.
//!
//! Driven by a stream of changes: a change enqueues the affected objects, each is
//! reconciled idempotently (writing only on difference), so the loop settles and never
//! polls. A [`Cluster`] supplies reads (from memory: the sandbox's store, or a watch cache)
//! and performs writes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::names::{now_rfc3339, random_suffix, safe_encode};

pub const HANG_ANNOTATION: &str = "sandbox.secretsync.io/hang-rollout";
/// Comma-separated Secret names whose Pods never become Ready: a workload annotated
/// `sandbox.secretsync.io/bad-secrets: "db-v2,…"` stands for an app that cannot use those
/// credentials; its Pods that reference one of them hang, the others do not.
pub const BAD_SECRETS_ANNOTATION: &str = "sandbox.secretsync.io/bad-secrets";
/// Field manager of the simulator's writes.
pub const MANAGER: &str = "sandbox-simulator";

/// An object's address: API group (empty for core), plural resource, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub group: String,
    pub resource: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What the simulator is told.
#[derive(Debug)]
pub enum Event {
    /// An object was created or changed (`deleted: false`) or removed.
    Change {
        key: Key,
        deleted: bool,
        object: Arc<Value>,
    },
    /// Changes may have been missed: look at everything again.
    Resync,
}

/// The (group, resource) pairs the simulator reads; Secrets only to check references.
pub const WORKLOADS: [(&str, &str); 4] = [
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
];

/// Where objects are read and written.
pub trait Cluster: Send + Sync + 'static {
    fn get(&self, k: &Key) -> Option<Arc<Value>>;
    /// Keys of objects whose ownerReferences name `owner_uid`.
    fn dependents(&self, owner_uid: &str) -> Vec<Key>;
    fn keys_of(&self, group: &str, resource: &str) -> Vec<Key>;
    fn create(&self, k: &Key, obj: Value) -> impl Future<Output = ()> + Send;
    /// Replaces the object (optimistic concurrency on the resourceVersion it carries).
    fn update(&self, k: &Key, obj: Value) -> impl Future<Output = ()> + Send;
    fn update_status(&self, k: &Key, obj: Value) -> impl Future<Output = ()> + Send;
    /// Deletes in the background; a Pod at once (no grace period: the kubelet has stopped it).
    fn delete(&self, k: &Key) -> impl Future<Output = ()> + Send;
    /// Assigns the Pod to `node` (the scheduler's job).
    fn bind(&self, k: &Key, node: &str) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How long a startable Pod takes to become Ready.
    pub ready_delay: Duration,
    /// Simulated nodes `<node_prefix>-<i>`: Pods per DaemonSet, and where Pods are bound.
    pub nodes: u32,
    pub node_prefix: String,
    /// Also act as kube-controller-manager for Deployments, ReplicaSets, StatefulSets and
    /// DaemonSets (off when a real one runs).
    pub controllers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_delay: Duration::from_millis(200),
            nodes: 3,
            node_prefix: "sandbox-node".into(),
            controllers: true,
        }
    }
}

impl Options {
    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes.max(1))
            .map(|i| format!("{}-{i}", self.node_prefix))
            .collect()
    }

    fn is_ours(&self, node: &str) -> bool {
        node.strip_prefix(&self.node_prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|i| i.parse::<u32>().is_ok_and(|i| i < self.nodes.max(1)))
    }

    /// The node a Pod is placed on, stable for its name.
    fn node_for(&self, pod_name: &str) -> String {
        let h = Sha256::digest(pod_name.as_bytes());
        format!("{}-{}", self.node_prefix, h[0] as u32 % self.nodes.max(1))
    }
}

/// Runs until `events` closes.
pub async fn run<C: Cluster>(
    cluster: C,
    opts: Options,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Key>();
    let mut sim = Sim {
        c: cluster,
        opts,
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
            e = events.recv() => match e {
                Some(e) => sim.on_event(e),
                None => return,
            },
            Some(k) = timer_rx.recv() => {
                sim.timers.remove(&k);
                sim.enqueue(k);
            }
        }
        // Take whatever has already arrived before reconciling, so bursts coalesce.
        while let Ok(e) = events.try_recv() {
            sim.on_event(e);
        }
        while let Some(k) = sim.queue.pop_front() {
            sim.queued.remove(&k);
            sim.reconcile(&k).await;
        }
    }
}

struct Sim<C> {
    c: C,
    opts: Options,
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
    safe_encode(&d, 10)
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `spec.updateStrategy.type: OnDelete` (StatefulSets, DaemonSets).
fn on_delete(workload: &Value) -> bool {
    s(workload, "/spec/updateStrategy/type") == "OnDelete"
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
    let used = secret_names(pod.get("spec").unwrap_or(&Value::Null));
    bad.split(',')
        .map(str::trim)
        .any(|name| used.iter().any(|u| u == name))
}

/// Every Secret name a pod spec references (env, envFrom, secret and projected volumes).
fn secret_names(spec: &Value) -> Vec<String> {
    let arrays = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in arrays(spec, list) {
            for e in arrays(&c, "envFrom") {
                names.push(s(&e, "/secretRef/name").to_owned());
            }
            for e in arrays(&c, "env") {
                names.push(s(&e, "/valueFrom/secretKeyRef/name").to_owned());
            }
        }
    }
    for v in arrays(spec, "volumes") {
        names.push(s(&v, "/secret/secretName").to_owned());
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.push(s(src, "/secret/name").to_owned());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Why the kubelet cannot start a pod with `spec` in `ns`: the first non-optional Secret
/// reference whose Secret (or, for `secretKeyRef`, key) `secret` cannot find, with the
/// kubelet's message.
pub fn missing_secret(
    ns: &str,
    spec: &Value,
    secret: impl Fn(&str) -> Option<Arc<Value>>,
) -> Option<String> {
    let required = |optional: Option<&Value>| optional.and_then(Value::as_bool) != Some(true);
    let not_found = |name: &str| format!("secret \"{name}\" not found");
    let check_secret = |name: &str, optional: Option<&Value>| -> Option<String> {
        (!name.is_empty() && required(optional) && secret(name).is_none()).then(|| not_found(name))
    };
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = e.get("secretRef")
                    && let Some(m) = check_secret(s(r, "/name"), r.get("optional"))
                {
                    return Some(m);
                }
            }
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let Some(r) = e.pointer("/valueFrom/secretKeyRef") else {
                    continue;
                };
                let (name, key) = (s(r, "/name"), s(r, "/key"));
                if name.is_empty() || !required(r.get("optional")) {
                    continue;
                }
                match secret(name) {
                    None => return Some(not_found(name)),
                    Some(sec) if sec.pointer(&format!("/data/{key}")).is_none() => {
                        return Some(format!("couldn't find key {key} in Secret {ns}/{name}"));
                    }
                    Some(_) => {}
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
        if let Some(sec) = v.get("secret")
            && let Some(m) = check_secret(s(sec, "/secretName"), sec.get("optional"))
        {
            return Some(m);
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sec) = src.get("secret")
                && let Some(m) = check_secret(s(sec, "/name"), sec.get("optional"))
            {
                return Some(m);
            }
        }
    }
    None
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

impl<C: Cluster> Sim<C> {
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
        let workloads = if self.opts.controllers {
            &WORKLOADS[..]
        } else {
            &[]
        };
        for (g, r) in workloads.iter().chain(&[("", "pods")]) {
            for k in self.c.keys_of(g, r) {
                self.enqueue(k);
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Resync => self.resync(),
            Event::Change {
                key,
                deleted,
                object,
            } => self.on_change(&key, deleted, &object),
        }
    }

    fn on_change(&mut self, k: &Key, deleted: bool, object: &Value) {
        let controllers = self.opts.controllers;
        match (k.group.as_str(), k.resource.as_str()) {
            ("apps", "deployments") if deleted => {
                self.progress.remove(k);
            }
            ("apps", "deployments" | "statefulsets" | "daemonsets") if controllers => {
                self.enqueue(k.clone())
            }
            ("apps", "replicasets") if controllers => {
                self.enqueue(k.clone());
                if let Some(o) = controller_of(k, object) {
                    self.enqueue(o);
                }
            }
            ("", "pods") => {
                if deleted {
                    self.first_seen.remove(k);
                    if let Some(b) = self.blocked.get_mut(&k.namespace) {
                        b.remove(k);
                    }
                } else {
                    self.enqueue(k.clone());
                }
                if controllers && let Some(o) = controller_of(k, object) {
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

    async fn reconcile(&mut self, k: &Key) {
        match (k.group.as_str(), k.resource.as_str()) {
            ("apps", "deployments") => self.deployment(k).await,
            ("apps", "replicasets") => self.replicaset(k).await,
            ("apps", "statefulsets") => self.statefulset(k).await,
            ("apps", "daemonsets") => self.daemonset(k).await,
            ("", "pods") => self.pod(k).await,
            _ => {}
        }
    }

    async fn write_status(&self, k: &Key, status: Value) {
        let Some(cur) = self.c.get(k) else {
            return;
        };
        if cur.get("status") == Some(&status) {
            return;
        }
        let mut next = (*cur).clone();
        next["status"] = status;
        self.c.update_status(k, next).await;
    }

    async fn set_spec_replicas(&self, k: &Key, n: i64) {
        let Some(cur) = self.c.get(k) else {
            return;
        };
        if replicas(&cur) == n {
            return;
        }
        let mut next = (*cur).clone();
        next["spec"]["replicas"] = json!(n);
        self.c.update(k, next).await;
    }

    /// Pods controlled by `owner`, not being deleted.
    fn pods_of(&self, ns: &str, owner: &Value) -> Vec<(Key, Arc<Value>)> {
        self.c
            .dependents(s(owner, "/metadata/uid"))
            .into_iter()
            .filter(|k| k.group.is_empty() && k.resource == "pods" && k.namespace == ns)
            .filter_map(|k| self.c.get(&k).map(|o| (k, o)))
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
        spec["nodeName"] = json!(node.unwrap_or_else(|| self.opts.node_for(name)));
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }

    // ---- Pods (the kubelet) -----------------------------------------------------------

    /// Whether the workload controlling this pod (or the pod itself) hangs rollouts.
    fn pod_hangs(&self, k: &Key, pod: &Value) -> bool {
        if hangs(pod, pod) {
            return true;
        }
        let mut cur = controller_of(k, pod);
        while let Some(ok) = cur {
            let Some(o) = self.c.get(&ok) else {
                return false;
            };
            if hangs(&o, pod) {
                return true;
            }
            cur = controller_of(&ok, &o);
        }
        false
    }

    async fn pod(&mut self, k: &Key) {
        let Some(pod) = self.c.get(k) else {
            return;
        };
        let node = s(&pod, "/spec/nodeName");
        if node.is_empty() {
            if !deleting(&pod) {
                self.c.bind(k, &self.opts.node_for(&k.name)).await;
            }
            return;
        }
        if !self.opts.is_ours(node) {
            return;
        }
        if deleting(&pod) {
            // A graceful delete waits for the kubelet to confirm that the containers stopped.
            if pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0)
            {
                self.c.delete(k).await;
            }
            return;
        }
        if pod_ready(&pod) {
            return;
        }
        let spec = pod.get("spec").cloned().unwrap_or(json!({}));
        let containers: Vec<Value> = spec
            .get("containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let missing = missing_secret(&k.namespace, &spec, |name| {
            self.c.get(&Key::new("", "secrets", &k.namespace, name))
        });
        let now = now_rfc3339();
        if let Some(message) = missing {
            self.blocked
                .entry(k.namespace.clone())
                .or_default()
                .insert(k.clone());
            self.first_seen.remove(k);
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
            self.write_status(k, status).await;
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
        let due = seen + self.opts.ready_delay;
        if Instant::now() < due {
            self.schedule(k, due);
            return;
        }
        self.first_seen.remove(k);
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| json!({
                "name": s(c, "/name"), "image": s(c, "/image"), "imageID": format!("sandbox://{}", s(c, "/image")),
                "containerID": format!("sandbox://{}", random_suffix(12)),
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
        self.write_status(k, status).await;
    }

    // ---- ReplicaSets ------------------------------------------------------------------

    async fn replicaset(&mut self, k: &Key) {
        let Some(rs) = self.c.get(k) else {
            return;
        };
        if deleting(&rs) {
            return;
        }
        let want = replicas(&rs);
        let mut pods = self.pods_of(&k.namespace, &rs);
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in (pods.len() as i64)..want {
            let name = format!("{}-{}", k.name, random_suffix(5));
            let pod = self.new_pod("ReplicaSet", &rs, &template, &name, json!({}), None);
            self.c
                .create(&Key::new("", "pods", &k.namespace, &name), pod)
                .await;
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
                self.c.delete(pk).await;
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
        self.write_status(k, status).await;
    }

    // ---- Deployments ------------------------------------------------------------------

    async fn deployment(&mut self, k: &Key) {
        let Some(d) = self.c.get(k) else {
            return;
        };
        if deleting(&d) {
            return;
        }
        let want = replicas(&d);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = template_hash(&template);
        let rss: Vec<(Key, Arc<Value>)> = self
            .c
            .dependents(s(&d, "/metadata/uid"))
            .into_iter()
            .filter(|rk| rk.group == "apps" && rk.resource == "replicasets")
            .filter_map(|rk| self.c.get(&rk).map(|o| (rk, o)))
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
        let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        if paused {
            // `kubectl rollout pause`: no new ReplicaSet and no scaling until resumed; the
            // status says so and counts nothing as updated unless it already is.
            self.paused_status(k, &d, want, &rss, new_rs.as_ref()).await;
            return;
        }
        let Some((new_key, new_obj)) = new_rs else {
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
            let rs_name = format!("{}-{hash}", k.name);
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
            self.c
                .create(&Key::new("apps", "replicasets", &k.namespace, &rs_name), rs)
                .await;
            // The new ReplicaSet's own change event brings us back here.
            return;
        };
        self.set_spec_replicas(&new_key, want).await;
        // A ReplicaSet that becomes current again (rollback) gets the next revision.
        if revision(&new_obj) < max_rev
            && let Some(cur) = self.c.get(&new_key)
        {
            let mut next = (*cur).clone();
            next["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                json!((max_rev + 1).to_string());
            self.c.update(&new_key, next).await;
        }
        let new_obj = self.c.get(&new_key).unwrap_or(new_obj);
        let new_ready = new_obj
            .pointer("/status/readyReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_count = new_obj
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_done = new_ready >= want && new_count == want;
        if new_done {
            for (ok, _) in rss.iter().filter(|(rk, _)| *rk != new_key) {
                self.set_spec_replicas(ok, 0).await;
            }
            // revisionHistoryLimit (default 10): the oldest scaled-down ReplicaSets go.
            let limit = d
                .pointer("/spec/revisionHistoryLimit")
                .and_then(Value::as_u64)
                .unwrap_or(10) as usize;
            let mut idle: Vec<&(Key, Arc<Value>)> = rss
                .iter()
                .filter(|(rk, o)| {
                    *rk != new_key
                        && o.pointer("/status/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            == 0
                        && replicas(o) == 0
                })
                .collect();
            idle.sort_by_key(|(_, o)| revision(o));
            for (rk, _) in idle.iter().take(idle.len().saturating_sub(limit)) {
                self.c.delete(rk).await;
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
            if let Some(o) = self.c.get(rk) {
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
            let due = start + Duration::from_secs(secs);
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
        self.write_status(k, status).await;
    }

    async fn paused_status(
        &self,
        k: &Key,
        d: &Value,
        want: i64,
        rss: &[(Key, Arc<Value>)],
        new_rs: Option<&(Key, Arc<Value>)>,
    ) {
        let count = |o: &Value, f: &str| {
            o.pointer(&format!("/status/{f}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let total: i64 = rss.iter().map(|(_, o)| count(o, "replicas")).sum();
        let ready: i64 = rss.iter().map(|(_, o)| count(o, "readyReplicas")).sum();
        let updated = new_rs.map_or(0, |(_, o)| count(o, "replicas"));
        let now = now_rfc3339();
        let available = ready >= want;
        let conditions = keep_times(
            d.pointer("/status/conditions"),
            vec![
                json!({"type": "Available", "status": if available { "True" } else { "False" },
                       "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                       "lastUpdateTime": now, "lastTransitionTime": now}),
                json!({"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused",
                       "message": "Deployment is paused", "lastUpdateTime": now, "lastTransitionTime": now}),
            ],
        );
        let status = json!({
            "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        });
        self.write_status(k, status).await;
    }

    // ---- StatefulSets -----------------------------------------------------------------

    async fn statefulset(&mut self, k: &Key) {
        let Some(sts) = self.c.get(k) else {
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
        let on_delete = on_delete(&sts);
        // OrderedReady: create the lowest missing ordinal once all existing pods are ready.
        if all_ready && let Some(ord) = (0..want).find(|o| !by_ordinal.contains_key(o)) {
            let name = format!("{}-{ord}", k.name);
            let labels = json!({"controller-revision-hash": update_rev, "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": ord.to_string()});
            let pod = self.new_pod("StatefulSet", &sts, &template, &name, labels, None);
            self.c
                .create(&Key::new("", "pods", &k.namespace, &name), pod)
                .await;
        } else if all_ready {
            // Scale down from the highest ordinal, then roll outdated pods highest first;
            // with OnDelete only someone deleting a Pod rolls it.
            let extra = by_ordinal.keys().filter(|o| **o >= want).max();
            let outdated = by_ordinal
                .iter()
                .filter(|(_, (_, p))| {
                    !on_delete && s(p, "/metadata/labels/controller-revision-hash") != update_rev
                })
                .map(|(o, _)| *o)
                .max();
            if let Some(o) = extra.copied().or(outdated) {
                self.c.delete(&by_ordinal[&o].0).await;
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
        // As real clusters do (kubernetes/kubernetes#73492): with OnDelete, currentRevision
        // stays where it was however many Pods run the update revision.
        let current_rev = if done && !on_delete {
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
        self.write_status(k, status).await;
    }

    // ---- DaemonSets -------------------------------------------------------------------

    async fn daemonset(&mut self, k: &Key) {
        let Some(ds) = self.c.get(k) else {
            return;
        };
        if deleting(&ds) {
            return;
        }
        let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let rev = template_hash(&template);
        let nodes = self.opts.node_names();
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
                    let name = format!("{}-{}", k.name, random_suffix(5));
                    let labels = json!({"controller-revision-hash": rev, "pod-template-generation": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)).to_string()});
                    let pod = self.new_pod(
                        "DaemonSet",
                        &ds,
                        &template,
                        &name,
                        labels,
                        Some(node.clone()),
                    );
                    self.c
                        .create(&Key::new("", "pods", &k.namespace, &name), pod)
                        .await;
                }
                // maxUnavailable 1: replace one outdated pod at a time, once all are ready;
                // an outdated Pod that is not ready is no loss and goes at once (so a
                // rollback frees a node stuck on a bad template). With OnDelete only
                // someone deleting a Pod rolls it.
                Some((pk, p))
                    if s(p, "/metadata/labels/controller-revision-hash") != rev
                        && (!pod_ready(p) || (all_ready && !rolled))
                        && !on_delete(&ds) =>
                {
                    self.c.delete(pk).await;
                    rolled = true;
                }
                _ => {}
            }
        }
        for (pk, p) in &pods {
            if !nodes.iter().any(|n| n == s(p, "/spec/nodeName")) {
                self.c.delete(pk).await;
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
        self.write_status(k, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(name: &str) -> Option<Arc<Value>> {
        (name == "db-v1").then(|| Arc::new(json!({"data": {"password": ""}})))
    }

    #[test]
    fn a_missing_secret_or_key_is_named_as_the_kubelet_does() {
        let cases = [
            (
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db-v1"}}]}]}),
                None,
            ),
            (
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db-v2"}}]}]}),
                Some("secret \"db-v2\" not found"),
            ),
            (
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db-v2", "optional": true}}]}]}),
                None,
            ),
            (
                json!({"containers": [{"name": "a", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "password"}}}]}]}),
                None,
            ),
            (
                json!({"containers": [{"name": "a", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "user"}}}]}]}),
                Some("couldn't find key user in Secret ns/db-v1"),
            ),
            (
                json!({"initContainers": [{"name": "a", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-v3", "key": "x"}}}]}]}),
                Some("secret \"db-v3\" not found"),
            ),
            (
                json!({"volumes": [{"name": "v", "secret": {"secretName": "db-v4"}}]}),
                Some("secret \"db-v4\" not found"),
            ),
            (
                json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "db-v5"}}]}}]}),
                Some("secret \"db-v5\" not found"),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(
                missing_secret("ns", &spec, secrets).as_deref(),
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn only_numbered_nodes_of_the_prefix_are_ours() {
        let o = Options {
            node_prefix: "sim".into(),
            nodes: 2,
            ..Options::default()
        };
        assert!(o.is_ours("sim-0") && o.is_ours("sim-1"));
        assert!(!o.is_ours("sim-2") && !o.is_ours("kind-worker") && !o.is_ours("simx-0"));
        assert!(o.is_ours(&o.node_for("web-abcde")));
    }
}
