//! What every reconcile shares: handles (the API client, one event publisher, the caches the
//! watches fill, connected providers, per-object backoff) and, apart in [`Memory`], what
//! this process remembers per SecretSync between passes. The logic that uses them lives in
//! the pipeline's steps, which take what a decision needs as arguments.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use secretsync_api::hash::HashKey;
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync, SecretSyncStatus, StoreKind};

use crate::backend::connections::ProviderCache;
use crate::backend::health::BackendHealth;
use crate::backoff::Backoff;
use crate::cache::Listed;
use crate::cache::namespaces::NamespaceLabels;
use crate::cache::syncs::SyncIndex;
use crate::cache::versions::VersionIndex;
use crate::cache::workloads::Workloads;
use crate::events::Publisher;
use crate::hash_key::KeySecret;
use crate::instant::readiness::EventsHealth;
use crate::process::metrics::Metrics;
use crate::rollout::RolloutHandles;
use crate::rollout::batch::Batcher;

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Reporter name on events (`reportingController`).
    pub controller_name: String,
    /// Reporter instance (pod name), if known.
    pub instance: Option<String>,
    /// Timeout for every API write.
    pub write_timeout: Duration,
    /// Cap on the retry delay of a failing SecretSync or store.
    pub max_backoff: Duration,
    /// The Secret holding the content-hash key.
    pub hash_key: KeySecret,
    /// How long a workload rewrite waits for other SecretSyncs' rewrites of the same
    /// workload, so they reach it as one template change ([`crate::rollout::batch`]).
    pub rollout_settle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            controller_name: "secretsync".into(),
            instance: None,
            write_timeout: Duration::from_secs(10),
            max_backoff: crate::backoff::MAX_BACKOFF,
            hash_key: KeySecret::default(),
            rollout_settle: Duration::from_secs(1),
        }
    }
}

/// Something this process remembers per SecretSync UID; forgotten with the SecretSync.
pub struct PerSync<T>(Mutex<HashMap<String, T>>);

impl<T> Default for PerSync<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Copy> PerSync<T> {
    pub fn get(&self, uid: &str) -> Option<T> {
        self.lock().get(uid).copied()
    }

    /// Sets the value to `f(old)`.
    pub fn update(&self, uid: &str, f: impl FnOnce(Option<T>) -> T) {
        let mut map = self.lock();
        let new = f(map.get(uid).copied());
        map.insert(uid.to_owned(), new);
    }

    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caches and shared handles the watches fill, created before the controller runs.
pub struct Shared {
    pub index: Arc<VersionIndex>,
    pub sync_index: Arc<SyncIndex>,
    pub workloads: Arc<Workloads>,
    pub providers: Arc<ProviderCache>,
    pub listed: Arc<Listed>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub namespaces: Arc<NamespaceLabels>,
    pub health: Arc<BackendHealth>,
    pub event_sources: Arc<EventsHealth>,
    pub hash_key: HashKey,
}

pub struct Context {
    pub client: Client,
    pub events: Arc<Publisher>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub index: Arc<VersionIndex>,
    pub sync_index: Arc<SyncIndex>,
    pub workloads: Arc<Workloads>,
    pub providers: Arc<ProviderCache>,
    pub listed: Arc<Listed>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub namespaces: Arc<NamespaceLabels>,
    /// Backend health per store: SecretSyncs of a store whose backend is down wait for
    /// its check instead of reading.
    pub health: Arc<BackendHealth>,
    /// Whether each store's change events arrive, and the keys its listener routes check
    /// requests with ([`crate::instant`]).
    pub event_sources: Arc<EventsHealth>,
    pub backoff: Backoff,
    /// What this process remembers per SecretSync between passes.
    pub memory: Memory,
    /// Keys the content hash ([`crate::hash_key`]).
    pub hash_key: HashKey,
    pub batcher: Batcher,
}

/// What this process remembers per SecretSync (by UID) between passes: facts the caches
/// and the status cannot hold, each forgotten when the SecretSync goes.
#[derive(Default)]
pub struct Memory {
    /// Highest version this process created. The watch that feeds the [`VersionIndex`]
    /// may lag behind our own writes; this makes sure the next reconcile never picks a
    /// number that is already taken.
    pub written: PerSync<i64>,
    /// When this process last read the backend, or first saw the SecretSync. A refresh that
    /// finds nothing new writes nothing (guarantee 2, docs/reference/guarantees.md), so the
    /// status cannot hold this; after a restart the first pass records "now", and the next
    /// read waits for the next slot of the refresh grid instead of reading early.
    pub refreshes: PerSync<jiff::Timestamp>,
    /// A fingerprint of the version metadata disagreements last reported, so each set is
    /// reported once rather than at every pass.
    pub reported_mismatches: PerSync<u64>,
    /// When a store's change event last named a key this SecretSync reads: a read is due
    /// if none started since (`backend::audit`).
    pub asked: PerSync<jiff::Timestamp>,
    /// When the backend rotates a static role's credential next, from the `ttl` of the last
    /// read: it is read again just after.
    pub rotations: PerSync<jiff::Timestamp>,
    /// The status this process last wrote. See [`Memory::written_status`].
    statuses: Mutex<WrittenStatuses>,
}

impl Memory {
    /// Our own last status write for this SecretSync, when the cached object predates it:
    /// the watch has not delivered the write yet (another trigger, such as the Secret we
    /// just created, came first), or has delivered only an earlier write of ours (a real
    /// API server's watch lags that much behind two quick passes). Without this the pass
    /// would start from an old status: fetch and write again for nothing, or act on a
    /// decision already taken back — roll a target forward again right after rolling it
    /// back.
    pub fn written_status(&self, sync: &SecretSync) -> Option<SecretSyncStatus> {
        let uid = sync.metadata.uid.as_deref()?;
        let rv = sync.metadata.resource_version.as_deref()?;
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid, rv)
    }

