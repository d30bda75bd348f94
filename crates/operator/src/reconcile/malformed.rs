//! A SecretSync the operator cannot read (its spec does not fit the types, as after a CRD
//! downgrade): say so in its status, and if it is being deleted, let it go — its Secrets are
//! still owned by it, so the garbage collector removes them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use secretsync_api::reason::condition;
use secretsync_api::{Reason, SecretSync, labels};
use serde_json::json;
use tracing::warn;

use crate::conditions::set_condition;
use crate::context::Context;
use crate::error::Result;

pub(super) async fn report(invalid: &InvalidObject, ctx: &Context) -> Result<Action> {
    let meta = &invalid.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), namespace);
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
    // The guard kept only the metadata; the conditions are read untyped, so an unchanged
    // report is not written again and keeps its lastTransitionTime.
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &ApiResource::erase::<SecretSync>(&()),
    );
    let previous: Vec<Condition> = untyped
        .get_opt(&name)
        .await?
        .and_then(|o| o.data.pointer("/status/conditions").cloned())
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    let conditions = malformed_conditions(&previous, &invalid.error, meta.generation);
    if conditions == previous {
        return Ok(Action::await_change());
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

/// Ready and Synced say the object does not fit the API, keeping every other condition and
/// the transition time of one that already said so.
pub fn malformed_conditions(
    previous: &[Condition],
    error: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut conditions = previous.to_vec();
    let message = format!(
        "the object does not match secretsync.io/v1alpha1 as this operator understands it: {error}; \
         fix the spec, or run an operator version that matches the installed CRD"
    );
    for type_ in [condition::READY, condition::SYNCED] {
        set_condition(
            &mut conditions,
            type_,
            false,
            Reason::InvalidSpec,
            message.clone(),
            generation,
        );
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_report_changes_nothing() {
        let first = malformed_conditions(&[], "unknown variant `Blue`", Some(3));
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|c| c.status == "False" && c.reason == "InvalidSpec")
        );
        let again = malformed_conditions(&first, "unknown variant `Blue`", Some(3));
        assert_eq!(
            again, first,
            "same report, same conditions, same transition time"
        );
    }
}
