//! Every example of the API contract deserialises into the Rust types and re-serialises
//! without losing or changing a field.

use std::path::Path;

use secretsync_api::{ClusterSecretStore, ClusterSecretSync, SecretStore, SecretSync};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn roundtrip<K: DeserializeOwned + Serialize>(yaml: &str) -> (Value, Value) {
    let original: Value = serde_yaml::from_str(yaml).expect("fixture is YAML");
    let typed: K = serde_json::from_value(original.clone()).expect("fixture fits the Rust type");
    let back = serde_json::to_value(&typed).unwrap();
    (original, back)
}

fn check_fixture(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let yaml = std::fs::read_to_string(&path).unwrap();
    let kind = serde_yaml::from_str::<Value>(&yaml).unwrap()["kind"]
        .as_str()
        .unwrap()
        .to_owned();
    let (original, back) = match kind.as_str() {
        "SecretSync" => roundtrip::<SecretSync>(&yaml),
        "SecretStore" => roundtrip::<SecretStore>(&yaml),
        "ClusterSecretStore" => roundtrip::<ClusterSecretStore>(&yaml),
        other => panic!("unexpected kind {other}"),
    };
    assert_eq!(
        original,
        back,
        "{name} changed in a round trip:\n{}",
        serde_yaml::to_string(&back).unwrap()
    );
}

#[test]
fn every_fixture_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures went missing: {names:?}");
    for name in names {
        check_fixture(&name);
    }
}

#[test]
fn full_example_reads_as_documented() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secretsync-full.yaml"),
    )
    .unwrap();
    let sync: SecretSync =
        serde_json::from_value(serde_yaml::from_str::<Value>(&yaml).unwrap()).unwrap();
    assert_eq!(sync.spec.target_name("ignored"), "db");
    assert_eq!(sync.spec.history_limit(), 3);
    assert_eq!(
        sync.spec.refresh_interval(),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(
        sync.spec.rollout_timeout(),
        std::time::Duration::from_secs(600)
    );
    assert!(sync.spec.is_revoked(2));
    assert_eq!(sync.spec.data_items()[0].remote_ref.pinned_version(), None);
    let status = sync.status.unwrap();
    assert_eq!(
        status.versions[0].state,
        secretsync_api::VersionState::Active
    );
    assert_eq!(
        status.rollout.unwrap().targets[0].state,
        secretsync_api::TargetState::Complete
    );
}

#[test]
fn minimal_example_gets_documented_defaults() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secretsync-minimal.yaml"),
    )
    .unwrap();
    let sync: SecretSync =
        serde_json::from_value(serde_yaml::from_str::<Value>(&yaml).unwrap()).unwrap();
    let spec = &sync.spec;
    assert_eq!(spec.target_name("db"), "db");
    assert_eq!(spec.store_kind(), secretsync_api::StoreKind::SecretStore);
    assert_eq!(spec.spec_version(), 0);
    assert_eq!(
        spec.refresh_interval(),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(spec.history_limit(), 3);
    assert_eq!(spec.secret_type(), "Opaque");
    assert_eq!(
        spec.revoke_policy(),
        secretsync_api::RevokePolicy::AfterRollout
    );
    assert_eq!(
        spec.deletion_policy(),
        secretsync_api::DeletionPolicy::Delete
    );
    assert_eq!(spec.rollout_timeout(), std::time::Duration::from_secs(600));
}

/// The YAML examples of a page of `docs/reference/` that are objects of `kind`.
fn reference_examples(page: &str, kinds: &[&str]) -> Vec<(String, String)> {
    let path = secretsync_testkit::repo_root()
        .join("docs/reference")
        .join(page);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is part of the repository: {e}", path.display()));
    text.split("```yaml")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_owned())
        .filter_map(|block| {
            let kind = serde_yaml::from_str::<Value>(&block).ok()?["kind"]
                .as_str()?
                .to_owned();
            kinds.contains(&kind.as_str()).then_some((kind, block))
        })
        .collect()
}

/// The reference's SecretSync examples, the full one first, are what users copy: each must
/// fit the types without losing or changing a field, and pass the operator's validation.
#[test]
fn reference_secretsync_examples_round_trip() {
    let examples = reference_examples("secretsync.md", &["SecretSync"]);
    assert!(
        examples.len() >= 3,
        "docs/reference/secretsync.md lost its examples"
    );
    let (_, full) = &examples[0];
    for field in [
        "refreshPolicy",
        "decodingStrategy",
        "rewrite",
        "template",
        "windows",
        "respectWindowsOnRevoke",
        "pinVersion",
        "revokedVersions",
        "deletionPolicy",
    ] {
        assert!(full.contains(field), "the full example lacks {field}");
    }
    for (_, block) in &examples {
        let (original, back) = roundtrip::<SecretSync>(block);
        let mut lost = Vec::new();
        differences("", &original, &back, &mut lost);
        assert!(
            lost.is_empty(),
            "docs/reference/secretsync.md: the types lose {lost:?} of\n{block}"
        );
        let sync: SecretSync = serde_json::from_value(original).unwrap();
        if let Err(problems) = secretsync_api::validate::validate_secret_sync(&sync) {
            panic!("docs/reference/secretsync.md: an invalid example ({problems:?}):\n{block}");
        }
    }
}

