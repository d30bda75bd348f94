//! secretsync's secret backends.
//!
//! The CRD's provider block is a serde enum ([`secretsync_api::Provider`]); the runtime side
//! is the closed enum [`Provider`], dispatching with native `async fn` to one implementation
//! per backend, each behind a cargo feature. The capability is deliberately narrow: fetch
//! values (one, many, or those a `dataFrom.find` matches) and the backend's own version id.
//! Values travel in redacting types ([`value::SecretBytes`]) from the backend to the Secret
//! body.

#[cfg(feature = "akeyless")]
pub mod akeyless;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "conjur")]
pub mod conjur;
pub mod error;
pub mod extract;
#[cfg(feature = "fake")]
pub mod fake;
pub mod find;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod value;
#[cfg(feature = "vault")]
pub mod vault;

#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless"
))]
mod credentials;
#[cfg(any(feature = "conjur", feature = "akeyless"))]
mod rest;
#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless"
))]
mod tls;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretsync_api::{DynamicSecret, Find, PkiIssue};

#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless"
))]
pub use credentials::read_key;
pub use error::{ProviderError, Result};
pub use value::{Issued, Lease, RemoteValue, Renewed, SecretBytes, SecretData, StaticRead};

/// What a version's credential is issued from.
#[derive(Clone, Copy, Debug)]
pub enum IssueFrom<'a> {
    /// A PKI engine's certificate.
    Pki(&'a PkiIssue),
    /// Any other engine's lease-issuing path (`database/creds/<role>`).
    Dynamic(&'a DynamicSecret),
}

/// Everything a provider may need to connect: the API client for credential Secrets and
/// ServiceAccount tokens, and where the store lives.
#[derive(Clone)]
pub struct ConnectContext {
    pub client: kube::Client,
    /// The store's namespace for a `SecretStore`; `None` for a `ClusterSecretStore`, whose
    /// references name their own namespaces.
    pub store_namespace: Option<String>,
    /// Every credential Secret read while connecting, filled as they are read.
    pub credentials: CredentialLog,
}

impl ConnectContext {
    pub fn new(client: kube::Client, store_namespace: Option<String>) -> Self {
        Self {
            client,
            store_namespace,
            credentials: CredentialLog::default(),
        }
    }
}

/// The credential Secrets a connection read, each with the resourceVersion it had then (""
/// for one that did not exist). A connection holds what it read (a Vault token, a client
/// certificate) for as long as it lives, so the operator compares these with the Secrets as
/// they are now to tell when replaced credentials need a new connection.
#[derive(Clone, Debug, Default)]
pub struct CredentialLog(Arc<Mutex<BTreeMap<(String, String), String>>>);

impl CredentialLog {
    pub fn record(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (namespace.to_owned(), name.to_owned()),
            resource_version.unwrap_or_default().to_owned(),
        );
    }

    /// `((namespace, name), resourceVersion)` of every Secret read.
    pub fn entries(&self) -> Vec<((String, String), String)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A connected backend. Built once per (store UID, generation) and shared by every
/// SecretSync using that store.
#[derive(Debug)]
pub enum Provider {
    #[cfg(feature = "vault")]
    Vault(vault::Vault),
    #[cfg(feature = "aws")]
    Aws(aws::Aws),
    #[cfg(feature = "azure")]
    Azurekv(azure::AzureKv),
    #[cfg(feature = "gcp")]
    Gcp(gcp::Gcp),
    #[cfg(feature = "conjur")]
    Conjur(conjur::Conjur),
    #[cfg(feature = "akeyless")]
    Akeyless(akeyless::Akeyless),
    #[cfg(feature = "fake")]
    Fake(fake::Fake),
}

impl Provider {
    /// Connects to the backend a store describes, reading its credentials. Logging in may
    /// be deferred to the first fetch.
    #[cfg_attr(
        not(any(
            feature = "vault",
            feature = "aws",
            feature = "azure",
            feature = "gcp",
            feature = "conjur",
            feature = "akeyless"
        )),
        allow(unused_variables)
    )] // ctx: credentials
    pub async fn connect(spec: &secretsync_api::Provider, ctx: &ConnectContext) -> Result<Self> {
        match spec {
            #[cfg(feature = "vault")]
            secretsync_api::Provider::Vault(vault) => {
                Ok(Provider::Vault(vault::Vault::connect(vault, ctx).await?))
            }
            #[cfg(feature = "aws")]
            secretsync_api::Provider::Aws(aws) => {
                Ok(Provider::Aws(aws::Aws::connect(aws, ctx).await?))
            }
            #[cfg(feature = "azure")]
            secretsync_api::Provider::Azurekv(azure) => Ok(Provider::Azurekv(
                azure::AzureKv::connect(azure, ctx).await?,
            )),
            #[cfg(feature = "gcp")]
            secretsync_api::Provider::Gcpsm(gcp) => {
                Ok(Provider::Gcp(gcp::Gcp::connect(gcp, ctx).await?))
            }
            #[cfg(feature = "conjur")]
            secretsync_api::Provider::Conjur(conjur) => Ok(Provider::Conjur(
                conjur::Conjur::connect(conjur, ctx).await?,
            )),
            #[cfg(feature = "akeyless")]
            secretsync_api::Provider::Akeyless(akeyless) => Ok(Provider::Akeyless(
                akeyless::Akeyless::connect(akeyless, ctx).await?,
            )),
            #[cfg(feature = "fake")]
            secretsync_api::Provider::Fake(fake) => Ok(Provider::Fake(fake::Fake::new(fake))),
            #[allow(unreachable_patterns)] // reachable exactly when a provider feature is off
            other => Err(ProviderError::InvalidConfig(format!(
                "the {} provider is not built into this operator",
                other.name()
            ))),
        }
    }

    /// Reads one remote secret, at `version` when given (else the latest).
    #[cfg_attr(
        not(any(
            feature = "vault",
            feature = "aws",
            feature = "azure",
            feature = "gcp",
            feature = "conjur",
            feature = "akeyless",
            feature = "fake"
        )),
        allow(unused_variables)
    )] // no backend compiled in: nothing to fetch with
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.fetch(key, version).await,
            #[cfg(feature = "aws")]
            Provider::Aws(ref a) => a.fetch(key, version).await,
            #[cfg(feature = "azure")]
            Provider::Azurekv(ref a) => a.fetch(key, version).await,
            #[cfg(feature = "gcp")]
            Provider::Gcp(ref g) => g.fetch(key, version).await,
            #[cfg(feature = "conjur")]
            Provider::Conjur(ref c) => c.fetch(key, version).await,
            #[cfg(feature = "akeyless")]
            Provider::Akeyless(ref a) => a.fetch(key, version).await,
            #[cfg(feature = "fake")]
            Provider::Fake(ref f) => f.fetch(key, version),
        }
    }

    /// Reads many remote secrets, each `(key, version)` like [`Provider::fetch`]; the
    /// results are in the order of `refs`. Backends with a batch API (AWS
    /// `BatchGetSecretValue`, Conjur `GET /secrets?variable_ids=`) read the latest versions in few requests; the others read one
    /// by one.
    pub async fn fetch_many(&self, refs: &[(&str, Option<&str>)]) -> Vec<Result<RemoteValue>> {
        match *self {
            #[cfg(feature = "aws")]
            Provider::Aws(ref a) => a.fetch_many(refs).await,
            #[cfg(feature = "conjur")]
            Provider::Conjur(ref c) => c.fetch_many(refs).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => {
                let mut values = Vec::with_capacity(refs.len());
                for (key, version) in refs {
                    values.push(self.fetch(key, *version).await);
                }
                values
            }
        }
    }

    /// The latest value of every remote secret `find` matches, with its remote name, in
    /// name order. More than [`find::MAX_FOUND`] matches is an error.
    #[cfg_attr(
        not(any(
            feature = "vault",
            feature = "aws",
            feature = "azure",
            feature = "gcp",
            feature = "conjur",
            feature = "akeyless",
            feature = "fake"
        )),
        allow(unused_variables)
    )] // no backend compiled in: nothing to search
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.find(find).await,
            #[cfg(feature = "aws")]
            Provider::Aws(ref a) => a.find(find).await,
            #[cfg(feature = "azure")]
            Provider::Azurekv(ref a) => a.find(find).await,
            #[cfg(feature = "gcp")]
            Provider::Gcp(ref g) => g.find(find).await,
            #[cfg(feature = "conjur")]
            Provider::Conjur(ref c) => c.find(find).await,
            #[cfg(feature = "akeyless")]
            Provider::Akeyless(ref a) => a.find(find).await,
            #[cfg(feature = "fake")]
            Provider::Fake(ref f) => f.find(find),
        }
    }

    /// Checks the credentials against the backend (for the store's Ready condition).
    pub async fn check(&self) -> Result<()> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.check().await,
            #[cfg(feature = "aws")]
            Provider::Aws(ref a) => a.check().await,
            #[cfg(feature = "azure")]
            Provider::Azurekv(ref a) => a.check().await,
            #[cfg(feature = "gcp")]
            Provider::Gcp(ref g) => g.check().await,
            #[cfg(feature = "conjur")]
            Provider::Conjur(ref c) => c.check().await,
            #[cfg(feature = "akeyless")]
            Provider::Akeyless(ref a) => a.check().await,
            #[cfg(feature = "fake")]
            Provider::Fake(_) => Ok(()),
        }
    }

    /// Whether this backend issues dynamic secrets with leases (`dataFrom.pki`).
    pub fn issues(&self) -> bool {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(_) => true,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => false,
        }
    }

    /// Issues a credential (a PKI certificate, a database login), with its lease. Only
    /// Vault/OpenBao issues.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // from: only Vault issues
    pub async fn issue(&self, from: IssueFrom<'_>) -> Result<Issued> {
        match (self, from) {
            #[cfg(feature = "vault")]
            (Provider::Vault(v), IssueFrom::Pki(pki)) => v.issue(pki).await,
            #[cfg(feature = "vault")]
            (Provider::Vault(v), IssueFrom::Dynamic(dynamic)) => v.issue_dynamic(dynamic).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    /// Reads a static role's credential, and how long until the backend rotates it.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // only Vault issues
    pub async fn read_static(&self, dynamic: &DynamicSecret) -> Result<StaticRead> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.read_static(dynamic).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    /// Renews a lease this backend issued by `increment`, as far as its max TTL allows.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // only Vault issues
    pub async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<Renewed> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.renew_lease(lease_id, increment).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    /// The ids of the leases directly under `prefix`.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // only Vault issues
    pub async fn leases_under(&self, prefix: &str) -> Result<Vec<String>> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.leases_under(prefix).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    /// When a lease was issued (RFC 3339); `None` for one the backend no longer knows.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // only Vault issues
    pub async fn lease_issue_time(&self, lease_id: &str) -> Result<Option<String>> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.lease_issue_time(lease_id).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    /// Revokes a lease this backend issued. A lease the backend no longer knows (expired,
    /// or revoked before) counts as revoked.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // lease_id: only Vault leases
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<()> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.revoke_lease(lease_id).await,
            #[allow(unreachable_patterns)] // reachable exactly when another provider is built in
            _ => Err(self.cannot_issue()),
        }
    }

    fn cannot_issue(&self) -> ProviderError {
        ProviderError::InvalidConfig(format!(
            "the {} provider issues no dynamic secrets (pki and dynamic need a Vault/OpenBao \
             store)",
            self.name()
        ))
    }

    pub fn name(&self) -> &'static str {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(_) => "vault",
            #[cfg(feature = "aws")]
            Provider::Aws(_) => "aws",
            #[cfg(feature = "azure")]
            Provider::Azurekv(_) => "azurekv",
            #[cfg(feature = "gcp")]
            Provider::Gcp(_) => "gcpsm",
            #[cfg(feature = "conjur")]
            Provider::Conjur(_) => "conjur",
            #[cfg(feature = "akeyless")]
            Provider::Akeyless(_) => "akeyless",
            #[cfg(feature = "fake")]
            Provider::Fake(_) => "fake",
        }
    }
}
