//! Everything that can stop a reconcile, each with the condition reason a user sees and
//! how soon a retry makes sense. Messages name objects, keys and paths — never values.

use std::time::Duration;

use secretsync_api::Reason;
use secretsync_providers::ProviderError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),

    #[error("{kind} {name:?} not found{}; create it or fix spec.storeRef", in_namespace(.namespace))]
    StoreNotFound {
        kind: &'static str,
        name: String,
        namespace: Option<String>,
    },

    #[error(
        "ClusterSecretStore {store:?} does not admit namespace {namespace:?}; add the namespace to the store's spec.conditions"
    )]
    StoreNotAllowed { store: String, namespace: String },

    #[error(
        "SecretStore {store:?} names credentials outside namespace {namespace:?} ({}); a SecretStore reads credentials only from its own namespace: drop the namespace field, or use a ClusterSecretStore whose spec.conditions admit {namespace:?}",
        .refs.join(", ")
    )]
    StoreRefsLeaveNamespace {
        store: String,
        namespace: String,
        refs: Vec<String>,
    },

    #[error("{kind} {name:?} is invalid: {}", .problems.join("; "))]
    StoreInvalid {
        kind: &'static str,
        name: String,
        problems: Vec<String>,
    },

    #[error("store {store:?}: {source}")]
    Provider {
        store: String,
        #[source]
        source: ProviderError,
    },

    /// The store's backend is down (its last check failed): the SecretSync did not read
    /// and waits to be woken by the store's recovery. Reads as the store's own error.
    #[error("store {store:?}: {source}")]
    StoreDown {
        store: String,
        store_uid: String,
        generation: i64,
        #[source]
        source: ProviderError,
    },

    #[error("{0}")]
    InvalidSecretKey(String),

    #[error(
        "the Secret data would be {size} bytes, over the 1 MiB limit of a Kubernetes Secret; select fewer keys or properties"
    )]
    SecretTooLarge { size: usize },

    #[error("template for key {key:?}: {message}")]
    Template { key: String, message: String },

    /// Names where the value came from, never the value.
    #[error(
        "{place}: the value read is not {encoding} (decodingStrategy {strategy}); use Auto to store values that are not encoded as read"
    )]
    Decoding {
        place: String,
        encoding: &'static str,
        strategy: &'static str,
    },

    #[error(
        "pinVersion {version} is unavailable: {why}; pick a version listed as Active or Retained in status.versions"
    )]
    PinnedVersionUnavailable { version: i64, why: &'static str },

    #[error("{0}")]
    TargetConflict(String),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A batched workload patch failed; the batch's other SecretSyncs get the same text.
    #[error("Kubernetes API: rollout patch: {0}")]
    Rollout(String),

    #[error("Kubernetes API write timed out after {0:?}")]
    WriteTimeout(Duration),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_deref()
        .map(|ns| format!(" in namespace {ns:?}"))
        .unwrap_or_default()
}

/// How an error should be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Nothing changes until the object does: wait for an edit.
    OnChange,
    /// Transient (outages, API conflicts): exponential backoff from a short base.
    Soon,
    /// Needs a person (credentials, missing keys): exponential backoff from a longer base,
    /// so a fix is picked up without hammering the backend meanwhile.
    Later,
}

