//! TLS to Vault: OpenBao listening with a certificate from a CA made in the test. The store
//! that trusts that CA (`caBundle`) is Ready; one without it, or with another CA, is
//! refused with a reason naming the certificate problem. A listener that requires client
//! certificates (mutual TLS) admits only a store with `tls.clientCertSecretRef` and
//! `tls.clientKeySecretRef`.

use std::time::Duration;

use base64::Engine as _;
use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::Config;
use secretsync_testkit::openbao::{OpenBao, TlsListener};
use secretsync_testkit::pki::TestPki;
use serde_json::{Value, json};

use crate::common::{Env, sync_yaml};

const VALUE: &str = "over-tls-4c1e";

/// A token-auth Vault store `name` at `server` with these extra provider fields.
async fn store(env: &Env, name: &str, server: &str, extra: Value) {
    let mut vault = json!({
        "server": server, "path": "secret",
        "auth": {"tokenSecretRef": {"name": "token", "key": "token"}},
    });
    vault
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let obj: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"provider": {"vault": vault}},
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

fn bundle(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[tokio::test]
async fn vault_over_tls_trusts_exactly_the_ca_bundle_and_presents_a_client_certificate() {
    let Some(pki) = TestPki::generate() else {
        return;
    };
    let listener = |client_ca: bool| TlsListener {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: client_ca.then(|| pki.path("ca.pem")),
    };
    let Some(bao) = OpenBao::start_with_listeners(vec![listener(false), listener(true)]) else {
        return;
    };
    bao.kv_put("secret", "app/db", &[("password", VALUE)]);
    let (tls, mtls) = (bao.listener_addr(0), bao.listener_addr(1));
    let env = Env::start("payments").await;
    env.string_secret("token", &[("token", bao.root_token())])
        .await;
    env.string_secret(
        "client",
        &[
            ("tls.crt", &pki.client_cert_pem()),
            ("tls.key", &pki.client_key_pem()),
        ],
    )
    .await;
    let client_tls = json!({"tls": {
        "clientCertSecretRef": {"name": "client", "key": "tls.crt"},
        "clientKeySecretRef": {"name": "client", "key": "tls.key"},
    }});

    // Server TLS: the CA that signed the server's certificate is trusted, nothing else.
    store(
        &env,
        "trusted",
        &tls,
        json!({"caBundle": bundle(&pki.ca_pem())}),
    )
    .await;
    env.wait_store("trusted", "True", "Valid").await;
    store(&env, "no-ca", &tls, json!({})).await;
    let no_ca = env.wait_store("no-ca", "False", "ProviderTLSFailed").await;
    store(
        &env,
        "wrong-ca",
        &tls,
        json!({"caBundle": bundle(&pki.wrong_ca_pem())}),
    )
    .await;
    let wrong_ca = env
        .wait_store("wrong-ca", "False", "ProviderTLSFailed")
        .await;
    for message in [&no_ca, &wrong_ca] {
        assert!(message.contains("invalid peer certificate"), "{message}");
        assert!(message.contains("set caBundle"), "{message}");
    }

    // Mutual TLS: without a client certificate the server ends the handshake.
    store(&env, "mtls", &mtls, {
        let mut extra = client_tls.clone();
        extra["caBundle"] = bundle(&pki.ca_pem()).into();
        extra
    })
    .await;
    env.wait_store("mtls", "True", "Valid").await;
    store(
        &env,
        "no-client-cert",
        &mtls,
        json!({"caBundle": bundle(&pki.ca_pem())}),
    )
    .await;
    let refused = env
        .wait_store("no-client-cert", "False", "ProviderTLSFailed")
        .await;
    assert!(refused.contains("client certificate"), "{refused}");

    // A SecretSync reads through the mutual-TLS store, and one through an untrusted store
    // gets the same reason as the store.
    env.create::<SecretSync>(&sync_yaml("db", "mtls", "")).await;
    env.wait_version("db", 1).await;
    let v1 = env.secret("db-v1").await.unwrap();
    assert_eq!(v1.data.unwrap()["password"].0, VALUE.as_bytes());
    env.create::<SecretSync>(&sync_yaml("untrusted", "wrong-ca", ""))
        .await;
    let message = env
        .wait_failure("untrusted", "Ready", "ProviderTLSFailed")
        .await;
    assert!(message.contains("invalid peer certificate"), "{message}");

    // Nothing printed the key.
    let key_line = pki.client_key_pem().lines().nth(1).unwrap().to_owned();
    for message in [&no_ca, &wrong_ca, &refused, &message] {
        assert!(!message.contains(&key_line));
    }
}

#[tokio::test]
async fn a_replaced_client_certificate_is_used_from_the_stores_next_check() {
    let Some(pki) = TestPki::generate() else {
        return;
    };
    let Some(bao) = OpenBao::start_with_listeners(vec![TlsListener {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: Some(pki.path("ca.pem")),
    }]) else {
        return;
    };
    bao.kv_put("secret", "app/db", &[("password", VALUE)]);
    // A broken certificate is a failure a person fixes: its retries back off from 15 s.
    // Capped here so the fix is seen within the test's deadline.
    let env = Env::without_operator("payments")
        .await
        .with_operator_config(Config {
            max_backoff: Duration::from_secs(2),
            ..Config::default()
        });
    env.string_secret("token", &[("token", bao.root_token())])
        .await;
    let set_client = |cert: String| {
        let env = &env;
        let key = pki.client_key_pem();
        async move {
            env.api::<k8s_openapi::api::core::v1::Secret>()
                .patch(
                    "client",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        json!({"stringData": {"tls.crt": cert, "tls.key": key}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    env.string_secret("client", &[("tls.crt", ""), ("tls.key", "")])
        .await;
    set_client(pki.client_cert_pem()).await;
    store(
        &env,
        "mtls",
        &bao.listener_addr(0),
        json!({
            "caBundle": bundle(&pki.ca_pem()),
            "tls": {
                "clientCertSecretRef": {"name": "client", "key": "tls.crt"},
                "clientKeySecretRef": {"name": "client", "key": "tls.key"},
            },
        }),
    )
    .await;
    // Checked every second, so the replacement is seen within a second or two.
    env.api::<SecretStore>()
        .patch(
            "mtls",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"refreshInterval": "1s"}})),
        )
        .await
        .unwrap();
    env.wait_store("mtls", "True", "Valid").await;

    // A broken replacement is noticed without any edit to the store...
    set_client("not a certificate".to_owned()).await;
    let message = env.wait_store("mtls", "False", "StoreInvalid").await;
    assert!(message.contains("PEM certificate"), "{message}");
    // ...and so is the good one that follows.
    set_client(pki.client_cert_pem()).await;
    env.wait_store("mtls", "True", "Valid").await;
    env.create::<SecretSync>(&sync_yaml("db", "mtls", "")).await;
    env.wait_version("db", 1).await;
}

/// The cloud providers say the same as Vault when a certificate is not trusted: a Key
/// Vault store without the `caBundle` its endpoint needs, and a Secret Manager store
/// whose endpoint serves a certificate from an unknown CA (the Key Vault double's), are
/// `ProviderTLSFailed` — a configuration to fix, not a backend to wait for.
#[tokio::test]
async fn an_untrusted_certificate_is_provider_tls_failed_for_key_vault_and_secret_manager() {
    use secretsync_testkit::azure_double::{self, AzureDouble};
    use secretsync_testkit::gcp_double::{GcpDouble, PROJECT_ID};

    let Some(azure) = AzureDouble::start().await else {
        return;
    };
    let gcp = GcpDouble::start("secretsync@secretsync-test.iam.gserviceaccount.com").await;
    let env = Env::start("payments").await;
    env.string_secret(
        "azure",
        &[
            ("client-id", azure_double::CLIENT_ID),
            ("client-secret", azure_double::CLIENT_SECRET),
        ],
    )
    .await;
    env.string_secret(
        "gcp",
        &[(
            "key.json",
            &gcp.service_account_key("secretsync@secretsync-test.iam.gserviceaccount.com"),
        )],
    )
    .await;
    for (name, provider) in [
        (
            "azure",
            json!({"azurekv": {
                "vaultUrl": azure.url(), "authorityHost": azure.url(),
                "verifyChallengeResource": false,
                "tenantId": azure_double::TENANT,
                "authSecretRef": {
                    "clientId": {"name": "azure", "key": "client-id"},
                    "clientSecret": {"name": "azure", "key": "client-secret"},
                },
            }}),
        ),
        (
            "gcp",
            json!({"gcpsm": {
                "projectID": PROJECT_ID, "endpoint": azure.url(),
                "auth": {"secretRef": {"secretAccessKeySecretRef": {"name": "gcp", "key": "key.json"}}},
            }}),
        ),
    ] {
        let obj: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"refreshInterval": "1s", "provider": provider},
        }))
        .unwrap();
        env.api::<SecretStore>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }
    for name in ["azure", "gcp"] {
        let message = env.wait_store(name, "False", "ProviderTLSFailed").await;
        assert!(message.contains("certificate"), "{name}: {message}");
        assert!(
            !message.contains("  "),
            "{name}: a run of spaces in {message:?}"
        );
    }
}
