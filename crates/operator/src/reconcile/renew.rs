//! Renewing the leases of dynamic credentials (`dataFrom.dynamic`) while their versions are
//! kept: a renewable lease is renewed when `renewalPercent` of its TTL has passed
//! ([`renew_at`]), by its whole TTL, until the backend's max TTL caps it. A capped lease is
//! recorded as no longer renewable, and lease-aware rotation (`expiry::rotate_at`) then makes
//! the next version the usual lead before it expires.
//!
//! A renewal that fails is retried at once a few times; if it still fails on the newest
//! version, the next version is made now (with a Warning) while the old credential is still
//! valid: never a moment without one. An older version's failed renewal is retried later.
//!
//! The renewed expiry is written to the version's Secret's annotations (metadata; the data
//! of an immutable Secret never changes), which is where the lease is read from.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{SecretSync, labels};
use serde_json::json;
use tracing::{info, warn};

use super::store::ResolvedStore;
use crate::cache::versions::{LeaseMeta, VersionMeta};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::secret_ref;

/// Attempts per renewal before it counts as failed.
const ATTEMPTS: u32 = 3;
/// The pause before the second attempt; doubled before each later one.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// An older version's failed renewal is tried again after this.
const RETRY: Duration = Duration::from_secs(10);

/// What renewing did in one pass.
#[derive(Default)]
pub(super) struct Renewals {
    pub events: Vec<Event>,
    /// The newest version's lease could not be renewed: make the next version now.
    pub newest_failed: bool,
    /// When the next renewal is due.
    pub wait: Option<Duration>,
}

/// When `lease` is renewed: once `percent` of its TTL has passed, counted back from its
/// expiry. `None` for a lease that cannot be renewed (or can no more).
pub fn renew_at(lease: &LeaseMeta, percent: u8) -> Option<jiff::Timestamp> {
    if !lease.renewable || lease.duration.is_zero() {
        return None;
    }
    let left = lease.duration * u32::from(100 - percent.clamp(1, 90)) / 100;
    let left = jiff::SignedDuration::try_from(left).ok()?;
    lease.expires_at.checked_sub(left).ok()
}

/// The lease after a renewal asked at `asked` answered `renewed` with `duration`: a lease
/// renewed for less than its TTL has reached its max TTL and is renewed no more.
pub fn renewed(
    lease: &LeaseMeta,
    asked: jiff::Timestamp,
    duration: Duration,
    again: bool,
) -> LeaseMeta {
    LeaseMeta {
        id: lease.id.clone(),
        expires_at: jiff::SignedDuration::try_from(duration)
            .ok()
            .and_then(|d| asked.checked_add(d).ok())
            .unwrap_or(lease.expires_at),
        duration: lease.duration,
        renewable: again && duration >= lease.duration,
    }
}

/// Renews every due lease of the versions in `existing` (updated in place).
pub(super) async fn renew(
    sync: &SecretSync,
    ctx: &Context,
    existing: &mut BTreeMap<i64, VersionMeta>,
    now: jiff::Timestamp,
) -> Result<Renewals> {
    let mut done = Renewals::default();
    let Some(dynamic) = sync.spec.dynamic().filter(|d| !d.is_static_role()) else {
        return Ok(done);
    };
    let percent = dynamic.renewal_percent();
    let newest = existing.keys().next_back().copied();
    let due: Vec<(i64, LeaseMeta)> = existing
        .values()
        .filter(|meta| !meta.disowned && !sync.spec.is_revoked(meta.version))
        .filter_map(|meta| {
            let lease = meta.lease.as_deref()?;
            let at = renew_at(lease, percent)?;
            if now < at {
                let wait = super::expiry::until(at, now);
                done.wait = Some(done.wait.map_or(wait, |w| w.min(wait)));
                return None;
            }
            Some((meta.version, lease.clone()))
        })
        .collect();
    if due.is_empty() {
        return Ok(done);
    }
    let store = super::store::resolve(sync, ctx).await?;
    for (version, lease) in due {
        let Some(meta) = existing.get(&version).cloned() else {
            continue;
        };
        match renew_one(&store, ctx, &lease).await {
            Ok(lease) => {
                write_lease(sync, ctx, &meta.secret_name, &lease).await?;
                info!(secret = %meta.secret_name, expires_at = %lease.expires_at,
                      renewable = lease.renewable, "lease renewed");
                if let Some(at) = renew_at(&lease, percent) {
                    let wait = super::expiry::until(at, jiff::Timestamp::now());
                    done.wait = Some(done.wait.map_or(wait, |w| w.min(wait)));
                }
                if let Some(meta) = existing.get_mut(&version) {
                    meta.lease = Some(Box::new(lease));
                }
            }
            Err(error) => {
                let is_newest = Some(version) == newest;
                let then = if is_newest {
                    "the next version is made now, while this one is still valid"
                } else {
                    "retrying in 10s"
                };
                let message = format!(
                    "renewing the lease of {} failed ({error}); {then}",
                    meta.secret_name
                );
                warn!(secret = %meta.secret_name, error = %error, "lease renewal failed");
                done.events.push(Event {
                    type_: EventType::Warning,
                    reason: event::LEASE_RENEW_FAILED.into(),
                    note: Some(crate::conditions::truncate(message, 1024)),
                    action: "RenewLease".into(),
                    secondary: Some(secret_ref(sync, &meta.secret_name)),
                });
                if is_newest {
                    done.newest_failed = true;
                } else {
                    done.wait = Some(done.wait.map_or(RETRY, |w| w.min(RETRY)));
                }
            }
        }
    }
    Ok(done)
}

