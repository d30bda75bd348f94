//! Step 7: the status. [`synced`] assembles it from what the pass decided, [`failed`] from
//! an error; [`write`] applies it only when it differs from what the object has, so a
//! steady state writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secretsync_api::reason::{condition, event};
use secretsync_api::{
    LeaseStatus, MAX_TOMBSTONES, Reason, RolloutStatus, SecretSync, SecretSyncSpec,
    SecretSyncStatus, TargetState, VersionState, VersionStatus, labels,
};
use serde_json::json;

use crate::cache::versions::VersionMeta;
use crate::conditions::{now, set_condition, truncate};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::rollout::RolloutState;

pub struct SyncedInput<'a> {
    pub previous: &'a SecretSyncStatus,
    pub spec: &'a SecretSyncSpec,
    pub generation: Option<i64>,
    pub existing: &'a BTreeMap<i64, VersionMeta>,
    pub active: Option<i64>,
    pub active_name: &'a str,
    pub rollout_state: &'a RolloutState,
    pub rollout_status: Option<RolloutStatus>,
    /// The backend was read in this pass, through this store generation.
    pub refreshed: Option<Option<i64>>,
    /// The version the targets use, when its lease has expired: (Secret name, expiry).
    pub lease_expired: Option<&'a (String, jiff::Timestamp)>,
    /// Problems that did not stop the pass (a lease not revoked yet), for the Ready message.
    pub notes: &'a [String],
    /// A revoked version the targets have not left yet: Ready is False until they do.
    pub revoked_in_use: Option<&'a str>,
}

/// The status after a successful pass.
pub fn synced(input: SyncedInput<'_>) -> SecretSyncStatus {
    let SyncedInput {
        previous,
        spec,
        generation,
        existing,
        active,
        active_name,
        rollout_state,
        rollout_status,
        refreshed,
        lease_expired,
        notes,
        revoked_in_use,
    } = input;
    let mut status = previous.clone();
    if let Some(store_generation) = refreshed {
        status.store_generation = store_generation;
    }
    // Targets that do not exist are a user's error (a typo, a CRD not installed): counted in
    // the summary, and not Ready, so `kubectl get secretsync` shows them.
    let targets_missing = rollout_status
        .as_ref()
        .is_some_and(|r| r.targets.iter().any(|t| t.state == TargetState::NotFound));
    let unknown_revoked = unknown_revoked(spec, existing, previous);
    let input_ready = Ready {
        lease_expired,
        rollout_state,
        revoked_in_use,
        targets_missing,
        unknown_revoked: &unknown_revoked,
        existing,
        active_name,
    };
    status.observed_generation = generation;
    // Never decreases (guarantee 1, docs/reference/guarantees.md): the newest version made, even if its Secret is
    // gone and the next one could not be made yet.
    status.current_version = existing
        .keys()
        .next_back()
        .copied()
        .max(previous.current_version);
    status.active_version = active;
    status.active_secret_name = Some(active_name.to_owned()).filter(|n| !n.is_empty());
    status.versions = version_list(existing, &previous.versions, active, spec.revoked());
    status.rollout = rollout_status;
    set_condition(
        &mut status.conditions,
        condition::SYNCED,
        true,
        Reason::Synced,
        synced_message(spec, existing, active_name),
        generation,
    );
    let (ready, ready_reason, mut ready_message) = ready(&input_ready);
    for note in notes {
        ready_message.push_str("; ");
        ready_message.push_str(note);
    }
    set_condition(
        &mut status.conditions,
        condition::READY,
        ready,
        ready_reason,
        ready_message,
        generation,
    );
    let rolled_out = rolled_out(rollout_state, targets_missing);
    match rolled_out {
        None => status
            .conditions
            .retain(|c| c.type_ != condition::ROLLED_OUT),
        Some((ok, reason, message)) => set_condition(
            &mut status.conditions,
            condition::ROLLED_OUT,
            ok,
            reason,
            message.clone(),
            generation,
        ),
    }
    // A refresh that changed nothing writes nothing (guarantee 2, docs/reference/guarantees.md): the time of a
    // read is recorded only when the status is written anyway.
    if refreshed.is_some() && status != *previous {
        status.last_refresh_time = Some(now());
    }
    status
}

/// What the Ready condition depends on.
struct Ready<'a> {
    lease_expired: Option<&'a (String, jiff::Timestamp)>,
    rollout_state: &'a RolloutState,
    revoked_in_use: Option<&'a str>,
    targets_missing: bool,
    unknown_revoked: &'a [i64],
    existing: &'a BTreeMap<i64, VersionMeta>,
    active_name: &'a str,
}

