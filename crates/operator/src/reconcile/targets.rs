//! Rolling the targets onto the active version and reading their progress (guarantee 3).

use super::*;

/// Where the rollout to the active version stands, with a summary for messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) enum RolloutState {
    /// No `spec.rollout`, or nothing matched it.
    #[default]
    NoTargets,
    Progressing(String),
    Complete(String),
    Failed(String),
}

#[derive(Default)]
pub(super) struct RolloutOutcome {
    pub(super) state: RolloutState,
    pub(super) status: Option<RolloutStatus>,
    pub(super) events: Vec<Event>,
    pub(super) requeue: Option<Duration>,
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
) -> Result<RolloutOutcome> {
    let targets = ctx.workloads.targets(sync);
    if targets.is_empty() {
        return Ok(RolloutOutcome::default());
    }
    let namespace = sync.namespace().unwrap_or_default();
    let started_at = previous
        .filter(|p| p.version == Some(active))
        .and_then(|p| p.started_at.clone())
        .unwrap_or_else(now);
    let timeout = sync.spec.rollout_timeout();
    let deadline = started_at
        .0
        .checked_add(jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX);
    let timed_out = jiff::Timestamp::now() >= deadline;
    let was = |kind: WorkloadKind, name: &str| {
        previous
            .filter(|p| p.version == Some(active))
            .and_then(|p| p.targets.iter().find(|t| t.kind == kind && t.name == name))
            .map(|t| t.state)
    };

    let mut outcome = RolloutOutcome::default();
    let mut statuses = Vec::new();
    for (kind, name) in &targets {
        let (state, message) = match ctx.workloads.get(*kind, &namespace, name) {
            None => (
                TargetState::NotFound,
                Some(format!("{} {name} not found", kind.as_str())),
            ),
            Some(workload) => match rewrite_patch(*kind, &workload, base, active_name) {
                Some(patch) => {
                    match patch_workload(&ctx.client, *kind, &namespace, name, patch).await {
                        Ok(()) => {
                            info!(kind = kind.as_str(), target = %name, secret = %active_name, "rolling out");
                            outcome.events.push(Event {
                                type_: EventType::Normal,
                                reason: event::ROLLOUT_STARTED.into(),
                                note: Some(format!(
                                    "{} {name} now references {active_name}",
                                    kind.as_str()
                                )),
                                action: "Rollout".into(),
                                secondary: Some(secret_ref(sync, active_name)),
                            });
                        }
                        // Someone changed it meanwhile (the resourceVersion test failed):
                        // look again on the next pass.
                        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                            debug!(target = %name, "workload changed during the rollout patch");
                            outcome.requeue = Some(Duration::from_secs(1));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    (
                        TargetState::Progressing,
                        Some("pod template updated".into()),
                    )
                }
                None => match rollout_progress(*kind, &workload) {
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
        if state == TargetState::Failed && was(*kind, name) != Some(TargetState::Failed) {
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
            kind: *kind,
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
    let previous_complete = previous.is_some_and(|p| {
        p.version == Some(active)
            && p.targets
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
        let until_deadline = Duration::try_from(deadline.duration_since(jiff::Timestamp::now()))
            .unwrap_or(Duration::ZERO);
        outcome.requeue = outcome
            .requeue
            .into_iter()
            .chain([until_deadline.max(Duration::from_millis(100))])
            .min();
        RolloutState::Progressing(summary)
    };
    outcome.status = Some(RolloutStatus {
        targets: statuses,
        version: Some(active),
        started_at: Some(started_at),
    });
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
