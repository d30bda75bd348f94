//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one of several replicas
//! reconciles at a time.
//!
//! The protocol is client-go's: the holder renews `renewTime` every `retry_period`; anyone
//! may take the Lease once `renewTime + leaseDurationSeconds` has passed or the holder is
//! cleared. Every write is a create (the Lease is absent) or a replace carrying the
//! resourceVersion that was read, so two candidates can never both win. A leader that cannot
//! renew within `renew_deadline`, or finds another holder, has lost: [`Elector::hold`]
//! returns and the process must exit rather than keep writing without the Lease.
//!
//! The decisions are pure functions of the Lease and a clock (unit-tested below); the
//! [`Elector`] only performs the reads and writes they call for.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Who we are in `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a Lease stays ours without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The leader gives up when it could not renew for this long. Shorter than
    /// `lease_duration`, so a leader stops before anyone else may take over.
    pub renew_deadline: Duration,
    /// Time between renewals, and between attempts to take the Lease.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Checks the timings leave room for a renewal to fail and be retried before the Lease
    /// expires.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return Err("the lease duration must be a whole number of seconds, at least 1".into());
        }
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            return Err(format!(
                "need retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }
}

/// `$POD_NAME` (unique within the namespace, and what `kubectl get lease` readers expect),
/// else the hostname with a random suffix so two processes on one host differ.
pub fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "secretsync".to_owned());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    #[error("the Lease is now held by {0:?}")]
    TakenBy(String),
    #[error("the Lease was deleted")]
    Deleted,
    #[error("could not renew the Lease within the renew deadline ({0:?})")]
    RenewDeadline(Duration),
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// There is no Lease: create it, held by us.
    Create,
    /// Free or expired: take it over.
    Take,
    /// Ours: renew it.
    Renew,
    /// Someone else holds it and it has not expired.
    Wait { holder: String },
}

/// The current holder; a cleared (released) holder is nobody.
pub(crate) fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Whether the holder's claim has run out at `now`. A Lease without a renew time or
/// duration claims nothing.
pub(crate) fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let claim = jiff::SignedDuration::from_secs(i64::from(seconds.max(0)));
    renewed
        .0
        .saturating_add(claim)
        .is_ok_and(|until| until <= now)
}

pub(crate) fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match holder(spec) {
        Some(h) if h == identity => Decision::Renew,
        Some(h) if !expired(spec, now) => Decision::Wait {
            holder: h.to_owned(),
        },
        _ => Decision::Take,
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The spec after `identity` takes the Lease (or creates it, from an empty spec).
pub(crate) fn taken(
    previous: &LeaseSpec,
    identity: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let transitions = previous.lease_transitions.unwrap_or(0);
    // Only a change of hands counts; a first holder is not a transition.
    let changed_hands = holder(previous).is_some_and(|h| h != identity);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(seconds(duration)),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions + i32::from(changed_hands)),
        ..previous.clone()
    }
}

