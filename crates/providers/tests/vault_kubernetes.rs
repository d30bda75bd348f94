//! The Vault backend's Kubernetes side against the sandbox API server and a real OpenBao:
//! credentials read from Secrets through `kube::Client`, and where references resolve.
#![cfg(feature = "vault")]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use secretsync_api::{AppRoleAuth, SecretKeySelector, VaultAuth, VaultProvider};
use secretsync_providers::vault::Vault;
use secretsync_providers::{ConnectContext, ProviderError};
use secretsync_sandbox::Sandbox;
use secretsync_testkit::openbao::OpenBao;

const CANARY: &str = "s3cr3t-canary-90ab";

fn selector(name: &str, key: &str, namespace: Option<&str>) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        namespace: namespace.map(Into::into),
    }
}

fn spec(bao: &OpenBao, auth: VaultAuth) -> VaultProvider {
    VaultProvider {
        server: bao.addr(),
        path: None,
        version: None,
        namespace: None,
        ca_bundle: None,
        auth,
    }
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            // A trailing newline, as `kubectl create secret --from-file` often leaves.
            ByteString(format!("{value}\n").into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn seed_policy(bao: &OpenBao) {
    bao.bao_ok(&[
        "write",
        "sys/policy/read-app",
        r#"policy=path "secret/data/app/*" { capabilities = ["read"] }"#,
    ]);
}

#[tokio::test]
async fn token_secrets_are_read_at_login_and_reread_after_a_403() {
    let Some(bao) = OpenBao::start() else { return };
    let sandbox = Sandbox::start().await.unwrap();
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    seed_policy(&bao);
    let secrets: Api<Secret> = Api::namespaced(sandbox.client(), "default");
    let first = bao.bao_ok(&["token", "create", "-policy=read-app", "-field=token"]);
    secrets
        .create(
            &PostParams::default(),
            &secret("vault-token", "token", &first),
        )
        .await
        .unwrap();
    let ctx = ConnectContext {
        client: sandbox.client(),
        store_namespace: Some("default".into()),
    };
    let spec = spec(
        &bao,
        VaultAuth::TokenSecretRef(selector("vault-token", "token", None)),
    );
    let vault = Vault::connect(&spec, &ctx).await.unwrap();
    assert_eq!(vault.logins(), 0);
    vault.fetch("app/db", None).await.unwrap();
    vault.check().await.unwrap();
    assert_eq!(vault.logins(), 1);

    // Rotation: the old token is revoked, the Secret holds a new one. The 403 makes the
    // backend read the Secret again.
    bao.bao_ok(&["token", "revoke", &first]);
    let second = bao.bao_ok(&["token", "create", "-policy=read-app", "-field=token"]);
    secrets
        .replace("vault-token", &PostParams::default(), &{
            let mut s = secrets.get("vault-token").await.unwrap();
            s.data = secret("vault-token", "token", &second).data;
            s
        })
        .await
        .unwrap();
    vault.fetch("app/db", None).await.unwrap();
    assert_eq!(vault.logins(), 2);

    // The Secret gone and the token revoked: an auth failure naming the Secret.
    bao.bao_ok(&["token", "revoke", &second]);
    secrets
        .delete("vault-token", &DeleteParams::default())
        .await
        .unwrap();
    let err = vault.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("default/vault-token"), "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{vault:?}")] {
        assert!(!text.contains(CANARY) && !text.contains(&first) && !text.contains(&second));
    }
}

#[tokio::test]
async fn approle_secret_ids_come_from_a_secret() {
    let Some(bao) = OpenBao::start() else { return };
    let sandbox = Sandbox::start().await.unwrap();
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    seed_policy(&bao);
    bao.bao_ok(&["auth", "enable", "-path=team-approle", "approle"]);
    bao.bao_ok(&[
        "write",
        "auth/team-approle/role/app",
        "token_policies=read-app",
    ]);
    let role_id = bao.bao_ok(&[
        "read",
        "-field=role_id",
        "auth/team-approle/role/app/role-id",
    ]);
    let secret_id = bao.bao_ok(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/team-approle/role/app/secret-id",
    ]);
    let secrets: Api<Secret> = Api::namespaced(sandbox.client(), "default");
    secrets
        .create(
            &PostParams::default(),
            &secret("approle", "secret-id", &secret_id),
        )
        .await
        .unwrap();
    // A ClusterSecretStore: the reference names its namespace.
    let ctx = ConnectContext {
        client: sandbox.client(),
        store_namespace: None,
    };
    let auth = |secret_name: &str| {
        VaultAuth::AppRole(AppRoleAuth {
            path: Some("team-approle".into()),
            role_id: role_id.clone(),
            secret_ref: selector(secret_name, "secret-id", Some("default")),
        })
    };
    let vault = Vault::connect(&spec(&bao, auth("approle")), &ctx)
        .await
        .unwrap();
    let value = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(value.version.as_deref(), Some("1"));

    let missing = Vault::connect(&spec(&bao, auth("nope")), &ctx)
        .await
        .unwrap();
    let err = missing.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("default/nope"), "{err}");
    assert!(!err.to_string().contains(&secret_id));
}

#[tokio::test]
async fn reference_namespaces_follow_the_store_kind() {
    let Some(bao) = OpenBao::start() else { return };
    let sandbox = Sandbox::start().await.unwrap();
    let store = |namespace: Option<&str>| ConnectContext {
        client: sandbox.client(),
        store_namespace: namespace.map(Into::into),
    };
    let with_ref = |namespace: Option<&str>| {
        spec(
            &bao,
            VaultAuth::TokenSecretRef(selector("vault-token", "token", namespace)),
        )
    };
    // A SecretStore may not point elsewhere; a ClusterSecretStore must say where.
    let err = Vault::connect(&with_ref(Some("other")), &store(Some("default")))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    let err = Vault::connect(&with_ref(None), &store(None))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("auth.tokenSecretRef"), "{err}");
    Vault::connect(&with_ref(Some("default")), &store(None))
        .await
        .unwrap();
    Vault::connect(&with_ref(None), &store(Some("default")))
        .await
        .unwrap();
}
