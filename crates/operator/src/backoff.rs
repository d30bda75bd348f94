//! Per-object backoff that every wake-up respects. kube-runtime schedules the retry, but any
//! other trigger (a workload's status changing, a store event) would run the SecretSync
//! again at once, and during an outage read the backend far more often than the schedule.
//! So the schedule is kept here: until it is due, only a fix — a new generation of the
//! SecretSync or of its store — runs the pipeline early.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Retry, backoff_delay, probe_delay};

#[derive(Clone, Debug)]
struct Failing {
    /// Failures in a row.
    attempts: u32,
    /// No pass before this, unless something was fixed. `None`: waits for an edit.
    not_before: Option<Instant>,
    generation: Option<i64>,
    store_generation: Option<i64>,
}

/// The default cap on any retry delay: the slowest class's own cap.
pub const MAX_BACKOFF: Duration = Duration::from_secs(900);

/// The delay before retry `attempt` of a `Retry` class, under a cap.
type Schedule = fn(Retry, u32, Duration) -> Option<Duration>;

pub struct Backoff {
    failing: Mutex<HashMap<String, Failing>>,
    /// No retry waits longer than this (plus jitter).
    max: Duration,
    schedule: Schedule,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(MAX_BACKOFF)
    }
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            failing: Mutex::default(),
            max,
            schedule: backoff_delay,
        }
    }

    /// The short schedule of store checks ([`probe_delay`]).
    pub fn for_probes(max: Duration) -> Self {
        Self {
            failing: Mutex::default(),
            max,
            schedule: probe_delay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Failing>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure; returns when to retry (`None`: when the object changes), never
    /// later than `within` (a SecretSync's refreshInterval: failing, it reads no less often
    /// than it would if it worked).
    pub fn failed(
        &self,
        uid: &str,
        retry: Retry,
        generation: Option<i64>,
        store_generation: Option<i64>,
        within: Option<Duration>,
    ) -> Option<Duration> {
        let mut failing = self.lock();
        let entry = failing.entry(uid.to_owned()).or_insert(Failing {
            attempts: 0,
            not_before: None,
            generation,
            store_generation,
        });
        let delay = (self.schedule)(retry, entry.attempts, self.max)
            .map(|d| within.map_or(d, |within| d.min(within)));
        entry.attempts = entry.attempts.saturating_add(1);
        entry.not_before = delay.map(|d| Instant::now() + d);
        entry.generation = generation;
        entry.store_generation = store_generation;
        delay
    }

    /// How long a failing object must still wait, when nothing was fixed since it failed.
    pub fn hold(
        &self,
        uid: &str,
        generation: Option<i64>,
        store_generation: Option<i64>,
    ) -> Option<Duration> {
        let failing = self.lock();
        let entry = failing.get(uid)?;
        if entry.generation != generation || entry.store_generation != store_generation {
            return None;
        }
        let wait = entry.not_before?.checked_duration_since(Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    pub fn succeeded(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wake_ups_wait_out_the_backoff_unless_something_was_fixed() {
        let backoff = Backoff::default();
        let first = backoff
            .failed("u", Retry::Soon, Some(1), Some(1), None)
            .unwrap();
        let held = backoff.hold("u", Some(1), Some(1)).unwrap();
        assert!(held <= first && held > Duration::ZERO);
        // an edit of the SecretSync or of its store runs at once
        assert_eq!(backoff.hold("u", Some(2), Some(1)), None);
        assert_eq!(backoff.hold("u", Some(1), Some(2)), None);
        tokio::time::advance(first).await;
        assert_eq!(backoff.hold("u", Some(1), Some(1)), None, "due now");
        // the next failure waits longer
        let second = backoff
            .failed("u", Retry::Soon, Some(1), Some(1), None)
            .unwrap();
        assert!(second > first.mul_f64(1.2), "{second:?} after {first:?}");
        backoff.succeeded("u");
        assert_eq!(backoff.hold("u", Some(1), Some(1)), None);
        assert!(backoff.lock().is_empty());
    }

    #[test]
    fn a_failing_sync_retries_no_later_than_its_refresh_interval() {
        let backoff = Backoff::default();
        let refresh = Duration::from_secs(2);
        for _ in 0..6 {
            let delay = backoff
                .failed("u", Retry::Later, Some(1), None, Some(refresh))
                .unwrap();
            assert!(delay <= refresh, "{delay:?}");
        }
    }

    #[test]
    fn failures_that_wait_for_an_edit_hold_nothing() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.failed("u", Retry::OnChange, Some(1), None, None),
            None
        );
        assert_eq!(backoff.hold("u", Some(1), None), None);
    }
}
