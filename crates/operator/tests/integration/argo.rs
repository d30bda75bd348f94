//! Argo Rollouts as rollout targets, against a minimal Rollout CRD of our own
//! (`secretsync_testkit::install::argo_rollout_crd`): there is no Argo controller, so each
//! test plays Argo and writes the Rollout's status itself.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use secretsync_api::{SecretSync, TargetState, VersionState};
use secretsync_operator::rollout::argo::Rollout;
use serde_json::{Value, json};

use crate::common::{DEADLINE, Env, create_deployment};

const STORE: &[(&str, &str, &str)] = &[("app/db", r#"{"password":"one"}"#, "1")];

/// A sandbox with the Rollout CRD installed before the operator starts, so its discovery
/// finds Rollouts served.
async fn env_with_argo() -> Env {
    let env = Env::without_operator("payments").await;
    install_argo(&env.client).await;
    env.with_operator()
}

pub async fn install_argo(client: &Client) {
    secretsync_testkit::install::install_argo_rollout_crd(client, DEADLINE)
        .await
        .expect("the Rollout CRD is installed and established");
}

/// A canary Rollout `name` with `labels` whose pod template references `secret` in a
/// container env, envFrom, a secret volume and a projected source.
pub async fn create_rollout(env: &Env, name: &str, secret: &str, labels: Value) {
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": name, "image": "app:1",
                        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
                        "envFrom": [{"secretRef": {"name": secret}}],
                    }],
                    "volumes": [
                        {"name": "creds", "secret": {"secretName": secret}},
                        {"name": "all", "projected": {"sources": [{"secret": {"name": secret}}]}},
                    ],
                },
            },
        },
    });
    crate::common::create_rollout_json(env, rollout).await;
}

/// Plays Argo: the Rollout's status becomes `phase` for its current generation, written as
/// a string as Argo writes `observedGeneration`.
async fn set_phase(env: &Env, name: &str, phase: &str, message: &str) {
    let api = env.api::<Rollout>();
    let generation = api.get(name).await.unwrap().metadata.generation.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": phase,
            "message": message,
            "observedGeneration": generation.to_string(),
        }})),
    )
    .await
    .unwrap();
}

