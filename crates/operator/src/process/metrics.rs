//! What the operator did, as Prometheus series (served on `/metrics` by [`crate::process::server`]).
//! One `Metrics` per operator instance, so tests running several operators in one process
//! count separately.
//!
//! Labels are a closed set: results, condition reasons, provider kinds, rollout outcomes.
//! Never object names, error messages or values, so the series count stays bounded and
//! nothing secret can leak through a label (guarantee 8).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use secretsync_api::Reason;
use secretsync_api::reason::event;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    provider: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreStateLabels {
    reason: &'static str,
}

/// A SecretSync's Ready condition. The reason is one of the operator's own condition
/// reasons (a closed set), never a message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    outcome: &'static str,
}

/// A store change event: its source, and whether it named a key some SecretSync reads
/// (`matched`), none (`unmatched`), was no change at all (`ignored`: requests, reads,
/// failed operations, lines that are no audit entry, events of other kinds), or was
/// refused unread (`refused`: a bad or missing signature or token, a replay, a body over
/// the limit, over the rate limit).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreEventLabels {
    source: &'static str,
    outcome: &'static str,
}

const SUCCESS: &str = "success";
const ERROR: &str = "error";

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    reconciles_in_flight: Gauge,
    versions_created: Counter,
    rollouts: Family<RolloutLabels, Counter>,
    revocations: Counter,
    backend_requests: Family<BackendLabels, Counter>,
    api_write_timeouts: Counter,
    store_events: Family<StoreEventLabels, Counter>,
    event_to_secret: Histogram,
    status_writes: Counter,
    store_checks: Counter,
    stores_backend_down: Family<StoreStateLabels, Gauge>,
    store_backend_recovery: Histogram,
    hashes_rekeyed: Counter,
    leader: Gauge,
    syncs: Family<ReadyLabels, Gauge>,
    /// What `syncs` counts each SecretSync (by UID) under.
    counted_as: Mutex<HashMap<String, ReadyLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            reconciles: Family::<ReconcileLabels, Counter>::default(),
            // 5 ms … ~41 s: a steady-state pass writes nothing and takes milliseconds; a
            // rotation waits on the backend and several API writes.
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            reconciles_in_flight: Gauge::default(),
            versions_created: Counter::default(),
            rollouts: Family::<RolloutLabels, Counter>::default(),
            revocations: Counter::default(),
            backend_requests: Family::<BackendLabels, Counter>::default(),
            api_write_timeouts: Counter::default(),
            store_events: Family::<StoreEventLabels, Counter>::default(),
            // 10 ms … ~82 s: an event becomes a Secret in tens of milliseconds unless a
            // backend or API server is slow.
            event_to_secret: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            status_writes: Counter::default(),
            store_checks: Counter::default(),
            stores_backend_down: Family::<StoreStateLabels, Gauge>::default(),
            // 0.25 s … ~68 min.
            store_backend_recovery: Histogram::new(exponential_buckets(0.25, 2.0, 15)),
            hashes_rekeyed: Counter::default(),
            syncs: Family::<ReadyLabels, Gauge>::default(),
            leader: Gauge::default(),
            counted_as: Mutex::default(),
        };
        let mut registry = Registry::with_prefix("secretsync");
        metrics.register(&mut registry);
        metrics.registry = registry;
        metrics
    }

    /// Every series, with its help text. Label values are closed sets (no object names).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "Reconciles finished, by result and condition reason",
            self.reconciles.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconcile",
            prometheus_client::registry::Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        // kube-runtime does not expose its queue; reconciles running now is the closest
        // saturation signal (compare with --concurrency).
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            self.reconciles_in_flight.clone(),
        );
        registry.register(
            "versions_created",
            "Versioned Secrets created",
            self.versions_created.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts to a workload, by outcome (started, complete, failed; reverted: someone else set it back and it was put back on the active version)",
            self.rollouts.clone(),
        );
        registry.register("revocations", "Versions revoked", self.revocations.clone());
        registry.register(
            "backend_requests",
            "Reads from a secrets backend, by provider and result",
            self.backend_requests.clone(),
        );
        registry.register(
            "api_write_timeouts",
            "Kubernetes API writes that did not finish within the write timeout",
            self.api_write_timeouts.clone(),
        );
        registry.register(
            "store_events",
            "Change events from the stores' backends, by source and outcome",
            self.store_events.clone(),
        );
        registry.register_with_unit(
            "event_to_secret",
            "From a store change event to the version it caused",
            prometheus_client::registry::Unit::Seconds,
            self.event_to_secret.clone(),
        );
        registry.register(
            "status_writes",
            "SecretSync status patches written",
            self.status_writes.clone(),
        );
        registry.register(
            "store_checks",
            "Store Ready checks made against a backend",
            self.store_checks.clone(),
        );
        // By reason, not by store: labels are a closed set (no object names).
        registry.register(
            "stores_backend_down",
            "Stores whose backend failed its check for a backend-wide reason (unavailable, \
             credentials refused, TLS), by reason; their SecretSyncs wait for the store check \
             instead of each reading the backend",
            self.stores_backend_down.clone(),
        );
        registry.register_with_unit(
            "store_backend_recovery",
            "Time from a store's backend failing its check to the check passing again",
            prometheus_client::registry::Unit::Seconds,
            self.store_backend_recovery.clone(),
        );
        registry.register(
            "hashes_rekeyed",
            "Version content hashes rewritten with the current content-hash key after the key \
             changed (data unchanged: no version made)",
            self.hashes_rekeyed.clone(),
        );
        registry.register(
            "syncs",
            "SecretSyncs by their Ready condition's status and reason, as this process last \
             computed it (the leader; a standby reports none)",
            self.syncs.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without election)",
            self.leader.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                // Set by the image build; absent in a plain `cargo build`.
                (
                    "git_sha",
                    option_env!("SECRETSYNC_GIT_SHA").unwrap_or("unknown"),
                ),
            ]),
        );
    }

    /// Runs one reconcile, counting it by result and reason and timing it.
    pub async fn measure_reconcile<T>(
        &self,
        reconcile: impl Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        self.reconciles_in_flight.inc();
        let started = Instant::now();
        let result = reconcile.await;
        self.reconciles_in_flight.dec();
        self.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        let labels = match &result {
            Ok(_) => ReconcileLabels {
                result: SUCCESS,
                reason: Reason::Synced.as_str(),
            },
            Err(e) => ReconcileLabels {
                result: ERROR,
                reason: e.reason().as_str(),
            },
        };
        self.reconciles.get_or_create(&labels).inc();
        result
    }

    /// One read from a backend; `provider` is the provider kind (`vault`, `fake`, …).
    pub fn backend_request(&self, provider: &'static str, ok: bool) {
        let result = if ok { SUCCESS } else { ERROR };
        self.backend_requests
            .get_or_create(&BackendLabels { provider, result })
            .inc();
    }

    pub fn version_created(&self) {
        self.versions_created.inc();
    }

    pub fn store_checked(&self) {
        self.store_checks.inc();
    }

    /// A store's backend failed its check for `reason`.
    pub fn store_backend_down(&self, reason: Reason) {
        self.stores_backend_down
            .get_or_create(&StoreStateLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A store that was down for `reason` is not any more (recovered, edited or deleted).
    pub fn store_backend_up(&self, reason: Reason) {
        self.stores_backend_down
            .get_or_create(&StoreStateLabels {
                reason: reason.as_str(),
            })
            .dec();
    }

    /// A store's backend passed its check after being down for `down_for`.
    pub fn store_backend_recovered(&self, down_for: std::time::Duration) {
        self.store_backend_recovery.observe(down_for.as_secs_f64());
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn hash_rekeyed(&self) {
        self.hashes_rekeyed.inc();
    }

    pub fn api_write_timed_out(&self) {
        self.api_write_timeouts.inc();
    }

    /// One change event from `source`: `matched`, `unmatched`, `ignored` or `refused`.
    pub fn store_event(&self, source: secretsync_api::EventSource, outcome: &'static str) {
        self.store_events
            .get_or_create(&StoreEventLabels {
                source: source.name(),
                outcome,
            })
            .inc();
    }

    /// A version made by a pass a change event asked for, `seconds` after the event.
    pub fn event_to_secret(&self, seconds: f64) {
        self.event_to_secret.observe(seconds);
    }

    /// Counts what an event reports: every rollout step and revocation is announced by
    /// exactly one event, so counting at the single place events are published keeps the
    /// numbers and the events in agreement.
    pub fn event_published(&self, reason: &str) {
        let outcome = match reason {
            event::ROLLOUT_STARTED => "started",
            event::ROLLOUT_COMPLETE => "complete",
            event::ROLLOUT_FAILED => "failed",
            event::ROLLOUT_REVERTED => "reverted",
            event::VERSION_REVOKED => {
                self.revocations.inc();
                return;
            }
            _ => return,
        };
        self.rollouts
            .get_or_create(&RolloutLabels { outcome })
            .inc();
    }

    /// The SecretSync `uid`'s Ready condition is now `ready` (`True`, `False`) with `reason`.
    pub fn sync_ready(&self, uid: &str, ready: &str, reason: &str) {
        let labels = ReadyLabels {
            ready: ready.to_owned(),
            reason: reason.to_owned(),
        };
        let mut counted = self.counted_as.lock().unwrap_or_else(|e| e.into_inner());
        match counted.insert(uid.to_owned(), labels.clone()) {
            Some(before) if before == labels => return,
            Some(before) => {
                self.syncs.get_or_create(&before).dec();
            }
            None => {}
        }
        self.syncs.get_or_create(&labels).inc();
    }

    /// The SecretSync `uid` is gone (or no longer this process's).
    pub fn sync_forgotten(&self, uid: &str) {
        let before = self
            .counted_as
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        if let Some(before) = before {
            self.syncs.get_or_create(&before).dec();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The sum of every sample of `series` (a full sample name such as
    /// `secretsync_reconciles_total`) over all its label values, read from the exposition
    /// so tests and benchmarks see what Prometheus would scrape.
    pub fn sum(&self, series: &str) -> f64 {
        sum_series(&self.encode(), series)
    }

    pub fn reconciles(&self) -> u64 {
        self.sum("secretsync_reconciles_total") as u64
    }

    pub fn reconcile_errors(&self) -> u64 {
        self.count("secretsync_reconciles_total", "result=\"error\"")
    }

    pub fn backend_requests(&self) -> u64 {
        self.sum("secretsync_backend_requests_total") as u64
    }

    pub fn store_checks(&self) -> u64 {
        self.store_checks.get()
    }

    pub fn versions_created(&self) -> u64 {
        self.versions_created.get()
    }

    pub fn status_writes(&self) -> u64 {
        self.status_writes.get()
    }

    pub fn api_write_timeouts(&self) -> u64 {
        self.api_write_timeouts.get()
    }

    /// OpenBao audit events with this outcome (`matched`, `unmatched`, `ignored`).
    pub fn openbao_audit_events(&self, outcome: &str) -> u64 {
        self.store_events_of(secretsync_api::EventSource::OpenBaoAudit, outcome)
    }

    /// Change events from `source` with this outcome.
    pub fn store_events_of(&self, source: secretsync_api::EventSource, outcome: &str) -> u64 {
        self.count(
            "secretsync_store_events_total",
            &format!("source=\"{}\",outcome=\"{outcome}\"", source.name()),
        )
    }

    fn count(&self, series: &str, label: &str) -> u64 {
        self.encode()
            .lines()
            .filter(|l| l.starts_with(&format!("{series}{{")) && l.contains(label))
            .filter_map(sample_value)
            .sum::<f64>() as u64
    }
}

/// Sums the samples named exactly `series` in an OpenMetrics/Prometheus text exposition.
pub fn sum_series(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(sample_value)
        .sum()
}

fn sample_value(line: &str) -> Option<f64> {
    // `name{labels} value` — label values here never contain spaces (closed sets).
    line.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sync_is_counted_once_under_its_current_ready_reason() {
        let m = Metrics::new();
        m.sync_ready("a", "True", "Synced");
        m.sync_ready("b", "True", "Synced");
        m.sync_ready("b", "True", "Synced");
        m.sync_ready("c", "False", "RevokedVersionInUse");
        let text = m.encode();
        assert!(
            text.contains("secretsync_syncs{ready=\"True\",reason=\"Synced\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("secretsync_syncs{ready=\"False\",reason=\"RevokedVersionInUse\"} 1"),
            "{text}"
        );
        m.sync_ready("c", "True", "Synced");
        m.sync_forgotten("a");
        m.sync_forgotten("unknown");
        let text = m.encode();
        assert!(
            text.contains("secretsync_syncs{ready=\"True\",reason=\"Synced\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("secretsync_syncs{ready=\"False\",reason=\"RevokedVersionInUse\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn series_follow_prometheus_naming() {
        let m = Metrics::new();
        m.backend_request("fake", true);
        m.backend_request("fake", false);
        m.version_created();
        m.hash_rekeyed();
        m.event_published(event::ROLLOUT_STARTED);
        m.event_published(event::ROLLOUT_COMPLETE);
        m.event_published(event::VERSION_REVOKED);
        m.event_published(event::VERSION_CREATED);
        m.set_leader(true);
        let text = m.encode();
        for expected in [
            "secretsync_backend_requests_total{provider=\"fake\",result=\"success\"} 1",
            "secretsync_backend_requests_total{provider=\"fake\",result=\"error\"} 1",
            "secretsync_versions_created_total 1",
            "secretsync_hashes_rekeyed_total 1",
            "secretsync_rollouts_total{outcome=\"started\"} 1",
            "secretsync_rollouts_total{outcome=\"complete\"} 1",
            "secretsync_revocations_total 1",
            "secretsync_leader 1",
            "# TYPE secretsync_reconcile_duration_seconds histogram",
            "secretsync_build_info{version=",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
        assert_eq!(m.backend_requests(), 2);
        assert_eq!(m.versions_created(), 1);
    }

    #[tokio::test]
    async fn reconciles_are_counted_by_result_and_reason() {
        let m = Metrics::new();
        m.measure_reconcile(async { Ok(()) }).await.unwrap();
        let failed = m
            .measure_reconcile(async {
                Err::<(), _>(crate::error::Error::SecretTooLarge { size: 2 << 20 })
            })
            .await;
        assert!(failed.is_err());
        let text = m.encode();
        assert!(
            text.contains(
                "secretsync_reconciles_total{result=\"error\",reason=\"SecretTooLarge\"} 1"
            )
        );
        assert!(text.contains("secretsync_reconcile_duration_seconds_count 2"));
        assert!(text.contains("secretsync_reconciles_in_flight 0"));
        assert_eq!(m.reconciles(), 2);
        assert_eq!(m.reconcile_errors(), 1);
    }

    #[test]
    fn sums_only_the_named_series() {
        let text = "a_total{x=\"1\"} 2\na_total{x=\"2\"} 3\na_total_other 7\na_total 1\n";
        assert_eq!(sum_series(text, "a_total"), 6.0);
    }
}
