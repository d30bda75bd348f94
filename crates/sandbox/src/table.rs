//! `meta.k8s.io/v1` Table responses for kubectl's human-readable output: the name, CRD
//! `additionalPrinterColumns` (or a few built-in columns), and the age.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// Whether the Accept header asks for a Table first (kubectl get without -o).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

struct Column {
    name: String,
    kind: String,
    path: String,
    description: String,
    priority: i64,
}

fn columns(def: &ResourceDef, version: &str) -> Vec<Column> {
    let col = |name: &str, kind: &str, path: &str| Column {
        name: name.into(),
        kind: kind.into(),
        path: path.into(),
        description: String::new(),
        priority: 0,
    };
    if let Some(v) = def.crd_version(version) {
        return v
            .printer_columns
            .iter()
            .map(|c| Column {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .into(),
                path: c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                description: c
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            })
            .collect();
    }
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "secrets") => vec![
            col("Type", "string", ".type"),
            col("Data", "integer", "#data"),
        ],
        ("", "configmaps") => vec![col("Data", "integer", "#data")],
        ("", "namespaces") => vec![col("Status", "string", ".status.phase")],
        ("", "pods") => vec![
            col("Ready", "string", "#podready"),
            col("Status", "string", "#podstatus"),
            col("Restarts", "integer", "#restarts"),
        ],
        ("apps", "deployments") => vec![
            col("Ready", "string", "#ready"),
            col("Up-to-date", "integer", ".status.updatedReplicas"),
            col("Available", "integer", ".status.availableReplicas"),
        ],
        ("apps", "statefulsets") => vec![col("Ready", "string", "#ready")],
        ("apps", "replicasets") => vec![
            col("Desired", "integer", ".spec.replicas"),
            col("Current", "integer", ".status.replicas"),
            col("Ready", "integer", ".status.readyReplicas"),
        ],
        ("apps", "daemonsets") => vec![
            col("Desired", "integer", ".status.desiredNumberScheduled"),
            col("Current", "integer", ".status.currentNumberScheduled"),
            col("Ready", "integer", ".status.numberReady"),
            col("Up-to-date", "integer", ".status.updatedNumberScheduled"),
            col("Available", "integer", ".status.numberAvailable"),
        ],
        _ => Vec::new(),
    }
}

/// Evaluates the simple JSONPath forms printer columns use: `.a.b`, `.a[0].b`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let mut cur = vec![obj.clone()];
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let sel = &r[..end];
            rest = &r[end + 1..];
            let items: Vec<Value> = cur
                .iter()
                .filter_map(Value::as_array)
                .flat_map(|a| a.iter().cloned())
                .collect();
            cur = if sel == "*" {
                items
            } else if let Ok(i) = sel.parse::<usize>() {
                cur.iter().filter_map(|v| v.get(i).cloned()).collect()
            } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = f.split_once("==").unwrap_or((f, ""));
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                items
                    .into_iter()
                    .filter(|i| i.get(field.trim()).and_then(Value::as_str) == Some(want))
                    .collect()
            } else {
                Vec::new()
            };
        } else {
            break;
        }
    }
    cur
}

pub fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn special(obj: &Value, what: &str) -> Value {
    let i = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match what {
        "#data" => json!(
            obj.get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
        ),
        "#ready" => json!(format!(
            "{}/{}",
            i("/status/readyReplicas"),
            obj.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        "#podready" => {
            let cs = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs.map_or(0, |c| {
                c.iter()
                    .filter(|s| s.get("ready") == Some(&json!(true)))
                    .count()
            });
            json!(format!("{ready}/{total}"))
        }
        "#podstatus" => {
            let waiting = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find_map(|s| s.pointer("/state/waiting/reason").cloned())
                });
            waiting.unwrap_or_else(|| {
                obj.pointer("/status/phase")
                    .cloned()
                    .unwrap_or(json!("Pending"))
            })
        }
        "#restarts" => json!(0),
        _ => Value::Null,
    }
}

fn cell(obj: &Value, c: &Column) -> Value {
    let v = if c.path.starts_with('#') {
        special(obj, &c.path)
    } else {
        let found = json_path(obj, &c.path);
        match found.len() {
            0 => Value::Null,
            1 => found.into_iter().next().unwrap_or(Value::Null),
            _ => json!(
                found
                    .iter()
                    .map(|v| v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    };
    match (c.kind.as_str(), &v) {
        ("date", Value::String(s)) => json!(age(s)),
        (_, Value::Null) => json!("<none>"),
        _ => v,
    }
}

pub fn table(def: &ResourceDef, version: &str, objs: &[&Value], resource_version: &str) -> Value {
    let cols = columns(def, version);
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in &cols {
        defs.push(json!({"name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": c.priority}));
    }
    // CRDs that declare printer columns declare their own Age (the default is just Age).
    let add_age = !def.is_crd() || cols.is_empty();
    if add_age {
        defs.push(json!({"name": "Age", "type": "string", "format": "",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            cells.extend(cols.iter().map(|c| cell(o, c)));
            if add_age {
                cells.push(json!(age(o
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or(""))));
            }
            json!({"cells": cells, "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            }})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_forms() {
        let o = json!({"spec": {"size": 3, "items": [{"k": "a"}, {"k": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}});
        assert_eq!(json_path(&o, ".spec.size"), vec![json!(3)]);
        assert_eq!(json_path(&o, ".spec.items[1].k"), vec![json!("b")]);
        assert_eq!(
            json_path(&o, ".spec.items[*].k"),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert!(json_path(&o, ".nope").is_empty());
    }
}
