//! The store controllers' side of the event sources: set up after each store check.

use std::sync::{Arc, OnceLock};

use kube::Client;
use secretsync_api::{EventSource, Reason, SecretStoreSpec, StoreKind};
use secretsync_providers::ConnectContext;
use secretsync_providers::value::ExposeSecret;
use tokio::time::Instant;

use super::readiness::{AUDIT_HEARTBEAT, EventsHealth, EventsState};
use super::wakers::Wakers;
use super::{openbao, sqs};
use crate::backend::health::BackendHealth;
use crate::cache::syncs::StoreKey;

/// The URL path a store's events are sent to, on the event listener.
pub fn path_of(store: &StoreKey) -> String {
    match store {
        (StoreKind::SecretStore, Some(namespace), name) => {
            format!("/events/v1/namespaces/{namespace}/secretstores/{name}")
        }
        (_, _, name) => format!("/events/v1/clustersecretstores/{name}"),
    }
}

/// The store controllers' side of the event sources: after each store check, a store's
/// source is set up (its listener key read, its poller started, its audit device heard
/// from) and its `EventsReady` decided.
pub struct Sources {
    pub health: Arc<EventsHealth>,
    backend: Arc<BackendHealth>,
    /// Set once the SecretSync caches exist: a poller needs them to wake readers.
    wakers: OnceLock<Wakers>,
}

/// One store generation, as the store controller sees it.
pub struct StoreAt<'a> {
    pub key: &'a StoreKey,
    pub uid: &'a str,
    pub generation: i64,
    pub spec: &'a SecretStoreSpec,
}

impl Sources {
    pub fn new(health: Arc<EventsHealth>, backend: Arc<BackendHealth>) -> Self {
        Self {
            health,
            backend,
            wakers: OnceLock::new(),
        }
    }

    pub fn started(&self, wakers: Wakers) {
        let _ = self.wakers.set(wakers);
    }

    /// Sets up the store's source after a check (`checked`: when it started and whether
    /// the backend passed it; `None` when an earlier check's outcome was reused); returns
    /// its `EventsReady`, `None` for a store without events or one whose source has not
    /// reported yet.
    pub async fn prepare(
        &self,
        client: &Client,
        store: StoreAt<'_>,
        checked: Option<(Instant, bool)>,
    ) -> Option<EventsState> {
        let Some(events) = &store.spec.events else {
            self.health.forget(store.uid);
            return None;
        };
        if let off @ Some(_) = self.health.listener_off(events.source) {
            return off;
        }
        match events.source {
            EventSource::OpenBaoAudit => {
                if let Some((checked_at, true)) = checked {
                    self.hear_audit_device(&store, checked_at);
                }
            }
            EventSource::Webhook | EventSource::GcpPubSub | EventSource::AzureEventGrid
                if checked.is_some() || self.health.key(store.uid).is_none() =>
            {
                let state = match read_key(client, &store).await {
                    Ok(key) => {
                        self.health.set_key(store.uid, key);
                        EventsState::ready(format!("listening at {}", path_of(store.key)))
                    }
                    Err(message) => EventsState::not_ready(Reason::EventSecretMissing, message),
                };
                self.health.report(store.uid, store.generation, state);
            }
            EventSource::Webhook | EventSource::GcpPubSub | EventSource::AzureEventGrid => {}
            EventSource::AwsSqs => {
                // Without the SecretSync caches nothing could be woken: the next check
                // starts it.
                if !self.health.polls(store.uid, store.generation)
                    && let Some(wakers) = self.wakers.get()
                {
                    let poller = sqs::spawn(sqs::Poller {
                        wakers: wakers.clone(),
                        health: self.health.clone(),
                        backend: self.backend.clone(),
                        client: client.clone(),
                        store: store.key.clone(),
                        uid: store.uid.to_owned(),
                        generation: store.generation,
                        spec: store.spec.clone(),
                    });
                    self.health.set_poller(store.uid, store.generation, poller);
                }
            }
        }
        self.health
            .condition(store.uid, store.generation, store.spec)
    }

    /// Waits (apart) for an audit entry from the store's OpenBao namespace after its check;
    /// when what it finds differs from what the status says, the store's status is written
    /// again.
    fn hear_audit_device(&self, store: &StoreAt<'_>, checked_at: Instant) {
        let secretsync_api::Provider::Vault(vault) = &store.spec.provider else {
            return;
        };
        let namespace = openbao::vault_namespace(vault).to_owned();
        let (health, backend) = (self.health.clone(), self.backend.clone());
        let (key, uid, generation) = (store.key.clone(), store.uid.to_owned(), store.generation);
        tokio::spawn(async move {
            let deadline = checked_at + AUDIT_HEARTBEAT;
            let mut heard = health.audit_entry_since(&namespace, checked_at);
            while !heard && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                heard = health.audit_entry_since(&namespace, checked_at);
            }
            let state = if heard {
                EventsState::ready("OpenBao's audit device reaches the operator")
            } else {
                EventsState::not_ready(
                    Reason::NoAuditEntries,
                    format!(
                        "no audit entry from OpenBao reached the operator's audit listener within {}s of the store's check: \
                         check `bao audit list` for a socket device pointing at it, and that OpenBao can reach it; \
                         changes are synced at the refresh interval meanwhile",
                        AUDIT_HEARTBEAT.as_secs()
                    ),
                )
            };
            if health.report(&uid, generation, state) {
                backend.restatus(&key);
            }
        });
    }
}

/// The key or token in the store's `events.secretRef`, read as the providers read
/// credentials; an empty one is refused (it would check nothing).
async fn read_key(client: &Client, store: &StoreAt<'_>) -> Result<Arc<[u8]>, String> {
    let Some(secret_ref) = store
        .spec
        .events
        .as_ref()
        .and_then(|e| e.secret_ref.as_ref())
    else {
        return Err("events.secretRef is required by this source".into());
    };
    let ctx = ConnectContext::new(client.clone(), store.key.1.clone());
    let refused = |why: String| format!("{why}; events are refused until it is there");
    let key = secretsync_providers::read_key(&ctx, secret_ref, "spec.events.secretRef")
        .await
        .map_err(|e| refused(e.to_string()))?;
    let key = key.expose_secret().as_bytes();
    if key.is_empty() {
        return Err(refused(format!(
            "events.secretRef: key {:?} of Secret {} is empty",
            secret_ref.key, secret_ref.name
        )));
    }
    Ok(key.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_store() {
        let ns = (
            StoreKind::SecretStore,
            Some("team".to_owned()),
            "vault".to_owned(),
        );
        assert_eq!(
            path_of(&ns),
            "/events/v1/namespaces/team/secretstores/vault"
        );
        let cluster = (StoreKind::ClusterSecretStore, None, "shared".to_owned());
        assert_eq!(path_of(&cluster), "/events/v1/clustersecretstores/shared");
    }
}
