//! The Azure Key Vault backend (`azurekv`), on Microsoft's official SDK crates.
//!
//! `remoteRef.key` is a secret's name (letters, digits and `-`). `remoteRef.version` is a
//! version id (the last segment of a secret's id); omitted, empty or `latest`: the latest
//! version. The value is the secret's `value`; the version reported is the id of the version
//! read, so a new version in the vault is a new version here.
//!
//! Authentication (`authType`): a service principal's client secret (`ServicePrincipal`,
//! read from Secrets at every token request, so a rotated secret is picked up), the node's
//! or pod's managed identity (`ManagedIdentity`), or Azure Workload Identity
//! (`WorkloadIdentity`: a token of `serviceAccountRef`, or else the operator's own
//! projected token, exchanged at Entra ID). The SDK learns the token's scope from the
//! vault's challenge (a first 401 with `WWW-Authenticate`), and by default refuses a
//! challenge whose resource is not the vault's own domain.
//!
//! Every request goes through one reqwest client on rustls with ring (the provider kube
//! uses): the SDK's default client would bring a second TLS stack. `caBundle` replaces its
//! roots. The SDK's retries are off: the operator has its own backoff, and a dead vault must
//! turn into `Unavailable` within seconds.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error as AzError, ErrorKind};
use azure_core::http::{ClientMethodOptions, ClientOptions, RetryOptions, StatusCode, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use secretsync_api::{AzureAuthSecretRef, AzureAuthType, AzureProvider, Find, ServiceAccountRef};

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result, cut, root_cause};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::value::{ExposeSecret, RemoteValue, SecretBytes};

/// Time to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one request, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `GET /secrets` page size (the API's maximum).
const LIST_PAGE_SIZE: i32 = 25;
/// The audience Azure Workload Identity's federated credentials expect.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The ServiceAccount annotations Azure Workload Identity reads.
const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";

/// A connected Azure Key Vault.
pub struct AzureKv {
    client: SecretClient,
    vault_url: String,
    /// Whose token is used, for messages: "the service principal in Secret payments/azure".
    identity: String,
}

/// Which version of a secret to read: `None` is the latest.
fn version_of(version: Option<&str>) -> Option<&str> {
    version.filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("latest"))
}

