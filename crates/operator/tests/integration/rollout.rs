//! Workloads follow versions safely (guarantees 3–6, docs/reference/guarantees.md), with the sandbox's workload
//! simulator rolling Pods as a cluster would.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use secretsync_api::{SecretSync, TargetState, VersionState};
use serde_json::{Value, json};

use crate::common::{DEADLINE, Env};

pub(crate) const STORE: &[(&str, &str, &str)] = &[("app/db", r#"{"password":"one"}"#, "1")];

fn v(password: &str, version: &str) -> Vec<(String, String, String)> {
    vec![(
        "app/db".into(),
        format!(r#"{{"password":"{password}"}}"#),
        version.into(),
    )]
}

pub(crate) async fn set_password(env: &Env, password: &str, version: &str) {
    let entries = v(password, version);
    let refs: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    env.set_fake_data("vault", &refs).await;
}

/// The fake store and a SecretSync `db` with `extra` spec lines, synced to `db-v1`.
pub(crate) async fn seed(env: &Env, extra: &str) {
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync(extra)).await;
    env.wait_version("db", 1).await;
}

/// A SecretSync `db` rolling out to the given targets.
pub(crate) fn sync(extra: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: vault}}
  data: [{{secretKey: password, remoteRef: {{key: app/db, property: password}}}}]
{extra}
"#
    )
}

/// A pod spec referencing `secret` in every way the contract lists, in a container and an
/// initContainer, plus references that must never change.
pub(crate) fn pod_spec(secret: &str) -> Value {
    json!({
        "initContainers": [{
            "name": "migrate", "image": "migrate:1",
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
        }],
        "containers": [{
            "name": "api", "image": "api:1",
            "env": [
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
                {"name": "PLAIN", "value": "db-v1"},
            ],
            "envFrom": [{"secretRef": {"name": secret}}],
            "volumeMounts": [{"name": "creds", "mountPath": "/creds"}, {"name": "all", "mountPath": "/all"}],
        }],
        "volumes": [
            {"name": "creds", "secret": {"secretName": secret}},
            {"name": "all", "projected": {"sources": [{"secret": {"name": secret}}]}},
        ],
    })
}

pub(crate) fn workload(
    kind: &str,
    name: &str,
    secret: &str,
    labels: Value,
    annotations: Value,
) -> Value {
    // The annotations (the simulator's knobs among them) on the Pods too: kwok reads them
    // from the Pod (scripts/control-plane.sh).
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}, "annotations": annotations}, "spec": pod_spec(secret)},
    });
    if kind != "DaemonSet" {
        spec["replicas"] = json!(2);
    }
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    })
}

pub(crate) async fn create_workload<K>(
    env: &Env,
    name: &str,
    secret: &str,
    labels: Value,
    annotations: Value,
) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let obj: K =
        serde_json::from_value(workload(&kind, name, secret, labels, annotations)).unwrap();
    env.api::<K>()
        .create(&Default::default(), &obj)
        .await
        .unwrap()
}

pub(crate) async fn create_deployment(
    env: &Env,
    name: &str,
    secret: &str,
    annotations: Value,
) -> Deployment {
    create_workload(env, name, secret, json!({"team": "payments"}), annotations).await
}

/// `db` rolling out to Deployment `api`, which has completed its rollout to db-v2.
async fn api_rolled_to_v2(env: &Env) {
    seed(env, "  rollout: {targets: [{kind: Deployment, name: api}]}").await;
    create_deployment(env, "api", "db-v1", json!({})).await;
    set_password(env, "two", "2").await;
    wait_target(env, "api", 2, TargetState::Complete).await;
}

/// The target's state once it reaches `state` at `version`.
pub(crate) async fn wait_target(env: &Env, name: &str, version: i64, state: TargetState) {
    env.wait_for::<SecretSync, _>("db", &format!("{name} {state:?} at v{version}"), |s| {
        s.status
            .as_ref()?
            .rollout
            .as_ref()?
            .targets
            .iter()
            .find(|t| t.name == name && t.version == version && t.state == state)
            .map(|_| ())
    })
    .await;
}

