//! Backend health per store, not per SecretSync. A SecretSync whose read fails with a
//! reason that may concern the whole backend ([`backend_wide`]: down, sealed, refusing the
//! store's credentials, untrusted TLS) asks for a store check at once. When the check fails
//! too, the store is *down*: its Ready condition says why, and its SecretSyncs fail at once
//! with the store's reason instead of each reading the backend on its own backoff — the
//! store check alone probes the backend, on a short backoff of its own. When a check
//! succeeds again (or a credential Secret of the store changed and the check passes), every
//! SecretSync that failed for a backend-wide reason is woken at once, its backoff cleared;
//! their reads then go through the store's `rateLimit`.
//!
//! Keyed by the store's UID, as the [`crate::backend::connections::ProviderCache`] is: two stores on
//! one backend are probed apart, since one may be refused (its token revoked) while the
//! other is fine. The down state belongs to one store generation; an edit starts afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use secretsync_api::Reason;
use secretsync_providers::ProviderError;
use tokio::time::Instant;
use tracing::debug;

use crate::cache::syncs::{StoreKey, SyncRef};
use crate::process::metrics::Metrics;

/// Whether a failure may concern the whole backend rather than one key: the store check
/// decides whether it does.
pub fn backend_wide(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::ProviderUnavailable | Reason::ProviderAuthFailed | Reason::ProviderTLSFailed
    )
}

/// SecretSync failures ask for a store check at most this often; a check this recent
/// answers them.
pub const SUSPECT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A check asked for and not run this long after (the store controller had not seen the
/// store yet, say) is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// Why a store check should run before its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A SecretSync failed for a backend-wide reason: a check younger than
    /// [`SUSPECT_CHECK_EVERY`] answers it.
    Suspect,
    /// A credential Secret of the store changed: check now, and on success wake the
    /// store's failed SecretSyncs even if the store was not down.
    Credentials,
}

/// A store whose backend failed its check.
#[derive(Clone, Debug)]
struct Down {
    generation: i64,
    /// What the gauge counts it under.
    reason: Reason,
    error: ProviderError,
    since: Instant,
}

#[derive(Default)]
struct StoreHealth {
    down: Option<Down>,
    /// SecretSyncs that failed for a backend-wide reason, by reference, with their UIDs.
    failed: HashMap<SyncRef, String>,
    probe: Option<Probe>,
    /// When the pending check was asked for.
    asked: Option<Instant>,
    last_check: Option<Instant>,
}

/// A SecretSync to wake because its store recovered: its reference and UID (whose
/// backoff is cleared first).
pub type Wake = (SyncRef, String);

/// Asks the store controllers to check a store now.
pub type RequestCheck = Box<dyn Fn(&StoreKey) + Send + Sync>;

pub struct BackendHealth {
    stores: Mutex<HashMap<String, StoreHealth>>,
    checks: RequestCheck,
    wake: UnboundedSender<Wake>,
    metrics: Arc<Metrics>,
}