    /// `status` was written by a pass that started from `sync`; its writes made the
    /// resourceVersions `made`, in order.
    pub fn remember_status(&self, sync: &SecretSync, made: Vec<String>, status: SecretSyncStatus) {
        if let (Some(uid), Some(rv)) = (&sync.metadata.uid, &sync.metadata.resource_version) {
            self.statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remember(uid, rv, made, status);
        }
    }

    fn forget(&self, uid: &str) {
        self.written.forget(uid);
        self.refreshes.forget(uid);
        self.reported_mismatches.forget(uid);
        self.asked.forget(uid);
        self.rotations.forget(uid);
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(uid);
    }
}

/// Our last status write per SecretSync UID, and the resourceVersions known to be older
/// than it: the one each write was computed from and the ones our earlier writes made.
#[derive(Default)]
struct WrittenStatuses(HashMap<String, Written>);

struct Written {
    status: SecretSyncStatus,
    /// What our last write made, when the server said.
    latest: Option<String>,
    /// Versions of the object that predate `latest` (a few: the watch lags by moments).
    older: VecDeque<String>,
}

/// How many superseded resourceVersions are remembered per SecretSync.
const OLDER_KEPT: usize = 8;

impl WrittenStatuses {
    /// Our last write's status while the cached object at `resource_version` predates it.
    fn get(&mut self, uid: &str, resource_version: &str) -> Option<SecretSyncStatus> {
        let written = self.0.get(uid)?;
        if written.older.iter().any(|rv| rv == resource_version) {
            return Some(written.status.clone());
        }
        // The cache caught up (or someone else wrote): trust the object again.
        self.0.remove(uid);
        None
    }

    /// A status written by a pass that started from `from`; its writes made `made`, in
    /// order (the last is the object's resourceVersion now).
    fn remember(&mut self, uid: &str, from: &str, mut made: Vec<String>, status: SecretSyncStatus) {
        let written = self.0.entry(uid.to_owned()).or_insert_with(|| Written {
            status: status.clone(),
            latest: None,
            older: VecDeque::new(),
        });
        let latest = made.pop();
        let superseded = std::iter::once(from.to_owned())
            .chain(written.latest.take())
            .chain(made);
        for rv in superseded {
            if !written.older.contains(&rv) {
                if written.older.len() == OLDER_KEPT {
                    written.older.pop_front();
                }
                written.older.push_back(rv);
            }
        }
        written.latest = latest;
        written.status = status;
    }
}