/// Every Secret name the Deployment's pod template references.
pub(crate) fn template_refs(d: &Deployment) -> Vec<String> {
    let value = serde_json::to_value(d).unwrap();
    secretsync_operator::podspec::secret_refs(&value["spec"]["template"]["spec"])
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[tokio::test]
async fn a_deployment_rolls_to_each_new_version_and_the_old_one_goes_after_the_rollout() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    let before = create_deployment(&env, "api", "db-v1", json!({})).await;
    wait_target(&env, "api", 1, TargetState::Complete).await;

    set_password(&env, "two", "2").await;
    env.wait_version("db", 2).await;
    // db-v1 goes only once the Deployment has completed its rollout to db-v2: whenever it
    // is found gone, the Deployment (read after) is complete on db-v2. (The SecretSync's
    // status is written after the delete, in the same pass, so it may still lag.)
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while env.secret("db-v1").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "db-v1 was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rolled = env.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(template_refs(&rolled), vec!["db-v2"; 5]);
    let (spec, status) = (rolled.spec.unwrap(), rolled.status.unwrap());
    let replicas = spec.replicas.unwrap_or(1);
    assert!(
        status.observed_generation >= rolled.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas),
        "db-v1 deleted before the rollout completed: {status:?}"
    );
    wait_target(&env, "api", 2, TargetState::Complete).await;

    // Every reference moved, and nothing else in the spec changed.
    let after = env.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(template_refs(&after), vec!["db-v2"; 5]);
    let mut expected = serde_json::to_value(before.spec.as_ref().unwrap()).unwrap();
    let expected_text = serde_json::to_string(&expected["template"]["spec"])
        .unwrap()
        .replace("\"secretName\":\"db-v1\"", "\"secretName\":\"db-v2\"")
        .replace("\"name\":\"db-v1\"", "\"name\":\"db-v2\"");
    expected["template"]["spec"] = serde_json::from_str(&expected_text).unwrap();
    assert_eq!(
        serde_json::to_value(after.spec.as_ref().unwrap()).unwrap(),
        expected
    );
    assert_eq!(
        after.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()[1]
            .value
            .as_deref(),
        Some("db-v1"),
        "a plain env value that looks like a name is not a reference"
    );

    env.wait_for_absent::<Secret>("db-v1").await;
    let (reason, message) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete");
    assert!(
        message.contains("1/1 targets rolled out to db-v2"),
        "{message}"
    );
    let status = env.status("db").await;
    assert_eq!(status.versions[1].state, VersionState::Deleted);
    env.wait_event_reasons(&[
        "VersionCreated",
        "RolloutStarted",
        "RolloutComplete",
        "VersionDeleted",
    ])
    .await;
}

#[tokio::test]
async fn a_version_still_used_by_another_workload_is_kept_until_it_moves_off() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;
    create_deployment(&env, "worker", "db-v1", json!({})).await; // not a target
    wait_target(&env, "api", 1, TargetState::Complete).await;

    set_password(&env, "two", "2").await;
    wait_target(&env, "api", 2, TargetState::Complete).await;
    env.wait_condition("db", "RolledOut", "True").await;
    // The pass that saw the rollout complete also decided about db-v1: it is kept.
    assert!(
        env.secret("db-v1").await.is_some(),
        "db-v1 deleted while worker uses it"
    );

    // worker moves off (its owner updates it); then db-v1 goes.
    let patch = json!({"spec": {"template": {"spec": pod_spec("db-v2")}}});
    env.api::<Deployment>()
        .patch("worker", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    env.wait_for_absent::<Secret>("db-v1").await;
}

#[tokio::test]
async fn a_hanging_rollout_fails_after_the_timeout_and_deletes_nothing() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}], timeout: 2s}",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;
    wait_target(&env, "api", 1, TargetState::Complete).await;
    env.api::<Deployment>()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sandbox.secretsync.io/hang-rollout": "true"}}})),
        )
        .await
        .unwrap();

    set_password(&env, "two", "2").await;
    wait_target(&env, "api", 2, TargetState::Failed).await;
    let (reason, message) = env.wait_condition("db", "RolledOut", "False").await;
    assert_eq!(reason, "RolloutFailed", "{message}");
    assert!(message.contains("Deployment api"), "{message}");
    assert!(message.contains("2s"), "{message}");
    let (ready, _) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(ready, "RolloutFailed");
    env.wait_event_reasons(&["RolloutFailed"]).await;
    assert!(
        env.secret("db-v1").await.is_some(),
        "no old version is deleted"
    );
}