impl BackendHealth {
    pub fn new(checks: RequestCheck, wake: UnboundedSender<Wake>, metrics: Arc<Metrics>) -> Self {
        Self {
            stores: Mutex::default(),
            checks,
            wake,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StoreHealth>> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's error while its backend is down (for this generation): a SecretSync
    /// fails with it instead of reading the backend.
    pub fn down(&self, store_uid: &str, generation: i64) -> Option<ProviderError> {
        let stores = self.lock();
        let down = stores.get(store_uid)?.down.as_ref()?;
        (down.generation == generation).then(|| down.error.clone())
    }

    /// A SecretSync read through the store and failed with `reason`. A backend-wide reason
    /// records it for the wake-up and, unless the store is known down or was just checked,
    /// asks for a store check now.
    pub fn sync_failed(
        &self,
        store_uid: &str,
        store: &StoreKey,
        sync: SyncRef,
        sync_uid: &str,
        reason: Reason,
    ) {
        if !backend_wide(reason) {
            return;
        }
        let check = {
            let mut stores = self.lock();
            let health = stores.entry(store_uid.to_owned()).or_default();
            health.failed.insert(sync, sync_uid.to_owned());
            let pending = health.probe.is_some()
                && health
                    .asked
                    .is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER);
            let due = health.down.is_none()
                && !pending
                && health
                    .last_check
                    .is_none_or(|at| at.elapsed() >= SUSPECT_CHECK_EVERY);
            if due {
                health.probe.get_or_insert(Probe::Suspect);
                health.asked = Some(Instant::now());
            }
            due
        };
        if check {
            debug!(store = %store.2, %reason, "a SecretSync failed: checking its store now");
            (self.checks)(store);
        }
    }

    /// A SecretSync read through the store: it no longer waits for a recovery.
    pub fn sync_succeeded(&self, store_uid: &str, sync: &SyncRef) {
        if let Some(health) = self.lock().get_mut(store_uid) {
            health.failed.remove(sync);
        }
    }

    /// A credential Secret the store reads changed: check it now.
    pub fn credentials_changed(&self, store_uid: &str, store: &StoreKey) {
        {
            let mut stores = self.lock();
            let health = stores.entry(store_uid.to_owned()).or_default();
            health.probe = Some(Probe::Credentials);
            health.asked = Some(Instant::now());
        }
        (self.checks)(store);
    }

    /// Asks for the store's status to be written again, from its last check (nothing
    /// else about the store changed; its events did).
    pub fn restatus(&self, store: &StoreKey) {
        (self.checks)(store);
    }

    /// Why the store should be checked before its schedule, if it should; taken by the
    /// check.
    pub fn take_probe(&self, store_uid: &str) -> Option<Probe> {
        self.lock().get_mut(store_uid)?.probe.take()
    }

    /// The outcome of a store check. A backend-wide failure marks the store down (its
    /// SecretSyncs stop reading); a success after a down state, or after a credential
    /// change, wakes every SecretSync that failed for a backend-wide reason.
    pub fn checked(
        &self,
        store_uid: &str,
        generation: i64,
        outcome: std::result::Result<(), (Reason, ProviderError)>,
        after: Option<Probe>,
    ) {
        let woken: Vec<Wake> = {
            let mut stores = self.lock();
            let health = stores.entry(store_uid.to_owned()).or_default();
            health.last_check = Some(Instant::now());
            match outcome {
                Err((reason, error)) if backend_wide(reason) => {
                    let previous = health.down.take();
                    let since = match &previous {
                        Some(down) if down.generation == generation => down.since,
                        _ => Instant::now(),
                    };
                    match previous {
                        Some(down) if down.reason == reason => {}
                        previous => {
                            if let Some(down) = previous {
                                self.metrics.store_backend_up(down.reason);
                            }
                            self.metrics.store_backend_down(reason);
                        }
                    }
                    health.down = Some(Down {
                        generation,
                        reason,
                        error,
                        since,
                    });
                    Vec::new()
                }
                Err(_) => {
                    // Not the backend (an invalid spec): the SecretSyncs say so themselves.
                    if let Some(down) = health.down.take() {
                        self.metrics.store_backend_up(down.reason);
                    }
                    Vec::new()
                }
                Ok(()) => {
                    let recovered = health.down.take();
                    if let Some(down) = &recovered {
                        self.metrics.store_backend_up(down.reason);
                        self.metrics.store_backend_recovered(down.since.elapsed());
                    }
                    if recovered.is_some() || after == Some(Probe::Credentials) {
                        health.failed.drain().collect()
                    } else {
                        Vec::new()
                    }
                }
            }
        };
        for wake in woken {
            let _ = self.wake.unbounded_send(wake);
        }
    }

    /// The store was deleted.
    pub fn forget(&self, store_uid: &str) {
        if let Some(down) = self.lock().remove(store_uid).and_then(|h| h.down) {
            self.metrics.store_backend_up(down.reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use futures::channel::mpsc;
    use secretsync_api::StoreKind;

    use super::*;

    fn key() -> StoreKey {
        (
            StoreKind::SecretStore,
            Some("payments".into()),
            "vault".into(),
        )
    }

    fn sync(name: &str) -> SyncRef {
        SyncRef::new(name).within("payments")
    }

    fn checks() -> (RequestCheck, mpsc::UnboundedReceiver<StoreKey>) {
        let (tx, rx) = mpsc::unbounded();
        (
            Box::new(move |key: &StoreKey| {
                let _ = tx.unbounded_send(key.clone());
            }),
            rx,
        )
    }

    fn sealed() -> (Reason, ProviderError) {
        (
            Reason::ProviderUnavailable,
            ProviderError::Unavailable("503: Vault is sealed".into()),
        )
    }

    #[tokio::test]
    async fn one_check_for_many_failures_and_every_failed_sync_woken_on_recovery() {
        let (checks_tx, mut checks) = checks();
        let (wake_tx, mut wake) = mpsc::unbounded();
        let metrics = Arc::new(Metrics::default());
        let health = BackendHealth::new(checks_tx, wake_tx, metrics.clone());
        let down_now = || metrics.sum("secretsync_stores_backend_down");
        for i in 0..50 {
            health.sync_failed(
                "u",
                &key(),
                sync(&format!("s{i}")),
                &format!("uid{i}"),
                Reason::ProviderUnavailable,
            );
        }
        // A key-level failure is the SecretSync's own business.
        health.sync_failed("u", &key(), sync("x"), "ux", Reason::RemoteKeyNotFound);
        assert_eq!(checks.next().await, Some(key()));
        assert!(checks.try_recv().is_err(), "one check asked for");
        assert_eq!(health.take_probe("u"), Some(Probe::Suspect));

        let (reason, error) = sealed();
        health.checked("u", 1, Err((reason, error)), Some(Probe::Suspect));
        assert_eq!(
            health.down("u", 1).map(|e| e.reason()),
            Some(Reason::ProviderUnavailable)
        );
        assert!(health.down("u", 2).is_none(), "an edit starts afresh");
        assert_eq!(down_now(), 1.0);
        // While down, failures ask for no check: the store's own schedule probes.
        health.sync_failed("u", &key(), sync("s0"), "uid0", Reason::ProviderUnavailable);
        assert!(checks.try_recv().is_err());

        health.checked("u", 1, Ok(()), None);
        assert!(health.down("u", 1).is_none());
        assert_eq!(down_now(), 0.0);
        assert_eq!(
            metrics.sum("secretsync_store_backend_recovery_seconds_count"),
            1.0
        );
        let mut woken = Vec::new();
        while let Ok((_, uid)) = wake.try_recv() {
            woken.push(uid);
        }
        woken.sort();
        assert_eq!(woken.len(), 50, "{woken:?}");
        assert!(!woken.contains(&"ux".to_owned()));
    }

    #[tokio::test]
    async fn a_passing_check_wakes_nobody_unless_the_store_was_down_or_its_credentials_changed() {
        let (checks_tx, _checks) = checks();
        let (wake_tx, mut wake) = mpsc::unbounded();
        let health = BackendHealth::new(checks_tx, wake_tx, Arc::new(Metrics::default()));
        // Refused one path (a policy), while the store's credentials are fine.
        health.sync_failed("u", &key(), sync("s"), "us", Reason::ProviderAuthFailed);
        health.checked("u", 1, Ok(()), health.take_probe("u"));
        assert!(wake.try_recv().is_err(), "no wake-up loop");

        health.credentials_changed("u", &key());
        health.checked("u", 1, Ok(()), health.take_probe("u"));
        assert_eq!(wake.try_recv().ok().map(|(_, uid)| uid), Some("us".into()));
    }
}
