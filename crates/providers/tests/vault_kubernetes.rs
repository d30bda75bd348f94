//! The Vault backend's Kubernetes side against the sandbox API server and a real OpenBao:
//! credentials read from Secrets through `kube::Client`, and where references resolve.
#![cfg(feature = "vault")]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use secretsync_api::{
    AppRoleAuth, KubernetesAuth, SecretKeySelector, ServiceAccountRef, VaultAuth, VaultProvider,
};
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
        tls: None,
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
    let ctx = ConnectContext::new(sandbox.client(), Some("default".into()));
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
    let ctx = ConnectContext::new(sandbox.client(), None);
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
    let store =
        |namespace: Option<&str>| ConnectContext::new(sandbox.client(), namespace.map(Into::into));
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

/// OpenBao's kubernetes auth at `auth/kubernetes`, checking tokens with the sandbox's
/// TokenReview; role `syncer` admits ServiceAccount default/syncer for audience `openbao`.
fn seed_kubernetes_auth(bao: &OpenBao, sandbox: &Sandbox) {
    bao.bao_ok(&["auth", "enable", "kubernetes"]);
    bao.bao_ok(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", sandbox.url()),
        "disable_local_ca_jwt=true",
        &format!(
            "kubernetes_ca_cert={}",
            secretsync_sandbox::PLACEHOLDER_CA_PEM
        ),
    ]);
    bao.bao_ok(&[
        "write",
        "auth/kubernetes/role/syncer",
        "bound_service_account_names=syncer",
        "bound_service_account_namespaces=default",
        "audience=openbao",
        "token_policies=read-app",
    ]);
}

fn kubernetes_auth(account: &str) -> VaultAuth {
    VaultAuth::Kubernetes(KubernetesAuth {
        mount_path: None,
        role: "syncer".into(),
        service_account_ref: ServiceAccountRef {
            name: account.into(),
            namespace: None,
        },
        audiences: Some(vec!["openbao".into()]),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auth_logs_in_with_a_requested_service_account_token() {
    let Some(bao) = OpenBao::start() else { return };
    let sandbox = Sandbox::start().await.unwrap();
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    seed_policy(&bao);
    seed_kubernetes_auth(&bao, &sandbox);
    let accounts: Api<ServiceAccount> = Api::namespaced(sandbox.client(), "default");
    for name in ["syncer", "intruder"] {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
    let ctx = ConnectContext::new(sandbox.client(), Some("default".into()));

    let vault = Vault::connect(&spec(&bao, kubernetes_auth("syncer")), &ctx)
        .await
        .unwrap();
    let value = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(value.version.as_deref(), Some("1"));
    vault.check().await.unwrap();
    assert_eq!(vault.logins(), 1);

    // A ServiceAccount the role does not admit: Vault rejects the login.
    let intruder = Vault::connect(&spec(&bao, kubernetes_auth("intruder")), &ctx)
        .await
        .unwrap();
    let err = intruder.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("auth/kubernetes/login"), "{text}");
    assert!(text.contains("default/intruder"), "{text}");
    assert!(!text.contains(CANARY));

    // No such ServiceAccount: the TokenRequest fails before Vault is asked.
    let missing = Vault::connect(&spec(&bao, kubernetes_auth("nobody")), &ctx)
        .await
        .unwrap();
    let err = missing.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("default/nobody"), "{err}");
}
