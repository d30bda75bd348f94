//! ServiceAccount TokenRequest and TokenReview, and OpenBao's Kubernetes auth against them.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;

use secretsync_sandbox::Sandbox;

use crate::common::status_of;

async fn token_for(sb: &Sandbox, ns: &str, sa: &str, audiences: &[&str]) -> kube::Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(sb.client(), ns);
    let req: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": audiences, "expirationSeconds": 3600}}),
    )
    .unwrap();
    let tr = sas
        .create_token_request(sa, &PostParams::default(), &req)
        .await?;
    Ok(tr.status.unwrap().token)
}

async fn review(sb: &Sandbox, token: &str, audiences: &[&str]) -> TokenReview {
    let api: Api<TokenReview> = Api::all(sb.client());
    let tr: TokenReview =
        serde_json::from_value(json!({"spec": {"token": token, "audiences": audiences}})).unwrap();
    api.create(&PostParams::default(), &tr).await.unwrap()
}

async fn create_sa(sb: &Sandbox, name: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(sb.client(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
}

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn token_request_issues_a_jwt_that_token_review_accepts() {
    let sb = Sandbox::start().await.unwrap();
    let e = status_of(token_for(&sb, "default", "ghost", &[]).await.unwrap_err());
    assert_eq!(e.code, 404);
    create_sa(&sb, "app").await;
    let token = token_for(&sb, "default", "app", &["bao"]).await.unwrap();
    let c = claims(&token);
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(c["sub"], "system:serviceaccount:default:app");
    assert_eq!(c["aud"], json!(["bao"]));
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "app");
    assert!(c["exp"].as_i64().unwrap() > c["iat"].as_i64().unwrap());

    let r = review(&sb, &token, &["bao"]).await.status.unwrap();
    assert!(r.authenticated.unwrap());
    let user = r.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    let groups = user.groups.unwrap();
    assert!(groups.contains(&"system:serviceaccounts".to_string()));
    assert!(groups.contains(&"system:serviceaccounts:default".to_string()));
    assert_eq!(r.audiences.unwrap(), ["bao"]);

    let wrong = review(&sb, &token, &["other"]).await.status.unwrap();
    assert_eq!(wrong.authenticated, Some(false));
    let forged = review(&sb, &format!("{token}x"), &[]).await.status.unwrap();
    assert_eq!(forged.authenticated, Some(false));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kubernetes_auth_logs_in_with_a_sandbox_token() {
    let sb = Sandbox::start().await.unwrap();
    create_sa(&sb, "syncer").await;
    let token = token_for(&sb, "default", "syncer", &["openbao"])
        .await
        .unwrap();
    let url = sb.url().to_string();
    let bao = tokio::task::spawn_blocking(secretsync_testkit::openbao::OpenBao::start)
        .await
        .unwrap();
    let Some(bao) = bao else { return };
    let bao = Arc::new(bao);
    let b = bao.clone();
    let out = tokio::task::spawn_blocking(move || {
        b.bao_ok(&["auth", "enable", "kubernetes"]);
        b.bao_ok(&[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={url}"),
            "disable_local_ca_jwt=true",
            &format!(
                "kubernetes_ca_cert={}",
                secretsync_sandbox::PLACEHOLDER_CA_PEM
            ),
        ]);
        b.bao_ok(&[
            "write",
            "auth/kubernetes/role/syncer",
            "bound_service_account_names=syncer",
            "bound_service_account_namespaces=default",
            "audience=openbao",
            "token_policies=default",
        ]);
        b.bao(&[
            "write",
            "-format=json",
            "auth/kubernetes/login",
            "role=syncer",
            &format!("jwt={token}"),
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["auth"]["metadata"]["service_account_name"], "syncer");
    assert!(
        sb.stats()
            .count("create", "authentication.k8s.io", "tokenreviews")
            >= 1
    );
    sb.shutdown().await;
}
