//! The operator against a **test double** of Azure Key Vault and Entra ID
//! (`secretsync_testkit::azure_double`, written from Microsoft's REST reference; no emulator
//! exists), reached through the official SDK over TLS with the vault's challenge auth:
//! versions follow the vault, shared keys are read once per refresh window, each failure
//! is reported with its reason while Secrets stay intact, and values never leak.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::Config;
use secretsync_testkit::azure_double::{self, AzureDouble};
use secretsync_testkit::leak::LeakScan;
use serde_json::{Value, json};

use crate::common::{Env, keyed_sync_yaml, logs, secret_data};

/// The `azurekv` provider block for `double` with `auth` merged in.
fn provider(double: &AzureDouble, auth: Value) -> Value {
    let mut provider = json!({
        "vaultUrl": double.url(),
        "authorityHost": double.url(),
        "caBundle": double.ca_bundle(),
        // The double's challenge names vault.azure.net, which 127.0.0.1 is not part of.
        "verifyChallengeResource": false,
    });
    for (k, v) in auth.as_object().unwrap() {
        provider[k] = v.clone();
    }
    provider
}

/// Creates the SecretStore `name` with the `azurekv` provider block `provider`.
async fn create_store(env: &Env, name: &str, provider: Value) {
    create_store_with(env, name, provider, json!({})).await;
}

