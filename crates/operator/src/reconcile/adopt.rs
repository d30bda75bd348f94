//! Re-applying a SecretSync after `deletionPolicy: Retain` (guarantee 1, docs/reference/guarantees.md): the Secrets
//! the earlier one let go — marked `secretsync.io/retained-by: <name>`, no owner — become
//! this one's versions, so numbering continues after them and the workloads that use
//! them stay where they are. Only Secrets whose content hash verifies under the operator's key
//! are adopted: a label anyone can write, the keyed hash only the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMetaExt;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secretsync_api::hash::content_hash;
use secretsync_api::reason::event;
use secretsync_api::{SecretSync, labels};
use serde_json::json;
use tracing::{info, warn};

use crate::context::Context;
use crate::error::Result;

/// Adopts the retained Secrets of a SecretSync that has no versions and no history yet;
/// returns the event that says so, if any were adopted.
pub(super) async fn retained(sync: &SecretSync, ctx: &Context) -> Result<Option<Event>> {
    let namespace = sync.namespace().unwrap_or_default();
    let candidates = ctx.index.retained_by(&namespace, &sync.name_any());
    if candidates.is_empty() {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = sync
        .controller_owner_ref(&())
        .expect("a SecretSync from the API server has a name and UID");
    let mut adopted = Vec::new();
    for candidate in candidates {
        let Some(secret) = api.get_opt(&candidate.secret_name).await? else {
            continue;
        };
        if !verifies(ctx, &secret) {
            warn!(secret = %candidate.secret_name, "retained Secret not adopted: its content hash does not verify");
            continue;
        }
        let mut owners = secret.owner_references().to_vec();
        owners.push(owner.clone());
        // The spec.version it was made at belongs to the SecretSync that is gone. Counted
        // at most this one's, so re-applying a manifest is not a decrease, and the next
        // raise of spec.version rotates as it should.
        let spec_version = candidate.spec_version.min(sync.spec.spec_version());
        let patch = json!({"metadata": {
            "ownerReferences": owners,
            "annotations": {
                labels::RETAINED_BY: null,
                labels::SPEC_VERSION: spec_version.to_string(),
            },
            "resourceVersion": secret.resource_version(),
        }});
        let patched = ctx
            .bounded(api.patch(
                &candidate.secret_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            ))
            .await??;
        ctx.index
            .apply(&patched.metadata.into_request_partial::<Secret>());
        info!(secret = %candidate.secret_name, "retained Secret adopted");
        adopted.push(candidate.secret_name);
    }
    if adopted.is_empty() {
        return Ok(None);
    }
    Ok(Some(Event {
        type_: EventType::Normal,
        reason: event::VERSIONS_ADOPTED.into(),
        note: Some(crate::conditions::truncate(
            format!(
                "adopted {} retained by an earlier SecretSync {:?}; numbering continues after them",
                adopted.join(", "),
                sync.name_any()
            ),
            1024,
        )),
        action: "Adopt".into(),
        secondary: None,
    }))
}

/// Whether the Secret's content-hash annotation is the keyed hash of its type and data.
fn verifies(ctx: &Context, secret: &Secret) -> bool {
    let Some(stored) = secret.annotations().get(labels::CONTENT_HASH) else {
        return false;
    };
    let data: BTreeMap<String, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.as_slice()))
        .collect();
    let secret_type = secret.type_.as_deref().unwrap_or("Opaque");
    *stored == content_hash(&ctx.hash_key, secret_type, &data)
}
