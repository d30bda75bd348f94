//! API writes bounded in time: a write the API server does not answer must not hold a
//! reconcile, or a rollout batch other SecretSyncs wait on, for ever.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::metrics::Metrics;

/// Bounds an API write by `timeout`; a timed-out write is counted and retried like any
/// transient API error.
pub async fn bounded<T>(
    timeout: Duration,
    metrics: &Metrics,
    write: impl Future<Output = kube::Result<T>>,
) -> Result<kube::Result<T>> {
    tokio::time::timeout(timeout, write).await.map_err(|_| {
        metrics.api_write_timed_out();
        Error::WriteTimeout(timeout)
    })
}
