//! ClusterSecretSyncs: one SecretSync template made into a SecretSync in every selected
//! namespace. A pass over one ClusterSecretSync:
//!
//! | step | file | pure decision | I/O |
//! |---|---|---|---|
//! | which namespaces | here | `ClusterSecretSyncSpec::selects` over the namespace cache | — |
//! | each selected namespace's SecretSync | `desired.rs` | [`desired::desired`], [`desired::up_to_date`], [`desired::owned_by`] | server-side apply (only when it differs) |
//! | each deselected namespace's SecretSync | here | in use? (the same reference scan as pruning) | delete, UID precondition |
//! | status | `summary.rs` | [`summary::state_of`], [`summary::status`] | status apply, only when changed |
//!
//! Its SecretSyncs are then ordinary SecretSyncs, reconciled by the SecretSync controller;
//! their reads of one ClusterSecretStore share the store's connection, grid and cache
//! (`backend/connections.rs`), so N namespaces cost one read per remote key. Deleting the
//! ClusterSecretSync leaves its SecretSyncs to the garbage collector (their controller
//! ownerReference), and each SecretSync's own `deletionPolicy` then applies.
//!
//! Sharding: an operator watching only some namespaces (`--namespace`) makes SecretSyncs
//! only there, and leaves alone a ClusterSecretSync that selects none of them.

pub mod desired;
pub mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Resource, ResourceExt};
use secretsync_api::reason::event;
use secretsync_api::{
    ClusterSecretSync, ClusterSecretSyncStatus, DeletionPolicy, SecretSync, labels,
    validate_cluster_sync,
};
use serde_json::json;
use tracing::{info, warn};

use crate::cache::multiwatch::watch_cluster;
use crate::context::Context;
use crate::error::Result;
use desired::{desired, owned_by, up_to_date};
use summary::{Findings, NamespaceState, state_of};

/// How soon a removal held back by a version in use is looked at again: nothing wakes us
/// when a Pod goes (Pods are not watched), as for pruning.
const HELD_RETRY: Duration = Duration::from_secs(10);
/// A pass at least this often, whatever wakes it.
const RESYNC: Duration = Duration::from_secs(300);

/// What the ClusterSecretSync controller shares: the SecretSync controller's context, its
/// SecretSync cache, and the namespaces this operator watches (all when empty).
pub struct Fanout {
    pub ctx: Arc<Context>,
    pub syncs: Store<DeserializeGuard<SecretSync>>,
    pub watched: Vec<String>,
}

type Guard = Arc<DeserializeGuard<SecretSync>>;

/// What wakes ClusterSecretSyncs, for the SecretSync and namespace watches to hold.
#[derive(Clone)]
pub struct Wake {
    owners: UnboundedSender<ObjectRef<ClusterSecretSync>>,
    all: UnboundedSender<()>,
}

impl Wake {
    /// The ClusterSecretSync `name` owns a SecretSync that changed (its status, say).
    pub fn owner(&self, name: &str) {
        // Closed: the controller stopped, the operator is stopping.
        let _ = self.owners.unbounded_send(ObjectRef::new(name));
    }

    /// A namespace's labels changed: it may now be selected by any of them, or no longer.
    pub fn all(&self) {
        let _ = self.all.unbounded_send(());
    }
}

/// The receiving ends of a [`Wake`].
pub struct Woken {
    owners: UnboundedReceiver<ObjectRef<ClusterSecretSync>>,
    all: UnboundedReceiver<()>,
}

pub fn wake() -> (Wake, Woken) {
    let (owners, owners_rx) = mpsc::unbounded();
    let (all, all_rx) = mpsc::unbounded();
    (
        Wake { owners, all },
        Woken {
            owners: owners_rx,
            all: all_rx,
        },
    )
}

