//! What the wake-ups need to know of every SecretSync, indexed so that a store, workload or
//! Secret event finds the SecretSyncs it concerns without scanning (or cloning) them all:
//! which store each uses, which target name it claims, which workloads it rolls out to.
//! Fed from the SecretSync watch, beside the controller's own reflector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use secretsync_api::{SecretSync, StoreKind, WorkloadKind, selector};

/// What the controller is keyed by: SecretSyncs behind a deserialization guard.
pub type SyncRef = ObjectRef<DeserializeGuard<SecretSync>>;

/// A store as SecretSyncs name it: kind, namespace (for a SecretStore) and name.
pub type StoreKey = (StoreKind, Option<String>, String);

/// One SecretSync's claim on a target name, ordered oldest first: the oldest claimant keeps
/// the name (guarantee 1, docs/reference/guarantees.md).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    pub created: Option<Time>,
    pub name: String,
    pub uid: String,
    pub deleting: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    claim: Claim,
    base: String,
    store: StoreKey,
    targets: Vec<(WorkloadKind, String)>,
    selector: Option<LabelSelector>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SyncRef, Entry>,
    by_store: HashMap<StoreKey, HashSet<SyncRef>>,
    /// Usually one claimant per name: a Vec of exact size, not a set, whose smallest table
    /// was a third of the index's cost per SecretSync.
    by_base: HashMap<(String, String), Vec<SyncRef>>,
    by_target: HashMap<(String, WorkloadKind, String), HashSet<SyncRef>>,
    with_selector: HashMap<String, HashSet<SyncRef>>,
    relist: Option<Vec<Entry>>,
}

#[derive(Default)]
pub struct SyncIndex {
    inner: Mutex<Inner>,
}

fn entry_of(guard: &DeserializeGuard<SecretSync>) -> Option<Entry> {
    let sync = guard.0.as_ref().ok()?;
    let name = sync.name_any();
    let namespace = sync.namespace().unwrap_or_default();
    let store = match sync.spec.store_kind() {
        StoreKind::SecretStore => (
            StoreKind::SecretStore,
            Some(namespace.clone()),
            sync.spec.store_ref.name.clone(),
        ),
        StoreKind::ClusterSecretStore => (
            StoreKind::ClusterSecretStore,
            None,
            sync.spec.store_ref.name.clone(),
        ),
    };
    let rollout = sync.spec.rollout.as_ref();
    let mut targets: Vec<(WorkloadKind, String)> = rollout
        .and_then(|r| r.targets.as_ref())
        .into_iter()
        .flatten()
        .map(|t| (t.kind, t.name.clone()))
        .collect();
    // Targets a previous pass rolled out to stay interesting until the status forgets them
    // (a selector that stopped matching, a target removed from the list).
    targets.extend(
        sync.status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .into_iter()
            .flat_map(|r| r.targets.iter().map(|t| (t.kind, t.name.clone()))),
    );
    targets.sort();
    targets.dedup();
    Some(Entry {
        base: sync.spec.target_name(&name).to_owned(),
        claim: Claim {
            created: sync.metadata.creation_timestamp.clone(),
            name,
            uid: sync.uid().unwrap_or_default(),
            deleting: sync.metadata.deletion_timestamp.is_some(),
        },
        namespace,
        store,
        targets,
        selector: rollout.and_then(|r| r.selector.clone()),
    })
}

fn sync_ref(entry: &Entry) -> SyncRef {
    SyncRef::new(&entry.claim.name).within(&entry.namespace)
}

impl Inner {
    fn insert(&mut self, entry: Entry) {
        let key = sync_ref(&entry);
        self.remove(&key);
        self.by_store
            .entry(entry.store.clone())
            .or_default()
            .insert(key.clone());
        let claimants = self
            .by_base
            .entry((entry.namespace.clone(), entry.base.clone()))
            .or_default();
        claimants.reserve_exact(1);
        claimants.push(key.clone());
        for (kind, name) in &entry.targets {
            self.by_target
                .entry((entry.namespace.clone(), *kind, name.clone()))
                .or_default()
                .insert(key.clone());
        }
        if entry.selector.is_some() {
            self.with_selector
                .entry(entry.namespace.clone())
                .or_default()
                .insert(key.clone());
        }
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &SyncRef) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, HashSet<SyncRef>>,
            k: K,
            key: &SyncRef,
        ) {
            if let Some(set) = map.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    map.remove(&k);
                }
            }
        }
        drop_from(&mut self.by_store, entry.store.clone(), key);
        let base = (entry.namespace.clone(), entry.base.clone());
        if let Some(claimants) = self.by_base.get_mut(&base) {
            claimants.retain(|k| k != key);
            if claimants.is_empty() {
                self.by_base.remove(&base);
            }
        }
        for (kind, name) in &entry.targets {
            drop_from(
                &mut self.by_target,
                (entry.namespace.clone(), *kind, name.clone()),
                key,
            );
        }
        drop_from(&mut self.with_selector, entry.namespace.clone(), key);
        Some(entry)
    }
}

