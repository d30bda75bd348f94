//! Step 1: the store a SecretSync names — found in the cache, validated, admitted for the
//! SecretSync's namespace, and connected.

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use secretsync_api::validate::{StoreScope, refs_leaving_namespace, validate_store};
use secretsync_api::{SecretStoreSpec, SecretSync, StoreCondition, StoreKind};

use crate::backend::connections::{Connected, StoreIdentity};
use crate::cache::syncs::{StoreKey, SyncRef};
use crate::context::Context;
use crate::error::{Error, Result};

/// A store resolved for one SecretSync: its identity and connected provider.
pub struct ResolvedStore {
    pub kind: StoreKind,
    pub name: String,
    pub uid: String,
    /// The provider, the store's rate limiter and its shared reads.
    pub connected: Connected,
}

fn store_key(sync: &SecretSync) -> StoreKey {
    let kind = sync.spec.store_kind();
    let namespace = (kind == StoreKind::SecretStore).then(|| sync.namespace().unwrap_or_default());
    (kind, namespace, sync.spec.store_ref.name.clone())
}

fn sync_ref(sync: &SecretSync) -> SyncRef {
    SyncRef::new(&sync.name_any()).within(&sync.namespace().unwrap_or_default())
}

/// Tells the store's backend health how a read through it went: a backend-wide failure
/// may mark the store down and wakes this SecretSync when it recovers.
pub(super) fn report<T>(
    ctx: &Context,
    store: &ResolvedStore,
    sync: &SecretSync,
    result: &Result<T>,
) {
    match result {
        Ok(_) => ctx.health.sync_succeeded(&store.uid, &sync_ref(sync)),
        Err(error) => failed(ctx, &store.uid, sync, error),
    }
}

fn failed(ctx: &Context, store_uid: &str, sync: &SecretSync, error: &Error) {
    ctx.health.sync_failed(
        store_uid,
        &store_key(sync),
        sync_ref(sync),
        &sync.uid().unwrap_or_default(),
        error.reason(),
    );
}

/// A store as the cache holds it.
struct Found {
    spec: SecretStoreSpec,
    uid: String,
    generation: i64,
    scope: StoreScope,
}

fn lookup(sync: &SecretSync, ctx: &Context) -> Result<Found> {
    let namespace = sync.namespace().unwrap_or_default();
    let name = &sync.spec.store_ref.name;
    Ok(match sync.spec.store_kind() {
        StoreKind::SecretStore => {
            let store = ctx
                .stores
                .get(&ObjectRef::new(name).within(&namespace))
                .ok_or_else(|| Error::StoreNotFound {
                    kind: "SecretStore",
                    name: name.clone(),
                    namespace: Some(namespace.clone()),
                })?;
            Found {
                spec: store.spec.clone(),
                uid: store.uid().unwrap_or_default(),
                generation: store.metadata.generation.unwrap_or_default(),
                scope: StoreScope::Namespaced,
            }
        }
        StoreKind::ClusterSecretStore => {
            let store = ctx
                .cluster_stores
                .get(&ObjectRef::new(name))
                .ok_or_else(|| Error::StoreNotFound {
                    kind: "ClusterSecretStore",
                    name: name.clone(),
                    namespace: None,
                })?;
            Found {
                spec: store.spec.store.clone(),
                uid: store.uid().unwrap_or_default(),
                generation: store.metadata.generation.unwrap_or_default(),
                scope: StoreScope::Cluster,
            }
        }
    })
}

/// Whether the store may serve the SecretSync's namespace: a SecretStore may not lend it
/// credentials kept in another namespace, and a ClusterSecretStore's `conditions` must
/// admit it.
fn tenancy(found: &Found, store: &str, namespace: &str, ctx: &Context) -> Result<()> {
    match found.scope {
        StoreScope::Namespaced => {
            let refs = refs_leaving_namespace(&found.spec);
            if refs.is_empty() {
                Ok(())
            } else {
                Err(Error::StoreRefsLeaveNamespace {
                    store: store.to_owned(),
                    namespace: namespace.to_owned(),
                    refs,
                })
            }
        }
        StoreScope::Cluster => check_admitted(ctx, &found.spec, store, namespace),
    }
}

/// Tenancy alone, from the caches, on every pass whether or not the backend is due: a
/// namespace that loses the label a ClusterSecretStore requires is refused at once. A store
/// not in the cache is left to the next refresh to report.
pub(super) fn still_allowed(sync: &SecretSync, ctx: &Context) -> Result<()> {
    match lookup(sync, ctx) {
        Ok(found) => tenancy(
            &found,
            &sync.spec.store_ref.name,
            &sync.namespace().unwrap_or_default(),
            ctx,
        ),
        Err(_) => Ok(()),
    }
}

/// Finds the store a SecretSync names, checks it may be used from the SecretSync's
/// namespace, and returns its connected provider.
pub(super) async fn resolve(sync: &SecretSync, ctx: &Context) -> Result<ResolvedStore> {
    let namespace = sync.namespace().unwrap_or_default();
    let name = sync.spec.store_ref.name.clone();
    let kind = sync.spec.store_kind();
    let found = lookup(sync, ctx)?;
    // Tenancy before validity: a SecretStore may not lend this namespace credentials kept in
    // another one, whatever else is wrong with it.
    tenancy(&found, &name, &namespace, ctx)?;
    validate_store(&found.spec, found.scope).map_err(|problems| Error::StoreInvalid {
        kind: kind.as_str(),
        name: name.clone(),
        problems,
    })?;
    let identity = StoreIdentity {
        uid: &found.uid,
        generation: found.generation,
        name: &name,
        namespace: (found.scope == StoreScope::Namespaced).then_some(namespace.as_str()),
    };
    // The store's backend is down: its check probes it; this SecretSync waits to be woken.
    if let Some(source) = ctx.health.down(&found.uid, found.generation) {
        let error = Error::StoreDown {
            store: name.clone(),
            store_uid: found.uid.clone(),
            generation: found.generation,
            source,
        };
        failed(ctx, &found.uid, sync, &error);
        return Err(error);
    }
    let connected = match ctx.providers.get(&ctx.client, &found.spec, &identity).await {
        Ok(connected) => connected,
        Err(error) => {
            failed(ctx, &found.uid, sync, &error);
            return Err(error);
        }
    };
    Ok(ResolvedStore {
        kind,
        name,
        uid: found.uid.clone(),
        connected,
    })
}

/// Admission by the store's `conditions`, against the namespace's labels as the Namespace
/// watch last saw them (a label change wakes the namespace's SecretSyncs).
fn check_admitted(
    ctx: &Context,
    spec: &SecretStoreSpec,
    store: &str,
    namespace: &str,
) -> Result<()> {
    let conditions = spec.conditions.as_deref().unwrap_or_default();
    if admits(conditions, namespace, &ctx.namespaces.labels(namespace)) {
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
