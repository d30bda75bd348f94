//! Step 5: rolling the targets onto the active version (api.md guarantee 3). [`plan`] reads
//! each target (from the workload cache) and decides its patch and state; [`decide`] adds
//! `onFailure: Rollback` on top of it; [`roll_out`] applies the patches. The pod-spec rules
//! themselves are in [`crate::rollout`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::window::{self, Opening};
use secretsync_api::{
    FailedRollout, OnFailure, RevokePolicy, RolloutStatus, SecretSync, TargetState, TargetStatus,
    WorkloadKind, labels,
};
use serde_json::Value;
use tracing::{debug, info};

use super::{secret_ref, with_timeout};
use crate::argo;
use crate::batch::{Rewrite, Sent};
use crate::conditions::now;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::index::VersionMeta;
use crate::rollout::{
    Progress, referenced_versions, rewrite_patch, rewrites_patch, rollout_progress, template_refs,
    version_among,
};
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
    /// Targets need to move but no rollout window is open; says when the next one opens.
    Waiting(String),
}

#[derive(Default)]
pub struct Outcome {
    pub state: RolloutState,
    pub status: Option<RolloutStatus>,
    pub events: Vec<Event>,
    pub requeue: Option<Duration>,
    /// The version the targets point at when it is not the wanted one: `onFailure: Rollback`
    /// moved them back to it (`status.failed` names the wanted one), or they wait on it for a
    /// rollout window.
    pub targets_on: Option<i64>,
}

/// Whether targets may move now (`spec.rollout.windows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// No window is open; the next opens then (`None`: never again).
    Closed {
        opens: Option<jiff::Timestamp>,
    },
}

/// [`Gate::Closed`] while no rollout window is open, unless something may not wait: a
/// target still on a revoked version under `revokePolicy: Immediate`, or the version a
/// rotation made with `secretsync.io/rollout-now` (`kubectl secretsync rotate --now`).
pub fn gate(
    sync: &SecretSync,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    targets: &[Target],
    now_ts: jiff::Timestamp,
) -> Gate {
    let windows = sync
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.windows.as_deref())
        .unwrap_or_default();
    // validate_spec ran first: a window that does not parse cannot get here.
    let Ok(windows) = window::parse_all(windows) else {
        return Gate::Open;
    };
    let Opening::Closed { opens } = window::opening(&windows, now_ts) else {
        return Gate::Open;
    };
    // Only the first version of the raised spec.version: later ones (new backend values)
    // wait for a window again.
    let rotated_now = sync
        .annotations()
        .get(labels::ROLLOUT_NOW)
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|spec_version| {
            existing
                .values()
                .find(|m| m.spec_version == spec_version)
                .is_some_and(|m| m.version == wanted)
        });
    let revoked_in_use = sync.spec.revoke_policy() == RevokePolicy::Immediate
        && targets.iter().any(|t| {
            t.workload.as_ref().is_some_and(|w| {
                referenced_versions(t.kind.as_str(), w, bases)
                    .iter()
                    .any(|v| sync.spec.is_revoked(*v))
            })
        });
    if rotated_now || revoked_in_use {
        Gate::Open
    } else {
        Gate::Closed { opens }
    }
}

/// `planned` (for the wanted version) held back while the gate is closed: no patch is sent,
/// the previous rollout status stays (the timeout only counts once targets move), and a
/// timer wakes the SecretSync when the next window opens.
fn hold_for_window(
    planned: Plan,
    gate: Gate,
    wanted_name: &str,
    previous: Option<&RolloutStatus>,
    now_ts: jiff::Timestamp,
) -> Plan {
    let Gate::Closed { opens } = gate else {
        return planned;
    };
    if planned.patches.is_empty() {
        return planned;
    }
    let (message, requeue) = match opens {
        Some(at) => (
            format!("{wanted_name} waits for a rollout window; the next opens at {at}"),
            Some(
                Duration::try_from(at.duration_since(now_ts))
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_millis(100)),
            ),
        ),
        None => (
            format!("{wanted_name} waits for a rollout window, but no window opens again"),
            None,
        ),
    };
    Plan {
        patches: Vec::new(),
        outcome: Outcome {
            state: RolloutState::Waiting(message),
            status: previous.cloned(),
            events: Vec::new(),
            requeue,
            targets_on: previous.and_then(|p| p.version),
        },
    }
}

