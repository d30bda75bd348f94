//! Instant sync: a store's change event becomes a refresh of the SecretSyncs that read the
//! key it names. A source says which key of which store changed: OpenBao's audit device
//! ([`openbao`]), signed webhooks, Pub/Sub and Event Grid pushes ([`listener`]), an SQS
//! queue ([`sqs`]). [`Wakers::changed`] forgets the key's shared reads, marks each SecretSync
//! that reads it as asked (`Memory::asked`), and wakes it; the pass then reads the backend
//! even though its refresh slot is not due. An event never carries a value: the backend
//! read stays the source of truth, so a forged or replayed event can cost a read but never
//! change a value. Whether a store's events arrive is its `EventsReady` condition
//! ([`health`]).

pub mod coalesce;
pub mod health;
pub mod listener;
pub mod openbao;
pub mod sqs;

use std::sync::{Arc, OnceLock};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use secretsync_api::{EventSource, Reason, SecretStoreSpec, SecretSync, StoreKind};
use tokio::time::Instant;

use crate::backend::health::BackendHealth;
use crate::cache::syncs::{StoreKey, SyncRef};
use crate::context::Context;
use health::{AUDIT_HEARTBEAT, EventsHealth, EventsState};

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
        let listening = self
            .health
            .condition(store.uid, store.generation, store.spec);
        if listening
            .as_ref()
            .is_some_and(|s| s.reason == Reason::EventListenerOff)
        {
            return listening;
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
                        EventsState::ready(format!("listening at {}", listener::path_of(store.key)))
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
        let namespace = match &store.spec.provider {
            secretsync_api::Provider::Vault(vault) => vault
                .namespace
                .as_deref()
                .unwrap_or("")
                .trim_matches('/')
                .to_owned(),
            _ => return,
        };
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

/// The key or token in the store's `events.secretRef`.
async fn read_key(client: &Client, store: &StoreAt<'_>) -> Result<Arc<[u8]>, String> {
    let Some(secret_ref) = store
        .spec
        .events
        .as_ref()
        .and_then(|e| e.secret_ref.as_ref())
    else {
        return Err("events.secretRef is required by this source".into());
    };
    let namespace = secret_ref
        .namespace
        .as_deref()
        .or(store.key.1.as_deref())
        .unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = |what: &str| {
        format!(
            "events.secretRef: {what} (Secret {namespace}/{}, key {:?}); events are refused until it exists",
            secret_ref.name, secret_ref.key
        )
    };
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| missing(&format!("cannot read the Secret: {e}")))?
        .ok_or_else(|| missing("no such Secret"))?;
    let value = secret
        .data
        .and_then(|mut d| d.remove(&secret_ref.key))
        .filter(|v| !v.0.is_empty())
        .ok_or_else(|| missing("no such key, or it is empty"))?;
    Ok(value.0.into())
}
