//! Rollout windows (`spec.rollout.windows`): whether targets may move now, and what waiting
//! for the next window says.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use secretsync_api::window::{self, Opening};
use secretsync_api::{RevokePolicy, SecretSync, labels};

use crate::cache::versions::VersionMeta;
use crate::podspec::referenced_versions;
use crate::rollout::target::Target;

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
pub(super) fn revoked_users(
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
pub(super) fn window_wait(
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

pub(super) fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
