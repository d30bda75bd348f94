//! `--wait`: poll the SecretSync until the operator has acted on the write.

use std::time::Duration;

use kube::ResourceExt;
use secretsync_api::reason::condition;
use secretsync_api::{Reason, SecretSync, TargetState};

use crate::error::{Error, Result};
use crate::ops::{ActiveIs, Syncs, WaitFor, secret_name};
use crate::render::find_condition;

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Ready=False reasons that the operator retries and that usually clear by themselves; any
/// other reason fails the wait at once.
const TRANSIENT: [Reason; 4] = [
    Reason::ProviderUnavailable,
    Reason::KubernetesApiError,
    Reason::RolloutProgressing,
    // A revocation in progress: Ready is False until the targets' Pods have left the
    // revoked version, which is what `revoke --wait` waits for.
    Reason::RevokedVersionInUse,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Done; a one-line summary.
    Done(String),
    /// Not yet; what is missing.
    Pending(String),
    Failed {
        reason: String,
        message: String,
    },
}

/// Where `sync` stands against `want`.
pub fn evaluate(sync: &SecretSync, want: &WaitFor) -> Verdict {
    let name = sync.name_any();
    let Some(status) = sync.status.as_ref() else {
        return Verdict::Pending(format!(
            "{name} has no status yet (is the operator running?)"
        ));
    };
    let observed = status.observed_generation.unwrap_or(0);
    let ready = find_condition(status, condition::READY);
    if let Some(c) = ready
        && c.status == "False"
        && c.observed_generation.unwrap_or(observed) >= want.generation
        && !TRANSIENT.iter().any(|r| r.as_str() == c.reason)
    {
        return Verdict::Failed {
            reason: c.reason.clone(),
            message: c.message.clone(),
        };
    }
    if observed < want.generation {
        return Verdict::Pending(format!(
            "the operator has not processed generation {} yet (observed {observed})",
            want.generation
        ));
    }
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return Verdict::Pending(format!("Ready={} ({}): {}", c.status, c.reason, c.message));
        }
        None => return Verdict::Pending("no Ready condition yet".into()),
    }
    let current = status.current_version;
    if let Some(min) = want.min_current
        && current.is_none_or(|c| c < min)
    {
        return Verdict::Pending(format!(
            "waiting for {} (current version {})",
            secret_name(sync, min),
            current.map_or_else(|| "none".into(), |c| c.to_string())
        ));
    }
    let active = status.active_version;
    let active_ok = match want.active {
        ActiveIs::Any => true,
        ActiveIs::Exactly(v) => active == Some(v),
        ActiveIs::Not(v) => active.is_some() && active != Some(v),
        ActiveIs::Newest => active.is_some() && active == current,
    };
    if !active_ok {
        return Verdict::Pending(format!(
            "active version is {}",
            active.map_or_else(|| "none".into(), |a| secret_name(sync, a))
        ));
    }
    let targets = status
        .rollout
        .as_ref()
        .map(|r| r.targets.as_slice())
        .unwrap_or_default();
    let mut missing = Vec::new();
    let mut done = 0;
    for t in targets {
        let at_active = Some(t.version) == active;
        match t.state {
            // A target that does not exist is reported, not waited for (docs/reference/guarantees.md#guarantee-3).
            TargetState::NotFound => missing.push(format!("{}/{}", t.kind.as_str(), t.name)),
            TargetState::Failed if at_active => {
                let detail = find_condition(status, condition::ROLLED_OUT)
                    .map(|c| format!(": {}", c.message))
                    .unwrap_or_default();
                return Verdict::Failed {
                    reason: Reason::RolloutFailed.as_str().into(),
                    message: format!(
                        "{}/{} did not roll out to version {}{detail}",
                        t.kind.as_str(),
                        t.name,
                        t.version
                    ),
                };
            }
            TargetState::Complete if at_active => done += 1,
            state => {
                return Verdict::Pending(format!(
                    "rollout {done}/{}: {}/{} is {state:?} at version {}",
                    targets.len(),
                    t.kind.as_str(),
                    t.name,
                    t.version
                ));
            }
        }
    }
    let active_name = active.map_or_else(|| "-".into(), |a| secret_name(sync, a));
    let mut summary = format!("{name} is Ready; {active_name} is active");
    if !targets.is_empty() {
        summary.push_str(&format!("; {done}/{} targets rolled out", targets.len()));
    }
    if !missing.is_empty() {
        summary.push_str(&format!("; not found (skipped): {}", missing.join(", ")));
    }
    Verdict::Done(summary)
}

/// Polls until `want` holds, it fails, or `timeout` passes. Each new "still waiting" reason is
/// passed to `progress` once.
pub async fn wait(
    syncs: &Syncs,
    name: &str,
    want: &WaitFor,
    timeout: Duration,
    interval: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<(SecretSync, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("nothing observed yet");
    loop {
        match syncs.api.get_opt(name).await {
            Ok(None) => return Err(Error::Vanished { name: name.into() }),
            Ok(Some(sync)) => match evaluate(&sync, want) {
                Verdict::Done(summary) => return Ok((sync, summary)),
                Verdict::Failed { reason, message } => {
                    return Err(Error::WaitFailed {
                        name: name.into(),
                        reason,
                        message,
                    });
                }
                Verdict::Pending(why) => {
                    if why != last {
                        progress(&why);
                        last = why;
                    }
                }
            },
            // The API server may blip during an incident; keep trying until the deadline.
            Err(e) => {
                let why = format!("reading {name}: {e}");
                if why != last {
                    progress(&why);
                    last = why;
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::WaitTimeout {
                name: name.into(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}
