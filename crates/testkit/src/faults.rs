//! Fault injection: chosen requests are answered with an error status or late, or every open
//! watch is ended — what a real API server does under load, during an upgrade or behind a
//! flaky load balancer. The sandbox applies them to its own requests (tests arm them through
//! `secretsync_sandbox::Sandbox` or `POST /sandbox/faults`, a JSON [`Fault`]), and
//! [`crate::apiproxy::ApiProxy`] to the requests it forwards to any API server.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// One armed fault: which requests it hits, what they get, and for how long.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Verbs hit (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …); empty:
    /// every verb.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resource (plural) hit; absent: every resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Subresource hit (`status`, …; `""` for the main resource); absent: any.
    #[serde(default)]
    pub subresource: Option<String>,
    pub effect: Effect,
    /// Hit only every n-th matching request (1 or absent: every one).
    #[serde(default)]
    pub every: Option<u64>,
    /// Disarm after this many hits.
    #[serde(default)]
    pub times: Option<u64>,
    /// Disarm after this many milliseconds.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

/// What a hit request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Effect {
    /// An error status: 500 InternalError, 503 ServiceUnavailable, 429 TooManyRequests
    /// (with `Retry-After: 1`), 504 Timeout, …
    Status { code: u16 },
    /// The request is served, but only after this delay: a client with a shorter timeout
    /// gives up although the write happened.
    Delay { ms: u64 },
}

impl Default for Effect {
    fn default() -> Self {
        Effect::Status { code: 500 }
    }
}

/// What [`Faults::hit`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Status(u16),
    Delay(Duration),
}

struct Armed {
    fault: Fault,
    seen: u64,
    hits: u64,
    until: Option<Instant>,
}

impl Armed {
    fn matches(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        let f = &self.fault;
        (f.verbs.is_empty() || f.verbs.iter().any(|v| v == verb))
            && f.resource.as_deref().is_none_or(|r| r == resource)
            && f.subresource.as_deref().is_none_or(|s| s == subresource)
    }

    fn expired(&self, now: Instant) -> bool {
        self.fault.times.is_some_and(|t| self.hits >= t) || self.until.is_some_and(|u| now >= u)
    }
}

/// How many faults were injected, and how many watches were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStats {
    pub injected: u64,
    pub watches_dropped: u64,
}

pub struct Faults {
    armed: Mutex<(Vec<Armed>, FaultStats)>,
    /// Bumped to end every open watch.
    drops: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            armed: Mutex::default(),
            drops: watch::channel(0).0,
        }
    }
}

impl Faults {
    pub fn arm(&self, fault: Fault) {
        let until = fault
            .for_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        self.lock().0.push(Armed {
            fault,
            seen: 0,
            hits: 0,
            until,
        });
    }

    pub fn clear(&self) {
        self.lock().0.clear();
    }

    pub fn stats(&self) -> FaultStats {
        self.lock().1
    }

    /// The fault this request gets, if any: the first armed fault that matches.
    pub fn hit(&self, verb: &str, resource: &str, subresource: &str) -> Option<Injected> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (armed, stats) = &mut *guard;
        armed.retain(|a| !a.expired(now));
        let a = armed
            .iter_mut()
            .find(|a| a.matches(verb, resource, subresource))?;
        a.seen += 1;
        if a.seen % a.fault.every.unwrap_or(1).max(1) != 0 {
            return None;
        }
        a.hits += 1;
        stats.injected += 1;
        Some(match a.fault.effect {
            Effect::Status { code } => Injected::Status(code),
            Effect::Delay { ms } => Injected::Delay(Duration::from_millis(ms)),
        })
    }

    /// Ends every watch open now (clients see the stream close and must re-watch).
    pub fn drop_watches(&self) {
        self.lock().1.watches_dropped += 1;
        self.drops.send_modify(|n| *n += 1);
    }

    /// Changes when open watches must end.
    pub fn dropped(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Armed>, FaultStats)> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(json: &str) -> Fault {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_fault_hits_what_it_names_as_often_as_it_says() {
        let faults = Faults::default();
        faults.arm(fault(
            r#"{"verbs": ["create"], "resource": "secrets", "effect": {"kind": "status", "code": 500}, "every": 2, "times": 2}"#,
        ));
        assert_eq!(faults.hit("patch", "secrets", ""), None);
        assert_eq!(faults.hit("create", "configmaps", ""), None);
        let hits: Vec<_> = (0..6)
            .map(|_| faults.hit("create", "secrets", ""))
            .collect();
        assert_eq!(
            hits,
            [
                None,
                Some(Injected::Status(500)),
                None,
                Some(Injected::Status(500)),
                None,
                None
            ]
        );
        assert_eq!(faults.stats().injected, 2);
    }

    #[test]
    fn a_timed_fault_disarms_itself() {
        let faults = Faults::default();
        faults.arm(fault(
            r#"{"effect": {"kind": "delay", "ms": 10}, "forMs": 0}"#,
        ));
        assert_eq!(faults.hit("get", "pods", ""), None);
        faults.arm(fault(
            r#"{"subresource": "status", "effect": {"kind": "delay", "ms": 10}}"#,
        ));
        assert_eq!(
            faults.hit("patch", "secretsyncs", "status"),
            Some(Injected::Delay(Duration::from_millis(10)))
        );
        faults.clear();
        assert_eq!(faults.hit("patch", "secretsyncs", "status"), None);
    }
}
