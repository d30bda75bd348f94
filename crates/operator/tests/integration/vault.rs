//! The operator against a real OpenBao dev server. The conformance kit's cases
//! (`crate::conformance`), behind a [`Gate`] so an outage keeps the dev server's in-memory
//! state; then what is Vault's own: a steady state writes nothing, the KV versions recorded
//! per key, and a refused token re-checked only after the backoff.

use std::process::Stdio;

use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::gate::Gate;
use secretsync_testkit::openbao::OpenBao;
use serde_json::{Map, Value, json};

use crate::common::Env;
use crate::conformance::{Backend, conformance_suite};

/// A token Secret and a SecretStore `vault` for `bao`, KV v2 at `secret/`.
pub async fn vault_store(env: &Env, bao: &OpenBao, token: &str) {
    vault_store_at(env, "vault", &bao.addr(), token).await;
}

/// A token Secret `<name>-token` and a Vault SecretStore `name` at `server`, KV v2 at
/// `secret/`.
pub async fn vault_store_at(env: &Env, name: &str, server: &str, token: &str) {
    vault_store_with(env, name, server, token, json!({})).await;
}

/// [`vault_store_at`] with the fields of `extra` added to the store's spec.
pub async fn vault_store_with(
    env: &Env,
    name: &str,
    server: &str,
    token: &str,
    extra: serde_json::Value,
) {
    env.string_secret(&format!("{name}-token"), &[("token", token)])
        .await;
    let mut spec = json!({"provider": {"vault": {
        "server": server,
        "path": "secret",
        "version": "v2",
        "auth": {"tokenSecretRef": {"name": format!("{name}-token"), "key": "token"}},
    }}});
    for (field, value) in extra.as_object().into_iter().flatten() {
        spec[field] = value.clone();
    }
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
}

/// The kit's fixture: KV v2 at `secret/`, read with a token of the policy `reader`, whose
/// rules [`Backend::deny`] swaps.
struct Vault {
    bao: OpenBao,
    gate: Gate,
    token: String,
}

/// What the store's token may do.
const READER: &str = r#"path "secret/*" { capabilities = ["read", "list"] }"#;
const DENIED: &str = r#"path "secret/*" { capabilities = ["deny"] }"#;

impl Vault {
    async fn start() -> Option<Vault> {
        let bao = OpenBao::start()?;
        let gate = Gate::start(bao.port()).await;
        let mut vault = Vault {
            bao,
            gate,
            token: String::new(),
        };
        vault.policy(READER);
        vault.token = vault
            .bao
            .bao_ok(&["token", "create", "-policy=reader", "-field=token"]);
        Some(vault)
    }

    fn policy(&self, rules: &str) {
        self.bao_stdin(&["policy", "write", "reader", "-"], rules);
    }

    /// The `bao` CLI with `input` on its stdin; its stdout.
    fn bao_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write as _;
        let mut child = self
            .bao
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bao");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A KV secret's fields: the value's own when it is a JSON object, else one `value` field.
fn fields(value: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(value) {
        Ok(Value::Object(fields)) => fields,
        _ => {
            let text = std::str::from_utf8(value).expect("KV values are text");
            Map::from_iter([("value".to_owned(), Value::from(text))])
        }
    }
}

impl Backend for Vault {
    const PROVIDER: &'static str = "vault";
    /// KV secrets have no tags the provider selects by.
    const TAGS: bool = false;
    /// KV values are JSON objects of text fields.
    const BINARY: bool = false;

    fn key(&self, name: &str) -> String {
        format!("app/{name}")
    }

    async fn put(&mut self, key: &str, value: &[u8], _tags: &[(&str, &str)]) -> String {
        let fields = Value::Object(fields(value)).to_string();
        let args = ["kv", "put", "-mount=secret", "-format=json", key, "-"];
        let written: Value = serde_json::from_str(&self.bao_stdin(&args, &fields)).unwrap();
        written["data"]["version"].to_string()
    }

    /// A whole KV secret reads as the JSON object of its fields.
    fn whole(&self, value: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&fields(value)).unwrap()
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        let token = if stale {
            "s.stale-token-2b7e"
        } else {
            &self.token
        };
        vec![("token".to_owned(), token.to_owned())]
    }

