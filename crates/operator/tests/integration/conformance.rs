//! **The provider conformance kit**: one suite that every backend passes, parameterised by
//! a [`Backend`] fixture (seed a value, make a new version, deny, take down and up, count
//! reads, write the store). Each backend's file runs it with [`conformance_suite!`], which
//! makes one `#[tokio::test]` per case (`conjur::conformance_values_and_versions`, …), and
//! keeps only the tests that are about that backend alone.
//!
//! | case | what a user sees |
//! |---|---|
//! | `values_and_versions` | latest and pinned versions, `property` (nested too), whole and binary values, `dataFrom.extract`, `dataFrom.find` by name (and tags, where the backend has them) with `rewrite`; a change in the backend makes the next version while the pin stays; the store `Ready` with its provider's name |
//! | `failures_keep_the_secrets` | a missing key or version is `RemoteKeyNotFound` naming the key; denied is `ProviderAuthFailed`; down is `ProviderUnavailable` (the store's too); the Secrets unchanged throughout and no new version; healthy again after |
//! | `shared_reads` | SecretSyncs sharing keys cost at most one read per key per refresh window |
//! | `credentials_replaced` | stale credentials are `ProviderAuthFailed` (the store's too); writing the right ones into the Secret heals it without an edit of the store |
//! | `values_never_leak` | a canary value and the credentials never show in the operator's debug logs, Events or statuses |

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::Config;
use secretsync_testkit::leak::LeakScan;
use serde_json::{Map, Value, json};

use crate::common::{DEADLINE, Env, keyed_sync_yaml, logs, secret_data, wait_until};

/// A backend the kit runs against, with the hooks its cases need.
pub(crate) trait Backend {
    /// The provider's name in a store's status.
    const PROVIDER: &'static str;
    /// Whether `dataFrom.find.tags` selects (tags, labels, annotations).
    const TAGS: bool;
    /// Whether values may be any bytes (not only JSON objects of fields).
    const BINARY: bool = true;

    /// The remote key for the logical name `name` (lowercase letters, digits, `-`).
    fn key(&self, name: &str) -> String;
    /// Stores `value` as a new version of `key` with `tags`; the version id a pin names.
    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String;
    /// What a whole-value read of a value stored as `value` gives.
    fn whole(&self, value: &[u8]) -> Vec<u8> {
        value.to_vec()
    }
    /// A version id that `key` does not have.
    fn missing_version(&self) -> String {
        "9".to_owned()
    }
    /// The entries of the credentials Secret: the backend's current ones, or stale ones it
    /// refuses.
    fn credentials(&self, stale: bool) -> Vec<(String, String)>;
    /// The store's `spec.provider`, reading credentials from the Secret `secret`.
    fn provider(&self, secret: &str) -> Value;
    /// Refuses (or allows again) reads by the store's identity, which stays logged in.
    async fn deny(&mut self, denied: bool);
    async fn go_down(&mut self);
    async fn come_back(&mut self);
    /// Values read so far.
    fn reads(&self) -> u64;
    /// Credential text that must never show anywhere: by default every credential value,
    /// current and stale, of 12 characters or more.
    fn canaries(&self) -> Vec<String> {
        [false, true]
            .into_iter()
            .flat_map(|stale| self.credentials(stale))
            .map(|(_, v)| v)
            .filter(|v| v.len() >= 12)
            .collect()
    }
}

/// The operator's configuration for the kit: retries of refused credentials back off up to
/// 2 s, so a fixed Secret is picked up within a test's deadline.
pub(crate) async fn env() -> Env {
    Env::without_operator("payments")
        .await
        .with_operator_config(Config {
            max_backoff: Duration::from_secs(2),
            ..Config::default()
        })
}

/// The cluster's ServiceAccount-token signing keys, as kube-apiserver publishes them (what a
/// backend's JWT auth is configured with), and a ServiceAccount `name` in the test's
/// namespace with the `sub` its tokens carry.
pub(crate) async fn service_account(env: &Env, name: &str) -> (Value, String) {
    env.create::<k8s_openapi::api::core::v1::ServiceAccount>(&format!(
        r#"{{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {{"name": "{name}"}}}}"#
    ))
    .await;
    let jwks = env
        .client
        .request::<Value>(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .expect("the API server's JWKS");
    (jwks, format!("system:serviceaccount:{}:{name}", env.ns))
}

/// The credentials Secret `name` and the SecretStore `name`, refreshed every second.
pub(crate) async fn create_store<B: Backend>(env: &Env, backend: &B, name: &str, stale: bool) {
    let entries = backend.credentials(stale);
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.string_secret(name, &entries).await;
    store(env, name, backend.provider(name)).await;
}

/// The SecretStore `name` with `spec.provider` `provider`, refreshed every second.
pub(crate) async fn store(env: &Env, name: &str, provider: Value) {
    env.create::<SecretStore>(
        &json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"refreshInterval": "1s", "provider": provider},
        })
        .to_string(),
    )
    .await;
}

