//! The operator against Akeyless — a **test double** of its REST API v2
//! (`secretsync_testkit::akeyless_double`, no Akeyless server or gateway can be had here),
//! over TLS with a throwaway CA. The conformance kit's cases, then what is Akeyless's own:
//! Kubernetes and JWT auth with a ServiceAccount token checked against the cluster's JWKS,
//! and one login serving reads until its token is refused.

use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::akeyless_double::{self, AkeylessDouble};
use serde_json::{Value, json};

use crate::common::{DEADLINE, keyed_sync_yaml, secret_data, wait_until};
use crate::conformance::{self, Backend, conformance_suite};

/// The kit's fixture: the double, logged in to with an access id and key.
struct Akeyless(AkeylessDouble);

impl Backend for Akeyless {
    const PROVIDER: &'static str = "akeyless";
    const TAGS: bool = true;
    /// Akeyless static secrets are text.
    const BINARY: bool = false;

    fn key(&self, name: &str) -> String {
        format!("/apps/{name}")
    }

    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String {
        let value = std::str::from_utf8(value).expect("Akeyless values are text");
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.0.set_value(key, value, &tags).to_string()
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        let key = if stale {
            "akl-stale-access-key-1x9z"
        } else {
            akeyless_double::ACCESS_KEY
        };
        vec![
            (
                "access-id".to_owned(),
                akeyless_double::ACCESS_ID.to_owned(),
            ),
            ("access-key".to_owned(), key.to_owned()),
        ]
    }

    fn provider(&self, secret: &str) -> Value {
        json!({"akeyless": {
            "akeylessGWApiURL": self.0.url(),
            "caBundle": self.0.ca_bundle(),
            "authSecretRef": {"secretRef": {
                "accessID": {"name": secret, "key": "access-id"},
                "accessTypeParam": {"name": secret, "key": "access-key"},
            }},
        }})
    }

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
}

conformance_suite!(async { AkeylessDouble::start().await.map(Akeyless) });

/// A store `name` authenticating with a token of ServiceAccount `app` for `audience`:
/// `auth` is `kubernetesAuth` (through the gateway's config `k8s-conf`) or `jwt`.
async fn service_account_store(
    env: &crate::common::Env,
    double: &AkeylessDouble,
    name: &str,
    auth: &str,
    audience: &str,
) {
    let mut method = json!({
        "accessID": akeyless_double::ACCESS_ID,
        "serviceAccountRef": {"name": "app", "audiences": [audience]},
    });
    if auth == "kubernetesAuth" {
        method["k8sConfName"] = json!("k8s-conf");
    }
    env.create::<SecretStore>(
        &json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"refreshInterval": "1s", "provider": {"akeyless": {
                "akeylessGWApiURL": double.url(),
                "caBundle": double.ca_bundle(),
                "authSecretRef": {auth: method},
            }}},
        })
        .to_string(),
    )
    .await;
}

/// Kubernetes auth and JWT auth each present the ServiceAccount's token (base64-wrapped
/// for `k8s`, as Akeyless wants it); a token for another audience is refused.
#[tokio::test]
async fn a_service_account_token_logs_in_by_kubernetes_and_jwt_auth() {
    let Some(double) = AkeylessDouble::start().await else {
        return;
    };
    double.set_value("/apps/db", r#"{"password":"by-token"}"#, &[]);
    let env = conformance::env().await;
    let (jwks, sub) = conformance::service_account(&env, "app").await;
    double.allow_service_account(jwks.clone(), "akeyless", &sub, Some("k8s-conf"));
    double.allow_service_account(jwks, "akeyless-jwt", &sub, None);

    service_account_store(&env, &double, "k8s", "kubernetesAuth", "akeyless").await;
    env.create::<SecretSync>(&keyed_sync_yaml("db", "k8s", "/apps/db"))
        .await;
    env.wait_version("db", 1).await;
    assert_eq!(
        secret_data(&env.secret("db-v1").await.unwrap())["password"],
        b"by-token"
    );
    env.wait_store("k8s", "True", "Valid").await;
    service_account_store(&env, &double, "jwt", "jwt", "akeyless-jwt").await;
    env.wait_store("jwt", "True", "Valid").await;

    // The audience of the other method: each method checks its own.
    service_account_store(&env, &double, "k8s-wrong", "kubernetesAuth", "akeyless-jwt").await;
    env.wait_store("k8s-wrong", "False", "ProviderAuthFailed")
        .await;
    service_account_store(&env, &double, "jwt-wrong", "jwt", "akeyless").await;
    env.wait_store("jwt-wrong", "False", "ProviderAuthFailed")
        .await;
}

/// One login serves every read; a token Akeyless no longer accepts is replaced by one new
/// login without any SecretSync noticing.
#[tokio::test]
async fn one_login_serves_reads_until_its_token_is_refused() {
    let Some(double) = AkeylessDouble::start().await else {
        return;
    };
    for k in 0..3 {
        double.set_value(
            &format!("/apps/k{k}"),
            &format!(r#"{{"password":"p{k}"}}"#),
            &[],
        );
    }
    let b = Akeyless(double);
    let env = conformance::env().await;
    conformance::create_store(&env, &b, "store", false).await;
    for k in 0..3 {
        env.create::<SecretSync>(&keyed_sync_yaml(
            &format!("s{k}"),
            "store",
            &format!("/apps/k{k}"),
        ))
        .await;
    }
    for k in 0..3 {
        env.wait_version(&format!("s{k}"), 1).await;
    }
    let reads = b.reads();
    wait_until("six more reads", DEADLINE, || b.0.reads() >= reads + 6).await;
    assert_eq!(b.0.logins(), 1, "one login for every read and check");
    b.0.expire_tokens();
    let reads = b.reads();
    wait_until("reads after the token was refused", DEADLINE, || {
        b.0.reads() >= reads + 6
    })
    .await;
    assert_eq!(b.0.logins(), 2, "one new login");
    for k in 0..3 {
        env.wait_condition(&format!("s{k}"), "Ready", "True").await;
        assert_eq!(
            env.version_secrets(&format!("s{k}")).await,
            [format!("s{k}-v1")]
        );
    }
}
