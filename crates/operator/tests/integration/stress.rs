//! Rollouts under stress (issue 32): every way a workload references a Secret, rollbacks that
//! go to the last good version, windows that never hide a failure, paused and OnDelete
//! workloads, revocation as an incident, and failures attributed to the Secret that caused
//! them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams};
use secretsync_api::{SecretSync, TargetState};
use serde_json::{Value, json};

use crate::common::Env;

/// Waits until SecretSync `sync` reports target `name` in `state` at `version`.
pub(crate) async fn wait_target_of(
    env: &Env,
    sync: &str,
    name: &str,
    version: i64,
    state: TargetState,
) {
    env.wait_for::<SecretSync, _>(
        sync,
        &format!("{sync}: {name} {state:?} at v{version}"),
        |s| {
            s.status
                .as_ref()?
                .rollout
                .as_ref()?
                .targets
                .iter()
                .any(|t| t.name == name && t.version == version && t.state == state)
                .then_some(())
        },
    )
    .await
}

fn pull_secret_names(pod_spec: &Value) -> Vec<String> {
    pod_spec["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

async fn set_registry_auth(env: &Env, auth: &str, version: &str) {
    let value = format!(r#"{{"auths":{{"registry.example":{{"auth":"{auth}"}}}}}}"#);
    env.set_fake_data("vault", &[("app/reg", &value, version)])
        .await;
}

/// A registry credential (`kubernetes.io/dockerconfigjson`) used only as `imagePullSecrets`:
/// the Deployment's template moves to each new version, and an old version stays while a Pod
/// or a ServiceAccount still pulls with it, whatever `history.limit` says.
#[tokio::test]
async fn image_pull_secrets_follow_the_version_and_hold_it_while_used() {
    let env = Env::start("payments").await;
    env.fake_store(
        "vault",
        &[(
            "app/reg",
            r#"{"auths":{"registry.example":{"auth":"b25l"}}}"#,
            "1",
        )],
    )
    .await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: reg}
spec:
  storeRef: {name: vault}
  data: [{secretKey: .dockerconfigjson, remoteRef: {key: app/reg}}]
  target: {type: kubernetes.io/dockerconfigjson}
  history: {limit: 1}
  rollout: {targets: [{kind: Deployment, name: api}]}
"#,
    )
    .await;
    env.wait_version("reg", 1).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                "imagePullSecrets": [{"name": "reg-v1"}],
                "containers": [{"name": "api", "image": "registry.example/api:1"}],
            }},
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
    // A ServiceAccount outside the targets pulls with reg-v1 too (its Pods get it injected).
    let builder: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "builder"}, "imagePullSecrets": [{"name": "reg-v1"}]}),
    )
    .unwrap();
    env.api::<ServiceAccount>()
        .create(&Default::default(), &builder)
        .await
        .unwrap();
    wait_target_of(&env, "reg", "api", 1, TargetState::Complete).await;

    set_registry_auth(&env, "dHdv", "2").await;
    env.wait_version("reg", 2).await;
    env.wait_for::<Deployment, _>("api", "the template pulling with reg-v2", |d| {
        let spec = serde_json::to_value(d.spec.as_ref()?.template.spec.as_ref()?).ok()?;
        (pull_secret_names(&spec) == ["reg-v2"]).then_some(())
    })
    .await;
    wait_target_of(&env, "reg", "api", 2, TargetState::Complete).await;
    env.wait_condition("reg", "RolledOut", "True").await;
    // The pass that saw the rollout complete decided about reg-v1: the ServiceAccount holds it.
    assert!(
        env.secret("reg-v1").await.is_some(),
        "reg-v1 deleted while ServiceAccount builder pulls with it"
    );
    env.api::<ServiceAccount>()
        .patch(
            "builder",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "reg-v2"}]})),
        )
        .await
        .unwrap();
    env.wait_for_absent::<Secret>("reg-v1").await;

    // A bare Pod pulling with reg-v2 holds it past the next version.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "debug"},
        "spec": {"imagePullSecrets": [{"name": "reg-v2"}], "containers": [{"name": "d", "image": "registry.example/debug:1"}]},
    }))
    .unwrap();
    env.api::<Pod>()
        .create(&Default::default(), &pod)
        .await
        .unwrap();
    set_registry_auth(&env, "dGhyZWU=", "3").await;
    wait_target_of(&env, "reg", "api", 3, TargetState::Complete).await;
    env.wait_condition("reg", "RolledOut", "True").await;
    assert!(
        env.secret("reg-v2").await.is_some(),
        "reg-v2 deleted while Pod debug pulls with it"
    );
    env.api::<Pod>()
        .delete("debug", &DeleteParams::default())
        .await
        .unwrap();
    env.api::<ServiceAccount>()
        .patch(
            "builder",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "reg-v3"}]})),
        )
        .await
        .unwrap();
    env.wait_for_absent::<Secret>("reg-v2").await;
}

