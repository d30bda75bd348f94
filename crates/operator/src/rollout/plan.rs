//! Step 5: rolling the targets onto the active version (docs/reference/guarantees.md#guarantee-3).
//! [`plan`] judges each target (from the workload cache) and decides its patch and state; the
//! pod-spec rules themselves are in [`crate::podspec`].

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{Reason, RolloutStatus, SecretSync, TargetState, TargetStatus, WorkloadKind};
use serde_json::Value;

use crate::events::secret_ref;
use crate::podspec::{Progress, rewrite_patch, rollout_progress, template_refs, version_among};
use crate::rollout::argo;
use crate::rollout::target::{Outcome, Plan, PodFailure, RolloutState, Target};

/// The versions whose rollout was Complete at least once: as recorded, plus the version of
/// a previous status whose targets all completed (a status written before the list existed).
pub(super) fn completed_versions(previous: Option<&RolloutStatus>) -> BTreeSet<i64> {
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

/// When the rollout of the active version started, and whether its timeout ran out.
struct Timing {
    started_at: Time,
    deadline: jiff::Timestamp,
    timeout: Duration,
    timed_out: bool,
}

impl Timing {
    /// `same_version`: the previous status, when it was for the active version.
    fn of(
        sync: &SecretSync,
        bases: &[String],
        active_name: &str,
        same_version: Option<&RolloutStatus>,
        targets: &[Target],
        now_ts: jiff::Timestamp,
    ) -> Self {
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
        let complete_now = targets.iter().all(|t| {
            t.workload.as_ref().is_none_or(|w| {
                rewrite_patch(t.kind, w, bases, active_name).is_none()
                    && rollout_progress(t.kind, w) == Progress::Complete
            })
        });
        let rolls_again = all_complete(same_version) && !complete_now;
        let started_at = same_version
            .and_then(|p| p.started_at.clone())
            .filter(|_| !paused && !resumed && !rolls_again)
            .unwrap_or(Time(now_ts));
        let timeout = sync.spec.rollout_timeout();
        let deadline = started_at
            .0
            .checked_add(
                jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MAX);
        Self {
            started_at,
            deadline,
            timeout,
            timed_out: now_ts >= deadline,
        }
    }

    /// `reason` as a target's message: as it is until the timeout, then a failure.
    fn judge(&self, reason: String) -> (TargetState, Option<String>) {
        if self.timed_out {
            let after = humanize(self.timeout);
            (
                TargetState::Failed,
                Some(format!("not complete after {after}: {reason}")),
            )
        } else {
            (TargetState::Progressing, Some(reason))
        }
    }
}

/// Whether every target of a status completed (or does not exist).
fn all_complete(status: Option<&RolloutStatus>) -> bool {
    status.is_some_and(|p| {
        p.targets
            .iter()
            .all(|t| matches!(t.state, TargetState::Complete | TargetState::NotFound))
    })
}

/// One target judged against the active version.
struct Judgement {
    state: TargetState,
    message: Option<String>,
    reason: Option<String>,
    /// The patch that moves it onto the active version.
    patch: Option<Value>,
}

/// How `target` stands on the active version; `None` for a workload that a selector matched
/// but that does not use the SecretSync (not its target).
fn judge(
    target: &Target,
    bases: &[String],
    active_name: &str,
    timing: &Timing,
) -> Option<Judgement> {
    let (kind, name) = (target.kind, &target.name);
    let judged = |(state, message): (TargetState, Option<String>)| Judgement {
        state,
        message,
        reason: None,
        patch: None,
    };
    let Some(workload) = &target.workload else {
        let missing = match target.kind_served {
            true => format!("{} {name} not found", kind.as_str()),
            false => format!(
                "{} {name} not found: {}",
                kind.as_str(),
                argo::NOT_INSTALLED
            ),
        };
        return Some(judged((TargetState::NotFound, Some(missing))));
    };
    if let Some(patch) = rewrite_patch(kind, workload, bases, active_name) {
        return Some(Judgement {
            patch: Some(patch),
            ..judged((
                TargetState::Progressing,
                Some("pod template updated".into()),
            ))
        });
    }
    if !references(kind, workload, active_name) {
        return target.named.then(|| {
            judged(timing.judge(format!(
                "its pod template references no Secret of this SecretSync (expected {active_name})"
            )))
        });
    }
    // What the kubelet says about its Pods beats what the replica counts suggest.
    let pods_say = (!target.pod_failures.is_empty()).then(|| {
        target
            .pod_failures
            .iter()
            .map(PodFailure::describe)
            .collect::<Vec<_>>()
            .join("; ")
    });
    Some(match rollout_progress(kind, workload) {
        Progress::Complete => judged((TargetState::Complete, None)),
        Progress::Paused { reason: why } => Judgement {
            reason: Some(Reason::TargetPaused.as_str().to_owned()),
            ..judged((TargetState::Waiting, Some(why)))
        },
        Progress::Failed { reason } => {
            judged((TargetState::Failed, Some(pods_say.unwrap_or(reason))))
        }
        Progress::Progressing { reason } => judged(timing.judge(pods_say.unwrap_or(reason))),
    })
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
    let same_version = previous.filter(|p| p.version == Some(active));
    let timing = Timing::of(sync, bases, active_name, same_version, targets, now_ts);
    let was = |kind: WorkloadKind, name: &str| {
        same_version
            .and_then(|p| p.targets.iter().find(|t| t.kind == kind && t.name == name))
            .map(|t| t.state)
    };
    let mut statuses = Vec::new();
    for target in targets {
        let (kind, name) = (target.kind, &target.name);
        let Some(judged) = judge(target, bases, active_name, &timing) else {
            continue;
        };
        if let (Some(patch), Some(workload)) = (judged.patch, &target.workload) {
            if was(kind, name) == Some(TargetState::Complete) {
                let reverted = reverted_event(sync, target, workload, bases, active_name);
                outcome.events.push(reverted);
            }
            patches.push((kind, name.clone(), patch));
        }
        if judged.state == TargetState::Failed && was(kind, name) != Some(TargetState::Failed) {
            outcome.events.push(Event {
                type_: EventType::Warning,
                reason: event::ROLLOUT_FAILED.into(),
                note: Some(format!(
                    "{} {name} did not roll out to {active_name}: {}",
                    kind.as_str(),
                    judged.message.as_deref().unwrap_or("failed")
                )),
                action: "Rollout".into(),
                secondary: Some(secret_ref(sync, active_name)),
            });
        }
        statuses.push(TargetStatus {
            kind,
            name: name.clone(),
            version: active,
            state: judged.state,
            message: judged.message,
            reason: judged.reason,
        });
    }
    let rollout = Rollout {
        sync,
        active,
        active_name,
        previous,
        timing: &timing,
        now_ts,
    };
    outcome.state = rollout.conclude(&statuses, &mut outcome);
    outcome.status = Some(rollout.status(statuses, &outcome.state));
    Plan { patches, outcome }
}

/// The rollout of the active version, for what its targets' states add up to.
struct Rollout<'a> {
    sync: &'a SecretSync,
    active: i64,
    active_name: &'a str,
    previous: Option<&'a RolloutStatus>,
    timing: &'a Timing,
    now_ts: jiff::Timestamp,
}

