//! Server-side apply and `metadata.managedFields` bookkeeping.
//!
//! Ownership is tracked per (manager, operation, subresource) as a set of leaf field paths.
//! Updates (PUT/POST/non-apply PATCH) take ownership of the fields whose values they
//! changed; applies own exactly the fields in the applied configuration, conflict with other
//! owners of fields they change (unless forced), and remove fields they stop applying when
//! nobody else owns them.

use serde_json::{Map, Value, json};

use crate::fields::{self, FieldSet, ListType, ListTypeFn};

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: String,
    set: FieldSet,
}

fn parse_entries(obj: Option<&Value>) -> Vec<Entry> {
    let Some(list) = obj
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: s("subresource"),
                time: s("time"),
                set: e
                    .get("fieldsV1")
                    .map(fields::from_fields_v1)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Which part of the object a write through `subresource` may own.
fn scope(subresource: &str, has_status: bool) -> Option<bool> {
    match (subresource, has_status) {
        ("status", _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub has_status: bool,
    pub now: &'a str,
    pub list_type: ListTypeFn<'a>,
    /// Fields whose conflicts an apply may override without `force`: for manager
    /// `kubectl`, those in the `last-applied-configuration` annotation, so switching from
    /// client-side to server-side apply does not conflict (as the real server's
    /// last-applied manager does).
    pub allowed_conflicts: Option<&'a FieldSet>,
}

/// Records a non-apply write: `new` gets the updated managedFields.
pub fn record_update(w: &Writer, old: Option<&Value>, new: &mut Value) {
    let requested = new.pointer("/metadata/managedFields").is_some();
    let mut entries = if requested {
        parse_entries(Some(new))
    } else {
        parse_entries(old)
    };
    if requested
        && new
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        // An explicit empty list resets tracking, as in the real server.
        write_entries(new, Vec::new());
        return;
    }
    let only = scope(w.subresource, w.has_status);
    let new_paths = fields::owned_paths(new, w.list_type, only);
    let changed: FieldSet = new_paths
        .iter()
        .filter(|p| old.is_none_or(|o| fields::get_at(o, p) != fields::get_at(new, p)))
        .cloned()
        .collect();
    if let Some(o) = old {
        let old_paths = fields::owned_paths(o, w.list_type, only);
        for gone in old_paths.difference(&new_paths) {
            for e in &mut entries {
                e.set.remove(gone);
            }
        }
    }
    if !changed.is_empty() {
        for e in &mut entries {
            e.set.retain(|p| !changed.contains(p));
        }
        let me = entries.iter_mut().find(|e| {
            e.manager == w.manager && e.operation == "Update" && e.subresource == w.subresource
        });
        match me {
            Some(e) => {
                e.set.extend(changed);
                e.time = w.now.to_string();
                e.api_version = w.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                subresource: w.subresource.to_string(),
                time: w.now.to_string(),
                set: changed,
            }),
        }
    }
    write_entries(new, entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.path
        );
    }
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "- conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.path
            )
        })
        .collect();
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

