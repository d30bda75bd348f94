//! Counters of what the operator did. The Prometheus endpoint (metrics issue) will export
//! these; benchmarks and tests read them directly. One `Metrics` per operator instance, so
//! tests running several operators in one process count separately.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles finished (successful or not).
    pub reconciles: AtomicU64,
    /// Reconciles that returned an error.
    pub reconcile_errors: AtomicU64,
    /// Reads from a secrets backend.
    pub backend_reads: AtomicU64,
    /// Versioned Secrets created.
    pub versions_created: AtomicU64,
    /// Status patches written.
    pub status_writes: AtomicU64,
    /// Store Ready checks made against a backend.
    pub store_checks: AtomicU64,
    /// API writes that did not finish within the write timeout.
    pub api_write_timeouts: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
