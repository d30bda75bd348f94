//! The operator process's endpoints and lifecycle: `/metrics` counts the work with bounded
//! labels, `/readyz` follows the caches, SIGTERM exits 0 and releases the Lease.

use std::time::{Duration, Instant};

use secretsync_api::SecretSync;
use secretsync_operator::process::metrics::sum_series;
use serde_json::json;

use crate::common::{DEADLINE, Env, install_crds, install_namespace, sync_yaml};
use crate::process::{OperatorProcess, lease_holder, sample, wait_holder};

const CANARY: &str = "CANARY-metrics-3b9e-never-a-label";

#[tokio::test]
async fn metrics_count_syncs_rotations_and_failures_without_naming_anything() {
    let env = Env::without_operator("payments").await;
    let value = format!(r#"{{"password":"{CANARY}"}}"#);
    env.fake_store("vault", &[("app/db", &value, "1")]).await;
    let operator = OperatorProcess::start(&env.sandbox, "op-metrics", false);

    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    env.wait_version("db", 1).await;
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    let broken = sync_yaml("broken", "vault", "").replace("app/db", "app/missing");
    env.create::<SecretSync>(&broken).await;
    let (reason, _) = env.wait_condition("broken", "Ready", "False").await;
    assert_eq!(reason, "RemoteKeyNotFound");

    // The counters are bumped after the status write the test saw: poll.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        let text = operator.metrics().await;
        let failed = r#"secretsync_reconciles_total{result="error",reason="RemoteKeyNotFound"}"#;
        if sample(&text, failed) >= 1.0 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        sample(
            &text,
            r#"secretsync_reconciles_total{result="success",reason="Synced"}"#
        ) >= 2.0
    );
    assert_eq!(sample(&text, "secretsync_versions_created_total"), 2.0);
    assert!(
        sample(
            &text,
            r#"secretsync_backend_requests_total{provider="fake",result="success"}"#
        ) >= 2.0
    );
    assert!(
        sample(
            &text,
            r#"secretsync_backend_requests_total{provider="fake",result="error"}"#
        ) >= 1.0
    );
    assert!(sample(&text, "secretsync_status_writes_total") >= 3.0);
    assert!(sum_series(&text, "secretsync_reconcile_duration_seconds_count") >= 3.0);
    assert_eq!(
        sample(&text, "secretsync_leader"),
        1.0,
        "no election: always leading"
    );
    assert!(text.contains("secretsync_build_info{"), "{text}");
    // Each SecretSync once, under its Ready condition now: what the alerts count.
    assert_eq!(
        sample(&text, r#"secretsync_syncs{ready="True",reason="Synced"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"secretsync_syncs{ready="False",reason="RemoteKeyNotFound"}"#
        ),
        1.0,
        "{text}"
    );
    // A deleted SecretSync is counted no more.
    env.api::<SecretSync>()
        .delete("broken", &Default::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = operator.metrics().await;
        if sample(
            &now,
            r#"secretsync_syncs{ready="False",reason="RemoteKeyNotFound"}"#,
        ) == 0.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a deleted SecretSync still counted:\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let labels = label_values(&text);
    assert!(!labels.is_empty());
    for value in &labels {
        for forbidden in ["db", "broken", "vault", "payments", "app/", CANARY, "one"] {
            assert!(
                !value.contains(forbidden),
                "label value {value:?} contains {forbidden:?}"
            );
        }
    }
}

/// Every label value in an exposition.
fn label_values(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.split_once('{')?.1.rsplit_once('}')?.0.to_owned()))
        .flat_map(|labels| {
            labels
                .split("\",")
                .filter_map(|pair| Some(pair.split_once("=\"")?.1.trim_end_matches('"').to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn readyz_waits_for_the_caches_and_sigterm_releases_the_lease() {
    // No CRDs yet: the SecretSync and store watches fail, so the caches cannot sync.
    let env = Env::bare().await;
    let mut operator = OperatorProcess::start(&env.sandbox, "op-ready", true);
    operator.wait_alive().await;
    wait_holder(&env.client, &["op-ready"], DEADLINE).await;
    // The Lease names it a moment before the process flips to leading (a standby is
    // ready): it must turn not ready, as its caches cannot fill.
    operator.wait_readyz(503).await;

    install_crds(&env.client).await;
    install_namespace(&env.client, "payments").await;
    operator.wait_readyz(200).await;

    // And it works: a SecretSync created now is synced.
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    env.wait_version("db", 1).await;

    operator.terminate();
    let asked = Instant::now();
    let status = operator.exit_status(Duration::from_secs(10)).await;
    eprintln!("exited {status:?} after {:?}", asked.elapsed());
    assert!(status.success(), "{status:?}; log:\n{}", operator.log());
    assert_eq!(lease_holder(&env.client).await, None, "Lease released");
    assert!(operator.log().contains("released the Lease"));
}
