use secretsync_api::Reason;
use thiserror::Error;

/// What can go wrong talking to a backend. Messages name keys, paths and stores, never
/// values: they end up in conditions and events.
#[derive(Clone, Debug, Error)]
pub enum ProviderError {
    #[error("remote key {key:?} not found")]
    NotFound { key: String },
    /// The key exists but is deleted for now (an AWS secret scheduled for deletion, a
    /// soft-deleted KV v2 version): `detail` says how and how to bring it back.
    #[error("remote key {key:?} {detail}")]
    KeyDeleted { key: String, detail: String },
    #[error("remote key {key:?} has no property {property:?}")]
    PropertyNotFound { key: String, property: String },
    #[error("remote key {key:?} is not a JSON object, so {what}")]
    NotStructured { key: String, what: &'static str },
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The TLS handshake failed on trust (the server's certificate, or ours): a retry
    /// alone cannot fix it.
    #[error("TLS handshake failed: {0}")]
    TlsFailed(String),
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
}

impl ProviderError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }

    /// The condition reason a user sees.
    pub fn reason(&self) -> Reason {
        match self {
            ProviderError::NotFound { .. }
            | ProviderError::KeyDeleted { .. }
            | ProviderError::PropertyNotFound { .. }
            | ProviderError::NotStructured { .. } => Reason::RemoteKeyNotFound,
            ProviderError::AuthFailed(_) | ProviderError::PermissionDenied(_) => {
                Reason::ProviderAuthFailed
            }
            ProviderError::Unavailable(_) => Reason::ProviderUnavailable,
            ProviderError::TlsFailed(_) => Reason::ProviderTLSFailed,
            ProviderError::InvalidConfig(_) => Reason::StoreInvalid,
        }
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// The innermost cause of `error`, cut to 300 characters, for messages: SDK errors chain
/// their causes, and the innermost (an address, a TLS or HTTP failure) is the one a person
/// can act on. Never a payload: providers pass transport and credential errors only.
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cut(&cause.to_string())
}

/// `s` with its whitespace runs (an emulator's indented text, a line break) made one
/// space, cut to 300 characters and marked with an ellipsis when cut.
#[cfg(any(
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless"
))]
pub(crate) fn cut(s: &str) -> String {
    let tidy = tidy(s);
    let mut cut: String = tidy.chars().take(300).collect();
    if cut.len() < tidy.len() {
        cut.push('…');
    }
    cut
}

/// `s` with every run of whitespace made one space, and none at either end.
pub fn tidy(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a transport failure's text is a TLS trust failure (rustls' wording): the
/// server's certificate is not trusted, or the server refused ours.
pub fn is_tls_trust_failure(cause: &str) -> bool {
    [
        "invalid peer certificate",
        "CertificateRequired",
        "BadCertificate",
        "UnknownCA",
    ]
    .iter()
    .any(|marker| cause.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_become_one_space() {
        assert_eq!(
            tidy("  You can't perform this\n      operation   on the secret.  "),
            "You can't perform this operation on the secret."
        );
    }

    #[test]
    fn tls_trust_failures_have_their_own_reason_and_wait_for_a_fix() {
        let e = ProviderError::TlsFailed("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(e.reason(), Reason::ProviderTLSFailed);
        assert!(!e.is_retryable());
        assert!(is_tls_trust_failure(
            "invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_tls_trust_failure("Connection refused (os error 111)"));
    }
}
