//! State shared by every reconcile: the API client, one event recorder, caches built from
//! watches, connected providers and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use secretsync_api::validate::{StoreScope, validate_store};
use secretsync_api::{
    ClusterSecretStore, SecretStore, SecretStoreSpec, SecretSync, SecretSyncStatus, StoreKind,
    selector,
};
use secretsync_providers::{ConnectContext, Provider};

use crate::error::{Error, Result};
use crate::index::VersionIndex;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            controller_name: "secretsync".into(),
            instance: None,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A store resolved for one SecretSync: its spec, identity and connected provider.
pub struct ResolvedStore {
    pub kind: StoreKind,
    pub name: String,
    pub provider: Arc<Provider>,
    /// `spec.rateLimit`, shared by every SecretSync reading through this store.
    pub limiter: Option<Arc<RateLimiter>>,
}

/// Highest version this process created per SecretSync UID. The watch that feeds the
/// [`VersionIndex`] may lag behind our own writes; this makes sure the next reconcile never
/// picks a number that is already taken.
#[derive(Default)]
pub struct WrittenVersions(Mutex<HashMap<String, i64>>);

impl WrittenVersions {
    pub fn record(&self, uid: &str, version: i64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(uid.to_owned()).or_insert(version);
        *entry = (*entry).max(version);
    }

    pub fn get(&self, uid: &str) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .copied()
    }

    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// A connected provider with the store's rate limiter.
#[derive(Clone)]
struct Connected {
    provider: Arc<Provider>,
    limiter: Option<Arc<RateLimiter>>,
}

/// What the watches keep in memory, filled before the first reconcile.
pub struct Caches {
    pub index: Arc<VersionIndex>,
    pub syncs: Store<DeserializeGuard<SecretSync>>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub workloads: Workloads,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub config: Config,
    pub index: Arc<VersionIndex>,
    pub metrics: Arc<Metrics>,
    pub written: WrittenVersions,
    pub syncs: Store<DeserializeGuard<SecretSync>>,
    pub stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    pub workloads: Workloads,
    /// Connected providers by (store UID, generation): a store edit reconnects; credentials
    /// and tokens are shared by every SecretSync using the store.
    providers: Mutex<HashMap<(String, i64), Connected>>,
    /// The status this process last wrote per SecretSync UID, with the resourceVersion of
    /// the object it was computed from. See [`Context::written_status`].
    written_status: Mutex<HashMap<String, (String, SecretSyncStatus)>>,
    /// Failed attempts in a row per SecretSync UID, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, caches: Caches) -> Self {
        let Caches {
            index,
            syncs,
            stores,
            cluster_stores,
            workloads,
        } = caches;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: config.controller_name.clone(),
                instance: config.instance.clone(),
            },
        );
        Self {
            client,
            recorder,
            config,
            index,
            metrics,
            written: WrittenVersions::default(),
            syncs,
            stores,
            cluster_stores,
            workloads,
            providers: Mutex::default(),
            written_status: Mutex::default(),
            failures: Mutex::default(),
        }
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

    /// Counts a failure and returns how many came before it.
    pub fn record_failure(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(uid.to_owned()).or_insert(0);
        let before = *count;
        *count = count.saturating_add(1);
        before
    }

    pub fn record_success(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// The generation of the store a SecretSync names, if it exists (from the reflector,
    /// no API call).
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

    /// Finds the store a SecretSync names, checks it may be used from the SecretSync's
    /// namespace, and returns its connected provider.
    pub async fn resolve_store(&self, sync: &SecretSync) -> Result<ResolvedStore> {
        let namespace = sync.namespace().unwrap_or_default();
        let name = sync.spec.store_ref.name.clone();
        let kind = sync.spec.store_kind();
        let (spec, uid, generation, scope, store_namespace) = match kind {
            StoreKind::SecretStore => {
                let store = self
                    .stores
                    .get(&ObjectRef::new(&name).within(&namespace))
                    .ok_or_else(|| Error::StoreNotFound {
                        kind: "SecretStore",
                        name: name.clone(),
                        namespace: Some(namespace.clone()),
                    })?;
                (
                    store.spec.clone(),
                    store.uid().unwrap_or_default(),
                    store.metadata.generation.unwrap_or_default(),
                    StoreScope::Namespaced,
                    Some(namespace.clone()),
                )
            }
            StoreKind::ClusterSecretStore => {
                let store = self
                    .cluster_stores
                    .get(&ObjectRef::new(&name))
                    .ok_or_else(|| Error::StoreNotFound {
                        kind: "ClusterSecretStore",
                        name: name.clone(),
                        namespace: None,
                    })?;
                (
                    store.spec.store.clone(),
                    store.uid().unwrap_or_default(),
                    store.metadata.generation.unwrap_or_default(),
                    StoreScope::Cluster,
                    None,
                )
            }
        };
        validate_store(&spec, scope).map_err(|problems| Error::StoreInvalid {
            kind: kind.as_str(),
            name: name.clone(),
            problems,
        })?;
        if scope == StoreScope::Cluster {
            self.check_admitted(&spec, &name, &namespace).await?;
        }
        let connected = self
            .provider(&spec, uid, generation, store_namespace, &name)
            .await?;
        Ok(ResolvedStore {
            kind,
            name,
            provider: connected.provider,
            limiter: connected.limiter,
        })
    }

    /// A ClusterSecretStore with `conditions` admits only the namespaces they match; without
    /// conditions it admits every namespace (as External Secrets Operator does).
    async fn check_admitted(&self, spec: &SecretStoreSpec, store: &str, ns: &str) -> Result<()> {
        let Some(conditions) = spec.conditions.as_ref().filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        if conditions
            .iter()
            .any(|c| c.namespaces.iter().flatten().any(|n| n == ns))
        {
            return Ok(());
        }
        let labels = if conditions.iter().any(|c| c.namespace_selector.is_some()) {
            Api::<Namespace>::all(self.client.clone())
                .get_opt(ns)
                .await?
                .map(|n| n.labels().clone())
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let admitted = conditions.iter().any(|c| {
            c.namespace_selector
                .as_ref()
                .is_some_and(|s| selector::matches(s, &labels))
        });
        if admitted {
            Ok(())
        } else {
            Err(Error::StoreNotAllowed {
                store: store.to_owned(),
                namespace: ns.to_owned(),
            })
        }
    }

    async fn provider(
        &self,
        spec: &SecretStoreSpec,
        uid: String,
        generation: i64,
        store_namespace: Option<String>,
        store_name: &str,
    ) -> Result<Connected> {
        let key = (uid, generation);
        if let Some(p) = self
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let connect = ConnectContext {
            client: self.client.clone(),
            store_namespace,
        };
        let provider = Provider::connect(&spec.provider, &connect)
            .await
            .map_err(|source| Error::Provider {
                store: store_name.to_owned(),
                source,
            })?;
        let connected = Connected {
            provider: Arc::new(provider),
            limiter: spec
                .rate_limit
                .as_ref()
                .map(|r| Arc::new(RateLimiter::new(r.qps, r.burst))),
        };
        let mut providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        // Older generations of this store are dead: drop them with their tokens.
        providers.retain(|(uid, _), _| uid != &key.0);
        Ok(providers.entry(key).or_insert(connected).clone())
    }
}
