//! Sending the rollout step's patches: [`roll_out`] plans, decides, and patches each target
//! through the per-workload batcher.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::runtime::events::{Event, EventType};
use kube::{Client, ResourceExt};
use secretsync_api::reason::event;
use secretsync_api::{RolloutStatus, SecretSync, WorkloadKind};
use tracing::{debug, info};

use crate::cache::syncs::SyncIndex;
use crate::cache::versions::VersionMeta;
use crate::cache::workloads::Workloads;
use crate::conditions::now;
use crate::error::{Error, Result};
use crate::events::secret_ref;
use crate::podspec::{Progress, rewrites_patch, rollout_progress};
use crate::process::metrics::Metrics;
use crate::rollout::batch::{Batcher, Rewrite, Sent};
use crate::rollout::decide::decide;
use crate::rollout::patch::{patch_workload, pod_config_errors};
use crate::rollout::target::{Outcome, Plan, Target, pod_failures};

/// What the rollout step reads and sends through, passed in rather than reached for: the
/// workloads and SecretSyncs as cached, the per-workload batcher, and the client its
/// patches go out on, each write bounded by `write_timeout`.
pub(crate) struct RolloutHandles<'a> {
    pub client: &'a Client,
    pub workloads: &'a Workloads,
    pub syncs: &'a SyncIndex,
    pub batcher: &'a Batcher,
    pub metrics: &'a Metrics,
    /// How long a workload that several SecretSyncs roll waits for the others' rewrites.
    pub settle: Duration,
    pub write_timeout: Duration,
}

impl RolloutHandles<'_> {
    async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<kube::Result<T>> {
        crate::writes::bounded(self.write_timeout, self.metrics, write).await
    }
}

/// Points every target's pod template at the wanted version — or, after a failed rollout
/// with `onFailure: Rollback`, the version before it — (a minimal JSON patch, only when
/// something differs) and reads how far each rollout got.
pub async fn roll_out(
    sync: &SecretSync,
    ctx: &RolloutHandles<'_>,
    bases: &[String],
    existing: &BTreeMap<i64, VersionMeta>,
    wanted: i64,
    previous: Option<&RolloutStatus>,
) -> Result<Outcome> {
    let namespace = sync.namespace().unwrap_or_default();
    let targets = targets(sync, ctx, &namespace).await;
    let Plan {
        patches,
        mut outcome,
    } = decide(sync, bases, existing, wanted, previous, &targets, now().0);
    let moving_to = outcome.targets_on.unwrap_or(wanted);
    let active_name = existing
        .get(&moving_to)
        .map(|m| m.secret_name.as_str())
        .unwrap_or_default();
    // Each target's rewrite joins the workload's batch (crate::rollout::batch), so SecretSyncs that
    // roll the same workload together change its template once; the patch is built when
    // the batch goes out, from the workload as it is then. Only a workload that other
    // SecretSyncs roll too waits the settle delay; a workload of its own goes at once.
    let namespace = namespace.as_str();
    let settle_for = |kind: WorkloadKind, name: &str| {
        let labels: BTreeMap<String, String> = targets
            .iter()
            .find(|t| t.kind == kind && t.name == name)
            .and_then(|t| t.workload.as_ref()?.pointer("/metadata/labels").cloned())
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default();
        let owners = ctx.syncs.rollout_owners(namespace, kind, name, &labels);
        if owners.len() > 1 {
            ctx.settle
        } else {
            Duration::ZERO
        }
    };
    let rewrites = patches.into_iter().map(|(kind, name, _)| {
        let settle = settle_for(kind, &name);
        let key = (kind, namespace.to_owned(), name.clone());
        let rewrite = Rewrite {
            bases: bases.to_vec(),
            active_name: active_name.to_owned(),
        };
        async move {
            let sent = ctx
                .batcher
                .submit(key, rewrite, settle, |batch| {
                    send_batch(ctx, kind, namespace, &name, batch)
                })
                .await;
            (kind, name, sent)
        }
    });
    for (kind, name, sent) in futures::future::join_all(rewrites).await {
        match sent {
            Sent::Patched => {
                info!(kind = kind.as_str(), target = %name, secret = %active_name, "rolling out");
                // A rollback (pinned to the active version) says why it was asked for.
                let why = if sync.spec.pin_version == Some(moving_to) {
                    format!(" (pinned{})", crate::events::asked_reason(sync))
                } else {
                    String::new()
                };
                outcome.events.push(Event {
                    type_: EventType::Normal,
                    reason: event::ROLLOUT_STARTED.into(),
                    note: Some(format!(
                        "{} {name} now references {active_name}{why}",
                        kind.as_str()
                    )),
                    action: "Rollout".into(),
                    secondary: Some(secret_ref(sync, active_name)),
                });
            }
            Sent::Unchanged => {}
            // Someone moved a reference meanwhile (a test op failed): look again
            // on the next pass.
            Sent::Conflict => {
                debug!(target = %name, "workload changed during the rollout patch");
                outcome.requeue = Some(
                    outcome
                        .requeue
                        .map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))),
                );
            }
            Sent::Failed(message) => return Err(Error::Rollout(message)),
        }
    }
    Ok(outcome)
}

/// The rollout targets as the workload cache has them, with what the kubelet says about the
/// Pods of those still rolling.
async fn targets(sync: &SecretSync, ctx: &RolloutHandles<'_>, namespace: &str) -> Vec<Target> {
    let mut targets: Vec<Target> = ctx
        .workloads
        .targets(sync)
        .into_iter()
        .map(|(kind, name)| Target {
            workload: ctx.workloads.get(kind, namespace, &name),
            kind_served: ctx.workloads.kind_served(kind),
            named: sync
                .spec
                .rollout
                .iter()
                .flat_map(|r| r.targets.iter().flatten())
                .any(|t| t.kind == kind && t.name == name),
            kind,
            name,
            pod_failures: Vec::new(),
        })
        .collect();
    for target in &mut targets {
        let Some(workload) = &target.workload else {
            continue;
        };
        if matches!(
            rollout_progress(target.kind, workload),
            Progress::Complete | Progress::Paused { .. }
        ) {
            continue;
        }
        // Only words for the status: a failed read leaves the replica counts to speak.
        if let Ok(Ok(errors)) = ctx
            .bounded(pod_config_errors(ctx.client, namespace, workload))
            .await
        {
            target.pod_failures = pod_failures(&errors);
        }
    }
    targets
}

/// Sends one batch of rewrites to a workload as one patch, built from the cached workload
/// (each replace guarded by a test of the name it replaces).
async fn send_batch(
    ctx: &RolloutHandles<'_>,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    batch: Vec<Rewrite>,
) -> Sent {
    let Some(workload) = ctx.workloads.get(kind, namespace, name) else {
        return Sent::Unchanged;
    };
    let pairs: Vec<(&[String], &str)> = batch
        .iter()
        .map(|r| (r.bases.as_slice(), r.active_name.as_str()))
        .collect();
    let Some(patch) = rewrites_patch(kind, &workload, &pairs) else {
        return Sent::Unchanged;
    };
    match ctx
        .bounded(patch_workload(ctx.client, kind, namespace, name, patch))
        .await
    {
        Ok(Ok(())) => Sent::Patched,
        Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 422 => Sent::Conflict,
        Ok(Err(e)) => Sent::Failed(e.to_string()),
        // A timed-out write is retried like a conflict.
        Err(_) => Sent::Conflict,
    }
}
