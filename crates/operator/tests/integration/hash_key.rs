//! The content hash is keyed (api.md guarantee 1): `hmac-sha256:` with a key the operator
//! keeps in a Secret of its own namespace, the same across restarts and replicas, so the
//! hash in annotations and status reveals nothing about short values. Versions made
//! before the hash was keyed do not rotate on upgrade.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secretsync_api::hash::{HashKey, content_hash, legacy_content_hash};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::hash_key::{self, KeySecret};
use serde_json::json;

use crate::common::{Env, sync_yaml};

fn password(value: &str) -> BTreeMap<String, Vec<u8>> {
    [("password".to_owned(), value.as_bytes().to_vec())].into()
}

async fn hash_of(env: &Env, secret: &str) -> String {
    let secret = env.secret(secret).await.expect("version exists");
    secret.metadata.annotations.unwrap()["secretsync.io/content-hash"].clone()
}

/// Waits until the operator has read the store at `generation` (a store edit forces a
/// read), then returns the SecretSync.
async fn wait_read_through(env: &Env, generation: i64) -> SecretSync {
    env.wait_for::<SecretSync, _>("db", "a read through the edited store", |s| {
        (s.status.as_ref()?.store_generation == Some(generation)).then(|| s.clone())
    })
    .await
}

async fn set_password(env: &Env, value: &str) -> i64 {
    env.set_fake_data(
        "vault",
        &[("app/db", &format!(r#"{{"password":"{value}"}}"#), "1")],
    )
    .await;
    let store = env.api::<SecretStore>().get("vault").await.unwrap();
    store.metadata.generation.unwrap()
}

#[tokio::test]
async fn the_content_hash_is_keyed_by_the_operators_secret_and_survives_a_restart() {
    let mut env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"a"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    let synced = env.wait_version("db", 1).await;
    let v1 = hash_of(&env, "db-v1").await;
    assert_eq!(
        synced.status.unwrap().versions[0].content_hash.as_deref(),
        Some(v1.as_str())
    );

    // The key is the one in the operator's Secret, and the hash is not the unkeyed one.
    let at = KeySecret::default();
    let key_secret = Api::<Secret>::namespaced(env.client.clone(), &at.namespace)
        .get(&at.name)
        .await
        .expect("the key Secret was made");
    assert_eq!(key_secret.immutable, Some(true));
    let key_bytes = &key_secret.data.unwrap()[hash_key::DATA_KEY].0;
    assert_eq!(key_bytes.len(), 32);
    let key = HashKey::from_bytes(key_bytes).unwrap();
    assert_eq!(v1, content_hash(&key, "Opaque", &password("a")));
    assert!(v1.starts_with("hmac-sha256:"), "{v1}");
    let unkeyed = legacy_content_hash("Opaque", &password("a"));
    assert_ne!(v1.rsplit(':').next(), unkeyed.rsplit(':').next());

    // A restart reads the same key: a forced read of unchanged content makes nothing...
    env.stop_operator().await;
    env.start_operator();
    let generation = set_password(&env, "a").await;
    let read = wait_read_through(&env, generation).await;
    assert_eq!(read.status.unwrap().current_version, Some(1));
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    // ...and the same content hashes the same as before the restart.
    set_password(&env, "b").await;
    env.wait_version("db", 2).await;
    set_password(&env, "a").await;
    env.wait_version("db", 3).await;
    assert_eq!(hash_of(&env, "db-v3").await, v1);
    assert_ne!(hash_of(&env, "db-v2").await, v1);
}

#[tokio::test]
async fn replicas_racing_to_make_the_key_share_one() {
    let env = Env::without_operator("payments").await;
    let at = KeySecret {
        namespace: "payments".into(),
        name: "raced".into(),
    };
    let (a, b, c) = tokio::join!(
        hash_key::load_or_create(&env.client, &at),
        hash_key::load_or_create(&env.client, &at),
        hash_key::load_or_create(&env.client, &at),
    );
    let hash = |key: HashKey| content_hash(&key, "Opaque", &password("x"));
    let a = hash(a.unwrap());
    assert_eq!(a, hash(b.unwrap()));
    assert_eq!(a, hash(c.unwrap()));
    // And a later start reads it back.
    assert_eq!(
        a,
        hash(hash_key::load_or_create(&env.client, &at).await.unwrap())
    );
}

#[tokio::test]
async fn a_key_secret_without_a_usable_key_stops_the_operator_with_a_clear_error() {
    let env = Env::without_operator("payments").await;
    let at = KeySecret {
        namespace: "payments".into(),
        name: "short".into(),
    };
    env.string_secret("short", &[("key", "too-short")]).await;
    let err = hash_key::load_or_create(&env.client, &at)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("payments/short"), "{err}");
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("too-short"), "{err}");
}

/// An operator upgraded from the unkeyed hash: the newest version carries `sha256:`; its
/// unchanged content must not become a new version, while changed content still does (with
/// the keyed hash).
#[tokio::test]
async fn versions_with_the_legacy_hash_do_not_rotate_on_upgrade() {
    let env = Env::without_operator("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"a"}"#, "1")])
        .await;
    let sync: SecretSync = env.create(&sync_yaml("db", "vault", "")).await;
    let legacy = legacy_content_hash("Opaque", &password("a"));
    // db-v1 as the previous release wrote it.
    let v1: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "db-v1",
            "labels": {
                "app.kubernetes.io/managed-by": "secretsync",
                "secretsync.io/sync": "db",
                "secretsync.io/version": "1",
            },
            "annotations": {
                "secretsync.io/content-hash": legacy,
                "secretsync.io/spec-version": "0",
            },
            "ownerReferences": [{
                "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync", "name": "db",
                "uid": sync.metadata.uid.clone().unwrap(), "controller": true,
            }],
        },
        "immutable": true,
        "data": {"password": "YQ=="},
    }))
    .unwrap();
    env.api::<Secret>()
        .create(&PostParams::default(), &v1)
        .await
        .unwrap();

    let mut env = env.with_operator();
    // Ready only after the first pass has read the backend and compared.
    env.wait_condition("db", "Ready", "True").await;
    let status = env.status("db").await;
    assert!(status.last_refresh_time.is_some(), "the backend was read");
    assert_eq!(status.current_version, Some(1), "{status:#?}");
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert_eq!(
        status.versions[0].content_hash.as_deref(),
        Some(legacy.as_str())
    );

    // Still so after a restart and a forced read...
    env.stop_operator().await;
    env.start_operator();
    let generation = set_password(&env, "a").await;
    wait_read_through(&env, generation).await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    // ...and new content makes a version with the keyed hash.
    set_password(&env, "b").await;
    env.wait_version("db", 2).await;
    assert!(hash_of(&env, "db-v2").await.starts_with("hmac-sha256:"));
}