impl Rollout<'_> {
    fn same_version(&self) -> Option<&RolloutStatus> {
        self.previous.filter(|p| p.version == Some(self.active))
    }

    /// The state the targets add up to; the completion event and the deadline's timer go
    /// into `outcome`.
    fn conclude(&self, statuses: &[TargetStatus], outcome: &mut Outcome) -> RolloutState {
        let found = statuses
            .iter()
            .filter(|t| t.state != TargetState::NotFound)
            .count();
        let complete = statuses
            .iter()
            .filter(|t| t.state == TargetState::Complete)
            .count();
        // A target that does not exist counts as not rolled out, named, so a typo shows in
        // the conditions (RolledOut=False, TargetNotFound; see status.rs) and not only in
        // the list.
        let missing: Vec<&str> = statuses
            .iter()
            .filter(|t| t.state == TargetState::NotFound)
            .filter_map(|t| t.message.as_deref())
            .collect();
        let mut summary = format!(
            "{complete}/{} targets rolled out to {}",
            statuses.len(),
            self.active_name
        );
        if !missing.is_empty() {
            summary = format!("{summary}: {}", missing.join(", "));
        }
        if let Some(failed) = statuses.iter().find(|t| t.state == TargetState::Failed) {
            RolloutState::Failed(format!(
                "rollout failed: {} {}: {}",
                failed.kind.as_str(),
                failed.name,
                failed.message.as_deref().unwrap_or("failed")
            ))
        } else if complete == found {
            if !all_complete(self.same_version()) && complete > 0 {
                outcome.events.push(Event {
                    type_: EventType::Normal,
                    reason: event::ROLLOUT_COMPLETE.into(),
                    note: Some(summary.clone()),
                    action: "Rollout".into(),
                    secondary: Some(secret_ref(self.sync, self.active_name)),
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
                Duration::try_from(self.timing.deadline.duration_since(self.now_ts))
                    .unwrap_or(Duration::ZERO);
            outcome.requeue = Some(until_deadline.max(Duration::from_millis(100)));
            RolloutState::Progressing(summary)
        }
    }

    /// The rollout status for `state`: the versions that completed or failed, and how long
    /// the last rollout took.
    fn status(&self, targets: Vec<TargetStatus>, state: &RolloutState) -> RolloutStatus {
        let previous = self.previous;
        // Rollout durations outlive the rollout they were measured on.
        let mut last_duration = previous.and_then(|p| p.last_duration.clone());
        let mut longest_duration = previous.and_then(|p| p.longest_duration.clone());
        let mut completed = completed_versions(previous);
        let mut failed_versions: BTreeSet<i64> = previous
            .map(|p| p.failed_versions.iter().copied().collect())
            .unwrap_or_default();
        match state {
            RolloutState::Failed(_) => {
                failed_versions.insert(self.active);
            }
            RolloutState::Complete(_) => {
                if targets.iter().any(|t| t.state == TargetState::Complete) {
                    completed.insert(self.active);
                }
                failed_versions.remove(&self.active);
                // Measured only on a rollout this process saw start (a previous status for
                // the version), from its start to now: what lease-aware rotation plans for.
                if let Some(started) = self
                    .same_version()
                    .filter(|p| !all_complete(Some(p)))
                    .and_then(|p| p.started_at.as_ref())
                {
                    let took = Duration::try_from(self.now_ts.duration_since(started.0))
                        .unwrap_or_default();
                    let longest = longest_duration
                        .as_deref()
                        .and_then(|d| secretsync_api::duration::parse_duration(d).ok())
                        .unwrap_or_default()
                        .max(took);
                    last_duration = Some(format!("{}ms", took.as_millis()));
                    longest_duration = Some(format!("{}ms", longest.as_millis()));
                }
            }
            _ => {}
        }
        RolloutStatus {
            targets,
            version: Some(self.active),
            started_at: Some(self.timing.started_at.clone()),
            failed: None,
            last_duration,
            longest_duration,
            completed_versions: completed.into_iter().collect(),
            failed_versions: failed_versions.into_iter().collect(),
        }
    }
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
    use crate::rollout::fixtures::*;

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
}
