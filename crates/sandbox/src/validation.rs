//! Unknown-field detection for built-in kinds and kind-specific validation.
//!
//! Unknown fields are found by decoding the object into its k8s-openapi type (which drops
//! fields it does not know), re-encoding it, and comparing key sets with the request body.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord, core::v1 as core,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

/// Re-encodes a built-in object through its typed form; `None` for kinds without a type.
fn typed_roundtrip(group: &str, kind: &str, v: &Value) -> Option<Result<Value, String>> {
    Some(match (group, kind) {
        ("", "Namespace") => roundtrip::<core::Namespace>(v),
        ("", "Secret") => roundtrip::<core::Secret>(v),
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(v),
        ("", "Pod") => roundtrip::<core::Pod>(v),
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(v),
        ("", "Event") => roundtrip::<core::Event>(v),
        ("", "Service") => roundtrip::<core::Service>(v),
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<rbac::Role>(v),
        ("rbac.authorization.k8s.io", "ClusterRole") => roundtrip::<rbac::ClusterRole>(v),
        ("rbac.authorization.k8s.io", "RoleBinding") => roundtrip::<rbac::RoleBinding>(v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            roundtrip::<rbac::ClusterRoleBinding>(v)
        }
        ("policy", "PodDisruptionBudget") => roundtrip::<policy::PodDisruptionBudget>(v),
        ("networking.k8s.io", "NetworkPolicy") => roundtrip::<networking::NetworkPolicy>(v),
        ("networking.k8s.io", "Ingress") => roundtrip::<networking::Ingress>(v),
        ("scheduling.k8s.io", "PriorityClass") => {
            roundtrip::<k8s_openapi::api::scheduling::v1::PriorityClass>(v)
        }
        ("apps", "Deployment") => roundtrip::<apps::Deployment>(v),
        ("apps", "StatefulSet") => roundtrip::<apps::StatefulSet>(v),
        ("apps", "DaemonSet") => roundtrip::<apps::DaemonSet>(v),
        ("apps", "ReplicaSet") => roundtrip::<apps::ReplicaSet>(v),
        ("batch", "Job") => roundtrip::<batch::Job>(v),
        ("batch", "CronJob") => roundtrip::<batch::CronJob>(v),
        ("coordination.k8s.io", "Lease") => roundtrip::<coord::Lease>(v),
        ("events.k8s.io", "Event") => roundtrip::<k8s_openapi::api::events::v1::Event>(v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            roundtrip::<apiext::CustomResourceDefinition>(v)
        }
        _ => return None,
    })
}

/// Paths (`spec.template.spec.containers[0].foo`) of fields the built-in type does not
/// know. `Err` when the body does not decode (wrong types).
pub fn unknown_builtin_fields(group: &str, kind: &str, obj: &Value) -> Result<Vec<String>, String> {
    let Some(rt) = typed_roundtrip(group, kind, obj) else {
        return Ok(Vec::new());
    };
    let rt = rt?;
    let mut out = Vec::new();
    diff(obj, &rt, "", &mut out);
    Ok(out)
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn diff(orig: &Value, rt: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, rt) {
        (Value::Object(om), Value::Object(rm)) => {
            for (k, ov) in om {
                if ov.is_null() {
                    continue;
                }
                match rm.get(k) {
                    Some(rv) => diff(ov, rv, &join(path, k), out),
                    None => {
                        // Free-form maps (labels, data) round-trip whole; a missing key is
                        // a field the type does not declare.
                        out.push(join(path, k));
                    }
                }
            }
        }
        (Value::Array(oa), Value::Array(ra)) => {
            for (i, (ov, rv)) in oa.iter().zip(ra).enumerate() {
                diff(ov, rv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Removes the fields at the given dotted paths (as produced above).
pub fn prune_paths(obj: &mut Value, paths: &[String]) {
    for p in paths {
        let mut segs: Vec<(String, Option<usize>)> = Vec::new();
        for part in p.split('.') {
            let (name, rest) = part.split_once('[').unwrap_or((part, ""));
            segs.push((name.to_string(), None));
            for idx in rest.split('[').filter(|s| !s.is_empty()) {
                let i = idx.trim_end_matches(']').parse().ok();
                segs.push((String::new(), i));
            }
        }
        remove_path(obj, &segs);
    }
}

fn remove_path(v: &mut Value, segs: &[(String, Option<usize>)]) {
    let Some(((name, idx), rest)) = segs.split_first() else {
        return;
    };
    if rest.is_empty() {
        if let Some(m) = v.as_object_mut() {
            m.remove(name);
        }
        return;
    }
    let next = match idx {
        Some(i) => v.get_mut(*i),
        None => v.get_mut(name.as_str()),
    };
    if let Some(n) = next {
        remove_path(n, rest);
    }
}

/// Duplicate keys in a JSON body (serde_json keeps the last one silently).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct V<'a> {
        path: String,
        out: &'a std::cell::RefCell<Vec<String>>,
    }
    impl<'de> serde::de::DeserializeSeed<'de> for V<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut i = 0;
            while a
                .next_element_seed(V {
                    path: format!("{}[{i}]", self.path),
                    out: self.out,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                let p = join(&self.path, &k);
                if !seen.insert(k) {
                    self.out.borrow_mut().push(p.clone());
                }
                a.next_value_seed(V {
                    path: p,
                    out: self.out,
                })?;
            }
            Ok(())
        }
    }
    let out = std::cell::RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = serde::de::DeserializeSeed::deserialize(
        V {
            path: String::new(),
            out: &out,
        },
        &mut de,
    );
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_in_builtin_kinds() {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "bogus": 1},
                       "data": {"k": "dg=="}, "typo": "x"});
        let mut u = unknown_builtin_fields("", "Secret", &s).unwrap();
        u.sort();
        assert_eq!(u, vec!["metadata.bogus".to_string(), "typo".to_string()]);
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
              "spec": {"containers": [{"name": "c", "image": "i", "foo": 1}]}}}});
        assert_eq!(
            unknown_builtin_fields("apps", "Deployment", &d).unwrap(),
            vec!["spec.template.spec.containers[0].foo".to_string()]
        );
        let mut d2 = d.clone();
        prune_paths(
            &mut d2,
            &["spec.template.spec.containers[0].foo".to_string()],
        );
        assert!(
            unknown_builtin_fields("apps", "Deployment", &d2)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn finds_duplicate_keys() {
        assert_eq!(
            duplicate_fields(br#"{"a":{"b":1,"b":2}}"#),
            vec!["a.b".to_string()]
        );
    }
}
