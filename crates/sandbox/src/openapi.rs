//! OpenAPI documents with real schemas, as kube-apiserver publishes them: built-in kinds from
//! k8s-openapi (generated from the same swagger, reached through its `schemars` impls), custom
//! resources from their CRD version's `openAPIV3Schema`.
//!
//! - `/openapi/v3` and `/openapi/v3/{api/v1, apis/G/V}`: one document per group-version. Its
//!   PATCH operations carry the `fieldValidation` parameter (how kubectl learns that the server
//!   validates fields itself) and its schemas are what `kubectl explain` reads.
//! - `/openapi/v2`: every definition in one document, as JSON or as the protobuf kubectl asks
//!   for (gnostic's `openapi.v2.Document`). kubectl validates a `kind: List` manifest itself
//!   against it (it never asks the server to), and `kubectl apply` reads built-in kinds' merge
//!   keys from it to compute strategic merge patches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::fields::{ListType, builtin_list_type};
use crate::resources::{Registry, ResourceDef};

const V2_REFS: &str = "#/definitions/";
const V3_REFS: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const GVK: &str = "x-kubernetes-group-version-kind";
/// What kube-apiserver answers `/openapi/v2` with when asked for protobuf.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// (group, version, kind)
type Gvk = (String, String, String);

struct Builtins {
    /// Definitions by name, in v2 form (`$ref` to `#/definitions/…` beside other keywords).
    defs: Map<String, Value>,
    kinds: BTreeMap<Gvk, String>,
}

static BUILTINS: LazyLock<Builtins> = LazyLock::new(builtins);

fn kind<T: JsonSchema + k8s_openapi::Resource>(
    generator: &mut SchemaGenerator,
    kinds: &mut BTreeMap<Gvk, String>,
) {
    generator.subschema_for::<T>();
    kinds.insert(
        (T::GROUP.into(), T::VERSION.into(), T::KIND.into()),
        T::schema_name().into_owned(),
    );
}

fn builtins() -> Builtins {
    use k8s_openapi::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
        autoscaling::v1 as autoscaling, batch::v1 as batch, coordination::v1 as coord,
        core::v1 as core, events::v1 as events, networking::v1 as networking, policy::v1 as policy,
        rbac::v1 as rbac, scheduling::v1 as scheduling,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            s.definitions_path = V2_REFS.trim_start_matches('#').into();
            s.transforms.clear();
        })
        .into_generator();
    let g = &mut generator;
    let mut kinds = BTreeMap::new();
    let k = &mut kinds;
    kind::<core::Namespace>(g, k);
    kind::<core::Secret>(g, k);
    kind::<core::ConfigMap>(g, k);
    kind::<core::Pod>(g, k);
    kind::<core::ServiceAccount>(g, k);
    kind::<core::Event>(g, k);
    kind::<core::Service>(g, k);
    kind::<rbac::Role>(g, k);
    kind::<rbac::ClusterRole>(g, k);
    kind::<rbac::RoleBinding>(g, k);
    kind::<rbac::ClusterRoleBinding>(g, k);
    kind::<policy::PodDisruptionBudget>(g, k);
    kind::<networking::NetworkPolicy>(g, k);
    kind::<networking::Ingress>(g, k);
    kind::<scheduling::PriorityClass>(g, k);
    kind::<apps::Deployment>(g, k);
    kind::<apps::StatefulSet>(g, k);
    kind::<apps::DaemonSet>(g, k);
    kind::<apps::ReplicaSet>(g, k);
    kind::<batch::Job>(g, k);
    kind::<batch::CronJob>(g, k);
    kind::<coord::Lease>(g, k);
    kind::<events::Event>(g, k);
    kind::<apiext::CustomResourceDefinition>(g, k);
    // Not served as resources of their own, but sent in request bodies.
    kind::<autoscaling::Scale>(g, k);
    kind::<authn::TokenRequest>(g, k);
    kind::<authn::TokenReview>(g, k);
    kind::<authz::SelfSubjectAccessReview>(g, k);
    kind::<authz::SubjectAccessReview>(g, k);
    kind::<authz::LocalSubjectAccessReview>(g, k);
    let mut defs = generator.take_definitions(false);
    for ((group, version, kind), name) in &kinds {
        if let Some(d) = defs.get_mut(name).and_then(Value::as_object_mut) {
            d.insert(
                GVK.into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    for (name, d) in defs.iter_mut() {
        annotate_lists(name, d);
    }
    Builtins { defs, kinds }
}

/// Marks the lists the sandbox merges by key (the same table its strategic merge and
/// server-side apply use) with the extensions the real schemas carry, which kubectl's
/// strategic merge patches follow.
fn annotate_lists(def_name: &str, def: &mut Value) {
    let short = def_name.rsplit('.').next().unwrap_or_default();
    let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, schema) in props.iter_mut() {
        if schema.get("type").and_then(Value::as_str) != Some("array") {
            continue;
        }
        let path: Vec<String> = match short {
            "Container" | "EphemeralContainer" => vec!["containers".into(), field.clone()],
            "ServiceSpec" => vec!["spec".into(), field.clone()],
            _ => vec![field.clone()],
        };
        let Some(s) = schema.as_object_mut() else {
            continue;
        };
        match builtin_list_type(&path) {
            ListType::Map(keys) => {
                s.insert("x-kubernetes-list-type".into(), json!("map"));
                s.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                s.insert("x-kubernetes-patch-merge-key".into(), json!(keys[0]));
                s.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
            ListType::Set => {
                s.insert("x-kubernetes-list-type".into(), json!("set"));
                s.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
            ListType::Atomic => {}
        }
    }
}

/// A reference to the definition of a built-in kind (`apps/v1`, `Deployment`).
pub fn kind_schema(api_version: &str, kind: &str) -> Option<Value> {
    let (group, version) = crate::resources::split_api_version(api_version);
    let name = BUILTINS
        .kinds
        .get(&(group.to_string(), version.to_string(), kind.to_string()))?;
    Some(json!({"$ref": format!("{V2_REFS}{name}")}))
}

/// Follows a built-in schema's reference (bare or wrapped in `allOf`) to its definition; an
/// inline schema as it is.
pub fn resolve(schema: &Value) -> Value {
    let reference = schema.get("$ref").or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].get("$ref"))
    });
    if let Some(name) = reference
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(V2_REFS))
        && let Some(def) = BUILTINS.defs.get(name)
    {
        return def.clone();
    }
    schema.clone()
}