#[tokio::test]
async fn revoking_the_active_version_rotates_rolls_and_deletes_it_after_the_rollout() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;
    wait_target(&env, "api", 1, TargetState::Complete).await;

    env.merge_sync("db", json!({"spec": {"revokedVersions": [1]}}))
        .await;
    let rotated = env.wait_version("db", 2).await;
    assert_eq!(
        rotated.status.unwrap().active_version,
        Some(2),
        "a revoked version is never active"
    );
    wait_target(&env, "api", 2, TargetState::Complete).await;
    env.wait_for_absent::<Secret>("db-v1").await;
    let after = env.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(template_refs(&after), vec!["db-v2"; 5]);
    let status = env
        .wait_for::<SecretSync, _>("db", "v1 tombstone", |s| {
            let st = s.status.as_ref()?;
            st.versions
                .iter()
                .any(|v| {
                    v.version == 1 && v.state == VersionState::Revoked && v.revoked_at.is_some()
                })
                .then(|| st.clone())
        })
        .await;
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v2"));
    env.wait_event_reasons(&["VersionRevoked"]).await;
    env.wait_events(&["replaces revoked db-v1"], |e, want| {
        e.note
            .as_deref()
            .is_some_and(|n| n.contains("created db-v2") && n.contains(want))
    })
    .await;

    // Pinning the revoked version is refused and changes nothing: by the API server when it
    // runs the CRD's CEL rules, else by the operator.
    let pin_revoked = env
        .api::<SecretSync>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pinVersion": 1}})),
        )
        .await;
    match pin_revoked {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message
                    .contains("pinVersion must not name a revoked version"),
                "{s:?}"
            );
        }
        Ok(_) => {
            let (reason, message) = env.wait_condition("db", "Ready", "False").await;
            assert_eq!(reason, "PinnedVersionUnavailable", "{message}");
        }
        Err(e) => panic!("{e}"),
    }
    // A version that does not exist is the operator's to refuse.
    env.merge_sync("db", json!({"spec": {"pinVersion": 7}}))
        .await;
    let (reason, message) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(reason, "PinnedVersionUnavailable", "{message}");
    assert!(message.contains("pinVersion 7"), "{message}");
    let still = env.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(template_refs(&still), vec!["db-v2"; 5]);
    assert!(env.secret("db-v2").await.is_some());
}

#[tokio::test]
async fn immediate_revocation_deletes_at_once_and_warns_about_users() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    create_deployment(
        &env,
        "api",
        "db-v1",
        json!({"sandbox.secretsync.io/hang-rollout": "true"}),
    )
    .await;
    env.merge_sync(
        "db",
        json!({"spec": {"revokedVersions": [1], "revokePolicy": "Immediate"}}),
    )
    .await;
    env.wait_version("db", 2).await;
    // Deleted although the rollout off it hangs.
    env.wait_for_absent::<Secret>("db-v1").await;
    let events = env.wait_event_reasons(&["RevokedStillReferenced"]).await;
    let warning = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("RevokedStillReferenced"))
        .expect("a RevokedStillReferenced warning");
    let note = warning.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("db-v1") && note.contains("Pod/api-"),
        "{note}"
    );
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn pinning_rolls_back_and_unpinning_rolls_forward() {
    let env = Env::start("payments").await;
    api_rolled_to_v2(&env).await;

    env.merge_sync("db", json!({"spec": {"pinVersion": 1}}))
        .await;
    wait_target(&env, "api", 1, TargetState::Complete).await;
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v1"; 5]
    );

    // New versions keep being made while pinned; the targets stay on the pin.
    set_password(&env, "three", "3").await;
    let pinned = env.wait_version("db", 3).await.status.unwrap();
    assert_eq!(pinned.active_version, Some(1));
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v1"; 5]
    );

    env.api::<SecretSync>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "remove", "path": "/spec/pinVersion"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    wait_target(&env, "api", 3, TargetState::Complete).await;
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v3"; 5]
    );
}

