//! Names of versioned Secrets: `<base>-v<N>`.

use thiserror::Error;

/// Longest Kubernetes object name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest `target.name`: leaves room for `-v` and nine digits of version number.
pub const MAX_BASE_LEN: usize = MAX_NAME_LEN - 11;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("target name must not be empty")]
    Empty,
    #[error(
        "target name {name:?} is {len} characters; at most {MAX_BASE_LEN} leave room for the -v<N> suffix"
    )]
    TooLong { name: String, len: usize },
    #[error(
        "target name {0:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
    )]
    NotDnsSubdomain(String),
    #[error("version must be at least 1, got {0}")]
    BadVersion(i64),
}

/// Checks that `base` is a DNS subdomain short enough for any `-v<N>` suffix we will make.
pub fn validate_base_name(base: &str) -> Result<(), NameError> {
    if base.is_empty() {
        return Err(NameError::Empty);
    }
    if base.len() > MAX_BASE_LEN {
        return Err(NameError::TooLong {
            name: base.to_owned(),
            len: base.len(),
        });
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !base.split('.').all(label_ok) {
        return Err(NameError::NotDnsSubdomain(base.to_owned()));
    }
    Ok(())
}

/// `<base>-v<N>`, checked against the name rules.
pub fn versioned_name(base: &str, version: i64) -> Result<String, NameError> {
    validate_base_name(base)?;
    if version < 1 {
        return Err(NameError::BadVersion(version));
    }
    Ok(format!("{base}-v{version}"))
}

/// The version number in `name` when it is `<base>-v<N>` (N ≥ 1, no leading zeros);
/// `None` for any other name — including `<base>-v1-old` or another base that merely
/// shares a prefix.
pub fn parse_versioned_name(base: &str, name: &str) -> Option<i64> {
    let digits = name.strip_prefix(base)?.strip_prefix("-v")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_versioned_names() {
        assert_eq!(versioned_name("db", 1).unwrap(), "db-v1");
        assert_eq!(versioned_name("app.db", 42).unwrap(), "app.db-v42");
        assert_eq!(parse_versioned_name("db", "db-v1"), Some(1));
        assert_eq!(parse_versioned_name("db", "db-v120"), Some(120));
    }

    #[test]
    fn rejects_names_of_other_secrets() {
        for other in [
            "db",
            "db-v",
            "db-v0",
            "db-v01",
            "db-v1x",
            "db-v1-old",
            "dbx-v1",
            "db-x1",
            "xdb-v1",
            "db-v-1",
        ] {
            assert_eq!(parse_versioned_name("db", other), None, "{other}");
        }
        // a base that is a prefix of another SecretSync's base does not claim its Secrets
        assert_eq!(parse_versioned_name("db", "db-v2-v3"), None);
        assert_eq!(parse_versioned_name("db-v2", "db-v2-v3"), Some(3));
    }

    #[test]
    fn length_limits_leave_room_for_suffix() {
        let longest = format!(
            "{}.{}.{}.{}",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(59)
        );
        assert_eq!(longest.len(), MAX_BASE_LEN);
        let name = versioned_name(&longest, 999_999_999).unwrap();
        assert_eq!(name.len(), MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_BASE_LEN + 1);
        assert!(matches!(
            versioned_name(&too_long, 1),
            Err(NameError::TooLong { len: 243, .. })
        ));
        // each dot-separated label is at most 63 characters
        let long_label = format!("{}.b", "a".repeat(64));
        assert!(matches!(
            validate_base_name(&long_label),
            Err(NameError::NotDnsSubdomain(_))
        ));
    }

    #[test]
    fn rejects_non_dns_names_and_bad_versions() {
        for bad in ["", "DB", "db_", "-db", "db-", "db..x", "db x", ".db"] {
            assert!(validate_base_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(versioned_name("db", 0), Err(NameError::BadVersion(0)));
        assert_eq!(versioned_name("db", -3), Err(NameError::BadVersion(-3)));
    }
}
