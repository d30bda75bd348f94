//! What on-call engineers and their tools do to our Secrets and workloads never causes an
//! outage, a step back or lost data (guarantees 1 and 3, docs/reference/guarantees.md). Each test is one everyday
//! action, done the way `kubectl` does it, with what the user then sees asserted.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use secretsync_api::{SecretSync, VersionState};
use serde_json::json;

use crate::common::{Env, create_deployment, password, rollout_undo, sync_yaml};

/// The names of the Secrets the Deployment's pod template references.
async fn template_refs(env: &Env, name: &str) -> Vec<String> {
    let d = env.api::<Deployment>().get(name).await.unwrap();
    let spec = d.spec.unwrap().template.spec.unwrap();
    spec.containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| Some(e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone()))
        .collect()
}

/// Waits until Deployment `name` references exactly `secret`.
pub(crate) async fn wait_template(env: &Env, name: &str, secret: &str) {
    env.wait_for::<Deployment, _>(name, &format!("{name} on {secret}"), |d| {
        let spec = d.spec.as_ref()?.template.spec.as_ref()?;
        let refs: Vec<&str> = spec
            .containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .filter_map(|e| {
                Some(
                    e.value_from
                        .as_ref()?
                        .secret_key_ref
                        .as_ref()?
                        .name
                        .as_str(),
                )
            })
            .collect();
        (refs == [secret]).then_some(())
    })
    .await;
}

async fn set_password(env: &Env, password: &str, version: &str) {
    env.set_fake_data(
        "fake",
        &[(
            "app/db",
            &format!(r#"{{"password":"{password}"}}"#),
            version,
        )],
    )
    .await;
}

/// A store, SecretSync `db` with `extra` spec lines rolling Deployment `app`, synced and
/// rolled out to `db-v1`.
async fn seed(env: &Env, extra: &str) {
    env.fake_store("fake", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    create_deployment(env, "app", "db-v1").await;
    let extra = format!("  rollout: {{targets: [{{kind: Deployment, name: app}}]}}\n{extra}");
    env.create::<SecretSync>(&sync_yaml("db", "fake", &extra))
        .await;
    env.wait_version("db", 1).await;
    env.wait_condition("db", "RolledOut", "True").await;
}

async fn json_patch(env: &Env, secret: &str, ops: serde_json::Value) {
    env.api::<Secret>()
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap();
}

async fn label(env: &Env, secret: &str, key: &str, value: Option<&str>) {
    env.api::<Secret>()
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap();
}

/// `kubectl patch secretsync db --type=merge -p '{"spec":{"target":{"name":"db2"}}}'`, then a
/// backend change, with `history.limit: 1`: the Deployment moves to `db2-v2`, and `db-v1` goes
/// only once nothing references it.
#[tokio::test]
async fn renaming_the_target_moves_workloads_and_prunes_only_what_is_unused() {
    let env = Env::start("payments").await;
    seed(&env, "  history: {limit: 1}").await;
    env.merge_sync("db", json!({"spec": {"target": {"name": "db2"}}}))
        .await;
    set_password(&env, "two", "2").await;
    env.wait_version("db", 2).await;
    wait_template(&env, "app", "db2-v2").await;
    let (_, message) = env.wait_condition("db", "RolledOut", "True").await;
    assert!(message.contains("db2-v2"), "{message}");
    env.wait_for_absent::<Secret>("db-v1").await;
    assert_eq!(template_refs(&env, "app").await, ["db2-v2"]);
}

/// `kubectl delete secret db-v2` while v2 is active: the next version is made from a fresh read
/// and the workload moves forward to it — never back to `db-v1` — with a Warning saying why.
#[tokio::test]
async fn deleting_the_active_secret_makes_the_next_version_never_a_step_back() {
    let env = Env::start("payments").await;
    seed_rolled_out_to_v2(&env).await;

    env.api::<Secret>()
        .delete("db-v2", &DeleteParams::default())
        .await
        .unwrap();
    moves_forward_from_v2_to_v3(&env).await;
    let v3 = env.secret("db-v3").await.expect("db-v3 made");
    assert_eq!(password(&v3), b"two");
    let status = env.status("db").await;
    assert_eq!(status.current_version, Some(3));
    assert_eq!(status.active_version, Some(3));
    let events = env
        .wait_events(&["db-v2"], |e, w| {
            e.reason.as_deref() == Some("ActiveVersionDeleted")
                && e.type_.as_deref() == Some("Warning")
                && e.note.as_deref().is_some_and(|n| n.contains(w))
        })
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("db-v3")))
    );
}

