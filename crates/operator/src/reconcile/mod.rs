//! The SecretSync reconciler: resolve store → fetch → build content (pure) → write a new
//! version when needed → status. Each step is small; the decisions live in pure functions.

mod fetch;
mod prune;
mod targets;
mod versions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, PartialObjectMetaExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use secretsync_api::reason::{condition, event};
use secretsync_api::validate::{check_spec_version, validate_spec};
use secretsync_api::{
    DeletionPolicy, Reason, RevokePolicy, RolloutStatus, SecretSync, SecretSyncStatus, TargetState,
    TargetStatus, WorkloadKind, labels, naming::versioned_name,
};
use secretsync_providers::{RemoteValue, SecretData, extract};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::context::{Context, ResolvedStore};
use crate::desired::{Content, build_content, version_secret};
use crate::error::{Error, Result, backoff_delay};
use crate::index::VersionMeta;
use crate::metrics::Metrics;
use crate::rollout::{Progress, rewrite_patch, rollout_progress};
use crate::status::{now, set_condition, version_list};
use crate::workloads::{patch_workload, references};

use fetch::fetch_all;
use prune::prune;
use targets::{RolloutOutcome, RolloutState, roll_out};
use versions::{cleanup, create_version};

/// Entry point for the controller: the finalizer wraps apply and cleanup. An object that
/// does not deserialize is reported in its status and otherwise left alone.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<SecretSync>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let sync = match &guard.0 {
        Ok(sync) => Arc::new(sync.clone()),
        Err(invalid) => {
            return report_malformed(invalid, &ctx).await;
        }
    };
    let namespace = sync.namespace().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, labels::FINALIZER, sync, |event| async {
        match event {
            FinalizerEvent::Apply(sync) => apply(sync, &ctx).await,
            FinalizerEvent::Cleanup(sync) => cleanup(sync, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Per-object capped exponential backoff; specs that cannot succeed wait for an edit.
pub fn error_policy(
    sync: Arc<DeserializeGuard<SecretSync>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let attempt = ctx.record_failure(&sync.meta().uid.clone().unwrap_or_default());
    match backoff_delay(error.retry(), attempt) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

/// A SecretSync the operator cannot read (its spec does not fit the types, as after a CRD
/// downgrade): say so in its status, and if it is being deleted, let it go — its Secrets are
/// still owned by it, so the garbage collector removes them.
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action> {
    let meta = &invalid.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(
        ctx.client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    warn!(sync = %name, error = %invalid.error, "SecretSync does not match the API");
    if meta.deletion_timestamp.is_some() {
        let remaining: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| f.as_str() != labels::FINALIZER)
            .collect();
        let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": meta.resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        return Ok(Action::await_change());
    }
    let mut conditions = Vec::new();
    let message = format!(
        "the object does not match secretsync.io/v1alpha1 as this operator understands it: {}; \
         fix the spec, or run an operator version that matches the installed CRD",
        invalid.error
    );
    for type_ in [condition::READY, condition::SYNCED] {
        set_condition(
            &mut conditions,
            type_,
            false,
            Reason::InvalidSpec,
            message.clone(),
            meta.generation,
        );
    }
    let patch = json!({
        "apiVersion": SecretSync::api_version(&()),
        "kind": SecretSync::kind(&()),
        "status": {"conditions": conditions},
    });
    api.patch_status(
        &name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(Action::await_change())
}

/// What a successful pass decided.
struct Done {
    status: SecretSyncStatus,
    requeue: Option<Duration>,
    events: Vec<Event>,
}

async fn apply(sync: Arc<SecretSync>, ctx: &Context) -> Result<Action> {
    let previous = ctx
        .written_status(&sync)
        .unwrap_or_else(|| sync.status.clone().unwrap_or_default());
    match sync_versions(&sync, ctx, &previous).await {
        Ok(done) => {
            ctx.record_success(&sync.uid().unwrap_or_default());
            write_status(&sync, ctx, &previous, &done.status).await?;
            for ev in &done.events {
                publish(ctx, &sync, ev).await;
            }
            Ok(done
                .requeue
                .map(Action::requeue)
                .unwrap_or_else(Action::await_change))
        }
        Err(error) => {
            // status.observedGeneration stays: the spec was not handled, so the retry must
            // fetch again. The conditions say which generation failed.
            let mut status = previous.clone();
            let generation = sync.metadata.generation;
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
            warn!(reason = %error.reason(), error = %message, "sync failed");
            // Status and event only when something changed: a retry of the same failure
            // writes nothing.
            if write_status(&sync, ctx, &previous, &status).await? {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: event::SYNC_FAILED.into(),
                    note: Some(crate::status::truncate(
                        format!("{}: {message}", error.reason()),
                        1024,
                    )),
                    // The condition reason as the action: kube's Recorder folds events of
                    // one (reason, action) into a series, and a different failure must
                    // not be folded into the first one's note.
                    action: error.reason().as_str().into(),
                    secondary: None,
                };
                publish(ctx, &sync, &ev).await;
            }
            Err(error)
        }
    }
}

async fn sync_versions(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
) -> Result<Done> {
    let uid = sync.uid().unwrap_or_default();
    let name = sync.name_any();
    let spec = &sync.spec;
    validate_spec(spec, &name).map_err(Error::InvalidSpec)?;
    let base = spec.target_name(&name).to_owned();
    check_target_conflict(sync, ctx, &base)?;

    let mut existing = ctx.index.versions(&uid);
    let newest = existing.values().next_back().cloned();
    // The highest number ever used: Secrets, status (tombstones included) and our own
    // recent writes. A number is never reused.
    let highest_used = [
        newest.as_ref().map(|m| m.version),
        previous.current_version,
        previous.versions.iter().map(|v| v.version).max(),
        ctx.written.get(&uid),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);

    if let Some(newest) = &newest {
        check_spec_version(spec.spec_version(), newest.spec_version)
            .map_err(|e| Error::InvalidSpec(vec![e]))?;
    }
    if let Some(pin) = spec.pin_version {
        if spec.is_revoked(pin) {
            return Err(Error::PinnedVersionUnavailable {
                version: pin,
                why: "it is revoked",
            });
        }
        if !existing.contains_key(&pin) {
            return Err(Error::PinnedVersionUnavailable {
                version: pin,
                why: "its Secret does not exist (never made, or deleted)",
            });
        }
    }

    // A revoked newest version is replaced first (guarantee 5), like a rotation.
    let rotate = newest
        .as_ref()
        .is_none_or(|n| spec.spec_version() > n.spec_version || spec.is_revoked(n.version));
    let spec_changed = sync.metadata.generation != previous.observed_generation;
    let refresh_due = match (&previous.last_refresh_time, spec.refresh_interval()) {
        (None, _) => true,
        (Some(last), Some(interval)) => due_at(&uid, last, interval) <= jiff::Timestamp::now(),
        (Some(_), None) => false,
    };

    // A store edit (new credentials, or the fake backend's values) means a fetch now rather
    // than at the next refresh. The generation fetched through is kept in the status, so a
    // restart neither misses an edit nor re-reads for nothing.
    let store_generation = ctx.store_generation(sync);
    let store_changed = matches!(
        (previous.store_generation, store_generation),
        (Some(seen), Some(now)) if seen != now
    );

    let mut status = previous.clone();
    let mut events = Vec::new();
    if rotate || spec_changed || refresh_due || store_changed {
        let store = ctx.resolve_store(sync).await?;
        let (fetched, sources) = fetch_all(&store, sync, &ctx.metrics).await?;
        let content = build_content(sync, fetched, sources)?;
        let changed = newest
            .as_ref()
            .is_none_or(|n| n.content_hash.as_deref() != Some(content.hash.as_str()));
        if rotate || changed {
            let made = create_version(sync, ctx, &base, highest_used + 1, &content).await?;
            info!(secret = %made.secret_name, version = made.version, rotate, "version created");
            events.push(Event {
                type_: EventType::Normal,
                reason: event::VERSION_CREATED.into(),
                note: Some(format!(
                    "created {} from {} {:?}{}",
                    made.secret_name,
                    store.kind.as_str(),
                    store.name,
                    match &newest {
                        Some(n) if spec.is_revoked(n.version) => {
                            format!(" (replaces revoked {})", n.secret_name)
                        }
                        Some(n) if spec.spec_version() > n.spec_version => {
                            " (rotation requested by spec.version)".to_owned()
                        }
                        _ => String::new(),
                    }
                )),
                action: "CreateVersion".into(),
                secondary: Some(secret_ref(sync, &made.secret_name)),
            });
            existing.insert(made.version, made);
        } else {
            debug!("backend content unchanged");
        }
        status.last_refresh_time = Some(now());
        status.store_generation = store_generation;
    }

    let current = existing.keys().next_back().copied();
    let active = spec.pin_version.or(current);
    let active_name = active
        .and_then(|v| existing.get(&v).map(|m| m.secret_name.clone()))
        .unwrap_or_default();
    let generation = sync.metadata.generation;

    // Roll the targets onto the active version, then let go of what nobody needs.
    let rollout = match active {
        Some(active) => {
            roll_out(
                sync,
                ctx,
                &base,
                active,
                &active_name,
                previous.rollout.as_ref(),
            )
            .await?
        }
        None => RolloutOutcome::default(),
    };
    events.extend(rollout.events);
    let pruned = prune(sync, ctx, &base, &mut existing, active, &rollout.state).await?;
    events.extend(pruned.events);

    status.observed_generation = generation;
    status.current_version = current;
    status.active_version = active;
    status.active_secret_name = Some(active_name.clone()).filter(|n| !n.is_empty());
    status.versions = version_list(&existing, &previous.versions, active, spec.revoked());
    status.rollout = rollout.status;
    set_condition(
        &mut status.conditions,
        condition::SYNCED,
        true,
        Reason::Synced,
        format!("{active_name} is up to date with {}", spec.store_ref.name),
        generation,
    );
    let (ready, ready_reason, ready_message) = match &rollout.state {
        RolloutState::Failed(why) => (
            false,
            Reason::RolloutFailed,
            format!("{active_name} active; {why}"),
        ),
        RolloutState::NoTargets => (true, Reason::Synced, format!("{active_name} active")),
        RolloutState::Progressing(summary) | RolloutState::Complete(summary) => (
            true,
            Reason::Synced,
            format!("{active_name} active; {summary}"),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ready,
        ready_reason,
        ready_message,
        generation,
    );
    match &rollout.state {
        RolloutState::NoTargets => status
            .conditions
            .retain(|c| c.type_ != condition::ROLLED_OUT),
        RolloutState::Complete(summary) => set_condition(
            &mut status.conditions,
            condition::ROLLED_OUT,
            true,
            Reason::RolloutComplete,
            summary.clone(),
            generation,
        ),
        RolloutState::Progressing(summary) => set_condition(
            &mut status.conditions,
            condition::ROLLED_OUT,
            false,
            Reason::RolloutProgressing,
            summary.clone(),
            generation,
        ),
        RolloutState::Failed(why) => set_condition(
            &mut status.conditions,
            condition::ROLLED_OUT,
            false,
            Reason::RolloutFailed,
            why.clone(),
            generation,
        ),
    }

    let refresh = match (&status.last_refresh_time, spec.refresh_interval()) {
        (Some(last), Some(interval)) => {
            let wait = due_at(&uid, last, interval).duration_since(jiff::Timestamp::now());
            Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
        }
        _ => None,
    };
    let requeue = [refresh, rollout.requeue, pruned.requeue]
        .into_iter()
        .flatten()
        .min();
    Ok(Done {
        status,
        requeue,
        events,
    })
}

/// When the next refresh is due: `last + interval`, ±10% jitter. The jitter is derived from
/// the object and the last refresh, not drawn at random, so a restarted operator computes
/// the same due time and makes no early backend reads.
fn due_at(
    uid: &str,
    last: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    interval: Duration,
) -> jiff::Timestamp {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{uid}/{}", last.0.as_second()));
    let unit = f64::from(u16::from_le_bytes([digest[0], digest[1]])) / f64::from(u16::MAX);
    let factor = 0.9 + 0.2 * unit;
    let jittered = interval.mul_f64(factor);
    let span = jiff::SignedDuration::try_from(jittered).unwrap_or(jiff::SignedDuration::MAX);
    last.0.checked_add(span).unwrap_or(jiff::Timestamp::MAX)
}

/// Two SecretSyncs claiming one target name in a namespace: the older one keeps it.
fn check_target_conflict(sync: &SecretSync, ctx: &Context, base: &str) -> Result<()> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    if let Some(secret) = ctx.index.other_owner_of_base(&namespace, base, &uid) {
        return Err(Error::TargetConflict(format!(
            "Secret {secret} belongs to another SecretSync, so target name {base:?} is taken; choose another spec.target.name"
        )));
    }
    let ours = (sync.creation_timestamp(), sync.name_any());
    // A scan of the cache without cloning anything; cheap next to a reconcile's API calls.
    let older = ctx.syncs.find(|guard| {
        guard.0.as_ref().is_ok_and(|other| {
            other.metadata.namespace.as_deref() == Some(namespace.as_str())
                && other.metadata.uid.as_deref() != Some(uid.as_str())
                && other.metadata.deletion_timestamp.is_none()
                && other
                    .spec
                    .target_name(other.metadata.name.as_deref().unwrap_or_default())
                    == base
                && (other.creation_timestamp(), other.name_any()) < ours
        })
    });
    match older {
        Some(other) => Err(Error::TargetConflict(format!(
            "SecretSync {:?} already claims target name {base:?}; choose another spec.target.name",
            other.name_any()
        ))),
        None => Ok(()),
    }
}

/// Writes status by server-side apply when it differs from what the object has; returns
/// whether it wrote.
async fn write_status(
    sync: &SecretSync,
    ctx: &Context,
    previous: &SecretSyncStatus,
    status: &SecretSyncStatus,
) -> Result<bool> {
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
    with_timeout(
        ctx,
        api.patch_status(&sync.name_any(), &params, &Patch::Apply(patch)),
    )
    .await??;
    ctx.metrics.status_written();
    ctx.remember_status(sync, status.clone());
    Ok(true)
}

/// The Secret of a version, as an event's related object: events about different versions
/// stay separate instead of folding into one series with the first version's note.
fn secret_ref(sync: &SecretSync, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(name.to_owned()),
        namespace: sync.namespace(),
        ..Default::default()
    }
}

async fn publish(ctx: &Context, sync: &SecretSync, ev: &Event) {
    ctx.metrics.event_published(&ev.reason);
    if let Err(e) = ctx.recorder.publish(ev, &sync.object_ref(&())).await {
        warn!(reason = %ev.reason, error = %e, "could not publish event");
    }
}

/// Bounds an API write; a timed-out write is retried like any transient API error.
async fn with_timeout<T>(
    ctx: &Context,
    fut: impl Future<Output = kube::Result<T>>,
) -> Result<kube::Result<T>> {
    tokio::time::timeout(ctx.config.write_timeout, fut)
        .await
        .map_err(|_| {
            ctx.metrics.api_write_timed_out();
            Error::WriteTimeout(ctx.config.write_timeout)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn due_time_is_jittered_within_ten_percent_and_stable() {
        let last = Time("2026-11-23T10:00:00Z".parse().unwrap());
        let hour = Duration::from_secs(3600);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let uid = format!("uid-{i}");
            let due = due_at(&uid, &last, hour);
            let offset = due.duration_since(last.0).as_secs();
            assert!((3240..=3960).contains(&offset), "{offset}");
            assert_eq!(due, due_at(&uid, &last, hour), "stable across calls");
            seen.insert(offset / 60);
        }
        assert!(seen.len() > 5, "jitter spreads due times: {seen:?}");
    }
}