impl Context {
    /// Bounds an API write; a timed-out write is retried like any transient API error.
    pub async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = kube::Result<T>>,
    ) -> crate::error::Result<kube::Result<T>> {
        crate::writes::bounded(self.config.write_timeout, &self.metrics, write).await
    }

    /// What the rollout step uses of the context.
    pub fn rollout_handles(&self) -> RolloutHandles<'_> {
        RolloutHandles {
            client: &self.client,
            workloads: &self.workloads,
            syncs: &self.sync_index,
            batcher: &self.batcher,
            metrics: &self.metrics,
            settle: self.config.rollout_settle,
            write_timeout: self.config.write_timeout,
        }
    }

    /// Every event goes out here, so the rollout and revocation counters agree with them.
    pub async fn publish(&self, sync: &SecretSync, event: &kube::runtime::events::Event) {
        self.metrics.event_published(&event.reason);
        self.events.publish(event, &sync.object_ref(&())).await;
    }

    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, shared: Shared) -> Self {
        let events = Arc::new(Publisher::new(
            client.clone(),
            config.controller_name.clone(),
            config.instance.clone(),
        ));
        let backoff = Backoff::new(config.max_backoff);
        Self {
            client,
            events,
            config,
            metrics,
            index: shared.index,
            sync_index: shared.sync_index,
            workloads: shared.workloads,
            providers: shared.providers,
            listed: shared.listed,
            stores: shared.stores,
            cluster_stores: shared.cluster_stores,
            namespaces: shared.namespaces,
            health: shared.health,
            event_sources: shared.event_sources,
            hash_key: shared.hash_key,
            backoff,
            batcher: Batcher::default(),
            memory: Memory::default(),
        }
    }

    pub async fn caches_ready(&self) {
        self.listed.wait().await;
    }

    /// A SecretSync is gone: nothing this process remembers about it may outlive it.
    pub fn forget_sync(&self, uid: &str) {
        self.metrics.sync_forgotten(uid);
        self.memory.forget(uid);
        self.backoff.succeeded(uid);
    }

    /// The generation of the store a SecretSync names, if it exists (from the cache, no
    /// API call).
    pub fn store_generation(&self, sync: &SecretSync) -> Option<i64> {
        let name = &sync.spec.store_ref.name;
        match sync.spec.store_kind() {
            StoreKind::SecretStore => {
                let ns = sync.namespace().unwrap_or_default();
                self.stores
                    .get(&ObjectRef::new(name).within(&ns))
                    .and_then(|s| s.metadata.generation)
            }
            StoreKind::ClusterSecretStore => self
                .cluster_stores
                .get(&ObjectRef::new(name))
                .and_then(|s| s.metadata.generation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: i64) -> SecretSyncStatus {
        SecretSyncStatus {
            active_version: Some(active),
            ..SecretSyncStatus::default()
        }
    }

    /// Two quick passes from one cached object, then the watch delivers the first write
    /// only: the next pass must start from the second write, not from the first.
    #[test]
    fn a_cache_that_has_seen_only_an_earlier_write_of_ours_is_not_trusted() {
        let mut written = WrittenStatuses::default();
        written.remember("u", "10", vec!["11".into()], status(2));
        assert_eq!(written.get("u", "10"), Some(status(2)), "not yet delivered");
        written.remember("u", "10", vec!["12".into()], status(1));
        assert_eq!(
            written.get("u", "11"),
            Some(status(1)),
            "only the first delivered"
        );
        assert_eq!(written.get("u", "10"), Some(status(1)));
        assert_eq!(
            written.get("u", "12"),
            None,
            "caught up: the object is trusted"
        );
        assert_eq!(written.get("u", "11"), None, "and forgotten");
    }

    #[test]
    fn someone_elses_write_makes_the_object_trusted_again() {
        let mut written = WrittenStatuses::default();
        written.remember("u", "10", vec!["11".into()], status(2));
        assert_eq!(written.get("u", "15"), None);
        assert_eq!(written.get("u", "10"), None);
    }

    #[test]
    fn only_a_few_superseded_versions_are_kept() {
        let mut written = WrittenStatuses::default();
        for n in 0..20u32 {
            written.remember("u", &n.to_string(), vec![(n + 100).to_string()], status(1));
        }
        assert_eq!(written.0["u"].older.len(), OLDER_KEPT);
    }
}