    fn provider(&self, secret: &str) -> Value {
        json!({"vault": {
            "server": format!("http://127.0.0.1:{}", self.gate.port()),
            "path": "secret",
            "version": "v2",
            "auth": {"tokenSecretRef": {"name": secret, "key": "token"}},
        }})
    }

    async fn deny(&mut self, denied: bool) {
        self.policy(if denied { DENIED } else { READER });
    }

    async fn go_down(&mut self) {
        self.gate.go_down();
    }

    async fn come_back(&mut self) {
        self.gate.come_back().await;
    }

    fn reads(&self) -> u64 {
        self.bao.audited_responses("secret/data/") as u64
    }
}

conformance_suite!(Vault::start());

const SYNC: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db}
spec:
  storeRef: {name: vault}
  refreshInterval: 1s
  data:
    - secretKey: password
      remoteRef: {key: app/db, property: password}
  dataFrom:
    - extract: {key: app/config}
"#;

/// Vault's own part of versions: a steady state writes nothing to the API server, and each
/// version records the KV version of every key it was made from.
#[tokio::test]
async fn a_steady_state_writes_nothing_and_kv_versions_are_recorded() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", "first")]);
    bao.kv_put(
        "secret",
        "app/config",
        &[("host", "db.internal"), ("port", "5432")],
    );
    let env = Env::counted("payments").await;
    vault_store(&env, &bao, bao.root_token()).await;
    env.create::<SecretSync>(SYNC).await;

    let synced = env.wait_version("db", 1).await;
    let v1 = env.secret("db-v1").await.unwrap();
    let data = v1.data.unwrap();
    assert_eq!(data["password"].0, b"first");
    assert_eq!(data["host"].0, b"db.internal");
    assert_eq!(data["port"].0, b"5432");
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["app/db"], "1");
    assert_eq!(sources["app/config"], "1");

    // Unchanged backend: refreshes read it but write nothing. Counted from the second
    // refresh after v1, once the writes of the first sync have all landed.
    env.wait_backend_reads(env.operator().backend_reads() + 2)
        .await;
    env.proxy().reset_requests();
    let reads = env.operator().backend_reads();
    env.wait_backend_reads(reads + 4).await;
    for resource in ["secrets", "secretsyncs", "events"] {
        assert_eq!(env.proxy().requests().writes_to(resource), 0, "{resource}");
    }
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);

    // A write in OpenBao becomes v2 at the next refresh.
    bao.kv_put("secret", "app/db", &[("password", "second")]);
    let synced = env.wait_version("db", 2).await;
    assert_eq!(
        env.secret("db-v2").await.unwrap().data.unwrap()["password"].0,
        b"second"
    );
    assert_eq!(
        env.secret("db-v1").await.unwrap().data.unwrap()["password"].0,
        b"first"
    );
    let sources = synced.status.unwrap().versions[0]
        .source_versions
        .clone()
        .unwrap();
    assert_eq!(sources["app/db"], "2");
}

/// A refused token is re-checked only after the backoff, not at each status write.
#[tokio::test]
async fn a_refused_token_is_checked_again_only_after_the_backoff() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", "x")]);
    bao.kv_put("secret", "app/config", &[("host", "h")]);
    let env = Env::start("payments").await;
    vault_store(&env, &bao, "not-a-real-token").await;
    env.create::<SecretSync>(SYNC).await;
    let message = env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    assert!(message.contains("vault"), "{message}");
    assert!(env.version_secrets("db").await.is_empty());

    // The store reports it too, and its own status write does not count as a retry: one
    // check, then the backoff (15 s at first for a failure a person must fix).
    env.wait_store("vault", "False", "ProviderAuthFailed").await;
    let checks = env.operator().store_checks();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        env.operator().store_checks(),
        checks,
        "re-checked within the backoff"
    );
    // The store's own first check, and at most one more that the SecretSync's failure asks
    // for when it comes over a second later (backend/health.rs's SUSPECT_CHECK_EVERY; a loaded real
    // cluster is that slow).
    assert!((1..=2).contains(&checks), "{checks} store checks");
}
