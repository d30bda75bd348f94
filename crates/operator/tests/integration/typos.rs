//! On-call typos are visible (issue 29): a rollout target that does not exist and a
//! `revokedVersions` entry naming a version never made each turn `Ready` False — the column
//! `kubectl get secretsync` shows — with a reason and a message that name the typo, as
//! `kubectl secretsync status` prints them. (The Argo Rollouts CRD missing: `argo.rs`.)

use k8s_openapi::api::core::v1::Secret;
use secretsync_api::SecretSync;
use serde_json::json;

use crate::common::{Env, create_deployment, sync_yaml};

const STORE: &[(&str, &str, &str)] = &[("app/db", r#"{"password":"one"}"#, "1")];

#[tokio::test]
async fn a_rollout_target_that_does_not_exist_is_target_not_found_until_it_appears() {
    let env = Env::start("payments").await;
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  rollout: {targets: [{kind: Deployment, name: nothere}]}",
    ))
    .await;
    env.wait_version("db", 1).await;
    let rolled_out = env.wait_failure("db", "RolledOut", "TargetNotFound").await;
    assert_eq!(
        rolled_out,
        "0/1 targets rolled out to db-v1: Deployment nothere not found"
    );
    let (reason, ready) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(reason, "TargetNotFound");
    assert_eq!(
        ready,
        "db-v1 active; 0/1 targets rolled out to db-v1: Deployment nothere not found"
    );
    // The Secret itself is fine: only the rollout is wrong.
    let (reason, _) = env.wait_condition("db", "Synced", "True").await;
    assert_eq!(reason, "Synced");

    // The typo fixed the other way round: the workload appears, and is counted.
    create_deployment(&env, "nothere", "db-v1").await;
    let (reason, message) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("RolloutComplete", "1/1 targets rolled out to db-v1")
    );
    let (reason, _) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(reason, "Synced");
}

#[tokio::test]
async fn a_missing_target_among_others_is_counted_while_the_others_roll() {
    let env = Env::start("payments").await;
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  rollout: {targets: [{kind: Deployment, name: api}, {kind: StatefulSet, name: nothere}]}",
    ))
    .await;
    env.wait_version("db", 1).await;
    create_deployment(&env, "api", "db-v1").await;
    let message = env
        .wait_for::<SecretSync, _>("db", "api complete, nothere missing", |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == "RolledOut"
                        && c.reason == "TargetNotFound"
                        && c.message.starts_with("1/2")
                })
                .map(|c| c.message.clone())
        })
        .await;
    assert_eq!(
        message,
        "1/2 targets rolled out to db-v1: StatefulSet nothere not found"
    );
    let (reason, ready) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(reason, "TargetNotFound");
    assert!(ready.ends_with("StatefulSet nothere not found"), "{ready}");
}

#[tokio::test]
async fn revoking_a_version_never_made_is_a_warning_and_revokes_nothing() {
    let env = Env::start("payments").await;
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    env.wait_version("db", 1).await;
    env.set_fake_data("vault", &[("app/db", r#"{"password":"two"}"#, "2")])
        .await;
    env.wait_version("db", 2).await;

    // 99 typed for 1 during an incident.
    env.merge_sync("db", json!({"spec": {"revokedVersions": [99]}}))
        .await;
    let message = env
        .wait_failure("db", "Ready", "RevokedVersionUnknown")
        .await;
    let expected = "revokedVersions names version 99, which was never made, so it revokes \
                    nothing; the versions that exist are 1, 2 (db-v2 active)";
    assert_eq!(message, expected);
    let events = env
        .wait_events(&["RevokedVersionUnknown"], |e, r| {
            e.reason.as_deref() == Some(r) && e.type_.as_deref() == Some("Warning")
        })
        .await;
    let warning = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("RevokedVersionUnknown"))
        .unwrap();
    assert_eq!(warning.note.as_deref(), Some(expected));
    let (reason, _) = env.wait_condition("db", "Synced", "True").await;
    assert_eq!(reason, "Synced");
    assert_eq!(env.version_secrets("db").await, ["db-v1", "db-v2"]);
    assert!(env.secret("db-v1").await.is_some());

    // The number corrected: Ready again, and version 1 is revoked.
    env.merge_sync("db", json!({"spec": {"revokedVersions": [1]}}))
        .await;
    env.wait_for_absent::<Secret>("db-v1").await;
    let (reason, message) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("Synced", "db-v2 active")
    );
}