/// The ClusterSecretSync controller: its own watch and reflector, woken through
/// [`Wake`]; runs until `shutdown`.
pub fn run<S>(
    client: &Client,
    fan: Fanout,
    woken: Woken,
    shutdown: S,
) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<ClusterSecretSync>();
    let events =
        reflector::reflector(writer, watch_cluster::<ClusterSecretSync>(client)).applied_objects();
    Controller::for_stream(events, store)
        .reconcile_on(woken.owners)
        .reconcile_all_on(woken.all)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(fan))
        .for_each(|result| async move {
            match result {
                // Logged by error_policy.
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A watch error (the CRD not installed, RBAC from before the kind): retried
                // with backoff; SecretSyncs are not held up by it.
                Err(e) => warn!(error = %e, "ClusterSecretSync controller"),
            }
        })
}

impl Fanout {
    pub fn new(
        ctx: Arc<Context>,
        syncs: Store<DeserializeGuard<SecretSync>>,
        watched: &[String],
    ) -> Self {
        Self {
            ctx,
            syncs,
            watched: watched.to_vec(),
        }
    }

    fn watches(&self, namespace: &str) -> bool {
        self.watched.is_empty() || self.watched.iter().any(|n| n == namespace)
    }

    /// The SecretSyncs named `name`, by namespace, from the cache.
    fn named(&self, name: &str) -> BTreeMap<String, Guard> {
        self.syncs
            .state()
            .into_iter()
            .filter(|g| g.meta().name.as_deref() == Some(name))
            .filter_map(|g| Some((g.meta().namespace.clone()?, g)))
            .collect()
    }
}

