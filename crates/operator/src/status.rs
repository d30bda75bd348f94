//! Building a SecretSync's status: the versions table and the conditions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use secretsync_api::{MAX_TOMBSTONES, Reason, VersionState, VersionStatus};

use crate::index::VersionMeta;

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// `status.versions`, newest first: every existing version (Active, Retained, or Revoked
/// while its Secret still exists), then tombstones of deleted and revoked versions from the
/// previous status, at most [`MAX_TOMBSTONES`] of them.
pub fn version_list(
    existing: &BTreeMap<i64, VersionMeta>,
    previous: &[VersionStatus],
    active: Option<i64>,
    revoked: &[i64],
) -> Vec<VersionStatus> {
    let previous_of = |v: i64| previous.iter().find(|p| p.version == v);
    let mut list: Vec<VersionStatus> = existing
        .values()
        .rev()
        .map(|meta| {
            let state = if revoked.contains(&meta.version) {
                VersionState::Revoked
            } else if Some(meta.version) == active {
                VersionState::Active
            } else {
                VersionState::Retained
            };
            let revoked_at = (state == VersionState::Revoked).then(|| {
                previous_of(meta.version)
                    .and_then(|p| p.revoked_at.clone())
                    .unwrap_or_else(now)
            });
            VersionStatus {
                version: meta.version,
                secret_name: meta.secret_name.clone(),
                content_hash: meta.content_hash.clone(),
                spec_version: meta.spec_version,
                created_at: meta.created_at.clone(),
                source_versions: meta.source_versions.clone(),
                state,
                revoked_at,
            }
        })
        .collect();
    let mut tombstones: Vec<VersionStatus> = previous
        .iter()
        .filter(|p| !existing.contains_key(&p.version))
        .map(|p| {
            let mut t = p.clone();
            if revoked.contains(&t.version) || t.state == VersionState::Revoked {
                t.state = VersionState::Revoked;
                t.revoked_at = t.revoked_at.or_else(|| Some(now()));
            } else {
                t.state = VersionState::Deleted;
            }
            t
        })
        .collect();
    tombstones.truncate(MAX_TOMBSTONES);
    list.extend(tombstones);
    list.sort_by_key(|v| std::cmp::Reverse(v.version));
    list
}

/// Sets a condition, keeping `lastTransitionTime` when the status did not change so a
/// steady state produces an identical status (and no write).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: Reason,
    message: String,
    observed_generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.as_str().to_owned(),
        message: truncate(message, 1024),
        last_transition_time,
        observed_generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// Cuts a message to `max` bytes at a character boundary.
pub fn truncate(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: i64) -> VersionMeta {
        VersionMeta {
            version: v,
            secret_name: format!("db-v{v}"),
            content_hash: Some(format!("sha256:{v}")),
            spec_version: 0,
            created_at: None,
            source_versions: None,
        }
    }

    #[test]
    fn versions_are_listed_newest_first_with_tombstones() {
        let existing: BTreeMap<i64, VersionMeta> = [(2, meta(2)), (3, meta(3))].into();
        let previous = vec![
            VersionStatus {
                version: 1,
                secret_name: "db-v1".into(),
                state: VersionState::Retained,
                ..Default::default()
            },
            VersionStatus {
                version: 4,
                secret_name: "db-v4".into(),
                state: VersionState::Revoked,
                ..Default::default()
            },
        ];
        let list = version_list(&existing, &previous, Some(3), &[4]);
        let summary: Vec<_> = list.iter().map(|v| (v.version, v.state)).collect();
        assert_eq!(
            summary,
            [
                (4, VersionState::Revoked),
                (3, VersionState::Active),
                (2, VersionState::Retained),
                (1, VersionState::Deleted)
            ]
        );
        assert!(list[0].revoked_at.is_some());
    }

    #[test]
    fn tombstones_are_bounded() {
        let previous: Vec<_> = (1..=50)
            .map(|v| VersionStatus {
                version: v,
                secret_name: format!("db-v{v}"),
                state: VersionState::Deleted,
                ..Default::default()
            })
            .collect();
        let existing: BTreeMap<i64, VersionMeta> = [(51, meta(51))].into();
        let list = version_list(&existing, &previous, Some(51), &[]);
        assert_eq!(list.len(), 1 + MAX_TOMBSTONES);
        assert_eq!(list[0].version, 51);
    }

    #[test]
    fn transition_time_survives_an_unchanged_status() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            true,
            Reason::Synced,
            "a".into(),
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        set_condition(
            &mut conditions,
            "Ready",
            true,
            Reason::Synced,
            "b".into(),
            Some(2),
        );
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "b");
        set_condition(
            &mut conditions,
            "Ready",
            false,
            Reason::ProviderUnavailable,
            "down".into(),
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "ProviderUnavailable");
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let cut = truncate("é".repeat(1000), 1024);
        assert!(cut.len() <= 1024);
        assert!(cut.ends_with('…'));
    }
}