#[tokio::test]
async fn statefulsets_daemonsets_and_selected_workloads_are_targets() {
    let env = Env::start("payments").await;
    seed(&env, "  rollout:\n    targets: [{kind: StatefulSet, name: store}, {kind: DaemonSet, name: agent}]\n    selector: {matchLabels: {rollout: db}}").await;
    create_workload::<StatefulSet>(&env, "store", "db-v1", json!({}), json!({})).await;
    create_workload::<DaemonSet>(&env, "agent", "db-v1", json!({}), json!({})).await;
    create_workload::<Deployment>(&env, "web", "db-v1", json!({"rollout": "db"}), json!({})).await;
    create_workload::<Deployment>(
        &env,
        "batch",
        "db-v1",
        json!({"rollout": "other"}),
        json!({}),
    )
    .await;

    set_password(&env, "two", "2").await;
    for name in ["store", "agent", "web"] {
        wait_target(&env, name, 2, TargetState::Complete).await;
    }
    let refs = |v: Value| -> Vec<String> {
        secretsync_operator::podspec::secret_refs(&v["spec"]["template"]["spec"])
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let sts = env.api::<StatefulSet>().get("store").await.unwrap();
    assert_eq!(refs(serde_json::to_value(sts).unwrap()), vec!["db-v2"; 5]);
    let ds = env.api::<DaemonSet>().get("agent").await.unwrap();
    assert_eq!(refs(serde_json::to_value(ds).unwrap()), vec!["db-v2"; 5]);
    let web = env.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(template_refs(&web), vec!["db-v2"; 5]);
    let batch = env.api::<Deployment>().get("batch").await.unwrap();
    assert_eq!(
        template_refs(&batch),
        vec!["db-v1"; 5],
        "not selected, not touched"
    );
    let (_, message) = env.wait_condition("db", "RolledOut", "True").await;
    assert!(message.contains("3/3"), "{message}");
}

#[tokio::test]
async fn restarts_mid_rollout_and_after_it_patch_nothing_again() {
    let mut env = Env::start_with(
        "payments",
        secretsync_sandbox::Sandbox::builder().ready_delay(Duration::from_secs(2)),
    )
    .await;
    seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;
    wait_target(&env, "api", 1, TargetState::Complete).await;
    set_password(&env, "two", "2").await;
    wait_target(&env, "api", 2, TargetState::Progressing).await;

    // Mid-rollout: the new operator finds the template already on db-v2.
    env.stop_operator().await;
    env.sandbox.reset_stats();
    env.start_operator();
    wait_target(&env, "api", 2, TargetState::Complete).await;
    env.wait_for_absent::<Secret>("db-v1").await;
    let stats = env.sandbox.stats();
    assert_eq!(stats.count("patch", "apps", "deployments"), 0, "{stats:?}");
    assert_eq!(stats.count("update", "apps", "deployments"), 0, "{stats:?}");
    assert_eq!(stats.count("create", "", "secrets"), 0, "{stats:?}");

    // After completion: a restart writes nothing at all to workloads or Secrets.
    env.stop_operator().await;
    env.sandbox.reset_stats();
    env.start_operator();
    env.wait_reconciles(0, 1).await;
    let stats = env.sandbox.stats();
    assert_eq!(stats.writes_to("deployments"), 0, "{stats:?}");
    assert_eq!(stats.writes_to("secrets"), 0, "{stats:?}");
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v2"; 5]
    );
}

