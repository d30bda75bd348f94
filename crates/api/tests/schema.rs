//! The generated CRDs: committed files match the Rust types, schemas are structural, and the
//! CEL rules say what the contract says.

use kube::CustomResourceExt;
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync};
use serde_json::{Value, json};

/// Golden test: `crds/` is exactly what the generator prints. When this fails, run
/// `cargo run -p secretsync-api --bin crdgen` and review the diff.
#[test]
fn committed_crds_match_the_types() {
    let dir = secretsync_testkit::repo_root().join("crds");
    let crds = secretsync_api::crds();
    assert_eq!(crds.len(), 4);
    for crd in crds {
        let path = dir.join(secretsync_api::crd_file_name(&crd));
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == secretsync_api::crd_yaml(&crd),
            "{} drifted from the Rust types; run `cargo run -p secretsync-api --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn the_cluster_secret_sync_is_cluster_scoped_and_its_names_are_its_own() {
    let css = secretsync_api::ClusterSecretSync::crd();
    assert_eq!(
        css.metadata.name.as_deref(),
        Some("clustersecretsyncs.secretsync.io")
    );
    assert_eq!(css.spec.scope, "Cluster");
    assert_eq!(css.spec.names.short_names, Some(vec!["cssync".to_string()]));
    let version = &css.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(
        columns,
        ["STORE", "SELECTED", "SYNCED", "FAILED", "READY", "AGE"]
    );
    // Every singular, plural and short name resolves to one kind.
    let mut names = std::collections::BTreeSet::new();
    for crd in secretsync_api::crds() {
        let n = &crd.spec.names;
        for name in [Some(n.plural.clone()), n.singular.clone()]
            .into_iter()
            .flatten()
            .chain(n.short_names.clone().unwrap_or_default())
        {
            assert!(names.insert(name.clone()), "{name} names two kinds");
        }
    }
}

#[test]
fn names_scope_and_columns() {
    let sync = SecretSync::crd();
    assert_eq!(
        sync.metadata.name.as_deref(),
        Some("secretsyncs.secretsync.io")
    );
    assert_eq!(sync.spec.scope, "Namespaced");
    assert_eq!(sync.spec.names.short_names, Some(vec!["ssync".to_string()]));
    assert_eq!(
        sync.spec.names.categories,
        Some(vec!["secretsync-all".to_string()]),
        "a category named like a kind would shadow `kubectl get secretsync NAME`"
    );
    let version = &sync.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(columns, ["STORE", "VERSION", "ACTIVE", "READY", "AGE"]);

    assert_eq!(ClusterSecretStore::crd().spec.scope, "Cluster");
    assert_eq!(SecretStore::crd().spec.scope, "Namespaced");
}

/// Walks a schema the way the API server's structural-schema check does: every node has a
/// type (or is int-or-string / preserve-unknown-fields), objects declare their properties or
/// additionalProperties, and nothing outside the allowed keywords appears.
fn assert_structural(node: &Value, path: &str) {
    const ALLOWED: &[&str] = &[
        "type",
        "title",
        "description",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "format",
        "nullable",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "default",
        "oneOf",
        "anyOf",
        "x-kubernetes-validations",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "exclusiveMinimum",
        "exclusiveMaximum",
    ];
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    for key in obj.keys() {
        assert!(
            ALLOWED.contains(&key.as_str()),
            "{path}: keyword {key} not allowed"
        );
    }
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    assert!(typed, "{path}: no type");
    for branch in ["oneOf", "anyOf"] {
        for alt in obj
            .get(branch)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // value validations only: no types or properties inside the branches
            for key in alt.as_object().unwrap().keys() {
                assert!(key == "required", "{path}.{branch}: {key} inside a branch");
            }
        }
    }
    if obj.get("type") == Some(&json!("object")) {
        let props = obj.get("properties").and_then(Value::as_object);
        assert!(
            props.is_some()
                || obj.contains_key("additionalProperties")
                || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)),
            "{path}: object without properties"
        );
        for (name, child) in props.into_iter().flatten() {
            assert_structural(child, &format!("{path}.{name}"));
        }
        if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
            assert_structural(ap, &format!("{path}[*]"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
}

#[test]
fn schemas_are_structural() {
    for crd in secretsync_api::crds() {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref();
        let schema = serde_json::to_value(schema.unwrap()).unwrap();
        assert_structural(&schema, &crd.spec.names.kind);
    }
}

fn sync_json(spec: Value) -> SecretSync {
    serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": "db", "namespace": "payments"},
        "spec": spec,
    }))
    .unwrap()
}

