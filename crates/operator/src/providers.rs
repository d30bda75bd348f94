//! Connected providers, one per (store UID, generation), shared by every SecretSync reading
//! through the store and by the store's own Ready check: credentials and tokens are read and
//! logged in once. A store edit reconnects; a deleted store's client is dropped with its
//! tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Client;
use secretsync_api::SecretStoreSpec;
use secretsync_providers::{ConnectContext, Provider};

use crate::error::{Error, Result};
use crate::ratelimit::RateLimiter;

/// A connected provider with the store's rate limiter.
#[derive(Clone)]
pub struct Connected {
    pub provider: Arc<Provider>,
    /// `spec.rateLimit`, shared by every SecretSync reading through this store.
    pub limiter: Option<Arc<RateLimiter>>,
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
        let connect = ConnectContext {
            client: client.clone(),
            store_namespace: store.namespace.map(str::to_owned),
        };
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
        };
        let mut cache = self.lock();
        // Older generations of this store are dead: drop them with their tokens.
        cache.retain(|(uid, _), _| uid != &key.0);
        Ok(cache.entry(key).or_insert(connected).clone())
    }

    /// The store was deleted: drop its clients (and the tokens they hold).
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(u, _), _| u != uid);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
