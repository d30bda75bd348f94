//! The operator against a **test double** of Azure Key Vault and Entra ID
//! (`secretsync_testkit::azure_double`, written from Microsoft's REST reference; no emulator
//! exists), reached through the official SDK over TLS with the vault's challenge auth. The
//! conformance kit's cases (`crate::conformance`), then what is Azure's own: disabled
//! secrets, the challenge's domain, workload identity.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::azure_double::{self, AzureDouble};
use serde_json::{Value, json};

use crate::common::{Env, keyed_sync_yaml, secret_data};
use crate::conformance::{self, Backend, conformance_suite};

/// The kit's fixture: the double, with a service principal's client secret.
struct Azure(AzureDouble);

impl Backend for Azure {
    const PROVIDER: &'static str = "azurekv";
    const TAGS: bool = true;
    /// Key Vault values are text.
    const BINARY: bool = false;

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String {
        let value = std::str::from_utf8(value).expect("Key Vault values are text");
        self.0.set_secret(key, value, tags)
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        let secret = if stale {
            "stale-client-secret-9b2d"
        } else {
            azure_double::CLIENT_SECRET
        };
        vec![
            ("client-id".to_owned(), azure_double::CLIENT_ID.to_owned()),
            ("client-secret".to_owned(), secret.to_owned()),
        ]
    }

    fn provider(&self, secret: &str) -> Value {
        let auth = json!({
            "tenantId": azure_double::TENANT,
            "authSecretRef": {
                "clientId": {"name": secret, "key": "client-id"},
                "clientSecret": {"name": secret, "key": "client-secret"},
            },
        });
        json!({"azurekv": provider(&self.0, auth)})
    }

    conformance::double_controls!();
}

conformance_suite!(async { AzureDouble::start().await.map(Azure) });

/// A disabled secret is not readable, and `find` leaves it out.
#[tokio::test]
async fn a_disabled_secret_is_left_out_of_find() {
    let Some(double) = AzureDouble::start().await else {
        return;
    };
    double.set_secret("payments-api", "api-key", &[]);
    double.set_secret("payments-off", "disabled", &[]);
    double.set_enabled("payments-off", false);
    let env = Env::start("payments").await;
    azure_store(&env, &double, azure_double::CLIENT_SECRET).await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: found}
spec:
  storeRef: {name: azure}
  dataFrom: [{find: {name: {regexp: "^payments-"}}}]
"#,
    )
    .await;
    env.wait_version("found", 1).await;
    let data = secret_data(&env.secret("found-v1").await.unwrap());
    assert_eq!(data.keys().collect::<Vec<_>>(), ["payments-api"]);
    env.create::<SecretSync>(&keyed_sync_yaml("off", "azure", "payments-off"))
        .await;
    env.wait_failure("off", "Ready", "ProviderAuthFailed").await;
}

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
    conformance::syncs_password(&env, "azure", "app-db", b"federated").await;
}
