//! Stores report Ready: each SecretStore and ClusterSecretStore is validated and checked
//! against its backend (credentials accepted, mount or region reachable) when it is created
//! or changed and every `spec.refreshInterval` (default 5m). The result is the store's
//! `Ready` condition, with the reasons SecretSyncs use, so `kubectl get secretstores` shows
//! which store is broken before any SecretSync fails on it.
//!
//! The check is also the probe of the store's backend health ([`crate::backend::health`]): a
//! SecretSync failing for a backend-wide reason asks for one at once, a changed credential
//! Secret too, and while the backend is down it is repeated on a short schedule of its own
//! ([`crate::error::probe_delay`]) in place of every SecretSync's retries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use secretsync_api::duration::parse_duration;
use secretsync_api::reason::condition;
use secretsync_api::validate::{StoreScope, credential_secrets, validate_store};
use secretsync_api::{
    ClusterSecretStore, Reason, SecretStore, SecretStoreSpec, SecretStoreStatus, StoreKind, labels,
};
use secretsync_providers::ProviderError;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backend::connections::{ProviderCache, StoreIdentity};
use crate::backend::health::{BackendHealth, Probe, SUSPECT_CHECK_EVERY};
use crate::backoff::Backoff;
use crate::cache::syncs::StoreKey;
use crate::conditions::set_condition;
use crate::error::{Error, Result, Retry};
use crate::instant::readiness::EventsState;
use crate::instant::{Sources, StoreAt};
use crate::process::metrics::Metrics;

/// How often a store is checked when its spec does not say.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// What the two store kinds share for checking.
pub trait StoreObject:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const SCOPE: StoreScope;
    const KIND: StoreKind;
    fn store_spec(&self) -> &SecretStoreSpec;
    fn store_status(&self) -> Option<&SecretStoreStatus>;
}

impl StoreObject for SecretStore {
    const SCOPE: StoreScope = StoreScope::Namespaced;
    const KIND: StoreKind = StoreKind::SecretStore;
    fn store_spec(&self) -> &SecretStoreSpec {
        &self.spec
    }
    fn store_status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
}

impl StoreObject for ClusterSecretStore {
    const SCOPE: StoreScope = StoreScope::Cluster;
    const KIND: StoreKind = StoreKind::ClusterSecretStore;
    fn store_spec(&self) -> &SecretStoreSpec {
        &self.spec.store
    }
    fn store_status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
}

/// The outcome of the last check of a store generation, reused until the next check is due
/// (the interval after a success, the backoff after a failure), so the store's own status
/// write (which wakes its controller) costs no backend call and does not count as another
/// failure.
#[derive(Clone)]
struct Checked {
    generation: i64,
    at: Instant,
    outcome: std::result::Result<(), Failure>,
    /// How long the outcome stands; `None`: until the store changes.
    stands_for: Option<Duration>,
}

pub struct StoreContext {
    pub client: Client,
    pub providers: Arc<ProviderCache>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<BackendHealth>,
    /// The stores' event sources: set up after each check, their `EventsReady` in the status.
    pub sources: Arc<Sources>,
    checked: Mutex<HashMap<String, Checked>>,
    backoff: Backoff,
    credentials: Mutex<CredentialIndex>,
}

/// Which stores read credentials from which Secrets, from their specs.
#[derive(Default)]
struct CredentialIndex {
    /// `(namespace, name)` of a Secret → the stores reading it, by UID.
    readers: HashMap<(String, String), HashMap<String, StoreKey>>,
    /// Store UID → the Secrets it reads.
    reads: HashMap<String, Vec<(String, String)>>,
}

impl CredentialIndex {
    fn set(&mut self, uid: &str, key: &StoreKey, secrets: Vec<(String, String)>) {
        if self.reads.get(uid) == Some(&secrets) {
            return;
        }
        self.remove(uid);
        for secret in &secrets {
            self.readers
                .entry(secret.clone())
                .or_default()
                .insert(uid.to_owned(), key.clone());
        }
        self.reads.insert(uid.to_owned(), secrets);
    }

