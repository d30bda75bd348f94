//! Kubernetes protobuf request bodies (what kubectl's imperative commands send for built-in
//! kinds: `kubectl create deployment|job|role|service|ingress|…`), turned into the JSON the
//! rest of the sandbox works on.
//!
//! The wire format is decoded by the k8s-pb crate's prost types (kube-rs' bindings of the
//! upstream `generated.proto` files). Those types have no serde or reflection support, only
//! prost's derived `Debug`, so the decoded value is read back through its `Debug` text — a
//! tree of `Type { field: value }`, `Some(..)`, lists and maps — and each field is given its
//! JSON name and form from the kind's OpenAPI schema ([`crate::openapi`]): `podIPs` for
//! `pod_i_ps`, base64 for `format: byte`, RFC 3339 for `Time`, a number or a string for
//! `IntOrString`, the JSON inside a `RawExtension`.
//!
//! Go writes every non-pointer field, so an empty string or list in a struct field means
//! "unset" (JSON's `omitempty`) and is left out, as are a zero `Time` and a zero number whose
//! field has no non-zero default. `false` is kept: the same meaning as unset for plain
//! booleans, and a choice for the pointer ones (`automountServiceAccountToken`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::LazyLock;

use prost::Message;
use regex::Regex;
use serde_json::{Map, Value, json};

use crate::openapi;

/// `k8s\0`: the envelope magic before a `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\x00";

/// The JSON form of a protobuf-encoded object, or `Err` naming what is unsupported.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf envelope")?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope)
        .map_err(|e| format!("malformed protobuf envelope: {e}"))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let debug = typed_debug(&api_version, &kind, &raw)
        .ok_or_else(|| format!("protobuf bodies of {api_version} {kind} are not supported"))??;
    let schema = openapi::kind_schema(&api_version, &kind)
        .ok_or_else(|| format!("no schema for {api_version} {kind}"))?;
    let tree = Parser::new(&debug)
        .value()
        .ok_or_else(|| format!("unreadable protobuf {kind}"))?;
    let mut v = convert(&tree, &schema, true).unwrap_or_else(|| json!({}));
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

/// Decodes `raw` as the k8s-pb type of (apiVersion, kind) and returns its `Debug` text.
fn typed_debug(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<String, String>> {
    use k8s_pb::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
        autoscaling::v1 as autoscaling, batch::v1 as batch, coordination::v1 as coord,
        core::v1 as core, events::v1 as events, networking::v1 as networking, policy::v1 as policy,
        rbac::v1 as rbac, scheduling::v1 as scheduling,
    };
    fn dbg<T: Message + Default + std::fmt::Debug>(raw: &[u8]) -> Result<String, String> {
        T::decode(raw)
            .map(|t| format!("{t:?}"))
            .map_err(|e| format!("malformed protobuf body: {e}"))
    }
    Some(match (api_version, kind) {
        ("v1", "Namespace") => dbg::<core::Namespace>(raw),
        ("v1", "Secret") => dbg::<core::Secret>(raw),
        ("v1", "ConfigMap") => dbg::<core::ConfigMap>(raw),
        ("v1", "Pod") => dbg::<core::Pod>(raw),
        ("v1", "ServiceAccount") => dbg::<core::ServiceAccount>(raw),
        ("v1", "Event") => dbg::<core::Event>(raw),
        ("v1", "Service") => dbg::<core::Service>(raw),
        ("apps/v1", "Deployment") => dbg::<apps::Deployment>(raw),
        ("apps/v1", "StatefulSet") => dbg::<apps::StatefulSet>(raw),
        ("apps/v1", "DaemonSet") => dbg::<apps::DaemonSet>(raw),
        ("apps/v1", "ReplicaSet") => dbg::<apps::ReplicaSet>(raw),
        ("batch/v1", "Job") => dbg::<batch::Job>(raw),
        ("batch/v1", "CronJob") => dbg::<batch::CronJob>(raw),
        ("rbac.authorization.k8s.io/v1", "Role") => dbg::<rbac::Role>(raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => dbg::<rbac::ClusterRole>(raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => dbg::<rbac::RoleBinding>(raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            dbg::<rbac::ClusterRoleBinding>(raw)
        }
        ("policy/v1", "PodDisruptionBudget") => dbg::<policy::PodDisruptionBudget>(raw),
        ("networking.k8s.io/v1", "NetworkPolicy") => dbg::<networking::NetworkPolicy>(raw),
        ("networking.k8s.io/v1", "Ingress") => dbg::<networking::Ingress>(raw),
        ("scheduling.k8s.io/v1", "PriorityClass") => dbg::<scheduling::PriorityClass>(raw),
        ("coordination.k8s.io/v1", "Lease") => dbg::<coord::Lease>(raw),
        ("events.k8s.io/v1", "Event") => dbg::<events::Event>(raw),
        ("autoscaling/v1", "Scale") => dbg::<autoscaling::Scale>(raw),
        ("authentication.k8s.io/v1", "TokenRequest") => dbg::<authn::TokenRequest>(raw),
        ("authentication.k8s.io/v1", "TokenReview") => dbg::<authn::TokenReview>(raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            dbg::<authz::SelfSubjectAccessReview>(raw)
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => {
            dbg::<authz::SubjectAccessReview>(raw)
        }
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview") => {
            dbg::<authz::LocalSubjectAccessReview>(raw)
        }
        _ => return None,
    })
}

/// A value as prost's derived `Debug` prints it.
#[derive(Debug, PartialEq)]
enum Node {
    /// `Name { field: value, .. }`
    Struct(String, Vec<(String, Node)>),
    Some(Box<Node>),
    None,
    Str(String),
    /// Numbers and booleans, as printed.
    Atom(String),
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'#' | b'.' | b'-' | b'+')
        }) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// A list of items up to `close`, separated by commas.
    fn items<T>(
        &mut self,
        close: &str,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Some(out);
            }
            out.push(item(self)?);
            if !self.eat(",") {
                return self.eat(close).then_some(out);
            }
        }
    }

    fn value(&mut self) -> Option<Node> {
        self.skip_ws();
        match *self.s.get(self.pos)? {
            b'"' => self.string().map(Node::Str),
            b'[' => {
                self.pos += 1;
                self.items("]", Self::value).map(Node::List)
            }
            b'{' => {
                self.pos += 1;
                self.items("}", |p| {
                    let k = p.value()?;
                    p.eat(":").then_some(())?;
                    Some((k, p.value()?))
                })
                .map(Node::Map)
            }
            _ => {
                let w = self.word();
                match w.as_str() {
                    "" => None,
                    "None" => Some(Node::None),
                    "Some" => {
                        self.eat("(").then_some(())?;
                        let v = self.value()?;
                        self.eat(")").then_some(Node::Some(Box::new(v)))
                    }
                    _ if w.starts_with(|c: char| c.is_ascii_uppercase()) => {
                        self.eat("{").then_some(())?;
                        let fields = self.items("}", |p| {
                            let name = p.word();
                            p.eat(":").then_some(())?;
                            Some((name.trim_start_matches("r#").to_string(), p.value()?))
                        })?;
                        Some(Node::Struct(w, fields))
                    }
                    _ => Some(Node::Atom(w)),
                }
            }
        }
    }

    /// A string literal with Rust's `Debug` escapes.
    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.pos)?;
            self.pos += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.pos)?;
                    self.pos += 1;
                    let ch = match e {
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'0' => '\0',
                        b'u' => {
                            let end =
                                self.pos + self.s[self.pos..].iter().position(|c| *c == b'}')?;
                            let hex = std::str::from_utf8(&self.s[self.pos + 1..end]).ok()?;
                            self.pos = end + 1;
                            char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                        }
                        other => char::from(other),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                other => out.push(other),
            }
        }
    }
}

