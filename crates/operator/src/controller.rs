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
//! | Namespaces (metadata only) | [`NamespaceLabels`] | on a label change, the namespace's SecretSyncs using a ClusterSecretStore |
//!
//! Whether Argo Rollouts are served is asked of discovery once, at start: a CRD installed
//! later is followed after the next restart.
//!
//! The store Ready checks run as two more controllers beside it. If any watch or controller
//! ends while the operator is not shutting down, [`run`] returns an error, so the process
//! exits and Kubernetes restarts it rather than leaving it running blind.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync, StoreKind, WorkloadKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backend::checks::{self, StoreContext};
use crate::backend::connections::ProviderCache;
use crate::backend::health::BackendHealth;
use crate::cache::multiwatch::watch_namespaces;
use crate::cache::namespaces::NamespaceLabels;
use crate::cache::syncs::{StoreKey, SyncIndex, SyncRef};
use crate::cache::versions::{VersionIndex, base_of};
use crate::cache::workloads::{Workloads, to_value};
use crate::context::{Config, Context, Readiness, Shared};
use crate::hash_key;
use crate::process::metrics::Metrics;
use crate::process::supervise::Stopped;
use crate::reconcile::{error_policy, reconcile};
use crate::rollout::argo::{self, Rollout};

/// `kubectl apply`'s record of the applied object, kept out of the SecretSync cache.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// Reports through `ended` when `stream` ends, so a watch that stops is never silent.
fn supervised<S: Stream>(
    name: &'static str,
    stream: S,
    ended: mpsc::UnboundedSender<&'static str>,
) -> impl Stream<Item = S::Item> {
    stream.chain(
        futures::stream::once(async move {
            let _ = ended.unbounded_send(name);
        })
        .filter_map(|()| future::ready(None)),
    )
}

