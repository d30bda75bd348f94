//! Step 5: rolling the targets onto the active version (api.md guarantee 3). [`plan`] reads
//! each target (from the workload cache) and decides its patch and state; [`decide`] adds
//! `onFailure: Rollback` on top of it; [`roll_out`] applies the patches. The pod-spec rules
//! themselves are in [`crate::rollout::podspec`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::window::{self, Opening};
use secretsync_api::{
    FailedRollout, OnFailure, Reason, RevokePolicy, RolloutStatus, SecretSync, TargetState,
    TargetStatus, WorkloadKind, labels,
};
use serde_json::Value;
use tracing::{debug, info};

use crate::cache::versions::VersionMeta;
use crate::cache::workloads::{patch_workload, pod_config_errors};
use crate::conditions::now;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::secret_ref;
use crate::rollout::argo;
use crate::rollout::batch::{Rewrite, Sent};
use crate::rollout::podspec::{
    Progress, referenced_versions, rewrite_patch, rewrites_patch, rollout_progress, template_refs,
    version_among,
};

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
    /// A target's own controller holds it (a paused Deployment): not a failure, no timeout.
    Paused(String),
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
    /// A revoked version the targets have not yet left, in words: Ready is False until they do.
    pub revoked_in_use: Option<String>,
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

/// Targets whose pod template still references a revoked version, as `Kind name (secret)`.
fn revoked_users(
    sync: &SecretSync,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    targets: &[Target],
) -> Vec<String> {
    targets
        .iter()
        .filter_map(|t| {
            let workload = t.workload.as_ref()?;
            let revoked: Vec<String> = referenced_versions(t.kind.as_str(), workload, bases)
                .into_iter()
                .filter(|v| sync.spec.is_revoked(*v))
                .map(|v| {
                    existing
                        .get(&v)
                        .map_or_else(|| format!("{}-v{v}", bases[0]), |m| m.secret_name.clone())
                })
                .collect();
            (!revoked.is_empty())
                .then(|| format!("{} {} ({})", t.kind.as_str(), t.name, revoked.join(", ")))
        })
        .collect()
}

/// [`Gate::Closed`] while no rollout window is open, unless something may not wait: a
/// target still on a revoked version (a revocation is an incident; unless
/// `rollout.respectWindowsOnRevoke`), or the version a rotation made with
/// `secretsync.io/rollout-now` (`kubectl secretsync rotate --now`).
pub fn gate(
    sync: &SecretSync,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    targets: &[Target],
    now_ts: jiff::Timestamp,
) -> Gate {
    let rollout = sync.spec.rollout.as_ref();
    let windows = rollout
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
    let revocation_waits = rollout.and_then(|r| r.respect_windows_on_revoke) == Some(true)
        && sync.spec.revoke_policy() != RevokePolicy::Immediate;
    let revoked_in_use =
        !revocation_waits && !revoked_users(sync, bases, existing, targets).is_empty();
    if rotated_now || revoked_in_use {
        Gate::Open
    } else {
        Gate::Closed { opens }
    }
}

/// What waiting for a window says, and when to look again.
fn window_wait(
    opens: Option<jiff::Timestamp>,
    wanted_name: &str,
    now_ts: jiff::Timestamp,
) -> (String, Option<Duration>) {
    match opens {
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
    }
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a rollout decision looks at, besides the version it is about.
#[derive(Clone, Copy)]
struct Scene<'a> {
    sync: &'a SecretSync,
    bases: &'a [String],
    existing: &'a BTreeMap<i64, VersionMeta>,
    previous: Option<&'a RolloutStatus>,
    targets: &'a [Target],
    now_ts: jiff::Timestamp,
}

