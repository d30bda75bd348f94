//! Connected providers, one per (store UID, generation), shared by every SecretSync reading
//! through the store and by the store's own Ready check: credentials and tokens are read and
//! logged in once, and each remote value is read once however many SecretSyncs use it
//! ([`SharedReads`]). A store edit reconnects with an empty cache; a deleted store's client
//! is dropped with its tokens and cached values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secretsync_api::SecretStoreSpec;
use secretsync_providers::{ConnectContext, CredentialLog, Provider, ProviderError, RemoteValue};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::backend::ratelimit::RateLimiter;
use crate::error::{Error, Result};
use crate::process::metrics::Metrics;

/// A connected provider with the store's rate limiter and shared reads.
#[derive(Clone)]
pub struct Connected {
    pub provider: Arc<Provider>,
    /// `spec.rateLimit`, shared by every SecretSync reading through this store.
    pub limiter: Option<Arc<RateLimiter>>,
    pub reads: Arc<SharedReads>,
    /// The credential Secrets read to connect, as they were then.
    pub credentials: CredentialLog,
    /// When they were last compared with the Secrets as they are now.
    credentials_compared: Arc<Mutex<Option<Instant>>>,
}

/// Comparisons of a connection's credential Secrets are this far apart at least, however
/// many SecretSyncs report a refusal at once.
const CREDENTIALS_COMPARED_EVERY: Duration = Duration::from_secs(5);

/// One read: a remote key, at a pinned backend version or the latest.
pub type Read = (String, Option<String>);

type Outcome = Option<std::result::Result<RemoteValue, ProviderError>>;

struct Slot {
    outcome: watch::Receiver<Outcome>,
    started: Instant,
    bytes: usize,
}

/// Reads of one store, shared by every SecretSync that uses it: identical reads in flight
/// are made once (single-flight), and a value read stays usable for a short time, so N
/// SecretSyncs refreshing one remote key together cost one backend read. Values stay in
/// their redacting type; the cache is bounded in bytes, forgets expired values on the next
/// miss, and never outlives the store generation it was read through.
pub struct SharedReads {
    slots: Mutex<HashMap<Read, Slot>>,
}

/// The most value bytes one store keeps cached; reads beyond it are still single-flight.
const MAX_CACHED_BYTES: usize = 32 << 20;

impl SharedReads {
    fn new() -> Self {
        Self {
            slots: Mutex::default(),
        }
    }

    /// The backend says `key` changed: no value of it read so far, nor a read of it in
    /// flight, serves a later caller (those waiting on a read in flight still get it, and
    /// their SecretSync reads again).
    pub fn forget_key(&self, key: &str) {
        self.lock().retain(|(read, _), _| read != key);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Read, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `reads` (results in the same order), reusing values read within `ttl` and reads
    /// in flight; `fresh` (a rotation) reads everything again. The reads this call makes go
    /// to the backend as one batch (AWS BatchGetSecretValue), each through the limiter.
    pub async fn read(
        &self,
        connected: &Connected,
        metrics: &Metrics,
        reads: &[Read],
        ttl: Duration,
        fresh: bool,
    ) -> Vec<std::result::Result<RemoteValue, ProviderError>> {
        let mut waits: Vec<(usize, watch::Receiver<Outcome>)> = Vec::new();
        let mut mine: Vec<(usize, watch::Sender<Outcome>)> = Vec::new();
        {
            let mut slots = self.lock();
            // Expired values go; reads still in flight stay, whatever their age.
            slots.retain(|_, slot| slot.started.elapsed() < ttl || slot.outcome.borrow().is_none());
            for (i, read) in reads.iter().enumerate() {
                match slots.get(read) {
                    Some(slot) if !fresh || slot.outcome.borrow().is_none() => {
                        waits.push((i, slot.outcome.clone()));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        slots.insert(
                            read.clone(),
                            Slot {
                                outcome: rx,
                                started: Instant::now(),
                                bytes: 0,
                            },
                        );
                        mine.push((i, tx));
                    }
                }
            }
        }
        let mut results: Vec<Outcome> = vec![None; reads.len()];
        if !mine.is_empty() {
            for _ in &mine {
                if let Some(limiter) = &connected.limiter {
                    limiter.acquire().await;
                }
            }
            let refs: Vec<(&str, Option<&str>)> = mine
                .iter()
                .map(|(i, _)| (reads[*i].0.as_str(), reads[*i].1.as_deref()))
                .collect();
            let fetched = connected.provider.fetch_many(&refs).await;
            let mut slots = self.lock();
            let mut cached: usize = slots.values().map(|s| s.bytes).sum();
            for ((i, tx), outcome) in mine.into_iter().zip(fetched) {
                metrics.backend_request(connected.provider.name(), outcome.is_ok());
                let read = &reads[i];
                match &outcome {
                    Ok(value) if cached + value.bytes.len() <= MAX_CACHED_BYTES => {
                        cached += value.bytes.len();
                        if let Some(slot) = slots.get_mut(read) {
                            slot.bytes = value.bytes.len();
                        }
                    }
                    // Failures and values over the budget are not kept: the next caller
                    // reads again.
                    _ => {
                        slots.remove(read);
                    }
                }
                tx.send_replace(Some(outcome.clone()));
                results[i] = Some(outcome);
            }
        }
        for (i, mut rx) in waits {
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                // The reader was cancelled before it finished: read ourselves.
                Err(_) => None,
            };
            results[i] = Some(match outcome {
                Some(outcome) => outcome,
                None => {
                    let (key, version) = &reads[i];
                    if let Some(limiter) = &connected.limiter {
                        limiter.acquire().await;
                    }
                    let outcome = connected.provider.fetch(key, version.as_deref()).await;
                    metrics.backend_request(connected.provider.name(), outcome.is_ok());
                    outcome
                }
            });
        }
        results
            .into_iter()
            .map(|r| r.expect("every read has an outcome"))
            .collect()
    }
}

