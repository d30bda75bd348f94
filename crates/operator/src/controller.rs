//! Wiring: watches, caches and the kube-runtime `Controller`.
//!
//! Four watches feed the controller:
//! - SecretSyncs (the controller's own reflector);
//! - managed Secrets, metadata only, into the [`VersionIndex`]; each change wakes the owner;
//! - SecretStores and ClusterSecretStores (reflectors); a change wakes every SecretSync that
//!   uses the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use secretsync_api::{
    ClusterSecretStore, SecretStore, SecretSync, StoreKind, WorkloadKind, labels,
};
use tracing::{info, warn};

use crate::context::{Caches, Config, Context};
use crate::index::VersionIndex;
use crate::metrics::Metrics;
use crate::multiwatch::{reflect_namespaces, watch_namespaces};
use crate::reconcile::{error_policy, reconcile};
use crate::supervise::{Stopped, Tasks};
use crate::workloads::Workloads;

#[derive(Clone, Debug)]
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
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            selector: None,
            concurrency: 16,
            caches_synced: Arc::default(),
        }
    }
}

/// What the controller is keyed by: SecretSyncs behind a deserialization guard.
type SyncRef = ObjectRef<DeserializeGuard<SecretSync>>;

fn sync_ref(sync: &SecretSync) -> SyncRef {
    SyncRef::new(&sync.name_any()).within(&sync.namespace().unwrap_or_default())
}