impl Error {
    /// The error this one wraps, looking through the finalizer's envelope.
    pub fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.inner(),
                _ => self,
            },
            other => other,
        }
    }

    pub fn reason(&self) -> Reason {
        match self.inner() {
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::StoreNotFound { .. } => Reason::StoreNotFound,
            Error::StoreNotAllowed { .. } | Error::StoreRefsLeaveNamespace { .. } => {
                Reason::StoreNotAllowed
            }
            Error::StoreInvalid { .. } => Reason::StoreInvalid,
            Error::Provider { source, .. } | Error::StoreDown { source, .. } => source.reason(),
            Error::InvalidSecretKey(_) => Reason::InvalidSecretKey,
            Error::SecretTooLarge { .. } => Reason::SecretTooLarge,
            Error::Template { .. } => Reason::TemplateError,
            Error::Decoding { .. } => Reason::DecodingFailed,
            Error::PinnedVersionUnavailable { .. } => Reason::PinnedVersionUnavailable,
            Error::TargetConflict(_) => Reason::TargetConflict,
            Error::Kube(_) | Error::Rollout(_) | Error::WriteTimeout(_) | Error::Finalizer(_) => {
                Reason::KubernetesApiError
            }
        }
    }

    pub fn retry(&self) -> Retry {
        match self.inner() {
            Error::InvalidSpec(_)
            | Error::PinnedVersionUnavailable { .. }
            | Error::Template { .. }
            | Error::TargetConflict(_) => Retry::OnChange,
            Error::Provider { source, .. } | Error::StoreDown { source, .. }
                if source.is_retryable() =>
            {
                Retry::Soon
            }
            Error::Kube(_) | Error::Rollout(_) | Error::WriteTimeout(_) | Error::Finalizer(_) => {
                Retry::Soon
            }
            _ => Retry::Later,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Capped exponential backoff with ±20% jitter: attempt 0 → `base`, doubling up to `cap`.
pub fn backoff_delay(retry: Retry, attempt: u32, max: Duration) -> Option<Duration> {
    let (base, cap) = match retry {
        Retry::OnChange => return None,
        Retry::Soon => (Duration::from_secs(1), Duration::from_secs(300)),
        Retry::Later => (Duration::from_secs(15), Duration::from_secs(900)),
    };
    let (base, cap) = (base.min(max), cap.min(max));
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Some(exp.min(cap).mul_f64(jitter))
}

/// When a store check is repeated after a failure. It stands in for every SecretSync of the
/// store, so it is short: an outage is noticed over within a second of the backend coming
/// back (one light call a second per down store); refused credentials or TLS, which need a
/// person, every 15 s (a changed credential Secret is checked at once anyway).
pub fn probe_delay(retry: Retry, attempt: u32, max: Duration) -> Option<Duration> {
    let (base, cap) = match retry {
        Retry::OnChange => return None,
        Retry::Soon => (Duration::from_millis(250), Duration::from_secs(1)),
        Retry::Later => (Duration::from_secs(15), Duration::from_secs(15)),
    };
    let (base, cap) = (base.min(max), cap.min(max));
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Some(exp.min(cap).mul_f64(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = crate::backoff::MAX_BACKOFF;

    #[test]
    fn backoff_grows_and_is_capped() {
        let d0 = backoff_delay(Retry::Soon, 0, MAX).unwrap();
        assert!(d0 >= Duration::from_millis(800) && d0 <= Duration::from_millis(1200));
        let d3 = backoff_delay(Retry::Soon, 3, MAX).unwrap();
        assert!(d3 >= Duration::from_millis(6400) && d3 <= Duration::from_millis(9600));
        let capped = backoff_delay(Retry::Soon, 30, MAX).unwrap();
        assert!(capped <= Duration::from_secs(360) && capped >= Duration::from_secs(240));
        assert!(backoff_delay(Retry::Later, 0, MAX).unwrap() >= Duration::from_secs(12));
        assert_eq!(backoff_delay(Retry::OnChange, 5, MAX), None);
        // A lower cap (`--max-backoff-seconds`) bounds every class.
        let low = Duration::from_secs(2);
        for attempt in [0, 3, 30] {
            for retry in [Retry::Soon, Retry::Later] {
                assert!(backoff_delay(retry, attempt, low).unwrap() <= low.mul_f64(1.2));
            }
        }
    }

    #[test]
    fn store_probes_stay_short() {
        for attempt in [0, 2, 30] {
            let soon = probe_delay(Retry::Soon, attempt, MAX).unwrap();
            assert!(soon <= Duration::from_millis(1200), "{soon:?}");
            let later = probe_delay(Retry::Later, attempt, MAX).unwrap();
            assert!(later >= Duration::from_secs(12) && later <= Duration::from_secs(18));
        }
        assert_eq!(probe_delay(Retry::OnChange, 0, MAX), None);
    }

    #[test]
    fn reasons_see_through_the_finalizer() {
        let inner = Error::SecretTooLarge { size: 2 << 20 };
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            inner,
        )));
        assert_eq!(wrapped.reason(), Reason::SecretTooLarge);
        assert_eq!(wrapped.retry(), Retry::Later);
    }
}
