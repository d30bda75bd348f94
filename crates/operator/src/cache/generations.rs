//! The generation of every store, from the store watch: a store's own status writes (its
//! Ready checks) change nothing its SecretSyncs read, so only a new generation (a spec
//! edit) or a deletion concerns them.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use kube::{Resource, ResourceExt};

/// Generations by store UID.
pub struct StoreGenerations<S> {
    seen: Mutex<HashMap<String, Option<i64>>>,
    relist: Mutex<Option<HashMap<String, Option<i64>>>>,
    of: PhantomData<fn(S)>,
}

impl<S> Default for StoreGenerations<S> {
    fn default() -> Self {
        Self {
            seen: Mutex::default(),
            relist: Mutex::default(),
            of: PhantomData,
        }
    }
}

/// A store whose spec changed, or that was deleted.
pub struct StoreChange<S> {
    pub store: S,
    pub deleted: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data behind the lock: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Resource + Clone + 'static> super::Cache<S> for StoreGenerations<S> {
    type Change = StoreChange<S>;

    fn relist_start(&self) {
        *lock(&self.relist) = Some(HashMap::new());
    }

    fn relist_apply(&self, store: &S) {
        if let Some(listed) = lock(&self.relist).as_mut() {
            listed.insert(store.uid().unwrap_or_default(), store.meta().generation);
        }
    }

    /// A relist tells nobody: a store edited during a watch gap is seen by its SecretSyncs
    /// at their next pass, as before the gap.
    fn relist_done(&self) -> Vec<StoreChange<S>> {
        if let Some(listed) = lock(&self.relist).take() {
            *lock(&self.seen) = listed;
        }
        Vec::new()
    }

    fn apply(&self, store: &S) -> Vec<StoreChange<S>> {
        let generation = store.meta().generation;
        let before = lock(&self.seen).insert(store.uid().unwrap_or_default(), generation);
        match before != Some(generation) {
            true => vec![StoreChange {
                store: store.clone(),
                deleted: false,
            }],
            false => Vec::new(),
        }
    }

    fn delete(&self, store: &S) -> Vec<StoreChange<S>> {
        lock(&self.seen).remove(&store.uid().unwrap_or_default());
        vec![StoreChange {
            store: store.clone(),
            deleted: true,
        }]
    }
}

#[cfg(test)]
mod tests {
    use secretsync_api::SecretStore;

    use super::*;
    use crate::cache::Cache;

    fn store(uid: &str, generation: i64) -> SecretStore {
        let mut store = SecretStore::new(
            "vault",
            serde_json::from_value(serde_json::json!({"provider": {"fake": {"data": []}}}))
                .unwrap(),
        );
        store.metadata.uid = Some(uid.into());
        store.metadata.generation = Some(generation);
        store
    }

    #[test]
    fn only_a_new_generation_or_a_deletion_is_a_change() {
        let generations = StoreGenerations::default();
        generations.relist_start();
        generations.relist_apply(&store("u1", 1));
        assert!(generations.relist_done().is_empty());
        // A status write: same generation.
        assert!(generations.apply(&store("u1", 1)).is_empty());
        assert_eq!(generations.apply(&store("u1", 2)).len(), 1);
        assert_eq!(generations.apply(&store("u2", 1)).len(), 1, "a new store");
        let gone = generations.delete(&store("u1", 2));
        assert!(gone[0].deleted);
        assert_eq!(generations.apply(&store("u1", 2)).len(), 1, "re-created");
    }
}