/// Runs the operator until `shutdown` resolves (after the reconciles in flight finish),
/// counting its work in `metrics`. Returns an error if it stopped without being asked to.
pub async fn run(
    client: Client,
    config: Config,
    options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Stopped> {
    let shutdown = shutdown.boxed().shared();
    let namespaces = &options.namespaces;
    let mut tasks = Tasks::default();
    let (wake_tx, wake_rx) = mpsc::unbounded::<SyncRef>();

    // Managed Secrets → version index, waking owners.
    let index = Arc::new(VersionIndex::default());
    let (index_ready_tx, index_ready_rx) = tokio::sync::oneshot::channel();
    let secret_watch = watch_namespaces::<PartialObjectMeta<Secret>>(
        &client,
        namespaces,
        watcher::Config::default().labels(&labels::managed_selector()),
    );
    tasks.spawn(
        "secret index",
        feed_index(secret_watch, index.clone(), wake_tx.clone(), index_ready_tx),
    );

    // Stores → reflectors, waking the SecretSyncs that use them.
    let (stores, stores_writer) = reflector::store::<SecretStore>();
    let (cluster_stores, cluster_writer) = reflector::store::<ClusterSecretStore>();
    let store_watch = reflect_namespaces(
        &client,
        namespaces,
        watcher::Config::default(),
        stores_writer,
    );
    let cluster_watch = reflector::reflector(
        cluster_writer,
        watcher(
            Api::<ClusterSecretStore>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();

    // Rollout targets → reflectors, waking the SecretSyncs that roll out to them.
    let (deployments, deployments_writer) = reflector::store::<Deployment>();
    let (statefulsets, statefulsets_writer) = reflector::store::<StatefulSet>();
    let (daemonsets, daemonsets_writer) = reflector::store::<DaemonSet>();
    let workloads = Workloads {
        deployments: deployments.clone(),
        statefulsets: statefulsets.clone(),
        daemonsets: daemonsets.clone(),
    };
    let deployment_watch = reflect_namespaces(
        &client,
        namespaces,
        watcher::Config::default(),
        deployments_writer,
    );
    let statefulset_watch = reflect_namespaces(
        &client,
        namespaces,
        watcher::Config::default(),
        statefulsets_writer,
    );
    let daemonset_watch = reflect_namespaces(
        &client,
        namespaces,
        watcher::Config::default(),
        daemonsets_writer,
    );

    // DeserializeGuard: one malformed SecretSync (say, after a CRD downgrade) is reported on
    // its own instead of failing the whole watch.
    let mut sync_config = watcher::Config::default().any_semantic();
    if let Some(selector) = &options.selector {
        sync_config = sync_config.labels(selector);
    }
    let (syncs, syncs_writer) = reflector::store::<DeserializeGuard<SecretSync>>();
    // The other caches are awaited below; this one fills once the controller polls it, so
    // its first complete list is the moment the operator is ready. (Watched here rather than
    // with `Store::wait_until_ready`, which wakes only one of several waiters.)
    let synced = options.caches_synced.clone();
    let sync_watch = reflector::reflector(
        syncs_writer,
        watch_namespaces(&client, namespaces, sync_config),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            synced.store(true, Ordering::Release);
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(sync_watch, syncs.clone())
        .with_config(controller::Config::default().concurrency(options.concurrency));
    tasks.spawn(
        "SecretStore watch",
        wake_store_users(
            store_watch,
            StoreKind::SecretStore,
            syncs.clone(),
            wake_tx.clone(),
        ),
    );
    tasks.spawn(
        "ClusterSecretStore watch",
        wake_store_users(
            cluster_watch,
            StoreKind::ClusterSecretStore,
            syncs.clone(),
            wake_tx.clone(),
        ),
    );
    tasks.spawn(
        "Deployment watch",
        wake_rollout_owners(
            deployment_watch,
            WorkloadKind::Deployment,
            syncs.clone(),
            wake_tx.clone(),
        ),
    );
    tasks.spawn(
        "StatefulSet watch",
        wake_rollout_owners(
            statefulset_watch,
            WorkloadKind::StatefulSet,
            syncs.clone(),
            wake_tx.clone(),
        ),
    );
    tasks.spawn(
        "DaemonSet watch",
        wake_rollout_owners(
            daemonset_watch,
            WorkloadKind::DaemonSet,
            syncs.clone(),
            wake_tx,
        ),
    );

    // Reconciling before the caches are filled would see no versions and no stores.
    let caches_ready = async {
        let _ = index_ready_rx.await;
        let _ = stores.wait_until_ready().await;
        let _ = cluster_stores.wait_until_ready().await;
        let _ = deployments.wait_until_ready().await;
        let _ = statefulsets.wait_until_ready().await;
        let _ = daemonsets.wait_until_ready().await;
    };
    tokio::select! {
        () = caches_ready => {}
        () = shutdown.clone() => return Ok(()),
        stopped = tasks.first_exit() => return Err(stopped),
    }
    info!(
        secrets = index.len(),
        "caches ready; starting the controller"
    );

    let caches = Caches {
        index,
        syncs,
        stores,
        cluster_stores,
        workloads,
    };
    let ctx = Arc::new(Context::new(client, config, metrics, caches));
    let controller = controller
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |sync, ctx| async move {
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
        });
    tokio::select! {
        () = controller => {
            // The stream ends only once shutdown was asked for, unless something broke.
            if shutdown.peek().is_some() {
                Ok(())
            } else {
                Err(Stopped::ControllerEnded)
            }
        }
        stopped = tasks.first_exit() => Err(stopped),
    }
}

async fn feed_index(
    events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>,
    index: Arc<VersionIndex>,
    wake: mpsc::UnboundedSender<SyncRef>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let owner = |secret: &PartialObjectMeta<Secret>| {
            let namespace = secret.namespace()?;
            let owner = secret
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "SecretSync")?;
            Some(SyncRef::new(&owner.name).within(&namespace))
        };
        match event {
            Ok(watcher::Event::Apply(secret)) => {
                index.apply(&secret);
                if let Some(o) = owner(&secret) {
                    let _ = wake.unbounded_send(o);
                }
            }
            Ok(watcher::Event::Delete(secret)) => {
                index.delete(&secret);
                if let Some(o) = owner(&secret) {
                    let _ = wake.unbounded_send(o);
                }
            }
            Ok(watcher::Event::Init) => index.relist_start(),
            Ok(watcher::Event::InitApply(secret)) => index.relist_apply(secret),
            Ok(watcher::Event::InitDone) => {
                index.relist_done();
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Err(e) => warn!(error = %e, "watching managed Secrets"),
        }
    }
}

/// Wakes every SecretSync that references a changed store.
async fn wake_store_users<S: Resource<DynamicType = ()>>(
    changes: impl Stream<Item = Result<S, watcher::Error>>,
    kind: StoreKind,
    syncs: Store<DeserializeGuard<SecretSync>>,
    wake: mpsc::UnboundedSender<SyncRef>,
) {
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let store = match change {
            Ok(store) => store,
            Err(e) => {
                warn!(error = %e, kind = kind.as_str(), "watching stores");
                continue;
            }
        };
        let name = store.name_any();
        let namespace = store.namespace();
        for sync in syncs.state().iter().filter_map(|g| g.0.as_ref().ok()) {
            let uses = sync.spec.store_kind() == kind
                && sync.spec.store_ref.name == name
                && (kind == StoreKind::ClusterSecretStore || sync.namespace() == namespace);
            if uses {
                let _ = wake.unbounded_send(sync_ref(sync));
            }
        }
    }
}

/// Wakes every SecretSync that rolls out to (or rolled out to) a changed workload, so
/// rollout progress is seen as it happens.
async fn wake_rollout_owners<W: Resource<DynamicType = ()>>(
    changes: impl Stream<Item = Result<W, watcher::Error>>,
    kind: WorkloadKind,
    syncs: Store<DeserializeGuard<SecretSync>>,
    wake: mpsc::UnboundedSender<SyncRef>,
) {
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let workload = match change {
            Ok(workload) => workload,
            Err(e) => {
                warn!(error = %e, kind = kind.as_str(), "watching workloads");
                continue;
            }
        };
        let namespace = workload.namespace();
        for sync in syncs.state().iter().filter_map(|g| g.0.as_ref().ok()) {
            if sync.namespace() == namespace
                && Workloads::may_target(sync, kind, &workload.name_any(), workload.labels())
            {
                let _ = wake.unbounded_send(sync_ref(sync));
            }
        }
    }
}
