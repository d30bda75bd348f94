//! The operator against a real OpenBao dev server: versions follow the backend, and each
//! backend failure is reported with its reason while existing Secrets stay intact.

use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::openbao::OpenBao;
use serde_json::json;

use crate::common::Env;

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

#[tokio::test]
async fn versions_follow_openbao() {
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

#[tokio::test]
async fn a_wrong_token_is_provider_auth_failed() {
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

#[tokio::test]
async fn an_openbao_outage_is_reported_and_heals_with_secrets_intact() {
    let Some(mut bao) = OpenBao::start() else {
        return;
    };
    let seed = |bao: &OpenBao| {
        bao.kv_put("secret", "app/db", &[("password", "stable")]);
        bao.kv_put("secret", "app/config", &[("host", "h")]);
    };
    seed(&bao);
    let env = Env::start("payments").await;
    vault_store(&env, &bao, bao.root_token()).await;
    env.create::<SecretSync>(SYNC).await;
    env.wait_version("db", 1).await;
    let before = env.secret("db-v1").await.unwrap();

    bao.stop();
    let (reason, message) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(reason, "ProviderUnavailable", "{message}");
    let during = env
        .secret("db-v1")
        .await
        .expect("db-v1 survives the outage");
    assert_eq!(during.data, before.data);
    assert_eq!(
        during.metadata.resource_version,
        before.metadata.resource_version
    );
    let status = env.status("db").await;
    assert_eq!(
        status.active_secret_name.as_deref(),
        Some("db-v1"),
        "status keeps the active version"
    );

    // Dev mode keeps nothing across restarts: seed the same values again. The root token
    // is fixed per OpenBao handle, so the token Secret still works.
    bao.start_again();
    seed(&bao);
    env.wait_condition("db", "Ready", "True").await;
    assert_eq!(
        env.version_secrets("db").await,
        ["db-v1"],
        "same content, no new version"
    );
}

#[tokio::test]
async fn a_missing_path_is_remote_key_not_found() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", "x")]);
    let env = Env::start("payments").await;
    vault_store(&env, &bao, bao.root_token()).await;
    env.create::<SecretSync>(SYNC).await; // app/config is missing
    let message = env.wait_failure("db", "Ready", "RemoteKeyNotFound").await;
    assert!(message.contains("app/config"), "{message}");
}

/// 100 SecretSyncs over 5 keys in one Vault store: OpenBao's audit log shows at most one
/// read per key per refresh window, not one per SecretSync.
#[tokio::test]
async fn shared_remote_keys_are_read_once_per_refresh_window_at_openbao() {
    const SYNCS: usize = 100;
    const KEYS: usize = 5;
    let Some(bao) = OpenBao::start() else { return };
    for k in 0..KEYS {
        bao.kv_put(
            "secret",
            &format!("app/k{k}"),
            &[("password", &format!("p{k}"))],
        );
    }
    let env = Env::start("payments").await;
    vault_store(&env, &bao, bao.root_token()).await;
    env.many_syncs(SYNCS, "vault", |i| i % KEYS, "  refreshInterval: 4s")
        .await;
    let before = bao.audited_responses("secret/data/app/");
    // An observation window of three refresh intervals.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let reads = bao.audited_responses("secret/data/app/") - before;
    eprintln!("{SYNCS} SecretSyncs over {KEYS} keys, 12 s: {reads} reads in OpenBao's audit log");
    assert!(reads >= KEYS, "the SecretSyncs did refresh ({reads} reads)");
    assert!(
        reads <= KEYS * 4,
        "{reads} reads at OpenBao for {KEYS} keys in 12 s"
    );
}

#[tokio::test]
async fn a_token_replaced_in_its_secret_is_used_without_editing_the_store() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", "first")]);
    bao.kv_put("secret", "app/config", &[("host", "h")]);
    let first = bao.bao_ok(&["token", "create", "-policy=root", "-field=token"]);
    let env = Env::start("payments").await;
    vault_store(&env, &bao, first.trim()).await;
    env.create::<SecretSync>(SYNC).await;
    env.wait_version("db", 1).await;

    // The on-call way to rotate a store credential: a new token into the Secret, then the
    // old one revoked. The store object is not touched.
    let second = bao.bao_ok(&["token", "create", "-policy=root", "-field=token"]);
    env.api::<k8s_openapi::api::core::v1::Secret>()
        .patch(
            "vault-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"token": second.trim()}})),
        )
        .await
        .unwrap();
    bao.bao_ok(&["token", "revoke", first.trim()]);

    bao.kv_put("secret", "app/db", &[("password", "second")]);
    env.wait_version("db", 2).await;
    assert_eq!(
        env.secret("db-v2").await.unwrap().data.unwrap()["password"].0,
        b"second"
    );
    env.wait_condition("db", "Ready", "True").await;
}