pub(crate) fn renewed(previous: &LeaseSpec, now: Timestamp, duration: Duration) -> LeaseSpec {
    LeaseSpec {
        lease_duration_seconds: Some(seconds(duration)),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// Released as client-go does: no holder, and a one-second claim that is already over, so
/// a standby takes over at its next attempt instead of waiting out the full duration.
pub(crate) fn released(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until we hold the Lease; returns it as written. Errors are logged and retried:
    /// a standby that cannot reach the API server simply keeps standing by.
    pub async fn acquire(&self) -> Lease {
        let mut waiting_for = None;
        loop {
            match self.try_acquire().await {
                Ok(Ok(lease)) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "leading");
                    return lease;
                }
                Ok(Err(holder)) => {
                    if waiting_for.as_ref() != Some(&holder) {
                        info!(lease = %self.config.name, %holder, "standing by");
                        waiting_for = Some(holder);
                    }
                }
                Err(e) => warn!(lease = %self.config.name, error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// One attempt: the Lease we now hold, or the holder to wait for.
    async fn try_acquire(&self) -> kube::Result<Result<Lease, String>> {
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Timestamp::now();
        let identity = &self.config.identity;
        let duration = self.config.lease_duration;
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(taken(&LeaseSpec::default(), identity, now, duration)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let previous = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(match decide(Some(&previous), identity, now) {
                    Decision::Wait { holder } => return Ok(Err(holder)),
                    // Still ours (a restart with the same pod name): keep the acquire time
                    // and transitions.
                    Decision::Renew => renewed(&previous, now, duration),
                    Decision::Take | Decision::Create => taken(&previous, identity, now, duration),
                });
                // The resourceVersion read above makes this fail if anyone wrote meanwhile.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => Ok(Ok(lease)),
            // Someone else created or wrote it between our read and write: they won.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(lease = %self.config.name, "lost a race for the Lease");
                Ok(Err("(another candidate)".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease every retry period for as long as we hold it; returns only when
    /// leadership is lost. `lease` is the object as [`Elector::acquire`] returned it.
    pub async fn hold(&self, mut lease: Lease) -> LeaseLost {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renewal.elapsed());
            if left.is_zero() {
                return LeaseLost::RenewDeadline(self.config.renew_deadline);
            }
            let spec = renewed(
                &lease.spec.clone().unwrap_or_default(),
                Timestamp::now(),
                self.config.lease_duration,
            );
            let mut candidate = lease.clone();
            candidate.spec = Some(spec);
            let params = PostParams::default();
            let write = self.api.replace(&self.config.name, &params, &candidate);
            match tokio::time::timeout(left, write).await {
                Ok(Ok(written)) => {
                    lease = written;
                    last_renewal = tokio::time::Instant::now();
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => {
                    // Written by someone else since our last renewal: see by whom.
                    match self.api.get_opt(&self.config.name).await {
                        Ok(None) => return LeaseLost::Deleted,
                        Ok(Some(current)) => match current.spec.as_ref().and_then(holder) {
                            Some(h) if h == self.config.identity => lease = current,
                            other => {
                                return LeaseLost::TakenBy(other.unwrap_or("").to_owned());
                            }
                        },
                        Err(e) => warn!(lease = %self.config.name, error = %e, "reading the Lease"),
                    }
                }
                Ok(Err(e)) => warn!(lease = %self.config.name, error = %e, "renewing the Lease"),
                Err(_) => warn!(lease = %self.config.name, "renewing the Lease timed out"),
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once. Only a Lease we still hold is
    /// touched; a conflict means it changed meanwhile, so read it again.
    pub async fn release(&self) -> kube::Result<()> {
        for _ in 0..3 {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if holder(&spec) != Some(&self.config.identity) {
                return Ok(());
            }
            lease.spec = Some(released(&spec, Timestamp::now()));
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    info!(lease = %self.config.name, "released the Lease");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        warn!(lease = %self.config.name, "the Lease kept changing; left it to expire");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECONDS: Duration = Duration::from_secs(15);

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn held_by(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(at("2026-01-01T00:00:00Z"))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_exactly_at_renew_time_plus_duration() {
        let spec = held_by("a", "2026-01-01T00:00:10Z", 15);
        assert!(!expired(&spec, at("2026-01-01T00:00:10Z")));
        assert!(!expired(&spec, at("2026-01-01T00:00:24.999Z")));
        assert!(expired(&spec, at("2026-01-01T00:00:25Z")));
        assert!(expired(&spec, at("2026-01-01T00:01:00Z")));
    }

    #[test]
    fn a_lease_without_renew_time_or_duration_claims_nothing() {
        let now = at("2026-01-01T00:00:00Z");
        let mut spec = held_by("a", "2026-01-01T00:00:00Z", 15);
        spec.renew_time = None;
        assert!(expired(&spec, now));
        let mut spec = held_by("a", "2026-01-01T00:00:00Z", 15);
        spec.lease_duration_seconds = None;
        assert!(expired(&spec, now));
    }

    #[test]
    fn who_holds() {
        assert_eq!(holder(&held_by("a", "2026-01-01T00:00:00Z", 15)), Some("a"));
        assert_eq!(holder(&held_by("", "2026-01-01T00:00:00Z", 15)), None);
        assert_eq!(holder(&LeaseSpec::default()), None);
    }

    #[test]
    fn decisions() {
        let now = at("2026-01-01T00:00:20Z");
        let fresh = held_by("other", "2026-01-01T00:00:10Z", 15);
        let stale = held_by("other", "2026-01-01T00:00:04Z", 15);
        let mine_stale = held_by("me", "2026-01-01T00:00:00Z", 15);
        let free = released(&fresh, at("2026-01-01T00:00:19Z"));
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&fresh), "me", now),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(decide(Some(&stale), "me", now), Decision::Take);
        assert_eq!(decide(Some(&free), "me", now), Decision::Take);
        assert_eq!(decide(Some(&mine_stale), "me", now), Decision::Renew);
    }

    #[test]
    fn taking_over_counts_a_transition_and_resets_the_times() {
        let now = at("2026-01-01T00:00:30Z");
        let spec = taken(
            &held_by("other", "2026-01-01T00:00:00Z", 15),
            "me",
            now,
            SECONDS,
        );
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        // A first holder (a new or released Lease) is not a change of hands.
        assert_eq!(
            taken(&LeaseSpec::default(), "me", now, SECONDS).lease_transitions,
            Some(0)
        );
        let free = released(&held_by("other", "2026-01-01T00:00:00Z", 15), now);
        assert_eq!(taken(&free, "me", now, SECONDS).lease_transitions, Some(3));
    }

    #[test]
    fn renewing_keeps_holder_and_acquire_time() {
        let before = held_by("me", "2026-01-01T00:00:00Z", 15);
        let now = at("2026-01-01T00:00:02Z");
        let spec = renewed(&before, now, SECONDS);
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.acquire_time, before.acquire_time);
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let now = at("2026-01-01T00:00:05Z");
        let spec = released(&held_by("me", "2026-01-01T00:00:04Z", 15), now);
        assert_eq!(holder(&spec), None);
        assert_eq!(decide(Some(&spec), "other", now), Decision::Take);
    }

    #[test]
    fn timings_must_nest() {
        let config = |duration: f64, deadline: f64, retry: f64| LeaseConfig {
            name: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs_f64(duration),
            renew_deadline: Duration::from_secs_f64(deadline),
            retry_period: Duration::from_secs_f64(retry),
        };
        assert!(config(15.0, 10.0, 2.0).validate().is_ok());
        assert!(config(2.0, 1.0, 0.25).validate().is_ok());
        assert!(config(10.0, 10.0, 2.0).validate().is_err());
        assert!(config(15.0, 2.0, 2.0).validate().is_err());
        assert!(config(1.5, 1.0, 0.25).validate().is_err());
        assert!(config(0.0, 0.0, 0.0).validate().is_err());
    }

    #[test]
    fn identity_from_pod_name_or_unique_per_process() {
        // Both branches depend on the environment; check only what holds in either.
        let a = default_identity();
        assert!(!a.is_empty());
        if std::env::var("POD_NAME").is_err() {
            assert_ne!(a, default_identity(), "random suffix");
        }
    }
}