fn merge(live: &mut Value, cfg: &Value, names: &mut Vec<String>, lt: ListTypeFn) {
    match (live, cfg) {
        (Value::Object(lm), Value::Object(cm)) => {
            for (k, cv) in cm {
                names.push(k.clone());
                match lm.get_mut(k) {
                    _ if cv.is_null() => {
                        lm.remove(k);
                    }
                    Some(lv) => merge(lv, cv, names, lt),
                    None => {
                        lm.insert(k.clone(), cv.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(la), Value::Array(ca)) => match lt(names) {
            ListType::Map(keys) if !keys.is_empty() => {
                for ci in ca {
                    let pos = la
                        .iter()
                        .position(|li| keys.iter().all(|k| li.get(k) == ci.get(k)));
                    match pos {
                        Some(i) => merge(&mut la[i], ci, names, lt),
                        None => la.push(ci.clone()),
                    }
                }
            }
            ListType::Set => {
                for ci in ca {
                    if !la.contains(ci) {
                        la.push(ci.clone());
                    }
                }
            }
            _ => *la = ca.clone(),
        },
        (l, c) => *l = c.clone(),
    }
}

/// Applies `applied` over `live` for manager `w.manager`. `Err` lists conflicts when not
/// forced. With no live object the applied configuration is the new object.
pub fn apply(
    w: &Writer,
    live: Option<&Value>,
    applied: &Value,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let only = scope(w.subresource, w.has_status);
    let mut cfg = applied.clone();
    if let Some(m) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "managedFields",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = cfg.as_object_mut() {
        match only {
            Some(true) => {
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
            }
            Some(false) => {
                m.remove("status");
            }
            None => {}
        }
    }
    let new_set = fields::owned_paths(&cfg, w.list_type, only);
    let mut entries = parse_entries(live);
    let mut result = match live {
        None => cfg.clone(),
        Some(l) => {
            let mut conflicts = Vec::new();
            let mut disallowed = Vec::new();
            for p in &new_set {
                if p.last().map(String::as_str) == Some(".") {
                    continue;
                }
                let (Some(have), want) = (fields::get_at(l, p), fields::get_at(&cfg, p)) else {
                    continue;
                };
                if Some(have) == want {
                    continue;
                }
                for e in &entries {
                    let mine = e.manager == w.manager && e.operation == "Apply";
                    if !mine && e.set.contains(p) {
                        let c = Conflict {
                            manager: e.manager.clone(),
                            api_version: e.api_version.clone(),
                            path: fields::render_path(p),
                        };
                        if !w.allowed_conflicts.is_some_and(|a| a.contains(p)) {
                            disallowed.push(c.clone());
                        }
                        conflicts.push(c);
                    }
                }
            }
            if !conflicts.is_empty() {
                // Conflicts the upgrade from client-side apply allows are forced.
                if !force && !disallowed.is_empty() {
                    return Err(disallowed);
                }
                for e in &mut entries {
                    if !(e.manager == w.manager && e.operation == "Apply") {
                        e.set.retain(|p| {
                            !(new_set.contains(p)
                                && fields::get_at(l, p) != fields::get_at(&cfg, p))
                        });
                    }
                }
            }
            let mut r = l.clone();
            merge(&mut r, &cfg, &mut Vec::new(), w.list_type);
            r
        }
    };
    let idx = entries.iter().position(|e| {
        e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
    });
    if let Some(i) = idx {
        let old_set = entries[i].set.clone();
        let mut removed: Vec<_> = old_set
            .difference(&new_set)
            .filter(|p| {
                !entries
                    .iter()
                    .enumerate()
                    .any(|(j, e)| j != i && e.set.contains(*p))
            })
            .cloned()
            .collect();
        // Deepest first so list indices stay valid.
        removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in &removed {
            fields::remove_at(&mut result, p);
        }
        let e = &mut entries[i];
        e.set = new_set;
        e.time = w.now.to_string();
        e.api_version = w.api_version.to_string();
    } else {
        entries.push(Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            subresource: w.subresource.to_string(),
            time: w.now.to_string(),
            set: new_set,
        });
    }
    if result.get("metadata").is_none() {
        result["metadata"] = Value::Object(Map::new());
    }
    write_entries(&mut result, entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::builtin_list_type;

    fn writer(m: &'static str) -> Writer<'static> {
        Writer {
            manager: m,
            api_version: "v1",
            subresource: "",
            has_status: false,
            now: "2026-01-01T00:00:00Z",
            list_type: &builtin_list_type,
            allowed_conflicts: None,
        }
    }

    #[test]
    fn apply_owns_removes_and_conflicts() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1", "y": "2"}});
        let live = apply(&writer("a"), None, &a1, false).unwrap();
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}});
        let live = apply(&writer("a"), Some(&live), &a2, false).unwrap();
        assert_eq!(live["data"], json!({"x": "1"}));
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "9"}});
        let err = apply(&writer("b"), Some(&live), &b, false).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"a\" using v1: .data.x"
        );
        let forced = apply(&writer("b"), Some(&live), &b, true).unwrap();
        assert_eq!(forced["data"]["x"], json!("9"));
        // a no longer owns x: applying without it leaves b's value.
        let a3 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let after = apply(&writer("a"), Some(&forced), &a3, false).unwrap();
        assert_eq!(after["data"]["x"], json!("9"));
    }
}