/// A rollout target as the cache has it (`None`: it does not exist).
pub struct Target {
    pub kind: WorkloadKind,
    pub name: String,
    /// Listed by name in `rollout.targets` (not only matched by `rollout.selector`): a named
    /// target must reference the SecretSync; a selected one that does not is not its target.
    pub named: bool,
    pub workload: Option<Arc<Value>>,
    /// Whether the API server serves the kind at all (Argo Rollouts' CRD may be absent).
    pub kind_served: bool,
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
    bases: &[String],
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
    // Rollout durations outlive the rollout they were measured on.
    let mut last_duration = previous.and_then(|p| p.last_duration.clone());
    let mut longest_duration = previous.and_then(|p| p.longest_duration.clone());
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
            None if target.kind_served => (
                TargetState::NotFound,
                Some(format!("{} {name} not found", kind.as_str())),
            ),
            None => (
                TargetState::NotFound,
                Some(format!(
                    "{} {name} not found: {}",
                    kind.as_str(),
                    argo::NOT_INSTALLED
                )),
            ),
            Some(workload) => match rewrite_patch(kind, workload, bases, active_name) {
                Some(patch) => {
                    if was(kind, name) == Some(TargetState::Complete) {
                        outcome.events.push(reverted_event(
                            sync,
                            target,
                            workload,
                            bases,
                            active_name,
                        ));
                    }
                    patches.push((kind, name.clone(), patch));
                    (
                        TargetState::Progressing,
                        Some("pod template updated".into()),
                    )
                }
                None if !references(kind, workload, active_name) => {
                    if !target.named {
                        continue;
                    }
                    let reason = format!(
                        "its pod template references no Secret of this SecretSync (expected {active_name})"
                    );
                    if timed_out {
                        (
                            TargetState::Failed,
                            Some(format!(
                                "not complete after {}: {reason}",
                                humanize(timeout)
                            )),
                        )
                    } else {
                        (TargetState::Progressing, Some(reason))
                    }
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

    let found = statuses
        .iter()
        .filter(|t| t.state != TargetState::NotFound)
        .count();
    let complete = statuses
        .iter()
        .filter(|t| t.state == TargetState::Complete)
        .count();
    // A target that does not exist counts as not rolled out, named, so a typo shows in the
    // conditions (RolledOut=False, TargetNotFound; see status.rs) and not only in the list.
    let missing: Vec<&str> = statuses
        .iter()
        .filter(|t| t.state == TargetState::NotFound)
        .filter_map(|t| t.message.as_deref())
        .collect();
    let mut summary = format!(
        "{complete}/{} targets rolled out to {active_name}",
        statuses.len()
    );
    if !missing.is_empty() {
        summary = format!("{summary}: {}", missing.join(", "));
    }
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
    } else if complete == found {
        // Measured only on a rollout this process saw start (a previous status for the
        // version), from its start to now: what lease-aware rotation plans for.
        if let Some(started) = same_version
            .filter(|_| !previous_complete)
            .and_then(|p| p.started_at.as_ref())
        {
            let took = Duration::try_from(now_ts.duration_since(started.0)).unwrap_or_default();
            let longest = longest_duration
                .as_deref()
                .and_then(|d| secretsync_api::duration::parse_duration(d).ok())
                .unwrap_or_default()
                .max(took);
            last_duration = Some(format!("{}ms", took.as_millis()));
            longest_duration = Some(format!("{}ms", longest.as_millis()));
        }
        if !previous_complete && complete > 0 {
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
        failed: None,
        last_duration,
        longest_duration,
    });
    Plan { patches, outcome }
}

/// Whether the workload's pod template references `secret`.
fn references(kind: WorkloadKind, workload: &Value, secret: &str) -> bool {
    template_refs(kind.as_str(), workload)
        .iter()
        .any(|r| r.name == secret)
}

/// The Warning for a target that had completed its rollout to `active_name` and that someone
/// else set back to another version (`kubectl rollout undo`, a GitOps sync of an old
/// manifest): it names what was found and who wrote the workload last.
fn reverted_event(
    sync: &SecretSync,
    target: &Target,
    workload: &Value,
    bases: &[String],
    active_name: &str,
) -> Event {
    let found: BTreeSet<String> = template_refs(target.kind.as_str(), workload)
        .into_iter()
        .filter(|r| r.name != active_name && version_among(bases, &r.name).is_some())
        .map(|r| r.name)
        .collect();
    let found: Vec<String> = found.into_iter().collect();
    let by = crate::workloads::last_manager(workload)
        .map(|m| format!(" by {m}"))
        .unwrap_or_default();
    Event {
        type_: EventType::Warning,
        reason: event::ROLLOUT_REVERTED.into(),
        note: Some(crate::conditions::truncate(
            format!(
                "{} {} was set back to {}{by}; put back on the active {active_name} (pin an older \
                 version with spec.pinVersion to roll back)",
                target.kind.as_str(),
                target.name,
                found.join(", "),
            ),
            1024,
        )),
        action: "Rollout".into(),
        secondary: Some(secret_ref(sync, active_name)),
    }
}

/// The newest version before `failed` that still exists and is not revoked: where
/// `onFailure: Rollback` takes the targets.
pub fn rollback_target(
    sync: &SecretSync,
    existing: &BTreeMap<i64, VersionMeta>,
    failed: i64,
) -> Option<i64> {
    existing
        .range(..failed)
        .rev()
        .map(|(v, _)| *v)
        .find(|v| !sync.spec.is_revoked(*v))
}

/// [`plan`] for the `wanted` version, with `onFailure: Rollback`: once the rollout to
/// `wanted` is Failed, the targets are planned onto [`rollback_target`] instead, and stay
/// there — remembered in `status.rollout.failed`, so a restart does not retry — until
/// `wanted` changes (a new version, a rotation) or the spec is edited. A pinned version is
/// the user's explicit choice and is never rolled back.
pub fn decide(
    sync: &SecretSync,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    previous: Option<&RolloutStatus>,
    targets: &[Target],
    now_ts: jiff::Timestamp,
) -> Plan {
    let gate = gate(sync, bases, existing, wanted, targets, now_ts);
    let name_of = |v: i64| {
        existing
            .get(&v)
            .map(|m| m.secret_name.clone())
            .unwrap_or_default()
    };
    let wanted_name = name_of(wanted);
    let rolls_back =
        sync.spec.on_failure() == OnFailure::Rollback && sync.spec.pin_version.is_none();
    let Some(back) = rolls_back
        .then(|| rollback_target(sync, existing, wanted))
        .flatten()
    else {
        let planned = plan(sync, bases, wanted, &wanted_name, previous, targets, now_ts);
        return hold_for_window(planned, gate, &wanted_name, previous, now_ts);
    };
    let standing = previous
        .and_then(|p| p.failed.as_ref())
        .filter(|f| f.version == wanted && f.generation == sync.metadata.generation);
    let back_name = name_of(back);
    let (failure, mut events) = match standing {
        Some(failure) => (failure.clone(), Vec::new()),
        None => {
            let planned = plan(sync, bases, wanted, &wanted_name, previous, targets, now_ts);
            let first = hold_for_window(planned, gate, &wanted_name, previous, now_ts);
            let RolloutState::Failed(why) = &first.outcome.state else {
                return first;
            };
            let why = why.strip_prefix("rollout failed: ").unwrap_or(why);
            let failure = FailedRollout {
                version: wanted,
                generation: sync.metadata.generation,
                message: format!("rollout to {wanted_name} failed: {why}"),
            };
            let mut events = first.outcome.events;
            events.push(Event {
                type_: EventType::Warning,
                reason: event::ROLLOUT_FAILED.into(),
                note: Some(format!(
                    "{}; rolling targets back to {back_name}",
                    failure.message
                )),
                // Not folded into a series with the per-target failure events.
                action: "Rollback".into(),
                secondary: Some(secret_ref(sync, &wanted_name)),
            });
            (failure, events)
        }
    };
    // The failed rollout's patches are dropped: the targets go straight back, windows or
    // not, as a rollback repairs what the failed rollout broke.
    let mut back_plan = plan(sync, bases, back, &back_name, previous, targets, now_ts);
    let outcome = &mut back_plan.outcome;
    let failed = &failure.message;
    outcome.state = RolloutState::Failed(match &outcome.state {
        RolloutState::Complete(summary) => {
            format!("{failed}; rolled back to {back_name}: {summary}")
        }
        RolloutState::Progressing(summary) => {
            format!("{failed}; rolling back to {back_name}: {summary}")
        }
        RolloutState::Failed(why) => {
            format!("{failed}; the rollback to {back_name} failed too: {why}")
        }
        RolloutState::NoTargets | RolloutState::Waiting(_) => {
            format!("{failed}; rolled back to {back_name}")
        }
    });
    events.append(&mut outcome.events);
    outcome.events = events;
    if let Some(status) = &mut outcome.status {
        status.failed = Some(failure);
    }
    outcome.targets_on = Some(back);
    back_plan
}

/// Points every target's pod template at the wanted version — or, after a failed rollout
/// with `onFailure: Rollback`, the version before it — (a minimal JSON patch, only when
/// something differs) and reads how far each rollout got.
pub(super) async fn roll_out(
    sync: &SecretSync,
    ctx: &Context,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    previous: Option<&RolloutStatus>,
) -> Result<Outcome> {
    let namespace = sync.namespace().unwrap_or_default();
    let targets: Vec<Target> = ctx
        .workloads
        .targets(sync)
        .into_iter()
        .map(|(kind, name)| Target {
            workload: ctx.workloads.get(kind, &namespace, &name),
            kind_served: ctx.workloads.kind_served(kind),
            named: sync
                .spec
                .rollout
                .iter()
                .flat_map(|r| r.targets.iter().flatten())
                .any(|t| t.kind == kind && t.name == name),
            kind,
            name,
        })
        .collect();
    let Plan {
        patches,
        mut outcome,
    } = decide(sync, bases, existing, wanted, previous, &targets, now().0);
    let moving_to = outcome.targets_on.unwrap_or(wanted);
    let active_name = existing
        .get(&moving_to)
        .map(|m| m.secret_name.as_str())
        .unwrap_or_default();
    // Each target's rewrite joins the workload's batch (crate::batch), so SecretSyncs that
    // roll the same workload together change its template once; the patch is built when
    // the batch goes out, from the workload as it is then. Only a workload that other
    // SecretSyncs roll too waits the settle delay; a workload of its own goes at once.
    let namespace = namespace.as_str();
    let settle_for = |kind: WorkloadKind, name: &str| {
        let labels: BTreeMap<String, String> = targets
            .iter()
            .find(|t| t.kind == kind && t.name == name)
            .and_then(|t| t.workload.as_ref()?.pointer("/metadata/labels").cloned())
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default();
        let owners = ctx
            .sync_index
            .rollout_owners(namespace, kind, name, &labels);
        if owners.len() > 1 {
            ctx.config.rollout_settle
        } else {
            Duration::ZERO
        }
    };
    let rewrites = patches.into_iter().map(|(kind, name, _)| {
        let settle = settle_for(kind, &name);
        let key = (kind, namespace.to_owned(), name.clone());
        let rewrite = Rewrite {
            bases: bases.to_vec(),
            active_name: active_name.to_owned(),
        };
        async move {
            let sent = ctx
                .batcher
                .submit(key, rewrite, settle, |batch| {
                    send_batch(ctx, kind, namespace, &name, batch)
                })
                .await;
            (kind, name, sent)
        }
    });
    for (kind, name, sent) in futures::future::join_all(rewrites).await {
        match sent {
            Sent::Patched => {
                info!(kind = kind.as_str(), target = %name, secret = %active_name, "rolling out");
                // A rollback (pinned to the active version) says why it was asked for.
                let why = if sync.spec.pin_version == Some(moving_to) {
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
            Sent::Unchanged => {}
            // Someone changed it meanwhile (the resourceVersion test failed): look again
            // on the next pass.
            Sent::Conflict => {
                debug!(target = %name, "workload changed during the rollout patch");
                outcome.requeue = Some(
                    outcome
                        .requeue
                        .map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))),
                );
            }
            Sent::Failed(message) => return Err(Error::Rollout(message)),
        }
    }
    Ok(outcome)
}

