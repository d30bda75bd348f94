//! In-memory object storage with one global, monotonic resourceVersion and a change feed.
//!
//! Objects live in one ordered map per (group, resource), keyed by (namespace, name), so a
//! namespace list is a range scan and never touches other namespaces or resources. Every
//! committed write bumps the global resourceVersion by exactly one and produces exactly one
//! [`Change`], which is kept in a bounded history ring (for watch resumption) and fanned out
//! through a broadcast channel (for live watchers, the garbage collector and the simulator).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tokio::sync::broadcast;

pub type Obj = Arc<Value>;

/// An object's address; the simulator's, so the built-in simulator runs on the store
/// without translating keys.
pub use secretsync_simulator::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed write.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub kind: ChangeKind,
    /// The object after the write (for deletes: the last state, carrying the deletion RV).
    pub object: Obj,
    /// The object before the write, for watch selector transitions.
    pub prev: Option<Obj>,
    /// `object` serialized once, shared by every watcher that shows it as stored.
    pub json: std::sync::OnceLock<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Create: the object must not exist.
    Absent,
    /// The stored object must still have this resourceVersion.
    Rv(u64),
}

#[derive(Debug)]
pub enum CommitError {
    Exists,
    NotFound,
    /// The stored object changed since it was read.
    Stale,
}

/// Where a watch starts.
pub enum WatchStart {
    /// Synthetic ADDED events for the current state, then live events.
    Snapshot(Vec<Obj>),
    /// Replay of retained events after the requested resourceVersion, then live events.
    Replay(Vec<Arc<Change>>),
}

type Table = BTreeMap<(String, String), Obj>;

struct Inner {
    rv: u64,
    tables: HashMap<(String, String), Table>,
    history: VecDeque<Arc<Change>>,
    /// owner uid -> dependents, for garbage collection.
    owners: HashMap<String, HashSet<Key>>,
    count: usize,
}

pub struct Store {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    history_cap: usize,
}