/// Deployment `api` on `db-v1` whose Pods never become Ready on the Secrets in `bad`.
async fn api_bad_on(env: &Env, bad: &str) {
    crate::rollout::create_deployment(
        env,
        "api",
        "db-v1",
        json!({"sandbox.secretsync.io/bad-secrets": bad}),
    )
    .await;
    crate::rollout::wait_target(env, "api", 1, TargetState::Complete).await;
}

/// The RolledOut condition's message once its reason is `reason`.
async fn rolled_out(env: &Env, reason: &str, containing: &str) -> String {
    env.wait_for::<SecretSync, _>(
        "db",
        &format!("RolledOut {reason} with {containing:?}"),
        |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == "RolledOut" && c.reason == reason && c.message.contains(containing)
                })
                .map(|c| c.message.clone())
        },
    )
    .await
}

/// v2 and v3 are both bad: v2 fails and goes back to v1; v3 fails and goes back to v1 too,
/// never to v2, which already failed.
#[tokio::test]
async fn a_rollback_goes_to_the_last_good_version_never_to_a_failed_one() {
    let env = Env::start("payments").await;
    crate::rollout::seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}], timeout: 2s, onFailure: Rollback}",
    )
    .await;
    api_bad_on(&env, "db-v2,db-v3").await;

    crate::rollout::set_password(&env, "two", "2").await;
    rolled_out(&env, "RolloutFailed", "rolled back to db-v1").await;
    crate::rollout::set_password(&env, "three", "3").await;
    env.wait_version("db", 3).await;
    let message = rolled_out(&env, "RolloutFailed", "rollout to db-v3 failed").await;
    let message = if message.contains("rolled back to db-v1") {
        message
    } else {
        rolled_out(&env, "RolloutFailed", "rolled back to db-v1").await
    };
    assert!(!message.contains("back to db-v2"), "{message}");
    assert_eq!(crate::rollout::api_refs(&env).await, vec!["db-v1"; 5]);
    let status = env.status("db").await;
    assert_eq!(
        (status.current_version, status.active_version),
        (Some(3), Some(1))
    );
    let events = env.wait_event_reasons(&["RolloutFailed"]).await;
    assert!(
        events
            .iter()
            .filter_map(|e| e.note.as_deref())
            .all(|n| !n.contains("rolling targets back to db-v2")),
        "a rollback to the failed db-v2"
    );
}

/// v2 is bad and rolling when a window closes; v3 is made while it is closed. The timeout of
/// v2 still runs, its failure shows (Ready=False, RolloutFailed), and the rollback to v1
/// happens at once; v3 waits for the window.
#[tokio::test]
async fn a_closed_window_does_not_hide_a_failing_rollout_nor_delay_its_rollback() {
    let env = Env::start("payments").await;
    crate::rollout::seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}], timeout: 3s, onFailure: Rollback}",
    )
    .await;
    api_bad_on(&env, "db-v2").await;
    crate::rollout::set_password(&env, "two", "2").await;
    crate::rollout::wait_target(&env, "api", 2, TargetState::Progressing).await;
    // The window closes (midnight on New Year's Day, for a minute); then v3 comes.
    env.merge_sync(
        "db",
        json!({"spec": {"rollout": {"windows": [{"schedule": "0 0 1 1 *", "duration": "1m"}]}}}),
    )
    .await;
    crate::rollout::set_password(&env, "three", "3").await;
    env.wait_version("db", 3).await;

    let message = rolled_out(&env, "RolloutFailed", "rollout to db-v2 failed").await;
    assert!(
        message.contains("db-v3 waits for a rollout window"),
        "{message}"
    );
    let (ready, _) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(ready, "RolloutFailed");
    env.wait_for::<Deployment, _>("api", "back on db-v1", |d| {
        (crate::rollout::template_refs(d) == vec!["db-v1"; 5]).then_some(())
    })
    .await;
    crate::rollout::wait_target(&env, "api", 1, TargetState::Complete).await;
    let status = env.status("db").await;
    assert_eq!(status.active_version, Some(1));
    // The rolled-back failure stays visible while v3 waits.
    let (ready, message) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(ready, "RolloutFailed", "{message}");
}

