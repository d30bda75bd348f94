//! Step 1: which versions there are (guarantee 1, docs/reference/guarantees.md). The index says which Secrets carry
//! our ownerReference; the status history says which versions were made and what became of
//! them. [`cross_check`] puts the two together, so that what users do to our Secrets with
//! `kubectl` — disown one, delete one, relabel or re-annotate one — never moves a workload or
//! makes a version by itself:
//!
//! - a version the history lists whose Secret still exists without our ownerReference was
//!   disowned: it stays a version (never changed or deleted) until the next one is made;
//! - the newest version, deleted by someone else, is *lost*: the next version is made from a
//!   fresh read, rather than the workloads going back to an older one;
//! - where a version's annotations disagree with the history, the history wins, and the
//!   disagreement is reported.

use std::collections::{BTreeMap, BTreeSet};

use secretsync_api::{SecretSyncSpec, SecretSyncStatus, VersionState, VersionStatus};

use crate::cache::versions::{VersionIndex, VersionMeta, base_of};

/// The versions of one SecretSync, cross-checked.
#[derive(Debug, Default)]
pub struct Versions {
    /// Every version whose Secret exists: ours, and the disowned ones.
    pub existing: BTreeMap<i64, VersionMeta>,
    /// The newest version, deleted by someone other than the operator.
    pub lost: Option<VersionStatus>,
    /// What disagrees between a version's Secret and its name or the history, one line per
    /// Secret, to be reported.
    pub mismatches: Vec<(String, String)>,
    /// Every base name the SecretSync has used, the current one first: a reference to
    /// `<base>-v<N>` for any of them is a reference to one of its versions.
    pub bases: Vec<String>,
}

/// See the module docs. `owned` is what the index holds for the SecretSync.
pub fn cross_check(
    spec: &SecretSyncSpec,
    namespace: &str,
    base: &str,
    mut owned: BTreeMap<i64, VersionMeta>,
    previous: &SecretSyncStatus,
    index: &VersionIndex,
) -> Versions {
    let mut mismatches = Vec::new();
    for meta in owned.values_mut() {
        if let Some(label) = &meta.mislabelled {
            mismatches.push((
                meta.secret_name.clone(),
                format!(
                    "{}: label secretsync.io/version is {label:?} but the name says {}; the name is used",
                    meta.secret_name, meta.version
                ),
            ));
        }
        let recorded = previous
            .versions
            .iter()
            .find(|v| v.version == meta.version && v.secret_name == meta.secret_name);
        if let Some(recorded) = recorded
            && recorded.spec_version != meta.spec_version
        {
            mismatches.push((
                meta.secret_name.clone(),
                format!(
                    "{}: annotation secretsync.io/spec-version is {} but it was made at spec.version {}; the status history is used",
                    meta.secret_name, meta.spec_version, recorded.spec_version
                ),
            ));
            meta.spec_version = recorded.spec_version;
        }
    }
    let mut lost = None;
    for recorded in &previous.versions {
        if owned.contains_key(&recorded.version)
            || matches!(
                recorded.state,
                VersionState::Deleted | VersionState::Revoked
            )
            || spec.is_revoked(recorded.version)
        {
            continue;
        }
        match index.orphan(namespace, &recorded.secret_name) {
            Some(orphan) if orphan.meta.version == recorded.version => {
                let mut meta = orphan.meta;
                meta.spec_version = recorded.spec_version;
                owned.insert(meta.version, meta);
            }
            // Disowned or not, the newest version gone is lost: stepping back to the one
            // before would serve an older credential.
            _ if previous.current_version == Some(recorded.version) => {
                lost = Some(recorded.clone());
            }
            _ => {}
        }
    }
    // A version made after the lost one (by a pass that raced this one) makes it history.
    let lost = lost.filter(|l| owned.keys().next_back().is_none_or(|&v| v < l.version));
    let mut bases = vec![base.to_owned()];
    let seen = owned
        .values()
        .map(|m| m.secret_name.as_str())
        .chain(previous.versions.iter().map(|v| v.secret_name.as_str()));
    let mut others: BTreeSet<&str> = seen.filter_map(base_of).collect();
    others.remove(base);
    bases.extend(others.into_iter().map(str::to_owned));
    Versions {
        existing: owned,
        lost,
        mismatches,
        bases,
    }
}