/// Whether `name` can be a Key Vault secret name: 1–127 letters, digits and dashes. The SDK
/// puts it into the URL path as it is, so anything else must not reach it.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AzureKv {
    /// Connects to the vault `spec` describes. Credentials named by the spec are read
    /// through `ctx`: a service principal's at every token request, a workload identity's
    /// ServiceAccount annotations now.
    pub async fn connect(spec: &AzureProvider, ctx: &ConnectContext) -> Result<AzureKv> {
        let vault_url = spec.vault_url.trim();
        let parsed = reqwest::Url::parse(vault_url).map_err(|e| {
            ProviderError::InvalidConfig(format!("vaultUrl {vault_url:?} is not a URL: {e}"))
        })?;
        if parsed.scheme() != "https" {
            return Err(ProviderError::InvalidConfig(format!(
                "vaultUrl {vault_url:?} must start with https://"
            )));
        }
        let options = client_options(spec)?;
        let (credential, identity) = credential(spec, ctx, &options).await?;
        let client = SecretClient::new(
            vault_url,
            credential,
            Some(SecretClientOptions {
                client_options: options,
                verify_challenge_resource: Some(spec.verify_challenge_resource.unwrap_or(true)),
                ..SecretClientOptions::default()
            }),
        )
        .map_err(|e| ProviderError::InvalidConfig(format!("vaultUrl {vault_url:?}: {e}")))?;
        Ok(AzureKv {
            client,
            vault_url: vault_url.to_owned(),
            identity,
        })
    }

    /// Reads the secret `key` at `version` (a version id; `None`, empty or `latest`: the
    /// latest version).
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        if !valid_name(key) {
            return Err(ProviderError::InvalidConfig(format!(
                "remote key {key:?} is not a Key Vault secret name (1-127 letters, digits and \
                 dashes)"
            )));
        }
        let version = version_of(version);
        if let Some(v) = version
            && !v.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ProviderError::InvalidConfig(format!(
                "version {v:?} of remote key {key:?} is not a Key Vault version id"
            )));
        }
        let shown = match version {
            Some(v) => format!("{key}@{v}"),
            None => key.to_owned(),
        };
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        let doing = format!("reading secret {shown:?}");
        let secret = self
            .client
            .get_secret(key, Some(options))
            .await
            .and_then(|response| response.into_model())
            .map_err(|e| self.describe(&e, &doing, &shown))?;
        let read_version = secret.resource_id().ok().and_then(|id| id.version);
        let Some(value) = secret.value else {
            return Err(ProviderError::Unavailable(format!(
                "Key Vault at {} answered for secret {shown:?} without a value",
                self.vault_url
            )));
        };
        Ok(RemoteValue {
            bytes: SecretBytes::from(value),
            version: read_version,
        })
    }

    /// The latest value of every enabled secret whose name matches `find.name.regexp` and
    /// that has all of `find.tags`, in name order. Key Vault cannot filter a listing, so
    /// both are applied to the listed properties here, before any value is read.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "azurekv", &["tags"])?;
        let doing = "listing secrets";
        let mut pager = self
            .client
            .list_secret_properties(Some(SecretClientListSecretPropertiesOptions {
                maxresults: Some(LIST_PAGE_SIZE),
                ..Default::default()
            }))
            .map_err(|e| self.describe(&e, doing, ""))?;
        let mut names = Vec::new();
        while let Some(properties) = pager
            .try_next()
            .await
            .map_err(|e| self.describe(&e, doing, ""))?
        {
            let enabled = properties
                .attributes
                .as_ref()
                .and_then(|a| a.enabled)
                .unwrap_or(true);
            let Ok(id) = properties.resource_id() else {
                continue;
            };
            let tags: Vec<(&str, &str)> = properties
                .tags
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if enabled && matcher.name_matches(&id.name) && matcher.tags_match(&tags) {
                names.push(id.name);
                if names.len() > MAX_FOUND {
                    return Err(too_many());
                }
            }
        }
        crate::find::read_each(names, |name| async move { self.fetch(&name, None).await }).await
    }

    /// Checks that the vault accepts the credentials, by listing one secret's properties.
    /// A denial still proves them valid (the vault authenticated the request), and reading
    /// secrets does not need the list permission, so it counts as success.
    pub async fn check(&self) -> Result<()> {
        let doing = "listing secrets to check the credentials";
        let mut pages = self
            .client
            .list_secret_properties(Some(SecretClientListSecretPropertiesOptions {
                maxresults: Some(1),
                ..Default::default()
            }))
            .map_err(|e| self.describe(&e, doing, ""))?
            .into_pages();
        match pages.try_next().await {
            Ok(_) => Ok(()),
            Err(e) => match self.describe(&e, doing, "") {
                ProviderError::PermissionDenied(_) => Ok(()),
                error => Err(error),
            },
        }
    }

    /// The user-facing error for `error` while `doing` something; `key` names the secret
    /// for a not-found error. Messages carry codes, statuses and the service's own error
    /// message (which never holds a value), cut short.
    fn describe(&self, error: &AzError, doing: &str, key: &str) -> ProviderError {
        let identity = &self.identity;
        let vault = &self.vault_url;
        // Our own failure to read credentials from Kubernetes, passed on as it was.
        let std_chain =
            std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        if let Some(ours) = std_chain
            .into_iter()
            .find_map(|e| e.downcast_ref::<ProviderError>())
        {
            return ours.clone();
        }
        // A credential failure wraps the token endpoint's answer or the transport's error.
        if let Some(credential) = chain(error).find(|e| matches!(e.kind(), ErrorKind::Credential)) {
            if let Some(transport) = chain(credential).find(|e| is_transport(e)) {
                let cause = root_cause(transport);
                if crate::error::is_tls_trust_failure(&cause) {
                    return ProviderError::TlsFailed(format!(
                        "Entra ID for {identity} {doing}: {cause}{UNTRUSTED}"
                    ));
                }
                return ProviderError::Unavailable(format!(
                    "cannot get an Entra ID token for {identity} {doing}: {cause}"
                ));
            }
            return ProviderError::AuthFailed(format!(
                "Entra ID refused a token to {identity} {doing}: {}",
                root_cause(credential)
            ));
        }
        match error.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let detail = match error_code {
                    Some(code) => {
                        format!("{} {code}: {}", u16::from(*status), cut(&error.to_string()))
                    }
                    None => format!("{}: {}", u16::from(*status), cut(&error.to_string())),
                };
                match *status {
                    StatusCode::NotFound if !key.is_empty() => ProviderError::NotFound {
                        key: key.to_owned(),
                    },
                    StatusCode::Unauthorized => ProviderError::AuthFailed(format!(
                        "Key Vault at {vault} rejected the token of {identity} {doing} ({detail})"
                    )),
                    StatusCode::Forbidden => ProviderError::PermissionDenied(format!(
                        "{identity} may not do this {doing} ({detail}); check its role \
                         assignment (Key Vault Secrets User) or the vault's access policy and \
                         firewall"
                    )),
                    s if u16::from(s) == 429 || u16::from(s) >= 500 => ProviderError::Unavailable(
                        format!("Key Vault at {vault} failed {doing} ({detail})"),
                    ),
                    _ => ProviderError::InvalidConfig(format!(
                        "Key Vault at {vault} refused {doing} ({detail})"
                    )),
                }
            }
            ErrorKind::Connection | ErrorKind::Io => {
                let cause = root_cause(error);
                if crate::error::is_tls_trust_failure(&cause) {
                    ProviderError::TlsFailed(format!(
                        "Key Vault at {vault} {doing}: {cause}{UNTRUSTED}"
                    ))
                } else {
                    ProviderError::Unavailable(format!(
                        "cannot reach Key Vault at {vault} {doing}: {cause}"
                    ))
                }
            }
            ErrorKind::DataConversion => ProviderError::Unavailable(format!(
                "unexpected answer from Key Vault at {vault} {doing}: {}",
                root_cause(error)
            )),
            // The SDK's own refusals: a challenge for another domain, a URL it cannot use.
            _ => ProviderError::InvalidConfig(format!(
                "cannot talk to Key Vault at {vault} {doing}: {}",
                root_cause(error)
            )),
        }
    }
}

