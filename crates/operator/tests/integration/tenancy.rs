//! Tenancy: a store lends a namespace nothing it may not have. Each denial is seen on the
//! SecretSync as `StoreNotAllowed`, and nothing is written. (A ClusterSecretStore's
//! `conditions.namespaces` denial is `failures::cluster_store_not_allowed_for_the_namespace`.)

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync};
use serde_json::json;

use crate::common::{Env, sync_yaml};

#[tokio::test]
async fn a_secretstore_whose_credentials_leave_its_namespace_is_not_allowed() {
    let env = Env::start("payments").await;
    // The credentials exist, in another namespace: they must not be read.
    let closed = format!("http://127.0.0.1:{}", secretsync_testkit::free_port());
    for (store, auth, field) in [
        (
            "token",
            json!({"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": "kube-system"}}),
            "tokenSecretRef.namespace: kube-system",
        ),
        (
            "approle",
            json!({"appRole": {"path": "approle", "roleId": "r", "secretRef": {"name": "approle", "key": "id", "namespace": "kube-system"}}}),
            "appRole.secretRef.namespace: kube-system",
        ),
        (
            "k8s",
            json!({"kubernetes": {"mountPath": "kubernetes", "role": "app", "serviceAccountRef": {"name": "admin", "namespace": "kube-system"}}}),
            "serviceAccountRef.namespace: kube-system",
        ),
    ] {
        let obj: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": store},
            "spec": {"provider": {"vault": {"server": closed, "path": "secret", "auth": auth}}},
        }))
        .unwrap();
        env.api::<SecretStore>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
        env.create::<SecretSync>(&sync_yaml(store, store, "")).await;
        let message = env.wait_failure(store, "Ready", "StoreNotAllowed").await;
        assert!(message.contains(field), "{message}");
        assert!(message.contains("own namespace"), "{message}");
        assert!(env.version_secrets(store).await.is_empty());
    }
}

#[tokio::test]
async fn a_namespace_label_change_admits_or_refuses_at_once() {
    let env = Env::start("payments").await;
    Api::<ClusterSecretStore>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretStore",
                "metadata": {"name": "shared"},
                "spec": {
                    "provider": {"fake": {"data": [{"key": "app/db", "value": "{\"password\":\"x\"}", "version": "1"}]}},
                    "conditions": [{"namespaceSelector": {"matchLabels": {"secrets": "allowed"}}}],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // No polling: only the Namespace watch can make the label changes matter.
    env.create::<SecretSync>(
        &sync_yaml("db", "shared", "  refreshInterval: \"0\"").replace(
            "storeRef: {name: shared}",
            "storeRef: {name: shared, kind: ClusterSecretStore}",
        ),
    )
    .await;
    let message = env.wait_failure("db", "Ready", "StoreNotAllowed").await;
    assert!(message.contains("\"payments\""), "{message}");
    assert!(env.version_secrets("db").await.is_empty());

    // Label added: admitted at once.
    label(&env, Some("allowed")).await;
    env.wait_version("db", 1).await;
    env.wait_condition("db", "Ready", "True").await;
    // Label removed: refused at once, though nothing is due; the version made stays.
    label(&env, None).await;
    env.wait_failure("db", "Ready", "StoreNotAllowed").await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
}

/// Sets (or with `None` removes) the `secrets` label of namespace `payments`.
async fn label(env: &Env, value: Option<&str>) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"secrets": value}}})),
        )
        .await
        .unwrap();
}
