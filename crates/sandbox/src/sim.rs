//! The built-in workload simulator: `secretsync-simulator`'s engine (kubelet and
//! controllers layers, see that crate) run directly on the sandbox's store, fed by its
//! change feed. A sandbox started without it (`--no-simulator`) behaves like a bare
//! control plane, for the standalone `secretsync-sim` to drive over the API.

use std::sync::Arc;

use secretsync_simulator::{Cluster, Event, Key as SimKey, Options, engine::MANAGER};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::api::{Core, DeleteOpts, Propagation, Target, WriteOpts};
use crate::store::{ChangeKind, Key};

pub use secretsync_simulator::{BAD_SECRETS_ANNOTATION, HANG_ANNOTATION, pod_ready};

fn store_key(k: &SimKey) -> Key {
    Key::new(&k.group, &k.resource, &k.namespace, &k.name)
}

fn sim_key(k: &Key) -> SimKey {
    SimKey::new(&k.group, &k.resource, &k.namespace, &k.name)
}

struct Store(Arc<Core>);

impl Store {
    fn target(&self, k: &SimKey, sub: &str) -> Option<Target> {
        let mut t = self.0.target_for(&store_key(k))?;
        t.sub = sub.to_string();
        Some(t)
    }

    // Failed writes (conflicts, vanished objects) are dropped: the change that caused
    // them brings the engine back with the newer state.
    fn write(&self, k: &SimKey, sub: &str, obj: Value) {
        if let Some(t) = self.target(k, sub) {
            let _ = self.0.update(&t, obj, None, &WriteOpts::system(MANAGER));
        }
    }
}

impl Cluster for Store {
    fn get(&self, k: &SimKey) -> Option<Arc<Value>> {
        self.0.store.get(&store_key(k))
    }

    fn dependents(&self, owner_uid: &str) -> Vec<SimKey> {
        self.0
            .store
            .dependents(owner_uid)
            .iter()
            .map(sim_key)
            .collect()
    }

    fn keys_of(&self, group: &str, resource: &str) -> Vec<SimKey> {
        self.0
            .store
            .keys_of_resource(group, resource)
            .iter()
            .map(sim_key)
            .collect()
    }

    async fn create(&self, k: &SimKey, obj: Value) {
        if let Some(t) = self.target(k, "") {
            let _ = self.0.create(&t, obj, None, &WriteOpts::system(MANAGER));
        }
    }

    async fn update(&self, k: &SimKey, obj: Value) {
        self.write(k, "", obj);
    }

    async fn update_status(&self, k: &SimKey, obj: Value) {
        self.write(k, "status", obj);
    }

    async fn delete(&self, k: &SimKey) {
        if let Some(t) = self.target(k, "") {
            let _ = self.0.delete(
                &t,
                &DeleteOpts {
                    propagation: Some(Propagation::Background),
                    ..DeleteOpts::default()
                },
            );
        }
    }

    /// The sandbox has no `binding` subresource; it sets the field the binding would.
    async fn bind(&self, k: &SimKey, node: &str) {
        if let Some(cur) = self.get(k) {
            let mut next = (*cur).clone();
            next["spec"]["nodeName"] = Value::String(node.into());
            self.write(k, "", next);
        }
    }
}

/// Runs the simulator on `core`'s store until the store's feed closes.
pub async fn run(core: Arc<Core>, opts: Options) {
    let mut feed = core.store.subscribe();
    let (tx, rx) = mpsc::unbounded_channel();
    let forward = async move {
        loop {
            let event = match feed.recv().await {
                Ok(c) => Event::Change {
                    key: sim_key(&c.key),
                    deleted: c.kind == ChangeKind::Deleted,
                    object: c.object.clone(),
                },
                Err(RecvError::Lagged(_)) => Event::Resync,
                Err(RecvError::Closed) => return,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    };
    tokio::join!(
        forward,
        secretsync_simulator::engine::run(Store(core), opts, rx)
    );
}
