//! The process's rustls crypto provider, for the clients that take it from the process
//! default instead of bringing their own (reqwest without a bundled provider; Google's
//! client and auth crates without their default aws-lc-rs).

use std::sync::Once;

/// Installs ring, the provider kube's client uses, at most once, and only when nothing
/// else installed one first.
pub(crate) fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is already installed; it is used instead.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
