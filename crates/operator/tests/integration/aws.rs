//! The operator against a real AWS Secrets Manager emulator (moto): versions follow the
//! backend, shared remote keys are read once per refresh window however many SecretSyncs
//! use them, and each failure is reported with its reason while Secrets stay intact.

use std::time::Duration;

use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::moto::Moto;
use serde_json::{Value, json};

use crate::common::{Env, secret_data};

/// Static credentials and a SecretStore `aws` pointing at `moto`.
pub async fn aws_store(env: &Env, moto: &Moto, key_id: &str, secret_key: &str) {
    aws_store_with(
        env,
        moto,
        key_id,
        secret_key,
        json!({"refreshInterval": "1s"}),
    )
    .await;
}

/// Static credentials and a SecretStore `aws` pointing at `moto`, with the top-level spec
/// fields in `extra` (`refreshInterval`, `events`, …).
pub async fn aws_store_with(env: &Env, moto: &Moto, key_id: &str, secret_key: &str, extra: Value) {
    env.string_secret("aws", &[("id", key_id), ("secret", secret_key)])
        .await;
    let mut spec = json!({"provider": {"aws": {
        "region": moto.region(),
        "endpoint": moto.endpoint(),
        "auth": {"secretRef": {
            "accessKeyIdSecretRef": {"name": "aws", "key": "id"},
            "secretAccessKeySecretRef": {"name": "aws", "key": "secret"},
        }},
    }}});
    for (field, value) in extra.as_object().into_iter().flatten() {
        spec[field] = value.clone();
    }
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "aws"}, "spec": spec,
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
}

#[tokio::test]
async fn versions_follow_aws_secrets_manager() {
    let Some(moto) = Moto::start() else { return };
    let first = moto.create_secret(
        "app/db",
        r#"{"password":"first","owner":{"user":"app"}}"#,
        &[],
    );
    let db = moto.put_secret_value("app/db", r#"{"password":"second","owner":{"user":"app"}}"#);
    moto.create_binary_secret("app/cert", b"\x00\x01binary\xff");
    moto.create_secret("app/config", r#"{"host":"db.internal","port":"5432"}"#, &[]);
    moto.create_secret("app/payments/api", "api-key", &[("team", "payments")]);
    moto.create_secret("app/payments/queue", "queue-key", &[("team", "payments")]);
    moto.create_secret("app/payments/other", "not-tagged", &[]);
    let env = Env::start("payments").await;
    aws_store(&env, &moto, "AKIDEXAMPLE", "any").await;
    env.create::<SecretSync>(
        &r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db}
spec:
  storeRef: {name: aws}
  refreshInterval: 1s
  data:
    - {secretKey: password, remoteRef: {key: app/db, property: password}}
    - {secretKey: user, remoteRef: {key: app/db, property: owner.user}}
    - {secretKey: cert, remoteRef: {key: app/cert}}
    - {secretKey: previous, remoteRef: {key: app/db, property: password, version: AWSPREVIOUS}}
    - {secretKey: pinned, remoteRef: {key: app/db, property: password, version: VERSION_ID}}
  dataFrom:
    - extract: {key: app/config}
    - find: {name: {regexp: "^app/payments/"}, tags: {team: payments}}
      rewrite: {regexp: {source: "^app/payments/", target: ""}}
"#
        .replace("VERSION_ID", &first),
    )
    .await;
    let synced = env.wait_version("db", 1).await;
    let v1 = secret_data(&env.secret("db-v1").await.unwrap());
    let expected: [(&str, &[u8]); 9] = [
        ("api", b"api-key"),
        ("cert", b"\x00\x01binary\xff"),
        ("host", b"db.internal"),
        ("password", b"second"),
        ("pinned", b"first"),
        ("port", b"5432"),
        ("previous", b"first"),
        ("queue", b"queue-key"),
        ("user", b"app"),
    ];
    assert_eq!(
        v1,
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    );
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["app/db"], db);
    assert_eq!(sources["app/db@AWSPREVIOUS"], first);
    assert_eq!(sources[&format!("app/db@{first}")], first);
    assert!(sources.contains_key("app/payments/api") && sources.contains_key("app/cert"));

    // A new value in AWS becomes v2 at the next refresh, with the new VersionId.
    let second = moto.put_secret_value("app/db", r#"{"password":"third","owner":{"user":"app"}}"#);
    let synced = env.wait_version("db", 2).await;
    let v2 = secret_data(&env.secret("db-v2").await.unwrap());
    assert_eq!(v2["password"], b"third");
    assert_eq!(v2["previous"], b"second", "AWSPREVIOUS moved too");
    assert_eq!(v2["pinned"], b"first", "a pinned VersionId does not move");
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"second"
    );
    assert_eq!(
        synced.status.unwrap().versions[0]
            .source_versions
            .as_ref()
            .unwrap()["app/db"],
        second
    );
    // The store says it works.
    env.wait_store("aws", "True", "Valid").await;
    let store = env.api::<SecretStore>().get("aws").await.unwrap();
    assert_eq!(store.status.unwrap().provider.as_deref(), Some("aws"));
}