/// `bases` and the base names of `kept` (unowned Secrets labelled as this SecretSync's),
/// without duplicates, the current base still first.
pub fn with_bases_of(mut bases: Vec<String>, kept: &[VersionMeta]) -> Vec<String> {
    for base in kept.iter().filter_map(|m| base_of(&m.secret_name)) {
        if !bases.iter().any(|b| b == base) {
            bases.push(base.to_owned());
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::{ObjectMeta, PartialObjectMetaExt};
    use secretsync_api::labels;

    fn secret(
        name: &str,
        owned: bool,
        labels_: &[(&str, &str)],
    ) -> kube::core::PartialObjectMeta<Secret> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            labels: Some(
                labels_
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some(
                [(labels::SPEC_VERSION.to_string(), "0".to_string())]
                    .into_iter()
                    .collect(),
            ),
            owner_references: owned.then(|| {
                vec![OwnerReference {
                    kind: "SecretSync".into(),
                    uid: "u1".into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
        .into_request_partial::<Secret>()
    }

    fn recorded(version: i64, name: &str, state: VersionState) -> VersionStatus {
        VersionStatus {
            version,
            secret_name: name.into(),
            state,
            ..Default::default()
        }
    }

    fn status(current: i64, versions: Vec<VersionStatus>) -> SecretSyncStatus {
        SecretSyncStatus {
            current_version: Some(current),
            versions,
            ..Default::default()
        }
    }

    const MANAGED: &[(&str, &str)] = &[(labels::MANAGED_BY, labels::MANAGED_BY_VALUE)];

    fn check(index: &VersionIndex, previous: &SecretSyncStatus) -> Versions {
        let spec: SecretSyncSpec = serde_json::from_value(serde_json::json!({
            "storeRef": {"name": "s"}
        }))
        .unwrap();
        cross_check(&spec, "ns", "db", index.versions("u1"), previous, index)
    }

    #[test]
    fn a_disowned_version_stays_a_version_and_a_deleted_newest_is_lost() {
        let index = VersionIndex::default();
        index.apply(&secret("db-v1", false, MANAGED));
        index.apply(&secret("db-v2", true, MANAGED));
        let previous = status(
            3,
            vec![
                recorded(3, "db-v3", VersionState::Active),
                recorded(2, "db-v2", VersionState::Retained),
                recorded(1, "db-v1", VersionState::Retained),
            ],
        );
        let versions = check(&index, &previous);
        assert_eq!(
            versions.existing.keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(versions.existing[&1].disowned);
        assert!(!versions.existing[&2].disowned);
        assert_eq!(
            versions.lost.map(|l| l.secret_name).as_deref(),
            Some("db-v3")
        );
    }

    #[test]
    fn versions_the_operator_deleted_or_that_are_not_the_newest_are_not_lost() {
        let index = VersionIndex::default();
        index.apply(&secret("db-v3", true, MANAGED));
        let previous = status(
            3,
            vec![
                recorded(3, "db-v3", VersionState::Active),
                recorded(2, "db-v2", VersionState::Retained),
                recorded(1, "db-v1", VersionState::Deleted),
            ],
        );
        let versions = check(&index, &previous);
        assert!(versions.lost.is_none());
        assert_eq!(versions.existing.keys().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn labels_are_hints_and_every_base_name_used_counts() {
        let index = VersionIndex::default();
        index.apply(&secret("db2-v2", true, &[(labels::VERSION, "50")]));
        index.apply(&secret("db-v1", true, &[]));
        let versions = check(&index, &status(2, Vec::new()));
        assert_eq!(
            versions.existing.keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(versions.mismatches.len(), 1);
        assert!(
            versions.mismatches[0].1.contains("\"50\""),
            "{:?}",
            versions.mismatches
        );
        assert_eq!(versions.bases, ["db", "db2"]);
    }
}