/// `pod_i_ps` and `podIPs` both normalise to `podips`.
fn normalise(name: &str) -> String {
    name.replace('_', "").to_ascii_lowercase()
}

/// The JSON for a node, shaped by its schema; `None` for an unset value. `in_struct`: the
/// node is a struct field, where Go's always-written zero values mean unset.
fn convert(node: &Node, schema: &Value, in_struct: bool) -> Option<Value> {
    let schema = openapi::resolve(schema);
    match node {
        Node::None => None,
        Node::Some(inner) => convert(inner, &schema, in_struct),
        Node::Struct(type_name, fields) => special(type_name, fields).unwrap_or_else(|| {
            let mut out = Map::new();
            struct_fields(fields, &schema, &mut out);
            Some(Value::Object(out))
        }),
        Node::Str(s) if in_struct && s.is_empty() => None,
        Node::Str(s) => Some(json!(s)),
        Node::Atom(a) => match a.as_str() {
            "true" => Some(json!(true)),
            "false" => Some(json!(false)),
            n => serde_json::from_str(n).ok(),
        },
        Node::List(items) if in_struct && items.is_empty() => None,
        Node::List(items) if schema.get("format").and_then(Value::as_str) == Some("byte") => {
            Some(json!(B64.encode(bytes(items)?)))
        }
        Node::List(items) => {
            let item_schema = schema.get("items").cloned().unwrap_or_default();
            Some(Value::Array(
                items
                    .iter()
                    .filter_map(|i| convert(i, &item_schema, false))
                    .collect(),
            ))
        }
        Node::Map(entries) if in_struct && entries.is_empty() => None,
        Node::Map(entries) => {
            let value_schema = schema
                .get("additionalProperties")
                .cloned()
                .unwrap_or_default();
            let mut out = Map::new();
            for (k, v) in entries {
                let Node::Str(key) = k else { continue };
                if let Some(v) = convert(v, &value_schema, false) {
                    out.insert(key.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
    }
}

/// Whether a zero in this number field was chosen rather than left unset: Go writes its
/// plain `int32` fields even when zero (`hostPort: 0` means no host port), but a field with a
/// non-zero default (`replicas`, `backoffLimit`) is a pointer, written only when set.
fn zero_is_a_choice(prop: &Value) -> bool {
    static DEFAULT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)defaults? (?:to|is) ([1-9][0-9]*)").expect("valid"));
    openapi::resolve(prop)
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| DEFAULT.is_match(d))
}

/// A struct's fields into `out`, named and shaped by the struct's schema. A field the schema
/// does not name is a Go struct embedded with `json:",inline"` (`IngressRule`'s
/// `ingressRuleValue`, `Volume`'s `volumeSource`, `Probe`'s `handler`): its fields are the
/// struct's own in JSON.
fn struct_fields(fields: &[(String, Node)], schema: &Value, out: &mut Map<String, Value>) {
    let props = schema.get("properties").and_then(Value::as_object);
    for (name, value) in fields {
        let n = normalise(name);
        let Some((json_name, prop)) = props.and_then(|p| p.iter().find(|(k, _)| normalise(k) == n))
        else {
            let mut inner = value;
            while let Node::Some(v) = inner {
                inner = v;
            }
            if let Node::Struct(_, embedded) = inner {
                struct_fields(embedded, schema, out);
            }
            continue;
        };
        let Some(v) = convert(value, prop, true) else {
            continue;
        };
        let required = schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|k| k == json_name));
        if v == json!(0) && !required && !zero_is_a_choice(prop) {
            continue;
        }
        out.insert(json_name.clone(), v);
    }
}

