//! Reading credentials from Kubernetes: Secrets named by a store, ServiceAccount tokens.

#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::Secret;
#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
use kube::api::PostParams;
use secretsync_api::SecretKeySelector;
#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
use secretsync_api::ServiceAccountRef;

use crate::ConnectContext;
use crate::error::{ProviderError, Result};
use crate::value::SecretString;

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

/// The value of `selector` as a string credential (tokens, secret-ids, keys), a trailing
/// newline dropped (`kubectl create secret --from-file` keeps the file's). The Secret's
/// resourceVersion is recorded in `ctx.credentials`.
pub async fn read_key(
    ctx: &ConnectContext,
    selector: &SecretKeySelector,
    field: &str,
) -> Result<SecretString> {
    let namespace = namespace_for(ctx, selector.namespace.as_deref(), field)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api.get_opt(&selector.name).await;
    if let Ok(found) = &found {
        ctx.credentials.record(
            namespace,
            &selector.name,
            found
                .as_ref()
                .and_then(|s| s.metadata.resource_version.as_deref()),
        );
    }
    let secret = match found {
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
    Ok(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
/// How long a requested ServiceAccount token lives: the API server's minimum. It is used
/// once, to log in, so it never needs to outlive that.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 600;

#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
/// A short-lived token for the ServiceAccount `account` (TokenRequest API), for
/// `audiences` (empty: the API server's own).
pub(crate) async fn service_account_token(
    ctx: &ConnectContext,
    account: &ServiceAccountRef,
    audiences: &[String],
    field: &str,
) -> Result<SecretString> {
    let namespace = namespace_for(ctx, account.namespace.as_deref(), field)?;
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.to_vec(),
            expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let name = &account.name;
    match api
        .create_token_request(name, &PostParams::default(), &request)
        .await
    {
        Ok(response) => response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| {
                ProviderError::AuthFailed(format!(
                    "the TokenRequest for ServiceAccount {namespace}/{name} ({field}) returned no token"
                ))
            }),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(ProviderError::AuthFailed(format!(
                "ServiceAccount {namespace}/{name} ({field}) not found"
            )))
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Err(ProviderError::AuthFailed(format!(
                "the operator may not request tokens for ServiceAccount {namespace}/{name} \
                 ({field}): {}",
                status.message
            )))
        }
        Err(e) => Err(ProviderError::Unavailable(format!(
            "requesting a token for ServiceAccount {namespace}/{name}: {e}"
        ))),
    }
}
