//! Step 6: letting go of versions (guarantees 4 and 5, docs/reference/guarantees.md). [`candidates`] picks what
//! may go (history beyond the limit once the rollout is Complete, revoked versions per the
//! policy); [`decide`] holds back what something still references; the I/O deletes each
//! with a precondition on the exact Secret it decided about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{RevokePolicy, SecretSync, SecretSyncSpec};
use tracing::{info, warn};

use super::expiry::Revoker;
use crate::cache::versions::VersionMeta;
use crate::context::Context;
use crate::error::Result;
use crate::events::secret_ref;
use crate::rollout::RolloutState;

/// Versions that may be deleted now, before looking at what references them.
#[derive(Debug, Default, PartialEq)]
pub struct Candidates {
    /// Revoked, and their policy says now.
    pub revoked: Vec<i64>,
    /// Beyond `history.limit`, and the rollout to the active version is Complete.
    pub surplus: Vec<i64>,
}

impl Candidates {
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.surplus.is_empty()
    }
}

/// Versions kept whatever the history limit says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Keep {
    /// What the targets point at.
    pub active: Option<i64>,
    /// A version whose rollout failed and was rolled back, kept for inspection.
    pub failed: Option<i64>,
}

pub fn candidates(
    spec: &SecretSyncSpec,
    existing: &BTreeSet<i64>,
    keep: Keep,
    rollout: &RolloutState,
) -> Candidates {
    let active = keep.active;
    let rollout_complete = matches!(rollout, RolloutState::Complete(_) | RolloutState::NoTargets);
    let rollout_ended = rollout_complete || matches!(rollout, RolloutState::Failed(_));
    // Kept: the active version, a rolled-back failed one, and the newest non-revoked ones,
    // `history.limit` in all (the failed one counts beyond it).
    let limit = spec.history_limit() as usize;
    // The newest version too, even beyond the limit while pinned to an older one: it is what
    // the next refresh and rotation compare with, and deleting it would make them make it
    // again, and again.
    let newest = existing
        .iter()
        .rev()
        .find(|v| !spec.is_revoked(**v))
        .copied();
    let mut kept: BTreeSet<i64> = active.into_iter().chain(newest).collect();
    let failed = keep.failed.filter(|v| !spec.is_revoked(*v));
    for v in existing.iter().rev().filter(|v| !spec.is_revoked(**v)) {
        if kept.len() >= limit {
            break;
        }
        kept.insert(*v);
    }
    kept.extend(failed);
    let revoked_now = match spec.revoke_policy() {
        RevokePolicy::Immediate => true,
        RevokePolicy::AfterRollout => rollout_ended,
    };
    Candidates {
        revoked: existing
            .iter()
            .copied()
            .filter(|v| revoked_now && spec.is_revoked(*v) && Some(*v) != active)
            .collect(),
        surplus: existing
            .iter()
            .copied()
            .filter(|v| rollout_complete && !kept.contains(v) && !spec.is_revoked(*v))
            .collect(),
    }
}

/// What to delete given what references each version (`Kind/name` per version).
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Deleted now; revoked ones go even while referenced (with a warning).
    pub delete: Vec<i64>,
    /// Revoked versions deleted while still referenced, with their users.
    pub still_referenced: Vec<(i64, Vec<String>)>,
    /// A surplus version waits for its users to move off it.
    pub held_back: bool,
}

pub fn decide(candidates: &Candidates, used: &BTreeMap<i64, Vec<String>>) -> Decision {
    let mut decision = Decision::default();
    for v in &candidates.revoked {
        if let Some(users) = used.get(v) {
            decision.still_referenced.push((*v, users.clone()));
        }
        decision.delete.push(*v);
    }
    for v in &candidates.surplus {
        if used.contains_key(v) {
            decision.held_back = true;
        } else {
            decision.delete.push(*v);
        }
    }
    decision
}

#[derive(Default)]
pub(super) struct Pruned {
    pub(super) events: Vec<Event>,
    pub(super) requeue: Option<Duration>,
    /// Leases that could not be revoked (their Secrets are kept), for the Ready message.
    pub(super) notes: Vec<String>,
}

