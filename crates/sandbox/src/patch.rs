//! JSON merge patch, JSON patch and strategic merge patch.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::fields::{ListType, builtin_list_type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

pub fn json_patch(doc: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let mut p: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    // kube-apiserver (evanphx/json-patch) treats a missing path as null in a `test`
    // operation; kube-runtime's finalizer helper relies on it (`test /metadata/finalizers
    // null` before adding the first finalizer). The json-patch crate would fail, so such
    // tests are checked here and dropped.
    let mut failed_null_test = None;
    p.0.retain(|op| match op {
        json_patch::PatchOperation::Test(t) if t.value.is_null() => {
            let found = doc.pointer(t.path.as_str());
            if found.is_some_and(|v| !v.is_null()) {
                failed_null_test.get_or_insert_with(|| t.path.to_string());
            }
            false
        }
        _ => true,
    });
    if let Some(path) = failed_null_test {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "the server rejected our request due to an error in our request: testing value {path} failed: test failed"
            ),
        ));
    }
    json_patch::patch(doc, &p).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

/// Strategic merge patch for built-in kinds (merge keys from the Go struct tags).
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    let mut names = Vec::new();
    smp_value(doc, patch, &mut names);
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn smp_value(doc: &mut Value, patch: &Value, names: &mut Vec<String>) {
    let (Some(dm), Some(pm)) = (doc.as_object_mut(), patch.as_object()) else {
        *doc = strip_directives(patch);
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *doc = strip_directives(patch);
        return;
    }
    smp_map(dm, pm, names);
}

fn smp_map(dm: &mut Map<String, Value>, pm: &Map<String, Value>, names: &mut Vec<String>) {
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (dm.get_mut(field), pv.as_array()) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if k == "$retainKeys" {
            if let Some(keep) = pv.as_array() {
                dm.retain(|dk, _| {
                    keep.iter().any(|kv| kv.as_str() == Some(dk)) || pm.contains_key(dk)
                });
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            dm.remove(k);
            continue;
        }
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            dm.remove(k);
            continue;
        }
        names.push(k.clone());
        match (dm.get_mut(k), pv) {
            (Some(dv @ Value::Object(_)), Value::Object(_)) => smp_value(dv, pv, names),
            (Some(Value::Array(dl)), Value::Array(pl)) => {
                let merged = smp_list(std::mem::take(dl), pl, names);
                dm.insert(k.clone(), Value::Array(merged));
            }
            _ => {
                dm.insert(k.clone(), strip_directives(pv));
            }
        }
        names.pop();
    }
}

fn smp_list(mut doc: Vec<Value>, patch: &[Value], names: &mut Vec<String>) -> Vec<Value> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
    }
    match builtin_list_type(names) {
        ListType::Map(keys) => {
            let key = &keys[0];
            for pi in patch {
                let Some(kv) = pi.get(key) else {
                    doc.push(strip_directives(pi));
                    continue;
                };
                let pos = doc.iter().position(|d| d.get(key) == Some(kv));
                let directive = pi.get("$patch").and_then(Value::as_str);
                match (pos, directive) {
                    (Some(i), Some("delete")) => {
                        doc.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), Some("replace")) => doc[i] = strip_directives(pi),
                    (Some(i), _) => smp_value(&mut doc[i], pi, names),
                    (None, _) => doc.push(strip_directives(pi)),
                }
            }
            doc
        }
        ListType::Set => {
            for pi in patch {
                if !doc.contains(pi) {
                    doc.push(pi.clone());
                }
            }
            doc
        }
        ListType::Atomic => patch.iter().map(strip_directives).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name_and_deletes() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ], "tolerations": [{"key": "k"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}
        ], "tolerations": [{"key": "z"}]}});
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}
            ], "tolerations": [{"key": "z"}]}})
        );
    }

    #[test]
    fn strategic_replace_directive_on_list() {
        let mut doc = json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}]}});
        strategic_merge(
            &mut doc,
            &json!({"spec": {"volumes": [{"$patch": "replace"}, {"name": "c"}]}}),
        );
        assert_eq!(doc, json!({"spec": {"volumes": [{"name": "c"}]}}));
    }
}

#[cfg(test)]
mod null_test_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_null_matches_a_missing_path_like_kube_apiserver() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let body = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
                        {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        json_patch(&mut doc, body).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
        // now the path exists, so the same test fails and nothing changes
        let err = json_patch(&mut doc, body).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    }
}
