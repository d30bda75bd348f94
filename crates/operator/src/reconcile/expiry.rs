//! Leases of dynamic secrets (`dataFrom.pki`): when the next version must be made so that
//! its rollout completes before the newest version's lease expires ([`rotate_at`]), whether
//! the targets use a version whose lease already expired ([`expired_in_use`]), and revoking
//! a version's lease at the backend before its Secret goes ([`revoke`]).
//!
//! Lease-aware rotation answers vault issue 22297 (credentials expiring before a slow
//! rollout completes): the lead before expiry is the longest rollout observed for this
//! SecretSync's targets (`status.rollout.longestDuration`) times [`SAFETY_FACTOR`] plus
//! [`MARGIN`], never less than a third of the lease (the floor, also used before any rollout
//! was observed) and never more than two thirds (so a version always lives a while).

use std::collections::BTreeMap;
use std::time::Duration;

use secretsync_api::duration::parse_duration;
use secretsync_api::{RolloutStatus, SecretSync, SecretSyncSpec};
use secretsync_providers::ProviderError;

use super::store::ResolvedStore;
use crate::cache::versions::{LeaseMeta, VersionMeta};
use crate::context::Context;
use crate::error::{Error, Result};

/// The observed rollout duration is multiplied by this.
pub const SAFETY_FACTOR: u32 = 2;
/// And this is added, for the operator's own reaction time (a pass, a patch, a watch event).
pub const MARGIN: Duration = Duration::from_secs(5);

/// How long before `lease` expires the next version is made.
pub fn lead(lease: &LeaseMeta, longest_rollout: Option<Duration>) -> Duration {
    let floor = lease.duration / 3;
    let cap = lease.duration * 2 / 3;
    let wanted = longest_rollout
        .map(|d| d.saturating_mul(SAFETY_FACTOR).saturating_add(MARGIN))
        .unwrap_or(floor);
    wanted.max(floor).min(cap)
}

/// The longest rollout recorded in the status, if any.
pub fn longest_rollout(rollout: Option<&RolloutStatus>) -> Option<Duration> {
    rollout
        .and_then(|r| r.longest_duration.as_deref())
        .and_then(|d| parse_duration(d).ok())
}

/// When a SecretSync holding leases must make its next version: the newest version's lease
/// expiry minus [`lead`]. `None` when nothing expires (no lease, no leased source), while
/// the lease is still renewed (`renew.rs`; a renewal capped by the max TTL ends that), or
/// when the newest version is revoked (its replacement is made at once anyway).
pub fn rotate_at(
    spec: &SecretSyncSpec,
    newest: Option<&VersionMeta>,
    rollout: Option<&RolloutStatus>,
) -> Option<jiff::Timestamp> {
    if !spec.holds_leases() {
        return None;
    }
    let newest = newest.filter(|n| !spec.is_revoked(n.version))?;
    let lease = newest
        .lease
        .as_ref()
        .filter(|l| !(l.renewable && spec.dynamic().is_some()))?;
    let lead = jiff::SignedDuration::try_from(lead(lease, longest_rollout(rollout))).ok()?;
    lease.expires_at.checked_sub(lead).ok()
}

/// The version the targets use, when its lease has expired: `(Secret name, expiry)`.
pub fn expired_in_use(
    existing: &BTreeMap<i64, VersionMeta>,
    active: Option<i64>,
    now: jiff::Timestamp,
) -> Option<(String, jiff::Timestamp)> {
    let meta = existing.get(&active?)?;
    let lease = meta.lease.as_ref()?;
    (lease.expires_at <= now).then(|| (meta.secret_name.clone(), lease.expires_at))
}

/// How long until `at`, at least 100 ms (a timer for a moment already past fires soon).
pub fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(100))
}

/// The store to revoke through, resolved once per pass and only when a lease needs it.
#[derive(Default)]
pub(super) struct Revoker {
    store: Option<ResolvedStore>,
}

