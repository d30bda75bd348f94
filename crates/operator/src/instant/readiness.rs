//! Whether a store's change events reach the operator: the store's `EventsReady` condition.
//! The refresh interval keeps every SecretSync correct while events are not ready; this
//! only says that changes wait for it, and why.
//!
//! What each source reports:
//! - `OpenBaoAudit`: after each store check (whose `auth/token/lookup-self` OpenBao audits
//!   like any request), whether an audit entry from the store's OpenBao namespace reached
//!   the listener within [`AUDIT_HEARTBEAT`]. None did: the device is missing, points
//!   elsewhere, or cannot reach the operator.
//! - `Webhook`, `GcpPubSub`, `AzureEventGrid`: whether the listener is on and the key or
//!   token in `events.secretRef` could be read (the listener checks each request with it).
//! - `AwsSqs`: whether the last receive from the queue succeeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secretsync_api::{EventSource, Reason, SecretStoreSpec};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long after a store check an audit entry from its OpenBao must arrive.
pub const AUDIT_HEARTBEAT: Duration = Duration::from_secs(3);

/// What a store's `EventsReady` condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsState {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
}

impl EventsState {
    pub fn ready(message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason: Reason::EventsListening,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// Which listeners this process runs (leaders only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Listeners {
    pub openbao_audit: bool,
    pub http: bool,
}

/// Per store UID: what its sources reported, the keys its listener routes check with, its
/// running pollers; per OpenBao namespace, when an audit entry last arrived.
#[derive(Default)]
pub struct EventsHealth {
    pub listeners: Listeners,
    reported: Mutex<HashMap<String, (i64, EventsState)>>,
    keys: Mutex<HashMap<String, Arc<[u8]>>>,
    pollers: Mutex<HashMap<String, (i64, AbortHandle)>>,
    audit_entries: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventsHealth {
    pub fn new(listeners: Listeners) -> Self {
        Self {
            listeners,
            ..Self::default()
        }
    }

    /// A source's state for this store generation. Returns whether it changed (the store's
    /// status should be written again).
    pub fn report(&self, uid: &str, generation: i64, state: EventsState) -> bool {
        let mut reported = lock(&self.reported);
        let new = (generation, state);
        if reported.get(uid) == Some(&new) {
            return false;
        }
        reported.insert(uid.to_owned(), new);
        true
    }

    /// What was reported for this store generation, if anything yet.
    pub fn reported(&self, uid: &str, generation: i64) -> Option<EventsState> {
        lock(&self.reported)
            .get(uid)
            .filter(|(g, _)| *g == generation)
            .map(|(_, s)| s.clone())
    }

    pub fn set_key(&self, uid: &str, key: Arc<[u8]>) {
        lock(&self.keys).insert(uid.to_owned(), key);
    }

    /// The key requests for this store are checked with; none until the store's check
    /// read it.
    pub fn key(&self, uid: &str) -> Option<Arc<[u8]>> {
        lock(&self.keys).get(uid).cloned()
    }

    /// Whether a poller runs for this store generation.
    pub fn polls(&self, uid: &str, generation: i64) -> bool {
        lock(&self.pollers)
            .get(uid)
            .is_some_and(|(g, task)| *g == generation && !task.is_finished())
    }

    /// The store's poller for this generation; an older one is stopped.
    pub fn set_poller(&self, uid: &str, generation: i64, task: AbortHandle) {
        if let Some((_, old)) = lock(&self.pollers).insert(uid.to_owned(), (generation, task)) {
            old.abort();
        }
    }

    /// An audit entry arrived from this OpenBao namespace (`""`: the root one).
    pub fn audit_entry(&self, namespace: &str) {
        let mut entries = lock(&self.audit_entries);
        match entries.get_mut(namespace) {
            Some(at) => *at = Instant::now(),
            None => {
                entries.insert(namespace.to_owned(), Instant::now());
            }
        }
    }

    /// Whether an audit entry from this namespace arrived at or after `since`.
    pub fn audit_entry_since(&self, namespace: &str, since: Instant) -> bool {
        lock(&self.audit_entries)
            .get(namespace)
            .is_some_and(|at| *at >= since)
    }

    /// The store is gone, or listens no more: its state, key and poller go.
    pub fn forget(&self, uid: &str) {
        lock(&self.reported).remove(uid);
        lock(&self.keys).remove(uid);
        if let Some((_, task)) = lock(&self.pollers).remove(uid) {
            task.abort();
        }
    }

    /// `EventsReady=False EventListenerOff` when this process runs without the listener
    /// `source` needs.
    pub fn listener_off(&self, source: EventSource) -> Option<EventsState> {
        let (listening, flag) = match source {
            EventSource::OpenBaoAudit => (self.listeners.openbao_audit, "--openbao-audit-listen"),
            EventSource::Webhook | EventSource::GcpPubSub | EventSource::AzureEventGrid => {
                (self.listeners.http, "--events-listen")
            }
            EventSource::AwsSqs => (true, ""),
        };
        (!listening).then(|| {
            EventsState::not_ready(
                Reason::EventListenerOff,
                format!(
                    "the operator runs without {flag}: changes are synced at the refresh interval"
                ),
            )
        })
    }

    /// The `EventsReady` the store's status shows: `None` for a store without events (the
    /// condition goes), or one whose source has not reported yet (the condition stays).
    pub fn condition(
        &self,
        uid: &str,
        generation: i64,
        spec: &SecretStoreSpec,
    ) -> Option<EventsState> {
        let source = spec.events.as_ref()?.source;
        self.listener_off(source)
            .or_else(|| self.reported(uid, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str) -> SecretStoreSpec {
        serde_json::from_value(serde_json::json!({
            "provider": {"fake": {"data": []}},
            "events": {"source": source, "secretRef": {"name": "k", "key": "k"}},
        }))
        .unwrap()
    }

    #[test]
    fn a_source_without_its_listener_says_which_flag_is_missing() {
        let health = EventsHealth::new(Listeners::default());
        let state = health.condition("u", 1, &spec("Webhook")).unwrap();
        assert!(!state.ready);
        assert_eq!(state.reason, Reason::EventListenerOff);
        assert!(
            state.message.contains("--events-listen"),
            "{}",
            state.message
        );
    }

    #[test]
    fn a_report_stands_for_its_generation_only() {
        let health = EventsHealth::new(Listeners {
            openbao_audit: true,
            http: true,
        });
        assert_eq!(health.condition("u", 1, &spec("Webhook")), None);
        assert!(health.report("u", 1, EventsState::ready("listening")));
        assert!(
            !health.report("u", 1, EventsState::ready("listening")),
            "unchanged"
        );
        assert!(health.condition("u", 1, &spec("Webhook")).unwrap().ready);
        assert_eq!(health.condition("u", 2, &spec("Webhook")), None);
        health.forget("u");
        assert_eq!(health.condition("u", 1, &spec("Webhook")), None);
    }

    #[test]
    fn audit_entries_are_told_apart_by_namespace_and_time() {
        let health = EventsHealth::default();
        let before = Instant::now();
        health.audit_entry("team");
        assert!(health.audit_entry_since("team", before));
        assert!(!health.audit_entry_since("", before));
        assert!(!health.audit_entry_since("team", Instant::now() + Duration::from_secs(1)));
    }
}
