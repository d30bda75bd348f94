//! The operator changes or deletes only Secrets it owns (guarantee 1, docs/reference/guarantees.md), and a
//! SecretSync blocked by another's claim proceeds once that claim goes, without an edit.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use secretsync_api::{SecretSync, VersionState};
use serde_json::json;

use crate::common::{Env, password, sync_yaml};

/// A user keeps `db-v1` by removing our ownerReference, as `kubectl patch secret db-v1
/// --type=json -p '[{"op":"remove","path":"/metadata/ownerReferences"}]'` does. History
/// would delete it at the next rotation if it were still ours; it must survive, and its
/// number must not be reused.
#[tokio::test]
async fn a_secret_its_user_disowned_is_never_deleted() {
    let env = Env::start("payments").await;
    env.fake_store("fake", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "fake", "  history: {limit: 1}"))
        .await;
    env.wait_version("db", 1).await;

    env.api::<Secret>()
        .patch(
            "db-v1",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    // Letting go is not a change: once the operator has seen it, still no new version.
    env.wait_version_state("db", 1, VersionState::Disowned)
        .await;
    assert_eq!(env.status("db").await.current_version, Some(1));
    assert!(
        env.secret("db-v2").await.is_none(),
        "disowning made a version"
    );

    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    // Settled: v2 active, v1 still listed as the user's own.
    env.wait_for::<SecretSync, _>("db", "db-v2 active, db-v1 disowned", |s| {
        let versions = &s.status.as_ref()?.versions;
        let v1 = versions.iter().find(|v| v.version == 1)?;
        (v1.state == VersionState::Disowned
            && versions
                .iter()
                .any(|v| v.version == 2 && v.state == VersionState::Active))
        .then_some(())
    })
    .await;
    let kept = env
        .secret("db-v1")
        .await
        .expect("the disowned Secret is kept");
    assert_eq!(password(&kept), b"one");
    assert!(kept.owner_references().is_empty());

    // Its number stays used.
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_version("db", 3).await;
    assert_eq!(env.version_secrets("db").await, ["db-v1", "db-v3"]);
    assert!(
        env.secret("db-v2").await.is_none(),
        "history limit 1 pruned v2"
    );
}

/// `second` waits behind `first`'s claim on the target name. Deleting `first` (with
/// `Delete`, so its Secrets go) lets `second` sync without anyone editing it. With `Retain`
/// the kept Secret blocks the name until the user deletes it, and that wakes `second` too.
#[tokio::test]
async fn a_target_conflict_clears_when_the_other_claim_goes() {
    let env = Env::start("payments").await;
    env.fake_store("fake", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("first", "fake", "  target: {name: db}"))
        .await;
    env.wait_version("first", 1).await;
    env.create::<SecretSync>(&sync_yaml("second", "fake", "  target: {name: db}"))
        .await;
    let (reason, message) = env.wait_condition("second", "Ready", "False").await;
    assert_eq!(reason, "TargetConflict", "{message}");

    env.api::<SecretSync>()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let synced = env.wait_version("second", 1).await;
    let v1 = env.secret("db-v1").await.unwrap();
    assert_eq!(
        v1.owner_references()[0].uid,
        synced.uid().unwrap(),
        "db-v1 now belongs to second"
    );
    env.wait_condition("second", "Ready", "True").await;

    // Retain: the kept, unowned db-v1 of `third` holds the name until it is deleted.
    env.create::<SecretSync>(&sync_yaml(
        "third",
        "fake",
        "  target: {name: cache}\n  deletionPolicy: Retain",
    ))
    .await;
    env.wait_version("third", 1).await;
    env.create::<SecretSync>(&sync_yaml("fourth", "fake", "  target: {name: cache}"))
        .await;
    let (reason, _) = env.wait_condition("fourth", "Ready", "False").await;
    assert_eq!(reason, "TargetConflict");
    env.api::<SecretSync>()
        .delete("third", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("third").await;
    let retained = env
        .secret("cache-v1")
        .await
        .expect("Retain keeps the Secret");
    assert!(retained.owner_references().is_empty());
    let (reason, message) = env.wait_condition("fourth", "Ready", "False").await;
    assert_eq!(reason, "TargetConflict");
    assert!(message.contains("cache-v1"), "{message}");
    assert!(env.secret("cache-v1").await.is_some(), "never touched");

    env.api::<Secret>()
        .delete("cache-v1", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_version("fourth", 1).await;
    env.wait_condition("fourth", "Ready", "True").await;
}
