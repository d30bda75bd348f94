//! The Vault backend against a real OpenBao dev server (one per test).
#![cfg(feature = "vault")]

use std::sync::Arc;
use std::time::Duration;

use secretsync_api::{AppRoleAuth, SecretKeySelector, VaultAuth, VaultKvVersion, VaultProvider};
use secretsync_providers::value::SecretString;
use secretsync_providers::vault::Vault;
use secretsync_providers::{ProviderError, RemoteValue, extract};
use secretsync_testkit::openbao::OpenBao;

/// Planted in every secret: it must never show up in an error or a `Debug`.
const CANARY: &str = "s3cr3t-canary-5e1f";

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

fn token_auth() -> VaultAuth {
    VaultAuth::TokenSecretRef(SecretKeySelector {
        name: "vault-token".into(),
        key: "token".into(),
        namespace: None,
    })
}

fn approle_auth(role_id: &str) -> VaultAuth {
    VaultAuth::AppRole(AppRoleAuth {
        path: None,
        role_id: role_id.into(),
        secret_ref: SecretKeySelector {
            name: "approle".into(),
            key: "secret-id".into(),
            namespace: None,
        },
    })
}

fn with_token(spec: &VaultProvider, token: &str) -> Vault {
    Vault::with_static_credential(spec, SecretString::from(token.to_owned())).unwrap()
}

fn root_vault(bao: &OpenBao) -> Vault {
    with_token(&spec(bao, token_auth()), bao.root_token())
}

fn json(remote: &RemoteValue) -> serde_json::Value {
    serde_json::from_slice(remote.bytes.expose()).unwrap()
}

/// Neither the canary nor any token may appear in what an error prints.
#[track_caller]
fn assert_clean(err: &ProviderError, tokens: &[&str]) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(CANARY), "secret value leaked: {text}");
        for token in tokens {
            assert!(!text.contains(token), "token leaked: {text}");
        }
    }
}

/// A policy `read-app` that may read `secret/app/*` (KV v2), and an AppRole role `app` with
/// it. Returns (role-id, secret-id) as the CLI hands them out.
fn seed_approle(bao: &OpenBao, token_ttl: &str) -> (String, String) {
    bao.bao_ok(&["auth", "enable", "approle"]);
    bao.bao_ok(&[
        "write",
        "sys/policy/read-app",
        r#"policy=path "secret/data/app/*" { capabilities = ["read"] }"#,
    ]);
    bao.bao_ok(&[
        "write",
        "auth/approle/role/app",
        "token_policies=read-app",
        &format!("token_ttl={token_ttl}"),
        "token_max_ttl=1h",
    ]);
    let role_id = bao.bao_ok(&["read", "-field=role_id", "auth/approle/role/app/role-id"]);
    let secret_id = bao.bao_ok(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/app/secret-id",
    ]);
    (role_id, secret_id)
}

fn token_accessors(bao: &OpenBao) -> usize {
    let out = bao.bao_ok(&["list", "-format=json", "auth/token/accessors"]);
    serde_json::from_str::<Vec<String>>(&out).unwrap().len()
}

