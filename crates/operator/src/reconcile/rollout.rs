//! Step 5: rolling the targets onto the active version (api.md guarantee 3). [`plan`] reads
//! each target (from the workload cache) and decides its patch and state; [`roll_out`]
//! applies the patches. The pod-spec rules themselves are in [`crate::rollout`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{RolloutStatus, SecretSync, TargetState, TargetStatus, WorkloadKind};
use serde_json::Value;
use tracing::{debug, info};

use super::secret_ref;
use crate::conditions::now;
use crate::context::Context;
use crate::error::Result;
use crate::rollout::{Progress, rewrite_patch, rollout_progress};
use crate::workloads::patch_workload;

/// Where the rollout to the active version stands, with a summary for messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RolloutState {
    /// No `spec.rollout`, or nothing matched it.
    #[default]
    NoTargets,
    Progressing(String),
    Complete(String),
    Failed(String),
}

#[derive(Default)]
pub struct Outcome {
    pub state: RolloutState,
    pub status: Option<RolloutStatus>,
    pub events: Vec<Event>,
    pub requeue: Option<Duration>,
}

/// A rollout target as the cache has it (`None`: it does not exist).
pub struct Target {
    pub kind: WorkloadKind,
    pub name: String,
    pub workload: Option<Arc<Value>>,
}

/// What to do: patches to send, and the outcome once they are sent.
pub struct Plan {
    /// (kind, name, JSON patch) for targets that point elsewhere.
    pub patches: Vec<(WorkloadKind, String, Value)>,
    pub outcome: Outcome,
}

/// Decides each target's patch and state. `previous` is the last rollout status: when it was
/// for the same version, its start time (for the timeout) and target states carry over.
pub fn plan(
    sync: &SecretSync,
    base: &str,
    active: i64,
    active_name: &str,
    previous: Option<&RolloutStatus>,
    targets: &[Target],
    now_ts: jiff::Timestamp,
) -> Plan {
    let mut outcome = Outcome::default();
    let mut patches = Vec::new();
    if targets.is_empty() {
        return Plan { patches, outcome };
    }
    let same_version = previous.filter(|p| p.version == Some(active));
    let started_at = same_version
        .and_then(|p| p.started_at.clone())
        .unwrap_or(Time(now_ts));
    let timeout = sync.spec.rollout_timeout();
    let deadline = started_at
        .0
        .checked_add(jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX);
    let timed_out = now_ts >= deadline;
    let was = |kind: WorkloadKind, name: &str| {
        same_version
            .and_then(|p| p.targets.iter().find(|t| t.kind == kind && t.name == name))
            .map(|t| t.state)
    };

    let mut statuses = Vec::new();
    for target in targets {
        let (kind, name) = (target.kind, &target.name);
        let (state, message) = match &target.workload {
            None => (
                TargetState::NotFound,
                Some(format!("{} {name} not found", kind.as_str())),
            ),
            Some(workload) => match rewrite_patch(kind, workload, base, active_name) {
                Some(patch) => {
                    patches.push((kind, name.clone(), patch));
                    (
                        TargetState::Progressing,
                        Some("pod template updated".into()),
                    )
                }
                None => match rollout_progress(kind, workload) {
                    Progress::Complete => (TargetState::Complete, None),
                    Progress::Failed { reason } => (TargetState::Failed, Some(reason)),
                    Progress::Progressing { reason } if timed_out => (
                        TargetState::Failed,
                        Some(format!(
                            "not complete after {}: {reason}",
                            humanize(timeout)
                        )),
                    ),
                    Progress::Progressing { reason } => (TargetState::Progressing, Some(reason)),
                },
            },
        };
        if state == TargetState::Failed && was(kind, name) != Some(TargetState::Failed) {
            outcome.events.push(Event {
                type_: EventType::Warning,
                reason: event::ROLLOUT_FAILED.into(),
                note: Some(format!(
                    "{} {name} did not roll out to {active_name}: {}",
                    kind.as_str(),
                    message.as_deref().unwrap_or("failed")
                )),
                action: "Rollout".into(),
                secondary: Some(secret_ref(sync, active_name)),
            });
        }
        statuses.push(TargetStatus {
            kind,
            name: name.clone(),
            version: active,
            state,
            message,
        });
    }

    let counted: Vec<&TargetStatus> = statuses
        .iter()
        .filter(|t| t.state != TargetState::NotFound)
        .collect();
    let complete = counted
        .iter()
        .filter(|t| t.state == TargetState::Complete)
        .count();
    let summary = format!(
        "{complete}/{} targets rolled out to {active_name}",
        counted.len()
    );
    let previous_complete = same_version.is_some_and(|p| {
        p.targets
            .iter()
            .all(|t| matches!(t.state, TargetState::Complete | TargetState::NotFound))
    });
    outcome.state = if let Some(failed) = statuses.iter().find(|t| t.state == TargetState::Failed) {
        RolloutState::Failed(format!(
            "rollout failed: {} {}: {}",
            failed.kind.as_str(),
            failed.name,
            failed.message.as_deref().unwrap_or("failed")
        ))
    } else if complete == counted.len() {
        if !previous_complete {
            outcome.events.push(Event {
                type_: EventType::Normal,
                reason: event::ROLLOUT_COMPLETE.into(),
                note: Some(summary.clone()),
                action: "Rollout".into(),
                secondary: Some(secret_ref(sync, active_name)),
            });
        }
        RolloutState::Complete(summary)
    } else {
        // The workload watch wakes us on progress; the deadline needs a timer.
        let until_deadline =
            Duration::try_from(deadline.duration_since(now_ts)).unwrap_or(Duration::ZERO);
        outcome.requeue = Some(until_deadline.max(Duration::from_millis(100)));
        RolloutState::Progressing(summary)
    };
    outcome.status = Some(RolloutStatus {
        targets: statuses,
        version: Some(active),
        started_at: Some(started_at),
    });
    Plan { patches, outcome }
}

