//! Conditions shared by SecretSyncs and stores: set one without churning
//! `lastTransitionTime`, and keep messages within the size events and conditions allow.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use secretsync_api::Reason;

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
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