pub async fn reconcile(css: Arc<ClusterSecretSync>, fan: Arc<Fanout>) -> Result<Action> {
    let ctx = &fan.ctx;
    ctx.caches_ready().await;
    if css.metadata.deletion_timestamp.is_some() {
        // Its SecretSyncs go with it: the garbage collector follows their ownerReferences.
        return Ok(Action::await_change());
    }
    let name = css.name_any();
    let uid = css.uid().unwrap_or_default();
    let previous = css.status.clone().unwrap_or_default();
    let mut found = Findings::default();
    if let Err(problems) = validate_cluster_sync(&css.spec, &name) {
        found.invalid = Some(problems.clone());
        let status = summary::status(&found, &previous, css.metadata.generation);
        if write_status(&css, ctx, &previous, &status).await? {
            warn!(cluster_sync = %name, ?problems, "invalid ClusterSecretSync");
            let note = format!("nothing is made or changed: {}", problems.join("; "));
            publish(
                ctx,
                &css,
                EventType::Warning,
                event::CLUSTER_SYNC_INVALID,
                note,
                None,
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let selected: Vec<String> = ctx
        .namespaces
        .all()
        .into_iter()
        .filter(|(ns, labels)| fan.watches(ns) && css.spec.selects(ns, labels))
        .map(|(ns, _)| ns)
        .collect();
    let existing = fan.named(&name);
    let deselected: Vec<(String, Guard)> = existing
        .iter()
        .filter(|(ns, g)| owned_by(g.meta(), &uid) && fan.watches(ns) && !selected.contains(*ns))
        .map(|(ns, g)| (ns.clone(), g.clone()))
        .collect();
    if !fan.watched.is_empty() && selected.is_empty() && deselected.is_empty() {
        // Another shard's, or nobody's here: not a word from this one.
        return Ok(Action::requeue(RESYNC));
    }
    for ns in &selected {
        let state = make(&css, &fan, ns, existing.get(ns), &previous).await;
        found.selected.push((ns.clone(), state));
    }
    let mut requeue = RESYNC;
    for (ns, guard) in deselected {
        if guard.meta().deletion_timestamp.is_some() {
            continue;
        }
        if let Some(held) = remove(&css, &fan, &ns, &guard, &previous).await? {
            found.removing.push((ns, held));
            requeue = HELD_RETRY;
        }
    }
    let status = summary::status(&found, &previous, css.metadata.generation);
    write_status(&css, ctx, &previous, &status).await?;
    ctx.backoff.succeeded(&uid);
    Ok(Action::requeue(requeue))
}

/// Makes or updates `css`'s SecretSync in `ns`; returns where the namespace stands. A
/// SecretSync there that is not `css`'s own is never written to.
async fn make(
    css: &ClusterSecretSync,
    fan: &Fanout,
    ns: &str,
    cached: Option<&Guard>,
    previous: &ClusterSecretSyncStatus,
) -> NamespaceState {
    let (ctx, name, uid) = (&fan.ctx, css.name_any(), css.uid().unwrap_or_default());
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), ns);
    let current = match cached {
        Some(guard) => Some(guard.clone()),
        // Not in the cache: ask the server, so that a SecretSync someone made a moment ago
        // is not taken over by an apply.
        None => match ctx.bounded(api.get_opt(&name)).await {
            Ok(Ok(found)) => found.map(|s| Arc::new(DeserializeGuard(Ok(s)))),
            Ok(Err(e)) => return api_failure(e.to_string()),
            Err(e) => return api_failure(e.to_string()),
        },
    };
    if let Some(guard) = &current
        && !owned_by(guard.meta(), &uid)
    {
        let message = format!(
            "SecretSync {ns}/{name} exists and is not this ClusterSecretSync's: it is left \
             untouched (delete it, or rename one of them, to let the ClusterSecretSync make its own)"
        );
        let reported = previous.failures.iter().any(|f| {
            f.namespace == ns && f.reason == secretsync_api::Reason::SecretSyncNotOwned.as_str()
        });
        if !reported {
            let sync_ref = foreign_ref(ns, &name);
            publish(
                ctx,
                css,
                EventType::Warning,
                event::SECRET_SYNC_NOT_OWNED,
                message.clone(),
                Some(sync_ref.clone()),
            )
            .await;
            // Where the namespace's team looks too: on their SecretSync.
            let note = format!(
                "ClusterSecretSync {name} selects this namespace and leaves this SecretSync, which is not its own, untouched"
            );
            ctx.events
                .publish(
                    &Event {
                        type_: EventType::Warning,
                        reason: event::SECRET_SYNC_NOT_OWNED.into(),
                        note: Some(note),
                        action: "FanOut".into(),
                        secondary: Some(css.object_ref(&())),
                    },
                    &sync_ref,
                )
                .await;
        }
        return NamespaceState::Failed {
            reason: secretsync_api::Reason::SecretSyncNotOwned
                .as_str()
                .to_owned(),
            message,
        };
    }
    let ours = current.as_ref().and_then(|g| g.0.as_ref().ok());
    if let Some(sync) = ours
        && up_to_date(css, sync)
    {
        return state_of(sync);
    }
    let mut body = desired(css, ns, ours);
    if let Some(guard) = &current {
        // Exactly the SecretSync decided about: one deleted and made again since is not.
        body["metadata"]["uid"] = json!(guard.meta().uid);
    }
    // Forced only over our own: a first apply that meets someone else's fields fails
    // instead of taking them.
    let mut params = PatchParams::apply(labels::FIELD_MANAGER);
    params.force = current.is_some();
    match ctx
        .bounded(api.patch(&name, &params, &Patch::Apply(body)))
        .await
    {
        Ok(Ok(_)) => {
            if current.is_none() {
                info!(cluster_sync = %name, namespace = ns, "SecretSync made");
                let note = format!("made SecretSync {ns}/{name}");
                publish(
                    ctx,
                    css,
                    EventType::Normal,
                    event::SECRET_SYNC_CREATED,
                    note,
                    Some(foreign_ref(ns, &name)),
                )
                .await;
            }
            NamespaceState::Pending
        }
        Ok(Err(e)) => api_failure(e.to_string()),
        Err(e) => api_failure(e.to_string()),
    }
}

fn api_failure(message: String) -> NamespaceState {
    NamespaceState::Failed {
        reason: secretsync_api::Reason::KubernetesApiError
            .as_str()
            .to_owned(),
        message,
    }
}

fn foreign_ref(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(SecretSync::api_version(&()).into_owned()),
        kind: Some(SecretSync::kind(&()).into_owned()),
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

/// Deletes `css`'s SecretSync from a namespace no longer selected, unless its deletion
/// would delete a version something there still references (`deletionPolicy: Delete`):
/// then returns why it is kept, and it is looked at again soon.
async fn remove(
    css: &ClusterSecretSync,
    fan: &Fanout,
    ns: &str,
    guard: &Guard,
    previous: &ClusterSecretSyncStatus,
) -> Result<Option<String>> {
    let ctx = &fan.ctx;
    let name = css.name_any();
    let sync = guard.0.as_ref().ok();
    if sync.is_none_or(|s| s.spec.deletion_policy() == DeletionPolicy::Delete) {
        let status = sync.and_then(|s| s.status.clone()).unwrap_or_default();
        let names: BTreeMap<&str, i64> = status
            .versions
            .iter()
            .filter(|v| v.state != secretsync_api::VersionState::Deleted)
            .map(|v| (v.secret_name.as_str(), v.version))
            .collect();
        let used = ctx.workloads.references(&ctx.client, ns, &names).await?;
        if !used.is_empty() {
            let uses: Vec<String> = used
                .iter()
                .filter_map(|(v, users)| {
                    let secret = names.iter().find(|(_, n)| *n == v)?.0;
                    Some(format!("{secret} by {}", users.join(", ")))
                })
                .collect();
            let why = format!(
                "no longer selected; SecretSync {ns}/{name} is kept while versions are in use: {}",
                uses.join("; ")
            );
            if !previous.removing.iter().any(|r| r.namespace == ns) {
                publish(
                    ctx,
                    css,
                    EventType::Warning,
                    event::REMOVAL_HELD,
                    why.clone(),
                    Some(foreign_ref(ns, &name)),
                )
                .await;
            }
            return Ok(Some(why));
        }
    }
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: guard.meta().uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx.bounded(api.delete(&name, &params)).await? {
        Ok(_) => {
            info!(cluster_sync = %name, namespace = ns, "SecretSync removed: namespace no longer selected");
            let note = format!(
                "deleted SecretSync {ns}/{name}: the namespace is no longer selected (its deletionPolicy applies to its Secrets)"
            );
            publish(
                ctx,
                css,
                EventType::Normal,
                event::SECRET_SYNC_REMOVED,
                note,
                Some(foreign_ref(ns, &name)),
            )
            .await;
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(None)
}

async fn publish(
    ctx: &Context,
    css: &ClusterSecretSync,
    type_: EventType,
    reason: &str,
    note: String,
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::conditions::truncate(note, 1024)),
        action: "FanOut".into(),
        secondary,
    };
    // A cluster-scoped object's events go to `default`, where kubectl describe finds them.
    ctx.events.publish(&event, &css.object_ref(&())).await;
}

/// Applies the status when it changed; returns whether it did.
async fn write_status(
    css: &ClusterSecretSync,
    ctx: &Context,
    previous: &ClusterSecretSyncStatus,
    status: &ClusterSecretSyncStatus,
) -> Result<bool> {
    if previous == status {
        return Ok(false);
    }
    let api: Api<ClusterSecretSync> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": ClusterSecretSync::api_version(&()),
        "kind": ClusterSecretSync::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(labels::FIELD_MANAGER).force();
    ctx.bounded(api.patch_status(&css.name_any(), &params, &Patch::Apply(patch)))
        .await??;
    Ok(true)
}

/// A failed pass (a status write, a reference scan) is retried with backoff.
pub fn error_policy(
    css: Arc<ClusterSecretSync>,
    error: &crate::error::Error,
    fan: Arc<Fanout>,
) -> Action {
    warn!(cluster_sync = %css.name_any(), %error, "ClusterSecretSync pass failed");
    let uid = css.uid().unwrap_or_default();
    match fan
        .ctx
        .backoff
        .failed(&uid, error.retry(), css.metadata.generation, None, None)
    {
        Some(delay) => Action::requeue(delay),
        None => Action::requeue(RESYNC),
    }
}