/// [`seed`] with a 1 h refresh, then a backend change ("two") rolled out to `db-v2`.
async fn seed_rolled_out_to_v2(env: &Env) {
    seed(env, "  refreshInterval: 1h").await;
    // A store edit reads the backend at once, whatever the refresh interval.
    set_password(env, "two", "2").await;
    env.wait_version("db", 2).await;
    wait_template(env, "app", "db-v2").await;
    env.wait_condition("db", "RolledOut", "True").await;
}

/// Waits for Deployment `app` to reference `db-v3`, checking at every poll that it never
/// went back to `db-v1` and that `currentVersion` never went below 2.
async fn moves_forward_from_v2_to_v3(env: &Env) {
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let refs = template_refs(env, "app").await;
        assert_ne!(refs, ["db-v1"], "the Deployment was rolled back to db-v1");
        let status = env.status("db").await;
        assert!(
            status.current_version >= Some(2),
            "currentVersion went back: {:?}",
            status.current_version
        );
        if refs == ["db-v3"] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never moved to db-v3"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The active version disowned (`kubectl patch` off our ownerReference), then deleted: as for
/// an owned one, the next version from a fresh read, never a step back to `db-v1`. (Found by
/// the user-actions harness, seed 30.)
#[tokio::test]
async fn deleting_a_disowned_active_secret_makes_the_next_version_never_a_step_back() {
    let env = Env::start("payments").await;
    seed_rolled_out_to_v2(&env).await;
    json_patch(
        &env,
        "db-v2",
        json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
    )
    .await;
    env.wait_version_state("db", 2, VersionState::Disowned)
        .await;

    env.api::<Secret>()
        .delete("db-v2", &DeleteParams::default())
        .await
        .unwrap();
    moves_forward_from_v2_to_v3(&env).await;
    let v3 = env.secret("db-v3").await.expect("db-v3 made");
    assert_eq!(password(&v3), b"two");
    assert_eq!(env.status("db").await.active_version, Some(3));
}

/// `deletionPolicy: Retain`, labels edited on two of three versions, then `kubectl delete
/// secretsync db`: every Secret we owned stays, none owned by us any more.
#[tokio::test]
async fn retain_keeps_every_secret_we_owned_whatever_its_labels() {
    let env = Env::start("payments").await;
    env.fake_store("fake", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "fake",
        "  deletionPolicy: Retain\n  history: {limit: 5}",
    ))
    .await;
    env.wait_version("db", 1).await;
    for v in 1..=2 {
        env.merge_sync("db", json!({"spec": {"version": v}})).await;
        env.wait_version("db", v + 1).await;
    }
    label(&env, "db-v3", "secretsync.io/sync", None).await;
    label(&env, "db-v1", "app.kubernetes.io/managed-by", None).await;
    // The operator must not call an existing version Deleted because a label went.
    env.wait_version_state("db", 1, VersionState::Retained)
        .await;

    env.api::<SecretSync>()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("db").await;
    for name in ["db-v1", "db-v2", "db-v3"] {
        let kept = env
            .secret(name)
            .await
            .unwrap_or_else(|| panic!("{name} was lost"));
        assert!(kept.owner_references().is_empty(), "{name} still owned");
    }
}

/// Delete with `Retain`, then `kubectl apply` the same manifest: the retained Secrets are
/// adopted, the Deployment stays where it is, and numbering continues after them.
#[tokio::test]
async fn reapplying_after_retain_adopts_the_retained_versions() {
    let env = Env::start("payments").await;
    seed(&env, "  deletionPolicy: Retain\n  history: {limit: 5}").await;
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    wait_template(&env, "app", "db-v2").await;
    env.api::<SecretSync>()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("db").await;
    let extra = "  rollout: {targets: [{kind: Deployment, name: app}]}\n  deletionPolicy: Retain\n  history: {limit: 5}";
    env.create::<SecretSync>(&sync_yaml("db", "fake", extra))
        .await;
    let (reason, message) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(reason, "Synced", "{message}");
    let status = env.status("db").await;
    assert_eq!(status.current_version, Some(2), "{status:?}");
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v2"));
    assert_eq!(template_refs(&env, "app").await, ["db-v2"]);
    let uid = env.api::<SecretSync>().get("db").await.unwrap().uid();
    for name in ["db-v1", "db-v2"] {
        let s = env.secret(name).await.expect("kept");
        assert!(
            s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref()),
            "{name} adopted"
        );
    }
    set_password(&env, "three", "3").await;
    env.merge_sync("db", json!({"spec": {"refreshInterval": "1s"}}))
        .await;
    env.wait_version("db", 3).await;
    wait_template(&env, "app", "db-v3").await;
}