impl Revoker {
    /// Revokes `lease` at the store `sync` names. A lease the backend no longer knows counts
    /// as revoked (the provider says so).
    pub(super) async fn revoke(
        &mut self,
        sync: &SecretSync,
        ctx: &Context,
        lease: &LeaseMeta,
    ) -> Result<()> {
        let store = match &mut self.store {
            Some(store) => store,
            empty => empty.insert(super::store::resolve(sync, ctx).await?),
        };
        let connected = &store.connected;
        if let Some(limiter) = &connected.limiter {
            limiter.acquire().await;
        }
        let revoked = connected.provider.revoke_lease(&lease.id).await;
        ctx.metrics
            .backend_request(connected.provider.name(), revoked.is_ok());
        revoked.map_err(|source: ProviderError| Error::Provider {
            store: store.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires: &str, duration_secs: u64) -> LeaseMeta {
        LeaseMeta {
            id: "pki/issue/app/x".into(),
            expires_at: expires.parse().unwrap(),
            duration: Duration::from_secs(duration_secs),
            renewable: false,
        }
    }

    #[test]
    fn the_lead_follows_the_longest_rollout_between_a_third_and_two_thirds_of_the_lease() {
        let day = lease("2026-11-24T10:00:00Z", 86_400);
        // nothing observed: the floor, a third of the lease
        assert_eq!(lead(&day, None), Duration::from_secs(28_800));
        // observed rollouts shorter than the floor do not shorten it
        assert_eq!(
            lead(&day, Some(Duration::from_secs(60))),
            Duration::from_secs(28_800)
        );
        let short = lease("2026-11-24T10:00:00Z", 60);
        // 2 × 12 s + 5 s = 29 s, above the 20 s floor
        assert_eq!(
            lead(&short, Some(Duration::from_secs(12))),
            Duration::from_secs(29)
        );
        // a rollout longer than the lease allows: capped at two thirds
        assert_eq!(
            lead(&short, Some(Duration::from_secs(600))),
            Duration::from_secs(40)
        );
    }

    fn spec(yaml: &str) -> SecretSyncSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn version(v: i64, lease: Option<LeaseMeta>) -> VersionMeta {
        VersionMeta {
            version: v,
            secret_name: format!("tls-v{v}"),
            lease: lease.map(Box::new),
            ..VersionMeta::default()
        }
    }

    const PKI: &str =
        "{storeRef: {name: vault}, dataFrom: [{pki: {role: app, commonName: api.example}}]}";

    #[test]
    fn rotation_is_due_the_lead_before_the_newest_lease_expires() {
        let pki = spec(PKI);
        let newest = version(1, Some(lease("2026-11-23T10:01:00Z", 60)));
        let rollout: RolloutStatus =
            serde_yaml::from_str("{targets: [], longestDuration: 12000ms}").unwrap();
        assert_eq!(
            rotate_at(&pki, Some(&newest), Some(&rollout)),
            Some("2026-11-23T10:00:31Z".parse().unwrap())
        );
        assert_eq!(
            rotate_at(&pki, Some(&newest), None),
            Some("2026-11-23T10:00:40Z".parse().unwrap())
        );
        // no lease, a revoked newest version, or not a pki SecretSync: no deadline
        assert_eq!(rotate_at(&pki, Some(&version(1, None)), None), None);
        let mut revoked = spec(PKI);
        revoked.revoked_versions = Some(vec![1]);
        assert_eq!(rotate_at(&revoked, Some(&newest), None), None);
        let kv = spec("{storeRef: {name: vault}, data: [{secretKey: a, remoteRef: {key: k}}]}");
        assert_eq!(rotate_at(&kv, Some(&newest), None), None);
    }

    #[test]
    fn an_expired_lease_matters_only_on_the_version_in_use() {
        let existing: BTreeMap<i64, VersionMeta> = [
            (1, version(1, Some(lease("2026-11-23T10:00:00Z", 60)))),
            (2, version(2, Some(lease("2026-11-23T10:01:00Z", 60)))),
        ]
        .into();
        let now = "2026-11-23T10:00:30Z".parse().unwrap();
        assert_eq!(expired_in_use(&existing, Some(2), now), None);
        assert_eq!(
            expired_in_use(&existing, Some(1), now),
            Some(("tls-v1".into(), "2026-11-23T10:00:00Z".parse().unwrap()))
        );
        assert_eq!(expired_in_use(&existing, None, now), None);
    }
}