/// How soon a lease that could not be revoked is tried again.
const REVOKE_RETRY: Duration = Duration::from_secs(10);

pub(super) async fn prune(
    sync: &SecretSync,
    ctx: &Context,
    existing: &mut BTreeMap<i64, VersionMeta>,
    keep: Keep,
    rollout: &RolloutState,
) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    let spec = &sync.spec;
    // A disowned version is the user's now: never deleted, and not counted in the history.
    let ours = existing
        .values()
        .filter(|m| !m.disowned)
        .map(|m| m.version)
        .collect();
    let found = candidates(spec, &ours, keep, rollout);
    if found.is_empty() {
        return Ok(pruned);
    }
    let namespace = sync.namespace().unwrap_or_default();
    // By each version's own Secret name, whatever base name it was made under.
    let names: BTreeMap<&str, i64> = existing
        .values()
        .map(|m| (m.secret_name.as_str(), m.version))
        .collect();
    let used = ctx
        .workloads
        .references(&ctx.client, &namespace, &names)
        .await?;
    let decision = decide(&found, &used);
    if decision.held_back {
        // A Pod or template still needs it. Nothing wakes us when a Pod goes away (Pods
        // are not watched, to keep memory flat), so look again soon.
        pruned.requeue = Some(Duration::from_secs(10));
    }
    for (v, users) in &decision.still_referenced {
        let name = &existing[v].secret_name;
        pruned.events.push(Event {
            type_: EventType::Warning,
            reason: event::REVOKED_STILL_REFERENCED.into(),
            note: Some(crate::conditions::truncate(
                format!("revoked {name} is still referenced by {}; those Pods will fail to start until they move off it", users.join(", ")),
                1024,
            )),
            action: "Revoke".into(),
            secondary: Some(secret_ref(sync, name)),
        });
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let limit = spec.history_limit();
    let mut revoker = Revoker::default();
    for v in decision.delete {
        let meta = existing[&v].clone();
        // The lease first: once the Secret is gone, so is the lease id.
        if let Some(lease) = &meta.lease {
            if let Err(e) = revoker.revoke(sync, ctx, lease).await {
                warn!(secret = %meta.secret_name, error = %e, "lease not revoked; Secret kept");
                let message = format!(
                    "could not revoke the lease of {} at the backend ({e}); its Secret is kept \
                     and revocation retried",
                    meta.secret_name
                );
                pruned.events.push(Event {
                    type_: EventType::Warning,
                    reason: event::LEASE_REVOKE_FAILED.into(),
                    note: Some(crate::conditions::truncate(message.clone(), 1024)),
                    action: "RevokeLease".into(),
                    secondary: Some(secret_ref(sync, &meta.secret_name)),
                });
                pruned.notes.push(message);
                pruned.requeue = Some(pruned.requeue.map_or(REVOKE_RETRY, |r| r.min(REVOKE_RETRY)));
                continue;
            }
            info!(secret = %meta.secret_name, "lease revoked");
        }
        if !delete_version(&api, ctx, &namespace, &meta).await? {
            continue;
        }
        let lease_note = if meta.lease.is_some() {
            " and revoked its lease"
        } else {
            ""
        };
        let revoked = spec.is_revoked(v);
        info!(secret = %meta.secret_name, revoked, "version deleted");
        pruned.events.push(Event {
            type_: EventType::Normal,
            reason: if revoked {
                event::VERSION_REVOKED
            } else {
                event::VERSION_DELETED
            }
            .into(),
            note: Some(if revoked {
                let reason = crate::events::asked_reason(sync);
                match reason.strip_prefix("; ") {
                    Some(r) => format!("deleted revoked {}{lease_note} ({r})", meta.secret_name),
                    None => format!("deleted revoked {}{lease_note}", meta.secret_name),
                }
            } else {
                format!(
                    "deleted {}{lease_note} (beyond history.limit {limit})",
                    meta.secret_name
                )
            }),
            action: if revoked { "Revoke" } else { "Prune" }.into(),
            secondary: Some(secret_ref(sync, &meta.secret_name)),
        });
        existing.remove(&v);
    }
    Ok(pruned)
}

