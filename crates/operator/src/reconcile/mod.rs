//! The SecretSync reconciler, one file per step of its pipeline:
//!
//! | step | file | pure decision | I/O |
//! |---|---|---|---|
//! | claim the target name | `claim.rs` | [`claim::older_claimant`] | — (caches) |
//! | which versions there are | `history.rs`, `adopt.rs` | [`history::cross_check`] | adopting retained Secrets |
//! | re-key hashes made with another key | `rekey.rs` | [`rekey::stale`], [`rekey::rehash`] | Secret get, metadata patch |
//! | resolve the store | `store.rs` | [`store::admits`] | provider connect |
//! | fetch | `fetch.rs` | [`fetch::plan`], [`fetch::assemble`] | backend reads |
//! | build content | `content.rs` | [`content::build`] (all of it) | — |
//! | decode values | `decode.rs` | [`decode::decode`] (all of it) | — |
//! | write a version | `version.rs` | [`version::plan_refresh`], [`version::next_number`] | Secret create |
//! | when a leased version must be replaced | `expiry.rs` | [`expiry::rotate_at`], [`expiry::expired_in_use`] | lease revoke (for prune and cleanup) |
//! | keep leases alive | `renew.rs` | [`renew::renew_at`], [`renew::renewed`] | lease renew, Secret metadata patch |
//! | roll out | the `rollout/` wing | `rollout::plan`, `rollout::decide` | workload patches |
//! | prune | `prune.rs` | [`prune::candidates`], [`prune::decide`] | reference scan, Secret deletes |
//! | status | `status.rs` | [`status::synced`], [`status::failed`] | status apply, events |
//!
//! Deletion (`cleanup.rs`) and objects that do not deserialize (`malformed.rs`) are handled
//! beside the pipeline.

mod adopt;
mod claim;
mod cleanup;
pub mod content;
mod decode;
mod expiry;
mod fetch;
mod history;
mod malformed;
mod orphans;
mod prune;
mod rekey;
mod renew;
mod status;
mod store;
mod version;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use secretsync_api::validate::validate_spec;
use secretsync_api::{Reason, SecretSync, SecretSyncStatus, labels};
use tracing::{debug, warn};

use crate::cache::versions::VersionMeta;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::rollout;

pub use orphans::sweep as sweep_orphan_leases;

