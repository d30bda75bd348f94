//! secretsync's secret backends.
//!
//! The CRD's provider block is a serde enum ([`secretsync_api::Provider`]); the runtime side
//! is the closed enum [`Provider`], dispatching with native `async fn` to one implementation
//! per backend, each behind a cargo feature. The capability is deliberately narrow: fetch a
//! value and the backend's own version id. Values travel in redacting types
//! ([`value::SecretBytes`]) from the backend to the Secret body.

pub mod error;
pub mod extract;
#[cfg(feature = "fake")]
pub mod fake;
pub mod value;
#[cfg(feature = "vault")]
pub mod vault;

#[cfg(feature = "vault")]
mod credentials;

pub use error::{ProviderError, Result};
pub use value::{RemoteValue, SecretBytes, SecretData};

/// Everything a provider may need to connect: the API client for credential Secrets and
/// ServiceAccount tokens, and where the store lives.
#[derive(Clone)]
pub struct ConnectContext {
    pub client: kube::Client,
    /// The store's namespace for a `SecretStore`; `None` for a `ClusterSecretStore`, whose
    /// references name their own namespaces.
    pub store_namespace: Option<String>,
}

/// A connected backend. Built once per (store UID, generation) and shared by every
/// SecretSync using that store.
#[derive(Debug)]
pub enum Provider {
    #[cfg(feature = "vault")]
    Vault(vault::Vault),
    #[cfg(feature = "fake")]
    Fake(fake::Fake),
}

impl Provider {
    /// Connects to the backend a store describes, reading its credentials. Logging in may
    /// be deferred to the first fetch.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))] // ctx: credentials
    pub async fn connect(spec: &secretsync_api::Provider, ctx: &ConnectContext) -> Result<Self> {
        match spec {
            #[cfg(feature = "vault")]
            secretsync_api::Provider::Vault(vault) => {
                Ok(Provider::Vault(vault::Vault::connect(vault, ctx).await?))
            }
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
    #[cfg_attr(not(any(feature = "vault", feature = "fake")), allow(unused_variables))] // no backend compiled in: nothing to fetch with
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.fetch(key, version).await,
            #[cfg(feature = "fake")]
            Provider::Fake(ref f) => f.fetch(key, version),
        }
    }

    /// Checks the credentials against the backend (for the store's Ready condition).
    pub async fn check(&self) -> Result<()> {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(ref v) => v.check().await,
            #[cfg(feature = "fake")]
            Provider::Fake(_) => Ok(()),
        }
    }

    pub fn name(&self) -> &'static str {
        match *self {
            #[cfg(feature = "vault")]
            Provider::Vault(_) => "vault",
            #[cfg(feature = "fake")]
            Provider::Fake(_) => "fake",
        }
    }
}
