//! Garbage collection: ownerReference cascades (background and foreground), namespace
//! termination, driven by the store's change feed.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{Core, DeleteOpts, Propagation, WriteOpts, finalizers};
use crate::store::{Change, ChangeKind, Key};

const MANAGER: &str = "generic-garbage-collector";

pub async fn run(core: Arc<Core>) {
    let mut rx = core.store.subscribe();
    loop {
        match rx.recv().await {
            Ok(c) => handle(&core, &c),
            Err(RecvError::Lagged(_)) => resync(&core),
            Err(RecvError::Closed) => return,
        }
    }
}

fn uid(v: &Value) -> &str {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

fn handle(core: &Core, c: &Change) {
    let obj = &c.object;
    match c.kind {
        ChangeKind::Deleted => {
            collect_dependents(core, uid(obj));
            if !c.key.namespace.is_empty() {
                finalize_namespace(core, &c.key.namespace);
            }
            for owner in owners(core, &c.key, obj) {
                finish_foreground(core, &owner);
            }
        }
        ChangeKind::Added | ChangeKind::Modified => {
            if !deleting(obj) {
                return;
            }
            if c.key.group.is_empty() && c.key.resource == "namespaces" {
                empty_namespace(core, &c.key.name);
                finalize_namespace(core, &c.key.name);
                return;
            }
            if finalizers(obj).iter().any(|f| f == "foregroundDeletion") {
                for dep in core.store.dependents(uid(obj)) {
                    delete_key(core, &dep, Propagation::Foreground);
                }
                finish_foreground(core, &c.key);
            }
        }
    }
}

/// Store keys of the live owners named by an object's ownerReferences.
fn owners(core: &Core, key: &Key, obj: &Value) -> Vec<Key> {
    let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    refs.iter()
        .filter_map(|r| {
            let av = r.get("apiVersion")?.as_str()?;
            let kind = r.get("kind")?.as_str()?;
            let name = r.get("name")?.as_str()?;
            let def = core.registry.by_kind(av, kind)?;
            let ns = if def.namespaced {
                key.namespace.as_str()
            } else {
                ""
            };
            Some(Key::new(&def.group, &def.plural, ns, name))
        })
        .collect()
}

fn delete_key(core: &Core, key: &Key, propagation: Propagation) {
    if let Some(t) = core.target_for(key) {
        let _ = core.delete(
            &t,
            &DeleteOpts {
                propagation: Some(propagation),
                ..DeleteOpts::default()
            },
        );
    }
}

/// Background cascade: dependents whose every owner is gone are deleted; dependents that
/// still have another live owner only lose the dangling reference.
fn collect_dependents(core: &Core, owner_uid: &str) {
    if owner_uid.is_empty() {
        return;
    }
    for dep in core.store.dependents(owner_uid) {
        let Some(obj) = core.store.get(&dep) else {
            continue;
        };
        let others_alive = owners(core, &dep, &obj).iter().any(|k| {
            core.store
                .get(k)
                .is_some_and(|o| uid(&o) != owner_uid && obj_refs_uid(&obj, uid(&o)))
        });
        if others_alive {
            core.orphan_dependents(&serde_json::json!({"metadata": {"uid": owner_uid}}));
        } else {
            delete_key(core, &dep, Propagation::Background);
        }
    }
}

fn obj_refs_uid(obj: &Value, u: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(u))
        })
}

/// Removes the `foregroundDeletion` finalizer once no dependents remain.
fn finish_foreground(core: &Core, key: &Key) {
    let Some(owner) = core.store.get(key) else {
        return;
    };
    if !deleting(&owner) || !finalizers(&owner).iter().any(|f| f == "foregroundDeletion") {
        return;
    }
    if !core.store.dependents(uid(&owner)).is_empty() {
        return;
    }
    let Some(t) = core.target_for(key) else {
        return;
    };
    let mut next = (*owner).clone();
    if let Some(f) = next
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|x| x != "foregroundDeletion");
    }
    let _ = core.update(&t, next, None, &WriteOpts::system(MANAGER));
}

fn empty_namespace(core: &Core, ns: &str) {
    for k in core.store.keys_in_namespace(ns) {
        if let Some(o) = core.store.get(&k)
            && deleting(&o)
        {
            continue;
        }
        delete_key(core, &k, Propagation::Background);
    }
}

/// Removes a terminating namespace once it holds nothing.
fn finalize_namespace(core: &Core, ns: &str) {
    let key = Key::new("", "namespaces", "", ns);
    let Some(obj) = core.store.get(&key) else {
        return;
    };
    if !deleting(&obj) || !core.store.keys_in_namespace(ns).is_empty() {
        return;
    }
    if finalizers(&obj).is_empty() {
        let _ = core.store.delete(&key, None);
    }
}

/// After missing feed events: re-examine everything being deleted.
fn resync(core: &Core) {
    for def in core.registry.all() {
        for k in core.store.keys_of_resource(&def.group, &def.plural) {
            if let Some(o) = core.store.get(&k)
                && deleting(&o)
            {
                handle(
                    core,
                    &Change {
                        rv: 0,
                        key: k,
                        kind: ChangeKind::Modified,
                        object: o,
                        prev: None,
                        json: std::sync::OnceLock::new(),
                    },
                );
            }
        }
    }
}