/// Runs the operator until `shutdown` resolves, counting its work in `metrics`.
pub async fn run(
    client: Client,
    config: Config,
    options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Stopped> {
    // Before anything is hashed: a version made with another key would look new forever.
    let hash_key = hash_key::load_or_create(&client, &config.hash_key).await?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded::<&'static str>();
    let (wake_tx, wake_rx) = mpsc::unbounded::<SyncRef>();
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let stopping_flag = stopping_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping_tx.send_replace(true);
    });
    let stopping = move || {
        let mut rx = stopping_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let rollouts_served = argo::served(&client).await.map_err(Stopped::Discovery)?;
    info!(
        rollouts_served,
        "Argo Rollouts (argoproj.io/v1alpha1) {}",
        if rollouts_served {
            "served: watching Rollouts"
        } else {
            "not served: Rollout targets are reported NotFound"
        }
    );
    let mut caches = vec![
        "secretsyncs",
        "secrets",
        "secretstores",
        "clustersecretstores",
        "deployments",
        "statefulsets",
        "daemonsets",
        "namespaces",
    ];
    if rollouts_served {
        caches.push("rollouts");
    }
    let readiness = Arc::new(Readiness::new(&caches));
    let index = Arc::new(VersionIndex::default());
    let sync_index = Arc::new(SyncIndex::default());
    let workloads = Arc::new(Workloads::new());
    workloads.set_rollouts_served(rollouts_served);
    let providers = Arc::new(ProviderCache::default());
    let namespaces = Arc::new(NamespaceLabels::default());
    // Store checks asked for before their schedule, per store kind; and the SecretSyncs to
    // wake when a store's backend recovers.
    let (store_checks_tx, store_checks_rx) = mpsc::unbounded::<ObjectRef<SecretStore>>();
    let (cluster_checks_tx, cluster_checks_rx) = mpsc::unbounded::<ObjectRef<ClusterSecretStore>>();
    let (recovered_tx, recovered_rx) = mpsc::unbounded::<(SyncRef, String)>();
    let health = Arc::new(BackendHealth::new(
        Box::new(move |(kind, namespace, name): &StoreKey| {
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

    let (stores, stores_writer) = reflector::store::<SecretStore>();
    let (cluster_stores, cluster_writer) = reflector::store::<ClusterSecretStore>();
    let shared = Shared {
        index: index.clone(),
        sync_index: sync_index.clone(),
        workloads: workloads.clone(),
        providers: providers.clone(),
        readiness: readiness.clone(),
        stores: stores.clone(),
        cluster_stores: cluster_stores.clone(),
        namespaces: namespaces.clone(),
        health: health.clone(),
        hash_key,
    };
    let max_backoff = config.max_backoff;
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        metrics.clone(),
        shared,
    ));

    let mut sync_config = watcher::Config::default().any_semantic();
    if let Some(selector) = &options.selector {
        sync_config = sync_config.labels(selector);
    }
    // SecretSyncs. DeserializeGuard: one malformed object (say, after a CRD downgrade) is
    // reported on its own instead of failing the whole watch.
    let (syncs, syncs_writer) = reflector::store::<DeserializeGuard<SecretSync>>();
    let sync_stream = {
        let (sync_index, readiness, wake, ctx) = (
            sync_index.clone(),
            readiness.clone(),
            wake_tx.clone(),
            ctx.clone(),
        );
        reflector::reflector(
            syncs_writer,
            // managedFields (the status writes' field sets) were a good part of each cached
            // SecretSync, and `kubectl apply`'s copy of the whole object can be more: nothing
            // here reads either.
            watch_namespaces::<DeserializeGuard<SecretSync>>(
                &client,
                &options.namespaces,
                sync_config,
            )
            .modify(|sync| {
                sync.managed_fields_mut().clear();
                sync.annotations_mut().remove(LAST_APPLIED);
            }),
        )
        .inspect_ok(move |event| match event {
            watcher::Event::Init => sync_index.relist_start(),
            watcher::Event::InitApply(sync) => sync_index.relist_apply(sync),
            watcher::Event::InitDone => {
                sync_index.relist_done();
                readiness.mark_ready("secretsyncs");
            }
            watcher::Event::Apply(sync) => sync_index.apply(sync),
            watcher::Event::Delete(sync) => {
                // Gone (finalized, or deleted while this process was not running): nothing
                // remembered about it may outlive it.
                ctx.forget_sync(&sync.uid().unwrap_or_default());
                for waiting in sync_index.delete(sync) {
                    let _ = wake.unbounded_send(waiting);
                }
            }
        })
        .applied_objects()
    };

    let store_ctx = Arc::new(StoreContext::new(
        client.clone(),
        providers.clone(),
        metrics.clone(),
        health.clone(),
        max_backoff,
    ));

    // Managed Secrets, metadata only: Secret bodies are never cached.
    let secret_stream = {
        let (index, sync_index, readiness, wake, stores) = (
            index.clone(),
            sync_index.clone(),
            readiness.clone(),
            wake_tx.clone(),
            store_ctx.clone(),
        );
        // A store's credentials replaced (or created, or deleted): it is checked now.
        let credentials_changed = move |secret: &PartialObjectMeta<Secret>, deleted: bool| {
            let version = match deleted {
                true => String::new(),
                false => secret.resource_version().unwrap_or_default(),
            };
            stores.credential_secret_changed(
                &secret.namespace().unwrap_or_default(),
                &secret.name_any(),
                &version,
            );
        };
        let wake_claimants = move |secret: &PartialObjectMeta<Secret>| {
            let name = secret.name_any();
            if let Some(base) = base_of(&name) {
                for claimant in sync_index.claimants(&secret.namespace().unwrap_or_default(), base)
                {
                    let _ = wake.unbounded_send(claimant);
                }
            }
        };
        // Every Secret, not those our labels select: a label is one `kubectl label` away
        // from gone, and a version whose label a user removed is still ours (index.rs).
        // Metadata only, and the index keeps nothing of Secrets that are not versions.
        watch_namespaces::<PartialObjectMeta<Secret>>(
            &client,
            &options.namespaces,
            watcher::Config::default(),
        )
        .inspect_ok(move |event| match event {
            watcher::Event::Init => index.relist_start(),
            watcher::Event::InitApply(secret) => index.relist_apply(secret),
            watcher::Event::InitDone => {
                index.relist_done();
                readiness.mark_ready("secrets");
            }
            watcher::Event::Apply(secret) => {
                // Disowned by a user: a SecretSync blocked on its name may proceed.
                if index.apply(secret).is_none() {
                    wake_claimants(secret);
                }
                credentials_changed(secret, false);
            }
            watcher::Event::Delete(secret) => {
                index.delete(secret);
                wake_claimants(secret);
                credentials_changed(secret, true);
            }
        })
        .touched_objects()
    };

    // Stores.
    let store_stream = store_changes(
        "secretstores",
        reflector::reflector(
            stores_writer,
            watch_namespaces::<SecretStore>(
                &client,
                &options.namespaces,
                watcher::Config::default(),
            ),
        ),
        readiness.clone(),
        store_ctx.clone(),
    );
    let cluster_store_stream = store_changes(
        "clustersecretstores",
        reflector::reflector(
            cluster_writer,
            watcher(
                Api::<ClusterSecretStore>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        ),
        readiness.clone(),
        store_ctx.clone(),
    );

    let secretstore_users = {
        let sync_index = sync_index.clone();
        move |store: SecretStore| {
            sync_index.users_of_store(&(
                StoreKind::SecretStore,
                store.namespace(),
                store.name_any(),
            ))
        }
    };
    let clusterstore_users = {
        let sync_index = sync_index.clone();
        move |store: ClusterSecretStore| {
            sync_index.users_of_store(&(StoreKind::ClusterSecretStore, None, store.name_any()))
        }
    };

    // Namespaces, metadata only, cluster-wide even when only some namespaces are watched:
    // only their labels are kept. The stream passes on the namespaces whose labels changed.
    let namespace_stream = {
        let (namespaces, readiness, wake, sync_index) = (
            namespaces.clone(),
            readiness.clone(),
            wake_tx.clone(),
            sync_index.clone(),
        );
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .try_filter_map(move |event| {
            let changed = match event {
                watcher::Event::Init => {
                    namespaces.relist_start();
                    None
                }
                watcher::Event::InitApply(ns) => {
                    namespaces.relist_apply(&ns);
                    None
                }
                watcher::Event::InitDone => {
                    for name in namespaces.relist_done() {
                        for sync in sync_index.cluster_store_users_in(&name) {
                            let _ = wake.unbounded_send(sync);
                        }
                    }
                    readiness.mark_ready("namespaces");
                    None
                }
                watcher::Event::Apply(ns) => namespaces.apply(&ns).then_some(ns),
                watcher::Event::Delete(ns) => {
                    namespaces.delete(&ns);
                    None
                }
            };
            future::ready(Ok(changed))
        })
    };
    let namespace_users = {
        let sync_index = sync_index.clone();
        move |ns: PartialObjectMeta<Namespace>| sync_index.cluster_store_users_in(&ns.name_any())
    };

    // Without the CRD a watch would only fail; a stream that never yields keeps the
    // controller's shape the same.
    let rollout_stream = if rollouts_served {
        workload_stream::<Rollout>(
            &client,
            &options,
            WorkloadKind::Rollout,
            &workloads,
            &readiness,
        )
        .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let controller = Controller::for_stream(
        supervised("secretsyncs", sync_stream, ended_tx.clone()),
        syncs,
    )
    .owns_stream(supervised("secrets", secret_stream, ended_tx.clone()))
    .watches_stream(
        supervised("secretstores", store_stream, ended_tx.clone()),
        secretstore_users,
    )
    .watches_stream(
        supervised(
            "clustersecretstores",
            cluster_store_stream,
            ended_tx.clone(),
        ),
        clusterstore_users,
    )
    .watches_stream(
        supervised(
            "deployments",
            workload_stream::<Deployment>(
                &client,
                &options,
                WorkloadKind::Deployment,
                &workloads,
                &readiness,
            ),
            ended_tx.clone(),
        ),
        rollout_owners::<Deployment>(WorkloadKind::Deployment, sync_index.clone()),
    )
    .watches_stream(
        supervised(
            "statefulsets",
            workload_stream::<StatefulSet>(
                &client,
                &options,
                WorkloadKind::StatefulSet,
                &workloads,
                &readiness,
            ),
            ended_tx.clone(),
        ),
        rollout_owners::<StatefulSet>(WorkloadKind::StatefulSet, sync_index.clone()),
    )
    .watches_stream(
        supervised(
            "daemonsets",
            workload_stream::<DaemonSet>(
                &client,
                &options,
                WorkloadKind::DaemonSet,
                &workloads,
                &readiness,
            ),
            ended_tx.clone(),
        ),
        rollout_owners::<DaemonSet>(WorkloadKind::DaemonSet, sync_index.clone()),
    )
    .watches_stream(
        supervised("rollouts", rollout_stream, ended_tx.clone()),
        rollout_owners::<Rollout>(WorkloadKind::Rollout, sync_index.clone()),
    )
    .watches_stream(
        supervised("namespaces", namespace_stream, ended_tx.clone()),
        namespace_users,
    )
    // A recovered store's SecretSyncs: their backoff is cleared as they are queued.
    .reconcile_on(futures::stream::select(
        wake_rx,
        recovered_rx.map({
            let ctx = ctx.clone();
            move |(sync, uid)| {
                ctx.backoff.succeeded(&uid);
                sync
            }
        }),
    ))
    .with_config(controller::Config::default().concurrency(options.concurrency))
    .graceful_shutdown_on(stopping());

    let store_checks = future::join(
        checks::run(
            watch_namespaces::<SecretStore>(
                &client,
                &options.namespaces,
                watcher::Config::default(),
            ),
            store_checks_rx,
            store_ctx.clone(),
            stopping(),
        ),
        checks::run(
            watcher(
                Api::<ClusterSecretStore>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
            cluster_checks_rx,
            store_ctx,
            stopping(),
        ),
    );

    info!(namespaces = ?options.namespaces, selector = ?options.selector, "watching; reconciles start once the caches are filled");
    // /readyz: ready once every cache has listed.
    tokio::spawn({
        let (readiness, synced) = (readiness.clone(), options.caches_synced.clone());
        async move {
            readiness.wait().await;
            info!("caches ready; reconciling");
            synced.store(true, Ordering::Release);
        }
    });
    let events = ctx.events.clone();
    let syncs_run = controller
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
        });
    let mut syncs_run = pin!(syncs_run);
    let mut store_checks = pin!(store_checks);
    let mut stop = pin!(stopping());
    let mut asked_to_stop = false;
    // A finished join must not be polled again, and during shutdown the loop goes on.
    let mut store_checks_ended = false;
    loop {
        tokio::select! {
            // Once the SecretSync controller has finished its reconciles, nothing that
            // matters is in flight: a store check still running is dropped (it is repeated
            // at the next start anyway).
            () = &mut syncs_run => {
                // Nothing publishes any more: deliver what is queued.
                events.close().await;
                return if *stopping_flag.borrow() {
                    Ok(())
                } else {
                    Err(Stopped::ControllerEnded)
                };
            }
            _ = &mut store_checks, if !store_checks_ended => {
                store_checks_ended = true;
                if !*stopping_flag.borrow() {
                    return Err(Stopped::ControllerEnded);
                }
            }
            () = &mut stop, if !asked_to_stop => {
                asked_to_stop = true;
                // Before the caches are filled no reconcile has started; kube-runtime would
                // hold its runner until the (now stopped) watches list, so return now.
                if !readiness.is_ready() {
                    return Ok(());
                }
            }
            Some(name) = ended_rx.next() => {
                if !*stopping_flag.borrow() {
                    return Err(Stopped::WatchEnded(name));
                }
            }
        }
    }
}

/// Store changes that matter to their users: a new generation (spec edit) or a deletion.
/// Status writes (the store's own Ready checks) wake nobody. A deleted store's provider
/// client is dropped with its tokens, and its check state with it.
fn store_changes<S>(
    cache: &'static str,
    events: impl Stream<Item = Result<watcher::Event<S>, watcher::Error>>,
    readiness: Arc<Readiness>,
    stores: Arc<StoreContext>,
) -> impl Stream<Item = Result<S, watcher::Error>>
where
    S: Resource + Clone,
{
    let seen: Mutex<HashMap<String, Option<i64>>> = Mutex::default();
    events.try_filter_map(move |event| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match event {
            watcher::Event::Init => {
                seen.clear();
                None
            }
            watcher::Event::InitApply(store) => {
                seen.insert(store.uid().unwrap_or_default(), store.meta().generation);
                None
            }
            watcher::Event::InitDone => {
                readiness.mark_ready(cache);
                None
            }
            watcher::Event::Apply(store) => {
                let uid = store.uid().unwrap_or_default();
                let generation = store.meta().generation;
                (seen.insert(uid, generation) != Some(generation)).then_some(store)
            }
            watcher::Event::Delete(store) => {
                let uid = store.uid().unwrap_or_default();
                seen.remove(&uid);
                stores.forget(&uid);
                Some(store)
            }
        };
        future::ready(Ok(changed))
    })
}

/// A workload watch that keeps the reduced copies in [`Workloads`] and passes each touched
/// object on as a trigger (the full object is dropped right after).
fn workload_stream<K>(
    client: &Client,
    options: &RunOptions,
    kind: WorkloadKind,
    workloads: &Arc<Workloads>,
    readiness: &Arc<Readiness>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (workloads, readiness) = (workloads.clone(), readiness.clone());
    let cache = match kind {
        WorkloadKind::Deployment => "deployments",
        WorkloadKind::StatefulSet => "statefulsets",
        WorkloadKind::DaemonSet => "daemonsets",
        WorkloadKind::Rollout => "rollouts",
    };
    // Small list pages: the full objects of a page exist only until they are reduced, so
    // the page size bounds the transient memory of a (re)list of many large workloads.
    watch_namespaces::<K>(
        client,
        &options.namespaces,
        watcher::Config::default().page_size(50),
    )
    .inspect_ok(move |event| match event {
        watcher::Event::Init => workloads.relist_start(kind),
        watcher::Event::InitApply(w) => workloads.relist_apply(kind, &to_value(w)),
        watcher::Event::InitDone => {
            workloads.relist_done(kind);
            readiness.mark_ready(cache);
        }
        watcher::Event::Apply(w) => {
            workloads.apply(kind, &to_value(w));
        }
        watcher::Event::Delete(w) => workloads.delete(kind, &to_value(w)),
    })
    .touched_objects()
}

/// Maps a workload event to the SecretSyncs that roll out (or rolled out) to it.
fn rollout_owners<K: Resource>(
    kind: WorkloadKind,
    sync_index: Arc<SyncIndex>,
) -> impl Fn(K) -> Vec<SyncRef> + Send + Sync + 'static {
    move |workload: K| {
        sync_index.rollout_owners(
            &workload.namespace().unwrap_or_default(),
            kind,
            &workload.name_any(),
            workload.labels(),
        )
    }
}