/// `secretsync.io` → `io.secretsync`, the prefix of a custom resource's definition name.
fn reversed_group(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

/// A CRD version's schema as the server publishes it: with `apiVersion`, `kind`, the
/// ObjectMeta reference for `metadata`, and its group-version-kind.
fn crd_definition(def: &ResourceDef, version: &str) -> Option<(String, Value)> {
    let mut schema = def.crd_version(version)?.schema.clone()?;
    let s = schema.as_object_mut()?;
    let type_meta = |what: &str| {
        json!({"type": "string", "description": format!(
            "{what}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
        )})
    };
    let props = s
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()?;
    props.insert(
        "apiVersion".into(),
        type_meta("APIVersion defines the versioned schema of this representation of an object"),
    );
    props.insert(
        "kind".into(),
        type_meta("Kind is a string value representing the REST resource this object represents"),
    );
    props.insert(
        "metadata".into(),
        json!({"$ref": format!("{V2_REFS}{OBJECT_META}"), "description": "Standard object's metadata."}),
    );
    s.entry("type").or_insert_with(|| json!("object"));
    s.insert(
        GVK.into(),
        json!([{"group": def.group, "version": version, "kind": def.kind}]),
    );
    let name = format!("{}.{version}.{}", reversed_group(&def.group), def.kind);
    Some((name, schema))
}

/// The definition of a served kind, and its name.
fn definition(def: &ResourceDef, version: &str) -> Option<(String, Value)> {
    if def.is_crd() {
        return crd_definition(def, version);
    }
    let key = (def.group.clone(), version.to_string(), def.kind.clone());
    let name = BUILTINS.kinds.get(&key)?;
    Some((name.clone(), BUILTINS.defs.get(name)?.clone()))
}

/// The named definitions plus every definition they reference, transitively.
fn with_references(mut defs: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut todo: Vec<String> = Vec::new();
    for d in defs.values() {
        references(d, &mut todo);
    }
    while let Some(name) = todo.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        if let Some(d) = BUILTINS.defs.get(&name) {
            references(d, &mut todo);
            defs.insert(name, d.clone());
        }
    }
    defs
}

fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix(V2_REFS)
            {
                out.push(name.to_string());
            }
            m.values().for_each(|x| references(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// v2 form to v3 form: references point into `components/schemas`, and a reference with
/// other keywords beside it (a field's description) is wrapped in `allOf`, as the real
/// server does.
fn to_v3(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(V2_REFS) {
                    *r = format!("{V3_REFS}{name}");
                }
                if m.len() > 1
                    && let Some(r) = m.remove("$ref")
                {
                    m.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            m.values_mut().for_each(to_v3);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v3),
        _ => {}
    }
}

fn hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version, with a hash of its document.
pub fn v3_root(reg: &Registry) -> Value {
    let mut gvs = BTreeSet::new();
    for d in reg.all() {
        for v in &d.versions {
            gvs.insert(gv_path(&d.group, v));
        }
    }
    let mut paths = Map::new();
    for gv in gvs {
        let h = hash(&fingerprint(reg, &gv));
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={h}")}),
        );
    }
    json!({"paths": paths})
}