/// Points every target's pod template at the active version (a minimal JSON patch, only
/// when something differs) and reads how far each rollout got.
pub(super) async fn roll_out(
    sync: &SecretSync,
    ctx: &Context,
    base: &str,
    active: i64,
    active_name: &str,
    previous: Option<&RolloutStatus>,
) -> Result<Outcome> {
    let namespace = sync.namespace().unwrap_or_default();
    let targets: Vec<Target> = ctx
        .workloads
        .targets(sync)
        .into_iter()
        .map(|(kind, name)| Target {
            workload: ctx.workloads.get(kind, &namespace, &name),
            kind,
            name,
        })
        .collect();
    let Plan {
        patches,
        mut outcome,
    } = plan(sync, base, active, active_name, previous, &targets, now().0);
    for (kind, name, patch) in patches {
        match patch_workload(&ctx.client, kind, &namespace, &name, patch).await {
            Ok(()) => {
                info!(kind = kind.as_str(), target = %name, secret = %active_name, "rolling out");
                // A rollback (pinned to the active version) says why it was asked for.
                let why = if sync.spec.pin_version == Some(active) {
                    format!(" (pinned{})", super::version::asked_reason(sync))
                } else {
                    String::new()
                };
                outcome.events.push(Event {
                    type_: EventType::Normal,
                    reason: event::ROLLOUT_STARTED.into(),
                    note: Some(format!(
                        "{} {name} now references {active_name}{why}",
                        kind.as_str()
                    )),
                    action: "Rollout".into(),
                    secondary: Some(secret_ref(sync, active_name)),
                });
            }
            // Someone changed it meanwhile (the resourceVersion test failed): look again
            // on the next pass.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                debug!(target = %name, "workload changed during the rollout patch");
                outcome.requeue = Some(
                    outcome
                        .requeue
                        .map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(outcome)
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        let value: Value = serde_yaml::from_str(text).unwrap();
        serde_json::from_value(value).unwrap()
    }

    const SYNC: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db, namespace: payments, uid: u1}
spec:
  storeRef: {name: vault}
  rollout: {targets: [{kind: Deployment, name: api}, {kind: Deployment, name: gone}], timeout: 5m}
"#;

    fn deployment(reference: &str, updated: i64) -> Arc<Value> {
        Arc::new(yaml(&format!(
            r#"
metadata: {{name: api, namespace: payments, resourceVersion: "41", generation: 2}}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - envFrom: [{{secretRef: {{name: {reference}}}}}]
status: {{observedGeneration: 2, replicas: 2, updatedReplicas: {updated}, readyReplicas: 2, availableReplicas: 2}}
"#
        )))
    }

    fn targets(api: Arc<Value>) -> Vec<Target> {
        vec![
            Target {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
                workload: Some(api),
            },
            Target {
                kind: WorkloadKind::Deployment,
                name: "gone".into(),
                workload: None,
            },
        ]
    }

    const NOW: &str = "2026-11-23T10:00:00Z";

    #[test]
    fn a_target_on_an_old_version_is_patched_and_progressing() {
        let sync: SecretSync = yaml(SYNC);
        let plan = plan(
            &sync,
            "db",
            2,
            "db-v2",
            None,
            &targets(deployment("db-v1", 2)),
            NOW.parse().unwrap(),
        );
        assert_eq!(plan.patches.len(), 1);
        let (_, name, patch) = &plan.patches[0];
        assert_eq!(name, "api");
        assert_eq!(patch[0]["op"], "test", "guarded by the resourceVersion");
        assert_eq!(patch[1]["value"], "db-v2");
        assert!(matches!(plan.outcome.state, RolloutState::Progressing(_)));
        let status = plan.outcome.status.unwrap();
        let states: Vec<_> = status.targets.iter().map(|t| t.state).collect();
        assert_eq!(states, [TargetState::Progressing, TargetState::NotFound]);
        assert_eq!(status.started_at.unwrap().0, NOW.parse().unwrap());
    }

    #[test]
    fn a_finished_target_completes_once_and_times_out_otherwise() {
        let sync: SecretSync = yaml(SYNC);
        let done = plan(
            &sync,
            "db",
            2,
            "db-v2",
            None,
            &targets(deployment("db-v2", 2)),
            NOW.parse().unwrap(),
        );
        assert!(done.patches.is_empty(), "nothing to rewrite: no write");
        assert!(matches!(done.outcome.state, RolloutState::Complete(_)));
        assert_eq!(done.outcome.events.len(), 1, "RolloutComplete");
        let again = plan(
            &sync,
            "db",
            2,
            "db-v2",
            done.outcome.status.as_ref(),
            &targets(deployment("db-v2", 2)),
            NOW.parse().unwrap(),
        );
        assert!(again.outcome.events.is_empty(), "reported once");

        let started = plan(
            &sync,
            "db",
            2,
            "db-v2",
            None,
            &targets(deployment("db-v2", 1)),
            NOW.parse().unwrap(),
        );
        assert!(matches!(
            started.outcome.state,
            RolloutState::Progressing(_)
        ));
        let late = plan(
            &sync,
            "db",
            2,
            "db-v2",
            started.outcome.status.as_ref(),
            &targets(deployment("db-v2", 1)),
            "2026-11-23T10:05:01Z".parse().unwrap(),
        );
        assert!(
            matches!(late.outcome.state, RolloutState::Failed(ref why) if why.contains("not complete after 5m"))
        );
        assert_eq!(late.outcome.events[0].reason, "RolloutFailed");
    }
}
