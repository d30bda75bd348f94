//! Deletion of a SecretSync (guarantee 9, docs/reference/guarantees.md): `Delete` revokes each version's lease at
//! the backend (dynamic secrets), then removes every versioned Secret it owns; `Retain` drops
//! its ownerReferences so the garbage collector leaves them, and revokes nothing. Only
//! Secrets it owns, each guarded by a UID and resourceVersion precondition. Runs only for
//! SecretSyncs that carry our finalizer ([`needs_finalizer`]); without it, `Delete` is the
//! garbage collector's work.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use secretsync_api::reason::event;
use secretsync_api::{DeletionPolicy, SecretSync, labels};
use serde_json::json;
use tracing::{info, warn};

use super::expiry::Revoker;
use crate::cache::versions::LeaseMeta;
use crate::conditions::truncate;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::secret_ref;

/// Whether deleting this SecretSync needs work of ours, so it must carry our finalizer until
/// that is done. `Retain` must drop the ownerReferences of its Secrets before the garbage
/// collector sees the owner gone. `Delete` needs nothing: the Secrets' ownerReferences let
/// the garbage collector delete them, and a finalizer would cost a write per SecretSync.
/// Versions with backend leases (`dataFrom.pki`) need their leases revoked first.
pub(super) fn needs_finalizer(sync: &SecretSync) -> bool {
    sync.spec.deletion_policy() == DeletionPolicy::Retain || sync.spec.holds_leases()
}

pub(super) async fn cleanup(sync: Arc<SecretSync>, ctx: &Context) -> Result<Action> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    // Every Secret of the namespace, not those our labels select: a version whose labels
    // a user edited is still ours to delete or to let go (guarantee 9, docs/reference/guarantees.md).
    let listed = api.list_metadata(&ListParams::default()).await?;
    let owned = listed.items.into_iter().filter(|s| {
        s.owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    });
    let policy = sync.spec.deletion_policy();
    let mut revoker = Revoker::default();
    for secret in owned {
        let name = secret.name_any();
        match policy {
            DeletionPolicy::Delete => {
                let lease = secret
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(LeaseMeta::from_annotations);
                if let Some(lease) = &lease {
                    revoke_before_delete(&sync, ctx, &mut revoker, lease, &name).await?;
                }
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: secret.uid(),
                        resource_version: secret.resource_version(),
                    }),
                    ..Default::default()
                };
                match ctx.bounded(api.delete(&name, &params)).await? {
                    Ok(_) => info!(secret = %name, "deleted with its SecretSync"),
                    // Gone, or changed since the list (perhaps disowned): the next pass
                    // lists again and decides on what is there then.
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            DeletionPolicy::Retain => {
                let remaining: Vec<_> = secret
                    .owner_references()
                    .iter()
                    .filter(|o| o.uid != uid)
                    .cloned()
                    .collect();
                // Marked with who let it go, so that a SecretSync of the same name created
                // later adopts it whatever its labels say by then.
                let patch = json!({"metadata": {
                    "ownerReferences": remaining,
                    "annotations": {labels::RETAINED_BY: sync.name_any()},
                    "resourceVersion": secret.resource_version(),
                }});
                ctx.bounded(api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)))
                    .await??;
                info!(secret = %name, "retained after its SecretSync was deleted");
            }
        }
    }
    ctx.forget_sync(&uid);
    Ok(Action::await_change())
}

/// Revokes a version's lease before its Secret is deleted with the SecretSync. A failure
/// keeps the Secret (and the SecretSync, by its finalizer) and is retried, with a Warning
/// event — except when the store itself is gone: then nothing can revoke the lease, which
/// lapses at its expiry, and the deletion goes on rather than block the namespace.
async fn revoke_before_delete(
    sync: &SecretSync,
    ctx: &Context,
    revoker: &mut Revoker,
    lease: &LeaseMeta,
    name: &str,
) -> Result<()> {
    let error = match revoker.revoke(sync, ctx, lease).await {
        Ok(()) => {
            info!(secret = %name, "lease revoked");
            return Ok(());
        }
        Err(error) => error,
    };
    let store_gone = matches!(error, Error::StoreNotFound { .. });
    let note = if store_gone {
        format!(
            "could not revoke the lease of {name}: {error}; it lapses at {}",
            lease.expires_at
        )
    } else {
        format!("could not revoke the lease of {name} ({error}); deletion waits and retries")
    };
    warn!(secret = %name, error = %error, "lease not revoked");
    let event = Event {
        type_: EventType::Warning,
        reason: event::LEASE_REVOKE_FAILED.into(),
        note: Some(truncate(note, 1024)),
        action: "RevokeLease".into(),
        secondary: Some(secret_ref(sync, name)),
    };
    ctx.publish(sync, &event).await;
    if store_gone { Ok(()) } else { Err(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_work_outside_the_garbage_collectors_reach_needs_the_finalizer() {
        let cases = [
            ("", false),
            ("deletionPolicy: Delete", false),
            ("deletionPolicy: Retain", true),
        ];
        let pki = "apiVersion: secretsync.io/v1alpha1\nkind: SecretSync\nmetadata: {name: tls}\n\
                   spec:\n  storeRef: {name: vault}\n  dataFrom: [{pki: {role: app, commonName: a.example}}]\n";
        let pki: SecretSync = serde_yaml::from_str(pki).unwrap();
        assert!(
            needs_finalizer(&pki),
            "leases are revoked before the Secrets go"
        );
        for (extra, want) in cases {
            let sync: SecretSync = serde_yaml::from_str(&format!(
                "apiVersion: secretsync.io/v1alpha1\nkind: SecretSync\nmetadata: {{name: db}}\n\
                 spec:\n  storeRef: {{name: vault}}\n  data: []\n  {extra}\n"
            ))
            .unwrap();
            assert_eq!(needs_finalizer(&sync), want, "{extra:?}");
        }
    }
}