#[tokio::test]
async fn kv2_reads_latest_and_pinned_versions_with_their_ids() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put(
        "secret",
        "app/db",
        &[("password", "first"), ("user", "app")],
    );
    bao.kv_put("secret", "app/db", &[("password", CANARY), ("user", "app")]);
    let vault = root_vault(&bao);

    let latest = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(latest.version.as_deref(), Some("2"));
    assert_eq!(
        json(&latest),
        serde_json::json!({"password": CANARY, "user": "app"})
    );
    assert_eq!(
        extract::select("app/db", &latest, Some("password"))
            .unwrap()
            .expose(),
        CANARY.as_bytes()
    );
    assert_eq!(
        extract::select("app/db", &latest, Some("user"))
            .unwrap()
            .expose(),
        b"app"
    );
    assert!(!format!("{latest:?}").contains(CANARY));

    let pinned = vault.fetch("app/db", Some("1")).await.unwrap();
    assert_eq!(pinned.version.as_deref(), Some("1"));
    assert_eq!(
        json(&pinned),
        serde_json::json!({"password": "first", "user": "app"})
    );
    // An empty version means the latest, as in the SecretSync spec.
    assert_eq!(
        vault
            .fetch("app/db", Some(""))
            .await
            .unwrap()
            .version
            .as_deref(),
        Some("2")
    );

    let err = vault.fetch("app/db", Some("3")).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::NotFound { ref key } if key == "app/db@3"),
        "{err}"
    );

    let err = vault.fetch("app/db", Some("latest")).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("app/db"), "{err}");
    assert_clean(&err, &[bao.root_token()]);

    let debug = format!("{vault:?}");
    assert!(!debug.contains(bao.root_token()), "{debug}");
    assert_eq!(vault.logins(), 1);
    vault.check().await.unwrap();
}

#[tokio::test]
async fn kv2_deleted_and_destroyed_versions_are_not_found() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    bao.kv_put("secret", "app/db", &[("password", "kept")]);
    bao.bao_ok(&["kv", "delete", "-mount=secret", "-versions=1", "app/db"]);
    bao.bao_ok(&["kv", "destroy", "-mount=secret", "-versions=2", "app/db"]);
    let vault = root_vault(&bao);

    for version in ["1", "2"] {
        let err = vault.fetch("app/db", Some(version)).await.unwrap_err();
        // Deleted or destroyed: not found, saying which (and how to undelete).
        assert!(
            matches!(err, ProviderError::KeyDeleted { .. }),
            "v{version}: {err}"
        );
        assert_eq!(err.reason(), secretsync_api::Reason::RemoteKeyNotFound);
        assert_clean(&err, &[bao.root_token()]);
    }
    assert_eq!(
        vault
            .fetch("app/db", Some("3"))
            .await
            .unwrap()
            .version
            .as_deref(),
        Some("3")
    );

    // The latest version deleted: the key reads as missing, saying so.
    bao.bao_ok(&["kv", "delete", "-mount=secret", "app/db"]);
    let err = vault.fetch("app/db", None).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::KeyDeleted { ref key, .. } if key == "app/db"),
        "{err}"
    );
    assert_eq!(err.reason(), secretsync_api::Reason::RemoteKeyNotFound);
}