/// What a certificate trust failure needs: the store's own CA, or none for the public one.
const UNTRUSTED: &str = "; the certificate is not trusted: set caBundle to the CA that \
                         signed it";

/// `error` and the Azure errors it wraps, outermost first.
fn chain(error: &AzError) -> impl Iterator<Item = &AzError> {
    std::iter::successors(Some(error), |e| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<AzError>())
    })
}

/// Whether `error` is the transport's: no connection, a timeout, a reset.
fn is_transport(error: &AzError) -> bool {
    matches!(error.kind(), ErrorKind::Connection | ErrorKind::Io)
}

/// The pipeline options every client of a store shares: our HTTPS client, no SDK retries,
/// and the authority host when overridden.
fn client_options(spec: &AzureProvider) -> Result<ClientOptions> {
    install_crypto_provider();
    let mut http = reqwest::Client::builder()
        .tls_backend_rustls()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // REST guidelines keep Key Vault and Entra ID free of redirects; following one
        // would carry the bearer token elsewhere.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(bundle) = spec.ca_bundle.as_deref() {
        // caBundle replaces the system roots: the store trusts exactly that CA.
        http = http.tls_certs_only(crate::tls::parse_ca_bundle(bundle)?);
    }
    let http = http.build().map_err(|e| {
        ProviderError::InvalidConfig(format!("cannot set up TLS for Key Vault (caBundle?): {e}"))
    })?;
    let cloud = match spec.authority_host.as_deref().map(str::trim) {
        Some(host) if !host.is_empty() => {
            if !host.starts_with("https://") {
                return Err(ProviderError::InvalidConfig(format!(
                    "authorityHost {host:?} must start with https://"
                )));
            }
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.to_owned();
            Some(Arc::new(CloudConfiguration::Custom(custom)))
        }
        _ => None,
    };
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: RetryOptions::none(),
        cloud,
        ..ClientOptions::default()
    })
}