/// Every Secret name the Rollout's pod template references.
async fn rollout_refs(env: &Env, name: &str) -> Vec<String> {
    let rollout = env.api::<Rollout>().get(name).await.unwrap();
    secretsync_operator::podspec::secret_refs(&rollout.spec["template"]["spec"])
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// Waits until the Rollout's template references only `secret`.
async fn wait_rollout_on(env: &Env, name: &str, secret: &str) {
    env.wait_for::<Rollout, _>(name, &format!("Rollout {name} on {secret}"), |r| {
        let refs: Vec<String> =
            secretsync_operator::podspec::secret_refs(&r.spec["template"]["spec"])
                .into_iter()
                .map(|r| r.name)
                .collect();
        (!refs.is_empty() && refs.iter().all(|n| n == secret)).then_some(())
    })
    .await;
}

async fn wait_target(env: &Env, name: &str, version: i64, state: TargetState) -> Option<String> {
    env.wait_for::<SecretSync, _>("db", &format!("{name} {state:?} at v{version}"), |s| {
        s.status
            .as_ref()?
            .rollout
            .as_ref()?
            .targets
            .iter()
            .find(|t| t.name == name && t.version == version && t.state == state)
            .map(|t| t.message.clone())
    })
    .await
}

fn sync(extra: &str) -> String {
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

async fn set_password(env: &Env, password: &str, version: &str) {
    let value = format!(r#"{{"password":"{password}"}}"#);
    env.set_fake_data("vault", &[("app/db", &value, version)])
        .await;
}

#[tokio::test]
async fn an_argo_rollout_follows_each_new_version_and_completes_when_healthy() {
    let env = env_with_argo().await;
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync(
        "  history: {limit: 1}\n  rollout: {selector: {matchLabels: {team: payments}}}",
    ))
    .await;
    env.wait_version("db", 1).await;
    create_rollout(&env, "web", "db-v1", json!({"team": "payments"})).await;
    // Not a target (not selected): a Rollout that still uses db-v1 must keep it.
    create_rollout(&env, "batch", "db-v1", json!({"team": "batch"})).await;
    set_phase(&env, "web", "Healthy", "").await;
    wait_target(&env, "web", 1, TargetState::Complete).await;

    set_password(&env, "two", "2").await;
    env.wait_version("db", 2).await;
    wait_rollout_on(&env, "web", "db-v2").await;
    // Argo has not seen the new template yet: its old Healthy does not count.
    wait_target(&env, "web", 2, TargetState::Progressing).await;
    set_phase(&env, "web", "Paused", "CanaryPauseStep").await;
    env.wait_for::<SecretSync, _>("db", "web Paused at a canary step", |s| {
        s.status
            .as_ref()?
            .rollout
            .as_ref()?
            .targets
            .iter()
            .find(|t| {
                t.name == "web"
                    && t.version == 2
                    && t.state == TargetState::Progressing
                    && t.message.as_deref() == Some("Paused: CanaryPauseStep")
            })
            .map(|_| ())
    })
    .await;
    assert!(
        env.secret("db-v1").await.is_some(),
        "kept during the rollout"
    );

    set_phase(&env, "web", "Healthy", "").await;
    wait_target(&env, "web", 2, TargetState::Complete).await;
    let (reason, message) = env.wait_condition("db", "RolledOut", "True").await;
    assert_eq!(reason, "RolloutComplete", "{message}");
    // The pass that saw it complete also pruned: db-v1 is past history but Rollout batch
    // still references it.
    assert!(
        env.secret("db-v1").await.is_some(),
        "db-v1 deleted while Rollout batch uses it"
    );
    let versions = env.status("db").await.versions;
    assert!(
        versions
            .iter()
            .any(|v| v.version == 1 && v.state == VersionState::Retained),
        "{versions:?}"
    );
    assert_eq!(rollout_refs(&env, "batch").await, vec!["db-v1"; 4]);

    // Once batch is gone, so is db-v1.
    env.api::<Rollout>()
        .delete("batch", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<Secret>("db-v1").await;
}

#[tokio::test]
async fn a_degraded_argo_rollout_rolls_back_to_the_previous_version() {
    let env = env_with_argo().await;
    env.fake_store("vault", STORE).await;
    // A long timeout: the failure comes from Argo's verdict, not from the clock.
    env.create::<SecretSync>(&sync(
        "  rollout: {targets: [{kind: Rollout, name: web}], timeout: 10m, onFailure: Rollback}",
    ))
    .await;
    env.wait_version("db", 1).await;
    create_rollout(&env, "web", "db-v1", json!({})).await;
    set_phase(&env, "web", "Healthy", "").await;
    wait_target(&env, "web", 1, TargetState::Complete).await;

    set_password(&env, "two", "2").await;
    wait_rollout_on(&env, "web", "db-v2").await;
    set_phase(
        &env,
        "web",
        "Degraded",
        "RolloutAborted: metric error-rate assessed Failed",
    )
    .await;
    wait_rollout_on(&env, "web", "db-v1").await;
    let message = env.wait_failure("db", "RolledOut", "RolloutFailed").await;
    assert!(
        message.contains("rollout to db-v2 failed")
            && message.contains("Degraded: RolloutAborted")
            && message.contains("rolling back to db-v1"),
        "{message}"
    );
    let status = env.status("db").await;
    assert_eq!(
        (status.current_version, status.active_version),
        (Some(2), Some(1))
    );
    assert_eq!(status.rollout.unwrap().failed.unwrap().version, 2);
    assert!(
        env.secret("db-v2").await.is_some(),
        "the failed version is kept"
    );

    // Argo rolls the old template back out; the rollback completes.
    set_phase(&env, "web", "Healthy", "").await;
    wait_target(&env, "web", 1, TargetState::Complete).await;
    assert_eq!(rollout_refs(&env, "web").await, vec!["db-v1"; 4]);
    env.wait_for::<SecretSync, _>("db", "RolloutFailed: rolled back to db-v1", |s| {
        s.status.as_ref()?.conditions.iter().find(|c| {
            c.type_ == "RolledOut"
                && c.reason == "RolloutFailed"
                && c.message
                    .contains("rolled back to db-v1: 1/1 targets rolled out to db-v1")
        })?;
        Some(())
    })
    .await;
}

#[tokio::test]
async fn without_the_argo_crd_a_rollout_target_is_reported_and_the_others_roll() {
    let env = Env::start("payments").await;
    env.fake_store("vault", STORE).await;
    env.create::<SecretSync>(&sync(
        "  rollout: {targets: [{kind: Rollout, name: web}, {kind: Deployment, name: api}]}",
    ))
    .await;
    env.wait_version("db", 1).await;
    create_deployment(&env, "api", "db-v1").await;
    set_password(&env, "two", "2").await;
    env.wait_version("db", 2).await;
    wait_target(&env, "api", 2, TargetState::Complete).await;
    let message = wait_target(&env, "web", 2, TargetState::NotFound).await;
    assert_eq!(
        message.as_deref(),
        Some(
            "Rollout web not found: the Argo Rollouts CRD (rollouts.argoproj.io/v1alpha1) is not installed"
        )
    );
    // The missing CRD is a user error they see in `kubectl get secretsync`.
    let (reason, message) = env.wait_condition("db", "Ready", "False").await;
    assert_eq!(reason, "TargetNotFound");
    assert_eq!(
        message,
        "db-v2 active; 1/2 targets rolled out to db-v2: Rollout web not found: the Argo \
         Rollouts CRD (rollouts.argoproj.io/v1alpha1) is not installed"
    );
    let (reason, _) = env.wait_condition("db", "Synced", "True").await;
    assert_eq!(reason, "Synced");
}

/// Plays a healthy Argo for every Rollout in `namespace`: each new generation is reported
/// Healthy at once. For journeys that need Rollouts to complete without driving each step.
pub fn healthy_argo(client: Client, namespace: &str) -> tokio::task::JoinHandle<()> {
    let api: Api<Rollout> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let events = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let mut events = std::pin::pin!(events);
        while let Ok(Some(rollout)) = events.try_next().await {
            let generation = rollout.metadata.generation.unwrap_or_default().to_string();
            let observed = rollout.status.as_ref().map(|s| &s["observedGeneration"]);
            if observed == Some(&Value::String(generation.clone())) {
                continue;
            }
            let name = rollout.metadata.name.clone().unwrap_or_default();
            let status = json!({"status": {"phase": "Healthy", "observedGeneration": generation}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
        }
    })
}
