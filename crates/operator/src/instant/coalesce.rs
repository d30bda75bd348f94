//! Coalescing of change events: a burst of events for one key costs one refresh at its
//! start and at most one at the end of the window, whatever the source.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Events for one key within this window cost one read at its start and at most one at
/// its end: a burst of writes to one key is two refreshes, not one per write.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(1);

/// Above this many recent keys, an offer first forgets the quiet ones; below it they wait,
/// so a burst over many keys costs no scan per event.
const PRUNE_ABOVE: usize = 4096;

/// Per key: when its last refresh went out, and whether one more is due at the end of
/// the window.
pub struct Coalescer<K> {
    keys: Mutex<HashMap<K, (Instant, bool)>>,
}

impl<K> Default for Coalescer<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::default(),
        }
    }
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Coalesced {
    /// Refresh now: the first event in a window.
    Now,
    /// Refresh at this instant, the end of the window: the first event after the leading
    /// one.
    At(Instant),
    /// A refresh is already due at the end of the window.
    Folded,
}

impl<K: Hash + Eq + Clone> Coalescer<K> {
    pub fn offer(&self, key: &K, now: Instant) -> Coalesced {
        let quiet = |fired: Instant, pending: bool| !pending && now >= fired + COALESCE_WINDOW;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() > PRUNE_ABOVE {
            keys.retain(|_, (fired, pending)| !quiet(*fired, *pending));
        }
        match keys.get_mut(key) {
            Some((_, true)) => Coalesced::Folded,
            Some((fired, pending)) if !quiet(*fired, false) => {
                *pending = true;
                Coalesced::At(*fired + COALESCE_WINDOW)
            }
            _ => {
                keys.insert(key.clone(), (now, false));
                Coalesced::Now
            }
        }
    }

    /// The trailing refresh went out at `now`: the window starts again from it.
    pub fn fired(&self, key: &K, now: Instant) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(key.clone(), (now, false));
    }
}

/// Hands `key` to `dispatch` now, at the end of its window, or not at all (one is due
/// then).
pub fn coalesce<K>(coalescer: &Arc<Coalescer<K>>, key: K, dispatch: Arc<dyn Fn(&K) + Send + Sync>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    match coalescer.offer(&key, Instant::now()) {
        Coalesced::Now => dispatch(&key),
        Coalesced::Folded => {}
        Coalesced::At(at) => {
            let coalescer = coalescer.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                coalescer.fired(&key, Instant::now());
                dispatch(&key);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_for_one_key_is_one_refresh_now_and_one_at_the_end_of_the_window() {
        let coalescer = Coalescer::default();
        let key = |k: &str| k.to_owned();
        let t0 = Instant::now();
        assert_eq!(coalescer.offer(&key("a"), t0), Coalesced::Now);
        let end = t0 + COALESCE_WINDOW;
        for ms in [1, 10, 500, 999] {
            let offered = coalescer.offer(&key("a"), t0 + Duration::from_millis(ms));
            let expected = if ms == 1 {
                Coalesced::At(end)
            } else {
                Coalesced::Folded
            };
            assert_eq!(offered, expected, "{ms} ms");
        }
        // Another key is its own.
        assert_eq!(coalescer.offer(&key("b"), t0), Coalesced::Now);
        coalescer.fired(&key("a"), end);
        assert_eq!(
            coalescer.offer(&key("a"), end + Duration::from_millis(1)),
            Coalesced::At(end + COALESCE_WINDOW)
        );
        // Quiet for a window: the next event goes at once.
        let later = end + COALESCE_WINDOW * 3;
        coalescer.fired(&key("a"), end);
        assert_eq!(coalescer.offer(&key("a"), later), Coalesced::Now);
    }

    #[test]
    fn quiet_keys_are_forgotten_once_many_are_held() {
        let coalescer = Coalescer::default();
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            assert_eq!(coalescer.offer(&format!("k{i}"), t0), Coalesced::Now);
        }
        let later = t0 + COALESCE_WINDOW * 2;
        assert_eq!(coalescer.offer(&"next".to_owned(), later), Coalesced::Now);
        assert_eq!(
            coalescer.keys.lock().unwrap().len(),
            1,
            "the quiet ones went"
        );
    }
}
