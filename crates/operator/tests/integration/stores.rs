//! Stores report Ready, checked against their backend; and a failing SecretSync reads its
//! backend on its backoff schedule, whatever else wakes it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::{free_port, require_tool};
use serde_json::json;

use crate::common::{Env, sync_yaml};
use crate::vault::vault_store_at;

#[tokio::test]
async fn stores_report_ready_from_their_backend() {
    let env = Env::start("payments").await;
    env.fake_store("fake", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.wait_store("fake", "True", "Valid").await;
    let fake = env.api::<SecretStore>().get("fake").await.unwrap();
    assert_eq!(fake.status.unwrap().provider.as_deref(), Some("fake"));

    // Nothing listens on this port: the backend is unreachable.
    let closed = format!("http://127.0.0.1:{}", free_port());
    vault_store_at(&env, "down", &closed, "t").await;
    env.wait_store("down", "False", "ProviderUnavailable").await;

    // A credential reference that leaves the store's namespace is refused.
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "elsewhere"},
        "spec": {"provider": {"vault": {
            "server": closed, "path": "secret",
            "auth": {"tokenSecretRef": {"name": "t", "key": "token", "namespace": "kube-system"}},
        }}},
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
    let message = env.wait_store("elsewhere", "False", "InvalidSpec").await;
    assert!(message.contains("namespace"), "{message}");
}

#[tokio::test]
async fn a_bad_token_makes_the_store_not_ready_and_a_good_one_ready() {
    let Some(bao) = OpenBao::start() else { return };
    let env = Env::start("payments").await;
    vault_store_at(&env, "vault", &bao.addr(), "not-a-real-token").await;
    env.wait_store("vault", "False", "ProviderAuthFailed").await;

    // Fixing the store (new token Secret, store edited) makes it Ready.
    env.string_secret("good-token", &[("token", bao.root_token())])
        .await;
    env.api::<SecretStore>()
        .patch(
            "vault",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"provider": {"vault": {"auth": {
                "tokenSecretRef": {"name": "good-token", "key": "token"}}}}}})),
        )
        .await
        .unwrap();
    env.wait_store("vault", "True", "Valid").await;

    // What a user sees: the Provider and Ready columns.
    let Some(kubectl) = require_tool("kubectl") else {
        return;
    };
    // Asynchronously: the sandbox serves kubectl from this test's runtime.
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(env.sandbox.kubeconfig_path())
        .args(["get", "secretstores", "-n", &env.ns])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("vault "))
        .unwrap_or_else(|| panic!("no vault row in:\n{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[1..3], ["vault", "True"], "{table}");
}

/// During an outage, a target Deployment scaled up and down over and over wakes the
/// SecretSync each time; the backend must still be read only on the backoff schedule
/// (1 s, 2 s, 4 s, … ±20%), not at every wake-up.
#[tokio::test]
async fn an_outage_is_retried_on_the_backoff_schedule_whatever_wakes_the_sync() {
    let env = Env::start("payments").await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    vault_store_at(&env, "vault", &closed, "t").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "api:1"}]}},
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  rollout: {targets: [{kind: Deployment, name: api}]}",
    ))
    .await;
    env.wait_failure("db", "Ready", "ProviderUnavailable").await;

    let reads = env.operator().backend_reads();
    let reconciles = env.operator().reconciles();
    let started = tokio::time::Instant::now();
    let window = Duration::from_secs(6);
    let mut scaled = 0;
    while started.elapsed() < window {
        let replicas = 1 + scaled % 3;
        env.api::<Deployment>()
            .patch(
                "api",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
        scaled += 1;
        // Pacing of the user's edits, not synchronisation: each edit is its own wake-up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let woken = env.operator().reconciles() - reconciles;
    let read = env.operator().backend_reads() - reads;
    assert!(
        woken >= 10,
        "the scaling woke the SecretSync ({woken} reconciles)"
    );
    // Attempts due within 6 s of the first failure: at ~1 s, ~3 s (and ~7 s, outside).
    assert!(
        read <= 3,
        "{read} backend reads in {window:?} while scaled {scaled} times; backoff bypassed"
    );
    // Nothing was lost meanwhile: the SecretSync still says why.
    let status = env.status("db").await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "ProviderUnavailable");
}