/// 100 SecretSyncs over 5 remote keys in one store: each refresh window costs at most one
/// read per key at moto, not one per SecretSync.
#[tokio::test]
async fn shared_remote_keys_are_read_once_per_refresh_window() {
    const SYNCS: usize = 100;
    const KEYS: usize = 5;
    // Values read for one SecretSync serve the others for half an interval: long enough
    // that a loaded CI machine finishing one window's passes late still shares the read.
    const INTERVAL: Duration = Duration::from_secs(6);
    let Some(moto) = Moto::start() else { return };
    for k in 0..KEYS {
        moto.create_secret(
            &format!("app/k{k}"),
            &format!(r#"{{"password":"p{k}"}}"#),
            &[],
        );
    }
    let env = Env::start("payments").await;
    aws_store(&env, &moto, "AKIDEXAMPLE", "any").await;
    env.many_syncs(SYNCS, "aws", |i| i % KEYS, "  refreshInterval: 6s")
        .await;
    moto.record();
    let refreshes_before = env.operator().metrics.backend_requests();
    // An observation window of two refresh intervals.
    let window = INTERVAL * 2;
    tokio::time::sleep(window).await;
    let reads = moto.recorded("GetSecretValue") + moto.recorded("BatchGetSecretValue");
    let refreshed = env.operator().metrics.backend_requests() - refreshes_before;
    eprintln!(
        "{SYNCS} SecretSyncs over {KEYS} keys, {window:?}: {reads} reads at moto, {refreshed} counted by the operator"
    );
    assert!(reads >= KEYS, "the SecretSyncs did refresh ({reads} reads)");
    // Two windows, plus one that the observation may cut in two.
    assert!(
        reads <= KEYS * 3,
        "{reads} backend reads for {SYNCS} SecretSyncs over {KEYS} keys in {window:?} \
         ({refreshed} counted by the operator)"
    );
    assert_eq!(
        env.version_secrets("s0").await,
        ["s0-v1"],
        "nothing changed"
    );
}

#[tokio::test]
async fn aws_failures_say_why_and_keep_the_secrets() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    moto.create_secret("app/db", r#"{"password":"kept"}"#, &[]);
    let env = Env::start("payments").await;
    aws_store(&env, &moto, "AKIDEXAMPLE", "any").await;
    let sync = |name: &str, key: &str| {
        format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: aws}}
  refreshInterval: 1s
  data: [{{secretKey: password, remoteRef: {{key: {key}, property: password}}}}]
"#
        )
    };
    env.create::<SecretSync>(&sync("db", "app/db")).await;
    env.wait_version("db", 1).await;

    // A key that does not exist.
    env.create::<SecretSync>(&sync("missing", "app/nowhere"))
        .await;
    env.wait_failure("missing", "Ready", "RemoteKeyNotFound")
        .await;

    // The server goes away: the refresh fails as unavailable, db-v1 stays.
    moto.stop();
    env.wait_failure("db", "Ready", "ProviderUnavailable").await;
    env.wait_store("aws", "False", "ProviderUnavailable").await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"kept"
    );
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);

    // Back, with authentication on: the store's keys are refused.
    moto.start_again();
    moto.create_secret("app/db", r#"{"password":"kept"}"#, &[]);
    let _valid = moto.enable_auth();
    env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    env.wait_store("aws", "False", "ProviderAuthFailed").await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"kept"
    );
}
