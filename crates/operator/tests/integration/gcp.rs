//! The operator against Google Cloud Secret Manager — through Google's official client, at
//! a local **test double** of the REST API (`secretsync_testkit::gcp_double`), not a real
//! server: versions follow the backend, shared remote keys are read once per refresh
//! window, each failure is reported with its reason while Secrets stay intact, and values
//! never show in logs or statuses.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::gcp_double::{GcpDouble, PROJECT_ID, TEST_KEY_PEM};
use secretsync_testkit::leak::LeakScan;
use serde_json::json;

use crate::common::{Env, keyed_sync_yaml, logs, secret_data};

const ACCOUNT: &str = "secretsync@secretsync-test.iam.gserviceaccount.com";

/// A SecretStore `name` on the double, authenticated with the key JSON `key` (stored in
/// the Secret `name`).
async fn gcp_store(env: &Env, double: &GcpDouble, name: &str, key: &str) {
    env.string_secret(name, &[("key.json", key)]).await;
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"refreshInterval": "1s", "provider": {"gcpsm": {
            "projectID": PROJECT_ID,
            "endpoint": double.endpoint(),
            "auth": {"secretRef": {"secretAccessKeySecretRef": {"name": name, "key": "key.json"}}},
        }}},
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
}

async fn started(double: &GcpDouble) -> Env {
    let env = Env::start("payments").await;
    gcp_store(&env, double, "gcp", &double.service_account_key(ACCOUNT)).await;
    env
}

#[tokio::test]
async fn versions_follow_gcp_secret_manager() {
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", br#"{"password":"first","owner":{"user":"app"}}"#);
    double.add_version("db", br#"{"password":"second","owner":{"user":"app"}}"#);
    double.add_version("cert", b"\x00\x01binary\xff");
    double.add_version("config", br#"{"host":"db.internal","port":"5432"}"#);
    for (name, value, team) in [
        ("payments-api", "api-key", "payments"),
        ("payments-queue", "queue-key", "payments"),
        ("payments-ledger", "not-ours", "ledger"),
        ("orders-api", "orders-key", "payments"),
    ] {
        double.add_version(name, value.as_bytes());
        double.set_labels(name, &[("team", team), ("env", "prod")]);
    }
    let env = started(&double).await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db}
spec:
  storeRef: {name: gcp}
  refreshInterval: 1s
  data:
    - {secretKey: password, remoteRef: {key: db, property: password}}
    - {secretKey: user, remoteRef: {key: db, property: owner.user}}
    - {secretKey: cert, remoteRef: {key: cert}}
    - {secretKey: pinned, remoteRef: {key: db, property: password, version: "1"}}
  dataFrom:
    - extract: {key: config}
    - find: {name: {regexp: "^payments-"}, tags: {team: payments}}
      rewrite: {regexp: {source: "^payments-", target: ""}}
"#,
    )
    .await;
    let synced = env.wait_version("db", 1).await;
    let expected: [(&str, &[u8]); 8] = [
        ("api", b"api-key"),
        ("cert", b"\x00\x01binary\xff"),
        ("host", b"db.internal"),
        ("password", b"second"),
        ("pinned", b"first"),
        ("port", b"5432"),
        ("queue", b"queue-key"),
        ("user", b"app"),
    ];
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap()),
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    );
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["db"], "2", "latest resolved to the version read");
    assert_eq!(sources["db@1"], "1");
    assert_eq!(sources["payments-api"], "1");

    // A new version in Secret Manager becomes v2 at the next refresh; the pin stays.
    assert_eq!(
        double.add_version("db", br#"{"password":"third","owner":{"user":"app"}}"#),
        3
    );
    let synced = env.wait_version("db", 2).await;
    let v2 = secret_data(&env.secret("db-v2").await.unwrap());
    assert_eq!(v2["password"], b"third");
    assert_eq!(v2["pinned"], b"first", "a pinned version does not move");
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"second"
    );
    assert_eq!(
        synced.status.unwrap().versions[0]
            .source_versions
            .as_ref()
            .unwrap()["db"],
        "3"
    );
    env.wait_store("gcp", "True", "Valid").await;
    let store = env.api::<SecretStore>().get("gcp").await.unwrap();
    assert_eq!(store.status.unwrap().provider.as_deref(), Some("gcpsm"));
}

#[tokio::test]
async fn gcp_failures_say_why_and_keep_the_secrets() {
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", br#"{"password":"kept"}"#);
    let env = started(&double).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "gcp", "db"))
        .await;
    env.wait_version("db", 1).await;
    let kept = |secret: Secret| secret_data(&secret)["password"] == b"kept";

    // A secret that does not exist, and a version that does not.
    env.create::<SecretSync>(&keyed_sync_yaml("missing", "gcp", "nowhere"))
        .await;
    let message = env
        .wait_failure("missing", "Ready", "RemoteKeyNotFound")
        .await;
    assert!(message.contains("nowhere"), "{message}");
    env.create::<SecretSync>(
        &keyed_sync_yaml("old", "gcp", "db")
            .replace("property: password", "property: password, version: \"9\""),
    )
    .await;
    env.wait_failure("old", "Ready", "RemoteKeyNotFound").await;

    // The account loses access: refreshes fail as auth failures, db-v1 stays.
    double.deny(ACCOUNT, true);
    let message = env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    assert!(message.contains("PERMISSION_DENIED"), "{message}");
    assert!(kept(env.secret("db-v1").await.unwrap()));
    double.deny(ACCOUNT, false);
    env.wait_condition("db", "Ready", "True").await;

    // Secret Manager goes down: unavailable, the store says so too, db-v1 stays.
    double.set_down(true);
    env.wait_failure("db", "Ready", "ProviderUnavailable").await;
    env.wait_store("gcp", "False", "ProviderUnavailable").await;
    assert!(kept(env.secret("db-v1").await.unwrap()));
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);

    // Back: healthy again, still one version.
    double.set_down(false);
    env.wait_condition("db", "Ready", "True").await;
    env.wait_store("gcp", "True", "Valid").await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert!(kept(env.secret("db-v1").await.unwrap()));
}