/// What a group-version's document is made from, cheaper to hash than the document (which
/// kubectl only fetches again when the hash in the index changes).
fn fingerprint(reg: &Registry, gv: &str) -> String {
    static BUILTIN_DIGEST: LazyLock<String> =
        LazyLock::new(|| hash(&Value::Object(BUILTINS.defs.clone()).to_string()));
    let mut f = BUILTIN_DIGEST.clone();
    for d in reg.all() {
        for v in d.versions.iter().filter(|v| gv_path(&d.group, v) == gv) {
            f.push_str(&format!("|{}/{}/{}", d.plural, d.kind, d.namespaced));
            if let Some(schema) = d.crd_version(v).and_then(|c| c.schema.as_ref()) {
                f.push_str(&schema.to_string());
            }
        }
    }
    f
}

/// The OpenAPI v3 document of one group-version (`api/v1`, `apis/apps/v1`): each
/// resource's PATCH operation with its group-version-kind and the `fieldValidation`
/// parameter, and the schemas of its kinds with everything they reference.
pub fn v3_doc(reg: &Registry, gv: &str) -> Option<Value> {
    let (group, version) = match gv.strip_prefix("api/") {
        Some(v) => ("", v),
        None => gv.strip_prefix("apis/")?.rsplit_once('/')?,
    };
    let mut paths = Map::new();
    let mut defs = BTreeMap::new();
    for d in reg.all() {
        if d.group != group || !d.versions.iter().any(|v| v == version) || d.is_virtual() {
            continue;
        }
        let base = if d.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("/{gv}/{}/{{name}}", d.plural)
        };
        let gvk = json!({"group": d.group, "version": version, "kind": d.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        let op = json!({
            "operationId": format!("patch{}", d.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(base, json!({"patch": op}));
        if let Some((name, schema)) = definition(&d, version) {
            defs.insert(name, schema);
        }
    }
    if paths.is_empty() {
        return None;
    }
    let mut schemas = Value::Object(with_references(defs).into_iter().collect());
    to_v3(&mut schemas);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-sandbox"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The OpenAPI v2 document: every definition (built-in and custom resources), no paths.
pub fn v2_doc(reg: &Registry) -> Value {
    let mut defs: BTreeMap<String, Value> = BUILTINS
        .defs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for d in reg.all().iter().filter(|d| d.is_crd()) {
        for v in &d.versions {
            if let Some((name, schema)) = crd_definition(d, v) {
                defs.insert(name, schema);
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-sandbox"},
        "paths": {},
        "definitions": defs,
    })
}

/// The v2 document encoded as gnostic's `openapi.v2.Document` protobuf, which is what
/// kubectl reads (it asks for nothing else). Only what a schema can say is encoded:
/// gnostic's `Schema` has no `anyOf`/`oneOf`/`not`, and the real server drops them too.
pub fn v2_protobuf(doc: &Value) -> Vec<u8> {
    let mut out = Pb::default();
    out.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Pb::default();
    info.string(1, doc["info"]["title"].as_str().unwrap_or_default());
    info.string(2, doc["info"]["version"].as_str().unwrap_or_default());
    out.message(2, &info);
    let mut defs = Pb::default();
    if let Some(m) = doc["definitions"].as_object() {
        for (name, schema) in m {
            defs.message(1, &named(name, schema_pb(schema)));
        }
    }
    out.message(9, &defs);
    out.0
}

/// A protobuf message being written.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u64, wire_type: u64) {
        self.varint((field << 3) | wire_type);
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u64, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u64, m: &Pb) {
        self.bytes(field, &m.0);
    }

    fn boolean(&mut self, field: u64, b: bool) {
        self.key(field, 0);
        self.varint(u64::from(b));
    }

    fn int64(&mut self, field: u64, i: i64) {
        self.key(field, 0);
        self.varint(i as u64);
    }

    fn double(&mut self, field: u64, d: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&d.to_le_bytes());
    }
}

/// `NamedSchema` / `NamedAny`: name 1, value 2.
fn named(name: &str, value: Pb) -> Pb {
    let mut m = Pb::default();
    m.string(1, name);
    m.message(2, &value);
    m
}

/// gnostic's `Any`: a value as YAML text (field 2).
fn any(v: &Value) -> Pb {
    let mut m = Pb::default();
    m.string(2, serde_yaml::to_string(v).unwrap_or_default().trim_end());
    m
}

/// A JSON schema as gnostic's `openapi.v2.Schema` (field numbers from its OpenAPIv2.proto).
fn schema_pb(s: &Value) -> Pb {
    let mut m = Pb::default();
    let Some(obj) = s.as_object() else {
        return m;
    };
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("$ref", Value::String(r)) => m.string(1, r),
            ("format", Value::String(x)) => m.string(2, x),
            ("title", Value::String(x)) => m.string(3, x),
            ("description", Value::String(x)) => m.string(4, x),
            ("default", x) => m.message(5, &any(x)),
            ("multipleOf", Value::Number(n)) => m.double(6, n.as_f64().unwrap_or_default()),
            ("maximum", Value::Number(n)) => m.double(7, n.as_f64().unwrap_or_default()),
            ("exclusiveMaximum", Value::Bool(b)) => m.boolean(8, *b),
            ("minimum", Value::Number(n)) => m.double(9, n.as_f64().unwrap_or_default()),
            ("exclusiveMinimum", Value::Bool(b)) => m.boolean(10, *b),
            ("maxLength", Value::Number(n)) => m.int64(11, n.as_i64().unwrap_or_default()),
            ("minLength", Value::Number(n)) => m.int64(12, n.as_i64().unwrap_or_default()),
            ("pattern", Value::String(x)) => m.string(13, x),
            ("maxItems", Value::Number(n)) => m.int64(14, n.as_i64().unwrap_or_default()),
            ("minItems", Value::Number(n)) => m.int64(15, n.as_i64().unwrap_or_default()),
            ("uniqueItems", Value::Bool(b)) => m.boolean(16, *b),
            ("maxProperties", Value::Number(n)) => m.int64(17, n.as_i64().unwrap_or_default()),
            ("minProperties", Value::Number(n)) => m.int64(18, n.as_i64().unwrap_or_default()),
            ("required", Value::Array(a)) => {
                for r in a.iter().filter_map(Value::as_str) {
                    m.string(19, r);
                }
            }
            ("enum", Value::Array(a)) => {
                for e in a {
                    m.message(20, &any(e));
                }
            }
            ("additionalProperties", x) => {
                let mut item = Pb::default();
                match x {
                    Value::Bool(b) => item.boolean(2, *b),
                    other => item.message(1, &schema_pb(other)),
                }
                m.message(21, &item);
            }
            ("type", Value::String(t)) => {
                let mut item = Pb::default();
                item.string(1, t);
                m.message(22, &item);
            }
            ("items", x) => {
                let mut item = Pb::default();
                item.message(1, &schema_pb(x));
                m.message(23, &item);
            }
            ("allOf", Value::Array(a)) => {
                for x in a {
                    m.message(24, &schema_pb(x));
                }
            }
            ("properties", Value::Object(p)) => {
                let mut props = Pb::default();
                for (name, x) in p {
                    props.message(1, &named(name, schema_pb(x)));
                }
                m.message(25, &props);
            }
            ("readOnly", Value::Bool(b)) => m.boolean(27, *b),
            ("example", x) => m.message(30, &any(x)),
            (x, v) if x.starts_with("x-") => m.message(31, &named(x, any(v))),
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_carry_their_group_version_kind_and_merge_keys() {
        let d = &BUILTINS.defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d[GVK],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let containers = &BUILTINS.defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let ports = &BUILTINS.defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let svc = &BUILTINS.defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc["x-kubernetes-patch-merge-key"], "port");
    }

    #[test]
    fn v3_wraps_references_with_siblings_in_all_of() {
        let mut v = json!({"properties": {"spec": {"$ref": "#/definitions/a.B", "description": "d"},
                                          "list": {"items": {"$ref": "#/definitions/a.C"}}}});
        to_v3(&mut v);
        assert_eq!(
            v,
            json!({"properties": {"spec": {"allOf": [{"$ref": "#/components/schemas/a.B"}], "description": "d"},
                                  "list": {"items": {"$ref": "#/components/schemas/a.C"}}}})
        );
    }

    #[test]
    fn every_reference_resolves() {
        let mut refs = Vec::new();
        for d in BUILTINS.defs.values() {
            references(d, &mut refs);
        }
        let missing: Vec<_> = refs
            .iter()
            .filter(|r| !BUILTINS.defs.contains_key(*r))
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
    }
}