/// Deletes exactly the Secret the index described: its UID and resourceVersion are
/// preconditions, so a Secret that was replaced, or disowned by a user since, is left alone
/// (the watch then tells the index). Returns whether it is gone.
async fn delete_version(
    api: &Api<Secret>,
    ctx: &Context,
    namespace: &str,
    meta: &VersionMeta,
) -> Result<bool> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..Default::default()
    };
    match ctx.bounded(api.delete(&meta.secret_name, &params)).await? {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            info!(secret = %meta.secret_name, "changed since it was indexed; not deleted");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    // Forget it now: the watch may lag, and the next pass must not see it as present.
    ctx.index.forget(namespace, &meta.secret_name);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SecretSyncSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn versions(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    fn active(v: i64) -> Keep {
        Keep {
            active: Some(v),
            failed: None,
        }
    }

    fn complete() -> RolloutState {
        RolloutState::Complete("1/1".into())
    }

    #[test]
    fn history_beyond_the_limit_goes_only_after_the_rollout() {
        let s = spec("{storeRef: {name: v}, history: {limit: 2}}");
        let found = candidates(&s, &versions(&[1, 2, 3, 4]), active(4), &complete());
        assert_eq!(found.surplus, [1, 2]);
        let progressing = RolloutState::Progressing("0/1".into());
        assert!(candidates(&s, &versions(&[1, 2, 3, 4]), active(4), &progressing).is_empty());
        // a pinned (rolled back) version is kept besides the newest
        let pinned = candidates(&s, &versions(&[1, 2, 3, 4]), active(2), &complete());
        assert_eq!(pinned.surplus, [1, 3]);
        // with a limit of 1 too: deleting the newest would make the next refresh or
        // rotation make it again, and again (found by the user-actions harness, seed 19)
        let one = spec("{storeRef: {name: v}, history: {limit: 1}}");
        let pinned = candidates(&one, &versions(&[1, 2, 3, 4]), active(1), &complete());
        assert_eq!(pinned.surplus, [2, 3]);
    }

    #[test]
    fn a_rolled_back_failed_version_is_kept_beyond_the_limit_unless_revoked() {
        let s = spec("{storeRef: {name: v}, history: {limit: 1}}");
        let keep = Keep {
            active: Some(2),
            failed: Some(3),
        };
        let found = candidates(&s, &versions(&[1, 2, 3]), keep, &complete());
        assert_eq!(found.surplus, [1]);
        let revoked = spec("{storeRef: {name: v}, history: {limit: 1}, revokedVersions: [3]}");
        let found = candidates(&revoked, &versions(&[1, 2, 3]), keep, &complete());
        assert_eq!((found.surplus, found.revoked), (vec![1], vec![3]));
    }

    #[test]
    fn revoked_versions_follow_their_policy() {
        let after = spec("{storeRef: {name: v}, revokedVersions: [2]}");
        let progressing = RolloutState::Progressing("0/1".into());
        assert!(candidates(&after, &versions(&[2, 3]), active(3), &progressing).is_empty());
        let failed = RolloutState::Failed("timeout".into());
        assert_eq!(
            candidates(&after, &versions(&[2, 3]), active(3), &failed).revoked,
            [2]
        );
        let immediate =
            spec("{storeRef: {name: v}, revokedVersions: [2], revokePolicy: Immediate}");
        assert_eq!(
            candidates(&immediate, &versions(&[2, 3]), active(3), &progressing).revoked,
            [2]
        );
    }

    #[test]
    fn referenced_history_is_held_back_but_revoked_versions_go_with_a_warning() {
        let found = Candidates {
            revoked: vec![2],
            surplus: vec![1, 3],
        };
        let used: BTreeMap<i64, Vec<String>> = [
            (1, vec!["Pod/api-1".to_owned()]),
            (2, vec!["Deployment/api".to_owned()]),
        ]
        .into();
        let decision = decide(&found, &used);
        assert_eq!(decision.delete, [2, 3]);
        assert!(decision.held_back);
        assert_eq!(
            decision.still_referenced,
            [(2, vec!["Deployment/api".to_owned()])]
        );
    }
}
