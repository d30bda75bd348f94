//! Step 1: the store a SecretSync names — found in the cache, validated, admitted for the
//! SecretSync's namespace, and connected.

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use secretsync_api::validate::{StoreScope, refs_leaving_namespace, validate_store};
use secretsync_api::{SecretStoreSpec, SecretSync, StoreCondition, StoreKind};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::providers::{Connected, StoreIdentity};

/// A store resolved for one SecretSync: its identity and connected provider.
pub struct ResolvedStore {
    pub kind: StoreKind,
    pub name: String,
    /// The provider, the store's rate limiter and its shared reads.
    pub connected: Connected,
}

/// Finds the store a SecretSync names, checks it may be used from the SecretSync's
/// namespace, and returns its connected provider.
pub(super) async fn resolve(sync: &SecretSync, ctx: &Context) -> Result<ResolvedStore> {
    let namespace = sync.namespace().unwrap_or_default();
    let name = sync.spec.store_ref.name.clone();
    let kind = sync.spec.store_kind();
    let (spec, uid, generation, scope) = match kind {
        StoreKind::SecretStore => {
            let store = ctx
                .stores
                .get(&ObjectRef::new(&name).within(&namespace))
                .ok_or_else(|| Error::StoreNotFound {
                    kind: "SecretStore",
                    name: name.clone(),
                    namespace: Some(namespace.clone()),
                })?;
            (
                store.spec.clone(),
                store.uid().unwrap_or_default(),
                store.metadata.generation.unwrap_or_default(),
                StoreScope::Namespaced,
            )
        }
        StoreKind::ClusterSecretStore => {
            let store = ctx
                .cluster_stores
                .get(&ObjectRef::new(&name))
                .ok_or_else(|| Error::StoreNotFound {
                    kind: "ClusterSecretStore",
                    name: name.clone(),
                    namespace: None,
                })?;
            (
                store.spec.store.clone(),
                store.uid().unwrap_or_default(),
                store.metadata.generation.unwrap_or_default(),
                StoreScope::Cluster,
            )
        }
    };
    // Tenancy before validity: a SecretStore may not lend this namespace credentials kept in
    // another one, whatever else is wrong with it.
    if scope == StoreScope::Namespaced {
        let refs = refs_leaving_namespace(&spec);
        if !refs.is_empty() {
            return Err(Error::StoreRefsLeaveNamespace {
                store: name,
                namespace,
                refs,
            });
        }
    }
    validate_store(&spec, scope).map_err(|problems| Error::StoreInvalid {
        kind: kind.as_str(),
        name: name.clone(),
        problems,
    })?;
    if scope == StoreScope::Cluster {
        check_admitted(ctx, &spec, &name, &namespace).await?;
    }
    let identity = StoreIdentity {
        uid: &uid,
        generation,
        name: &name,
        namespace: (scope == StoreScope::Namespaced).then_some(namespace.as_str()),
    };
    let connected = ctx.providers.get(&ctx.client, &spec, &identity).await?;
    Ok(ResolvedStore {
        kind,
        name,
        connected,
    })
}

/// Reads the namespace's labels only when a rule needs them.
async fn check_admitted(
    ctx: &Context,
    spec: &SecretStoreSpec,
    store: &str,
    namespace: &str,
) -> Result<()> {
    let conditions = spec.conditions.as_deref().unwrap_or_default();
    let labels = if conditions.iter().any(|c| c.namespace_selector.is_some())
        && !admits(conditions, namespace, &Default::default())
    {
        Api::<Namespace>::all(ctx.client.clone())
            .get_opt(namespace)
            .await?
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    } else {
        Default::default()
    };
    if admits(conditions, namespace, &labels) {
        Ok(())
    } else {
        Err(Error::StoreNotAllowed {
            store: store.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// Whether a ClusterSecretStore's `conditions` admit a namespace with these labels. Without
/// conditions every namespace is admitted (as External Secrets Operator does).
pub fn admits(
    conditions: &[StoreCondition],
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    conditions.is_empty() || conditions.iter().any(|c| c.admits(namespace, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(yaml: &str) -> Vec<StoreCondition> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn conditions_admit_by_name_or_labels() {
        let rules = conditions(
            r#"
- namespaces: [payments]
- namespaceSelector: {matchLabels: {secrets: allowed}}
"#,
        );
        let none = Default::default();
        let allowed: std::collections::BTreeMap<String, String> =
            [("secrets".into(), "allowed".into())].into();
        assert!(admits(&rules, "payments", &none));
        assert!(admits(&rules, "shop", &allowed));
        assert!(!admits(&rules, "shop", &none));
        assert!(admits(&[], "anything", &none), "no conditions admit all");
    }
}