/// The same for the stores' examples, each validated for its own scope.
#[test]
fn reference_store_examples_round_trip() {
    use secretsync_api::validate::{StoreScope, validate_store};
    let examples = reference_examples("stores.md", &["SecretStore", "ClusterSecretStore"]);
    assert!(
        examples.len() >= 5,
        "docs/reference/stores.md lost its examples"
    );
    for (kind, block) in &examples {
        let (original, back, spec, scope) = if kind == "SecretStore" {
            let (original, back) = roundtrip::<SecretStore>(block);
            let store: SecretStore = serde_json::from_value(original.clone()).unwrap();
            (original, back, store.spec, StoreScope::Namespaced)
        } else {
            let (original, back) = roundtrip::<ClusterSecretStore>(block);
            let store: ClusterSecretStore = serde_json::from_value(original.clone()).unwrap();
            (original, back, store.spec.store, StoreScope::Cluster)
        };
        let mut lost = Vec::new();
        differences("", &original, &back, &mut lost);
        assert!(
            lost.is_empty(),
            "docs/reference/stores.md: the types lose {lost:?} of\n{block}"
        );
        if let Err(problems) = validate_store(&spec, scope) {
            panic!("docs/reference/stores.md: an invalid {kind} example ({problems:?}):\n{block}");
        }
    }
}

/// The paths at which `back` lost or changed what `original` has.
fn differences(path: &str, original: &Value, back: &Value, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let at = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => differences(&at, value, other, out),
                    None => out.push(at),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if original != back => out.push(path.to_owned()),
        _ => {}
    }
}

#[test]
fn exactly_one_provider_and_auth() {
    let two_providers = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretStore
metadata: {name: s}
spec:
  provider:
    fake: {data: []}
    aws: {region: eu-west-1}
"#;
    let parse = |yaml: &str| {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value::<SecretStore>(value)
    };
    let err = parse(two_providers).unwrap_err().to_string();
    assert!(
        err.contains("expected a map with a single key") || err.contains("single key"),
        "{err}"
    );
    let two_auths = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretStore
metadata: {name: s}
spec:
  provider:
    vault:
      server: http://127.0.0.1:8200
      auth:
        tokenSecretRef: {name: t, key: token}
        kubernetes: {role: r, serviceAccountRef: {name: app}}
"#;
    let err = parse(two_auths).unwrap_err().to_string();
    assert!(err.contains("single key"), "{err}");
    // and one of each is fine
    parse(&two_auths.replace(
        "        kubernetes: {role: r, serviceAccountRef: {name: app}}\n",
        "",
    ))
    .unwrap();
}

#[test]
fn fake_values_never_show_in_debug() {
    let yaml = r#"{key: app/db, value: "canary-9f1c2e", version: "1"}"#;
    let entry: secretsync_api::FakeEntry =
        serde_json::from_value(serde_yaml::from_str::<Value>(yaml).unwrap()).unwrap();
    let debug = format!("{entry:?}");
    assert!(!debug.contains("canary-9f1c2e"), "{debug}");
    assert!(debug.contains("app/db"));
}

/// Every secretsync object in `examples/` fits the types and survives a round trip (the
/// e2e tests apply only some of the example directories).
#[test]
fn every_example_round_trips() {
    let examples = secretsync_testkit::repo_root().join("examples");
    let mut checked = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let original = Value::deserialize(document).unwrap();
                let back = match original["kind"].as_str() {
                    Some("SecretSync") => {
                        roundtrip::<SecretSync>(&serde_yaml::to_string(&original).unwrap()).1
                    }
                    Some("SecretStore") => {
                        roundtrip::<SecretStore>(&serde_yaml::to_string(&original).unwrap()).1
                    }
                    Some("ClusterSecretSync") => {
                        roundtrip::<ClusterSecretSync>(&serde_yaml::to_string(&original).unwrap()).1
                    }
                    Some("ClusterSecretStore") => {
                        roundtrip::<ClusterSecretStore>(&serde_yaml::to_string(&original).unwrap())
                            .1
                    }
                    _ => continue,
                };
                assert_eq!(original, back, "{} changed in a round trip", path.display());
                checked.push(path.clone());
            }
        }
    }
    for required in [
        "aws/store.yaml",
        "aws/secretsync.yaml",
        "vault-pki/secretsync.yaml",
        "azure/store.yaml",
        "azure/secretsync.yaml",
        "gcp/store.yaml",
        "gcp/secretsync.yaml",
        "cluster-sync/store.yaml",
        "cluster-sync/clustersecretsync.yaml",
    ] {
        assert!(
            checked.iter().any(|p| p.ends_with(required)),
            "examples/{required} was not checked: {checked:?}"
        );
    }
}

/// A store's change event names a remote key: the SecretSyncs that read it are the ones
/// refreshed. `data` and `dataFrom.extract` by the exact key, `dataFrom.find` by its path.
#[test]
fn reads_key_matches_what_a_spec_reads() {
    let spec = |body: &str| -> secretsync_api::SecretSyncSpec {
        serde_yaml::from_str(&format!("storeRef: {{name: s}}\n{body}")).unwrap()
    };
    let data = spec("data: [{secretKey: p, remoteRef: {key: app/db, property: password}}]");
    assert!(data.reads_key("app/db"));
    assert!(!data.reads_key("app/db2"));
    assert!(!data.reads_key("app"));
    let extract = spec("dataFrom: [{extract: {key: app/api}}]");
    assert!(extract.reads_key("app/api"));
    assert!(!extract.reads_key("app/db"));
    let find = spec("dataFrom: [{find: {path: app/}}]");
    assert!(find.reads_key("app/db"));
    assert!(find.reads_key("app/x/y"));
    assert!(!find.reads_key("apple/db"));
    assert!(!find.reads_key("other/db"));
    assert!(spec("dataFrom: [{find: {name: {regexp: db}}}]").reads_key("any/key"));
}