/// The SecretSync `db` reading `key` through `store` makes `db-v1` with `password`, and the
/// store is Ready: what a store logging in some other way than the kit's must show.
pub(crate) async fn syncs_password(env: &Env, store: &str, key: &str, password: &[u8]) {
    env.create::<SecretSync>(&keyed_sync_yaml("db", store, key))
        .await;
    env.wait_version("db", 1).await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        password
    );
    env.wait_store(store, "True", "Valid").await;
}

fn expected(pairs: &[(&str, Vec<u8>)]) -> std::collections::BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The `dataFrom.find` items: `(name, value, team)`.
const FOUND: [(&str, &str, &str); 4] = [
    ("payments-api", "api-key", "payments"),
    ("payments-queue", "queue-key", "payments"),
    ("payments-ledger", "ledger-key", "ledger"),
    ("orders-api", "orders-key", "payments"),
];

pub(crate) async fn values_and_versions<B: Backend>(b: &mut B) {
    let db = b.key("db");
    let json = |password: &str| format!(r#"{{"password":"{password}","owner":{{"user":"app"}}}}"#);
    let first = b.put(&db, json("first").as_bytes(), &[]).await;
    b.put(&db, json("second").as_bytes(), &[]).await;
    let binary: &[u8] = b"\x00\x01binary\xff";
    if B::BINARY {
        b.put(&b.key("cert"), binary, &[]).await;
    }
    b.put(
        &b.key("config"),
        br#"{"host":"db.internal","port":"5432"}"#,
        &[],
    )
    .await;
    for (name, value, team) in FOUND {
        b.put(&b.key(name), value.as_bytes(), &[("team", team)])
            .await;
    }
    let env = env().await;
    create_store(&env, b, "store", false).await;
    let prefix = regex_escape(&b.key("payments-"));
    let tags = if B::TAGS {
        ", tags: {team: payments}"
    } else {
        ""
    };
    let cert = if B::BINARY {
        format!(
            "    - {{secretKey: cert, remoteRef: {{key: {}}}}}\n",
            b.key("cert")
        )
    } else {
        String::new()
    };
    env.create::<SecretSync>(&format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: store}}
  refreshInterval: 1s
  data:
    - {{secretKey: password, remoteRef: {{key: {db}, property: password}}}}
    - {{secretKey: user, remoteRef: {{key: {db}, property: owner.user}}}}
    - {{secretKey: pinned, remoteRef: {{key: {db}, property: password, version: "{first}"}}}}
{cert}  dataFrom:
    - extract: {{key: {config}}}
    - find: {{name: {{regexp: "^{prefix}"}}{tags}}}
      rewrite: {{regexp: {{source: "^{prefix}", target: ""}}}}
"#,
        config = b.key("config"),
    ))
    .await;
    env.wait_version("db", 1).await;
    let mut want = vec![
        ("api", b.whole(b"api-key")),
        ("host", b"db.internal".to_vec()),
        ("password", b"second".to_vec()),
        ("pinned", b"first".to_vec()),
        ("port", b"5432".to_vec()),
        ("queue", b.whole(b"queue-key")),
        ("user", b"app".to_vec()),
    ];
    if B::BINARY {
        want.push(("cert", binary.to_vec()));
    }
    if !B::TAGS {
        want.push(("ledger", b.whole(b"ledger-key")));
    }
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap()),
        expected(&want)
    );

    // A new version in the backend becomes v2 at the next refresh; the pin stays.
    b.put(&db, json("third").as_bytes(), &[]).await;
    env.wait_version("db", 2).await;
    let v2 = secret_data(&env.secret("db-v2").await.unwrap());
    assert_eq!(v2["password"], b"third");
    assert_eq!(v2["pinned"], b"first", "a pinned version does not move");
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"second",
        "a version's Secret never changes"
    );
    env.wait_store("store", "True", "Valid").await;
    let store = env.api::<SecretStore>().get("store").await.unwrap();
    assert_eq!(store.status.unwrap().provider.as_deref(), Some(B::PROVIDER));
}

/// `s` with the regular expression's special characters escaped.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = r"\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