#[tokio::test]
async fn kv1_mounts_have_values_but_no_versions() {
    let Some(bao) = OpenBao::start() else { return };
    bao.bao_ok(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    bao.kv_put("kv1", "app/db", &[("password", CANARY), ("port", "5432")]);
    let vault = with_token(
        &VaultProvider {
            path: Some("kv1".into()),
            version: Some(VaultKvVersion::V1),
            ..spec(&bao, token_auth())
        },
        bao.root_token(),
    );

    let value = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(value.version, None);
    assert_eq!(
        json(&value),
        serde_json::json!({"password": CANARY, "port": "5432"})
    );
    assert_eq!(
        extract::select("app/db", &value, Some("port"))
            .unwrap()
            .expose(),
        b"5432"
    );

    let err = vault.fetch("app/db", Some("1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("KV v1"), "{err}");
    assert_clean(&err, &[bao.root_token()]);

    let err = vault.fetch("app/missing", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn missing_paths_and_mounts_are_not_found() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let vault = root_vault(&bao);
    let err = vault.fetch("app/nope", None).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::NotFound { ref key } if key == "app/nope"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_clean(&err, &[bao.root_token()]);

    let other_mount = with_token(
        &VaultProvider {
            path: Some("nomount".into()),
            ..spec(&bao, token_auth())
        },
        bao.root_token(),
    );
    let err = other_mount.fetch("app/db", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::NotFound { .. } | ProviderError::AuthFailed(_)
        ),
        "{err}"
    );
    assert_clean(&err, &[bao.root_token()]);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_failure_after_one_retry() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let wrong = "s.wrongwrongwrongwrong";
    let vault = with_token(&spec(&bao, token_auth()), wrong);

    let err = vault.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("secret/app/db"), "{err}");
    assert!(!err.is_retryable());
    assert_clean(&err, &[wrong, bao.root_token()]);
    assert_eq!(vault.logins(), 2, "one login, one retry after the 403");

    let err = vault.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert_clean(&err, &[wrong]);
    assert!(!format!("{vault:?}").contains(wrong));
}

#[tokio::test]
async fn a_revoked_token_fails_after_one_retry() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    seed_approle(&bao, "1h"); // for the read-app policy
    let token = bao.bao_ok(&["token", "create", "-policy=read-app", "-field=token"]);
    let vault = with_token(&spec(&bao, token_auth()), &token);
    vault.fetch("app/db", None).await.unwrap();
    assert_eq!(vault.logins(), 1);

    // Outside its policy: denied, with the path and what to check.
    let err = vault.fetch("other/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("permission denied reading secret/other/db"),
        "{text}"
    );
    assert!(text.contains("policies"), "{text}");
    assert_clean(&err, &[&token]);

    bao.bao_ok(&["token", "revoke", &token]);
    let logins = vault.logins();
    let err = vault.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert_clean(&err, &[&token]);
    assert_eq!(vault.logins(), logins + 1, "exactly one retry");
}

#[tokio::test]
async fn approle_logs_in_and_reads_what_its_policy_allows() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let (role_id, secret_id) = seed_approle(&bao, "1h");
    let vault = Vault::with_static_credential(
        &spec(&bao, approle_auth(&role_id)),
        SecretString::from(secret_id.clone()),
    )
    .unwrap();
    assert_eq!(vault.logins(), 0, "logging in waits for the first use");

    let value = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(json(&value), serde_json::json!({"password": CANARY}));
    assert_eq!(value.version.as_deref(), Some("1"));
    vault.check().await.unwrap();
    assert_eq!(vault.logins(), 1);
    assert!(!format!("{vault:?}").contains(&secret_id));

    let wrong = Vault::with_static_credential(
        &spec(&bao, approle_auth(&role_id)),
        SecretString::from("00000000-0000-0000-0000-000000000000".to_owned()),
    )
    .unwrap();
    let err = wrong.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("auth/approle/login"), "{err}");
    assert_clean(&err, &[&secret_id, bao.root_token()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_share_one_login() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let (role_id, secret_id) = seed_approle(&bao, "1h");
    let vault = Arc::new(
        Vault::with_static_credential(
            &spec(&bao, approle_auth(&role_id)),
            SecretString::from(secret_id),
        )
        .unwrap(),
    );
    let tokens_before = token_accessors(&bao);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let vault = vault.clone();
        tasks.spawn(async move { vault.fetch("app/db", None).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().version.as_deref(), Some("1"));
    }
    assert_eq!(vault.logins(), 1);
    assert_eq!(
        token_accessors(&bao),
        tokens_before + 1,
        "Vault issued one token"
    );
}

#[tokio::test]
async fn an_outage_is_unavailable_and_heals_with_a_fresh_login() {
    let Some(mut bao) = OpenBao::start() else {
        return;
    };
    // Fixed ids, so the restarted (empty) server can be seeded with the same credentials.
    let seed = |bao: &OpenBao| {
        bao.kv_put("secret", "app/db", &[("password", CANARY)]);
        seed_approle(bao, "1h");
        bao.bao_ok(&["write", "auth/approle/role/app/role-id", "role_id=app-role"]);
        bao.bao_ok(&[
            "write",
            "auth/approle/role/app/custom-secret-id",
            "secret_id=app-secret-id-1234",
        ]);
    };
    seed(&bao);
    let vault = Vault::with_static_credential(
        &spec(&bao, approle_auth("app-role")),
        SecretString::from("app-secret-id-1234".to_owned()),
    )
    .unwrap();
    vault.fetch("app/db", None).await.unwrap();
    assert_eq!(vault.logins(), 1);

    bao.stop();
    let err = vault.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&bao.addr()), "{err}");
    assert_clean(&err, &["app-secret-id-1234"]);
    let err = vault.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");

    bao.start_again();
    seed(&bao);
    // The old token died with the server: a 403, then a fresh login.
    let value = vault.fetch("app/db", None).await.unwrap();
    assert_eq!(json(&value), serde_json::json!({"password": CANARY}));
    assert_eq!(vault.logins(), 2);
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let (role_id, secret_id) = seed_approle(&bao, "12s");
    let vault = Vault::with_static_credential(
        &spec(&bao, approle_auth(&role_id)),
        SecretString::from(secret_id),
    )
    .unwrap();
    vault.fetch("app/db", None).await.unwrap();

    // Past two thirds of the TTL: renewed, not logged in again; then past the original
    // expiry, still the same (renewed) token.
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    vault.fetch("app/db", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    vault.fetch("app/db", None).await.unwrap();
    assert_eq!(vault.logins(), 1);
}