/// One lease renewed by its TTL, tried [`ATTEMPTS`] times.
async fn renew_one(store: &ResolvedStore, ctx: &Context, lease: &LeaseMeta) -> Result<LeaseMeta> {
    let connected = &store.connected;
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        if let Some(limiter) = &connected.limiter {
            limiter.acquire().await;
        }
        let asked = jiff::Timestamp::now();
        let answer = connected
            .provider
            .renew_lease(&lease.id, lease.duration)
            .await;
        ctx.metrics
            .backend_request(connected.provider.name(), answer.is_ok());
        match answer {
            Ok(answer) => return Ok(renewed(lease, asked, answer.duration, answer.renewable)),
            Err(source) if attempt >= ATTEMPTS => {
                return Err(Error::Provider {
                    store: store.name.clone(),
                    source,
                });
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

/// Records the renewed lease on the version's Secret (metadata only).
async fn write_lease(
    sync: &SecretSync,
    ctx: &Context,
    name: &str,
    lease: &LeaseMeta,
) -> Result<()> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sync.namespace().unwrap_or_default());
    let params = PatchParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let annotations: serde_json::Map<String, serde_json::Value> = lease
        .annotations()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let patch = json!({"metadata": {"annotations": annotations}});
    let patched = ctx
        .bounded(api.patch_metadata(name, &params, &Patch::Merge(&patch)))
        .await??;
    ctx.index.apply(&patched);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires: &str, secs: u64, renewable: bool) -> LeaseMeta {
        LeaseMeta {
            id: "database/creds/app/x".into(),
            expires_at: expires.parse().unwrap(),
            duration: Duration::from_secs(secs),
            renewable,
        }
    }

    #[test]
    fn a_lease_is_renewed_once_its_share_of_the_ttl_has_passed() {
        let ten = lease("2026-12-07T10:00:10Z", 10, true);
        // 67 %: 3.3 s before the expiry
        assert_eq!(
            renew_at(&ten, 67),
            Some("2026-12-07T10:00:06.7Z".parse().unwrap())
        );
        assert_eq!(
            renew_at(&ten, 50),
            Some("2026-12-07T10:00:05Z".parse().unwrap())
        );
        // out-of-range shares are clamped, never renewing after the expiry
        assert_eq!(
            renew_at(&ten, 100),
            Some("2026-12-07T10:00:09Z".parse().unwrap())
        );
        assert_eq!(
            renew_at(&lease("2026-12-07T10:00:10Z", 10, false), 67),
            None
        );
    }

    #[test]
    fn a_renewal_capped_by_the_max_ttl_ends_the_renewals() {
        let ten = lease("2026-12-07T10:00:10Z", 10, true);
        let asked: jiff::Timestamp = "2026-12-07T10:00:07Z".parse().unwrap();
        let full = renewed(&ten, asked, Duration::from_secs(10), true);
        assert_eq!(full.expires_at, "2026-12-07T10:00:17Z".parse().unwrap());
        assert!(full.renewable);
        assert_eq!(full.duration, Duration::from_secs(10));
        let capped = renewed(&ten, asked, Duration::from_secs(6), true);
        assert_eq!(capped.expires_at, "2026-12-07T10:00:13Z".parse().unwrap());
        assert!(
            !capped.renewable,
            "capped at the max TTL: rotate, not renew"
        );
        assert!(!renewed(&ten, asked, Duration::from_secs(10), false).renewable);
    }
}
