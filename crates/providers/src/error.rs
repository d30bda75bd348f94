use secretsync_api::Reason;
use thiserror::Error;

/// What can go wrong talking to a backend. Messages name keys, paths and stores, never
/// values: they end up in conditions and events.
#[derive(Clone, Debug, Error)]
pub enum ProviderError {
    #[error("remote key {key:?} not found")]
    NotFound { key: String },
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
            | ProviderError::PropertyNotFound { .. }
            | ProviderError::NotStructured { .. } => Reason::RemoteKeyNotFound,
            ProviderError::AuthFailed(_) | ProviderError::PermissionDenied(_) => {
                Reason::ProviderAuthFailed
            }
            ProviderError::Unavailable(_) => Reason::ProviderUnavailable,
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

/// `s` cut to 300 characters, marked with an ellipsis when cut.
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub(crate) fn cut(s: &str) -> String {
    let mut cut: String = s.chars().take(300).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    cut
}
