//! Wiring: watches, caches and the kube-runtime `Controller`.
//!
//! Four watches feed the controller:
//! - SecretSyncs (the controller's own reflector);
//! - managed Secrets, metadata only, into the [`VersionIndex`]; each change wakes the owner;
//! - SecretStores and ClusterSecretStores (reflectors); a change wakes every SecretSync that
//!   uses the store.

use std::sync::Arc;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
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
use crate::reconcile::{error_policy, reconcile};
use crate::workloads::Workloads;

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch only this namespace (SecretSyncs, SecretStores, Secrets); all when `None`.
    pub namespace: Option<String>,
    /// SecretSyncs reconciled at once.
    pub concurrency: u16,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 16,
        }
    }
}

/// What the controller is keyed by: SecretSyncs behind a deserialization guard.
type SyncRef = ObjectRef<DeserializeGuard<SecretSync>>;

fn sync_ref(sync: &SecretSync) -> SyncRef {
    SyncRef::new(&sync.name_any()).within(&sync.namespace().unwrap_or_default())
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until `shutdown` resolves, counting its work in `metrics`.
pub async fn run(
    client: Client,
    config: Config,
    options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (wake_tx, wake_rx) = mpsc::unbounded::<SyncRef>();

    // Managed Secrets → version index, waking owners.
    let index = Arc::new(VersionIndex::default());
    let (index_ready_tx, index_ready_rx) = tokio::sync::oneshot::channel();
    let secrets: Api<PartialObjectMeta<Secret>> = scoped(&client, &options.namespace);
    let secret_watch = watcher(
        secrets,
        watcher::Config::default().labels(&labels::managed_selector()),
    )
    .default_backoff();
    tokio::spawn(feed_index(
        secret_watch,
        index.clone(),
        wake_tx.clone(),
        index_ready_tx,
    ));

    // Stores → reflectors, waking the SecretSyncs that use them.
    let (stores, stores_writer) = reflector::store::<SecretStore>();
    let (cluster_stores, cluster_writer) = reflector::store::<ClusterSecretStore>();
    let store_watch = reflector::reflector(
        stores_writer,
        watcher(
            scoped::<SecretStore>(&client, &options.namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();
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
    let deployment_watch = reflector::reflector(
        deployments_writer,
        watcher(
            scoped::<Deployment>(&client, &options.namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();
    let statefulset_watch = reflector::reflector(
        statefulsets_writer,
        watcher(
            scoped::<StatefulSet>(&client, &options.namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();
    let daemonset_watch = reflector::reflector(
        daemonsets_writer,
        watcher(
            scoped::<DaemonSet>(&client, &options.namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();

    // DeserializeGuard: one malformed SecretSync (say, after a CRD downgrade) is reported on
    // its own instead of failing the whole watch.
    let controller = Controller::new(
        scoped::<DeserializeGuard<SecretSync>>(&client, &options.namespace),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(options.concurrency));
    let syncs = controller.store();
    tokio::spawn(wake_store_users(
        store_watch,
        StoreKind::SecretStore,
        syncs.clone(),
        wake_tx.clone(),
    ));
    tokio::spawn(wake_store_users(
        cluster_watch,
        StoreKind::ClusterSecretStore,
        syncs.clone(),
        wake_tx.clone(),
    ));
    tokio::spawn(wake_rollout_owners(
        deployment_watch,
        WorkloadKind::Deployment,
        syncs.clone(),
        wake_tx.clone(),
    ));
    tokio::spawn(wake_rollout_owners(
        statefulset_watch,
        WorkloadKind::StatefulSet,
        syncs.clone(),
        wake_tx.clone(),
    ));
    tokio::spawn(wake_rollout_owners(
        daemonset_watch,
        WorkloadKind::DaemonSet,
        syncs.clone(),
        wake_tx,
    ));

    // Reconciling before the caches are filled would see no versions and no stores.
    let _ = index_ready_rx.await;
    let _ = stores.wait_until_ready().await;
    let _ = cluster_stores.wait_until_ready().await;
    let _ = deployments.wait_until_ready().await;
    let _ = statefulsets.wait_until_ready().await;
    let _ = daemonsets.wait_until_ready().await;
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
    controller
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(sync = %obj, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::debug!(sync = %obj, reason = %e.reason(), "reconcile failed")
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
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