#[tokio::test]
async fn namespaces_are_sent_with_every_request() {
    let Some(bao) = OpenBao::start() else { return };
    bao.bao_ok(&["namespace", "create", "team-a"]);
    bao.bao_ok(&["secrets", "enable", "-ns=team-a", "-path=secret", "kv-v2"]);
    bao.bao_ok(&[
        "kv",
        "put",
        "-ns=team-a",
        "-mount=secret",
        "app/db",
        &format!("password={CANARY}"),
    ]);

    let in_namespace = with_token(
        &VaultProvider {
            namespace: Some("team-a".into()),
            ..spec(&bao, token_auth())
        },
        bao.root_token(),
    );
    let value = in_namespace.fetch("app/db", None).await.unwrap();
    assert_eq!(json(&value), serde_json::json!({"password": CANARY}));

    let err = root_vault(&bao).fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    let Some(bao) = OpenBao::start() else { return };
    let bad = |spec: VaultProvider| {
        let err =
            Vault::with_static_credential(&spec, SecretString::from("t".to_owned())).unwrap_err();
        assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
        err.to_string()
    };
    let base = spec(&bao, token_auth());
    let text = bad(VaultProvider {
        ca_bundle: Some("not base64!".into()),
        ..base.clone()
    });
    assert!(text.contains("caBundle"), "{text}");
    use base64::Engine as _;
    let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
    let text = bad(VaultProvider {
        ca_bundle: Some(not_pem),
        ..base.clone()
    });
    assert!(text.contains("caBundle"), "{text}");
    bad(VaultProvider {
        server: "vault:8200".into(),
        ..base.clone()
    });
    bad(VaultProvider {
        namespace: Some("team\na".into()),
        ..base.clone()
    });
}

#[tokio::test]
async fn https_servers_are_trusted_through_the_ca_bundle_only() {
    use base64::Engine as _;
    let Some(bao) = OpenBao::start_tls() else {
        return;
    };
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    let bundle = base64::engine::general_purpose::STANDARD.encode(bao.ca_pem().unwrap());
    let trusted = with_token(
        &VaultProvider {
            ca_bundle: Some(bundle),
            ..spec(&bao, token_auth())
        },
        bao.root_token(),
    );
    let value = trusted.fetch("app/db", None).await.unwrap();
    assert_eq!(json(&value), serde_json::json!({"password": CANARY}));

    // Without the bundle the generated CA is unknown: the TLS handshake fails.
    let untrusted = root_vault(&bao);
    let err = untrusted.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::TlsFailed(_)), "{err}");
    assert!(err.to_string().contains(&bao.addr()), "{err}");
    assert_clean(&err, &[bao.root_token()]);
}

