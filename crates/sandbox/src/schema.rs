//! Structural-schema handling for custom resources: pruning, defaulting and validation
//! against a CRD version's `openAPIV3Schema`, including `x-kubernetes-validations` CEL
//! rules (evaluated with kube-cel, transition rules against the old object).

use serde_json::{Map, Value};

use crate::error::Cause;

#[derive(Debug, Default)]
pub struct Outcome {
    /// Fields removed because the schema does not declare them.
    pub pruned: Vec<String>,
    pub errors: Vec<Cause>,
}

/// Prunes, defaults and validates a custom resource in place.
pub fn process(schema: &Value, obj: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(m) = obj.as_object_mut() else {
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = preserves(schema);
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if m.get(&k).is_some_and(Value::is_null) && !nullable(s) {
                    m.remove(&k);
                    continue;
                }
                if let Some(v) = m.get_mut(&k) {
                    walk(s, v, &k, &mut out);
                }
            }
            None if preserve => {}
            None => {
                m.remove(&k);
                out.pruned.push(k);
            }
        }
    }
    if let Some(p) = props {
        for (k, s) in p {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") || m.contains_key(k) {
                continue;
            }
            if let Some(d) = s.get("default") {
                let mut d = d.clone();
                walk(s, &mut d, k, &mut out);
                m.insert(k.clone(), d);
            }
        }
    }
    check_required(schema, m, "", &mut out);
    out
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn check_required(s: &Value, m: &Map<String, Value>, path: &str, out: &mut Outcome) {
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                out.errors.push(Cause::required(&join(path, r)));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

fn walk(s: &Value, v: &mut Value, path: &str, out: &mut Outcome) {
    if v.is_null() {
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.errors.push(Cause::invalid(
                path,
                v,
                &format!(
                    "{path} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            &format!("{path} in body must be of type {t}: {:?}", type_name(v)),
        ));
        return;
    }
    match v {
        Value::Object(m) => walk_object(s, m, path, out),
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(is, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
    validate_value(s, v, path, out);
}

fn walk_object(s: &Value, m: &mut Map<String, Value>, path: &str, out: &mut Outcome) {
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = preserves(s);
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let child_path = join(path, &k);
        let schema = props
            .and_then(|p| p.get(&k))
            .or_else(|| additional.filter(|a| a.is_object()));
        match schema {
            Some(cs) => {
                if m.get(&k).is_some_and(Value::is_null) && !nullable(cs) {
                    m.remove(&k);
                    continue;
                }
                if let Some(cv) = m.get_mut(&k) {
                    walk(cs, cv, &child_path, out);
                }
            }
            None if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
            None if props.is_none() && additional.is_none() && s.get("type").is_none() => {}
            None => {
                m.remove(&k);
                out.pruned.push(child_path);
            }
        }
    }
    if let Some(p) = props {
        for (k, cs) in p {
            if m.contains_key(k) {
                continue;
            }
            if let Some(d) = cs.get("default") {
                let mut d = d.clone();
                walk(cs, &mut d, &join(path, k), out);
                m.insert(k.clone(), d);
            }
        }
    }
    check_required(s, m, path, out);
}

fn num(s: &Value, k: &str) -> Option<f64> {
    s.get(k).and_then(Value::as_f64)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn validate_value(s: &Value, v: &Value, path: &str, out: &mut Outcome) {
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.errors.push(Cause::unsupported(path, v, allowed));
    }
    if let Some(x) = v.as_f64().filter(|_| v.is_number()) {
        let excl_min = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        let excl_max = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if let Some(min) = num(s, "minimum") {
            if excl_min && x <= min {
                out.errors.push(Cause::invalid(
                    path,
                    v,
                    &format!("{path} in body should be greater than {}", fmt_num(min)),
                ));
            } else if x < min {
                out.errors.push(Cause::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be greater than or equal to {}",
                        fmt_num(min)
                    ),
                ));
            }
        }
        if let Some(max) = num(s, "maximum") {
            if excl_max && x >= max {
                out.errors.push(Cause::invalid(
                    path,
                    v,
                    &format!("{path} in body should be less than {}", fmt_num(max)),
                ));
            } else if x > max {
                out.errors.push(Cause::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be less than or equal to {}",
                        fmt_num(max)
                    ),
                ));
            }
        }
        if let Some(mo) = num(s, "multipleOf")
            && mo != 0.0
            && (x / mo).fract() != 0.0
        {
            out.errors.push(Cause::invalid(
                path,
                v,
                &format!("{path} in body should be a multiple of {}", fmt_num(mo)),
            ));
        }
    }
    if let Some(st) = v.as_str() {
        let len = st.chars().count() as f64;
        if let Some(min) = num(s, "minLength")
            && len < min
        {
            out.errors.push(Cause::invalid(
                path,
                v,
                &format!(
                    "{path} in body should be at least {} chars long",
                    fmt_num(min)
                ),
            ));
        }
        if let Some(max) = num(s, "maxLength")
            && len > max
        {
            out.errors.push(Cause::new(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {} bytes", fmt_num(max)),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(p) {
                Ok(re) if !re.is_match(st) => out.errors.push(Cause::invalid(
                    path,
                    v,
                    &format!("{path} in body should match '{p}'"),
                )),
                _ => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as f64;
        if let Some(min) = num(s, "minItems")
            && n < min
        {
            out.errors.push(Cause::invalid(
                path,
                &Value::from(items.len()),
                &format!("{path} in body should have at least {} items", fmt_num(min)),
            ));
        }
        if let Some(max) = num(s, "maxItems")
            && n > max
        {
            out.errors.push(Cause::new(
                "FieldValueTooMany",
                path,
                format!(
                    "Too many: {}: must have at most {} items",
                    items.len(),
                    fmt_num(max)
                ),
            ));
        }
    }
    if let Some(m) = v.as_object() {
        let n = m.len() as f64;
        if let Some(min) = num(s, "minProperties")
            && n < min
        {
            out.errors.push(Cause::invalid(
                path,
                &Value::from(m.len()),
                &format!(
                    "{path} in body should have at least {} properties",
                    fmt_num(min)
                ),
            ));
        }
        if let Some(max) = num(s, "maxProperties")
            && n > max
        {
            out.errors.push(Cause::invalid(
                path,
                &Value::from(m.len()),
                &format!(
                    "{path} in body should have at most {} properties",
                    fmt_num(max)
                ),
            ));
        }
    }
    // Value validations of the combinators never prune or default (structural schemas).
    let passes = |sub: &Value| {
        let mut probe = Outcome::default();
        let mut copy = v.clone();
        validate_only(sub, &mut copy, path, &mut probe);
        probe.errors.is_empty()
    };
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            let mut copy = v.clone();
            validate_only(sub, &mut copy, path, out);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            &format!("{path} in body must match at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            out.errors.push(Cause::invalid(
                path,
                v,
                &format!("{path} in body must match exactly one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = s.get("not")
        && passes(not)
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            &format!("{path} in body must not match the schema (not)"),
        ));
    }
}

/// Validation without pruning: nested unknown fields are not errors in combinators.
fn validate_only(s: &Value, v: &mut Value, path: &str, out: &mut Outcome) {
    let mut probe = Outcome::default();
    let mut s2 = s.clone();
    if let Some(m) = s2.as_object_mut() {
        m.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    walk(&s2, v, path, &mut probe);
    out.errors.extend(probe.errors);
}

/// Evaluates the schema's `x-kubernetes-validations` rules (after pruning and defaulting).
pub fn cel_errors(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let Err(errs) = kube_cel::validate(schema, obj, old) else {
        return Vec::new();
    };
    errs.into_vec()
        .into_iter()
        // Rules kube-cel cannot compile or evaluate are coverage gaps of the sandbox, not
        // invalid objects (the real server accepted the CRD): they pass.
        .filter(|e| {
            matches!(
                e.kind,
                kube_cel::ErrorKind::ValidationFailure
                    | kube_cel::ErrorKind::InvalidResult
                    | kube_cel::ErrorKind::EvaluationError
            )
        })
        .map(|e| {
            let path = e.field_path.trim_start_matches('.').to_string();
            let shown = lookup(obj, &path).map(|v| match v {
                Value::Object(_) => Value::String("object".into()),
                Value::Array(_) => Value::String("array".into()),
                other => other.clone(),
            });
            Cause::invalid(
                &path,
                &shown.unwrap_or(Value::String("object".into())),
                &e.message,
            )
        })
        .collect()
}

/// The value at a dotted path with `[i]` indices.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches('"'))?,
            };
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true},
                "items": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {"k": {"type": "string"}}}}
            }},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        }})
    }

    #[test]
    fn cel_rules_and_transition_rules() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "has(self.a) || has(self.b)", "message": "a or b is required"}],
            "properties": {
                "a": {"type": "string"},
                "b": {"type": "string"},
                "n": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "n may not decrease"}]}
            }
        }}});
        let msgs = |o: Value, old: Option<Value>| -> Vec<String> {
            cel_errors(&schema, &o, old.as_ref())
                .iter()
                .map(Cause::render)
                .collect()
        };
        assert_eq!(
            msgs(json!({"spec": {}}), None),
            vec!["spec: Invalid value: \"object\": a or b is required".to_string()]
        );
        assert!(msgs(json!({"spec": {"a": "x", "n": 2}}), None).is_empty());
        assert!(
            msgs(
                json!({"spec": {"a": "x", "n": 2}}),
                Some(json!({"spec": {"a": "x", "n": 1}}))
            )
            .is_empty()
        );
        assert_eq!(
            msgs(
                json!({"spec": {"a": "x", "n": 1}}),
                Some(json!({"spec": {"a": "x", "n": 2}}))
            ),
            vec!["spec.n: Invalid value: 1: n may not decrease".to_string()]
        );
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"name": "abc", "extra": 1, "labels": {"a": "b"}, "free": {"z": {"y": 1}}, "port": "http",
                     "items": [{"k": "v", "junk": true}]}, "top": 1});
        let out = process(&schema(), &mut o);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let mut pruned = out.pruned.clone();
        pruned.sort();
        assert_eq!(pruned, vec!["spec.extra", "spec.items[0].junk", "top"]);
        assert_eq!(o["spec"]["replicas"], json!(1));
        assert_eq!(o["spec"]["free"]["z"]["y"], json!(1));
    }

    #[test]
    fn reports_each_violation_with_its_path() {
        let mut o = json!({"spec": {"name": "A B", "replicas": 9, "mode": "c", "items": [{}, {}], "port": 1.5}});
        let out = process(&schema(), &mut o);
        let msgs: Vec<String> = out.errors.iter().map(Cause::render).collect();
        assert!(
            msgs.contains(
                &"spec.name: Invalid value: \"A B\": spec.name in body should match '^[a-z]+$'"
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(msgs.contains(&"spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5".to_string()), "{msgs:?}");
        assert!(
            msgs.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("spec.items: Too many")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.port: Invalid value")),
            "{msgs:?}"
        );
        let mut missing = json!({"spec": {}});
        let out = process(&schema(), &mut missing);
        assert_eq!(out.errors[0].render(), "spec.name: Required value");
    }
}
