//! State shared by every reconcile: the API client, one event publisher, the caches the
//! watches fill, connected providers and per-object backoff. Handles only; the logic that
//! uses them lives in the pipeline's steps.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use secretsync_api::hash::HashKey;
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync, SecretSyncStatus, StoreKind};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::batch::Batcher;
use crate::events::Publisher;
use crate::hash_key::KeySecret;
use crate::health::BackendHealth;
use crate::index::VersionIndex;
use crate::metrics::Metrics;
use crate::namespaces::NamespaceLabels;
use crate::providers::ProviderCache;
use crate::sync_index::SyncIndex;
use crate::workloads::Workloads;

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
    /// workload, so they reach it as one template change ([`crate::batch`]).
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

/// Which caches have not delivered their first complete list yet. Reconciles wait for all
/// of them: before that the operator would see no versions, stores or workloads.
pub struct Readiness {
    pending: Mutex<BTreeSet<&'static str>>,
    ready: watch::Sender<bool>,
}

impl Readiness {
    pub fn new(caches: &[&'static str]) -> Self {
        let (ready, _) = watch::channel(caches.is_empty());
        Self {
            pending: Mutex::new(caches.iter().copied().collect()),
            ready,
        }
    }

    pub fn mark_ready(&self, cache: &'static str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.remove(cache) && pending.is_empty() {
            self.ready.send_replace(true);
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so this only ends when ready.
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// The caches and shared handles the watches fill, created before the controller runs.
pub struct Shared {
    pub index: Arc<VersionIndex>,
    pub sync_index: Arc<SyncIndex>,
    pub workloads: Arc<Workloads>,
    pub providers: Arc<ProviderCache>,
    pub readiness: Arc<Readiness>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub namespaces: Arc<NamespaceLabels>,
    pub health: Arc<BackendHealth>,
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
    pub readiness: Arc<Readiness>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub namespaces: Arc<NamespaceLabels>,
    /// Backend health per store: SecretSyncs of a store whose backend is down wait for
    /// its check instead of reading.
    pub health: Arc<BackendHealth>,
    pub backoff: Backoff,
    /// Highest version this process created. The watch that feeds the [`VersionIndex`]
    /// may lag behind our own writes; this makes sure the next reconcile never picks a
    /// number that is already taken.
    pub written: PerSync<i64>,
    /// When this process last read the backend, or first saw the SecretSync. A refresh that
    /// finds nothing new writes nothing (api.md guarantee 2), so the status cannot hold
    /// this; after a restart the first pass records "now", and the next read waits for the
    /// next slot of the refresh grid instead of reading early.
    pub refreshes: PerSync<jiff::Timestamp>,
    /// Keys the content hash ([`crate::hash_key`]).
    pub hash_key: HashKey,
    pub batcher: Batcher,
    /// A fingerprint of the version metadata disagreements last reported, so each set is
    /// reported once rather than at every pass.
    pub reported_mismatches: PerSync<u64>,
    /// The status this process last wrote per SecretSync UID, with the resourceVersion of
    /// the object it was computed from. See [`Context::written_status`].
    written_status: Mutex<HashMap<String, (String, SecretSyncStatus)>>,
}

impl Context {
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
            readiness: shared.readiness,
            stores: shared.stores,
            cluster_stores: shared.cluster_stores,
            namespaces: shared.namespaces,
            health: shared.health,
            hash_key: shared.hash_key,
            backoff,
            written: PerSync::default(),
            refreshes: PerSync::default(),
            batcher: Batcher::default(),
            reported_mismatches: PerSync::default(),
            written_status: Mutex::default(),
        }
    }

    pub async fn caches_ready(&self) {
        self.readiness.wait().await;
    }

    /// Our own last status write for this SecretSync, when the cached object is still the
    /// one that write was computed from: the watch has not delivered the write yet (another
    /// trigger, such as the Secret we just created, came first). Without this the pass would
    /// start from the old status and fetch and write again for nothing.
    pub fn written_status(&self, sync: &SecretSync) -> Option<SecretSyncStatus> {
        let uid = sync.metadata.uid.as_deref()?;
        let mut written = self
            .written_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match written.get(uid) {
            Some((rv, status)) if sync.metadata.resource_version.as_ref() == Some(rv) => {
                Some(status.clone())
            }
            Some(_) => {
                // The cache caught up (or someone else wrote): trust the object again.
                written.remove(uid);
                None
            }
            None => None,
        }
    }

    pub fn remember_status(&self, sync: &SecretSync, status: SecretSyncStatus) {
        if let (Some(uid), Some(rv)) = (&sync.metadata.uid, &sync.metadata.resource_version) {
            self.written_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.clone(), (rv.clone(), status));
        }
    }

    /// A SecretSync is gone: nothing this process remembers about it may outlive it.
    pub fn forget_sync(&self, uid: &str) {
        self.written.forget(uid);
        self.refreshes.forget(uid);
        self.reported_mismatches.forget(uid);
        self.backoff.succeeded(uid);
        self.written_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
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