/// Ready: status, reason and message, the first problem first.
fn ready(input: &Ready<'_>) -> (bool, Reason, String) {
    let Ready {
        lease_expired,
        rollout_state,
        revoked_in_use,
        targets_missing,
        unknown_revoked,
        existing,
        active_name,
    } = *input;
    match (lease_expired, rollout_state, revoked_in_use) {
        (Some((name, expired_at)), _, _) => (
            false,
            Reason::LeaseExpired,
            format!(
                "the lease of {name}, which the targets use, expired at {expired_at}: its \
             credential no longer works; rotate (raise spec.version) to issue a new one, \
             or see RolledOut for why the rollout to a newer version has not completed"
            ),
        ),
        // The on-call engineer believes a leaked version is revoked: that comes first.
        (None, _, _) if !unknown_revoked.is_empty() => (
            false,
            Reason::RevokedVersionUnknown,
            unknown_revoked_message(unknown_revoked, existing, active_name),
        ),
        (None, RolloutState::Failed(why), _) => (
            false,
            Reason::RolloutFailed,
            format!("{active_name} active; {why}"),
        ),
        (None, _, Some(in_use)) => (
            false,
            Reason::RevokedVersionInUse,
            format!("{active_name} active; {in_use}"),
        ),
        (
            None,
            RolloutState::Progressing(summary)
            | RolloutState::Complete(summary)
            | RolloutState::Paused(summary),
            None,
        ) if targets_missing => (
            false,
            Reason::TargetNotFound,
            format!("{active_name} active; {summary}"),
        ),
        (None, RolloutState::NoTargets, None) => {
            (true, Reason::Synced, format!("{active_name} active"))
        }
        (
            None,
            RolloutState::Progressing(summary)
            | RolloutState::Complete(summary)
            | RolloutState::Waiting(summary)
            | RolloutState::Paused(summary),
            None,
        ) => (
            true,
            Reason::Synced,
            format!("{active_name} active; {summary}"),
        ),
    }
}

/// RolledOut: status, reason and message; `None` without targets (no condition).
fn rolled_out(state: &RolloutState, targets_missing: bool) -> Option<(bool, Reason, &String)> {
    match state {
        RolloutState::NoTargets => None,
        RolloutState::Complete(summary) | RolloutState::Progressing(summary) if targets_missing => {
            Some((false, Reason::TargetNotFound, summary))
        }
        RolloutState::Complete(summary) => Some((true, Reason::RolloutComplete, summary)),
        RolloutState::Progressing(summary) => Some((false, Reason::RolloutProgressing, summary)),
        RolloutState::Waiting(why) => Some((false, Reason::RolloutWaiting, why)),
        RolloutState::Paused(why) => Some((false, Reason::TargetPaused, why)),
        RolloutState::Failed(why) => Some((false, Reason::RolloutFailed, why)),
    }
}

/// The Synced message: while pinned to an older version, it says which version is newest
/// rather than calling the pinned one up to date.
fn synced_message(
    spec: &SecretSyncSpec,
    existing: &BTreeMap<i64, VersionMeta>,
    active_name: &str,
) -> String {
    let store = &spec.store_ref.name;
    match (spec.pin_version, existing.values().next_back()) {
        (Some(pin), Some(newest)) if newest.version > pin => format!(
            "{} is up to date with {store}; pinned to {active_name} (spec.pinVersion)",
            newest.secret_name
        ),
        _ => format!("{active_name} is up to date with {store}"),
    }
}