    fn remove(&mut self, uid: &str) {
        for secret in self.reads.remove(uid).unwrap_or_default() {
            if let Some(readers) = self.readers.get_mut(&secret) {
                readers.remove(uid);
                if readers.is_empty() {
                    self.readers.remove(&secret);
                }
            }
        }
    }
}

impl StoreContext {
    /// The store was deleted: its connected provider, last check, backoff and backend
    /// state go.
    pub fn forget(&self, uid: &str) {
        self.providers.forget(uid);
        self.sources.health.forget(uid);
        self.backoff.succeeded(uid);
        self.health.forget(uid);
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    pub fn new(
        client: Client,
        providers: Arc<ProviderCache>,
        metrics: Arc<Metrics>,
        health: Arc<BackendHealth>,
        sources: Arc<Sources>,
        max_backoff: Duration,
    ) -> Self {
        Self {
            client,
            providers,
            metrics,
            health,
            sources,
            checked: Mutex::default(),
            backoff: Backoff::for_probes(max_backoff),
            credentials: Mutex::default(),
        }
    }

    /// A Secret changed (or was created or deleted) with `resource_version`: each store
    /// reading credentials from it drops a connection made with the old content and is
    /// checked at once; on success its failed SecretSyncs are woken.
    pub fn credential_secret_changed(&self, namespace: &str, name: &str, resource_version: &str) {
        let readers: Vec<(String, StoreKey)> = self
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .readers
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|(uid, key)| (uid.clone(), key.clone()))
            .collect();
        if readers.is_empty() {
            return;
        }
        self.providers
            .drop_reading(namespace, name, resource_version);
        for (uid, key) in readers {
            debug!(store = %key.2, secret = %format!("{namespace}/{name}"), "credentials changed: checking the store");
            self.health.credentials_changed(&uid, &key);
        }
    }
}

/// The store as SecretSyncs name it.
pub fn key_of<S: StoreObject>(store: &S) -> StoreKey {
    (S::KIND, store.namespace(), store.name_any())
}

/// The store's status after a check: provider name, generation and the Ready condition.
pub fn status_after_check(
    previous: Option<&SecretStoreStatus>,
    spec: &SecretStoreSpec,
    generation: Option<i64>,
    outcome: &std::result::Result<(), Failure>,
    events: Option<EventsState>,
) -> SecretStoreStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.provider = Some(spec.provider.name().to_owned());
    status.observed_generation = generation;
    let (ok, reason, message) = match outcome {
        Ok(()) => (
            true,
            Reason::Valid,
            format!(
                "the {} backend accepted the store's settings and credentials",
                spec.provider.name()
            ),
        ),
        Err(failure) => (false, failure.reason, failure.message.clone()),
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ok,
        reason,
        message,
        generation,
    );
    match events {
        Some(events) => set_condition(
            &mut status.conditions,
            condition::EVENTS_READY,
            events.ready,
            events.reason,
            events.message,
            generation,
        ),
        // No events: the condition goes. Events not heard from yet: it stays as it was.
        None if spec.events.is_none() => status
            .conditions
            .retain(|c| c.type_ != condition::EVENTS_READY),
        None => {}
    }
    status
}

/// When to check again: the store's `refreshInterval` (`0` turns periodic checks off).
pub fn check_interval(spec: &SecretStoreSpec) -> Option<Duration> {
    match spec.refresh_interval.as_deref().map(parse_duration) {
        Some(Ok(interval)) if interval.is_zero() => None,
        Some(Ok(interval)) => Some(interval),
        _ => Some(DEFAULT_CHECK_INTERVAL),
    }
}

/// Why a check failed: what the Ready condition says, and when to check again (the same
/// retry classes as SecretSyncs: outages soon, credentials later, invalid specs on an edit).
#[derive(Clone, Debug)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    pub retry: Retry,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            reason: error.reason(),
            message: error.to_string(),
            retry: error.retry(),
        }
    }
}