/// The wanted version held back while the gate is closed: no patch moves the targets
/// forward. What they are on now is still judged — its timeout runs, its failure shows
/// (Ready=False) and, with `onFailure: Rollback`, its rollback goes out at once — and a
/// timer wakes the SecretSync when the next window opens.
fn hold_for_window(scene: &Scene<'_>, wanted: i64, opens: Option<jiff::Timestamp>) -> Plan {
    let Scene {
        sync,
        bases,
        existing,
        previous,
        targets,
        now_ts,
    } = *scene;
    let wanted_name = existing
        .get(&wanted)
        .map(|m| m.secret_name.as_str())
        .unwrap_or_default();
    let (message, requeue) = window_wait(opens, wanted_name, now_ts);
    let on = previous
        .and_then(|p| p.version)
        .filter(|v| *v != wanted && existing.contains_key(v));
    let Some(on) = on else {
        return Plan {
            patches: Vec::new(),
            outcome: Outcome {
                state: RolloutState::Waiting(message),
                status: previous.cloned(),
                requeue,
                targets_on: previous.and_then(|p| p.version),
                ..Outcome::default()
            },
        };
    };
    let mut now = decide_open(sync, bases, existing, on, previous, targets, now_ts);
    // Only a rollback moves targets while the windows are closed.
    if now.outcome.targets_on.is_none() {
        now.patches.clear();
    }
    let outcome = &mut now.outcome;
    // The failure that brought the targets back to `on` stays visible while the next
    // version waits.
    let standing = previous
        .and_then(|p| p.failed.clone())
        .filter(|f| f.version > on && f.version != wanted);
    outcome.state = match (&outcome.state, &standing) {
        (RolloutState::Failed(why), _) => RolloutState::Failed(format!("{why}; {message}")),
        (RolloutState::Complete(summary) | RolloutState::Progressing(summary), Some(f)) => {
            let on_name = existing
                .get(&on)
                .map(|m| m.secret_name.as_str())
                .unwrap_or_default();
            RolloutState::Failed(format!(
                "{}; rolled back to {on_name}: {summary}; {message}",
                f.message
            ))
        }
        _ => RolloutState::Waiting(message),
    };
    if let (Some(status), Some(f)) = (outcome.status.as_mut(), standing)
        && status.failed.is_none()
    {
        status.failed = Some(f);
    }
    outcome.requeue = earliest(outcome.requeue, requeue);
    outcome.targets_on = outcome.targets_on.or(Some(on));
    now
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
    /// Why its Pods cannot start, as the kubelet says (read only while it is not Complete).
    pub pod_failures: Vec<PodFailure>,
}

/// Pods of a target that wait in `CreateContainerConfigError` on a Secret (or a key of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    pub secret: String,
    pub key: Option<String>,
    /// How many Pods.
    pub pods: usize,
}

impl PodFailure {
    /// `what` is the kubelet's message: `secret "db-v2" not found` or
    /// `couldn't find key token in Secret payments/db-v2`.
    pub fn parse(what: &str) -> Option<(String, Option<String>)> {
        if let Some(rest) = what.strip_prefix("secret \"") {
            let name = rest.split('"').next()?;
            return Some((name.to_owned(), None));
        }
        let rest = what.strip_prefix("couldn't find key ")?;
        let (key, secret) = rest.split_once(" in Secret ")?;
        let name = secret.rsplit('/').next()?;
        Some((name.to_owned(), Some(key.to_owned())))
    }

    fn describe(&self) -> String {
        let pods = if self.pods == 1 { "Pod" } else { "Pods" };
        match &self.key {
            Some(key) => format!(
                "{} {pods} in CreateContainerConfigError: Secret {} has no key {key}",
                self.pods, self.secret
            ),
            None => format!(
                "{} {pods} in CreateContainerConfigError: Secret {} not found",
                self.pods, self.secret
            ),
        }
    }
}

/// The kubelet's messages grouped by the Secret (and key) they name, in first-seen order.
pub fn pod_failures(messages: &[String]) -> Vec<PodFailure> {
    let mut failures: Vec<PodFailure> = Vec::new();
    for (secret, key) in messages.iter().filter_map(|m| PodFailure::parse(m)) {
        match failures
            .iter_mut()
            .find(|f| f.secret == secret && f.key == key)
        {
            Some(f) => f.pods += 1,
            None => failures.push(PodFailure {
                secret,
                key,
                pods: 1,
            }),
        }
    }
    failures
}