pub(crate) async fn failures_keep_the_secrets<B: Backend>(b: &mut B) {
    let db = b.key("db");
    b.put(&db, br#"{"password":"kept"}"#, &[]).await;
    let env = env().await;
    create_store(&env, b, "store", false).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "store", &db))
        .await;
    env.wait_version("db", 1).await;
    let unchanged = || async {
        assert_eq!(env.version_secrets("db").await, ["db-v1"], "no new version");
        assert_eq!(
            secret_data(&env.secret("db-v1").await.unwrap())["password"],
            b"kept"
        );
    };

    // A key, and a version, that do not exist.
    let nowhere = b.key("nowhere");
    env.create::<SecretSync>(&keyed_sync_yaml("missing", "store", &nowhere))
        .await;
    let message = env
        .wait_failure("missing", "Ready", "RemoteKeyNotFound")
        .await;
    assert!(message.contains(&nowhere), "{message}");
    let version = format!("property: password, version: \"{}\"", b.missing_version());
    env.create::<SecretSync>(
        &keyed_sync_yaml("old", "store", &db).replace("property: password", &version),
    )
    .await;
    env.wait_failure("old", "Ready", "RemoteKeyNotFound").await;

    // Denied: an auth failure, and the Secrets stay.
    b.deny(true).await;
    env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    unchanged().await;
    b.deny(false).await;
    env.wait_condition("db", "Ready", "True").await;

    // Down: unavailable, the store says so too, the Secrets stay.
    b.go_down().await;
    env.wait_failure("db", "Ready", "ProviderUnavailable").await;
    env.wait_store("store", "False", "ProviderUnavailable")
        .await;
    unchanged().await;
    b.come_back().await;
    env.wait_condition("db", "Ready", "True").await;
    env.wait_store("store", "True", "Valid").await;
    unchanged().await;
}