async fn check<S: StoreObject>(store: &S, ctx: &StoreContext) -> Result<()> {
    let spec = store.store_spec();
    validate_store(spec, S::SCOPE).map_err(Error::InvalidSpec)?;
    let uid = store.uid().unwrap_or_default();
    let name = store.name_any();
    let namespace = store.namespace();
    let identity = StoreIdentity {
        uid: &uid,
        generation: store.meta().generation.unwrap_or_default(),
        name: &name,
        namespace: namespace.as_deref(),
    };
    let mut connected = ctx.providers.get(&ctx.client, spec, &identity).await?;
    if ctx
        .providers
        .drop_if_credentials_changed(&ctx.client, &connected)
        .await
    {
        connected = ctx.providers.get(&ctx.client, spec, &identity).await?;
    }
    if let Some(limiter) = &connected.limiter {
        limiter.acquire().await;
    }
    ctx.metrics.store_checked();
    connected
        .provider
        .check()
        .await
        .map_err(|source| Error::Provider {
            store: name,
            source,
        })
}

async fn reconcile<S: StoreObject>(store: Arc<S>, ctx: Arc<StoreContext>) -> Result<Action> {
    let uid = store.uid().unwrap_or_default();
    let generation = store.meta().generation;
    let spec = store.store_spec();
    let interval = check_interval(spec);
    let key = key_of(store.as_ref());
    ctx.credentials
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set(&uid, &key, credential_secrets(spec, key.1.as_deref()));
    let probe = ctx.health.take_probe(&uid);
    if let Some(probe) = probe {
        debug!(store = %store.name_any(), ?probe, "store check asked for");
    }
    let reusable = {
        let checked = ctx.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.get(&uid).cloned().filter(|c| {
            let fresh_enough = match probe {
                None => c.stands_for.is_none_or(|d| c.at.elapsed() < d),
                // A SecretSync's failure: a check this recent already answers it.
                Some(Probe::Suspect) => c.at.elapsed() < SUSPECT_CHECK_EVERY,
                Some(Probe::Credentials) => false,
            };
            Some(c.generation) == generation && fresh_enough
        })
    };
    let mut fresh = None;
    let checked = match reusable {
        Some(checked) => checked,
        None => {
            let started = Instant::now();
            let result = check(store.as_ref(), &ctx).await;
            fresh = Some((started, result.is_ok()));
            let backend_error = match &result {
                Err(Error::Provider { source, .. }) => Some(source.clone()),
                _ => None,
            };
            let outcome = result.map_err(Failure::from);
            ctx.health.checked(
                &uid,
                generation.unwrap_or_default(),
                match (&outcome, backend_error) {
                    (Ok(()), _) => Ok(()),
                    (Err(failure), Some(error)) => Err((failure.reason, error)),
                    (Err(failure), None) => Err((
                        failure.reason,
                        ProviderError::InvalidConfig(failure.message.clone()),
                    )),
                },
                probe,
            );
            let stands_for = match &outcome {
                Ok(()) => {
                    ctx.backoff.succeeded(&uid);
                    interval
                }
                Err(failure) => {
                    debug!(store = %store.name_any(), reason = %failure.reason, "store not ready");
                    // A failed check is retried on its own schedule, not only at the
                    // interval.
                    ctx.backoff
                        .failed(&uid, failure.retry, generation, None, None)
                }
            };
            let checked = Checked {
                generation: generation.unwrap_or_default(),
                at: Instant::now(),
                outcome,
                stands_for,
            };
            ctx.checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.clone(), checked.clone());
            checked
        }
    };
    let at = StoreAt {
        key: &key,
        uid: &uid,
        generation: generation.unwrap_or_default(),
        spec,
    };
    let events = ctx.sources.prepare(&ctx.client, at, fresh).await;
    let status = status_after_check(
        store.store_status(),
        spec,
        generation,
        &checked.outcome,
        events,
    );
    if store.store_status() != Some(&status) {
        let patch = json!({
            "apiVersion": S::api_version(&()),
            "kind": S::kind(&()),
            "status": status,
        });
        let resource = ApiResource::erase::<S>(&());
        let api: Api<DynamicObject> = match store.namespace() {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), &ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        api.patch_status(
            &store.name_any(),
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    let remaining = checked
        .stands_for
        .map(|d| d.saturating_sub(checked.at.elapsed()));
    Ok(remaining
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

fn error_policy<S: StoreObject>(_store: Arc<S>, error: &Error, _ctx: Arc<StoreContext>) -> Action {
    warn!(error = %error, "writing a store's status");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the Ready checks of one store kind, on every change `changes` passes on (the
/// store watch, whose reflector fills `stores`) and on `checks` (stores to check now, see
/// [`crate::backend::health`]), until `shutdown` resolves.
pub async fn run<S>(
    stores: reflector::Store<S>,
    changes: impl Stream<Item = Result<S, watcher::Error>> + Send + 'static,
    checks: impl Stream<Item = ObjectRef<S>> + Send + 'static,
    ctx: Arc<StoreContext>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    S: StoreObject + Resource<Scope: Send> + serde::Serialize,
{
    Controller::for_stream(changes, stores)
        .reconcile_on(checks)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<S>, error_policy::<S>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "store controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SecretStoreSpec {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn ready_says_what_the_check_found_and_keeps_its_transition_time() {
        let s = spec("{provider: {fake: {data: []}}}");
        let ok = status_after_check(None, &s, Some(1), &Ok(()), None);
        assert_eq!(ok.provider.as_deref(), Some("fake"));
        let ready = &ok.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Valid")
        );
        assert_eq!(
            status_after_check(Some(&ok), &s, Some(1), &Ok(()), None),
            ok
        );
        let bad = status_after_check(
            Some(&ok),
            &s,
            Some(2),
            &Err(Failure {
                reason: Reason::ProviderAuthFailed,
                message: "permission denied".into(),
                retry: Retry::Later,
            }),
            None,
        );
        let ready = &bad.conditions[0];
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.observed_generation
            ),
            ("False", "ProviderAuthFailed", Some(2))
        );
    }

    #[test]
    fn events_ready_is_set_kept_until_heard_from_and_dropped_with_the_events() {
        let listening = spec(
            "{provider: {fake: {data: []}}, events: {source: Webhook, secretRef: {name: k, key: k}}}",
        );
        let events_ready = |status: &SecretStoreStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == condition::EVENTS_READY)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let missing = EventsState::not_ready(Reason::EventSecretMissing, "no such Secret");
        let off = status_after_check(None, &listening, Some(1), &Ok(()), Some(missing));
        assert_eq!(
            events_ready(&off),
            Some(("False".into(), "EventSecretMissing".into()))
        );
        // Not heard from again yet: as it was.
        let kept = status_after_check(Some(&off), &listening, Some(1), &Ok(()), None);
        assert_eq!(events_ready(&kept), events_ready(&off));
        let on = status_after_check(
            Some(&off),
            &listening,
            Some(1),
            &Ok(()),
            Some(EventsState::ready("listening")),
        );
        assert_eq!(
            events_ready(&on),
            Some(("True".into(), "EventsListening".into()))
        );
        let plain = spec("{provider: {fake: {data: []}}}");
        let gone = status_after_check(Some(&on), &plain, Some(2), &Ok(()), None);
        assert_eq!(events_ready(&gone), None);
    }

    #[test]
    fn the_check_interval_follows_the_spec() {
        assert_eq!(
            check_interval(&spec("{provider: {fake: {data: []}}}")),
            Some(DEFAULT_CHECK_INTERVAL)
        );
        assert_eq!(
            check_interval(&spec(
                "{provider: {fake: {data: []}}, refreshInterval: 30s}"
            )),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            check_interval(&spec(
                "{provider: {fake: {data: []}}, refreshInterval: \"0\"}"
            )),
            None
        );
    }
}
