//! Wiring: every watch is a trigger stream of one kube-runtime `Controller`, and each also
//! fills the cache its decisions read:
//!
//! | watch | cache | wakes |
//! |---|---|---|
//! | SecretSyncs | the controller's reflector, [`SyncIndex`] | itself; a deleted one wakes the other claimants of its target name |
//! | Secrets (metadata only) | [`VersionIndex`]: versions by owner, unowned look-alikes apart | the owner; a Secret gone or disowned wakes the claimants of its name; a store's credential Secret changed checks the store now |
//! | SecretStores, ClusterSecretStores | reflectors | their users, on a spec change or deletion |
//! | (store checks, [`BackendHealth`]) | — | a store's failed SecretSyncs, when its backend recovers |
//! | Deployments, StatefulSets, DaemonSets; Argo Rollouts if served | [`Workloads`] (reduced) | the SecretSyncs rolling out to them |
//! | Namespaces (metadata only) | [`NamespaceLabels`] | on a label change, the namespace's SecretSyncs using a ClusterSecretStore, and every ClusterSecretSync |
//! | ClusterSecretSyncs | their controller's reflector | themselves; a SecretSync event wakes the ClusterSecretSync that owns it |
//!
//! Whether Argo Rollouts are served is asked of discovery once, at start: a CRD installed
//! later is followed after the next restart.
//!
//! The store Ready checks run as two more controllers beside it, and ClusterSecretSyncs
//! (`fanout/`) as one more, reading the SecretSync and namespace caches. The ClusterSecretSync
//! watch is not one the SecretSync reconciles wait for: they do not read it, and an
//! operator whose RBAC predates the kind still syncs (its watch retries and logs). If any watch or controller
//! ends while the operator is not shutting down, [`run`] returns an error, so the process
//! exits and Kubernetes restarts it rather than leaving it running blind.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc::{self, UnboundedSender};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use secretsync_api::{
    ClusterSecretStore, ClusterSecretSync, SecretStore, SecretSync, StoreKind, WorkloadKind,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::backend::checks::{self, StoreContext, StoreObject, key_of};
use crate::backend::connections::ProviderCache;
use crate::backend::health::BackendHealth;
use crate::cache::generations::{StoreChange, StoreGenerations};
use crate::cache::multiwatch::{watch_cluster, watch_namespaces};
use crate::cache::namespaces::NamespaceLabels;
use crate::cache::syncs::{SyncGone, SyncIndex, SyncRef};
use crate::cache::versions::{SecretChange, VersionIndex, base_of};
use crate::cache::workloads::{WorkloadChange, Workloads, WorkloadsOf};
use crate::cache::{Cache, Listed, fill};
use crate::context::{Config, Context, Shared};
use crate::fanout::{self, Fanout};
use crate::hash_key;
use crate::instant::readiness::{EventsHealth, Listeners};
use crate::instant::{self, Sources, Wakers};
use crate::process::metrics::Metrics;
use crate::process::supervise::{Stopped, Stopping};
use crate::reconcile::{error_policy, reconcile, sweep_orphan_leases};
use crate::rollout::argo::{self, Rollout};

/// `kubectl apply`'s record of the applied object, kept out of the SecretSync cache.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug)]
pub struct RunOptions {
    /// Watch only these namespaces (SecretSyncs, SecretStores, Secrets, workloads); all
    /// when empty.
    pub namespaces: Vec<String>,
    /// Reconcile only the SecretSyncs matching this label selector; with `namespaces`,
    /// this lets several deployments share a cluster.
    pub selector: Option<String>,
    /// SecretSyncs reconciled at once.
    pub concurrency: u16,
    /// Set once every cache has listed, for `/readyz`.
    pub caches_synced: Arc<AtomicBool>,
    /// Where OpenBao's `socket` audit device writes, for stores with
    /// `events.source: OpenBaoAudit` (instant sync); bound by the caller, so a taken port fails
    /// the start.
    pub openbao_audit: Option<tokio::net::TcpListener>,
    /// The event listener for stores with `events.source: Webhook`, `GcpPubSub` or
    /// `AzureEventGrid`; bound by the caller too.
    pub events_listen: Option<tokio::net::TcpListener>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            selector: None,
            concurrency: 16,
            caches_synced: Arc::default(),
            openbao_audit: None,
            events_listen: None,
        }
    }
}

