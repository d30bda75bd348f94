//! The rollout scenario matrix (issue 32): workload kind × strategy × onFailure × window ×
//! outcome, every cell a SecretSync of its own rolling a workload of its own, all cells at
//! once in one sandbox. Each cell checks what its user reads at the end, and at every look
//! on the way the invariants:
//!
//! - no Pod runs on a Secret that was deleted;
//! - once `onFailure: Rollback` undid a version, the targets are on the active version, and
//!   that is never a version whose rollout failed;
//! - `RolledOut=True` never while a target's template references another version.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use secretsync_api::{SecretSync, SecretSyncStatus, TargetState};
use secretsync_operator::rollout::argo::Rollout;
use serde_json::{Value, json};

use crate::common::Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Rollout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    RollingUpdate,
    /// StatefulSets and DaemonSets: the cell deletes the old Pods once the template moved.
    OnDelete,
    /// Deployments and Rollouts: paused before the new version, resumed once the target
    /// says it waits.
    Paused,
    ReplicasZero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Good,
    /// The new version's Pods never become Ready.
    Bad,
    /// Two bad versions in a row: the second rollback must skip the first.
    BadPrevious,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    kind: Kind,
    strategy: Strategy,
    rollback: bool,
    window_open: bool,
    outcome: Outcome,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{:?}/{}/{}/{:?}",
            self.kind,
            self.strategy,
            if self.rollback { "Rollback" } else { "Hold" },
            if self.window_open { "open" } else { "closed" },
            self.outcome
        )
    }
}

/// Every meaningful cell: strategies only on the kinds that have them, and the double
/// failure only where a rollback happens.
fn cells() -> Vec<Cell> {
    let strategies = |kind| match kind {
        Kind::Deployment => vec![
            Strategy::RollingUpdate,
            Strategy::Paused,
            Strategy::ReplicasZero,
        ],
        Kind::StatefulSet => vec![
            Strategy::RollingUpdate,
            Strategy::OnDelete,
            Strategy::ReplicasZero,
        ],
        Kind::DaemonSet => vec![Strategy::RollingUpdate, Strategy::OnDelete],
        Kind::Rollout => vec![Strategy::RollingUpdate, Strategy::Paused],
    };
    let mut cells = Vec::new();
    for kind in [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Rollout,
    ] {
        for strategy in strategies(kind) {
            for rollback in [false, true] {
                for window_open in [true, false] {
                    for outcome in [Outcome::Good, Outcome::Bad, Outcome::BadPrevious] {
                        let double_failure = outcome == Outcome::BadPrevious;
                        if double_failure
                            && (!rollback || !window_open || strategy != Strategy::RollingUpdate)
                        {
                            continue;
                        }
                        cells.push(Cell {
                            kind,
                            strategy,
                            rollback,
                            window_open,
                            outcome,
                        });
                    }
                }
            }
        }
    }
    cells
}

const TIMEOUT: &str = "5s";
const CELL_DEADLINE: Duration = Duration::from_secs(60);
const PARALLEL_CELLS: usize = 12;

struct Run<'a> {
    env: &'a Env,
    cell: Cell,
    /// The SecretSync, its store, its workload and its Secrets' base name.
    name: String,
}

