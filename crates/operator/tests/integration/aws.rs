//! The operator against a real AWS Secrets Manager emulator (moto). The conformance kit's
//! cases (`crate::conformance`), with moto checking signatures and IAM policies and behind a
//! [`Gate`] so an outage keeps its in-memory state; then what is AWS's own: version stages
//! (`AWSPREVIOUS`) and the VersionIds each version records.

use std::collections::HashSet;

use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::gate::Gate;
use secretsync_testkit::moto::Moto;
use serde_json::{Value, json};

use crate::common::{Env, secret_data};
use crate::conformance::{Backend, conformance_suite};

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

/// The kit's fixture: moto with authentication on, the store's keys those of the IAM user
/// [`Moto::enable_auth`] makes; seeding happens inside [`Moto::without_auth`].
struct Aws {
    moto: Moto,
    gate: Gate,
    keys: (String, String),
    created: HashSet<String>,
}

impl Aws {
    async fn start() -> Option<Aws> {
        let moto = Moto::start()?;
        let gate = Gate::start(moto.port()).await;
        let keys = moto.enable_auth();
        moto.record();
        Some(Aws {
            moto,
            gate,
            keys,
            created: HashSet::new(),
        })
    }
}

impl Backend for Aws {
    const PROVIDER: &'static str = "aws";
    const TAGS: bool = true;

    fn key(&self, name: &str) -> String {
        format!("app/{name}")
    }

    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String {
        let first = self.created.insert(key.to_owned());
        self.moto
            .without_auth(|moto| match std::str::from_utf8(value) {
                Ok(text) if first => moto.create_secret(key, text, tags),
                Ok(text) => moto.put_secret_value(key, text),
                Err(_) => {
                    assert!(first, "binary values are written once");
                    moto.create_binary_secret(key, value)
                }
            })
    }

    fn missing_version(&self) -> String {
        "00000000-0000-4000-8000-000000000009".to_owned()
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        let (id, secret) = if stale {
            ("AKIASTALE00000000000", "stale-secret-access-key-4d1f")
        } else {
            (self.keys.0.as_str(), self.keys.1.as_str())
        };
        vec![
            ("id".to_owned(), id.to_owned()),
            ("secret".to_owned(), secret.to_owned()),
        ]
    }

    fn provider(&self, secret: &str) -> Value {
        json!({"aws": {
            "region": self.moto.region(),
            "endpoint": format!("http://127.0.0.1:{}", self.gate.port()),
            "auth": {"secretRef": {
                "accessKeyIdSecretRef": {"name": secret, "key": "id"},
                "secretAccessKeySecretRef": {"name": secret, "key": "secret"},
            }},
        }})
    }

    async fn deny(&mut self, denied: bool) {
        self.moto.deny_user(denied);
    }

    async fn go_down(&mut self) {
        self.gate.go_down();
    }

    async fn come_back(&mut self) {
        self.gate.come_back().await;
    }

    fn reads(&self) -> u64 {
        (self.moto.recorded("GetSecretValue") + self.moto.recorded("BatchGetSecretValue")) as u64
    }

    /// The secret access keys: an access key id names who is refused, and may be said.
    fn canaries(&self) -> Vec<String> {
        [false, true]
            .into_iter()
            .map(|stale| self.credentials(stale)[1].1.clone())
            .collect()
    }
}

conformance_suite!(Aws::start());

/// Version stages: `AWSPREVIOUS` follows the backend, a pinned VersionId does not, and
/// each version records the VersionId behind every key (`key@stage` for staged reads).
#[tokio::test]
async fn version_stages_and_version_ids_are_recorded() {
    let Some(moto) = Moto::start() else { return };
    let first = moto.create_secret("app/db", r#"{"password":"first"}"#, &[]);
    let second = moto.put_secret_value("app/db", r#"{"password":"second"}"#);
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
    - {secretKey: previous, remoteRef: {key: app/db, property: password, version: AWSPREVIOUS}}
    - {secretKey: pinned, remoteRef: {key: app/db, property: password, version: VERSION_ID}}
"#
        .replace("VERSION_ID", &first),
    )
    .await;
    let synced = env.wait_version("db", 1).await;
    let v1 = secret_data(&env.secret("db-v1").await.unwrap());
    assert_eq!(
        (&v1["password"][..], &v1["previous"][..], &v1["pinned"][..]),
        (&b"second"[..], &b"first"[..], &b"first"[..])
    );
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["app/db"], second);
    assert_eq!(sources["app/db@AWSPREVIOUS"], first);
    assert_eq!(sources[&format!("app/db@{first}")], first);

    // A new value moves AWSCURRENT and AWSPREVIOUS; the pinned VersionId stays.
    let third = moto.put_secret_value("app/db", r#"{"password":"third"}"#);
    let synced = env.wait_version("db", 2).await;
    let v2 = secret_data(&env.secret("db-v2").await.unwrap());
    assert_eq!(v2["previous"], b"second", "AWSPREVIOUS moved too");
    assert_eq!(v2["pinned"], b"first", "a pinned VersionId does not move");
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["app/db"], third);
    assert_eq!(sources["app/db@AWSPREVIOUS"], second);
}
