//! Text output for `list` and `status`. Pure: objects and the current time in, text out.
//! Nothing here ever sees Secret data; the CLI does not read Secrets at all.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use secretsync_api::reason::condition;
use secretsync_api::{SecretSync, SecretSyncStatus, TargetState};

/// Columns separated by three spaces, kubectl style; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// kubectl's age format: `45s`, `5m30s`, `95m`, `5h10m`, `30h`, `3d4h`, `120d`, `3y20d`.
pub fn age(since: &Time, now: Timestamp) -> String {
    let secs = now.as_second() - since.0.as_second();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if mins < 10 {
        match secs % 60 {
            0 => format!("{mins}m"),
            s => format!("{mins}m{s}s"),
        }
    } else if mins < 180 {
        format!("{mins}m")
    } else if hours < 8 {
        match mins % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

pub fn find_condition<'a>(status: &'a SecretSyncStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// `True`, `False (ProviderUnavailable)` or `Unknown`.
pub fn ready_cell(sync: &SecretSync) -> String {
    match sync
        .status
        .as_ref()
        .and_then(|s| find_condition(s, condition::READY))
    {
        Some(c) if c.status == "True" => "True".into(),
        Some(c) if c.reason.is_empty() => c.status.clone(),
        Some(c) => format!("{} ({})", c.status, c.reason),
        None => "Unknown".into(),
    }
}

/// `2/2 Complete`, `1/2 Progressing`, `0/1 Failed`, or `-` without targets. A target counts as
/// done only when it is Complete at the active version.
pub fn rollout_cell(sync: &SecretSync) -> String {
    let Some(status) = sync.status.as_ref() else {
        return "-".into();
    };
    let targets = status
        .rollout
        .as_ref()
        .map(|r| r.targets.as_slice())
        .unwrap_or_default();
    if targets.is_empty() {
        return "-".into();
    }
    let active = status.active_version;
    let done = targets
        .iter()
        .filter(|t| t.state == TargetState::Complete && Some(t.version) == active)
        .count();
    let word = if targets.iter().any(|t| t.state == TargetState::Failed) {
        "Failed"
    } else if done == targets.len() {
        "Complete"
    } else if targets.iter().any(|t| t.state == TargetState::Waiting) {
        "Waiting"
    } else if targets
        .iter()
        .any(|t| t.state == TargetState::Progressing || Some(t.version) != active)
    {
        "Progressing"
    } else {
        "NotFound"
    };
    format!("{done}/{} {word}", targets.len())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The `list` table; with `all_namespaces` a NAMESPACE column comes first.
pub fn list(syncs: &[SecretSync], all_namespaces: bool, now: Timestamp) -> String {
    let mut headers = vec!["NAME", "CURRENT", "ACTIVE", "READY", "ROLLOUT", "AGE"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = syncs
        .iter()
        .map(|s| {
            let status = s.status.clone().unwrap_or_default();
            let mut active = opt(status.active_secret_name.clone());
            if s.spec.pin_version.is_some() {
                active.push_str(" (pinned)");
            }
            let mut row = vec![
                s.name_any(),
                opt(status.current_version),
                active,
                ready_cell(s),
                rollout_cell(s),
                s.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| age(t, now))
                    .unwrap_or_else(|| "-".into()),
            ];
            if all_namespaces {
                row.insert(0, s.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

fn timestamp(t: &Time, now: Timestamp) -> String {
    format!(
        "{} ({} ago)",
        t.0.strftime("%Y-%m-%d %H:%M:%SZ"),
        age(t, now)
    )
}

/// `status NAME`: a header, the conditions, the versions table and the targets table.
pub fn status(sync: &SecretSync, now: Timestamp) -> String {
    let name = sync.name_any();
    let spec = &sync.spec;
    let status = sync.status.clone().unwrap_or_default();
    let secret_of = |v: i64| {
        status
            .versions
            .iter()
            .find(|s| s.version == v)
            .map(|s| s.secret_name.clone())
    };
    let with_secret = |v: i64| match secret_of(v) {
        Some(secret) => format!("{v} ({secret})"),
        None => v.to_string(),
    };

    let mut header: Vec<(&str, String)> = vec![
        ("Name", name.clone()),
        ("Namespace", sync.namespace().unwrap_or_default()),
        (
            "Store",
            format!("{}/{}", spec.store_kind().as_str(), spec.store_ref.name),
        ),
        ("Spec version", spec.spec_version().to_string()),
        (
            "Pinned",
            spec.pin_version
                .map(|v| {
                    format!(
                        "{}; `kubectl secretsync unpin {name} -n {}` rolls forward",
                        with_secret(v),
                        sync.namespace().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "no".into()),
        ),
        (
            "Revoked",
            if spec.revoked().is_empty() {
                "none".into()
            } else {
                let list: Vec<String> = spec.revoked().iter().map(i64::to_string).collect();
                format!("{} (policy {:?})", list.join(", "), spec.revoke_policy())
            },
        ),
        (
            "Current",
            status
                .current_version
                .map(with_secret)
                .unwrap_or_else(|| "- (no version made yet)".into()),
        ),
        (
            "Active",
            status
                .active_version
                .map(with_secret)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(t) = &status.last_refresh_time {
        header.push(("Last change read", timestamp(t, now)));
    }
    let generation = sync.metadata.generation;
    if let (Some(g), observed) = (generation, status.observed_generation)
        && observed.is_none_or(|o| o < g)
    {
        header.push((
            "Note",
            format!(
                "the operator has not processed the latest change yet (generation {g}, observed {})",
                opt(observed)
            ),
        ));
    }
    let width = header.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in &header {
        out.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }

    out.push_str("\nConditions:\n");
    let mut conditions: Vec<&Condition> =
        [condition::READY, condition::SYNCED, condition::ROLLED_OUT]
            .iter()
            .filter_map(|t| find_condition(&status, t))
            .collect();
    conditions.extend(status.conditions.iter().filter(|c| {
        ![condition::READY, condition::SYNCED, condition::ROLLED_OUT].contains(&c.type_.as_str())
    }));
    if conditions.is_empty() {
        out.push_str("  none reported yet (is the operator running?)\n");
    } else {
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                let stale = match (c.observed_generation, generation) {
                    (Some(o), Some(g)) if o < g => format!(" [from generation {o}]"),
                    _ => String::new(),
                };
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    format!("{}{stale}", c.message),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }

    out.push_str("\nVersions:\n");
    if status.versions.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    v.secret_name.clone(),
                    format!("{:?}", v.state),
                    v.created_at
                        .as_ref()
                        .map(|t| timestamp(t, now))
                        .unwrap_or_else(|| "-".into()),
                    v.spec_version.to_string(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["VERSION", "SECRET", "STATE", "CREATED", "SPEC VERSION"],
            &rows,
        )));
    }

    out.push_str("\nTargets:\n");
    let targets = status
        .rollout
        .as_ref()
        .map(|r| r.targets.as_slice())
        .unwrap_or_default();
    if targets.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = targets
            .iter()
            .map(|t| {
                vec![
                    t.kind.as_str().to_owned(),
                    t.name.clone(),
                    t.version.to_string(),
                    format!("{:?}", t.state),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["KIND", "NAME", "VERSION", "STATE"],
            &rows,
        )));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