async fn merge_deployment(env: &Env, name: &str, patch: Value) {
    env.api::<Deployment>()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// The target status of `name` once it is `state` at `version`.
async fn target_status(
    env: &Env,
    name: &str,
    version: i64,
    state: TargetState,
) -> secretsync_api::TargetStatus {
    env.wait_for::<SecretSync, _>("db", &format!("{name} {state:?} at v{version}"), |s| {
        s.status
            .as_ref()?
            .rollout
            .as_ref()?
            .targets
            .iter()
            .find(|t| t.name == name && t.version == version && t.state == state)
            .cloned()
    })
    .await
}

/// `kubectl rollout pause`, then a new version: the target waits (TargetPaused), its timeout
/// does not run, nothing is failed or rolled back; `kubectl rollout resume` rolls it.
#[tokio::test]
async fn a_paused_deployment_waits_without_failing_and_rolls_when_resumed() {
    let env = Env::start("payments").await;
    crate::rollout::seed(
        &env,
        // Long enough for a real controller-manager under load to finish the resumed
        // rollout (2 s was not, in CI), short enough to wait past while paused.
        "  rollout: {targets: [{kind: Deployment, name: api}], timeout: 6s, onFailure: Rollback}",
    )
    .await;
    crate::rollout::create_deployment(&env, "api", "db-v1", json!({})).await;
    crate::rollout::wait_target(&env, "api", 1, TargetState::Complete).await;
    merge_deployment(&env, "api", json!({"spec": {"paused": true}})).await;

    crate::rollout::set_password(&env, "two", "2").await;
    let target = target_status(&env, "api", 2, TargetState::Waiting).await;
    assert_eq!(target.reason.as_deref(), Some("TargetPaused"), "{target:?}");
    assert!(
        target
            .message
            .as_deref()
            .is_some_and(|m| m.contains("paused")),
        "{target:?}"
    );
    let message = rolled_out(&env, "TargetPaused", "paused").await;
    assert!(message.contains("Deployment api"), "{message}");
    let (ready, _) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(ready, "Synced");
    // Past the timeout, still paused: no failure, no rollback.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let status = env.status("db").await;
    let rollout = status.rollout.clone().unwrap();
    assert_eq!(rollout.failed, None, "{rollout:?}");
    assert!(rollout.failed_versions.is_empty(), "{rollout:?}");
    assert_eq!(
        (rollout.targets[0].version, rollout.targets[0].state),
        (2, TargetState::Waiting)
    );
    assert_eq!(crate::rollout::api_refs(&env).await, vec!["db-v2"; 5]);

    merge_deployment(&env, "api", json!({"spec": {"paused": false}})).await;
    crate::rollout::wait_target(&env, "api", 2, TargetState::Complete).await;
    let (reason, _) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete");
    let events = env.wait_event_reasons(&["RolloutComplete"]).await;
    assert!(
        events
            .iter()
            .all(|e| e.reason.as_deref() != Some("RolloutFailed")),
        "a pause is not a failure"
    );
}

/// A StatefulSet with `updateStrategy: OnDelete`: the template moves, the target says the
/// old Pods must be deleted, and once every Pod was recreated on the new template it is
/// Complete (although such a StatefulSet never advances `currentRevision`) and the old
/// version goes.
#[tokio::test]
async fn an_on_delete_statefulset_completes_when_every_pod_runs_the_new_template() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let env = Env::start("payments").await;
    crate::rollout::seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: StatefulSet, name: store}], timeout: 1m, onFailure: Rollback}",
    )
    .await;
    let mut sts = crate::rollout::workload("StatefulSet", "store", "db-v1", json!({}), json!({}));
    sts["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    env.api::<StatefulSet>()
        .create(&Default::default(), &serde_json::from_value(sts).unwrap())
        .await
        .unwrap();
    crate::rollout::wait_target(&env, "store", 1, TargetState::Complete).await;

    crate::rollout::set_password(&env, "two", "2").await;
    let target = target_status(&env, "store", 2, TargetState::Progressing).await;
    env.wait_for::<SecretSync, _>("db", "the OnDelete hint", |s| {
        let t = &s.status.as_ref()?.rollout.as_ref()?.targets[0];
        t.message
            .as_deref()
            .is_some_and(|m| m.contains("OnDelete"))
            .then_some(())
    })
    .await;
    assert!(env.secret("db-v1").await.is_some(), "{target:?}");
    // The operator of the database rolls the Pods by hand, one by one.
    for pod in ["store-1", "store-0"] {
        env.api::<Pod>()
            .delete(pod, &DeleteParams::default())
            .await
            .unwrap();
        env.wait_for::<Pod, _>(pod, &format!("{pod} on db-v2"), |p| {
            let spec = serde_json::to_value(p.spec.as_ref()?).ok()?;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && spec.to_string().contains("db-v2")).then_some(())
        })
        .await;
    }
    crate::rollout::wait_target(&env, "store", 2, TargetState::Complete).await;
    if !env.sandbox.is_real() {
        // The simulator leaves currentRevision behind for OnDelete, as Kubernetes did before
        // kubernetes/kubernetes#73492 was fixed (1.37.2 moves it once every Pod is updated):
        // the target was Complete without it.
        let sts = env.api::<StatefulSet>().get("store").await.unwrap();
        let status = sts.status.unwrap();
        assert_ne!(status.current_revision, status.update_revision);
    }
    env.wait_for_absent::<Secret>("db-v1").await;
    let (reason, _) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete");
}

