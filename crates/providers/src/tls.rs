//! The process's rustls crypto provider, for the clients that take it from the process
//! default instead of bringing their own (reqwest without a bundled provider; Google's
//! client and auth crates without their default aws-lc-rs), and the stores' `caBundle`.

#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
use crate::error::{ProviderError, Result};

#[cfg(any(
    feature = "vault",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless"
))]
/// Installs ring, the provider kube's client uses, at most once, and only when nothing
/// else installed one first.
pub(crate) fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is already installed; it is used instead.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(any(
    feature = "vault",
    feature = "azure",
    feature = "conjur",
    feature = "akeyless"
))]
/// The certificates of a store's `caBundle` (base64-encoded PEM).
pub(crate) fn parse_ca_bundle(bundle: &str) -> Result<Vec<reqwest::Certificate>> {
    use base64::Engine as _;
    let compact: String = bundle.split_whitespace().collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| ProviderError::InvalidConfig("caBundle is not valid base64".to_owned()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
        ProviderError::InvalidConfig("caBundle is not a PEM certificate bundle".to_owned())
    })?;
    if certs.is_empty() {
        return Err(ProviderError::InvalidConfig(
            "caBundle holds no PEM certificate".to_owned(),
        ));
    }
    Ok(certs)
}