pub fn object_rv(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn owner_uids(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    pub fn new(history_cap: usize, fanout_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(fanout_cap);
        Self {
            inner: RwLock::new(Inner {
                rv: 1,
                tables: HashMap::new(),
                history: VecDeque::with_capacity(history_cap.min(4096)),
                owners: HashMap::new(),
                count: 0,
            }),
            tx,
            history_cap,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    pub fn len(&self) -> usize {
        self.read().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &Key) -> Option<Obj> {
        self.read()
            .tables
            .get(&(key.group.clone(), key.resource.clone()))?
            .get(&(key.namespace.clone(), key.name.clone()))
            .cloned()
    }

    /// Lists objects of one resource, optionally in one namespace, in (namespace, name)
    /// order, starting after `after`, keeping those `keep` accepts, at most `limit`.
    /// Returns the page, the resourceVersion of the snapshot and whether more remain.
    pub fn list(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        after: Option<&(String, String)>,
        limit: Option<usize>,
        keep: &dyn Fn(&Value) -> bool,
    ) -> (Vec<Obj>, u64, bool) {
        let inner = self.read();
        let (out, more) = list_in(&inner, group, resource, namespace, after, limit, keep);
        (out, inner.rv, more)
    }

    /// Keys of every object in a namespace (all resources), for namespace deletion.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<Key> {
        let inner = self.read();
        let mut keys = Vec::new();
        for ((g, r), table) in &inner.tables {
            let start = (ns.to_string(), String::new());
            for ((n, name), _) in table.range(start..) {
                if n != ns {
                    break;
                }
                keys.push(Key::new(g, r, n, name));
            }
        }
        keys
    }

    /// Keys of every object of a resource (CRD deletion).
    pub fn keys_of_resource(&self, group: &str, resource: &str) -> Vec<Key> {
        let inner = self.read();
        inner
            .tables
            .get(&(group.to_string(), resource.to_string()))
            .map(|t| {
                t.keys()
                    .map(|(ns, name)| Key::new(group, resource, ns, name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Objects whose ownerReferences name this uid.
    pub fn dependents(&self, owner_uid: &str) -> Vec<Key> {
        let mut v: Vec<Key> = self
            .read()
            .owners
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Stores `obj` (assigning the next resourceVersion) if the precondition holds.
    pub fn put(&self, key: &Key, pre: Precondition, mut obj: Value) -> Result<Obj, CommitError> {
        let mut inner = self.write();
        let tk = (key.group.clone(), key.resource.clone());
        let ok = (key.namespace.clone(), key.name.clone());
        let prev = inner.tables.get(&tk).and_then(|t| t.get(&ok)).cloned();
        match (pre, &prev) {
            (Precondition::Absent, Some(_)) => return Err(CommitError::Exists),
            (Precondition::Rv(_), None) => return Err(CommitError::NotFound),
            (Precondition::Rv(rv), Some(p)) if object_rv(p) != rv => {
                return Err(CommitError::Stale);
            }
            _ => {}
        }
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let obj = Arc::new(obj);
        if let Some(p) = &prev {
            for uid in owner_uids(p) {
                if let Some(s) = inner.owners.get_mut(&uid) {
                    s.remove(key);
                    if s.is_empty() {
                        inner.owners.remove(&uid);
                    }
                }
            }
        } else {
            inner.count += 1;
        }
        for uid in owner_uids(&obj) {
            inner.owners.entry(uid).or_default().insert(key.clone());
        }
        inner.tables.entry(tk).or_default().insert(ok, obj.clone());
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(&mut inner, key, kind, obj.clone(), prev);
        Ok(obj)
    }

    /// Removes the object if it still has resourceVersion `rv` (when given).
    pub fn delete(&self, key: &Key, rv: Option<u64>) -> Result<Obj, CommitError> {
        let mut inner = self.write();
        let tk = (key.group.clone(), key.resource.clone());
        let ok = (key.namespace.clone(), key.name.clone());
        let prev = match inner.tables.get(&tk).and_then(|t| t.get(&ok)) {
            None => return Err(CommitError::NotFound),
            Some(p) if rv.is_some_and(|rv| object_rv(p) != rv) => return Err(CommitError::Stale),
            Some(p) => p.clone(),
        };
        if let Some(t) = inner.tables.get_mut(&tk) {
            t.remove(&ok);
        }
        inner.count -= 1;
        for uid in owner_uids(&prev) {
            if let Some(s) = inner.owners.get_mut(&uid) {
                s.remove(key);
                if s.is_empty() {
                    inner.owners.remove(&uid);
                }
            }
        }
        inner.rv += 1;
        let rv = inner.rv;
        let mut last = (*prev).clone();
        if let Some(m) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let last = Arc::new(last);
        self.record(
            &mut inner,
            key,
            ChangeKind::Deleted,
            last.clone(),
            Some(prev),
        );
        Ok(last)
    }

    fn record(
        &self,
        inner: &mut Inner,
        key: &Key,
        kind: ChangeKind,
        object: Obj,
        prev: Option<Obj>,
    ) {
        let change = Arc::new(Change {
            rv: inner.rv,
            key: key.clone(),
            kind,
            object,
            prev,
            json: std::sync::OnceLock::new(),
        });
        if inner.history.len() >= self.history_cap {
            inner.history.pop_front();
        }
        inner.history.push_back(change.clone());
        // Sent while the write lock is held, so subscribers see changes in RV order and a
        // subscriber registered under the read lock misses nothing and duplicates nothing.
        let _ = self.tx.send(change);
    }

    /// Subscribes to the live feed (no history).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        let _g = self.read();
        self.tx.subscribe()
    }

    /// Starts a watch of one resource: either a snapshot (`since` = None) of the objects
    /// `keep` accepts, or the retained changes after `since`. `Err(oldest)` when `since` is
    /// older than the retained history.
    pub fn watch_from(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        since: Option<u64>,
        keep: &dyn Fn(&Value) -> bool,
    ) -> Result<(WatchStart, u64, broadcast::Receiver<Arc<Change>>), u64> {
        let inner = self.read();
        let rx = self.tx.subscribe();
        let rv = inner.rv;
        match since {
            None => {
                // Listed under the same read lock as the subscription: the snapshot and the
                // feed meet exactly at `rv`.
                let (objs, _) = list_in(&inner, group, resource, namespace, None, None, keep);
                Ok((WatchStart::Snapshot(objs), rv, rx))
            }
            Some(since) if since >= rv => Ok((WatchStart::Replay(Vec::new()), rv, rx)),
            Some(since) => {
                let oldest = inner.history.front().map(|c| c.rv).unwrap_or(rv + 1);
                if since + 1 < oldest {
                    return Err(oldest);
                }
                let skip = (since + 1 - oldest) as usize;
                let events: Vec<Arc<Change>> = inner
                    .history
                    .iter()
                    .skip(skip)
                    .filter(|c| c.key.group == group && c.key.resource == resource)
                    .filter(|c| namespace.is_none_or(|ns| c.key.namespace == ns))
                    .cloned()
                    .collect();
                Ok((WatchStart::Replay(events), rv, rx))
            }
        }
    }
}

fn list_in(
    inner: &Inner,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    after: Option<&(String, String)>,
    limit: Option<usize>,
    keep: &dyn Fn(&Value) -> bool,
) -> (Vec<Obj>, bool) {
    let Some(table) = inner.tables.get(&(group.to_string(), resource.to_string())) else {
        return (Vec::new(), false);
    };
    let start = match (after, namespace) {
        (Some(a), _) => std::ops::Bound::Excluded(a.clone()),
        (None, Some(ns)) => std::ops::Bound::Included((ns.to_string(), String::new())),
        (None, None) => std::ops::Bound::Unbounded,
    };
    let mut out = Vec::new();
    let mut more = false;
    for ((ns, _), obj) in table.range((start, std::ops::Bound::Unbounded)) {
        if let Some(want) = namespace
            && ns != want
        {
            break;
        }
        if !keep(obj) {
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            more = true;
            break;
        }
        out.push(obj.clone());
    }
    (out, more)
}