/// Revoking the version in use outside every window: the targets move at once and Ready is
/// False until they have; with `respectWindowsOnRevoke` they wait, with a Warning.
#[tokio::test]
async fn revoking_the_version_in_use_rolls_at_once_outside_the_windows() {
    let env = Env::start_with(
        "payments",
        secretsync_sandbox::Sandbox::builder().ready_delay(std::time::Duration::from_secs(2)),
    )
    .await;
    crate::rollout::seed(
        &env,
        "  rollout:\n    targets: [{kind: Deployment, name: api}]\n    windows: [{schedule: '0 0 1 1 *', duration: 1m}]",
    )
    .await;
    crate::rollout::create_deployment(&env, "api", "db-v1", json!({})).await;
    crate::rollout::wait_target(&env, "api", 1, TargetState::Complete).await;

    env.merge_sync("db", json!({"spec": {"revokedVersions": [1]}}))
        .await;
    env.wait_version("db", 2).await;
    let message = env.wait_failure("db", "Ready", "RevokedVersionInUse").await;
    assert!(message.contains("db-v1"), "{message}");
    crate::rollout::wait_target(&env, "api", 2, TargetState::Complete).await;
    assert_eq!(crate::rollout::api_refs(&env).await, vec!["db-v2"; 5]);
    let (ready, _) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(ready, "Synced");
    env.wait_for_absent::<Secret>("db-v1").await;

    // A team that wants revocations to wait for the window too.
    env.merge_sync(
        "db",
        json!({"spec": {"revokedVersions": [1, 2], "rollout": {"respectWindowsOnRevoke": true}}}),
    )
    .await;
    env.wait_version("db", 3).await;
    let message = env.wait_failure("db", "Ready", "RevokedVersionInUse").await;
    assert!(message.contains("Deployment api (db-v2)"), "{message}");
    let waiting = rolled_out(&env, "RolloutWaiting", "db-v3 waits").await;
    assert!(waiting.contains("next opens at"), "{waiting}");
    env.wait_events(&["respectWindowsOnRevoke"], |e, want| {
        e.reason.as_deref() == Some("RevokedStillReferenced")
            && e.type_.as_deref() == Some("Warning")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains(want) && n.contains("db-v2"))
    })
    .await;
    assert_eq!(crate::rollout::api_refs(&env).await, vec!["db-v2"; 5]);
}