/// A GitOps tool owns the Deployment and applies it from Git (server-side apply under its
/// own field manager), putting the old reference back. The operator rewrites it to the
/// active version once per such change — under its own field manager, which Argo CD's
/// `managedFieldsManagers` can name — and never loops.
#[tokio::test]
async fn a_reference_a_gitops_tool_puts_back_is_rewritten_once_per_change() {
    let env = Env::counted("payments").await;
    api_rolled_to_v2(&env).await;
    let rewritten = env.api::<Deployment>().get("api").await.unwrap();
    assert!(
        rewritten
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some("secretsync")),
        "the rewrite is recorded under the operator's field manager: {:?}",
        rewritten.metadata.managed_fields
    );

    let git = workload(
        "Deployment",
        "api",
        "db-v1",
        json!({"team": "payments"}),
        json!({}),
    );
    for round in 1..=2 {
        env.proxy().reset_requests();
        env.api::<Deployment>()
            .patch(
                "api",
                &PatchParams::apply("argocd").force(),
                &Patch::Apply(git.clone()),
            )
            .await
            .unwrap();
        env.wait_for::<Deployment, _>("api", "the active reference back", |d| {
            (template_refs(d) == vec!["db-v2"; 5]).then_some(())
        })
        .await;
        // The operator's rewrite (the proxy counts only its requests); one more if it met
        // a conflict with the workload controller's status updates and was retried.
        let requests = env.proxy().requests();
        let patches = requests.count("patch", "apps", "deployments");
        assert!(
            (1..=2).contains(&patches),
            "round {round}: {patches} patches for one apply: {requests:?}"
        );
        // An observation window: a write loop would show here.
        env.proxy().reset_requests();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            env.proxy().requests().count("patch", "apps", "deployments"),
            0,
            "round {round}: the operator kept writing"
        );
        assert_eq!(
            template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
            vec!["db-v2"; 5]
        );
    }
}

/// The Deployment's Pods that use `db-v2` never become Ready (the app rejects the new
/// credential): with `onFailure: Rollback` the targets go back to `db-v1` after the timeout,
/// `db-v2` is kept although `history.limit` is 1, and nothing retries `db-v2` — not a requeue,
/// not a restart — until a new version comes.
#[tokio::test]
async fn a_failed_rollout_rolls_back_to_the_previous_version_and_stays_there() {
    let mut env = Env::counted("payments").await;
    seed(
        &env,
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}], timeout: 3s, onFailure: Rollback}",
    )
    .await;
    create_deployment(
        &env,
        "api",
        "db-v1",
        json!({"sandbox.secretsync.io/bad-secrets": "db-v2"}),
    )
    .await;
    wait_target(&env, "api", 1, TargetState::Complete).await;

    env.proxy().reset_requests();
    set_password(&env, "two", "2").await;
    env.wait_version("db", 2).await;
    let made = tokio::time::Instant::now();
    let status = env
        .wait_for::<SecretSync, _>("db", "rolled back to v1", |s| {
            let st = s.status.as_ref()?;
            let rollout = st.rollout.as_ref()?;
            let back = rollout.failed.as_ref()?.version == 2
                && rollout
                    .targets
                    .iter()
                    .all(|t| t.version == 1 && t.state == TargetState::Complete);
            back.then(|| st.clone())
        })
        .await;
    let took = made.elapsed();
    // The 3s timeout, then one pass moves the targets back and the simulator rolls them.
    assert!(took < Duration::from_secs(6), "rolled back after {took:?}");
    assert_eq!(
        (status.current_version, status.active_version),
        (Some(2), Some(1))
    );
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v1"));
    let states: Vec<_> = status
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        [(2, VersionState::Retained), (1, VersionState::Active)]
    );
    assert!(
        env.secret("db-v2").await.is_some(),
        "the failed version is kept"
    );
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v1"; 5]
    );
    let (reason, message) = env.wait_condition("db", "RolledOut", "False").await;
    assert_eq!(reason, "RolloutFailed", "{message}");
    assert!(
        message.contains("rollout to db-v2 failed")
            && message.contains("rolled back to db-v1")
            && message.contains("not complete after 3s"),
        "{message}"
    );
    let (ready, _) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(ready, "RolloutFailed");
    env.wait_events(&["rolling targets back to db-v1"], |e, want| {
        e.reason.as_deref() == Some("RolloutFailed")
            && e.type_.as_deref() == Some("Warning")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("db-v2") && n.contains(want))
    })
    .await;
    // To db-v2 and back: two template changes (one more if a patch met a conflict with the
    // simulator's status writes and was retried).
    let stats = env.proxy().requests();
    let patches = stats.count("patch", "apps", "deployments");
    assert!((2..=3).contains(&patches), "{patches} patches: {stats:?}");

    // No loop: past another timeout, and through a wake-up, nothing is written; nor after a
    // restart, which reads the failure back from the status.
    env.proxy().reset_requests();
    let since = env.operator().reconciles();
    env.merge_sync("db", json!({"metadata": {"annotations": {"poke": "1"}}}))
        .await;
    env.wait_reconciles(since, 1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.stop_operator().await;
    env.start_operator();
    env.wait_reconciles(0, 1).await;
    let stats = env.proxy().requests();
    assert_eq!(stats.writes_to("deployments"), 0, "{stats:?}");
    assert_eq!(
        template_refs(&env.api::<Deployment>().get("api").await.unwrap()),
        vec!["db-v1"; 5]
    );
    assert_eq!(
        env.status("db")
            .await
            .rollout
            .unwrap()
            .failed
            .unwrap()
            .version,
        2
    );

    // Something changed: a new version rolls out, and the failure is over.
    set_password(&env, "three", "3").await;
    wait_target(&env, "api", 3, TargetState::Complete).await;
    let (reason, _) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete");
    // The failure is over: gone from the status, not left as an empty (defaulted) object.
    env.wait_for::<SecretSync, _>("db", "no rollout.failed", |s| {
        let rollout = s.status.as_ref()?.rollout.as_ref()?;
        rollout.failed.is_none().then_some(())
    })
    .await;
}

