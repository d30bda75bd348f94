//! A ClusterSecretSync's status from what each namespace's SecretSync says ([`state_of`])
//! and what the pass did ([`status`]): counts, the failures by namespace (bounded), the
//! namespaces whose removal waits, and `Ready`. Pure; a steady state gives the same status,
//! so nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use secretsync_api::reason::condition;
use secretsync_api::{
    ClusterSecretSyncStatus, MAX_LISTED_NAMESPACES, NamespaceCounts, NamespaceFailure, Reason,
    SecretSync,
};

use crate::conditions::set_condition;

/// Where one selected namespace stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// Its SecretSync is Ready.
    Synced,
    /// Made or changed, and not reported on yet (or rolling out).
    Pending,
    Failed {
        reason: String,
        message: String,
    },
}

/// Ready reasons of a SecretSync that are progress, not failure.
const IN_PROGRESS: [Reason; 3] = [
    Reason::RolloutProgressing,
    Reason::RolloutWaiting,
    Reason::TargetPaused,
];

/// What a SecretSync's own status says about its namespace. A status older than its spec
/// (a template edit just applied) is pending, whatever it said before.
pub fn state_of(sync: &SecretSync) -> NamespaceState {
    let Some(status) = &sync.status else {
        return NamespaceState::Pending;
    };
    if status.observed_generation < sync.metadata.generation {
        return NamespaceState::Pending;
    }
    match status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
    {
        Some(c) if c.status == "True" => NamespaceState::Synced,
        Some(c) if !IN_PROGRESS.iter().any(|r| r.as_str() == c.reason) => NamespaceState::Failed {
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        _ => NamespaceState::Pending,
    }
}

/// One pass's findings.
#[derive(Debug, Default)]
pub struct Findings {
    /// Every selected namespace and its state.
    pub selected: Vec<(String, NamespaceState)>,
    /// Namespaces no longer selected whose SecretSync is kept, and why.
    pub removing: Vec<(String, String)>,
    /// Why the spec cannot be used (nothing was made or changed).
    pub invalid: Option<Vec<String>>,
}

pub fn status(
    found: &Findings,
    previous: &ClusterSecretSyncStatus,
    generation: Option<i64>,
) -> ClusterSecretSyncStatus {
    let mut conditions: Vec<Condition> = previous.conditions.clone();
    if let Some(problems) = &found.invalid {
        set_condition(
            &mut conditions,
            condition::READY,
            false,
            Reason::InvalidSpec,
            format!("nothing is made or changed: {}", problems.join("; ")),
            generation,
        );
        return ClusterSecretSyncStatus {
            observed_generation: generation,
            conditions,
            ..previous.clone()
        };
    }
    let mut failures: Vec<NamespaceFailure> = found
        .selected
        .iter()
        .filter_map(|(ns, state)| match state {
            NamespaceState::Failed { reason, message } => Some(NamespaceFailure {
                namespace: ns.clone(),
                reason: reason.clone(),
                message: crate::conditions::truncate(message.clone(), 256),
            }),
            _ => None,
        })
        .collect();
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let count = |want: fn(&NamespaceState) -> bool| {
        found.selected.iter().filter(|(_, s)| want(s)).count() as u32
    };
    let counts = NamespaceCounts {
        selected: found.selected.len() as u32,
        synced: count(|s| *s == NamespaceState::Synced),
        failed: failures.len() as u32,
        removing: found.removing.len() as u32,
    };
    let (ok, reason, message) = ready(&counts, &failures);
    set_condition(
        &mut conditions,
        condition::READY,
        ok,
        reason,
        message,
        generation,
    );
    failures.truncate(MAX_LISTED_NAMESPACES);
    let mut removing: Vec<NamespaceFailure> = found
        .removing
        .iter()
        .map(|(ns, message)| NamespaceFailure {
            namespace: ns.clone(),
            reason: Reason::VersionsInUse.as_str().to_owned(),
            message: crate::conditions::truncate(message.clone(), 256),
        })
        .collect();
    removing.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    removing.truncate(MAX_LISTED_NAMESPACES);
    ClusterSecretSyncStatus {
        observed_generation: generation,
        namespaces: Some(counts),
        failures,
        removing,
        conditions,
    }
}

fn ready(counts: &NamespaceCounts, failures: &[NamespaceFailure]) -> (bool, Reason, String) {
    let NamespaceCounts {
        selected,
        synced,
        failed,
        removing,
    } = *counts;
    let held = match removing {
        0 => String::new(),
        n => format!(
            "; {n} namespace(s) no longer selected keep their SecretSync while its versions are in use"
        ),
    };
    if failed > 0 {
        let named: Vec<String> = failures
            .iter()
            .take(5)
            .map(|f| format!("{} ({})", f.namespace, f.reason))
            .collect();
        let more = if failures.len() > 5 { ", …" } else { "" };
        return (
            false,
            Reason::NamespacesFailed,
            format!(
                "{failed} of {selected} namespaces failed: {}{more}{held}",
                named.join(", ")
            ),
        );
    }
    if synced < selected {
        return (
            false,
            Reason::SecretSyncsPending,
            format!(
                "{synced} of {selected} namespaces synced; {} pending{held}",
                selected - synced
            ),
        );
    }
    (
        true,
        Reason::Synced,
        format!("{synced} of {selected} namespaces synced{held}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(yaml_status: &str, generation: i64) -> SecretSync {
        let mut s: SecretSync = serde_yaml::from_str(&format!(
            "apiVersion: secretsync.io/v1alpha1\nkind: SecretSync\nmetadata: {{name: db}}\n\
             spec: {{storeRef: {{name: v}}, data: []}}\n{yaml_status}"
        ))
        .unwrap();
        s.metadata.generation = Some(generation);
        s
    }

    fn ready(status: &str, reason: &str) -> String {
        format!(
            "status:\n  observedGeneration: 1\n  conditions: [{{type: Ready, status: \"{status}\", reason: {reason}, message: m, lastTransitionTime: \"2026-01-01T00:00:00Z\"}}]\n"
        )
    }

    #[test]
    fn a_namespace_is_synced_failed_or_pending_by_its_secretsync() {
        let cases = [
            (ready("True", "Synced"), 1, NamespaceState::Synced),
            (
                ready("False", "StoreNotAllowed"),
                1,
                NamespaceState::Failed {
                    reason: "StoreNotAllowed".into(),
                    message: "m".into(),
                },
            ),
            (
                ready("False", "RolloutProgressing"),
                1,
                NamespaceState::Pending,
            ),
            (ready("True", "Synced"), 2, NamespaceState::Pending),
            (String::new(), 1, NamespaceState::Pending),
        ];
        for (status, generation, want) in cases {
            assert_eq!(
                state_of(&sync(&status, generation)),
                want,
                "{status} at {generation}"
            );
        }
    }

    #[test]
    fn the_status_counts_names_failures_and_says_why_not_ready() {
        let failed = |r: &str| NamespaceState::Failed {
            reason: r.into(),
            message: "m".into(),
        };
        let mut found = Findings {
            selected: (0..25)
                .map(|i| (format!("ns{i:02}"), failed("RemoteKeyNotFound")))
                .chain([("ok".into(), NamespaceState::Synced)])
                .collect(),
            ..Findings::default()
        };
        let s = status(&found, &ClusterSecretSyncStatus::default(), Some(2));
        let counts = s.namespaces.unwrap();
        assert_eq!((counts.selected, counts.synced, counts.failed), (26, 1, 25));
        assert_eq!(s.failures.len(), MAX_LISTED_NAMESPACES, "bounded");
        assert_eq!(s.failures[0].namespace, "ns00");
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NamespacesFailed")
        );
        assert!(
            ready
                .message
                .starts_with("25 of 26 namespaces failed: ns00 (RemoteKeyNotFound)")
        );

        found.selected = vec![
            ("a".into(), NamespaceState::Synced),
            ("b".into(), NamespaceState::Pending),
        ];
        found.removing = vec![("gone".into(), "Deployment/api references db-v1".into())];
        let s2 = status(&found, &s, Some(2));
        assert_eq!(s2.conditions[0].reason, "SecretSyncsPending");
        assert_eq!(s2.removing[0].reason, "VersionsInUse");

        found.selected.pop();
        found.removing.clear();
        let s3 = status(&found, &s2, Some(2));
        assert_eq!(
            (
                s3.conditions[0].status.as_str(),
                s3.conditions[0].reason.as_str()
            ),
            ("True", "Synced")
        );
        assert_eq!(
            status(&found, &s3, Some(2)),
            s3,
            "a steady state is the same status"
        );
    }

    #[test]
    fn an_invalid_spec_keeps_the_counts_and_says_so() {
        let found = Findings {
            invalid: Some(vec![
                "spec.template.spec.storeRef.kind must be ClusterSecretStore".into(),
            ]),
            ..Findings::default()
        };
        let s = status(&found, &ClusterSecretSyncStatus::default(), Some(1));
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(
            s.conditions[0]
                .message
                .contains("must be ClusterSecretStore")
        );
    }
}