impl SyncIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn apply(&self, guard: &DeserializeGuard<SecretSync>) {
        let mut inner = self.lock();
        match entry_of(guard) {
            Some(entry) => inner.insert(entry),
            // Malformed now: it claims and uses nothing until it is fixed.
            None => {
                let key =
                    SyncRef::new(&guard.name_any()).within(&guard.namespace().unwrap_or_default());
                inner.remove(&key);
            }
        }
    }

    /// Removes a deleted SecretSync; returns the other claimants of its target name, which
    /// may have been waiting for it to go.
    pub fn delete(&self, guard: &DeserializeGuard<SecretSync>) -> Vec<SyncRef> {
        let key = SyncRef::new(&guard.name_any()).within(&guard.namespace().unwrap_or_default());
        let mut inner = self.lock();
        match inner.remove(&key) {
            Some(entry) => inner
                .by_base
                .get(&(entry.namespace, entry.base))
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn relist_start(&self) {
        self.lock().relist = Some(Vec::new());
    }

    pub fn relist_apply(&self, guard: &DeserializeGuard<SecretSync>) {
        let mut inner = self.lock();
        if let (Some(buffer), Some(entry)) = (inner.relist.as_mut(), entry_of(guard)) {
            buffer.push(entry);
        }
    }

    /// The relist completed: its objects replace the index.
    pub fn relist_done(&self) {
        let mut inner = self.lock();
        let listed = inner.relist.take().unwrap_or_default();
        *inner = Inner::default();
        for entry in listed {
            inner.insert(entry);
        }
    }

    /// Every SecretSync reading through a store.
    pub fn users_of_store(&self, key: &StoreKey) -> Vec<SyncRef> {
        self.lock()
            .by_store
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Every SecretSync in a namespace that reads through a ClusterSecretStore: whether
    /// the store admits it may depend on the namespace's labels.
    pub fn cluster_store_users_in(&self, namespace: &str) -> Vec<SyncRef> {
        let inner = self.lock();
        inner
            .by_store
            .iter()
            .filter(|((kind, _, _), _)| *kind == StoreKind::ClusterSecretStore)
            .flat_map(|(_, users)| users)
            .filter(|key| key.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    /// Every SecretSync that rolls out to (or rolled out to) a workload, or whose selector
    /// matches its labels.
    pub fn rollout_owners(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<SyncRef> {
        let inner = self.lock();
        let listed = inner
            .by_target
            .get(&(namespace.to_owned(), kind, name.to_owned()))
            .into_iter()
            .flatten();
        let selected = inner
            .with_selector
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|key| {
                inner.entries[*key]
                    .selector
                    .as_ref()
                    .is_some_and(|s| selector::matches(s, labels))
            });
        let mut owners: Vec<SyncRef> = listed.chain(selected).cloned().collect();
        owners.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        owners.dedup();
        owners
    }

    /// The claims on a target name in a namespace.
    pub fn claims(&self, namespace: &str, base: &str) -> Vec<Claim> {
        let inner = self.lock();
        inner
            .by_base
            .get(&(namespace.to_owned(), base.to_owned()))
            .into_iter()
            .flatten()
            .map(|key| inner.entries[key].claim.clone())
            .collect()
    }

    /// The SecretSyncs claiming a target name, to wake when a Secret of that name goes.
    pub fn claimants(&self, namespace: &str, base: &str) -> Vec<SyncRef> {
        self.lock()
            .by_base
            .get(&(namespace.to_owned(), base.to_owned()))
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// A SecretSync gone: what this process remembers of it goes, and the other claimants of its
/// target name, which may have been waiting for it, are woken.
pub struct SyncGone {
    pub uid: String,
    pub claimants: Vec<SyncRef>,
}

impl super::Cache<DeserializeGuard<SecretSync>> for SyncIndex {
    type Change = SyncGone;

    fn relist_start(&self) {
        SyncIndex::relist_start(self);
    }

    fn relist_apply(&self, sync: &DeserializeGuard<SecretSync>) {
        SyncIndex::relist_apply(self, sync);
    }

    fn relist_done(&self) -> Vec<SyncGone> {
        SyncIndex::relist_done(self);
        Vec::new()
    }

    fn apply(&self, sync: &DeserializeGuard<SecretSync>) -> Vec<SyncGone> {
        SyncIndex::apply(self, sync);
        Vec::new()
    }

    fn delete(&self, sync: &DeserializeGuard<SecretSync>) -> Vec<SyncGone> {
        // Gone (finalized, or deleted while this process was not running).
        vec![SyncGone {
            uid: sync.uid().unwrap_or_default(),
            claimants: SyncIndex::delete(self, sync),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(yaml: &str) -> DeserializeGuard<SecretSync> {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        DeserializeGuard(Ok(serde_json::from_value(value).unwrap()))
    }

    const API: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: api, namespace: payments, uid: u1, creationTimestamp: "2026-11-01T00:00:00Z"}
spec:
  storeRef: {name: vault}
  target: {name: db}
  rollout:
    targets: [{kind: Deployment, name: web}]
    selector: {matchLabels: {team: payments}}
"#;

    const WORKER: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: worker, namespace: payments, uid: u2, creationTimestamp: "2026-11-02T00:00:00Z"}
spec:
  storeRef: {name: shared, kind: ClusterSecretStore}
  target: {name: db}
"#;

    #[test]
    fn finds_users_owners_and_claims_without_scanning() {
        let index = SyncIndex::default();
        index.apply(&guard(API));
        index.apply(&guard(WORKER));
        let names = |refs: Vec<SyncRef>| refs.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(index.users_of_store(&(
                StoreKind::SecretStore,
                Some("payments".into()),
                "vault".into()
            ))),
            ["api"]
        );
        assert_eq!(
            names(index.users_of_store(&(StoreKind::ClusterSecretStore, None, "shared".into()))),
            ["worker"]
        );
        let none = BTreeMap::new();
        let team: BTreeMap<String, String> = [("team".into(), "payments".into())].into();
        assert_eq!(
            names(index.rollout_owners("payments", WorkloadKind::Deployment, "web", &none)),
            ["api"]
        );
        assert_eq!(
            names(index.rollout_owners("payments", WorkloadKind::StatefulSet, "x", &team)),
            ["api"]
        );
        assert!(
            index
                .rollout_owners("payments", WorkloadKind::StatefulSet, "x", &none)
                .is_empty()
        );
        assert!(
            index
                .rollout_owners("other", WorkloadKind::Deployment, "web", &team)
                .is_empty()
        );
        let mut claims = index.claims("payments", "db");
        claims.sort();
        assert_eq!(
            claims.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["api", "worker"]
        );
    }

    #[test]
    fn a_deleted_sync_leaves_no_trace_and_names_who_waited() {
        let index = SyncIndex::default();
        index.apply(&guard(API));
        index.apply(&guard(WORKER));
        let waiting = index.delete(&guard(API));
        assert_eq!(
            waiting.into_iter().map(|r| r.name).collect::<Vec<_>>(),
            ["worker"]
        );
        assert_eq!(index.len(), 1);
        assert!(
            index
                .rollout_owners(
                    "payments",
                    WorkloadKind::Deployment,
                    "web",
                    &BTreeMap::new()
                )
                .is_empty()
        );
    }

    #[test]
    fn an_edit_moves_the_entry() {
        let index = SyncIndex::default();
        index.apply(&guard(API));
        index.apply(&guard(&API.replace("name: db}", "name: cache}")));
        assert!(index.claims("payments", "db").is_empty());
        assert_eq!(index.claims("payments", "cache").len(), 1);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn relist_replaces_the_index() {
        let index = SyncIndex::default();
        index.apply(&guard(API));
        index.relist_start();
        index.relist_apply(&guard(WORKER));
        assert_eq!(index.claims("payments", "db").len(), 1);
        index.relist_done();
        let claims = index.claims("payments", "db");
        assert_eq!(claims[0].name, "worker");
        assert_eq!(index.len(), 1);
    }
}