/// The process's rustls provider: ring, like kube's client. Installed at most once, and
/// only when nothing else installed one first.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is already installed; it is used instead.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The token credential `spec.authType` asks for, and who it is (for messages).
async fn credential(
    spec: &AzureProvider,
    ctx: &ConnectContext,
    options: &ClientOptions,
) -> Result<(Arc<dyn TokenCredential>, String)> {
    let tenant = spec
        .tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match spec.auth_type() {
        AzureAuthType::ServicePrincipal => {
            let tenant = tenant.ok_or_else(|| {
                ProviderError::InvalidConfig(
                    "tenantId is required for authType ServicePrincipal".to_owned(),
                )
            })?;
            let refs = spec.auth_secret_ref.clone().ok_or_else(|| {
                ProviderError::InvalidConfig(
                    "authSecretRef (clientId and clientSecret) is required for authType \
                     ServicePrincipal"
                        .to_owned(),
                )
            })?;
            let credential = SecretRefCredential::new(ctx, tenant, refs, options.clone())?;
            let identity = format!("the service principal in {}", credential.location);
            Ok((Arc::new(credential), identity))
        }
        AzureAuthType::ManagedIdentity => {
            let user_assigned_id = spec
                .identity_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .map(|id| UserAssignedId::ClientId(id.to_owned()));
            let identity = match &user_assigned_id {
                Some(UserAssignedId::ClientId(id)) => format!("the managed identity {id}"),
                _ => "the system-assigned managed identity".to_owned(),
            };
            let credential =
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    client_options: options.clone(),
                }))
                .map_err(|e| ProviderError::InvalidConfig(format!("managed identity: {e}")))?;
            Ok((credential, identity))
        }
        AzureAuthType::WorkloadIdentity => {
            let field = "authSecretRef.clientId";
            let client_id = match spec
                .auth_secret_ref
                .as_ref()
                .and_then(|r| r.client_id.as_ref())
            {
                Some(selector) => Some(
                    credentials::read_key(ctx, selector, field)
                        .await?
                        .expose_secret()
                        .to_owned(),
                ),
                None => None,
            };
            match &spec.service_account_ref {
                Some(account) => {
                    workload_identity_of(ctx, account, tenant, client_id, options).await
                }
                None => {
                    let credential =
                        WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                            credential_options: ClientAssertionCredentialOptions {
                                client_options: options.clone(),
                            },
                            client_id,
                            tenant_id: tenant.map(str::to_owned),
                            ..Default::default()
                        }))
                        .map_err(|e| {
                            ProviderError::AuthFailed(format!(
                                "the operator's own workload identity is not set up (is its \
                                 pod labelled azure.workload.identity/use=true and its \
                                 ServiceAccount annotated with a client id?): {e}"
                            ))
                        })?;
                    Ok((credential, "the operator's workload identity".to_owned()))
                }
            }
        }
    }
}

/// Azure Workload Identity for the ServiceAccount `account`: its client id (unless given)
/// and tenant (unless given) from its annotations, its tokens as the client assertion.
async fn workload_identity_of(
    ctx: &ConnectContext,
    account: &ServiceAccountRef,
    tenant: Option<&str>,
    client_id: Option<String>,
    options: &ClientOptions,
) -> Result<(Arc<dyn TokenCredential>, String)> {
    let field = "serviceAccountRef";
    let namespace = credentials::namespace_for(ctx, account.namespace.as_deref(), field)?;
    let name = &account.name;
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| {
        ProviderError::Unavailable(format!("reading ServiceAccount {namespace}/{name}: {e}"))
    })?;
    let Some(found) = found else {
        return Err(ProviderError::AuthFailed(format!(
            "ServiceAccount {namespace}/{name} ({field}) not found"
        )));
    };
    let annotation = |key: &str| {
        found
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let client_id = client_id.or_else(|| annotation(CLIENT_ID_ANNOTATION)).ok_or_else(|| {
        ProviderError::AuthFailed(format!(
            "ServiceAccount {namespace}/{name} has no {CLIENT_ID_ANNOTATION} annotation and the \
             store no authSecretRef.clientId"
        ))
    })?;
    let tenant = tenant
        .map(str::to_owned)
        .or_else(|| annotation(TENANT_ID_ANNOTATION))
        .or_else(|| std::env::var("AZURE_TENANT_ID").ok())
        .ok_or_else(|| {
            ProviderError::InvalidConfig(format!(
                "no tenant: set tenantId, or annotate ServiceAccount {namespace}/{name} with \
                 {TENANT_ID_ANNOTATION}"
            ))
        })?;
    let assertion = ServiceAccountAssertion {
        ctx: ctx.clone(),
        account: account.clone(),
    };
    let credential = ClientAssertionCredential::new(
        tenant,
        client_id.clone(),
        assertion,
        Some(ClientAssertionCredentialOptions {
            client_options: options.clone(),
        }),
    )
    .map_err(|e| ProviderError::InvalidConfig(format!("workload identity: {e}")))?;
    Ok((
        credential,
        format!("the workload identity {client_id} of ServiceAccount {namespace}/{name}"),
    ))
}