/// Two SecretSyncs roll one Deployment in one batch: db's new version is good, api's lacks
/// the key the Deployment reads. Only api is to blame: db is not rolled back (its good v2 is
/// not marked failed), and both say which Secret and key the Pods wait for.
#[tokio::test]
async fn a_batched_failure_is_blamed_on_the_secret_the_pods_name() {
    let env = Env::start("payments").await;
    env.fake_store(
        "vault",
        &[
            ("app/db", r#"{"password":"one"}"#, "1"),
            ("app/key", r#"{"token":"k1"}"#, "1"),
        ],
    )
    .await;
    env.create::<SecretSync>(&crate::rollout::sync(
        "  rollout: {targets: [{kind: Deployment, name: web}], timeout: 3s, onFailure: Rollback}",
    ))
    .await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: api}
spec:
  storeRef: {name: vault}
  dataFrom: [{extract: {key: app/key}}]
  rollout: {targets: [{kind: Deployment, name: web}], timeout: 3s, onFailure: Hold}
"#,
    )
    .await;
    env.wait_version("db", 1).await;
    env.wait_version("api", 1).await;
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "web", "image": "web:1",
                "env": [
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "password"}}},
                    {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-v1", "key": "token"}}},
                ],
            }]}},
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&Default::default(), &web)
        .await
        .unwrap();
    wait_target_of(&env, "db", "web", 1, TargetState::Complete).await;
    wait_target_of(&env, "api", "web", 1, TargetState::Complete).await;

    // One backend change: db's password rotates, api's secret loses its `token`.
    env.set_fake_data(
        "vault",
        &[
            ("app/db", r#"{"password":"two"}"#, "2"),
            ("app/key", r#"{"renamed":"k2"}"#, "2"),
        ],
    )
    .await;
    wait_target_of(&env, "api", "web", 2, TargetState::Failed).await;
    let api_message = env.wait_failure("api", "RolledOut", "RolloutFailed").await;
    assert!(
        api_message.contains("api-v2") && api_message.contains("token"),
        "{api_message}"
    );
    let db_message = env
        .wait_for::<SecretSync, _>("db", "db's verdict", |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "RolledOut" && c.reason == "RolloutFailed")
                .map(|c| c.message.clone())
        })
        .await;
    assert!(
        db_message.contains("api-v2") && db_message.contains("token"),
        "{db_message}"
    );
    assert!(
        !db_message.contains("rolled back to") && !db_message.contains("rolling back"),
        "{db_message}"
    );
    // What the Pods wait for, not what the replica counts suggest.
    for message in [&api_message, &db_message] {
        assert!(!message.contains("pending termination"), "{message}");
    }
    let db = env.status("db").await;
    assert_eq!(db.active_version, Some(2));
    let rollout = db.rollout.unwrap();
    assert_eq!(rollout.failed, None, "db-v2 is good: {rollout:?}");
    let web = env.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(
        crate::rollout::template_refs(&web),
        ["db-v2", "api-v2"],
        "no rollback of the good db-v2"
    );
}

/// db-v1 is revoked and its replacement db-v2 is bad: there is nothing to go back to, and the
/// status says why instead of staying silent about the skipped rollback.
#[tokio::test]
async fn a_rollback_skipped_because_the_previous_version_is_revoked_says_so() {
    let env = Env::start("payments").await;
    crate::rollout::seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}], timeout: 2s, onFailure: Rollback}",
    )
    .await;
    api_bad_on(&env, "db-v2").await;
    env.merge_sync("db", json!({"spec": {"revokedVersions": [1]}}))
        .await;
    env.wait_version("db", 2).await;
    let message = rolled_out(&env, "RolloutFailed", "not rolled back").await;
    assert!(
        message.contains("rollout to db-v2 failed")
            && message.contains("no earlier version to roll back to (db-v1 is revoked)"),
        "{message}"
    );
    assert_eq!(crate::rollout::api_refs(&env).await, vec!["db-v2"; 5]);
    let (ready, _) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(ready, "RolloutFailed");
}
