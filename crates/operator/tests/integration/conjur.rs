//! The operator against CyberArk Conjur — a **test double** of its REST API
//! (`secretsync_testkit::conjur_double`, no Conjur server can be had here), over TLS with a
//! throwaway CA. The conformance kit's cases, then what is Conjur's own: `authn-jwt` with a
//! ServiceAccount token checked against the cluster's JWKS, the access token reused until
//! it expires, and the CA bundle.

use secretsync_api::SecretStore;
use secretsync_testkit::conjur_double::{self, ConjurDouble};
use serde_json::{Value, json};

use crate::common::Env;
use crate::conformance::{self, Backend, conformance_suite};

/// The kit's fixture: the double, logged in to with an API key.
struct Conjur(ConjurDouble);

impl Backend for Conjur {
    const PROVIDER: &'static str = "conjur";
    const TAGS: bool = true;

    fn key(&self, name: &str) -> String {
        format!("apps/{name}")
    }

    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String {
        let version = self.0.set_value(key, value);
        for (name, value) in tags {
            self.0.annotate(key, name, value);
        }
        version.to_string()
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        let key = if stale {
            "stale-api-key-5c1e"
        } else {
            conjur_double::API_KEY
        };
        vec![
            ("login".to_owned(), conjur_double::HOST.to_owned()),
            ("api-key".to_owned(), key.to_owned()),
        ]
    }

    fn provider(&self, secret: &str) -> Value {
        json!({"conjur": {
            "url": self.0.url(),
            "caBundle": self.0.ca_bundle(),
            "auth": {"apikey": {
                "account": conjur_double::ACCOUNT,
                "userRef": {"name": secret, "key": "login"},
                "apiKeyRef": {"name": secret, "key": "api-key"},
            }},
        }})
    }

    conformance::double_controls!();
}

conformance_suite!(async { ConjurDouble::start().await.map(Conjur) });

/// A store `name` logging in by `authn-jwt/k8s` with a token of ServiceAccount `app` for
/// `audience`, as `host` when given.
async fn jwt_store(
    env: &Env,
    double: &ConjurDouble,
    name: &str,
    audience: &str,
    host: Option<&str>,
) {
    let mut jwt = json!({
        "account": conjur_double::ACCOUNT,
        "serviceID": "k8s",
        "serviceAccountRef": {"name": "app", "audiences": [audience]},
    });
    if let Some(host) = host {
        jwt["hostId"] = json!(host);
    }
    let provider = json!({"conjur": {
        "url": double.url(), "caBundle": double.ca_bundle(), "auth": {"jwt": jwt},
    }});
    conformance::store(env, name, provider).await;
}

/// `authn-jwt`: the ServiceAccount's token, signed by the cluster and for the
/// authenticator's audience, logs in as the host its `sub` names; a token for another
/// audience, or for another host than `hostId`, is refused.
#[tokio::test]
async fn a_service_account_token_logs_in_by_authn_jwt() {
    let Some(double) = ConjurDouble::start().await else {
        return;
    };
    double.set_value("apps/db", br#"{"password":"by-jwt"}"#);
    let env = conformance::env().await;
    let (jwks, sub) = conformance::service_account(&env, "app").await;
    let host = "host/k8s/app";
    double.enable_jwt("k8s", "https://conjur.example.com", jwks, &[(&sub, host)]);

    jwt_store(&env, &double, "jwt", "https://conjur.example.com", None).await;
    conformance::syncs_password(&env, "jwt", "apps/db", b"by-jwt").await;

    jwt_store(
        &env,
        &double,
        "hosted",
        "https://conjur.example.com",
        Some(host),
    )
    .await;
    env.wait_store("hosted", "True", "Valid").await;
    jwt_store(
        &env,
        &double,
        "other-host",
        "https://conjur.example.com",
        Some("host/k8s/other"),
    )
    .await;
    env.wait_store("other-host", "False", "ProviderAuthFailed")
        .await;
    jwt_store(&env, &double, "audience", "https://vault.example.com", None).await;
    env.wait_store("audience", "False", "ProviderAuthFailed")
        .await;
}

/// One login serves every read until the token expires; an expired token is replaced by a
/// new login without any SecretSync noticing.
#[tokio::test]
async fn the_access_token_is_reused_until_it_expires() {
    let Some(double) = ConjurDouble::start().await else {
        return;
    };
    conformance::one_login_until_the_token_ends(
        &mut Conjur(double),
        |b| b.0.logins(),
        |b| b.0.expire_tokens(),
    )
    .await;
}

/// `caBundle` replaces the system roots: a CA that did not sign the server's certificate is
/// a TLS failure, which waits for a fix instead of retrying.
#[tokio::test]
async fn a_wrong_ca_bundle_is_a_tls_failure() {
    let Some(double) = ConjurDouble::start().await else {
        return;
    };
    let b = Conjur(double);
    let env = conformance::env().await;
    let mut provider = b.provider("store");
    provider["conjur"]["caBundle"] = json!(b.0.wrong_ca_bundle());
    env.string_secret(
        "store",
        &[
            ("login", conjur_double::HOST),
            ("api-key", conjur_double::API_KEY),
        ],
    )
    .await;
    env.create::<SecretStore>(
        &json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "store"},
            "spec": {"provider": provider},
        })
        .to_string(),
    )
    .await;
    let message = env.wait_store("store", "False", "ProviderTLSFailed").await;
    assert!(message.contains("caBundle"), "{message}");
    assert_eq!(b.0.logins(), 0);
}
