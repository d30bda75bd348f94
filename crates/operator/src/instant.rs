//! Instant sync: a store's change event becomes a refresh of the SecretSyncs that read the
//! key it names. The source ([`crate::backend::audit`]) says which path changed; this finds
//! the stores that listen and cover that path, forgets the key's shared reads, marks each
//! SecretSync that reads it as asked (`Memory::asked`), and wakes it. The pass then reads
//! the backend even though its refresh slot is not due.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use secretsync_api::{SecretSync, StoreKind};
use tokio::net::TcpListener;
use tracing::debug;

use crate::backend::audit::{self, Changed};
use crate::cache::syncs::{StoreKey, SyncRef};
use crate::context::Context;

/// Serves the OpenBao audit device on `listener` until `stopped` resolves.
pub async fn serve_openbao_audit(
    listener: TcpListener,
    ctx: Arc<Context>,
    syncs: Store<DeserializeGuard<SecretSync>>,
    wake: UnboundedSender<SyncRef>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let metrics = ctx.metrics.clone();
    let ignored = Arc::new(move || metrics.openbao_audit_event("ignored"));
    let dispatch = Arc::new(move |changed: &Changed| {
        let woken = refresh_readers(&ctx, &syncs, &wake, changed);
        debug!(woken, "store change event");
        ctx.metrics
            .openbao_audit_event(if woken > 0 { "matched" } else { "unmatched" });
    });
    tokio::select! {
        () = audit::serve(listener, dispatch, ignored) => {}
        () = stopped => {}
    }
}

/// Asks every SecretSync that reads the changed key, through any store that listens and
/// covers it, for a read, and wakes it. Returns how many were woken.
fn refresh_readers(
    ctx: &Context,
    syncs: &Store<DeserializeGuard<SecretSync>>,
    wake: &UnboundedSender<SyncRef>,
    changed: &Changed,
) -> usize {
    let now = jiff::Timestamp::now();
    let (stores, cluster_stores) = (ctx.stores.state(), ctx.cluster_stores.state());
    let namespaced = stores.iter().map(|s| {
        let key: StoreKey = (StoreKind::SecretStore, s.namespace(), s.name_any());
        (key, s.uid(), &s.spec)
    });
    let cluster = cluster_stores.iter().map(|s| {
        let key: StoreKey = (StoreKind::ClusterSecretStore, None, s.name_any());
        (key, s.uid(), &s.spec.store)
    });
    let mut woken = 0;
    for (store, uid, spec) in namespaced.chain(cluster) {
        let Some(key) = audit::key_in_store(spec, changed) else {
            continue;
        };
        ctx.providers.forget_key(&uid.unwrap_or_default(), &key);
        for sync_ref in ctx.sync_index.users_of_store(&store) {
            let Some(guard) = syncs.get(&sync_ref) else {
                continue;
            };
            let Ok(sync) = &guard.0 else { continue };
            if sync.spec.reads_key(&key) {
                ctx.memory
                    .asked
                    .update(&sync.uid().unwrap_or_default(), |_| now);
                let _ = wake.unbounded_send(sync_ref);
                woken += 1;
            }
        }
    }
    woken
}
