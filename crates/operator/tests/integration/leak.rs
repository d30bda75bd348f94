//! Secret values never leak (guarantee 8, docs/reference/guarantees.md): canary values travel through every path
//! — sync, rotation, templating, failures, a Vault login refused — and
//! [`LeakScan`] then searches the operator's debug logs, every Event, every status (with its
//! condition messages, the error messages users see) and `/metrics` for them. The
//! content-hash key and the unkeyed digest of the content are canaries too: neither may
//! show anywhere.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use secretsync_api::hash::legacy_content_hash;
use secretsync_api::{ClusterSecretStore, SecretSync};
use secretsync_operator::hash_key::{DATA_KEY, KeySecret};
use secretsync_testkit::leak::LeakScan;
use secretsync_testkit::openbao::OpenBao;
use serde_json::json;

use crate::common::{Env, logs, sync_yaml};
use crate::vault::vault_store_at;

const CANARY: &str = "CANARY-6f1d0b7e-never-print-me";
const TOKEN: &str = "CANARY-token-9a4c-never-print-me";

#[tokio::test]
async fn canary_values_never_appear_in_logs_events_statuses_metrics_or_errors() {
    let env = Env::start("payments").await;
    let value = format!(r#"{{"password":"{CANARY}","user":"app-{CANARY}"}}"#);
    env.fake_store("vault", &[("app/db", &value, "1")]).await;

    // sync, with a template using the value
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  target: {template: {data: {dsn: 'postgres://{{ password }}@db', password: '{{ password }}'}}}",
    ))
    .await;
    env.wait_version("db", 1).await;
    // rotation
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    // failures whose messages are built near the value: a template error, a missing
    // property, an invalid key extracted from a field named after the value
    env.merge_sync(
        "db",
        json!({"spec": {"target": {"template": {"data": {"dsn": "{{ password | nosuchfilter }}"}}}}}),
    )
    .await;
    env.wait_condition("db", "Ready", "False").await;
    env.fake_store(
        "bad-keys",
        &[("app/x", &format!(r#"{{"{CANARY} key":"{CANARY}"}}"#), "1")],
    )
    .await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: extract}
spec:
  storeRef: {name: bad-keys}
  dataFrom: [{extract: {key: app/x}}]
"#,
    )
    .await;
    env.wait_condition("extract", "Ready", "False").await;
    env.create::<SecretSync>(
        &sync_yaml("prop", "vault", "").replace("property: password", "property: nope"),
    )
    .await;
    env.wait_condition("prop", "Ready", "False").await;
    // A ClusterSecretStore that does not admit this namespace.
    Api::<ClusterSecretStore>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretStore",
                "metadata": {"name": "shared"},
                "spec": {
                    "provider": {"fake": {"data": [{"key": "app/db", "value": value, "version": "1"}]}},
                    "conditions": [{"namespaces": ["orders"]}],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    env.create::<SecretSync>(&sync_yaml("denied", "shared", "").replace(
        "storeRef: {name: shared}",
        "storeRef: {name: shared, kind: ClusterSecretStore}",
    ))
    .await;
    env.wait_failure("denied", "Ready", "StoreNotAllowed").await;
    // A Vault login with a token OpenBao refuses: the token is a canary too.
    let bao = OpenBao::start();
    if let Some(bao) = &bao {
        vault_store_at(&env, "bao", &bao.addr(), TOKEN).await;
        env.create::<SecretSync>(&sync_yaml("login", "bao", ""))
            .await;
        env.wait_failure("login", "Ready", "ProviderAuthFailed")
            .await;
        env.wait_store("bao", "False", "ProviderAuthFailed").await;
    }

    // The Secret really holds the value (so the search below is meaningful)...
    let v1 = env.secret("db-v1").await.unwrap();
    let data = v1.data.clone().unwrap();
    assert_eq!(data["password"].0, CANARY.as_bytes());
    // ...and what protects the hash is secret too: the key, and the unkeyed digest.
    let at = KeySecret::default();
    let key = Api::<Secret>::namespaced(env.client.clone(), &at.namespace)
        .get(&at.name)
        .await
        .unwrap()
        .data
        .unwrap()[DATA_KEY]
        .0
        .clone();
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let key_base64 = base64::engine::general_purpose::STANDARD.encode(&key);
    let plain: std::collections::BTreeMap<String, Vec<u8>> =
        data.into_iter().map(|(k, v)| (k, v.0)).collect();
    let unkeyed = legacy_content_hash("Opaque", &plain);
    let unkeyed_hex = unkeyed.trim_start_matches("sha256:").to_owned();

    let mut scan = LeakScan::new([CANARY, TOKEN, &key_hex, &key_base64, &unkeyed_hex]);
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    scan.items("operator debug log lines", logs.lines());
    scan.cluster(&env.client).await;
    let metrics = crate::common::metrics_text(&env).await;
    assert!(metrics.contains("secretsync_reconciles_total"), "{metrics}");
    scan.text("/metrics", &metrics);
    let report = scan.assert_clean();
    eprintln!("{report}");
    assert!(scan.empty_places().is_empty(), "{report}");
}