/// Like [`create_store`], with `extra` spec fields.
async fn create_store_with(env: &Env, name: &str, provider: Value, extra: Value) {
    let mut spec = json!({"refreshInterval": "1s", "provider": {"azurekv": provider}});
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

/// The service principal's credentials in Secret `azure` (with `client_secret`) and a
/// SecretStore `azure` for `double` using them.
pub async fn azure_store(env: &Env, double: &AzureDouble, client_secret: &str) {
    azure_store_with(env, double, client_secret, json!({})).await;
}

/// Like [`azure_store`], with `extra` spec fields.
pub async fn azure_store_with(env: &Env, double: &AzureDouble, client_secret: &str, extra: Value) {
    env.string_secret(
        "azure",
        &[
            ("client-id", azure_double::CLIENT_ID),
            ("client-secret", client_secret),
        ],
    )
    .await;
    let auth = json!({
        "tenantId": azure_double::TENANT,
        "authSecretRef": {
            "clientId": {"name": "azure", "key": "client-id"},
            "clientSecret": {"name": "azure", "key": "client-secret"},
        },
    });
    create_store_with(env, "azure", provider(double, auth), extra).await;
}

#[tokio::test]
async fn versions_follow_azure_key_vault() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    let first = double.set_secret(
        "app-db",
        r#"{"password":"first","owner":{"user":"app"}}"#,
        &[],
    );
    let db = double.set_secret(
        "app-db",
        r#"{"password":"second","owner":{"user":"app"}}"#,
        &[],
    );
    double.set_secret("app-config", r#"{"host":"db.internal","port":"5432"}"#, &[]);
    double.set_secret("payments-api", "api-key", &[("team", "payments")]);
    double.set_secret(
        "payments-queue",
        "queue-key",
        &[("team", "payments"), ("tier", "1")],
    );
    double.set_secret("payments-other", "not-tagged", &[]);
    double.set_secret("billing-api", "other-team", &[("team", "payments")]);
    double.set_secret("payments-off", "disabled", &[("team", "payments")]);
    double.set_enabled("payments-off", false);
    let env = Env::start("payments").await;
    azure_store(&env, &double, azure_double::CLIENT_SECRET).await;
    env.create::<SecretSync>(
        &r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db}
spec:
  storeRef: {name: azure}
  refreshInterval: 1s
  data:
    - {secretKey: password, remoteRef: {key: app-db, property: password}}
    - {secretKey: user, remoteRef: {key: app-db, property: owner.user}}
    - {secretKey: whole, remoteRef: {key: payments-other}}
    - {secretKey: pinned, remoteRef: {key: app-db, property: password, version: VERSION_ID}}
  dataFrom:
    - extract: {key: app-config}
    - find: {name: {regexp: "^payments-"}, tags: {team: payments}}
      rewrite: {regexp: {source: "^payments-", target: ""}}
"#
        .replace("VERSION_ID", &first),
    )
    .await;
    let synced = env.wait_version("db", 1).await;
    let (reason, _) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(reason, "Synced");
    let v1 = secret_data(&env.secret("db-v1").await.unwrap());
    let expected: [(&str, &[u8]); 8] = [
        ("api", b"api-key"),
        ("host", b"db.internal"),
        ("password", b"second"),
        ("pinned", b"first"),
        ("port", b"5432"),
        ("queue", b"queue-key"),
        ("user", b"app"),
        ("whole", b"not-tagged"),
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
    assert_eq!(sources["app-db"], db);
    assert_eq!(sources[&format!("app-db@{first}")], first);
    assert!(sources.contains_key("payments-api"));

    // A new value in the vault becomes v2 at the next refresh, with the new version id.
    let third = double.set_secret(
        "app-db",
        r#"{"password":"third","owner":{"user":"app"}}"#,
        &[],
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
            .unwrap()["app-db"],
        third
    );
    // The store says it works.
    env.wait_store("azure", "True", "Valid").await;
    let store = env.api::<SecretStore>().get("azure").await.unwrap();
    assert_eq!(store.status.unwrap().provider.as_deref(), Some("azurekv"));
}

#[tokio::test]
async fn azure_failures_say_why_and_keep_the_secrets() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    double.set_secret("app-db", r#"{"password":"kept"}"#, &[]);
    // Retries of refused credentials back off up to 2s, not minutes: the fixed Secret at
    // the end is picked up within the test's deadline.
    let env = Env::without_operator("payments")
        .await
        .with_operator_config(Config {
            max_backoff: Duration::from_secs(2),
            ..Config::default()
        });
    azure_store(&env, &double, azure_double::CLIENT_SECRET).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "azure", "app-db"))
        .await;
    env.wait_version("db", 1).await;
    let kept = || async { secret_data(&env.secret("db-v1").await.unwrap())["password"].clone() };

    // A key that does not exist.
    env.create::<SecretSync>(&keyed_sync_yaml("missing", "azure", "app-nowhere"))
        .await;
    let message = env
        .wait_failure("missing", "Ready", "RemoteKeyNotFound")
        .await;
    assert!(message.contains("app-nowhere"), "{message}");

    // The identity loses its access: denied, and the store says so too.
    double.deny(true);
    let message = env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    assert!(message.contains("Forbidden"), "{message}");
    env.wait_store("azure", "True", "Valid").await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert_eq!(kept().await, b"kept");
    double.deny(false);
    env.wait_condition("db", "Ready", "True").await;

    // The vault goes away: the refresh fails as unavailable, db-v1 stays as it was.
    double.go_down();
    env.wait_failure("db", "Ready", "ProviderUnavailable").await;
    env.wait_store("azure", "False", "ProviderUnavailable")
        .await;
    assert_eq!(kept().await, b"kept");
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);

    // Back, but the service principal's secret was rotated in Entra ID and not here:
    // Entra ID refuses the token.
    double.set_client_secret("rotated-elsewhere");
    double.come_back().await;
    let message = env.wait_failure("db", "Ready", "ProviderAuthFailed").await;
    assert!(message.contains("AADSTS7000215"), "{message}");
    env.wait_store("azure", "False", "ProviderAuthFailed").await;
    assert_eq!(kept().await, b"kept");

    // The new secret stored in Kubernetes is read at the next token request, without an
    // edit of the store.
    let rotated = base64::engine::general_purpose::STANDARD.encode("rotated-elsewhere");
    env.api::<Secret>()
        .patch(
            "azure",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"client-secret": rotated}})),
        )
        .await
        .unwrap();
    env.wait_store("azure", "True", "Valid").await;
    env.wait_condition("db", "Ready", "True").await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
}

/// The SDK checks that the vault's challenge names the vault's own domain, so a store
/// pointed at a look-alike vault cannot obtain a real vault's token for it. Left on (the
/// default), the double's challenge (vault.azure.net for a 127.0.0.1 URL) is refused.
#[tokio::test]
async fn a_challenge_for_another_domain_is_refused() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    double.set_secret("app-db", r#"{"password":"x"}"#, &[]);
    let env = Env::start("payments").await;
    env.string_secret(
        "azure",
        &[
            ("client-id", azure_double::CLIENT_ID),
            ("client-secret", azure_double::CLIENT_SECRET),
        ],
    )
    .await;
    let mut spec = provider(
        &double,
        json!({
            "tenantId": azure_double::TENANT,
            "authSecretRef": {
                "clientId": {"name": "azure", "key": "client-id"},
                "clientSecret": {"name": "azure", "key": "client-secret"},
            },
        }),
    );
    spec.as_object_mut()
        .unwrap()
        .remove("verifyChallengeResource");
    create_store(&env, "azure", spec).await;
    let message = env.wait_store("azure", "False", "StoreInvalid").await;
    assert!(message.contains("challenge resource"), "{message}");
    assert_eq!(double.tokens_issued(), 0, "no token was requested");
}