/// `kubectl label --overwrite secret db-v1 secretsync.io/version=50`: a label is a hint. The
/// old Secret is not taken for the newest, nothing rolls onto it, nothing real is deleted,
/// and a Warning says what disagrees.
#[tokio::test]
async fn a_rewritten_version_label_is_reported_not_trusted() {
    let env = Env::start("payments").await;
    seed(&env, "  history: {limit: 2}").await;
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    wait_template(&env, "app", "db-v2").await;
    label(&env, "db-v1", "secretsync.io/version", Some("50")).await;
    env.wait_events(&["db-v1"], |e, w| {
        e.type_.as_deref() == Some("Warning")
            && e.reason.as_deref() == Some("VersionMetadataMismatch")
            && e.note.as_deref().is_some_and(|n| n.contains(w))
    })
    .await;
    // A later rotation still numbers after the real newest and rolls forward.
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_version("db", 3).await;
    wait_template(&env, "app", "db-v3").await;
    assert!(env.secret("db-v51").await.is_none());
    assert!(
        env.secret("db-v2").await.is_some(),
        "history limit 2 keeps v2"
    );
    let status = env.status("db").await;
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v3"));
}

/// `kubectl annotate --overwrite secret db-v1 secretsync.io/spec-version=9`: the SecretSync is
/// not wedged by a number its user never set, and a rotation still makes a version.
#[tokio::test]
async fn a_raised_spec_version_annotation_does_not_wedge_the_sync() {
    let env = Env::start("payments").await;
    seed(&env, "").await;
    env.api::<Secret>()
        .patch(
            "db-v1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"secretsync.io/spec-version": "9"}}}),
            ),
        )
        .await
        .unwrap();
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    let (reason, message) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(reason, "Synced", "{message}");
    wait_template(&env, "app", "db-v2").await;
}

/// `kubectl rollout undo deployment app` after v2 rolled out: the operator puts it back on
/// the active version and says so, naming the workload, the reference and who changed it.
#[tokio::test]
async fn an_undone_rollout_is_put_back_and_said_so() {
    let env = Env::start("payments").await;
    seed(&env, "").await;
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    wait_template(&env, "app", "db-v2").await;
    env.wait_condition("db", "RolledOut", "True").await;
    rollout_undo(&env, "app", "db-v1").await;
    env.wait_events(&["kubectl-rollout"], |e, w| {
        e.reason.as_deref() == Some("RolloutReverted")
            && e.note.as_deref().is_some_and(|n| {
                n.contains(w) && n.contains("Deployment app") && n.contains("db-v1")
            })
    })
    .await;
    wait_template(&env, "app", "db-v2").await;
}

/// A user keeps the active `db-v1` by removing our ownerReference: that is not a change. No
/// version is made and no workload patched; the status says it is no longer ours; a rotation
/// makes the next version, and the disowned Secret is never deleted.
#[tokio::test]
async fn disowning_the_active_version_makes_nothing_new() {
    let env = Env::start("payments").await;
    seed(&env, "  history: {limit: 1}").await;
    json_patch(
        &env,
        "db-v1",
        json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
    )
    .await;
    env.wait_version_state("db", 1, VersionState::Disowned)
        .await;
    let status = env.status("db").await;
    assert_eq!(status.current_version, Some(1));
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v1"));
    assert!(env.secret("db-v2").await.is_none(), "no version made");
    assert_eq!(template_refs(&env, "app").await, ["db-v1"]);

    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    wait_template(&env, "app", "db-v2").await;
    env.wait_condition("db", "RolledOut", "True").await;
    let kept = env.secret("db-v1").await.expect("never deleted");
    assert_eq!(password(&kept), b"one");
    assert!(kept.owner_references().is_empty());
}