/// Which store, as the cache keys it.
pub struct StoreIdentity<'a> {
    pub uid: &'a str,
    pub generation: i64,
    pub name: &'a str,
    /// The store's namespace for a SecretStore; `None` for a ClusterSecretStore.
    pub namespace: Option<&'a str>,
}

#[derive(Default)]
pub struct ProviderCache {
    connected: Mutex<HashMap<(String, i64), Connected>>,
}

impl ProviderCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, i64), Connected>> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend behind store `uid` says `key` changed: its shared reads forget it.
    pub fn forget_key(&self, uid: &str, key: &str) {
        for ((store, _), connected) in self.lock().iter() {
            if store == uid {
                connected.reads.forget_key(key);
            }
        }
    }

    /// The connected provider for this generation of the store, connecting on first use.
    pub async fn get(
        &self,
        client: &Client,
        spec: &SecretStoreSpec,
        store: &StoreIdentity<'_>,
    ) -> Result<Connected> {
        let key = (store.uid.to_owned(), store.generation);
        if let Some(connected) = self.lock().get(&key) {
            return Ok(connected.clone());
        }
        let connect = ConnectContext::new(client.clone(), store.namespace.map(str::to_owned));
        let provider = Provider::connect(&spec.provider, &connect)
            .await
            .map_err(|source| Error::Provider {
                store: store.name.to_owned(),
                source,
            })?;
        let connected = Connected {
            provider: Arc::new(provider),
            limiter: spec
                .rate_limit
                .as_ref()
                .map(|r| Arc::new(RateLimiter::new(r.qps, r.burst))),
            reads: Arc::new(SharedReads::new()),
            credentials: connect.credentials,
            credentials_compared: Arc::default(),
        };
        let mut cache = self.lock();
        // Older generations of this store are dead: drop them with their tokens. Not this
        // generation's: callers that missed together each connected, and the first one
        // cached is the one all share (one login, one token).
        cache.retain(|(uid, generation), _| uid != &key.0 || *generation >= key.1);
        Ok(cache.entry(key).or_insert(connected).clone())
    }

    /// Whether a credential Secret this connection read has changed since (replaced,
    /// created or deleted). Then the connection is dropped, so the next use connects with
    /// the new credentials: a user who rotates a Vault token, an AppRole secret-id or a
    /// client certificate need not edit the store too. A Secret that cannot be read now
    /// counts as unchanged.
    pub async fn drop_if_credentials_changed(
        &self,
        client: &Client,
        connected: &Connected,
    ) -> bool {
        {
            let mut compared = connected
                .credentials_compared
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if compared.is_some_and(|at| at.elapsed() < CREDENTIALS_COMPARED_EVERY) {
                return false;
            }
            *compared = Some(Instant::now());
        }
        for ((namespace, name), seen) in connected.credentials.entries() {
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let now = match api.get_metadata_opt(&name).await {
                Ok(found) => found
                    .and_then(|s| s.metadata.resource_version)
                    .unwrap_or_default(),
                Err(_) => continue,
            };
            if now != seen {
                info!(secret = %format!("{namespace}/{name}"), "a credentials Secret changed: connecting again");
                self.lock()
                    .retain(|_, c| !Arc::ptr_eq(&c.provider, &connected.provider));
                return true;
            }
        }
        false
    }

    /// A credential Secret is now at `resource_version`: drop every connection that read
    /// it at another one, so the next use connects with what it holds now.
    pub fn drop_reading(&self, namespace: &str, name: &str, resource_version: &str) {
        let secret = (namespace.to_owned(), name.to_owned());
        self.lock().retain(|_, connected| {
            connected
                .credentials
                .entries()
                .iter()
                .all(|(read, seen)| read != &secret || seen == resource_version)
        });
    }

    /// The store was deleted: drop its clients (and the tokens they hold).
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(u, _), _| u != uid);
    }
}
