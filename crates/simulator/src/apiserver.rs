//! The simulator against any API server, through a kube client: one watch per kind fills
//! an in-memory cache (Secrets without their values), the engine reads the cache and
//! writes through the API. A write's answer goes into the cache at once, so the engine
//! never acts twice on a state its own write has already changed (no duplicate Pods while
//! the watch catches up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::engine::{self, Cluster, Event, Key, MANAGER, Options, WORKLOADS};
use crate::names::now_rfc3339;

#[derive(Default)]
struct Cache {
    objects: HashMap<Key, Arc<Value>>,
    /// owner uid -> dependents.
    owners: HashMap<String, HashSet<Key>>,
}

fn owner_uids(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
}

fn rv(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

impl Cache {
    fn remove(&mut self, k: &Key) -> Option<Arc<Value>> {
        let old = self.objects.remove(k)?;
        for uid in owner_uids(&old) {
            if let Some(set) = self.owners.get_mut(&uid) {
                set.remove(k);
                if set.is_empty() {
                    self.owners.remove(&uid);
                }
            }
        }
        Some(old)
    }

    /// Stores `v` unless the cache already holds a newer resourceVersion of it (a watch
    /// event older than a write's answer can arrive after it).
    fn upsert(&mut self, k: Key, v: Arc<Value>) {
        if let (Some(old), Some(new)) = (self.objects.get(&k).and_then(|o| rv(o)), rv(&v))
            && old > new
        {
            return;
        }
        self.remove(&k);
        for uid in owner_uids(&v) {
            self.owners.entry(uid).or_default().insert(k.clone());
        }
        self.objects.insert(k, v);
    }
}

/// A [`Cluster`] backed by a kube client and the watch cache.
#[derive(Clone)]
pub struct ApiCluster {
    client: Client,
    cache: Arc<RwLock<Cache>>,
    resources: Arc<HashMap<(String, String), ApiResource>>,
}

fn resource<K: kube::Resource<DynamicType = ()>>() -> ((String, String), ApiResource) {
    let ar = ApiResource::erase::<K>(&());
    ((ar.group.clone(), ar.plural.clone()), ar)
}

/// Secrets are cached for their key names only: the simulator never holds a value.
fn without_values(mut v: Value) -> Value {
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            *value = Value::String(String::new());
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("stringData");
    }
    v
}

impl ApiCluster {
    pub fn new(client: Client) -> Self {
        let resources = [
            resource::<Pod>(),
            resource::<Secret>(),
            resource::<Deployment>(),
            resource::<ReplicaSet>(),
            resource::<StatefulSet>(),
            resource::<DaemonSet>(),
        ]
        .into_iter()
        .collect();
        Self {
            client,
            cache: Arc::default(),
            resources: Arc::new(resources),
        }
    }

    fn api(&self, k: &Key) -> Option<(Api<DynamicObject>, &ApiResource)> {
        let ar = self.resources.get(&(k.group.clone(), k.resource.clone()))?;
        Some((
            Api::namespaced_with(self.client.clone(), &k.namespace, ar),
            ar,
        ))
    }

    fn remember(&self, k: &Key, obj: &DynamicObject) {
        if let Ok(v) = serde_json::to_value(obj) {
            let v = if k.resource == "secrets" {
                without_values(v)
            } else {
                v
            };
            self.cache
                .write()
                .expect("cache lock")
                .upsert(k.clone(), Arc::new(v));
        }
    }

