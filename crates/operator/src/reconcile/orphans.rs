//! Leases no version holds. A process stopped (SIGKILL, node loss) between issuing a
//! credential and writing its Secret, or a Secret the API server refused, leaves a lease at
//! the backend that nothing records: the credential would live until its TTL. When a
//! process starts reconciling, and every [`EVERY`] after, it lists the leases under the path
//! of each SecretSync that issues (`sys/leases/lookup`) and revokes those that no Secret
//! holds and that were issued either before it started (by an earlier process: this one
//! had issued nothing yet) or more than [`GRACE`] ago (no pass takes that long from issuing
//! to writing the Secret, so none of its own is still on the way).
//!
//! This assumes what `docs/dynamic-secrets.md` asks: a role (path) that issues for
//! secretsync is used by SecretSyncs this operator watches and by nothing else, as another
//! client's leases under it would look orphaned too.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use secretsync_api::{SecretSync, SecretSyncSpec};
use tracing::{info, warn};

use crate::context::Context;
use crate::error::{Error, Result};

/// How often the leases are looked at after the first time.
pub const EVERY: Duration = Duration::from_secs(300);
/// A lease issued longer ago than this and held by no Secret is orphaned.
pub const GRACE: Duration = Duration::from_secs(120);

/// The prefix a SecretSync's leases have at the backend, if it issues.
pub fn lease_prefix(spec: &SecretSyncSpec) -> Option<String> {
    if let Some(pki) = spec.pki() {
        return Some(format!(
            "{}/issue/{}",
            pki.mount(),
            pki.role.trim_matches('/')
        ));
    }
    spec.dynamic()
        .filter(|d| !d.is_static_role())
        .map(|d| d.path().to_owned())
}

/// Revokes orphaned leases (see the module docs) once the caches are filled, then every
/// [`EVERY`], until `stop` resolves.
pub async fn sweep(
    ctx: Arc<Context>,
    syncs: Store<DeserializeGuard<SecretSync>>,
    started: jiff::Timestamp,
    stop: impl Future<Output = ()>,
) {
    let sweeps = async {
        ctx.caches_ready().await;
        loop {
            let grace = jiff::SignedDuration::try_from(GRACE).unwrap_or_default();
            let settled = jiff::Timestamp::now().checked_sub(grace).unwrap_or(started);
            sweep_once(&ctx, &syncs, started.max(settled)).await;
            tokio::time::sleep(EVERY).await;
        }
    };
    futures::pin_mut!(sweeps, stop);
    futures::future::select(sweeps, stop).await;
}

/// Revokes the leases under every issuing SecretSync's path that no Secret holds and that
/// were issued before `cutoff`. Failures are logged and the rest go on (the next sweep
/// tries again).
async fn sweep_once(
    ctx: &Context,
    syncs: &Store<DeserializeGuard<SecretSync>>,
    cutoff: jiff::Timestamp,
) {
    // One SecretSync per (store, prefix): it resolves the store and names the event.
    let mut issuing: BTreeMap<(String, Option<String>, String), Arc<SecretSync>> = BTreeMap::new();
    for guard in syncs.state() {
        let Ok(sync) = &guard.0 else { continue };
        if sync.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(prefix) = lease_prefix(&sync.spec) {
            let store = (
                sync.spec.store_ref.name.clone(),
                sync.namespace()
                    .filter(|_| sync.spec.store_kind() == secretsync_api::StoreKind::SecretStore),
                prefix,
            );
            issuing
                .entry(store)
                .or_insert_with(|| Arc::new(sync.clone()));
        }
    }
    for ((_, _, prefix), sync) in issuing {
        if let Err(error) = sweep_prefix(ctx, &sync, &prefix, cutoff).await {
            warn!(sync = %sync.name_any(), %prefix, %error, "could not look for leases no version holds");
        }
    }
}

async fn sweep_prefix(
    ctx: &Context,
    sync: &SecretSync,
    prefix: &str,
    cutoff: jiff::Timestamp,
) -> Result<()> {
    let store = super::store::resolve(sync, ctx).await?;
    let provider = &store.connected.provider;
    let provider_error = |source| Error::Provider {
        store: store.name.clone(),
        source,
    };
    let listed = provider
        .leases_under(prefix)
        .await
        .map_err(provider_error)?;
    let held = ctx.index.lease_ids();
    let mut revoked = 0;
    for lease in listed.iter().filter(|l| !held.contains(*l)) {
        let issued = provider
            .lease_issue_time(lease)
            .await
            .map_err(provider_error)?;
        let Some(issued) = issued.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
            continue;
        };
        if issued >= cutoff {
            continue;
        }
        provider.revoke_lease(lease).await.map_err(provider_error)?;
        revoked += 1;
    }
    if revoked > 0 {
        info!(sync = %sync.name_any(), %prefix, revoked, "revoked leases no version holds");
        let note = format!(
            "revoked {revoked} lease(s) under {prefix} that no version holds: issued by an \
             operator process that stopped, or whose Secret was refused, before writing it"
        );
        ctx.publish(
            sync,
            &Event {
                type_: EventType::Normal,
                reason: secretsync_api::reason::event::ORPHAN_LEASES_REVOKED.into(),
                note: Some(note),
                action: "RevokeLease".into(),
                secondary: None,
            },
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_looked_for_under_the_path_that_issues_them() {
        let spec = |yaml: &str| -> SecretSyncSpec { serde_yaml::from_str(yaml).unwrap() };
        assert_eq!(
            lease_prefix(&spec(
                "{storeRef: {name: v}, dataFrom: [{dynamic: {path: /database/creds/app/}}]}"
            ))
            .as_deref(),
            Some("database/creds/app")
        );
        assert_eq!(
            lease_prefix(&spec(
                "{storeRef: {name: v}, dataFrom: [{pki: {role: api, commonName: a.example}}]}"
            ))
            .as_deref(),
            Some("pki/issue/api")
        );
        // a static role holds no lease; a key holds none either
        assert_eq!(
            lease_prefix(&spec(
                "{storeRef: {name: v}, dataFrom: [{dynamic: {path: database/static-creds/app}}]}"
            )),
            None
        );
        assert_eq!(
            lease_prefix(&spec(
                "{storeRef: {name: v}, data: [{secretKey: a, remoteRef: {key: k}}]}"
            )),
            None
        );
    }
}