impl Run<'_> {
    fn secret(&self, v: i64) -> String {
        format!("{}-v{v}", self.name)
    }

    fn fail(&self, what: &str) -> ! {
        panic!("cell {} ({}): {what}", self.name, self.cell)
    }

    async fn set_version(&self, v: i64) {
        let value = format!(r#"{{"password":"p{v}"}}"#);
        self.env
            .set_fake_data(&self.name, &[("app/db", &value, &v.to_string())])
            .await;
    }

    fn workload_json(&self) -> Value {
        let name = &self.name;
        let bad = match self.cell.outcome {
            Outcome::Good => String::new(),
            Outcome::Bad => self.secret(2),
            Outcome::BadPrevious => format!("{},{}", self.secret(2), self.secret(3)),
        };
        // On the workload for the simulator, on the Pods for kwok (scripts/control-plane.sh).
        let template = json!({
            "metadata": {"labels": {"cell": name}, "annotations": {"sandbox.secretsync.io/bad-secrets": bad}},
            "spec": {"containers": [{
                "name": "app", "image": "app:1",
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": self.secret(1), "key": "password"}}}],
            }]},
        });
        let mut spec = json!({"selector": {"matchLabels": {"cell": name}}, "template": template});
        match self.cell.kind {
            Kind::DaemonSet => {}
            Kind::StatefulSet => {
                spec["serviceName"] = json!(name);
                spec["replicas"] = json!(2);
            }
            Kind::Deployment | Kind::Rollout => spec["replicas"] = json!(2),
        }
        match self.cell.strategy {
            Strategy::OnDelete => spec["updateStrategy"] = json!({"type": "OnDelete"}),
            Strategy::ReplicasZero => spec["replicas"] = json!(0),
            Strategy::RollingUpdate | Strategy::Paused => {}
        }
        if self.cell.kind == Kind::Rollout {
            spec["strategy"] = json!({"canary": {"steps": [{"setWeight": 50}]}});
        }
        let (api_version, kind) = match self.cell.kind {
            Kind::Deployment => ("apps/v1", "Deployment"),
            Kind::StatefulSet => ("apps/v1", "StatefulSet"),
            Kind::DaemonSet => ("apps/v1", "DaemonSet"),
            Kind::Rollout => ("argoproj.io/v1alpha1", "Rollout"),
        };
        json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "annotations": {"sandbox.secretsync.io/bad-secrets": bad}},
            "spec": spec,
        })
    }

    async fn create(&self) {
        let env = self.env;
        env.fake_store(&self.name, &[("app/db", r#"{"password":"p1"}"#, "1")])
            .await;
        let windows = if self.cell.window_open {
            String::new()
        } else {
            "\n    windows: [{schedule: '0 0 1 1 *', duration: 1m}]".to_owned()
        };
        env.create::<SecretSync>(&format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: {name}}}
  data: [{{secretKey: password, remoteRef: {{key: app/db, property: password}}}}]
  history: {{limit: 1}}
  rollout:
    targets: [{{kind: {kind:?}, name: {name}}}]
    timeout: {TIMEOUT}
    onFailure: {on_failure}{windows}
"#,
            name = self.name,
            kind = self.cell.kind,
            on_failure = if self.cell.rollback {
                "Rollback"
            } else {
                "Hold"
            },
        ))
        .await;
        env.wait_version(&self.name, 1).await;
        let object = self.workload_json();
        let params = Default::default();
        match self.cell.kind {
            Kind::Deployment => drop(
                env.api::<Deployment>()
                    .create(&params, &serde_json::from_value(object).unwrap())
                    .await
                    .unwrap(),
            ),
            Kind::StatefulSet => drop(
                env.api::<StatefulSet>()
                    .create(&params, &serde_json::from_value(object).unwrap())
                    .await
                    .unwrap(),
            ),
            Kind::DaemonSet => drop(
                env.api::<DaemonSet>()
                    .create(&params, &serde_json::from_value(object).unwrap())
                    .await
                    .unwrap(),
            ),
            Kind::Rollout => crate::common::create_rollout_json(env, object).await,
        }
    }

    /// The workload as JSON.
    async fn workload(&self) -> Value {
        let env = self.env;
        let name = &self.name;
        match self.cell.kind {
            Kind::Deployment => {
                serde_json::to_value(env.api::<Deployment>().get(name).await.unwrap())
            }
            Kind::StatefulSet => {
                serde_json::to_value(env.api::<StatefulSet>().get(name).await.unwrap())
            }
            Kind::DaemonSet => {
                serde_json::to_value(env.api::<DaemonSet>().get(name).await.unwrap())
            }
            Kind::Rollout => serde_json::to_value(env.api::<Rollout>().get(name).await.unwrap()),
        }
        .unwrap()
    }

    async fn patch_workload(&self, patch: Value) {
        let (env, name, params) = (self.env, &self.name, PatchParams::default());
        let patch = Patch::Merge(patch);
        match self.cell.kind {
            Kind::Deployment => drop(
                env.api::<Deployment>()
                    .patch(name, &params, &patch)
                    .await
                    .unwrap(),
            ),
            Kind::Rollout => drop(
                env.api::<Rollout>()
                    .patch(name, &params, &patch)
                    .await
                    .unwrap(),
            ),
            Kind::StatefulSet => drop(
                env.api::<StatefulSet>()
                    .patch(name, &params, &patch)
                    .await
                    .unwrap(),
            ),
            Kind::DaemonSet => drop(
                env.api::<DaemonSet>()
                    .patch(name, &params, &patch)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The versions of this cell the workload's template references.
    fn template_versions(&self, workload: &Value) -> Vec<i64> {
        secretsync_operator::podspec::object_secret_names("Deployment", workload)
            .iter()
            .filter_map(|n| secretsync_api::naming::parse_versioned_name(&self.name, n))
            .collect()
    }

    /// Plays Argo for a Rollout cell: the status follows the template (Healthy, or Degraded
    /// when it references a bad Secret), unless paused.
    async fn play_argo(&self, workload: &Value) {
        let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
        if workload.pointer("/status/observedGeneration") == Some(&json!(generation.to_string())) {
            return;
        }
        let paused = workload["spec"]["paused"].as_bool() == Some(true);
        let bad = workload
            .pointer("/metadata/annotations/sandbox.secretsync.io~1bad-secrets")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let degraded = self
            .template_versions(workload)
            .iter()
            .any(|v| bad.split(',').any(|b| b == self.secret(*v)));
        let phase = match (paused, degraded) {
            (true, _) => "Paused",
            (false, true) => "Degraded",
            (false, false) => "Healthy",
        };
        self.env
            .api::<Rollout>()
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": phase, "observedGeneration": generation.to_string()}})),
            )
            .await
            .unwrap();
    }

    /// One look: plays the cell's user (and Argo), checks the invariants, and returns the
    /// status and the template's versions.
    async fn look(&self) -> (SecretSyncStatus, Vec<i64>) {
        let env = self.env;
        // The status first: the template read after it can only be newer.
        let status = env.status(&self.name).await;
        let workload = self.workload().await;
        if self.cell.kind == Kind::Rollout {
            self.play_argo(&workload).await;
        }
        let on = self.template_versions(&workload);
        let pods = env
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("cell={}", self.name)))
            .await
            .unwrap()
            .items;
        let secrets: Vec<String> = env
            .api::<Secret>()
            .list_metadata(
                &ListParams::default().labels(&secretsync_api::labels::sync_selector(&self.name)),
            )
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.name_any())
            .collect();
        // A Pod on a Secret that no longer exists: the invariant that matters most.
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            for secret in pod_secrets(pod) {
                if secrets.contains(&secret) {
                    continue;
                }
                // Gone since the list, with its Pod, is fine. By UID: a StatefulSet's Pod
                // replaced since the list comes back under the same name.
                let still = env.api::<Pod>().get_opt(&pod.name_any()).await.unwrap();
                if still.is_some_and(|p| {
                    p.metadata.uid == pod.metadata.uid && p.metadata.deletion_timestamp.is_none()
                }) {
                    self.fail(&format!("Pod {} runs on deleted {secret}", pod.name_any()));
                }
            }
        }
        // A rolled-back failure: the targets are on the active version, never a failed one.
        if let Some(rollout) = &status.rollout
            && let Some(failed) = &rollout.failed
        {
            let active = status.active_version.unwrap_or_default();
            if active == failed.version || rollout.failed_versions.contains(&active) {
                self.fail(&format!("rolled back to failed v{active}: {rollout:?}"));
            }
        }
        // Complete at v while the template still references an older version.
        let rolled_out = status
            .conditions
            .iter()
            .find(|c| c.type_ == "RolledOut")
            .is_some_and(|c| c.status == "True");
        let about = status.rollout.as_ref().and_then(|r| r.version);
        if rolled_out
            && let Some(about) = about
            && on.iter().any(|v| *v < about)
        {
            self.fail(&format!(
                "RolledOut=True at v{about} while the template is on {on:?}"
            ));
        }
        // The cell's user.
        let target = status
            .rollout
            .as_ref()
            .and_then(|r| r.targets.first())
            .cloned();
        if self.cell.strategy == Strategy::Paused
            && target
                .as_ref()
                .is_some_and(|t| t.state == TargetState::Waiting && t.version > 1)
        {
            self.patch_workload(json!({"spec": {"paused": false}}))
                .await;
        }
        // OnDelete: the user deletes the old Pods once the template moved. A StatefulSet
        // stuck on a broken Pod: the user deletes it after the rollback, as Kubernetes'
        // "forced rollback" asks.
        let deletes = |pod: &Pod| match self.cell.strategy {
            Strategy::OnDelete => true,
            _ => self.cell.kind == Kind::StatefulSet && !pod_ready(pod),
        };
        if let Some(current) = on.first().copied() {
            for pod in &pods {
                if deletes(pod)
                    && !pod_secrets(pod).contains(&self.secret(current))
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    let _ = env
                        .api::<Pod>()
                        .delete(&pod.name_any(), &DeleteParams::default())
                        .await;
                }
            }
        }
        (status, on)
    }

    /// Looks until `done` says the cell reached its end state.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&SecretSyncStatus, &[i64]) -> bool,
    ) -> (SecretSyncStatus, Vec<i64>) {
        let deadline = tokio::time::Instant::now() + CELL_DEADLINE;
        loop {
            let (status, on) = self.look().await;
            if done(&status, &on) {
                return (status, on);
            }
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!(
                    "never {what}; template on {on:?}, status {status:#?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn run(&self) {
        self.create().await;
        let complete_at = |v: i64| {
            move |s: &SecretSyncStatus, on: &[i64]| {
                on.iter().all(|x| *x == v)
                    && s.rollout.as_ref().is_some_and(|r| {
                        r.targets
                            .iter()
                            .all(|t| t.version == v && t.state == TargetState::Complete)
                    })
            }
        };
        self.until("complete at v1", complete_at(1)).await;
        if self.cell.strategy == Strategy::Paused {
            self.patch_workload(json!({"spec": {"paused": true}})).await;
        }
        if self.cell.outcome == Outcome::BadPrevious {
            self.set_version(2).await;
            self.until("back on v1 after v2", |s, on| {
                on == [1]
                    && s.rollout
                        .as_ref()
                        .and_then(|r| r.failed.as_ref())
                        .is_some_and(|f| f.version == 2)
            })
            .await;
            self.set_version(3).await;
            let (status, _) = self
                .until("back on v1 after v3", |s, on| {
                    on == [1]
                        && s.rollout
                            .as_ref()
                            .and_then(|r| r.failed.as_ref())
                            .is_some_and(|f| f.version == 3)
                        && s.current_version == Some(3)
                })
                .await;
            assert_eq!(status.active_version, Some(1), "{}", self.cell);
            return;
        }
        self.set_version(2).await;
        let fails =
            self.cell.outcome == Outcome::Bad && self.cell.strategy != Strategy::ReplicasZero;
        let reason = |s: &SecretSyncStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "RolledOut")
                .map(|c| (c.reason.clone(), c.message.clone()))
                .unwrap_or_default()
        };
        if !self.cell.window_open {
            let (status, on) = self
                .until("waiting for the window", |s, _| {
                    s.current_version == Some(2) && reason(s).0 == "RolloutWaiting"
                })
                .await;
            assert_eq!(on, [1], "{}: moved outside the window", self.cell);
            assert_eq!(status.active_version, Some(1), "{}", self.cell);
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            assert_eq!(ready.status, "True", "{}: {ready:?}", self.cell);
            return;
        }
        if !fails {
            self.until("complete at v2", complete_at(2)).await;
            self.env.wait_for_absent::<Secret>(&self.secret(1)).await;
            return;
        }
        if self.cell.rollback {
            let (status, _) = self
                .until("rolled back to v1", |s, on| {
                    on == [1]
                        && reason(s)
                            .1
                            .contains(&format!("rolled back to {}", self.secret(1)))
                })
                .await;
            assert_eq!(status.active_version, Some(1), "{}", self.cell);
            assert!(
                self.env.secret(&self.secret(2)).await.is_some(),
                "{}: failed version kept",
                self.cell
            );
        } else {
            let (status, on) = self
                .until("failed and holding on v2", |s, _| {
                    reason(s).0 == "RolloutFailed"
                        && s.rollout.as_ref().is_some_and(|r| {
                            r.targets
                                .iter()
                                .all(|t| t.version == 2 && t.state == TargetState::Failed)
                        })
                })
                .await;
            assert_eq!(on, [2], "{}", self.cell);
            assert_eq!(status.active_version, Some(2), "{}", self.cell);
            assert!(
                self.env.secret(&self.secret(1)).await.is_some(),
                "{}: v1 kept while v2 fails",
                self.cell
            );
        }
        let status = self.env.status(&self.name).await;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RolloutFailed"),
            "{}",
            self.cell
        );
    }
}