fn base_spec() -> Value {
    json!({"storeRef": {"name": "vault"}, "version": 2,
           "data": [{"secretKey": "password", "remoteRef": {"key": "app/db"}}]})
}

#[test]
fn cel_rejects_decreasing_version() {
    let old = sync_json(base_spec());
    let mut lower = base_spec();
    lower["version"] = json!(1);
    let err = kube::core::cel::validate_cel_update(&sync_json(lower), &old).unwrap_err();
    assert!(
        err.to_string().contains("spec.version must never decrease"),
        "{err}"
    );
    let mut higher = base_spec();
    higher["version"] = json!(3);
    kube::core::cel::validate_cel_update(&sync_json(higher), &old).unwrap();
    kube::core::cel::validate_cel_update(&old, &old).unwrap();
}

#[test]
fn cel_rejects_pin_to_revoked_and_missing_data() {
    let mut pinned_revoked = base_spec();
    pinned_revoked["pinVersion"] = json!(2);
    pinned_revoked["revokedVersions"] = json!([2]);
    let err = kube::core::cel::validate_cel(&sync_json(pinned_revoked)).unwrap_err();
    assert!(
        err.to_string()
            .contains("pinVersion must not name a revoked version"),
        "{err}"
    );

    let no_data = json!({"storeRef": {"name": "vault"}});
    let err = kube::core::cel::validate_cel(&sync_json(no_data)).unwrap_err();
    assert!(
        err.to_string().contains("at least one of data or dataFrom"),
        "{err}"
    );

    kube::core::cel::validate_cel(&sync_json(base_spec())).unwrap();
}

#[test]
fn cel_wants_exactly_one_of_extract_find_pki_and_dynamic() {
    let with_data_from = |data_from: Value| {
        let mut spec = base_spec();
        spec["dataFrom"] = data_from;
        sync_json(spec)
    };
    let cases = [
        (
            json!([{"extract": {"key": "a"}, "find": {"path": "app"}}]),
            "exactly one of extract, find, pki or dynamic",
        ),
        (
            json!([{"rewrite": {"regexp": {"source": "a", "target": "b"}}}]),
            "exactly one of extract, find, pki or dynamic",
        ),
        (
            json!([{"extract": {"key": "a"}, "rewrite": {"regexp": {"source": "a", "target": "b"}}}]),
            "rewrite applies to find only",
        ),
        (json!([{"find": {}}]), "at least one of name, tags or path"),
        (
            json!([{"dynamic": {"path": "database/creds/app"}, "extract": {"key": "a"}}]),
            "exactly one of extract, find, pki or dynamic",
        ),
        (
            json!([{"pki": {"role": "app", "commonName": "a.example"}, "extract": {"key": "a"}}]),
            "exactly one of extract, find, pki or dynamic",
        ),
    ];
    for (data_from, want) in cases {
        let err = kube::core::cel::validate_cel(&with_data_from(data_from.clone())).unwrap_err();
        assert!(err.to_string().contains(want), "{data_from}: {err}");
    }
    kube::core::cel::validate_cel(&with_data_from(json!([
        {"extract": {"key": "app/config"}},
        {"find": {"name": {"regexp": "^app/"}, "tags": {"team": "payments"}},
         "rewrite": {"regexp": {"source": "^app/(.*)", "target": "$1"}}},
    ])))
    .unwrap();
    kube::core::cel::validate_cel(&with_data_from(json!([
        {"dynamic": {"path": "database/creds/app", "renewalPercent": 50}},
    ])))
    .unwrap();
    kube::core::cel::validate_cel(&with_data_from(json!([
        {"pki": {"role": "app", "commonName": "a.example", "ttl": "30s"}},
    ])))
    .unwrap();
}

#[test]
fn cel_refuses_conditions_on_a_namespaced_store() {
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "s", "namespace": "payments"},
        "spec": {"provider": {"fake": {"data": []}}, "conditions": [{"namespaces": ["a"]}]},
    }))
    .unwrap();
    let err = kube::core::cel::validate_cel(&store).unwrap_err();
    assert!(
        err.to_string()
            .contains("only allowed on a ClusterSecretStore"),
        "{err}"
    );
}