/// Azure Workload Identity with `serviceAccountRef`: a token of that ServiceAccount (for
/// the `api://AzureADTokenExchange` audience) is exchanged at Entra ID for the identity its
/// annotation names.
#[tokio::test]
async fn workload_identity_exchanges_a_service_account_token() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    double.set_secret("app-db", r#"{"password":"federated"}"#, &[]);
    let env = Env::start("payments").await;
    let account: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "app", "annotations": {
            "azure.workload.identity/client-id": azure_double::WORKLOAD_CLIENT_ID,
            "azure.workload.identity/tenant-id": azure_double::TENANT,
        }},
    }))
    .unwrap();
    env.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let spec = provider(
        &double,
        json!({"authType": "WorkloadIdentity", "serviceAccountRef": {"name": "app"}}),
    );
    create_store(&env, "azure", spec).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "azure", "app-db"))
        .await;
    env.wait_version("db", 1).await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"federated"
    );
    env.wait_store("azure", "True", "Valid").await;
}

/// 40 SecretSyncs over 4 keys in one store: each refresh window costs at most one read
/// per key at the vault, not one per SecretSync.
#[tokio::test]
async fn shared_azure_keys_are_read_once_per_refresh_window() {
    const SYNCS: usize = 40;
    const KEYS: usize = 4;
    const INTERVAL: Duration = Duration::from_secs(6);
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    for k in 0..KEYS {
        double.set_secret(
            &format!("app-k{k}"),
            &format!(r#"{{"password":"p{k}"}}"#),
            &[],
        );
    }
    let env = Env::start("payments").await;
    azure_store(&env, &double, azure_double::CLIENT_SECRET).await;
    for i in 0..SYNCS {
        env.create::<SecretSync>(&format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: s{i}}}
spec:
  storeRef: {{name: azure}}
  refreshInterval: 6s
  data: [{{secretKey: password, remoteRef: {{key: app-k{}, property: password}}}}]
"#,
            i % KEYS
        ))
        .await;
    }
    for i in 0..SYNCS {
        env.wait_version(&format!("s{i}"), 1).await;
    }
    let before = double.reads();
    // An observation window of two refresh intervals (a measurement, not a wait for a
    // state: nothing may change in it).
    let window = INTERVAL * 2;
    tokio::time::sleep(window).await;
    let reads = double.reads() - before;
    eprintln!("{SYNCS} SecretSyncs over {KEYS} keys, {window:?}: {reads} reads at the vault");
    assert!(
        reads >= KEYS as u64,
        "the SecretSyncs did refresh ({reads} reads)"
    );
    // Two windows, plus one that the observation may cut in two.
    assert!(
        reads <= (KEYS * 3) as u64,
        "{reads} vault reads for {SYNCS} SecretSyncs over {KEYS} keys in {window:?}"
    );
    assert_eq!(
        env.version_secrets("s0").await,
        ["s0-v1"],
        "nothing changed"
    );
}

const CANARY: &str = "CANARY-azure-3e7d-never-print-me";
const SECRET_CANARY: &str = "CANARY-azure-client-secret-never-print-me";

/// Values and the client secret travel through a sync, a rotation, a missing property and
/// a refused token; none shows in the operator's debug logs or in any status or Event.
#[tokio::test]
async fn azure_values_never_leak() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    double.set_client_secret(SECRET_CANARY);
    double.set_secret("app-db", &format!(r#"{{"password":"{CANARY}"}}"#), &[]);
    let env = Env::start("payments").await;
    azure_store(&env, &double, SECRET_CANARY).await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "azure", "app-db"))
        .await;
    env.wait_version("db", 1).await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        CANARY.as_bytes()
    );
    double.set_secret("app-db", &format!(r#"{{"password":"{CANARY}-2"}}"#), &[]);
    env.wait_version("db", 2).await;
    // A property that is not there: the error names the key, not the value.
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: nope}
spec:
  storeRef: {name: azure}
  data: [{secretKey: x, remoteRef: {key: app-db, property: user}}]
"#,
    )
    .await;
    env.wait_failure("nope", "Ready", "RemoteKeyNotFound").await;
    // Entra ID refuses the secret (rotated there): the refusal quotes no secret.
    double.set_client_secret("rotated");
    env.wait_failure("db", "Ready", "ProviderAuthFailed").await;

    let mut scan = LeakScan::new([CANARY, SECRET_CANARY]);
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    scan.items("operator debug log lines", logs.lines());
    scan.cluster(&env.client).await;
    scan.assert_clean();
}