fn pod_secrets(pod: &Pod) -> Vec<String> {
    let spec = serde_json::to_value(pod.spec.as_ref()).unwrap_or_default();
    secretsync_operator::podspec::object_secret_names("Pod", &json!({"spec": spec}))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every cell at once, each with its own store, SecretSync and workload.
#[tokio::test]
async fn rollout_matrix() {
    let env = Env::without_operator("payments").await;
    crate::argo::install_argo(&env.client).await;
    let env = env.with_operator();
    let cells = cells();
    let started = tokio::time::Instant::now();
    let runs: Vec<Run> = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| Run {
            env: &env,
            cell: *cell,
            name: format!("c{i}"),
        })
        .collect();
    // A dozen at a time: all at once would measure the test machine, not the operator.
    // Every cell runs to its end, so a failure names all the cells that caught it.
    let failures: Vec<String> = futures::stream::iter(runs.iter().map(|run| async move {
        let outcome = AssertUnwindSafe(run.run()).catch_unwind().await;
        outcome.err().map(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("{} ({}): {message}", run.name, run.cell)
        })
    }))
    .buffer_unordered(PARALLEL_CELLS)
    .filter_map(std::future::ready)
    .collect()
    .await;
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n")
    );
    eprintln!(
        "rollout matrix: {} cells in {:?}",
        cells.len(),
        started.elapsed()
    );
}