    /// Watches one kind into the cache and forwards its changes to the engine.
    async fn watch(self, ar: ApiResource, events: mpsc::UnboundedSender<Event>) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut relisted: HashSet<Key> = HashSet::new();
        let key_of = |o: &DynamicObject| {
            Key::new(
                &ar.group,
                &ar.plural,
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default(),
            )
        };
        while let Some(e) = stream.next().await {
            let (obj, deleted) = match e {
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    // Whatever a relist no longer shows was deleted while we were away.
                    let gone: Vec<(Key, Arc<Value>)> = {
                        let mut cache = self.cache.write().expect("cache lock");
                        let stale: Vec<Key> = cache
                            .objects
                            .keys()
                            .filter(|k| k.group == ar.group && k.resource == ar.plural)
                            .filter(|k| !relisted.contains(*k))
                            .cloned()
                            .collect();
                        stale
                            .into_iter()
                            .filter_map(|k| cache.remove(&k).map(|o| (k, o)))
                            .collect()
                    };
                    for (key, object) in gone {
                        let _ = events.send(Event::Change {
                            key,
                            deleted: true,
                            object,
                        });
                    }
                    continue;
                }
                Ok(watcher::Event::InitApply(o)) => {
                    relisted.insert(key_of(&o));
                    (o, false)
                }
                Ok(watcher::Event::Apply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                Err(e) => {
                    tracing::warn!(resource = %ar.plural, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let key = key_of(&obj);
            let object = if deleted {
                self.cache.write().expect("cache lock").remove(&key)
            } else {
                // A newer resourceVersion from our own write stays.
                let fresh = serde_json::to_value(&obj).ok().map(|v| {
                    Arc::new(if ar.plural == "secrets" {
                        without_values(v)
                    } else {
                        v
                    })
                });
                fresh.inspect(|v| {
                    self.cache
                        .write()
                        .expect("cache lock")
                        .upsert(key.clone(), v.clone())
                })
            };
            let object = object.unwrap_or_else(|| Arc::new(Value::Null));
            if events
                .send(Event::Change {
                    key,
                    deleted,
                    object,
                })
                .is_err()
            {
                return;
            }
        }
    }

    fn body(&self, k: &Key, mut obj: Value) -> Option<(Api<DynamicObject>, DynamicObject)> {
        let (api, ar) = self.api(k)?;
        obj["apiVersion"] = json!(ar.api_version);
        obj["kind"] = json!(ar.kind);
        let obj = serde_json::from_value(obj)
            .inspect_err(|e| tracing::warn!(object = %k.name, error = %e, "not an object"))
            .ok()?;
        Some((api, obj))
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

/// Conflicts and vanished objects are the normal cost of acting on a cache: the watch
/// brings the newer state and the engine tries again.
fn log_write(what: &str, k: &Key, e: &kube::Error) {
    match e {
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => {
            tracing::debug!(what, resource = %k.resource, namespace = %k.namespace, name = %k.name, error = %e)
        }
        _ => {
            tracing::warn!(what, resource = %k.resource, namespace = %k.namespace, name = %k.name, error = %e, "write failed")
        }
    }
}

impl Cluster for ApiCluster {
    fn get(&self, k: &Key) -> Option<Arc<Value>> {
        self.cache
            .read()
            .expect("cache lock")
            .objects
            .get(k)
            .cloned()
    }

    fn dependents(&self, owner_uid: &str) -> Vec<Key> {
        self.cache
            .read()
            .expect("cache lock")
            .owners
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn keys_of(&self, group: &str, resource: &str) -> Vec<Key> {
        self.cache
            .read()
            .expect("cache lock")
            .objects
            .keys()
            .filter(|k| k.group == group && k.resource == resource)
            .cloned()
            .collect()
    }

    async fn create(&self, k: &Key, obj: Value) {
        let Some((api, obj)) = self.body(k, obj) else {
            return;
        };
        match api.create(&post_params(), &obj).await {
            Ok(o) => self.remember(k, &o),
            Err(e) => log_write("create", k, &e),
        }
    }

    async fn update(&self, k: &Key, obj: Value) {
        let Some((api, obj)) = self.body(k, obj) else {
            return;
        };
        match api.replace(&k.name, &post_params(), &obj).await {
            Ok(o) => self.remember(k, &o),
            Err(e) => log_write("update", k, &e),
        }
    }

    async fn update_status(&self, k: &Key, obj: Value) {
        let Some((api, obj)) = self.body(k, obj) else {
            return;
        };
        match api.replace_status(&k.name, &post_params(), &obj).await {
            Ok(o) => self.remember(k, &o),
            Err(e) => log_write("update status", k, &e),
        }
    }

    async fn delete(&self, k: &Key) {
        let Some((api, _)) = self.api(k) else {
            return;
        };
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            grace_period_seconds: (k.resource == "pods").then_some(0),
            ..DeleteParams::default()
        };
        match api.delete(&k.name, &dp).await {
            Ok(_) => {
                // Until the watch says it is gone, it is going.
                let mut cache = self.cache.write().expect("cache lock");
                if let Some(cur) = cache.objects.get(k).cloned() {
                    let mut v = (*cur).clone();
                    v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                    cache.objects.insert(k.clone(), Arc::new(v));
                }
            }
            Err(e) => log_write("delete", k, &e),
        }
    }

    async fn bind(&self, k: &Key, node: &str) {
        let Some((api, _)) = self.api(k) else {
            return;
        };
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": k.name, "namespace": k.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        match api
            .create_subresource::<_, Value>("binding", &k.name, &post_params(), &binding)
            .await
        {
            Ok(_) => {}
            // A server without the binding subresource (the sandbox) takes the field the
            // binding would set, in an ordinary update.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if let Some(cur) = self.get(k) {
                    let mut next = (*cur).clone();
                    next["spec"]["nodeName"] = json!(node);
                    self.update(k, next).await;
                }
            }
            Err(e) => log_write("bind", k, &e),
        }
    }
}

/// Registers the simulated nodes, Ready, and keeps their heartbeat fresh, so a real
/// control plane's node lifecycle and Pod garbage collectors leave their Pods alone. A
/// server without Nodes (the sandbox) is told once and skipped.
async fn keep_nodes(client: Client, names: Vec<String>) {
    let api: Api<Node> = Api::all(client);
    for name in &names {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"type": "secretsync-sim", "kubernetes.io/hostname": name}},
        });
        let node: Node = serde_json::from_value(node).expect("a valid Node");
        match api.create(&post_params(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::info!("the server has no Nodes; Pods are bound to node names only");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "registering the node failed");
                return;
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(20));
    loop {
        tick.tick().await;
        let now = now_rfc3339();
        for name in &names {
            let status = json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "simulated by secretsync-sim",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }]}});
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::warn!(node = %name, error = %e, "node heartbeat failed");
            }
        }
    }
}

/// Simulates against the server `client` talks to until the task is dropped.
pub async fn run(client: Client, opts: Options) {
    let cluster = ApiCluster::new(client.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let mut kinds = vec![("", "pods"), ("", "secrets")];
    if opts.controllers {
        kinds.extend(WORKLOADS);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (group, plural) in kinds {
        let ar = cluster.resources[&(group.to_owned(), plural.to_owned())].clone();
        tasks.spawn(cluster.clone().watch(ar, tx.clone()));
    }
    tasks.spawn(keep_nodes(client, opts.node_names()));
    drop(tx);
    engine::run(cluster, opts, rx).await;
}