/// Runs the operator until `shutdown` resolves, counting its work in `metrics`.
pub async fn run(
    client: Client,
    config: Config,
    mut options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Stopped> {
    // Leases issued from now on are this process's own; any older that no Secret holds
    // were left by an earlier one (`reconcile::sweep_orphan_leases`).
    let started = jiff::Timestamp::now();
    // Before anything is hashed: a version made with another key would look new forever.
    let hash_key = hash_key::load_or_create(&client, &config.hash_key).await?;
    let stopping = Stopping::on(shutdown);
    let rollouts_served = rollouts_served(&client).await?;
    let (wake_tx, wake_rx) = mpsc::unbounded::<SyncRef>();
    let (ended_tx, ended_rx) = mpsc::unbounded::<&'static str>();
    let (fanout_wake, fanout_woken) = fanout::wake();
    let mut watches = Watches {
        client: client.clone(),
        namespaces: options.namespaces.clone(),
        listed: Arc::new(Listed::default()),
        wake: wake_tx,
        fanout: fanout_wake,
        ended: ended_tx,
        drained: Vec::new(),
    };
    let workloads = Arc::new(Workloads::new());
    workloads.set_rollouts_served(rollouts_served);
    let providers = Arc::new(ProviderCache::default());
    let checks = store_checks(&client, &providers, &metrics, &options, config.max_backoff);
    let store_ctx = checks.ctx;
    let (stores, stores_writer) = reflector::store::<SecretStore>();
    let (cluster_stores, cluster_writer) = reflector::store::<ClusterSecretStore>();
    let shared = Shared {
        index: Arc::new(VersionIndex::default()),
        sync_index: Arc::new(SyncIndex::default()),
        workloads: workloads.clone(),
        providers,
        listed: watches.listed.clone(),
        stores: stores.clone(),
        cluster_stores: cluster_stores.clone(),
        namespaces: Arc::new(NamespaceLabels::default()),
        health: store_ctx.health.clone(),
        event_sources: store_ctx.sources.health.clone(),
        hash_key,
    };
    let ctx = Arc::new(Context::new(client.clone(), config, metrics, shared));
    let syncs_index = ctx.sync_index.clone();

    // The watches, each once: what it caches, and whom its changes wake.
    let (syncs, syncs_writer) = reflector::store::<DeserializeGuard<SecretSync>>();
    let sync_events = watches.secretsyncs(options.selector.as_deref(), syncs_writer, &ctx);
    let secret_events = watches.secrets(&ctx.index, &syncs_index, &store_ctx);
    let store_events = watches.stores("secretstores", stores_writer, &syncs_index, &store_ctx);
    let cluster_store_events = watches.stores(
        "clustersecretstores",
        cluster_writer,
        &syncs_index,
        &store_ctx,
    );
    watches.workload_kinds(&workloads, &syncs_index, rollouts_served);
    watches.namespaces(&ctx.namespaces, &syncs_index);

    let wakers = Wakers::new(&ctx, &syncs, &watches.wake);
    let listeners = (options.openbao_audit.take(), options.events_listen.take());
    instant::start(&store_ctx.sources, wakers, listeners, || stopping.wait());
    let orphans = sweep_orphan_leases(ctx.clone(), syncs.clone(), started, stopping.wait());
    tokio::spawn(orphans);
    let fan = Fanout::new(ctx.clone(), syncs.clone(), &options.namespaces);
    let cluster_syncs = fanout::run(&client, fan, fanout_woken, stopping.wait());
    let controller = Controller::for_stream(sync_events, syncs)
        .owns_stream(secret_events)
        // Wake-ups from the caches, and a recovered store's SecretSyncs: their backoff is
        // cleared as they are queued.
        .reconcile_on(futures::stream::select(
            wake_rx,
            checks.recovered.map({
                let ctx = ctx.clone();
                move |(sync, uid)| {
                    ctx.backoff.succeeded(&uid);
                    sync
                }
            }),
        ))
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on(stopping.wait());
    let store_checks = future::join(
        checks::run(
            stores,
            store_events,
            checks.secretstores,
            store_ctx.clone(),
            stopping.wait(),
        ),
        checks::run(
            cluster_stores,
            cluster_store_events,
            checks.clustersecretstores,
            store_ctx,
            stopping.wait(),
        ),
    );
    let store_checks = future::join(store_checks, cluster_syncs);

    info!(namespaces = ?options.namespaces, selector = ?options.selector, "watching; reconciles start once the caches are filled");
    tokio::spawn(report_ready(watches.listed.clone(), options.caches_synced));
    let events = ctx.events.clone();
    let syncs_run = reconcile_all(controller, ctx);
    let drained = future::join_all(std::mem::take(&mut watches.drained));
    let running = Running {
        stopping,
        listed: watches.listed.clone(),
        ended: ended_rx,
        events,
    };
    running
        .until_stopped(syncs_run, store_checks, drained)
        .await
}

/// `/readyz`: ready once every cache has listed.
async fn report_ready(listed: Arc<Listed>, synced: Arc<AtomicBool>) {
    listed.wait().await;
    info!("caches ready; reconciling");
    synced.store(true, Ordering::Release);
}

/// Whether the API server serves Argo Rollouts, asked of discovery once, at start.
async fn rollouts_served(client: &Client) -> Result<bool, Stopped> {
    let served = argo::served(client).await.map_err(Stopped::Discovery)?;
    info!(
        rollouts_served = served,
        "Argo Rollouts (argoproj.io/v1alpha1) {}",
        if served {
            "served: watching Rollouts"
        } else {
            "not served: Rollout targets are reported NotFound"
        }
    );
    Ok(served)
}

/// Runs every reconcile the controller schedules, each measured, until it shuts down.
fn reconcile_all(
    controller: Controller<DeserializeGuard<SecretSync>>,
    ctx: Arc<Context>,
) -> impl Future<Output = ()> {
    controller
        .run(
            |sync, ctx: Arc<Context>| async move {
                ctx.metrics
                    .clone()
                    .measure_reconcile(reconcile(sync, ctx))
                    .await
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(sync = %obj, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::debug!(sync = %obj, reason = %e.reason(), "reconcile failed")
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        })
}

/// What `run` watches over once everything runs.
struct Running {
    stopping: Stopping,
    listed: Arc<Listed>,
    /// The name of each watch that ended.
    ended: mpsc::UnboundedReceiver<&'static str>,
    events: Arc<crate::events::Publisher>,
}

impl Running {
    /// Returns once asked to stop and the reconciles in flight have finished, or with an
    /// error as soon as a watch or controller ends on its own.
    async fn until_stopped(
        mut self,
        syncs_run: impl Future<Output = ()>,
        store_checks: impl Future,
        drained: impl Future,
    ) -> Result<(), Stopped> {
        let stopping = &self.stopping;
        let mut syncs_run = pin!(syncs_run);
        let mut store_checks = pin!(store_checks);
        let mut drained = pin!(drained);
        let mut stop = pin!(stopping.wait());
        let mut asked_to_stop = false;
        // A finished join must not be polled again, and during shutdown the loop goes on.
        let (mut store_checks_ended, mut drained_ended) = (false, false);
        loop {
            tokio::select! {
                // Once the SecretSync controller has finished its reconciles, nothing that
                // matters is in flight: a store check still running is dropped (it is
                // repeated at the next start anyway).
                () = &mut syncs_run => {
                    // Nothing publishes any more: deliver what is queued.
                    self.events.close().await;
                    return if stopping.is_stopping() {
                        Ok(())
                    } else {
                        Err(Stopped::ControllerEnded)
                    };
                }
                _ = &mut store_checks, if !store_checks_ended => {
                    store_checks_ended = true;
                    if !stopping.is_stopping() {
                        return Err(Stopped::ControllerEnded);
                    }
                }
                // Each watch reports its own end below.
                _ = &mut drained, if !drained_ended => drained_ended = true,
                () = &mut stop, if !asked_to_stop => {
                    asked_to_stop = true;
                    // Before the caches are filled no reconcile has started; kube-runtime
                    // would hold its runner until the (now stopped) watches list, so return.
                    if !self.listed.is_ready() {
                        return Ok(());
                    }
                }
                Some(name) = self.ended.next() => {
                    if !stopping.is_stopping() {
                        return Err(Stopped::WatchEnded(name));
                    }
                }
            }
        }
    }
}

/// What the store Ready checks share with the SecretSyncs' reconciles.
struct StoreChecks {
    ctx: Arc<StoreContext>,
    /// Checks asked for before their schedule (see [`crate::backend::health`]), per kind.
    secretstores: mpsc::UnboundedReceiver<ObjectRef<SecretStore>>,
    clustersecretstores: mpsc::UnboundedReceiver<ObjectRef<ClusterSecretStore>>,
    /// The SecretSyncs (and their UIDs) to wake when a store's backend recovers.
    recovered: mpsc::UnboundedReceiver<(SyncRef, String)>,
}

fn store_checks(
    client: &Client,
    providers: &Arc<ProviderCache>,
    metrics: &Arc<Metrics>,
    options: &RunOptions,
    max_backoff: std::time::Duration,
) -> StoreChecks {
    let event_sources = Arc::new(EventsHealth::new(Listeners {
        openbao_audit: options.openbao_audit.is_some(),
        http: options.events_listen.is_some(),
    }));
    let (store_checks_tx, store_checks_rx) = mpsc::unbounded::<ObjectRef<SecretStore>>();
    let (cluster_checks_tx, cluster_checks_rx) = mpsc::unbounded::<ObjectRef<ClusterSecretStore>>();
    let (recovered_tx, recovered_rx) = mpsc::unbounded::<(SyncRef, String)>();
    let health = Arc::new(BackendHealth::new(
        Box::new(move |(kind, namespace, name)| {
            // A closed channel means the store controllers stopped: shutting down.
            match (kind, namespace) {
                (StoreKind::SecretStore, Some(ns)) => {
                    let _ = store_checks_tx.unbounded_send(ObjectRef::new(name).within(ns));
                }
                _ => {
                    let _ = cluster_checks_tx.unbounded_send(ObjectRef::new(name));
                }
            }
        }),
        recovered_tx,
        metrics.clone(),
    ));
    let store_ctx = Arc::new(StoreContext::new(
        client.clone(),
        providers.clone(),
        metrics.clone(),
        health.clone(),
        Arc::new(Sources::new(event_sources, health.clone())),
        max_backoff,
    ));
    StoreChecks {
        ctx: store_ctx,
        secretstores: store_checks_rx,
        clustersecretstores: cluster_checks_rx,
        recovered: recovered_rx,
    }
}

/// The watches being declared: each fills its cache ([`fill`]), reports its end, and sends
/// the SecretSyncs its changes concern to the controller.
struct Watches {
    client: Client,
    namespaces: Vec<String>,
    listed: Arc<Listed>,
    wake: UnboundedSender<SyncRef>,
    /// ClusterSecretSyncs to wake.
    fanout: fanout::Wake,
    ended: UnboundedSender<&'static str>,
    /// The watches no controller polls: `run` does.
    drained: Vec<BoxFuture<'static, ()>>,
}

type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

impl Watches {
    /// `events` feeding `cache`, reporting through `ended` if it ever stops.
    fn filled<K, C>(
        &self,
        name: &'static str,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        cache: &Arc<C>,
        react: impl Fn(C::Change) + Send + 'static,
    ) -> Events<K>
    where
        K: Send + 'static,
        C: Cache<K>,
    {
        let ended = self.ended.clone();
        fill(name, events, cache.clone(), self.listed.clone(), react)
            .chain(
                futures::stream::once(async move {
                    let _ = ended.unbounded_send(name);
                })
                .filter_map(|()| future::ready(None)),
            )
            .boxed()
    }

    fn drain<K: Send + 'static>(&mut self, name: &'static str, events: Events<K>) {
        self.drained.push(
            events
                .for_each(move |event| {
                    if let Err(error) = event {
                        warn!(watch = name, %error, "watch");
                    }
                    future::ready(())
                })
                .boxed(),
        );
    }

    fn wake(&self) -> impl Fn(Vec<SyncRef>) + Send + Sync + 'static {
        let wake = self.wake.clone();
        move |syncs| {
            for sync in syncs {
                let _ = wake.unbounded_send(sync);
            }
        }
    }

    /// SecretSyncs, the controller's own trigger. DeserializeGuard: one malformed object
    /// (say, after a CRD downgrade) is reported on its own instead of failing the watch.
    fn secretsyncs(
        &self,
        selector: Option<&str>,
        writer: reflector::store::Writer<DeserializeGuard<SecretSync>>,
        ctx: &Arc<Context>,
    ) -> impl Stream<Item = Result<DeserializeGuard<SecretSync>, watcher::Error>> + use<> {
        let mut config = watcher::Config::default().any_semantic();
        if let Some(selector) = selector {
            config = config.labels(selector);
        }
        // managedFields (the status writes' field sets) were a good part of each cached
        // SecretSync, and `kubectl apply`'s copy of the whole object can be more: nothing
        // here reads either.
        let events = watch_namespaces::<DeserializeGuard<SecretSync>>(
            &self.client,
            &self.namespaces,
            config,
        )
        .modify(|sync| {
            sync.managed_fields_mut().clear();
            sync.annotations_mut().remove(LAST_APPLIED);
        });
        // A ClusterSecretSync's SecretSync changed (its status, say): its summary follows.
        let fanout = self.fanout.clone();
        let events = events.inspect_ok(move |event| {
            let changed = match event {
                watcher::Event::Apply(s)
                | watcher::Event::InitApply(s)
                | watcher::Event::Delete(s) => s,
                watcher::Event::Init | watcher::Event::InitDone => return,
            };
            for owner in changed.owner_references() {
                if owner.kind == ClusterSecretSync::kind(&()) && owner.controller == Some(true) {
                    fanout.owner(&owner.name);
                }
            }
        });
        let (forget, wake) = (ctx.clone(), self.wake());
        let react = move |gone: SyncGone| {
            // Nothing remembered about it may outlive it.
            forget.forget_sync(&gone.uid);
            wake(gone.claimants);
        };
        let events = reflector::reflector(writer, events);
        self.filled("secretsyncs", events, &ctx.sync_index, react)
            .applied_objects()
    }

    /// Every Secret, metadata only (bodies are never cached), not those our labels select: a
    /// label is one `kubectl label` away from gone, and a version whose label a user removed
    /// is still ours (versions.rs). A trigger of the controller by ownerReference.
    fn secrets(
        &self,
        index: &Arc<VersionIndex>,
        syncs: &Arc<SyncIndex>,
        stores: &Arc<StoreContext>,
    ) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + use<> {
        let events = watch_namespaces::<PartialObjectMeta<Secret>>(
            &self.client,
            &self.namespaces,
            watcher::Config::default(),
        );
        let (syncs, stores, wake) = (syncs.clone(), stores.clone(), self.wake());
        let react = move |secret: SecretChange| {
            // Disowned or gone: a SecretSync blocked on its name may proceed.
            if secret.unowned
                && let Some(base) = base_of(&secret.name)
            {
                wake(syncs.claimants(&secret.namespace, base));
            }
            // A store's credentials replaced (or created, or deleted): it is checked now.
            let version = secret.resource_version.unwrap_or_default();
            stores.credential_secret_changed(&secret.namespace, &secret.name, &version);
        };
        self.filled("secrets", events, index, react)
            .touched_objects()
    }

    /// A store kind, for its Ready checks (the events returned) and its users: a new
    /// generation (spec edit) or a deletion wakes them; status writes (the store's own
    /// checks) wake nobody. A deleted store's provider client goes with its tokens, and its
    /// check state with it.
    fn stores<S>(
        &self,
        name: &'static str,
        writer: reflector::store::Writer<S>,
        syncs: &Arc<SyncIndex>,
        stores: &Arc<StoreContext>,
    ) -> impl Stream<Item = Result<S, watcher::Error>> + use<S>
    where
        S: StoreObject + Resource<DynamicType = ()> + Serialize,
        S::Scope: WatchScope<S>,
    {
        let events = S::Scope::watch(&self.client, &self.namespaces);
        let (syncs, stores, wake) = (syncs.clone(), stores.clone(), self.wake());
        let react = move |change: StoreChange<S>| {
            if change.deleted {
                stores.forget(&change.store.uid().unwrap_or_default());
            }
            wake(syncs.users_of_store(&key_of(&change.store)));
        };
        let generations = Arc::new(StoreGenerations::<S>::default());
        self.filled(
            name,
            reflector::reflector(writer, events),
            &generations,
            react,
        )
        .applied_objects()
    }

    /// Every workload kind a rollout can target; Argo Rollouts only where its CRD is served
    /// (without it a watch would only fail).
    fn workload_kinds(
        &mut self,
        workloads: &Arc<Workloads>,
        syncs: &Arc<SyncIndex>,
        rollouts_served: bool,
    ) {
        self.workloads::<Deployment>("deployments", workloads, syncs);
        self.workloads::<StatefulSet>("statefulsets", workloads, syncs);
        self.workloads::<DaemonSet>("daemonsets", workloads, syncs);
        if rollouts_served {
            self.workloads::<Rollout>("rollouts", workloads, syncs);
        }
    }

    /// A workload kind, kept reduced in [`Workloads`]; a change wakes the SecretSyncs that
    /// roll out to it. Small list pages: the full objects of a page exist only until they
    /// are reduced, so the page size bounds the memory of a (re)list of many workloads.
    fn workloads<K>(
        &mut self,
        name: &'static str,
        workloads: &Arc<Workloads>,
        syncs: &Arc<SyncIndex>,
    ) where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + WorkloadResource
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let events = watch_namespaces::<K>(
            &self.client,
            &self.namespaces,
            watcher::Config::default().page_size(50),
        );
        let cache = Arc::new(WorkloadsOf::<K>::new(workloads.clone(), K::KIND));
        let (syncs, wake) = (syncs.clone(), self.wake());
        let react = move |w: WorkloadChange| {
            wake(syncs.rollout_owners(&w.namespace, K::KIND, &w.name, &w.labels));
        };
        let events = self.filled(name, events, &cache, react);
        self.drain(name, events);
    }

    /// Namespaces, metadata only, cluster-wide even when only some namespaces are watched:
    /// only their labels are kept. A label change wakes the namespace's SecretSyncs that use
    /// a ClusterSecretStore (its conditions may now admit or refuse them).
    fn namespaces(&mut self, labels: &Arc<NamespaceLabels>, syncs: &Arc<SyncIndex>) {
        let events = watch_cluster::<PartialObjectMeta<Namespace>>(&self.client);
        let (syncs, wake, fanout) = (syncs.clone(), self.wake(), self.fanout.clone());
        // And every ClusterSecretSync: the namespace may now be selected, or no longer.
        let react = move |namespace: String| {
            wake(syncs.cluster_store_users_in(&namespace));
            fanout.all();
        };
        let events = self.filled("namespaces", events, labels, react);
        self.drain("namespaces", events);
    }
}

/// The workload kinds a SecretSync rolls out to.
trait WorkloadResource {
    const KIND: WorkloadKind;
}

impl WorkloadResource for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;
}

impl WorkloadResource for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;
}

impl WorkloadResource for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;
}

impl WorkloadResource for Rollout {
    const KIND: WorkloadKind = WorkloadKind::Rollout;
}

/// How a store kind is watched: SecretStores in the watched namespaces, ClusterSecretStores
/// cluster-wide.
trait WatchScope<S> {
    fn watch(client: &Client, namespaces: &[String]) -> Events<S>;
}

impl WatchScope<SecretStore> for k8s_openapi::NamespaceResourceScope {
    fn watch(client: &Client, namespaces: &[String]) -> Events<SecretStore> {
        watch_namespaces(client, namespaces, watcher::Config::default())
    }
}

impl WatchScope<ClusterSecretStore> for k8s_openapi::ClusterResourceScope {
    fn watch(client: &Client, _: &[String]) -> Events<ClusterSecretStore> {
        watch_cluster(client)
    }
}
