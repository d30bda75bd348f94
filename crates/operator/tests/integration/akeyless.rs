//! The operator against Akeyless — a **test double** of its REST API v2
//! (`secretsync_testkit::akeyless_double`, no Akeyless server or gateway can be had here),
//! over TLS with a throwaway CA. The conformance kit's cases, then what is Akeyless's own:
//! Kubernetes and JWT auth with a ServiceAccount token checked against the cluster's JWKS,
//! and one login serving reads until its token is refused.

use secretsync_testkit::akeyless_double::{self, AkeylessDouble};
use serde_json::{Value, json};

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

    conformance::double_controls!();
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
    let provider = json!({"akeyless": {
        "akeylessGWApiURL": double.url(),
        "caBundle": double.ca_bundle(),
        "authSecretRef": {auth: method},
    }});
    conformance::store(env, name, provider).await;
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
    conformance::syncs_password(&env, "k8s", "/apps/db", b"by-token").await;
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
    conformance::one_login_until_the_token_ends(
        &mut Akeyless(double),
        |b| b.0.logins(),
        |b| b.0.expire_tokens(),
    )
    .await;
}
