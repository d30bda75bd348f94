//! Reading credentials from Kubernetes Secrets named by a store.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secretsync_api::SecretKeySelector;

use crate::error::{ProviderError, Result};
use crate::value::SecretString;
use crate::ConnectContext;

/// The namespace a reference resolves in: the store's own for a SecretStore, the
/// reference's for a ClusterSecretStore.
pub(crate) fn namespace_for<'a>(
    ctx: &'a ConnectContext,
    explicit: Option<&'a str>,
    field: &str,
) -> Result<&'a str> {
    match (&ctx.store_namespace, explicit) {
        (Some(ns), None) => Ok(ns),
        (Some(_), Some(_)) => Err(ProviderError::InvalidConfig(format!(
            "{field}.namespace is not allowed in a SecretStore"
        ))),
        (None, Some(ns)) => Ok(ns),
        (None, None) => Err(ProviderError::InvalidConfig(format!(
            "{field}.namespace is required in a ClusterSecretStore"
        ))),
    }
}

/// The value of `selector` as a string credential (tokens, secret-ids, keys).
pub(crate) async fn read_key(
    ctx: &ConnectContext,
    selector: &SecretKeySelector,
    field: &str,
) -> Result<SecretString> {
    let namespace = namespace_for(ctx, selector.namespace.as_deref(), field)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = match api.get_opt(&selector.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(ProviderError::AuthFailed(format!(
                "credentials Secret {namespace}/{} ({field}) not found",
                selector.name
            )));
        }
        Err(e) => {
            return Err(ProviderError::Unavailable(format!(
                "reading credentials Secret {namespace}/{}: {e}",
                selector.name
            )));
        }
    };
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(&selector.key))
        .ok_or_else(|| {
            ProviderError::AuthFailed(format!(
                "credentials Secret {namespace}/{} has no key {:?} ({field})",
                selector.name, selector.key
            ))
        })?;
    let text = String::from_utf8(bytes.0).map_err(|_| {
        ProviderError::AuthFailed(format!(
            "credentials Secret {namespace}/{} key {:?} is not UTF-8 ({field})",
            selector.name, selector.key
        ))
    })?;
    Ok(SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned()))
}