/// Entry point for the controller: the finalizer wraps apply and cleanup when deletion needs
/// work of ours ([`cleanup::needs_finalizer`]). An object that does not deserialize is
/// reported in its status and otherwise left alone.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<SecretSync>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    // Caches feed the decisions: wait until the first list of each has arrived.
    ctx.caches_ready().await;
    let sync = match &guard.0 {
        Ok(sync) => Arc::new(sync.clone()),
        Err(invalid) => return malformed::report(invalid, &ctx).await,
    };
    let deleting = sync.metadata.deletion_timestamp.is_some();
    let carries = sync.finalizers().iter().any(|f| f == labels::FINALIZER);
    if !carries && (deleting || !cleanup::needs_finalizer(&sync)) {
        // Deletion needs nothing the garbage collector does not do: no finalizer, and no
        // write to add one. What this process remembers goes with the watch's delete event.
        return if deleting {
            Ok(Action::await_change())
        } else {
            apply(sync, &ctx).await
        };
    }
    let namespace = sync.namespace().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), &namespace);
    // Adds the finalizer first when missing; an object that already carries it (made by an
    // earlier version, or `Retain` once) is cleaned up through it whatever its policy now.
    // Counted and timed by the caller (`Metrics::measure_reconcile`).
    finalizer(&api, labels::FINALIZER, sync, |event| async {
        match event {
            FinalizerEvent::Apply(sync) => apply(sync, &ctx).await,
            FinalizerEvent::Cleanup(sync) => cleanup::cleanup(sync, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Per-object capped exponential backoff; specs that cannot succeed wait for an edit. The
/// schedule is remembered, so that no other wake-up reads the backend before it.
pub fn error_policy(
    guard: Arc<DeserializeGuard<SecretSync>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let uid = guard.meta().uid.clone().unwrap_or_default();
    if let Error::StoreDown {
        store_uid,
        generation,
        ..
    } = error.inner()
        && ctx.health.down(store_uid, *generation).is_none()
    {
        // The store recovered while this pass failed on its down state (its wake-up came
        // during the pass): again now, not after a backoff.
        ctx.backoff.succeeded(&uid);
        return Action::requeue(Duration::ZERO);
    }
    let store_generation = guard.0.as_ref().ok().and_then(|s| ctx.store_generation(s));
    // Failing on a key (missing, deleted), it reads no less often than its refreshInterval:
    // a fix is picked up as fast as a change would be. Backend-wide failures are woken by
    // the store's recovery instead (`health`).
    let within = guard
        .0
        .as_ref()
        .ok()
        .filter(|_| !crate::backend::health::backend_wide(error.reason()))
        .and_then(|s| s.spec.refresh_interval());
    match ctx.backoff.failed(
        &uid,
        error.retry(),
        guard.meta().generation,
        store_generation,
        within,
    ) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

/// One pass of the pipeline, then the status; a failure is reported in the status with the
/// reason a person can act on, and returned as it was, so its retry class sets the backoff.
async fn apply(sync: Arc<SecretSync>, ctx: &Context) -> Result<Action> {
    let uid = sync.uid().unwrap_or_default();
    let store_generation = ctx.store_generation(&sync);
    if let Some(wait) = ctx
        .backoff
        .hold(&uid, sync.metadata.generation, store_generation)
    {
        // Failing, and woken by something other than a fix (a workload event, a store
        // status write): wait out the backoff instead of reading the backend again.
        return Ok(Action::requeue(wait));
    }
    let previous = ctx
        .memory
        .written_status(&sync)
        .unwrap_or_else(|| sync.status.clone().unwrap_or_default());
    match pipeline(&sync, ctx, &previous, store_generation).await {
        Ok(done) => {
            ctx.backoff.succeeded(&uid);
            status::write(&sync, ctx, &previous, &done.status).await?;
            for ev in &done.events {
                ctx.publish(&sync, ev).await;
            }
            Ok(done
                .requeue
                .map(Action::requeue)
                .unwrap_or_else(Action::await_change))
        }
        Err(error) => {
            let failed = status::failed(&previous, &error, sync.metadata.generation);
            warn!(reason = %error.reason(), error = %error, "sync failed");
            // Status and event only when something changed: a retry of the same failure
            // writes nothing. A failed status write is logged, not returned: the original
            // error's retry class must decide the backoff.
            match status::write(&sync, ctx, &previous, &failed).await {
                Ok(true) => ctx.publish(&sync, &status::failed_event(&error)).await,
                Ok(false) => {}
                Err(write_error) => {
                    warn!(error = %write_error, "could not record the failure in the status")
                }
            }
            Err(error)
        }
    }
}

/// Reads what the spec needs through `store`; for a `pki` or leased `dynamic` source,
/// issues a credential.
async fn read_backend(
    store: &store::ResolvedStore,
    sync: &SecretSync,
    ctx: &Context,
    fresh: bool,
) -> Result<fetch::Fetched> {
    use secretsync_providers::IssueFrom;
    let metrics = &ctx.metrics;
    let read = match (sync.spec.pki(), sync.spec.dynamic()) {
        (Some(pki), _) => fetch::issue(store, IssueFrom::Pki(pki), metrics).await,
        (None, Some(dynamic)) if dynamic.is_static_role() => {
            fetch::read_static(store, dynamic, metrics).await
        }
        (None, Some(dynamic)) => fetch::issue(store, IssueFrom::Dynamic(dynamic), metrics).await,
        (None, None) => fetch::fetch(store, sync, metrics, fresh).await,
    };
    store::report(ctx, store, sync, &read);
    read
}

/// What a successful pass decided.
struct Done {
    status: SecretSyncStatus,
    requeue: Option<Duration>,
    events: Vec<Event>,
}

/// Whether the SecretSync is gone or being deleted, as the API server (not the cache) says.
async fn deleted_meanwhile(sync: &SecretSync, ctx: &Context) -> Result<bool> {
    let api: Api<SecretSync> =
        Api::namespaced(ctx.client.clone(), &sync.namespace().unwrap_or_default());
    let live = ctx
        .bounded(api.get_metadata_opt(&sync.name_any()))
        .await??;
    Ok(live.is_none_or(|live| {
        live.metadata.uid != sync.metadata.uid || live.metadata.deletion_timestamp.is_some()
    }))
}

/// The versions a pass starts from, once the checks before any read have passed.
struct Known {
    /// `target.name`: the versions are `<base>-v<N>`.
    base: String,
    existing: BTreeMap<i64, VersionMeta>,
    /// The newest version's Secret, deleted by someone else.
    lost: Option<secretsync_api::VersionStatus>,
    /// Every base name the versions were made under (`target.name` may have changed).
    bases: Vec<String>,
    /// The highest number ever used: the next version is above it.
    highest_used: i64,
    events: Vec<Event>,
    /// The newest version's lease could not be renewed: the next version is due now.
    renewal_failed: bool,
    /// When the next lease renewal is due.
    renew_wait: Option<Duration>,
}

async fn pipeline(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
    store_generation: Option<i64>,
) -> Result<Done> {
    let Some(mut known) = versions(sync, ctx, previous).await? else {
        return Ok(Done {
            status: previous.clone(),
            requeue: None,
            events: Vec::new(),
        });
    };
    let now = jiff::Timestamp::now();
    let renewals = renew::renew(sync, ctx, &mut known.existing, now).await?;
    known.events.extend(renewals.events);
    known.renewal_failed = renewals.newest_failed;
    known.renew_wait = renewals.wait;
    let refreshed = refresh(sync, ctx, previous, store_generation, now, &mut known).await?;
    roll_out_and_prune(sync, ctx, previous, refreshed, known).await
}

/// Steps 0 and 1: the spec, the target name and the store admitted, and the versions there
/// are (adopted, cross-checked, re-keyed). `None`: the SecretSync went meanwhile.
async fn versions(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
) -> Result<Option<Known>> {
    let uid = sync.uid().unwrap_or_default();
    let name = sync.name_any();
    let spec = &sync.spec;
    validate_spec(spec, &name).map_err(Error::InvalidSpec)?;
    let base = spec.target_name(&name).to_owned();
    claim::check(sync, ctx, &base)?;
    store::still_allowed(sync, ctx)?;

    let namespace = sync.namespace().unwrap_or_default();
    let mut events = Vec::new();
    let mut owned = ctx.index.versions(&uid);
    // A new object may find what an earlier one of its name let go with `Retain`.
    if owned.is_empty()
        && previous.versions.is_empty()
        && let Some(adopted) = adopt::retained(sync, ctx).await?
    {
        events.push(adopted);
        owned = ctx.index.versions(&uid);
    }
    let history::Versions {
        mut existing,
        lost,
        mismatches,
        bases,
    } = history::cross_check(spec, &namespace, &base, owned, previous, &ctx.index);
    // The newest version is gone. So is the SecretSync, perhaps: the garbage collector
    // deletes its versions once it is deleted, and the cache may not know yet (a real API
    // server's watches lag that much). Replacing the version then would mint a Secret for
    // an object that no longer exists and roll its workloads onto it: ask the server.
    if lost.is_some() && deleted_meanwhile(sync, ctx).await? {
        debug!(sync = %name, "deleted meanwhile: its lost version is not replaced");
        return Ok(None);
    }
    let kept = ctx.index.labelled_orphans(&namespace, &name);
    let bases = history::with_bases_of(bases, &kept);
    events.extend(report_mismatches(sync, ctx, &uid, &mismatches));
    // Before anything compares a hash: one made with another key says nothing.
    rekey::rekey(sync, ctx, &mut existing).await?;
    let newest = existing.values().next_back().cloned();
    version::check_spec(spec, newest.as_ref(), &existing)?;
    let highest_used = version::highest_used(
        newest.as_ref(),
        previous,
        ctx.memory.written.get(&uid),
        kept.iter().map(|m| m.version).max(),
    );
    Ok(Some(Known {
        base,
        existing,
        lost,
        bases,
        highest_used,
        events,
        renewal_failed: false,
        renew_wait: None,
    }))
}

/// Steps 2 to 4 when a read is due: fetch, build the content and write it as a new version
/// when it is one. Returns the store generation read through, if a read happened.
async fn refresh(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
    store_generation: Option<i64>,
    now: jiff::Timestamp,
    known: &mut Known,
) -> Result<Option<Option<i64>>> {
    let (uid, spec) = (sync.uid().unwrap_or_default(), &sync.spec);
    let newest = known.existing.values().next_back().cloned();
    let grid = version::Grid::of(sync);
    let lease_due = known.renewal_failed
        || expiry::rotate_at(spec, newest.as_ref(), previous.rollout.as_ref())
            .is_some_and(|at| now >= at);
    let rotated = ctx.memory.rotations.get(&uid).is_some_and(|at| now >= at);
    // The newest version was deleted by someone else: the next one is made from a fresh
    // read. Rolling the workloads back to an older one would serve an older credential.
    let lost_newest = known.lost.as_ref().map(|_| version::Refresh {
        rotate: true,
        ahead_of_lease: false,
        fresh: true,
    });
    // A change event asked for this read: the version it makes is timed from the event.
    let asked_since_last_read = ctx.memory.asked.get(&uid).filter(|asked| {
        ctx.memory
            .refreshes
            .get(&uid)
            .is_none_or(|read| *asked >= read)
    });
    let refresh = lost_newest.or_else(|| {
        let last_read = ctx.memory.refreshes.get(&uid);
        version::plan_refresh(&version::RefreshInput {
            grid,
            last_read,
            spec,
            generation: sync.metadata.generation,
            previous,
            newest: newest.as_ref(),
            store_generation,
            now,
            lease_due,
            rotated,
            asked: asked_since_last_read.is_some(),
        })
    });

    let mut refreshed = None;
    if let Some(why) = refresh {
        let mut store = store::resolve(sync, ctx).await?;
        let fetched = match read_backend(&store, sync, ctx, why.fresh).await {
            // Refused: if the store's credential Secrets were replaced since it connected,
            // connect with the new ones and read once more.
            Err(e)
                if e.reason() == Reason::ProviderAuthFailed
                    && ctx
                        .providers
                        .drop_if_credentials_changed(&ctx.client, &store.connected)
                        .await =>
            {
                store = store::resolve(sync, ctx).await?;
                read_backend(&store, sync, ctx, why.fresh).await?
            }
            fetched => fetched?,
        };
        match fetched.rotates_at {
            Some(at) => ctx.memory.rotations.update(&uid, |_| at),
            None => ctx.memory.rotations.forget(&uid),
        }
        let content = content::build(sync, fetched, &ctx.hash_key)?;
        if let Some(number) =
            version::next_number(newest.as_ref(), &content, why.rotate, known.highest_used)
        {
            let made = version::write(sync, ctx, &known.base, number, &content).await?;
            if let Some(asked) = asked_since_last_read {
                let waited = jiff::Timestamp::now().duration_since(asked);
                ctx.metrics.event_to_secret(waited.as_secs_f64().max(0.0));
            }
            known.events.push(version::created_event(
                sync,
                &store,
                &made,
                newest.as_ref(),
                why,
            ));
            if let Some(lost) = &known.lost {
                known.events.push(version::lost_event(sync, lost, &made));
            }
            known.existing.insert(made.version, made);
        }
        refreshed = Some(store_generation);
        ctx.memory.refreshes.update(&uid, |_| now);
    } else {
        // First sight after a restart: the current slot counts as done.
        ctx.memory
            .refreshes
            .update(&uid, |seen| seen.unwrap_or(now));
    }
    Ok(refreshed)
}

/// Steps 5 to 7: roll the targets onto the active version, let go of what may go, and the
/// status with the timers of the next pass.
async fn roll_out_and_prune(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
    refreshed: Option<Option<i64>>,
    known: Known,
) -> Result<Done> {
    let spec = &sync.spec;
    let Known {
        mut existing,
        bases,
        mut events,
        renew_wait,
        ..
    } = known;
    let grid = version::Grid::of(sync);
    let current = existing.keys().next_back().copied();
    let wanted = spec.pin_version.or(current);
    let rollout = match wanted {
        Some(wanted) => {
            rollout::roll_out(
                sync,
                &ctx.rollout_handles(),
                &bases,
                &existing,
                wanted,
                previous.rollout.as_ref(),
            )
            .await?
        }
        None => rollout::Outcome::default(),
    };
    events.extend(rollout.events);
    // After a rolled-back failure, or while waiting for a rollout window, the targets point
    // at an earlier version: that is active. A failed version is kept for inspection.
    let active = rollout
        .targets_on
        .filter(|v| existing.contains_key(v))
        .or(wanted);
    let failed = rollout
        .status
        .as_ref()
        .and_then(|s| s.failed.as_ref())
        .map(|f| f.version)
        .filter(|v| Some(*v) == wanted);
    let active_name = active
        .and_then(|v| existing.get(&v).map(|m| m.secret_name.clone()))
        .unwrap_or_default();
    let pruned = prune::prune(
        sync,
        ctx,
        &mut existing,
        prune::Keep { active, failed },
        &rollout.state,
    )
    .await?;
    events.extend(pruned.events);
    let now = jiff::Timestamp::now();
    let expired = expiry::expired_in_use(&existing, active, now);

    let status = status::synced(status::SyncedInput {
        previous,
        spec,
        generation: sync.metadata.generation,
        existing: &existing,
        active,
        active_name: &active_name,
        rollout_state: &rollout.state,
        rollout_status: rollout.status,
        refreshed,
        lease_expired: expired.as_ref(),
        notes: &pruned.notes,
        revoked_in_use: rollout.revoked_in_use.as_deref(),
    });
    events.extend(status::unknown_revoked_event(previous, &status));
    let refresh_wait = grid.map(|g| g.until_next(now));
    // Timers, not polling: the lease-aware deadline of the newest version, and the expiry
    // of the version in use (Ready turns False then).
    let lease_wait =
        expiry::rotate_at(spec, existing.values().next_back(), status.rollout.as_ref())
            .map(|at| expiry::until(at, now));
    let expiry_wait = active
        .and_then(|v| existing.get(&v)?.lease.as_ref())
        .filter(|l| l.expires_at > now)
        .map(|l| expiry::until(l.expires_at, now));
    // A static role is read again just after the backend rotates it.
    let rotation_wait = ctx
        .memory
        .rotations
        .get(&sync.uid().unwrap_or_default())
        .map(|at| expiry::until(at, now));
    let requeue = [
        refresh_wait,
        rollout.requeue,
        pruned.requeue,
        lease_wait,
        expiry_wait,
        renew_wait,
        rotation_wait,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(Done {
        status,
        requeue,
        events,
    })
}

/// A Warning for each Secret whose labels or annotations disagree with its name or the
/// status history, once per set of disagreements (not at every pass).
fn report_mismatches(
    sync: &SecretSync,
    ctx: &Context,
    uid: &str,
    mismatches: &[(String, String)],
) -> Vec<Event> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    mismatches.hash(&mut hasher);
    let fingerprint = hasher.finish();
    if mismatches.is_empty() || ctx.memory.reported_mismatches.get(uid) == Some(fingerprint) {
        return Vec::new();
    }
    ctx.memory.reported_mismatches.update(uid, |_| fingerprint);
    mismatches
        .iter()
        .map(|(secret, what)| Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: secretsync_api::reason::event::VERSION_METADATA_MISMATCH.into(),
            note: Some(crate::conditions::truncate(what.clone(), 1024)),
            action: "Verify".into(),
            secondary: Some(crate::events::secret_ref(sync, secret)),
        })
        .collect()
}
