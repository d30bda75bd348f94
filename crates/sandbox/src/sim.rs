//! The built-in workload simulator: `secretsync-simulator`'s engine (kubelet and
//! controllers layers, see that crate) run directly on the sandbox's store, fed by its
//! change feed. A sandbox started without it (`--no-simulator`) behaves like a bare
//! control plane, for the standalone `secretsync-sim` to drive over the API.

use std::sync::Arc;

use secretsync_simulator::{Cluster, Event, Options, engine::MANAGER};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::api::{Core, DeleteOpts, Propagation, Target, WriteOpts};
use crate::store::{ChangeKind, Key};

pub use secretsync_simulator::{BAD_SECRETS_ANNOTATION, HANG_ANNOTATION, pod_ready};

struct Store(Arc<Core>);

impl Store {
    fn target(&self, k: &Key, sub: &str) -> Option<Target> {
        let mut t = self.0.target_for(k)?;
        t.sub = sub.to_string();
        Some(t)
    }

    // Failed writes (conflicts, vanished objects) are dropped: the change that caused
    // them brings the engine back with the newer state.
    fn write(&self, k: &Key, sub: &str, obj: Value) {
        if let Some(t) = self.target(k, sub) {
            let _ = self.0.update(&t, obj, None, &WriteOpts::system(MANAGER));
        }
    }
}

impl Cluster for Store {
    fn get(&self, k: &Key) -> Option<Arc<Value>> {
        self.0.store.get(k)
    }

    fn dependents(&self, owner_uid: &str) -> Vec<Key> {
        self.0.store.dependents(owner_uid)
    }

    fn keys_of(&self, group: &str, resource: &str) -> Vec<Key> {
        self.0.store.keys_of_resource(group, resource)
    }

    async fn create(&self, k: &Key, obj: Value) {
        if let Some(t) = self.target(k, "") {
            let _ = self.0.create(&t, obj, None, &WriteOpts::system(MANAGER));
        }
    }

    async fn update(&self, k: &Key, obj: Value) {
        self.write(k, "", obj);
    }

    async fn update_status(&self, k: &Key, obj: Value) {
        self.write(k, "status", obj);
    }

    async fn delete(&self, k: &Key) {
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
    async fn bind(&self, k: &Key, node: &str) {
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
                    key: c.key.clone(),
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
