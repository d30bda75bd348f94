//! What the rollout step does on top of [`crate::rollout::plan`]: `onFailure: Rollback`
//! ([`decide`], [`rollback_target`]), holding the targets while no rollout window is open,
//! and revoked versions still in use.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{
    FailedRollout, OnFailure, RolloutStatus, SecretSync, TargetState, TargetStatus,
};

use crate::cache::versions::VersionMeta;
use crate::error::Result;
use crate::events::secret_ref;
use crate::rollout::gate::{Gate, earliest, gate, revoked_users, window_wait};
use crate::rollout::plan::{completed_versions, plan};
use crate::rollout::target::{Outcome, Plan, PodFailure, RolloutState, Target};

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
        existing,
        previous,
        now_ts,
        ..
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
    let mut now = decide_open(scene, on);
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
    let scene = Scene {
        sync,
        bases,
        existing,
        previous,
        targets,
        now_ts,
    };
    let gate = gate(sync, bases, existing, wanted, targets, now_ts);
    let mut planned = decide_open(&scene, wanted);
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
            _ => hold_for_window(&scene, wanted, opens),
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
fn decide_open(scene: &Scene<'_>, wanted: i64) -> Plan {
    let Scene {
        sync,
        bases,
        existing,
        previous,
        targets,
        now_ts,
    } = *scene;
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
    let (failure, events, back) = match standing {
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
    let back_plan = plan(sync, bases, back, &back_name, previous, targets, now_ts);
    let failed = Failed {
        failure,
        events,
        previous,
    };
    failed.rolled_back(back_plan, back, &back_name)
}

/// A rollout to the wanted version that failed, with the events it caused so far.
struct Failed<'a> {
    failure: FailedRollout,
    events: Vec<Event>,
    previous: Option<&'a RolloutStatus>,
}

impl Failed<'_> {
    /// `back_plan` (the rollout to `back`, the rollback target) as the outcome of the
    /// failure: Failed, whatever the rollback's own state, which the message adds.
    fn rolled_back(self, mut back_plan: Plan, back: i64, back_name: &str) -> Plan {
        let Failed {
            failure,
            mut events,
            previous,
        } = self;
        let wanted = failure.version;
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
}

#[cfg(test)]
mod tests {
    use secretsync_api::WorkloadKind;

    use super::*;
    use crate::rollout::fixtures::*;

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
    }

    #[test]
    fn hold_and_a_pinned_version_stay_where_they_failed() {
        let versions = existing(&[1, 2]);
        let v1_done = RolloutStatus {
            version: Some(1),
            completed_versions: vec![1],
            ..RolloutStatus::default()
        };
        let started = decide(
            &rollback_sync(""),
            &db(),
            &versions,
            2,
            Some(&v1_done),
            &api_only(deployment("db-v2", 1)),
            NOW.parse().unwrap(),
        );
        let late: jiff::Timestamp = "2026-11-23T10:05:01Z".parse().unwrap();
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
