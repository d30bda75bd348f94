//! Leader election between two operator processes: exactly one reconciles; when it is
//! killed the other takes over within the lease duration, and rotations raised during the
//! handover each make exactly one version.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use secretsync_api::SecretSync;
use secretsync_operator::process::metrics::sum_series;
use serde_json::json;

use crate::common::{DEADLINE, Env, sync_yaml};
use crate::process::{
    LEASE_DURATION, OperatorProcess, RETRY_PERIOD, lease_holder, sample, wait_holder,
};

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over_when_it_dies() {
    let env = Env::without_operator("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;

    let mut a = OperatorProcess::start(&env.sandbox, "op-a", true);
    let mut b = OperatorProcess::start(&env.sandbox, "op-b", true);
    let leader_name = wait_holder(&env.client, &["op-a", "op-b"], DEADLINE).await;
    let (leader, standby) = if leader_name == "op-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    env.wait_version("db", 1).await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);

    // Only the leader did anything; the standby is ready but idle.
    standby.wait_alive().await;
    let led = leader.metrics().await;
    let stood_by = standby.metrics().await;
    assert_eq!(sample(&led, "secretsync_leader"), 1.0);
    assert_eq!(sample(&led, "secretsync_versions_created_total"), 1.0);
    assert_eq!(sample(&stood_by, "secretsync_leader"), 0.0);
    assert_eq!(sample(&stood_by, "secretsync_versions_created_total"), 0.0);
    assert_eq!(
        sum_series(&stood_by, "secretsync_reconciles_total"),
        0.0,
        "the standby reconciled:\n{stood_by}"
    );
    assert_eq!(standby.readyz().await, Some(200), "a standby is ready");
    assert_eq!(leader.readyz().await, Some(200));

    // A rotation raised as the leader dies: made once, by whichever process got to it.
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    leader.kill();
    let killed = Instant::now();
    let new_leader = wait_holder(&env.client, &[&standby.name], DEADLINE).await;
    let takeover = killed.elapsed();
    eprintln!("takeover by {new_leader} after {takeover:?}");
    // Expiry is at most one lease duration after the last renewal (which preceded the
    // kill); the standby notices within a retry period.
    assert!(
        takeover <= LEASE_DURATION + 2 * RETRY_PERIOD,
        "takeover took {takeover:?}"
    );
    env.wait_version("db", 2).await;

    // And one raised after the handover.
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_version("db", 3).await;

    assert_eq!(
        env.version_secrets("db").await,
        ["db-v1", "db-v2", "db-v3"],
        "one version per rotation, no duplicates"
    );
    for (n, spec_version) in [(1, "0"), (2, "1"), (3, "2")] {
        let secret: Secret = env.secret(&format!("db-v{n}")).await.unwrap();
        assert_eq!(
            secret.metadata.annotations.unwrap()["secretsync.io/spec-version"],
            spec_version,
            "db-v{n}"
        );
    }
    let after = standby.metrics().await;
    assert_eq!(sample(&after, "secretsync_leader"), 1.0);
    assert!(sample(&after, "secretsync_versions_created_total") >= 1.0);
    assert_eq!(lease_holder(&env.client).await, Some(new_leader));

    // Nothing more happens: no version beyond the rotations asked for.
    let settled = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < settled {
        assert_eq!(env.version_secrets("db").await.len(), 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
