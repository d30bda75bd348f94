//! ObjectMeta and data-key validation shared by every kind (labels, annotations,
//! ownerReferences, Secret/ConfigMap keys and sizes), with the real messages.

use serde_json::{Value, json};

use crate::error::Cause;

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Problems with a qualified key like `example.com/name` (empty when valid).
fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if !crate::util::is_dns_subdomain(p) {
            errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    } else if !is_name_part(name) {
        errs.push(QUALIFIED_NAME_MSG.to_string());
    }
    errs
}

fn check_keys(field: &str, map: &serde_json::Map<String, Value>, causes: &mut Vec<Cause>) {
    for k in map.keys() {
        for e in qualified_name_errors(k) {
            causes.push(Cause::invalid(field, &json!(k), &e));
        }
    }
}

pub fn validate_meta(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return;
    };
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        check_keys("metadata.labels", labels, causes);
        for v in labels.values() {
            let Some(s) = v.as_str() else {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    v,
                    "label values must be strings",
                ));
                continue;
            };
            if s.len() > 63 {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    v,
                    "must be no more than 63 characters",
                ));
            } else if !s.is_empty() && !is_name_part(s) {
                causes.push(Cause::invalid("metadata.labels", v, LABEL_VALUE_MSG));
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        check_keys("metadata.annotations", ann, causes);
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for r in refs {
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    let what = match f {
                        "apiVersion" => "version must not be empty",
                        "kind" => "kind must not be empty",
                        "name" => "name must not be empty",
                        _ => "uid must not be empty",
                    };
                    causes.push(Cause::invalid(
                        &format!("metadata.ownerReferences.{f}"),
                        r.get(f).unwrap_or(&json!("")),
                        what,
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                &json!(refs),
                "Only one reference can have Controller set to true",
            ));
        }
    }
}

/// Secret/ConfigMap data: key format and (for Secrets) the 1 MiB total.
pub fn validate_data(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for field in ["data", "binaryData"] {
        let Some(m) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in m {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                && k != "."
                && k != ".."
                && !k.starts_with("..");
            if !ok {
                causes.push(Cause::invalid(
                    &format!("{field}[{k}]"),
                    &json!(k),
                    CONFIG_KEY_MSG,
                ));
            }
            if !seen.insert(k.clone()) {
                causes.push(Cause::invalid(
                    &format!("{field}[{k}]"),
                    &json!(k),
                    "duplicate of key present in data",
                ));
            }
            // Secrets hold base64 on the wire; the limit counts decoded bytes.
            total += match (kind, v.as_str()) {
                ("Secret", Some(s)) => s.len() / 4 * 3,
                (_, Some(s)) => s.len(),
                _ => 0,
            };
        }
    }
    if total > 1024 * 1024 {
        causes.push(Cause::new(
            "FieldValueTooLong",
            "data",
            "Too long: must have at most 1048576 bytes",
        ));
    }
    if kind == "Secret"
        && let Some(m) = obj.get("data").and_then(Value::as_object)
    {
        use base64::Engine;
        for (k, v) in m {
            if let Some(s) = v.as_str()
                && base64::engine::general_purpose::STANDARD.decode(s).is_err()
            {
                causes.push(Cause::invalid(
                    &format!("data[{k}]"),
                    &json!("<value>"),
                    "illegal base64 data",
                ));
            }
        }
    }
}

fn go_map(m: &serde_json::Map<String, Value>) -> String {
    let inner: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn validate_containers(prefix: &str, spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(&format!("{prefix}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(&format!("{prefix}.containers"))),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].name")));
                } else if !crate::util::is_dns_label(name) {
                    causes.push(Cause::invalid(
                        &format!("{prefix}.containers[{i}].name"),
                        &json!(name),
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].image")));
                }
            }
        }
    }
}

/// The checks of apps/v1 workloads and Pods that catch broken manifests: a selector that
/// matches the template, containers with names and images, an immutable selector.
pub fn validate_workload(kind: &str, old: Option<&Value>, obj: &Value, causes: &mut Vec<Cause>) {
    if kind == "Pod" {
        validate_containers("spec", obj.get("spec"), causes);
        return;
    }
    let selector = obj.pointer("/spec/selector");
    match selector {
        None => causes.push(Cause::required("spec.selector")),
        Some(sel) => {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
            if empty {
                causes.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                ));
            } else if !crate::selectors::LabelSelector::from_object(sel)
                .matches_labels(Some(&labels))
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        go_map(&labels)
                    ),
                ));
            }
            if let Some(o) = old
                && o.pointer("/spec/selector") != Some(sel)
            {
                causes.push(Cause::invalid("spec.selector", sel, "field is immutable"));
            }
        }
    }
    validate_containers(
        "spec.template.spec",
        obj.pointer("/spec/template/spec"),
        causes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate_meta(&obj, &mut c);
        validate_data("ConfigMap", &obj, &mut c);
        c.iter().map(Cause::render).collect()
    }

    #[test]
    fn labels_annotations_and_keys() {
        assert!(
            causes(json!({"metadata": {"labels": {"app.kubernetes.io/name": "web", "x": ""}}}))
                .is_empty()
        );
        let c = causes(json!({"metadata": {"labels": {"a": "has space"}}}));
        assert!(
            c[0].starts_with(
                "metadata.labels: Invalid value: \"has space\": a valid label must be"
            ),
            "{c:?}"
        );
        let c = causes(json!({"metadata": {"labels": {"a": "x".repeat(64)}}}));
        assert!(
            c[0].ends_with("must be no more than 63 characters"),
            "{c:?}"
        );
        let c = causes(json!({"metadata": {"annotations": {"Bad_Prefix.io/x": "1"}}}));
        assert_eq!(c.len(), 1, "{c:?}");
        let c = causes(json!({"data": {"ok.key": "1", "bad key": "2"}}));
        assert_eq!(c.len(), 1);
        assert!(
            c[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key"),
            "{c:?}"
        );
        let c = causes(
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": ""}]}}),
        );
        assert_eq!(
            c,
            vec![
                "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"
                    .to_string()
            ]
        );
    }
}