/// Sends one batch of rewrites to a workload as one patch, built from the cached workload
/// (guarded by its resourceVersion).
async fn send_batch(
    ctx: &Context,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    batch: Vec<Rewrite>,
) -> Sent {
    let Some(workload) = ctx.workloads.get(kind, namespace, name) else {
        return Sent::Unchanged;
    };
    let pairs: Vec<(&[String], &str)> = batch
        .iter()
        .map(|r| (r.bases.as_slice(), r.active_name.as_str()))
        .collect();
    let Some(patch) = rewrites_patch(kind, &workload, &pairs) else {
        return Sent::Unchanged;
    };
    match with_timeout(
        ctx,
        patch_workload(&ctx.client, kind, namespace, name, patch),
    )
    .await
    {
        Ok(Ok(())) => Sent::Patched,
        Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 422 => Sent::Conflict,
        Ok(Err(e)) => Sent::Failed(e.to_string()),
        // A timed-out write is retried like a conflict.
        Err(_) => Sent::Conflict,
    }
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

    fn db() -> Vec<String> {
        vec!["db".to_owned()]
    }

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
                kind_served: true,
                named: true,
            },
            Target {
                kind: WorkloadKind::Deployment,
                name: "gone".into(),
                workload: None,
                kind_served: true,
                named: true,
            },
        ]
    }

    const NOW: &str = "2026-11-23T10:00:00Z";

    #[test]
    fn a_target_on_an_old_version_is_patched_and_progressing() {
        let sync: SecretSync = yaml(SYNC);
        let plan = plan(
            &sync,
            &db(),
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
    fn a_rollout_target_without_its_crd_says_so_and_the_others_still_roll() {
        let sync: SecretSync = yaml(SYNC);
        let mut targets = targets(deployment("db-v2", 2));
        targets[1] = Target {
            kind: WorkloadKind::Rollout,
            name: "canary".into(),
            workload: None,
            kind_served: false,
            named: true,
        };
        let plan = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            None,
            &targets,
            NOW.parse().unwrap(),
        );
        assert!(matches!(plan.outcome.state, RolloutState::Complete(_)));
        let status = plan.outcome.status.unwrap();
        let missing = &status.targets[1];
        assert_eq!(missing.state, TargetState::NotFound);
        assert_eq!(
            missing.message.as_deref(),
            Some(
                "Rollout canary not found: the Argo Rollouts CRD (rollouts.argoproj.io/v1alpha1) is not installed"
            )
        );
        assert_eq!(
            status.targets[0].message, None,
            "the Deployment still rolled out"
        );
    }

    #[test]
    fn a_missing_target_is_counted_and_named_in_the_summary() {
        let sync: SecretSync = yaml(SYNC);
        let plan = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            None,
            &targets(deployment("db-v2", 2)),
            NOW.parse().unwrap(),
        );
        assert_eq!(
            plan.outcome.state,
            RolloutState::Complete(
                "1/2 targets rolled out to db-v2: Deployment gone not found".into()
            )
        );
    }

    #[test]
    fn a_finished_target_completes_once_and_times_out_otherwise() {
        let sync: SecretSync = yaml(SYNC);
        let done = plan(
            &sync,
            &db(),
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
            &db(),
            2,
            "db-v2",
            done.outcome.status.as_ref(),
            &targets(deployment("db-v2", 2)),
            NOW.parse().unwrap(),
        );
        assert!(again.outcome.events.is_empty(), "reported once");

        let started = plan(
            &sync,
            &db(),
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
            &db(),
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

    #[test]
    fn a_completed_rollout_records_how_long_it_took_and_the_longest_so_far() {
        let sync: SecretSync = yaml(SYNC);
        let at = |t: &str| -> jiff::Timestamp { t.parse().unwrap() };
        let started = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            None,
            &targets(deployment("db-v1", 2)),
            at(NOW),
        );
        assert_eq!(started.outcome.status.as_ref().unwrap().last_duration, None);
        let done = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            started.outcome.status.as_ref(),
            &targets(deployment("db-v2", 2)),
            at("2026-11-23T10:00:42.5Z"),
        );
        let status = done.outcome.status.unwrap();
        assert_eq!(status.last_duration.as_deref(), Some("42500ms"));
        assert_eq!(status.longest_duration.as_deref(), Some("42500ms"));
        // The next, faster rollout: the last duration follows, the longest stays.
        let next = plan(
            &sync,
            &db(),
            3,
            "db-v3",
            Some(&status),
            &targets(deployment("db-v2", 2)),
            at("2026-11-23T11:00:00Z"),
        );
        let next_status = next.outcome.status.unwrap();
        assert_eq!(next_status.last_duration.as_deref(), Some("42500ms"));
        let finished = plan(
            &sync,
            &db(),
            3,
            "db-v3",
            Some(&next_status),
            &targets(deployment("db-v3", 2)),
            at("2026-11-23T11:00:03Z"),
        )
        .outcome
        .status
        .unwrap();
        assert_eq!(finished.last_duration.as_deref(), Some("3000ms"));
        assert_eq!(finished.longest_duration.as_deref(), Some("42500ms"));
        // A workload already on the version when first seen: no rollout was timed.
        let untimed = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            None,
            &targets(deployment("db-v2", 2)),
            at(NOW),
        );
        assert_eq!(untimed.outcome.status.unwrap().last_duration, None);
    }

    fn existing(versions: &[i64]) -> BTreeMap<i64, VersionMeta> {
        versions
            .iter()
            .map(|&v| {
                let meta = VersionMeta {
                    version: v,
                    secret_name: format!("db-v{v}"),
                    ..VersionMeta::default()
                };
                (v, meta)
            })
            .collect()
    }

    fn rollback_sync(extra: &str) -> SecretSync {
        yaml(&format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db, namespace: payments, uid: u1, generation: 4}}