/// The current Deployment `api` template references.
pub(crate) async fn api_refs(env: &Env) -> Vec<String> {
    template_refs(&env.api::<Deployment>().get("api").await.unwrap())
}

/// A rollout window that opens a few seconds from now (its schedule in Berlin time, not
/// UTC): the new version is made at once, the Deployment moves only once the window is
/// open, and the status says when that is.
#[tokio::test]
async fn a_new_version_waits_for_the_rollout_window() {
    let env = Env::start("payments").await;
    seed(
        &env,
        "  rollout: {targets: [{kind: Deployment, name: api}]}",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;
    wait_target(&env, "api", 1, TargetState::Complete).await;

    // Cron has whole seconds: the window opens at the start of that second.
    let in_a_while = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    let opens = jiff::Timestamp::from_second(in_a_while.as_second()).unwrap();
    let berlin = opens.in_tz("Europe/Berlin").unwrap();
    let schedule = format!(
        "{} {} {} * * *",
        berlin.second(),
        berlin.minute(),
        berlin.hour()
    );
    env.merge_sync(
        "db",
        json!({"spec": {"rollout": {"windows": [{"schedule": schedule, "duration": "1h", "timeZone": "Europe/Berlin"}]}}}),
    )
    .await;
    set_password(&env, "two", "2").await;
    let message = env.wait_failure("db", "RolledOut", "RolloutWaiting").await;
    assert!(
        jiff::Timestamp::now() < opens,
        "too slow to see the window closed"
    );
    assert_eq!(
        message,
        format!("db-v2 waits for a rollout window; the next opens at {opens}")
    );
    let status = env.status("db").await;
    assert_eq!(
        (status.current_version, status.active_version),
        (Some(2), Some(1))
    );
    assert!(env.secret("db-v2").await.is_some());
    let (ready, _) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(ready, "Synced");

    // Closed: at every look until it opens, api stays on db-v1.
    while jiff::Timestamp::now() < opens - jiff::SignedDuration::from_millis(200) {
        assert_eq!(
            api_refs(&env).await,
            vec!["db-v1"; 5],
            "moved before the window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_target(&env, "api", 2, TargetState::Complete).await;
    assert_eq!(api_refs(&env).await, vec!["db-v2"; 5]);
    let moved = jiff::Timestamp::now();
    assert!(moved >= opens, "moved at {moved}, window opens at {opens}");
    let (reason, _) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete");
}

/// Outside every window, a rotation marked `rollout-now` (what `kubectl secretsync rotate
/// --now` writes) and an Immediate revocation of the version in use still move the targets;
/// an ordinary new version waits.
#[tokio::test]
async fn rotate_now_and_immediate_revocation_do_not_wait_for_a_window() {
    let env = Env::start("payments").await;
    // Midnight on New Year's Day, for a minute: closed while this test runs, bar that minute.
    seed(
        &env,
        "  rollout:\n    targets: [{kind: Deployment, name: api}]\n    windows: [{schedule: '0 0 1 1 *', duration: 1m}]",
    )
    .await;
    create_deployment(&env, "api", "db-v1", json!({})).await;

    env.merge_sync(
        "db",
        json!({"metadata": {"annotations": {"secretsync.io/rollout-now": "1"}}, "spec": {"version": 1}}),
    )
    .await;
    env.wait_version("db", 2).await;
    wait_target(&env, "api", 2, TargetState::Complete).await;
    assert_eq!(api_refs(&env).await, vec!["db-v2"; 5]);

    // Honoured once: the next version (a backend change) waits.
    set_password(&env, "three", "3").await;
    env.wait_version("db", 3).await;
    let (reason, message) = env.wait_condition("db", "RolledOut", "False").await;
    assert_eq!(reason, "RolloutWaiting", "{message}");
    assert!(message.contains("the next opens at "), "{message}");
    assert_eq!(api_refs(&env).await, vec!["db-v2"; 5]);

    // db-v2 is compromised: with Immediate, the targets leave it now.
    env.merge_sync(
        "db",
        json!({"spec": {"revokedVersions": [2], "revokePolicy": "Immediate"}}),
    )
    .await;
    wait_target(&env, "api", 3, TargetState::Complete).await;
    assert_eq!(api_refs(&env).await, vec!["db-v3"; 5]);
    env.wait_for_absent::<Secret>("db-v2").await;
}

/// Waits until SecretSync `sync` reports Deployment `api` Complete at `version`.
async fn api_complete(env: &Env, sync: &str, version: i64) {
    env.wait_for::<SecretSync, _>(sync, &format!("{sync}: api complete at v{version}"), |s| {
        s.status
            .as_ref()?
            .rollout
            .as_ref()?
            .targets
            .iter()
            .any(|t| t.version == version && t.state == TargetState::Complete)
            .then_some(())
    })
    .await
}

/// One rotation touches a database password and an API key, each its own SecretSync, both
/// used by Deployment `api`: their rewrites reach it as one template change — exactly one
/// new ReplicaSet — and both references are current.
#[tokio::test]
async fn two_syncs_rotated_together_make_one_new_replicaset() {
    let env = Env::start("payments").await;
    env.fake_store(
        "vault",
        &[
            ("app/db", r#"{"password":"one"}"#, "1"),
            ("app/key", r#"{"token":"k1"}"#, "1"),
        ],
    )
    .await;
    for (name, key, property) in [("db", "app/db", "password"), ("key", "app/key", "token")] {
        env.create::<SecretSync>(&format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: vault}}
  data: [{{secretKey: {property}, remoteRef: {{key: {key}, property: {property}}}}}]
  rollout: {{targets: [{{kind: Deployment, name: api}}]}}
"#
        ))
        .await;
        env.wait_version(name, 1).await;
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{
                "name": "api", "image": "api:1",
                "env": [
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "password"}}},
                    {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "key-v1", "key": "token"}}},
                ],
            }]}},
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
    api_complete(&env, "db", 1).await;
    api_complete(&env, "key", 1).await;
    let replicasets = || async {
        env.api::<k8s_openapi::api::apps::v1::ReplicaSet>()
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(replicasets().await, 1);

    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.merge_sync("key", json!({"spec": {"version": 1}})).await;
    api_complete(&env, "db", 2).await;
    api_complete(&env, "key", 2).await;
    assert_eq!(
        api_refs(&env).await,
        ["db-v2", "key-v2"],
        "both rotations landed"
    );
    assert_eq!(
        replicasets().await,
        2,
        "one new ReplicaSet for both rotations"
    );
}
