//! Step 0: the target name. Two SecretSyncs that claim one name in a namespace: the older
//! keeps it, the later gets `TargetConflict` and writes nothing (guarantee 1, docs/reference/guarantees.md). The
//! blocked one is woken when the other claimant or its Secrets go (see `controller.rs`).

use kube::ResourceExt;
use secretsync_api::SecretSync;

use crate::cache::syncs::Claim;
use crate::context::Context;
use crate::error::{Error, Result};

pub(super) fn check(sync: &SecretSync, ctx: &Context, base: &str) -> Result<()> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    if let Some(secret) = ctx.index.other_owner_of_base(&namespace, base, &uid) {
        return Err(Error::TargetConflict(format!(
            "Secret {secret} belongs to another SecretSync, so target name {base:?} is taken; choose another spec.target.name"
        )));
    }
    let ours = Claim {
        created: sync.metadata.creation_timestamp.clone(),
        name: sync.name_any(),
        uid,
        deleting: false,
    };
    match older_claimant(&ctx.sync_index.claims(&namespace, base), &ours) {
        Some(other) => Err(Error::TargetConflict(format!(
            "SecretSync {:?} already claims target name {base:?}; choose another spec.target.name",
            other.name
        ))),
        None => Ok(()),
    }
}

/// The claimant that keeps the name ahead of `ours`, if any: the oldest other SecretSync
/// that is not being deleted (creation time, then name, breaks ties).
pub fn older_claimant<'a>(claims: &'a [Claim], ours: &Claim) -> Option<&'a Claim> {
    claims
        .iter()
        .filter(|c| c.uid != ours.uid && !c.deleting)
        .filter(|c| (&c.created, &c.name) < (&ours.created, &ours.name))
        .min_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn claim(name: &str, day: u32, deleting: bool) -> Claim {
        Claim {
            created: Some(Time(format!("2026-11-{day:02}T00:00:00Z").parse().unwrap())),
            name: name.into(),
            uid: format!("uid-{name}"),
            deleting,
        }
    }

    #[test]
    fn the_oldest_live_claimant_keeps_the_name() {
        let api = claim("api", 1, false);
        let worker = claim("worker", 2, false);
        let claims = vec![api.clone(), worker.clone()];
        assert_eq!(older_claimant(&claims, &worker), Some(&api));
        assert_eq!(older_claimant(&claims, &api), None);
        // the older one is being deleted: the name is free for the next
        let claims = vec![claim("api", 1, true), worker.clone()];
        assert_eq!(older_claimant(&claims, &worker), None);
        // same creation second: the name decides, so both agree who wins
        let twin = claim("apx", 1, false);
        assert_eq!(
            older_claimant(&[api.clone(), twin.clone()], &twin),
            Some(&api)
        );
        assert_eq!(older_claimant(&[api.clone(), twin], &api), None);
    }
}