spec:
  storeRef: {{name: vault}}
  rollout: {{targets: [{{kind: Deployment, name: api}}], timeout: 5m, onFailure: Rollback}}
{extra}
"#
        ))
    }

    fn api_only(api: Arc<Value>) -> Vec<Target> {
        vec![Target {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
            workload: Some(api),
            kind_served: true,
            named: true,
        }]
    }

    #[test]
    fn the_rollback_target_is_the_newest_earlier_version_not_revoked() {
        let sync = rollback_sync("  revokedVersions: [3]");
        assert_eq!(rollback_target(&sync, &existing(&[1, 3, 4]), 4), Some(1));
        assert_eq!(rollback_target(&sync, &existing(&[2, 3, 4]), 4), Some(2));
        assert_eq!(rollback_target(&sync, &existing(&[3, 4]), 4), None);
        assert_eq!(rollback_target(&sync, &existing(&[4, 5]), 4), None);
    }

    #[test]
    fn a_timed_out_rollout_goes_back_once_and_stays_back_until_an_edit() {
        let sync = rollback_sync("");
        let versions = existing(&[1, 2]);
        let started = decide(
            &sync,
            &db(),
            &versions,
            2,
            None,
            &api_only(deployment("db-v2", 1)),
            NOW.parse().unwrap(),
        );
        assert!(matches!(
            started.outcome.state,
            RolloutState::Progressing(_)
        ));
        assert_eq!(started.outcome.targets_on, None);

        let late: jiff::Timestamp = "2026-11-23T10:05:01Z".parse().unwrap();
        let failed = decide(
            &sync,
            &db(),
            &versions,
            2,
            started.outcome.status.as_ref(),
            &api_only(deployment("db-v2", 1)),
            late,
        );
        assert_eq!(failed.outcome.targets_on, Some(1));
        let (_, _, patch) = &failed.patches[0];
        assert_eq!(
            patch[1]["value"], "db-v1",
            "straight back, no write to db-v2"
        );
        let status = failed.outcome.status.clone().unwrap();
        assert_eq!(status.version, Some(1));
        let failure = status.failed.clone().unwrap();
        assert_eq!((failure.version, failure.generation), (2, Some(4)));
        assert!(
            matches!(&failed.outcome.state, RolloutState::Failed(why)
                if why.starts_with("rollout to db-v2 failed: Deployment api: not complete after 5m")
                    && why.contains("rolling back to db-v1")),
            "{:?}",
            failed.outcome.state
        );
        let notes: Vec<_> = failed
            .outcome
            .events
            .iter()
            .map(|e| (e.reason.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(
            notes,
            [("RolloutFailed", "Rollout"), ("RolloutFailed", "Rollback")]
        );

        // The next pass (or a restart, from the status) stays on db-v1 and writes nothing.
        let back = decide(
            &sync,
            &db(),
            &versions,
            2,
            Some(&status),
            &api_only(deployment("db-v1", 2)),
            late,
        );
        assert!(back.patches.is_empty());
        assert_eq!(back.outcome.targets_on, Some(1));
        assert!(
            matches!(&back.outcome.state, RolloutState::Failed(why) if why.contains("rolled back to db-v1: 1/1 targets")),
            "{:?}",
            back.outcome.state
        );
        assert!(
            back.outcome
                .events
                .iter()
                .all(|e| e.reason == "RolloutComplete"),
            "no second failure event"
        );

        // An edit (a new generation) tries db-v2 again.
        let mut edited = sync.clone();
        edited.metadata.generation = Some(5);
        let again = decide(
            &edited,
            &db(),
            &versions,
            2,
            back.outcome.status.as_ref(),
            &api_only(deployment("db-v1", 2)),
            late,
        );
        assert_eq!(again.outcome.targets_on, None);
        assert_eq!(again.patches[0].2[1]["value"], "db-v2");

        // Hold, and a pinned version, stay where they failed.
        for extra in ["  pinVersion: 2", ""] {
            let mut held = rollback_sync(extra);
            if extra.is_empty() {
                held.spec.rollout.as_mut().unwrap().on_failure = Some(OnFailure::Hold);
            }
            let stays = decide(
                &held,
                &db(),
                &versions,
                2,
                started.outcome.status.as_ref(),
                &api_only(deployment("db-v2", 1)),
                late,
            );
            assert!(matches!(stays.outcome.state, RolloutState::Failed(_)));
            assert_eq!(stays.outcome.targets_on, None, "{extra:?}");
            assert!(stays.patches.is_empty());
        }
    }
}