/// The store's Ready condition proves access: a key Google does not know, and a Secret that
/// holds no key at all, each make the store not Ready, saying why.
#[tokio::test]
async fn a_gcp_store_with_a_bad_key_is_not_ready() {
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", br#"{"password":"p"}"#);
    let env = Env::start("payments").await;
    let stranger = double.service_account_key("stranger@elsewhere.iam.gserviceaccount.com");
    gcp_store(&env, &double, "unknown", &stranger).await;
    let message = env
        .wait_store("unknown", "False", "ProviderAuthFailed")
        .await;
    assert!(
        message.contains("UNAUTHENTICATED") && message.contains(&format!("{}/unknown", env.ns)),
        "{message}"
    );
    gcp_store(&env, &double, "garbage", "not a key").await;
    let message = env
        .wait_store("garbage", "False", "ProviderAuthFailed")
        .await;
    assert!(message.contains("not a service-account key"), "{message}");
    gcp_store(&env, &double, "gcp", &double.service_account_key(ACCOUNT)).await;
    env.wait_store("gcp", "True", "Valid").await;
}

/// 20 SecretSyncs over 4 secrets in one store: each refresh window costs at most one
/// `AccessSecretVersion` per secret at the double, not one per SecretSync.
#[tokio::test]
async fn shared_gcp_secrets_are_read_once_per_refresh_window() {
    const SYNCS: usize = 20;
    const KEYS: usize = 4;
    // As in the AWS test: half an interval of sharing survives a slow machine.
    const INTERVAL: Duration = Duration::from_secs(6);
    let double = GcpDouble::start(ACCOUNT).await;
    for k in 0..KEYS {
        double.add_version(
            &format!("k{k}"),
            format!(r#"{{"password":"p{k}"}}"#).as_bytes(),
        );
    }
    let env = started(&double).await;
    for i in 0..SYNCS {
        env.create::<SecretSync>(
            &keyed_sync_yaml(&format!("s{i}"), "gcp", &format!("k{}", i % KEYS))
                .replace("refreshInterval: 1s", "refreshInterval: 6s"),
        )
        .await;
    }
    for i in 0..SYNCS {
        env.wait_version(&format!("s{i}"), 1).await;
    }
    let before = double.total_accesses();
    // An observation window of two refresh intervals.
    let window = INTERVAL * 2;
    tokio::time::sleep(window).await;
    let reads = (double.total_accesses() - before) as usize;
    eprintln!("{SYNCS} SecretSyncs over {KEYS} secrets, {window:?}: {reads} reads at the double");
    assert!(reads >= KEYS, "the SecretSyncs did refresh ({reads} reads)");
    // Two windows, plus one that the observation may cut in two.
    assert!(
        reads <= KEYS * 3,
        "{reads} reads for {SYNCS} SecretSyncs over {KEYS} secrets in {window:?}"
    );
    for k in 0..KEYS {
        assert!(double.accesses(&format!("k{k}")) >= 1);
    }
    assert_eq!(
        env.version_secrets("s0").await,
        ["s0-v1"],
        "nothing changed"
    );
    assert_eq!(
        secret_data(&env.secret("s1-v1").await.unwrap())["password"],
        b"p1"
    );
}

/// A value planted in Secret Manager, and the service-account key, never show in the
/// operator's logs (debug level, the client's own events included), Events or statuses.
#[tokio::test]
async fn gcp_values_and_keys_never_appear_in_logs_or_statuses() {
    const CANARY: &str = "CANARY-gcp-3c9e-never-print-me";
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", format!(r#"{{"password":"{CANARY}"}}"#).as_bytes());
    double.add_version("raw", CANARY.as_bytes());
    let env = started(&double).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "gcp", "db"))
        .await;
    env.wait_version("db", 1).await;
    // Failures whose messages are built near the value: a missing property of it, a
    // payload that is not JSON.
    env.create::<SecretSync>(
        &keyed_sync_yaml("prop", "gcp", "db").replace("property: password", "property: nope"),
    )
    .await;
    env.wait_failure("prop", "Ready", "RemoteKeyNotFound").await;
    env.create::<SecretSync>(&keyed_sync_yaml("raw", "gcp", "raw"))
        .await;
    env.wait_failure("raw", "Ready", "RemoteKeyNotFound").await;
    // A key Secret that is not a key: its text is a canary too.
    const NOT_A_KEY: &str = "CANARY-not-a-key-5d2a-never-print-me";
    gcp_store(&env, &double, "garbage", NOT_A_KEY).await;
    env.wait_store("garbage", "False", "ProviderAuthFailed")
        .await;

    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        CANARY.as_bytes(),
        "the Secret really holds the value"
    );
    // A line from the middle of the private key.
    let key_line = TEST_KEY_PEM.lines().nth(5).unwrap();
    let mut scan = LeakScan::new([CANARY, NOT_A_KEY, key_line]);
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    scan.items("operator debug log lines", logs.lines());
    scan.cluster(&env.client).await;
    eprintln!("{}", scan.assert_clean());
}
