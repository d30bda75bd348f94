//! The in-memory caches the watches fill and the reconciles read, so that a steady-state
//! reconcile asks the API server nothing: versions ([`versions`]), SecretSyncs
//! ([`syncs`]), workloads ([`workloads`]), namespace labels ([`namespaces`]) and store
//! generations ([`generations`]), plus one watch over several namespaces ([`multiwatch`]).
//!
//! Every cache follows one protocol, kube-runtime's watcher events ([`Cache`]): a relist
//! (`Init`, an `InitApply` per object, `InitDone`) replaces what the cache held, then `Apply`
//! and `Delete` keep it current. [`fill`] drives a cache from a watch and marks it in
//! [`Listed`] once its first list is in; what a change means beyond the cache (a freed
//! target name, a namespace's new labels) comes back as the cache's `Change`, for the watch's
//! declaration in `controller.rs` to act on.

pub(crate) mod generations;
pub(crate) mod multiwatch;
pub(crate) mod namespaces;
pub(crate) mod syncs;
pub(crate) mod versions;
pub(crate) mod workloads;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

/// A cache filled from a watch of `K`.
pub(crate) trait Cache<K>: Send + Sync + 'static {
    /// What a change means beyond the cache, for the watch to act on.
    type Change;

    /// A relist begins: what it lists will replace the cache's content.
    fn relist_start(&self);
    fn relist_apply(&self, object: &K);
    /// The relist is complete: objects it did not list are gone.
    fn relist_done(&self) -> Vec<Self::Change>;
    fn apply(&self, object: &K) -> Vec<Self::Change>;
    fn delete(&self, object: &K) -> Vec<Self::Change>;
}

/// Keeps `cache` filled from `events`, marks `name` in `listed` after the first
/// list, and hands each change to `react`. The events pass on unchanged, so the same watch
/// can also trigger a controller.
pub(crate) fn fill<K, C>(
    name: &'static str,
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    cache: Arc<C>,
    listed: Arc<Listed>,
    react: impl Fn(C::Change),
) -> impl Stream<Item = Result<Event<K>, watcher::Error>>
where
    C: Cache<K>,
{
    listed.register(name);
    events.inspect_ok(move |event| {
        let changes = match event {
            Event::Init => {
                cache.relist_start();
                Vec::new()
            }
            Event::InitApply(object) => {
                cache.relist_apply(object);
                Vec::new()
            }
            Event::InitDone => {
                let changes = cache.relist_done();
                listed.mark_ready(name);
                changes
            }
            Event::Apply(object) => cache.apply(object),
            Event::Delete(object) => cache.delete(object),
        };
        changes.into_iter().for_each(&react);
    })
}

/// Which caches have not delivered their first complete list yet. Reconciles wait for all
/// of them: before that the operator would see no versions, stores or workloads.
pub struct Listed {
    pending: Mutex<BTreeSet<&'static str>>,
    ready: watch::Sender<bool>,
}

impl Default for Listed {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            ready: watch::channel(false).0,
        }
    }
}

impl Listed {
    /// A cache to wait for; every cache registers before the watches are polled.
    fn register(&self, cache: &'static str) {
        self.lock().insert(cache);
    }

    fn mark_ready(&self, cache: &'static str) {
        let mut pending = self.lock();
        if pending.remove(cache) && pending.is_empty() {
            self.ready.send_replace(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so this only ends when ready.
        let _ = ready.wait_for(|r| *r).await;
    }
}