fn bytes(items: &[Node]) -> Option<Vec<u8>> {
    items
        .iter()
        .map(|i| match i {
            Node::Atom(a) => a.parse().ok(),
            _ => None,
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, Node)], name: &str) -> Option<&'a Node> {
    let mut n = fields.iter().find(|(f, _)| f == name).map(|(_, v)| v)?;
    while let Node::Some(inner) = n {
        n = inner;
    }
    Some(n)
}

fn atom<T: std::str::FromStr>(fields: &[(String, Node)], name: &str) -> Option<T> {
    match field(fields, name)? {
        Node::Atom(a) => a.parse().ok(),
        _ => None,
    }
}

/// apimachinery types whose JSON form is not their protobuf structure (their schemas are
/// inline, so they are known by their type name). `Some(None)`: unset.
fn special(type_name: &str, fields: &[(String, Node)]) -> Option<Option<Value>> {
    Some(match type_name {
        "Time" | "MicroTime" => {
            let seconds: i64 = atom(fields, "seconds").unwrap_or(0);
            let nanos: i32 = atom(fields, "nanos").unwrap_or(0);
            if seconds == 0 && nanos == 0 {
                return Some(None);
            }
            let ts = jiff::Timestamp::new(seconds, nanos).ok()?;
            let text = if type_name == "MicroTime" {
                format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"))
            } else {
                format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%SZ"))
            };
            Some(json!(text))
        }
        "Quantity" => match field(fields, "string")? {
            Node::Str(s) => Some(json!(s)),
            _ => None,
        },
        "IntOrString" => {
            if atom::<i64>(fields, "type") == Some(1) {
                match field(fields, "str_val")? {
                    Node::Str(s) => Some(json!(s)),
                    _ => None,
                }
            } else {
                Some(json!(atom::<i64>(fields, "int_val").unwrap_or(0)))
            }
        }
        "RawExtension" | "FieldsV1" => match field(fields, "raw")? {
            Node::List(items) => serde_json::from_slice(&bytes(items)?).ok(),
            _ => None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    #[test]
    fn decodes_a_secret_with_bytes_labels_and_empty_go_fields() {
        use k8s_pb::api::core::v1::Secret;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("s1".into()),
                namespace: Some(String::new()),
                labels: [("app".to_string(), "we\"b\n".to_string())].into(),
                creation_timestamp: Some(Time::default()),
                ..Default::default()
            }),
            data: [("k".to_string(), vec![0, 1, 255])].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "s1", "labels": {"app": "we\"b\n"}},
                   "data": {"k": "AAH/"}})
        );
    }

    #[test]
    fn decodes_int_or_string_quantities_and_acronym_fields() {
        use k8s_pb::api::core::v1::{Service, ServicePort, ServiceSpec};
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
        let svc = Service {
            spec: Some(ServiceSpec {
                ports: vec![ServicePort {
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("http".into()),
                    }),
                    ..Default::default()
                }],
                cluster_ips: vec!["None".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            v["spec"],
            json!({"ports": [{"port": 80, "targetPort": "http"}], "clusterIPs": ["None"]})
        );
    }

    #[test]
    fn embedded_go_structs_are_inlined() {
        use k8s_pb::api::core::v1::{Pod, PodSpec, SecretVolumeSource, Volume, VolumeSource};
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: vec![Volume {
                    name: Some("creds".into()),
                    volume_source: Some(VolumeSource {
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("db-v1".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap();
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "creds", "secret": {"secretName": "db-v1"}}])
        );
    }

    #[test]
    fn refuses_kinds_it_has_no_type_for() {
        let e = decode(&envelope("example.io/v1", "Gadget", vec![])).unwrap_err();
        assert!(e.contains("example.io/v1 Gadget are not supported"), "{e}");
    }
}