/// What to do: patches to send, and the outcome once they are sent.
pub struct Plan {
    /// (kind, name, JSON patch) for targets that point elsewhere.
    pub patches: Vec<(WorkloadKind, String, Value)>,
    pub outcome: Outcome,
}

/// The versions whose rollout was Complete at least once: as recorded, plus the version of
/// a previous status whose targets all completed (a status written before the list existed).
fn completed_versions(previous: Option<&RolloutStatus>) -> BTreeSet<i64> {
    let mut completed: BTreeSet<i64> = previous
        .map(|p| p.completed_versions.iter().copied().collect())
        .unwrap_or_default();
    if let Some(p) = previous
        && let Some(version) = p.version
        && p.failed.as_ref().is_none_or(|f| f.version != version)
        && p.targets.iter().any(|t| t.state == TargetState::Complete)
        && p.targets
            .iter()
            .all(|t| matches!(t.state, TargetState::Complete | TargetState::NotFound))
    {
        completed.insert(version);
    }
    completed
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
    // While a target is paused its rollout has not begun: the timeout counts from the
    // first look after it was resumed.
    let paused = targets.iter().any(|t| {
        t.workload.as_ref().is_some_and(|w| {
            rewrite_patch(t.kind, w, bases, active_name).is_none()
                && matches!(rollout_progress(t.kind, w), Progress::Paused { .. })
        })
    });
    let resumed =
        same_version.is_some_and(|p| p.targets.iter().any(|t| t.state == TargetState::Waiting));
    // A version that had completed and rolls again (its workload was edited, paused,
    // scaled) gets a fresh timeout, not one that ran out long ago.
    let was_complete = same_version.is_some_and(|p| {
        p.targets
            .iter()
            .all(|t| matches!(t.state, TargetState::Complete | TargetState::NotFound))
    });
    let complete_now = targets.iter().all(|t| {
        t.workload.as_ref().is_none_or(|w| {
            rewrite_patch(t.kind, w, bases, active_name).is_none()
                && rollout_progress(t.kind, w) == Progress::Complete
        })
    });
    let rolls_again = was_complete && !complete_now;
    let started_at = same_version
        .and_then(|p| p.started_at.clone())
        .filter(|_| !paused && !resumed && !rolls_again)
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
        // What the kubelet says about its Pods beats what the replica counts suggest.
        let pods_say = (!target.pod_failures.is_empty()).then(|| {
            target
                .pod_failures
                .iter()
                .map(PodFailure::describe)
                .collect::<Vec<_>>()
                .join("; ")
        });
        let mut reason = None;
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
                    Progress::Paused { reason: why } => {
                        reason = Some(Reason::TargetPaused.as_str().to_owned());
                        (TargetState::Waiting, Some(why))
                    }
                    Progress::Failed { reason } => {
                        (TargetState::Failed, Some(pods_say.unwrap_or(reason)))
                    }
                    Progress::Progressing { reason } if timed_out => (
                        TargetState::Failed,
                        Some(format!(
                            "not complete after {}: {}",
                            humanize(timeout),
                            pods_say.unwrap_or(reason)
                        )),
                    ),
                    Progress::Progressing { reason } => {
                        (TargetState::Progressing, Some(pods_say.unwrap_or(reason)))
                    }
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
            reason,
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
    let mut completed = completed_versions(previous);
    let mut failed_versions: BTreeSet<i64> = previous
        .map(|p| p.failed_versions.iter().copied().collect())
        .unwrap_or_default();
    outcome.state = if let Some(failed) = statuses.iter().find(|t| t.state == TargetState::Failed) {
        failed_versions.insert(active);
        RolloutState::Failed(format!(
            "rollout failed: {} {}: {}",
            failed.kind.as_str(),
            failed.name,
            failed.message.as_deref().unwrap_or("failed")
        ))
    } else if complete == found {
        if found > 0 {
            completed.insert(active);
        }
        failed_versions.remove(&active);
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
    } else if let Some(waiting) = statuses.iter().find(|t| t.state == TargetState::Waiting) {
        // Resuming the workload is a watch event: no timer.
        RolloutState::Paused(format!(
            "{summary}; {} {}: {}",
            waiting.kind.as_str(),
            waiting.name,
            waiting.message.as_deref().unwrap_or("paused")
        ))
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
        completed_versions: completed.into_iter().collect(),
        failed_versions: failed_versions.into_iter().collect(),
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
    let by = crate::cache::workloads::last_manager(workload)
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

/// Where `onFailure: Rollback` takes the targets after the rollout to `failed` failed: the
/// newest earlier version that still exists, is neither revoked nor failed, and was
/// Complete at least once. `Err` says why there is none, naming what was passed over.
pub fn rollback_target(
    sync: &SecretSync,
    existing: &BTreeMap<i64, VersionMeta>,
    previous: Option<&RolloutStatus>,
    failed: i64,
) -> Result<i64, String> {
    let completed = completed_versions(previous);
    let failed_before: &[i64] = previous.map_or(&[], |p| p.failed_versions.as_slice());
    let mut passed_over = Vec::new();
    // Revoked versions are named even once their Secret is gone: they are why the
    // previous version is not an option.
    let base = sync.spec.target_name(&sync.name_any()).to_owned();
    let candidates: BTreeMap<i64, String> = sync
        .spec
        .revoked()
        .iter()
        .filter(|v| **v < failed)
        .map(|v| (*v, format!("{base}-v{v}")))
        .chain(
            existing
                .range(..failed)
                .map(|(v, meta)| (*v, meta.secret_name.clone())),
        )
        .collect();
    for (v, name) in candidates.iter().rev() {
        if sync.spec.is_revoked(*v) {
            passed_over.push(format!("{name} is revoked"));
        } else if failed_before.contains(v) {
            passed_over.push(format!("{name} failed its rollout"));
        } else if !completed.contains(v) {
            passed_over.push(format!("{name} never completed a rollout"));
        } else {
            return Ok(*v);
        }
    }
    const NAMED: usize = 3;
    let more = passed_over.len().saturating_sub(NAMED);
    passed_over.truncate(NAMED);
    if more > 0 {
        passed_over.push(format!("{more} older"));
    }
    Err(if passed_over.is_empty() {
        "no earlier version to roll back to".to_owned()
    } else {
        format!(
            "no earlier version to roll back to ({})",
            passed_over.join(", ")
        )
    })
}

/// [`plan`] for the `wanted` version with the rollout windows: while they are closed the
/// targets do not move forward ([`hold_for_window`]), but a rollback never waits.
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
    let mut planned = decide_open(sync, bases, existing, wanted, previous, targets, now_ts);
    if let Gate::Closed { opens } = gate
        && !planned.patches.is_empty()
        && planned.outcome.targets_on.is_none()
    {
        planned = match &planned.outcome.state {
            // A target already on `wanted` failed: that shows; the others wait.
            RolloutState::Failed(why) => {
                let wanted_name = existing
                    .get(&wanted)
                    .map(|m| m.secret_name.as_str())
                    .unwrap_or_default();
                let (message, requeue) = window_wait(opens, wanted_name, now_ts);
                planned.outcome.state = RolloutState::Failed(format!("{why}; {message}"));
                planned.outcome.requeue = earliest(planned.outcome.requeue, requeue);
                planned.patches.clear();
                planned
            }
            _ => {
                let scene = Scene {
                    sync,
                    bases,
                    existing,
                    previous,
                    targets,
                    now_ts,
                };
                hold_for_window(&scene, wanted, opens)
            }
        };
    }
    let users = revoked_users(sync, bases, existing, targets);
    // The version the targets last completed on, while its Pods may still run.
    let left_behind = completed_versions(previous)
        .range(..wanted)
        .next_back()
        .and_then(|v| existing.get(v))
        .filter(|m| sync.spec.is_revoked(m.version));
    let outcome = &mut planned.outcome;
    outcome.revoked_in_use = if !users.is_empty() {
        Some(format!(
            "revoked versions are still referenced by {}",
            users.join(", ")
        ))
    } else if let Some(meta) = left_behind
        && matches!(
            outcome.state,
            RolloutState::Progressing(_) | RolloutState::Paused(_) | RolloutState::Waiting(_)
        )
    {
        Some(format!(
            "the targets' Pods are still moving off revoked {}",
            meta.secret_name
        ))
    } else {
        None
    };
    if let (Some(in_use), Gate::Closed { opens }) = (&outcome.revoked_in_use, gate)
        && !users.is_empty()
    {
        let when = opens.map_or_else(
            || "no window opens again".to_owned(),
            |at| format!("the next opens at {at}"),
        );
        outcome.events.push(Event {
            type_: EventType::Warning,
            reason: event::REVOKED_STILL_REFERENCED.into(),
            note: Some(crate::conditions::truncate(
                format!("{in_use}; with rollout.respectWindowsOnRevoke they wait for a rollout window ({when})"),
                1024,
            )),
            action: "Revoke".into(),
            secondary: None,
        });
    }
    if let Some(status) = outcome.status.as_mut() {
        status
            .completed_versions
            .retain(|v| existing.contains_key(v));
        status.failed_versions.retain(|v| existing.contains_key(v));
    }
    planned
}

/// Whether the failure of the rollout to `wanted` is this SecretSync's doing: `false` when
/// the failing targets' Pods wait on Secrets that are none of its versions (another
/// SecretSync's rotation batched into the same template change). Returns what the Pods
/// name when it is not.
fn failure_elsewhere(
    existing: &BTreeMap<i64, VersionMeta>,
    statuses: &[TargetStatus],
    targets: &[Target],
) -> Option<String> {
    let ours = |secret: &str| existing.values().any(|m| m.secret_name == secret);
    let mut elsewhere = Vec::new();
    for status in statuses.iter().filter(|t| t.state == TargetState::Failed) {
        let target = targets
            .iter()
            .find(|t| t.kind == status.kind && t.name == status.name)?;
        if target.pod_failures.is_empty() || target.pod_failures.iter().any(|f| ours(&f.secret)) {
            return None;
        }
        elsewhere.extend(target.pod_failures.iter().map(PodFailure::describe));
    }
    (!elsewhere.is_empty()).then(|| elsewhere.join("; "))
}

/// [`plan`] for the `wanted` version, with `onFailure: Rollback`: once the rollout to
/// `wanted` is Failed, the targets are planned onto [`rollback_target`] instead, and stay
/// there — remembered in `status.rollout.failed`, so a restart does not retry — until
/// `wanted` changes (a new version, a rotation) or the spec is edited. A pinned version is
/// the user's explicit choice and is never rolled back; a failure whose Pods wait on another
/// SecretSync's Secret is not rolled back either.
fn decide_open(
    sync: &SecretSync,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    previous: Option<&RolloutStatus>,
    targets: &[Target],
    now_ts: jiff::Timestamp,
) -> Plan {
    let name_of = |v: i64| {
        existing
            .get(&v)
            .map(|m| m.secret_name.clone())
            .unwrap_or_default()
    };
    let wanted_name = name_of(wanted);
    let rolls_back =
        sync.spec.on_failure() == OnFailure::Rollback && sync.spec.pin_version.is_none();
    let planned = || plan(sync, bases, wanted, &wanted_name, previous, targets, now_ts);
    if !rolls_back {
        return planned();
    }
    let standing = previous
        .and_then(|p| p.failed.as_ref())
        .filter(|f| f.version == wanted && f.generation == sync.metadata.generation);
    let (failure, mut events, back) = match standing {
        Some(failure) => match rollback_target(sync, existing, previous, wanted) {
            Ok(back) => (failure.clone(), Vec::new(), back),
            Err(_) => return planned(),
        },
        None => {
            let mut first = planned();
            let RolloutState::Failed(why) = &first.outcome.state else {
                return first;
            };
            let why = why
                .strip_prefix("rollout failed: ")
                .unwrap_or(why)
                .to_owned();
            let statuses = first
                .outcome
                .status
                .as_ref()
                .map(|s| s.targets.as_slice())
                .unwrap_or_default();
            if let Some(cause) = failure_elsewhere(existing, statuses, targets) {
                // Not ours to undo, nor to remember as a bad version.
                first.outcome.state = RolloutState::Failed(format!(
                    "rollout to {wanted_name} is blocked by another Secret: {cause}; not rolled back"
                ));
                if let Some(status) = first.outcome.status.as_mut() {
                    status.failed_versions.retain(|v| *v != wanted);
                }
                return first;
            }
            let back = match rollback_target(sync, existing, previous, wanted) {
                Ok(back) => back,
                Err(none) => {
                    first.outcome.state = RolloutState::Failed(format!(
                        "rollout to {wanted_name} failed: {why}; not rolled back: {none}"
                    ));
                    return first;
                }
            };
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
                    "{}; rolling targets back to {}",
                    failure.message,
                    name_of(back)
                )),
                // Not folded into a series with the per-target failure events.
                action: "Rollback".into(),
                secondary: Some(secret_ref(sync, &wanted_name)),
            });
            (failure, events, back)
        }
    };
    let back_name = name_of(back);
    // The failed rollout's patches are dropped: the targets go straight back, windows or
    // not, as a rollback repairs what the failed rollout broke.
    let mut back_plan = plan(sync, bases, back, &back_name, previous, targets, now_ts);
    let outcome = &mut back_plan.outcome;
    let failed = &failure.message;
    outcome.state = RolloutState::Failed(match &outcome.state {
        RolloutState::Complete(summary) => {
            format!("{failed}; rolled back to {back_name}: {summary}")
        }
        RolloutState::Progressing(summary) | RolloutState::Paused(summary) => {
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
        // A rollback that does not complete in time (a StatefulSet stuck on a broken Pod
        // until someone deletes it) says so, but does not make the last good version bad.
        status.failed_versions = previous
            .map(|p| p.failed_versions.clone())
            .unwrap_or_default();
        if !status.failed_versions.contains(&wanted) {
            status.failed_versions.push(wanted);
            status.failed_versions.sort_unstable();
        }
    }
    outcome.targets_on = Some(back);
    back_plan
}

/// Points every target's pod template at the wanted version — or, after a failed rollout
/// with `onFailure: Rollback`, the version before it — (a minimal JSON patch, only when
/// something differs) and reads how far each rollout got.
pub async fn roll_out(
    sync: &SecretSync,
    ctx: &Context,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    previous: Option<&RolloutStatus>,
) -> Result<Outcome> {
    let namespace = sync.namespace().unwrap_or_default();
    let mut targets: Vec<Target> = ctx
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
            pod_failures: Vec::new(),
        })
        .collect();
    for target in &mut targets {
        let Some(workload) = &target.workload else {
            continue;
        };
        if matches!(
            rollout_progress(target.kind, workload),
            Progress::Complete | Progress::Paused { .. }
        ) {
            continue;
        }
        // Only words for the status: a failed read leaves the replica counts to speak.
        if let Ok(Ok(errors)) = ctx
            .bounded(pod_config_errors(&ctx.client, &namespace, workload))
            .await
        {
            target.pod_failures = pod_failures(&errors);
        }
    }
    let Plan {
        patches,
        mut outcome,
    } = decide(sync, bases, existing, wanted, previous, &targets, now().0);
    let moving_to = outcome.targets_on.unwrap_or(wanted);
    let active_name = existing
        .get(&moving_to)
        .map(|m| m.secret_name.as_str())
        .unwrap_or_default();
    // Each target's rewrite joins the workload's batch (crate::rollout::batch), so SecretSyncs that
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
                    format!(" (pinned{})", crate::events::asked_reason(sync))
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
            // Someone moved a reference meanwhile (a test op failed): look again
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
/// (each replace guarded by a test of the name it replaces).
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
    match ctx
        .bounded(patch_workload(&ctx.client, kind, namespace, name, patch))
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
                pod_failures: Vec::new(),
            },
            Target {
                kind: WorkloadKind::Deployment,
                name: "gone".into(),
                workload: None,
                kind_served: true,
                named: true,
                pod_failures: Vec::new(),
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
        assert_eq!(patch[0]["op"], "test", "guarded by the name it replaces");
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
            pod_failures: Vec::new(),
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
    fn a_completed_version_that_rolls_again_gets_a_fresh_timeout() {
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
        // An hour later someone edits the Deployment: it rolls again, within the timeout.
        let later: jiff::Timestamp = "2026-11-23T11:00:00Z".parse().unwrap();
        let again = plan(
            &sync,
            &db(),
            2,
            "db-v2",
            done.outcome.status.as_ref(),
            &targets(deployment("db-v2", 1)),
            later,
        );
        assert!(
            matches!(again.outcome.state, RolloutState::Progressing(_)),
            "{:?}",
            again.outcome.state
        );
        assert_eq!(again.outcome.status.unwrap().started_at.unwrap().0, later);
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
            pod_failures: Vec::new(),
        }]
    }

    #[test]
    fn the_kubelets_reasons_name_the_secret_and_key() {
        let messages = [
            "couldn't find key token in Secret payments/api-v2".to_owned(),
            "secret \"db-v3\" not found".to_owned(),
            "couldn't find key token in Secret payments/api-v2".to_owned(),
            "something else".to_owned(),
        ];
        let found = pod_failures(&messages);
        assert_eq!(
            found,
            [
                PodFailure {
                    secret: "api-v2".into(),
                    key: Some("token".into()),
                    pods: 2
                },
                PodFailure {
                    secret: "db-v3".into(),
                    key: None,
                    pods: 1
                },
            ]
        );
        assert_eq!(
            found[0].describe(),
            "2 Pods in CreateContainerConfigError: Secret api-v2 has no key token"
        );
    }

    #[test]
    fn the_rollback_target_is_the_last_good_version() {
        let sync = rollback_sync("  revokedVersions: [3]");
        let history = RolloutStatus {
            completed_versions: vec![1, 2, 3, 5],
            failed_versions: vec![5],
            ..RolloutStatus::default()
        };
        let back = |versions: &[i64], failed| {
            rollback_target(&sync, &existing(versions), Some(&history), failed)
        };
        assert_eq!(back(&[1, 3, 4], 4), Ok(1));
        assert_eq!(back(&[2, 3, 4], 4), Ok(2));
        assert_eq!(
            back(&[3, 4], 4),
            Err("no earlier version to roll back to (db-v3 is revoked)".into())
        );
        assert_eq!(
            back(&[4, 5], 4),
            Err("no earlier version to roll back to (db-v3 is revoked)".into()),
            "named although its Secret is gone"
        );
        assert_eq!(
            rollback_target(&rollback_sync(""), &existing(&[4]), Some(&history), 4),
            Err("no earlier version to roll back to".into())
        );
        // v5 failed, v4 never completed a rollout: v6 goes back to v2.
        assert_eq!(back(&[2, 4, 5, 6], 6), Ok(2));
        assert_eq!(
            back(&[3, 4, 5, 6], 6),
            Err("no earlier version to roll back to (db-v5 failed its rollout, db-v4 never completed a rollout, db-v3 is revoked)".into())
        );
        // A status from before the list: the version its targets all completed counts.
        let older = RolloutStatus {
            version: Some(2),
            targets: vec![TargetStatus {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
                version: 2,
                state: TargetState::Complete,
                message: None,
                reason: None,
            }],
            ..RolloutStatus::default()
        };
        assert_eq!(
            rollback_target(&sync, &existing(&[1, 2, 4]), Some(&older), 4),
            Ok(2)
        );
    }

    #[test]
    fn a_timed_out_rollout_goes_back_once_and_stays_back_until_an_edit() {
        let sync = rollback_sync("");
        let versions = existing(&[1, 2]);
        let v1_done = RolloutStatus {
            version: Some(1),
            completed_versions: vec![1],
            ..RolloutStatus::default()
        };
        let started = decide(
            &sync,
            &db(),
            &versions,
            2,
            Some(&v1_done),
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
