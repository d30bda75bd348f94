//! What every event source hands its changes to: the SecretSyncs reading a changed key are
//! asked for a read and woken.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use secretsync_api::{EventSource, SecretStoreSpec, SecretSync, StoreKind};

use crate::cache::syncs::{StoreKey, SyncRef};
use crate::context::Context;

/// What every source hands its changes to.
#[derive(Clone)]
pub struct Wakers {
    pub ctx: Arc<Context>,
    pub syncs: Store<DeserializeGuard<SecretSync>>,
    pub wake: UnboundedSender<SyncRef>,
}

/// A SecretSync woken by an event: its reference and UID.
pub type Woken = (SyncRef, String);

impl Wakers {
    pub fn new(
        ctx: &Arc<Context>,
        syncs: &Store<DeserializeGuard<SecretSync>>,
        wake: &UnboundedSender<SyncRef>,
    ) -> Self {
        Self {
            ctx: ctx.clone(),
            syncs: syncs.clone(),
            wake: wake.clone(),
        }
    }

    /// `key` of the store `store` changed, as `source` says: every SecretSync reading it
    /// through that store is asked for a read and woken, if the store listens to `source`.
    /// Returns those woken.
    pub fn changed(&self, source: EventSource, store: &StoreKey, key: &str) -> Vec<Woken> {
        self.changed_where(source, |candidate, _| {
            (candidate == store).then(|| key.to_owned())
        })
    }

    /// Like [`Wakers::changed`] for every store listening to `source` for which `key_in`
    /// names the changed key (OpenBao's audit device names a path, not a store).
    pub fn changed_where(
        &self,
        source: EventSource,
        key_in: impl Fn(&StoreKey, &SecretStoreSpec) -> Option<String>,
    ) -> Vec<Woken> {
        let now = jiff::Timestamp::now();
        let ctx = &self.ctx;
        let (stores, cluster_stores) = (ctx.stores.state(), ctx.cluster_stores.state());
        let namespaced = stores.iter().map(|s| {
            let key: StoreKey = (StoreKind::SecretStore, s.namespace(), s.name_any());
            (key, s.uid(), &s.spec)
        });
        let cluster = cluster_stores.iter().map(|s| {
            let key: StoreKey = (StoreKind::ClusterSecretStore, None, s.name_any());
            (key, s.uid(), &s.spec.store)
        });
        let mut woken = Vec::new();
        for (store, uid, spec) in namespaced.chain(cluster) {
            if spec.events.as_ref().map(|e| e.source) != Some(source) {
                continue;
            }
            let Some(key) = key_in(&store, spec) else {
                continue;
            };
            ctx.providers.forget_key(&uid.unwrap_or_default(), &key);
            for sync_ref in ctx.sync_index.users_of_store(&store) {
                let Some(guard) = self.syncs.get(&sync_ref) else {
                    continue;
                };
                let Ok(sync) = &guard.0 else { continue };
                if sync.spec.reads_key(&key) {
                    let uid = sync.uid().unwrap_or_default();
                    ctx.memory.asked.update(&uid, |_| now);
                    let _ = self.wake.unbounded_send(sync_ref.clone());
                    woken.push((sync_ref, uid));
                }
            }
        }
        woken
    }

    /// Whether each woken SecretSync has read the backend since `since` (its pass after
    /// the event ran, or a SecretSync since deleted).
    pub fn all_read_since(&self, woken: &[Woken], since: jiff::Timestamp) -> bool {
        woken.iter().all(|(sync_ref, uid)| {
            self.syncs.get(sync_ref).is_none()
                || self
                    .ctx
                    .memory
                    .refreshes
                    .get(uid)
                    .is_some_and(|read| read >= since)
        })
    }
}
