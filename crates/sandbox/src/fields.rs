//! Field paths in the `fieldsV1` vocabulary (`f:spec`, `k:{"name":"c"}`, `v:"x"`, `.`),
//! used by server-side apply and `metadata.managedFields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// How a list is merged, by the field that holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    /// Items identified by these keys.
    Map(Vec<String>),
    /// Primitive items identified by value.
    Set,
}

/// Resolves the list type of a field; the closure receives the field-name path (list
/// indices elided) of the list.
pub type ListTypeFn<'a> = &'a dyn Fn(&[String]) -> ListType;

/// Merge keys of the built-in kinds, by field name (`patchMergeKey` in the Go types).
pub fn builtin_list_type(path: &[String]) -> ListType {
    let Some(last) = path.last() else {
        return ListType::Atomic;
    };
    let key = |k: &str| ListType::Map(vec![k.to_string()]);
    match last.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => key("name"),
        "volumeMounts" | "volumeDevices" => key("mountPath"),
        "ports"
            if path
                .iter()
                .any(|p| p == "containers" || p == "initContainers") =>
        {
            key("containerPort")
        }
        // A Service's ports (`spec.ports`; no other built-in kind has a list there).
        "ports" if path.len() == 2 && path[0] == "spec" => key("port"),
        "conditions" => key("type"),
        "ownerReferences" => key("uid"),
        "hostAliases" => key("ip"),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// List type for CRD-defined kinds, read from the schema's `x-kubernetes-list-type`.
pub fn schema_list_type(schema: &Value, path: &[String]) -> ListType {
    if path.first().map(String::as_str) == Some("metadata") {
        return builtin_list_type(path);
    }
    let mut node = schema;
    for seg in path {
        // Descend through arrays (indices are elided from the path).
        while node.get("type").and_then(Value::as_str) == Some("array") {
            match node.get("items") {
                Some(i) => node = i,
                None => return ListType::Atomic,
            }
        }
        match node.pointer(&format!(
            "/properties/{}",
            seg.replace('~', "~0").replace('/', "~1")
        )) {
            Some(n) => node = n,
            None => match node.get("additionalProperties") {
                Some(a) if a.is_object() => node = a,
                _ => return ListType::Atomic,
            },
        }
    }
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => ListType::Map(
            node.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("set") => ListType::Set,
        _ => ListType::Atomic,
    }
}

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let obj = item.as_object()?;
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), obj.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// The leaf field paths set in `v`; `names` is the field-name path used for list types.
pub fn collect(
    v: &Value,
    prefix: &mut Path,
    names: &mut Vec<String>,
    lt: ListTypeFn,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                names.push(k.clone());
                collect(child, prefix, names, lt, out);
                names.pop();
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match lt(names) {
            ListType::Map(keys) if !keys.is_empty() => {
                for item in items {
                    let Some(k) = item_key(item, &keys) else {
                        out.insert(prefix.clone());
                        return;
                    };
                    prefix.push(k);
                    prefix.push(".".into());
                    out.insert(prefix.clone());
                    prefix.pop();
                    collect(item, prefix, names, lt, out);
                    prefix.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    prefix.push(format!("v:{item}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        },
        // An empty map claims nothing; empty lists and scalars are owned values.
        Value::Object(_) => {}
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The paths an applier or updater can own: everything but identity and system metadata.
pub fn owned_paths(obj: &Value, lt: ListTypeFn, only_status: Option<bool>) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        match only_status {
            Some(true) if k != "status" => continue,
            Some(false) if k == "status" => continue,
            _ => {}
        }
        if k == "metadata" {
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(sub) = v.get(mk) {
                    let mut prefix = vec!["f:metadata".to_string(), format!("f:{mk}")];
                    let mut names = vec!["metadata".to_string(), mk.to_string()];
                    collect(sub, &mut prefix, &mut names, lt, &mut out);
                }
            }
            continue;
        }
        let mut prefix = vec![format!("f:{k}")];
        let mut names = vec![k.clone()];
        collect(v, &mut prefix, &mut names, lt, &mut out);
    }
    out
}

/// Finds the value at a path (`.` yields the list item itself).
pub fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = seg.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)));
    }
    if let Some(val) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(val).ok()?;
        return items.iter().find(|i| **i == want);
    }
    None
}

/// Removes the field (or list item, for paths ending in `.` or `v:`) at `path`.
pub fn remove_at(v: &mut Value, path: &[String]) {
    let (parent_path, last) = match path.split_last() {
        Some((l, p)) if l == "." => match p.split_last() {
            Some((item, pp)) => (pp, item.as_str()),
            None => return,
        },
        Some((l, p)) => (p, l.as_str()),
        None => return,
    };
    let mut cur = v;
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let idx = find_index(cur, seg);
            match (idx, cur.as_array_mut()) {
                (Some(i), Some(a)) => a.get_mut(i),
                _ => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = find_index(cur, last)
        && let Some(a) = cur.as_array_mut()
    {
        a.remove(i);
    }
}

fn find_index(cur: &Value, seg: &str) -> Option<usize> {
    let items = cur.as_array()?;
    let target = step(cur, seg)?;
    items.iter().position(|i| std::ptr::eq(i, target))
}

/// `fieldsV1` JSON from a path set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let e = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            cur = e.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Path set from `fieldsV1` JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// `.spec.replicas`-style rendering for conflict messages.
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        } else if let Some(val) = seg.strip_prefix("v:") {
            s.push_str(&format!("[={val}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_roundtrip_through_fields_v1() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        });
        let set = owned_paths(&obj, &builtin_list_type, None);
        assert!(set.contains(&vec![
            "f:metadata".to_string(),
            "f:labels".into(),
            "f:a".into()
        ]));
        assert!(set.contains(&vec![
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into()
        ]));
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let mut o = obj.clone();
        remove_at(
            &mut o,
            &[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"c\"}".into(),
                ".".into(),
            ],
        );
        assert_eq!(o["spec"]["containers"], json!([]));
        remove_at(
            &mut o,
            &["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()],
        );
        assert_eq!(o["metadata"]["finalizers"], json!([]));
    }
}