/// The status after a failed pass: Ready and Synced say why. `observedGeneration` stays,
/// since the spec was not handled and the retry must fetch again; the conditions say which
/// generation failed.
/// The `revokedVersions` entries above every number ever used: versions never made (a
/// typo), which revoke nothing. A lower number may name a version pruned long ago, so only
/// these are reported.
pub fn unknown_revoked(
    spec: &SecretSyncSpec,
    existing: &BTreeMap<i64, VersionMeta>,
    previous: &SecretSyncStatus,
) -> Vec<i64> {
    let highest = [
        existing.keys().next_back().copied(),
        previous.current_version,
        previous.versions.iter().map(|v| v.version).max(),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let mut unknown: Vec<i64> = spec
        .revoked()
        .iter()
        .copied()
        .filter(|v| *v > highest)
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
}

fn unknown_revoked_message(
    unknown: &[i64],
    existing: &BTreeMap<i64, VersionMeta>,
    active_name: &str,
) -> String {
    let list = |versions: &mut dyn Iterator<Item = i64>| {
        versions
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let named = match unknown {
        [one] => format!("version {one}, which was never made, so it revokes"),
        _ => format!(
            "versions {}, which were never made, so they revoke",
            list(&mut unknown.iter().copied())
        ),
    };
    let exist = if existing.is_empty() {
        "no version exists yet".to_owned()
    } else {
        let active = if active_name.is_empty() {
            String::new()
        } else {
            format!(" ({active_name} active)")
        };
        format!(
            "the versions that exist are {}{active}",
            list(&mut existing.keys().copied())
        )
    };
    format!("revokedVersions names {named} nothing; {exist}")
}

/// The Warning that goes with a `RevokedVersionUnknown` Ready condition, once per change
/// of its message.
pub fn unknown_revoked_event(
    previous: &SecretSyncStatus,
    status: &SecretSyncStatus,
) -> Option<Event> {
    let ready = |s: &SecretSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (reason, message) = ready(status)?;
    (reason == Reason::RevokedVersionUnknown.as_str()
        && ready(previous) != Some((reason, message.clone())))
    .then(|| Event {
        type_: EventType::Warning,
        reason: event::REVOKED_VERSION_UNKNOWN.into(),
        note: Some(message),
        action: "Revoke".into(),
        secondary: None,
    })
}

pub fn failed(
    previous: &SecretSyncStatus,
    error: &Error,
    generation: Option<i64>,
) -> SecretSyncStatus {
    let mut status = previous.clone();
    let message = error.to_string();
    for type_ in [condition::READY, condition::SYNCED] {
        set_condition(
            &mut status.conditions,
            type_,
            false,
            error.reason(),
            message.clone(),
            generation,
        );
    }
    status
}

pub fn failed_event(error: &Error) -> Event {
    Event {
        type_: EventType::Warning,
        reason: event::SYNC_FAILED.into(),
        note: Some(truncate(format!("{}: {error}", error.reason()), 1024)),
        // The condition reason as the action: kube's Recorder folds events of one (reason,
        // action) into a series, and a different failure must not be folded into the first
        // one's note.
        action: error.reason().as_str().into(),
        secondary: None,
    }
}

/// Writes status by server-side apply when it differs from what the object has; returns
/// whether it wrote.
pub(super) async fn write(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
    status: &SecretSyncStatus,
) -> Result<bool> {
    if let Some(ready) = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
    {
        ctx.metrics.sync_ready(
            &sync.uid().unwrap_or_default(),
            &ready.status,
            &ready.reason,
        );
    }
    if previous == status {
        return Ok(false);
    }
    let api: Api<SecretSync> =
        Api::namespaced(ctx.client.clone(), &sync.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": SecretSync::api_version(&()),
        "kind": SecretSync::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(labels::FIELD_MANAGER).force();
    let applied = ctx
        .bounded(api.patch_status(&sync.name_any(), &params, &Patch::Apply(patch)))
        .await??;
    let mut made: Vec<String> = applied.metadata.resource_version.into_iter().collect();
    // Server-side apply takes back the fields of a failure it no longer sends but leaves
    // their map, `failed: {}`, which the schema's defaults then read as version 0: a
    // recovered rollout must show no failure at all.
    let failure_of = |s: &SecretSyncStatus| s.rollout.as_ref().and_then(|r| r.failed.clone());
    if failure_of(previous).is_some() && failure_of(status).is_none() {
        let clear = json!({"status": {"rollout": {"failed": null}}});
        let cleared = ctx
            .bounded(api.patch_status(
                &sync.name_any(),
                &PatchParams {
                    field_manager: Some(labels::FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(clear),
            ))
            .await??;
        made.extend(cleared.metadata.resource_version);
    }
    ctx.metrics.status_written();
    ctx.memory.remember_status(sync, made, status.clone());
    Ok(true)
}

/// `status.versions`, newest first: every existing version (Active, Retained, or Revoked
/// while its Secret still exists), then tombstones of deleted and revoked versions from the
/// previous status, at most [`MAX_TOMBSTONES`] of them.
pub fn version_list(
    existing: &BTreeMap<i64, VersionMeta>,
    previous: &[VersionStatus],
    active: Option<i64>,
    revoked: &[i64],
) -> Vec<VersionStatus> {
    let previous_of = |v: i64| previous.iter().find(|p| p.version == v);
    let mut list: Vec<VersionStatus> = existing
        .values()
        .rev()
        .map(|meta| {
            let state = if meta.disowned {
                VersionState::Disowned
            } else if revoked.contains(&meta.version) {
                VersionState::Revoked
            } else if Some(meta.version) == active {
                VersionState::Active
            } else {
                VersionState::Retained
            };
            let revoked_at = (state == VersionState::Revoked).then(|| {
                previous_of(meta.version)
                    .and_then(|p| p.revoked_at.clone())
                    .unwrap_or_else(now)
            });
            VersionStatus {
                version: meta.version,
                secret_name: meta.secret_name.clone(),
                content_hash: meta.content_hash.clone(),
                spec_version: meta.spec_version,
                created_at: meta.created_at.clone(),
                source_versions: meta.source_versions.clone(),
                state,
                revoked_at,
                lease: meta.lease.as_ref().map(|l| LeaseStatus {
                    expires_at: Time(l.expires_at),
                    renewable: l.renewable,
                }),
                serial: meta.serial.clone(),
            }
        })
        .collect();
    let mut tombstones: Vec<VersionStatus> = previous
        .iter()
        .filter(|p| !existing.contains_key(&p.version))
        .map(|p| {
            let mut t = p.clone();
            if revoked.contains(&t.version) || t.state == VersionState::Revoked {
                t.state = VersionState::Revoked;
                t.revoked_at = t.revoked_at.or_else(|| Some(now()));
            } else {
                t.state = VersionState::Deleted;
            }
            t
        })
        .collect();
    tombstones.truncate(MAX_TOMBSTONES);
    list.extend(tombstones);
    list.sort_by_key(|v| std::cmp::Reverse(v.version));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: i64) -> VersionMeta {
        VersionMeta {
            version: v,
            secret_name: format!("db-v{v}"),
            content_hash: Some(format!("sha256:{v}")),
            ..VersionMeta::default()
        }
    }

    #[test]
    fn versions_are_listed_newest_first_with_tombstones() {
        let existing: BTreeMap<i64, VersionMeta> = [(2, meta(2)), (3, meta(3))].into();
        let previous = vec![
            VersionStatus {
                version: 1,
                secret_name: "db-v1".into(),
                state: VersionState::Retained,
                ..Default::default()
            },
            VersionStatus {
                version: 4,
                secret_name: "db-v4".into(),
                state: VersionState::Revoked,
                ..Default::default()
            },
        ];
        let list = version_list(&existing, &previous, Some(3), &[4]);
        let summary: Vec<_> = list.iter().map(|v| (v.version, v.state)).collect();
        assert_eq!(
            summary,
            [
                (4, VersionState::Revoked),
                (3, VersionState::Active),
                (2, VersionState::Retained),
                (1, VersionState::Deleted)
            ]
        );
        assert!(list[0].revoked_at.is_some());
    }

    #[test]
    fn tombstones_are_bounded() {
        let previous: Vec<_> = (1..=50)
            .map(|v| VersionStatus {
                version: v,
                secret_name: format!("db-v{v}"),
                state: VersionState::Deleted,
                ..Default::default()
            })
            .collect();
        let existing: BTreeMap<i64, VersionMeta> = [(51, meta(51))].into();
        let list = version_list(&existing, &previous, Some(51), &[]);
        assert_eq!(list.len(), 1 + MAX_TOMBSTONES);
        assert_eq!(list[0].version, 51);
    }

    const SPEC: &str = "{storeRef: {name: vault}}";

    #[test]
    fn an_unchanged_pass_assembles_an_identical_status() {
        let spec: SecretSyncSpec = serde_yaml::from_str(SPEC).unwrap();
        let existing: BTreeMap<i64, VersionMeta> = [(1, meta(1))].into();
        let input = |previous| SyncedInput {
            previous,
            spec: &spec,
            generation: Some(1),
            existing: &existing,
            active: Some(1),
            active_name: "db-v1",
            rollout_state: &RolloutState::NoTargets,
            rollout_status: None,
            refreshed: None,
            lease_expired: None,
            notes: &[],
            revoked_in_use: None,
        };
        let empty = SecretSyncStatus::default();
        let first = synced(input(&empty));
        assert_eq!(first.active_secret_name.as_deref(), Some("db-v1"));
        let ready = first
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Synced")
        );
        assert_eq!(
            synced(input(&first)),
            first,
            "nothing changed: nothing to write"
        );
    }

    #[test]
    fn a_failure_keeps_what_was_synced_and_says_why() {
        let spec: SecretSyncSpec = serde_yaml::from_str(SPEC).unwrap();
        let existing: BTreeMap<i64, VersionMeta> = [(1, meta(1))].into();
        let ok = synced(SyncedInput {
            previous: &SecretSyncStatus::default(),
            spec: &spec,
            generation: Some(1),
            existing: &existing,
            active: Some(1),
            active_name: "db-v1",
            rollout_state: &RolloutState::NoTargets,
            rollout_status: None,
            refreshed: Some(Some(1)),
            lease_expired: None,
            notes: &[],
            revoked_in_use: None,
        });
        let error = Error::StoreNotFound {
            kind: "SecretStore",
            name: "vault".into(),
            namespace: Some("payments".into()),
        };
        let bad = failed(&ok, &error, Some(2));
        assert_eq!(bad.active_version, Some(1));
        assert_eq!(bad.observed_generation, Some(1));
        for type_ in ["Ready", "Synced"] {
            let c = bad.conditions.iter().find(|c| c.type_ == type_).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "StoreNotFound")
            );
            assert_eq!(c.observed_generation, Some(2));
        }
        assert_eq!(failed(&bad, &error, Some(2)), bad, "a retry writes nothing");
    }

    fn cond<'a>(status: &'a SecretSyncStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn a_target_that_does_not_exist_is_named_and_not_ready() {
        let spec: SecretSyncSpec = serde_yaml::from_str(SPEC).unwrap();
        let existing: BTreeMap<i64, VersionMeta> = [(1, meta(1))].into();
        let rollout: RolloutStatus = serde_yaml::from_str(
            "{version: 1, targets: [{kind: Deployment, name: nothere, version: 1, state: NotFound, \
             message: Deployment nothere not found}]}",
        )
        .unwrap();
        let summary = "0/1 targets rolled out to db-v1: Deployment nothere not found";
        let status = synced(SyncedInput {
            previous: &SecretSyncStatus::default(),
            spec: &spec,
            generation: Some(1),
            existing: &existing,
            active: Some(1),
            active_name: "db-v1",
            rollout_state: &RolloutState::Complete(summary.into()),
            rollout_status: Some(rollout),
            refreshed: None,
            lease_expired: None,
            notes: &[],
            revoked_in_use: None,
        });
        assert_eq!(
            cond(&status, "RolledOut"),
            ("False", "TargetNotFound", summary)
        );
        let ready = format!("db-v1 active; {summary}");
        assert_eq!(
            cond(&status, "Ready"),
            ("False", "TargetNotFound", ready.as_str())
        );
        assert_eq!(cond(&status, "Synced").0, "True");
    }

    #[test]
    fn a_revoked_version_never_made_is_not_ready_and_warned_once() {
        let mut spec: SecretSyncSpec = serde_yaml::from_str(SPEC).unwrap();
        // 2 was made and pruned long ago: its tombstone may be gone, it is no typo.
        spec.revoked_versions = Some(vec![2, 99, 7]);
        let existing: BTreeMap<i64, VersionMeta> = [(3, meta(3)), (4, meta(4))].into();
        let previous = SecretSyncStatus::default();
        assert_eq!(unknown_revoked(&spec, &existing, &previous), [7, 99]);
        let input = |previous, spec| SyncedInput {
            previous,
            spec,
            generation: Some(1),
            existing: &existing,
            active: Some(4),
            active_name: "db-v4",
            rollout_state: &RolloutState::NoTargets,
            rollout_status: None,
            refreshed: None,
            lease_expired: None,
            notes: &[],
            revoked_in_use: None,
        };
        let status = synced(input(&previous, &spec));
        let message = "revokedVersions names versions 7, 99, which were never made, so they \
                       revoke nothing; the versions that exist are 3, 4 (db-v4 active)";
        assert_eq!(
            cond(&status, "Ready"),
            ("False", "RevokedVersionUnknown", message)
        );
        let warning = unknown_revoked_event(&previous, &status).unwrap();
        assert_eq!(
            (
                warning.type_,
                warning.reason.as_str(),
                warning.note.as_deref()
            ),
            (EventType::Warning, "RevokedVersionUnknown", Some(message))
        );
        assert!(unknown_revoked_event(&status, &synced(input(&status, &spec))).is_none());

        let mut corrected = spec.clone();
        corrected.revoked_versions = Some(vec![99]);
        let one = synced(input(&status, &corrected));
        assert_eq!(
            cond(&one, "Ready").2,
            "revokedVersions names version 99, which was never made, so it revokes nothing; \
             the versions that exist are 3, 4 (db-v4 active)"
        );
        assert!(
            unknown_revoked_event(&status, &one).is_some(),
            "a new message, a new warning"
        );
        corrected.revoked_versions = Some(vec![4]);
        assert!(unknown_revoked(&corrected, &existing, &previous).is_empty());
    }
}