fn find(name: Option<&str>, path: Option<&str>) -> secretsync_api::Find {
    secretsync_api::Find {
        name: name.map(|r| secretsync_api::FindName { regexp: r.into() }),
        tags: None,
        path: path.map(Into::into),
    }
}

fn names(found: &[(String, RemoteValue)]) -> Vec<&str> {
    found.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn find_lists_kv2_folders_recursively_and_reads_the_latest_versions() {
    let Some(bao) = OpenBao::start() else { return };
    bao.kv_put("secret", "app/payments/db", &[("password", CANARY)]);
    bao.kv_put("secret", "app/payments/api/key", &[("token", "t")]);
    bao.kv_put("secret", "app/payments/old", &[("v", "1")]);
    bao.kv_put("secret", "app/payments/old", &[("v", "2")]);
    bao.kv_put("secret", "app/payments-other/db", &[("v", "x")]);
    bao.kv_put("secret", "app/orders/db", &[("v", "o")]);
    let vault = root_vault(&bao);

    let found = vault.find(&find(None, Some("app/payments"))).await.unwrap();
    assert_eq!(
        names(&found),
        [
            "app/payments/api/key",
            "app/payments/db",
            "app/payments/old"
        ]
    );
    assert_eq!(json(&found[1].1), serde_json::json!({"password": CANARY}));
    assert_eq!(found[2].1.version.as_deref(), Some("2"));
    assert_eq!(json(&found[2].1), serde_json::json!({"v": "2"}));

    // The pattern applies to the whole path below the mount, anywhere unless anchored.
    let found = vault
        .find(&find(Some("/db$"), Some("/app/payments/")))
        .await
        .unwrap();
    assert_eq!(names(&found), ["app/payments/db"]);
    let found = vault.find(&find(Some("db$"), None)).await.unwrap();
    assert_eq!(
        names(&found),
        ["app/orders/db", "app/payments-other/db", "app/payments/db"]
    );
    assert!(
        vault
            .find(&find(None, Some("app/nothing")))
            .await
            .unwrap()
            .is_empty()
    );

    let tags = secretsync_api::Find {
        tags: Some([("team".to_owned(), "payments".to_owned())].into()),
        ..find(None, Some("app"))
    };
    let err = vault.find(&tags).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("find.tags"), "{err}");
}

#[tokio::test]
async fn find_works_on_kv1_and_needs_list_permission() {
    let Some(bao) = OpenBao::start() else { return };
    bao.bao_ok(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    bao.kv_put("kv1", "app/a", &[("password", CANARY)]);
    bao.kv_put("kv1", "app/sub/b", &[("user", "b")]);
    let kv1 = with_token(
        &VaultProvider {
            path: Some("kv1".into()),
            version: Some(VaultKvVersion::V1),
            ..spec(&bao, token_auth())
        },
        bao.root_token(),
    );
    let found = kv1.find(&find(None, Some("app"))).await.unwrap();
    assert_eq!(names(&found), ["app/a", "app/sub/b"]);
    assert_eq!(found[0].1.version, None);
    assert_eq!(json(&found[1].1), serde_json::json!({"user": "b"}));

    // A token that may read but not list: an auth failure, not an empty result.
    bao.kv_put("secret", "app/db", &[("password", CANARY)]);
    bao.bao_ok(&[
        "write",
        "sys/policy/read-only",
        r#"policy=path "secret/data/app/*" { capabilities = ["read"] }"#,
    ]);
    let token = bao.bao_ok(&["token", "create", "-policy=read-only", "-field=token"]);
    let reader = with_token(&spec(&bao, token_auth()), &token);
    reader.fetch("app/db", None).await.unwrap();
    let err = reader.find(&find(None, Some("app"))).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("listing secret/app/"), "{err}");
    assert_clean(&err, &[&token, bao.root_token()]);
}