/// A fresh token of a ServiceAccount, for Entra ID's token exchange.
struct ServiceAccountAssertion {
    ctx: ConnectContext,
    account: ServiceAccountRef,
}

impl fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountAssertion")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        credentials::service_account_token(
            &self.ctx,
            &self.account,
            &[TOKEN_EXCHANGE_AUDIENCE.to_owned()],
            "serviceAccountRef",
        )
        .await
        .map(|token| token.expose_secret().to_owned())
        .map_err(|e| AzError::new(ErrorKind::Credential, e))
    }
}

/// A service principal's client secret read from the Secrets `authSecretRef` names, each
/// time a token is requested (the SDK keeps a token until it nears expiry), so a rotated
/// secret takes effect.
struct SecretRefCredential {
    ctx: ConnectContext,
    tenant: String,
    refs: AzureAuthSecretRef,
    options: ClientOptions,
    /// "Secret payments/azure", for messages.
    location: String,
}

impl SecretRefCredential {
    const ID_FIELD: &str = "authSecretRef.clientId";
    const SECRET_FIELD: &str = "authSecretRef.clientSecret";

    /// Resolves the references' namespaces now, so a misplaced namespace is a store error.
    fn new(
        ctx: &ConnectContext,
        tenant: &str,
        refs: AzureAuthSecretRef,
        options: ClientOptions,
    ) -> Result<Self> {
        let (Some(id), Some(secret)) = (&refs.client_id, &refs.client_secret) else {
            return Err(ProviderError::InvalidConfig(
                "authSecretRef.clientId and .clientSecret are required for authType \
                 ServicePrincipal"
                    .to_owned(),
            ));
        };
        let id_ns = credentials::namespace_for(ctx, id.namespace.as_deref(), Self::ID_FIELD)?;
        let secret_ns =
            credentials::namespace_for(ctx, secret.namespace.as_deref(), Self::SECRET_FIELD)?;
        let location = if (id_ns, &id.name) == (secret_ns, &secret.name) {
            format!("Secret {id_ns}/{}", id.name)
        } else {
            format!(
                "Secrets {id_ns}/{} and {secret_ns}/{}",
                id.name, secret.name
            )
        };
        Ok(Self {
            ctx: ctx.clone(),
            tenant: tenant.to_owned(),
            refs,
            options,
            location,
        })
    }

    async fn load(&self) -> Result<Arc<ClientSecretCredential>> {
        let (Some(id), Some(secret)) = (&self.refs.client_id, &self.refs.client_secret) else {
            unreachable!("checked in new")
        };
        let id = credentials::read_key(&self.ctx, id, Self::ID_FIELD).await?;
        let secret = credentials::read_key(&self.ctx, secret, Self::SECRET_FIELD).await?;
        ClientSecretCredential::new(
            &self.tenant,
            id.expose_secret().to_owned(),
            Secret::new(secret.expose_secret().to_owned()),
            Some(ClientSecretCredentialOptions {
                client_options: self.options.clone(),
            }),
        )
        .map_err(|e| ProviderError::InvalidConfig(format!("service principal: {e}")))
    }
}

impl fmt::Debug for SecretRefCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRefCredential")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for SecretRefCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // Our error travels inside the SDK's, to come out as it was in `describe`.
        let credential = self
            .load()
            .await
            .map_err(|e| AzError::new(ErrorKind::Credential, e))?;
        credential.get_token(scopes, options).await
    }
}

impl fmt::Debug for AzureKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKv")
            .field("vault_url", &self.vault_url)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        assert_eq!(version_of(None), None);
        assert_eq!(version_of(Some("")), None);
        assert_eq!(version_of(Some("latest")), None);
        assert_eq!(version_of(Some("0f1e2d")), Some("0f1e2d"));
        assert!(valid_name("db-password-2"));
        for bad in ["", "a/b", "a b", "a_b", "..", &"a".repeat(128)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