/// 20 SecretSyncs over 4 keys: each refresh window costs at most one read per key.
pub(crate) async fn shared_reads<B: Backend>(b: &mut B) {
    const SYNCS: usize = 20;
    const KEYS: usize = 4;
    // Half an interval of sharing survives a slow machine.
    const INTERVAL: Duration = Duration::from_secs(6);
    let mut keys = Vec::new();
    for k in 0..KEYS {
        let key = b.key(&format!("k{k}"));
        b.put(&key, format!(r#"{{"password":"p{k}"}}"#).as_bytes(), &[])
            .await;
        keys.push(key);
    }
    let env = env().await;
    create_store(&env, b, "store", false).await;
    for i in 0..SYNCS {
        env.create::<SecretSync>(
            &keyed_sync_yaml(&format!("s{i}"), "store", &keys[i % KEYS])
                .replace("refreshInterval: 1s", "refreshInterval: 6s"),
        )
        .await;
    }
    for i in 0..SYNCS {
        env.wait_version(&format!("s{i}"), 1).await;
    }
    let before = b.reads();
    // An observation window of two refresh intervals (a measurement: nothing may change).
    let window = INTERVAL * 2;
    tokio::time::sleep(window).await;
    let reads = b.reads() - before;
    eprintln!("{SYNCS} SecretSyncs over {KEYS} keys, {window:?}: {reads} reads");
    assert!(
        reads >= KEYS as u64,
        "the SecretSyncs did refresh ({reads} reads)"
    );
    // Two windows, plus one that the observation may cut in two.
    assert!(
        reads <= (KEYS * 3) as u64,
        "{reads} reads for {KEYS} keys in {window:?}"
    );
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

pub(crate) async fn credentials_replaced<B: Backend>(b: &mut B) {
    let db = b.key("db");
    b.put(&db, br#"{"password":"p"}"#, &[]).await;
    let env = env().await;
    create_store(&env, b, "store", true).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "store", &db))
        .await;
    env.wait_store("store", "False", "ProviderAuthFailed").await;
    env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    assert!(env.version_secrets("db").await.is_empty());

    // The right credentials written into the Secret: picked up without a store edit.
    let data: Map<String, Value> = b
        .credentials(false)
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    let generation = env
        .api::<SecretStore>()
        .get("store")
        .await
        .unwrap()
        .metadata
        .generation;
    env.api::<Secret>()
        .patch(
            "store",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": data})),
        )
        .await
        .unwrap();
    env.wait_store("store", "True", "Valid").await;
    env.wait_version("db", 1).await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"p"
    );
    let store = env.api::<SecretStore>().get("store").await.unwrap();
    assert_eq!(
        store.metadata.generation, generation,
        "the store was not edited"
    );
}

pub(crate) async fn values_never_leak<B: Backend>(b: &mut B) {
    const CANARY: &str = "CANARY-conformance-7f3a-never-print-me";
    let db = b.key("db");
    b.put(&db, format!(r#"{{"password":"{CANARY}"}}"#).as_bytes(), &[])
        .await;
    let env = env().await;
    create_store(&env, b, "store", false).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "store", &db))
        .await;
    env.wait_version("db", 1).await;
    b.put(
        &db,
        format!(r#"{{"password":"{CANARY}-2"}}"#).as_bytes(),
        &[],
    )
    .await;
    env.wait_version("db", 2).await;
    // Failures whose messages are built near the value: a missing property of it.
    env.create::<SecretSync>(
        &keyed_sync_yaml("prop", "store", &db).replace("property: password", "property: nope"),
    )
    .await;
    env.wait_failure("prop", "Ready", "RemoteKeyNotFound").await;
    // Stale credentials, refused.
    create_store(&env, b, "stale", true).await;
    env.wait_store("stale", "False", "ProviderAuthFailed").await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        CANARY.as_bytes(),
        "the Secret really holds the value"
    );
    let mut scan = LeakScan::new([CANARY.to_owned()].into_iter().chain(b.canaries()));
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    scan.items("operator debug log lines", logs.lines());
    scan.cluster(&env.client).await;
    eprintln!("{}", scan.assert_clean());
}

/// A backend fixture's access-token reuse, for backends that log in first (Conjur, Akeyless):
/// one login serves every read of three SecretSyncs, and once `expire` ends the token, one
/// new login follows without any SecretSync noticing. `logins` counts logins at the backend.
pub(crate) async fn one_login_until_the_token_ends<B: Backend>(
    b: &mut B,
    logins: impl Fn(&B) -> u64,
    expire: impl Fn(&B),
) {
    let keys: Vec<String> = (0..3).map(|k| b.key(&format!("k{k}"))).collect();
    for (k, key) in keys.iter().enumerate() {
        b.put(key, format!(r#"{{"password":"p{k}"}}"#).as_bytes(), &[])
            .await;
    }
    let env = env().await;
    create_store(&env, b, "store", false).await;
    for (k, key) in keys.iter().enumerate() {
        env.create::<SecretSync>(&keyed_sync_yaml(&format!("s{k}"), "store", key))
            .await;
    }
    for k in 0..keys.len() {
        env.wait_version(&format!("s{k}"), 1).await;
    }
    // Several refreshes of every SecretSync, on one login.
    let reads = b.reads();
    wait_until("six more reads", DEADLINE, || b.reads() >= reads + 6).await;
    assert_eq!(logins(b), 1, "one login for every read and check");
    expire(b);
    let reads = b.reads();
    wait_until("reads after the token ended", DEADLINE, || {
        b.reads() >= reads + 6
    })
    .await;
    assert_eq!(logins(b), 2, "one new login once the token ended");
    for k in 0..keys.len() {
        env.wait_condition(&format!("s{k}"), "Ready", "True").await;
        assert_eq!(
            env.version_secrets(&format!("s{k}")).await,
            [format!("s{k}-v1")]
        );
    }
}

/// The [`Backend`] methods of a fixture `struct F(Double)` whose double has the same
/// controls (`deny`, `go_down`, `come_back`, `reads`): the TLS doubles.
macro_rules! double_controls {
    () => {
        async fn deny(&mut self, denied: bool) {
            self.0.deny(denied);
        }

        async fn go_down(&mut self) {
            self.0.go_down();
        }

        async fn come_back(&mut self) {
            self.0.come_back().await;
        }

        fn reads(&self) -> u64 {
            self.0.reads()
        }
    };
}
pub(crate) use double_controls;

/// One `#[tokio::test]` per case of the kit, for the backend `$start` (an expression
/// giving `Option<impl Backend>`: `None` skips, as when a tool is missing).
macro_rules! conformance_suite {
    ($start:expr) => {
        #[tokio::test]
        async fn conformance_values_and_versions() {
            let Some(mut b) = $start.await else { return };
            crate::conformance::values_and_versions(&mut b).await;
        }

        #[tokio::test]
        async fn conformance_failures_keep_the_secrets() {
            let Some(mut b) = $start.await else { return };
            crate::conformance::failures_keep_the_secrets(&mut b).await;
        }

        #[tokio::test]
        async fn conformance_shared_reads() {
            let Some(mut b) = $start.await else { return };
            crate::conformance::shared_reads(&mut b).await;
        }

        #[tokio::test]
        async fn conformance_credentials_replaced() {
            let Some(mut b) = $start.await else { return };
            crate::conformance::credentials_replaced(&mut b).await;
        }

        #[tokio::test]
        async fn conformance_values_never_leak() {
            let Some(mut b) = $start.await else { return };
            crate::conformance::values_never_leak(&mut b).await;
        }
    };
}
pub(crate) use conformance_suite;
