//! `--namespace` (repeatable) and `--selector`: an operator reconciles exactly the
//! SecretSyncs of its shard, so several deployments can split a cluster.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::process::metrics::Metrics;
use secretsync_operator::{Config, RunOptions};
use serde_json::json;

use crate::common::{DEADLINE, Env, install_namespace};

#[tokio::test]
async fn an_operator_reconciles_only_its_namespaces_and_selector() {
    let env = Env::without_operator("payments").await;
    for ns in ["orders", "other"] {
        install_namespace(&env.client, ns).await;
    }
    let put = async |ns: &str, name: &str, shard: Option<&str>| {
        let store: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "vault"},
            "spec": {"provider": {"fake": {"data": [{"key": "app/db", "value": "{\"password\":\"x\"}", "version": "1"}]}}},
        }))
        .unwrap();
        let stores: Api<SecretStore> = Api::namespaced(env.client.clone(), ns);
        let _ = stores.create(&PostParams::default(), &store).await;
        let labels = shard.map(|s| json!({"shard": s})).unwrap_or(json!({}));
        let sync: SecretSync = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
            "metadata": {"name": name, "labels": labels},
            "spec": {"storeRef": {"name": "vault"},
                     "data": [{"secretKey": "password", "remoteRef": {"key": "app/db", "property": "password"}}]},
        }))
        .unwrap();
        Api::<SecretSync>::namespaced(env.client.clone(), ns)
            .create(&PostParams::default(), &sync)
            .await
            .unwrap();
    };
    put("payments", "mine", Some("a")).await;
    put("orders", "mine", Some("a")).await;
    put("payments", "unlabelled", None).await;
    put("orders", "theirs", Some("b")).await;
    put("other", "mine", Some("a")).await;

    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions {
        namespaces: vec!["payments".into(), "orders".into()],
        selector: Some("shard=a".into()),
        ..RunOptions::default()
    };
    let caches_synced = options.caches_synced.clone();
    let operator = tokio::spawn(secretsync_operator::run(
        env.client.clone(),
        Config::default(),
        options,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    let secret = |ns: &str, name: &str| {
        let api: Api<Secret> = Api::namespaced(env.client.clone(), ns);
        let name = name.to_owned();
        async move { api.get_opt(&name).await.unwrap() }
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while secret("payments", "mine-v1").await.is_none()
        || secret("orders", "mine-v1").await.is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "shard not synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caches_synced.load(std::sync::atomic::Ordering::Acquire));
    // The others were listed at the same moment and would have been synced as quickly.
    assert_eq!(metrics.reconcile_errors(), 0);
    assert!(secret("payments", "unlabelled-v1").await.is_none());
    assert!(secret("orders", "theirs-v1").await.is_none());
    assert!(secret("other", "mine-v1").await.is_none());
    assert_eq!(metrics.versions_created(), 2);

    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("graceful shutdown")
        .expect("not panicked");
    assert!(stopped.is_ok(), "{stopped:?}");
}
