//! What the rollout step decides and reports: the targets as the caches have them, the
//! patches to send ([`Plan`]) and where the rollout stands ([`Outcome`], [`RolloutState`]).

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Event;
use secretsync_api::{RolloutStatus, WorkloadKind};
use serde_json::Value;

/// Where the rollout to the active version stands, with a summary for messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RolloutState {
    /// No `spec.rollout`, or nothing matched it.
    #[default]
    NoTargets,
    Progressing(String),
    Complete(String),
    Failed(String),
    /// Targets need to move but no rollout window is open; says when the next one opens.
    Waiting(String),
    /// A target's own controller holds it (a paused Deployment): not a failure, no timeout.
    Paused(String),
}

#[derive(Default)]
pub struct Outcome {
    pub state: RolloutState,
    pub status: Option<RolloutStatus>,
    pub events: Vec<Event>,
    pub requeue: Option<Duration>,
    /// The version the targets point at when it is not the wanted one: `onFailure: Rollback`
    /// moved them back to it (`status.failed` names the wanted one), or they wait on it for a
    /// rollout window.
    pub targets_on: Option<i64>,
    /// A revoked version the targets have not yet left, in words: Ready is False until they do.
    pub revoked_in_use: Option<String>,
}

/// A rollout target as the cache has it (`None`: it does not exist).
pub struct Target {
    pub kind: WorkloadKind,
    pub name: String,
    /// Listed by name in `rollout.targets` (not only matched by `rollout.selector`): a named
    /// target must reference the SecretSync; a selected one that does not is not its target.
    pub named: bool,
    pub workload: Option<Arc<Value>>,
    /// Whether the API server serves the kind at all (Argo Rollouts' CRD may be absent).
    pub kind_served: bool,
    /// Why its Pods cannot start, as the kubelet says (read only while it is not Complete).
    pub pod_failures: Vec<PodFailure>,
}

/// Pods of a target that wait in `CreateContainerConfigError` on a Secret (or a key of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    pub secret: String,
    pub key: Option<String>,
    /// How many Pods.
    pub pods: usize,
}

impl PodFailure {
    /// `what` is the kubelet's message: `secret "db-v2" not found` or
    /// `couldn't find key token in Secret payments/db-v2`.
    pub fn parse(what: &str) -> Option<(String, Option<String>)> {
        if let Some(rest) = what.strip_prefix("secret \"") {
            let name = rest.split('"').next()?;
            return Some((name.to_owned(), None));
        }
        let rest = what.strip_prefix("couldn't find key ")?;
        let (key, secret) = rest.split_once(" in Secret ")?;
        let name = secret.rsplit('/').next()?;
        Some((name.to_owned(), Some(key.to_owned())))
    }

    pub(super) fn describe(&self) -> String {
        let pods = if self.pods == 1 { "Pod" } else { "Pods" };
        match &self.key {
            Some(key) => format!(
                "{} {pods} in CreateContainerConfigError: Secret {} has no key {key}",
                self.pods, self.secret
            ),
            None => format!(
                "{} {pods} in CreateContainerConfigError: Secret {} not found",
                self.pods, self.secret
            ),
        }
    }
}

/// The kubelet's messages grouped by the Secret (and key) they name, in first-seen order.
pub fn pod_failures(messages: &[String]) -> Vec<PodFailure> {
    let mut failures: Vec<PodFailure> = Vec::new();
    for (secret, key) in messages.iter().filter_map(|m| PodFailure::parse(m)) {
        match failures
            .iter_mut()
            .find(|f| f.secret == secret && f.key == key)
        {
            Some(f) => f.pods += 1,
            None => failures.push(PodFailure {
                secret,
                key,
                pods: 1,
            }),
        }
    }
    failures
}

/// What to do: patches to send, and the outcome once they are sent.
pub struct Plan {
    /// (kind, name, JSON patch) for targets that point elsewhere.
    pub patches: Vec<(WorkloadKind, String, Value)>,
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_reasons_name_the_secret_and_key() {
        let messages = [
            "couldn't find key token in Secret payments/api-v2".to_owned(),
            "secret \"db-v3\" not found".to_owned(),
            "couldn't find key token in Secret payments/api-v2".to_owned(),
            "something else".to_owned(),
        ];
        let found = pod_failures(&messages);
        assert_eq!(
            found,
            [
                PodFailure {
                    secret: "api-v2".into(),
                    key: Some("token".into()),
                    pods: 2
                },
                PodFailure {
                    secret: "db-v3".into(),
                    key: None,
                    pods: 1
                },
            ]
        );
        assert_eq!(
            found[0].describe(),
            "2 Pods in CreateContainerConfigError: Secret api-v2 has no key token"
        );
    }
}
