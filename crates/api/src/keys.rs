//! Validation of Kubernetes Secret data keys.

use thiserror::Error;

pub const MAX_KEY_LEN: usize = 253;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("secret key must not be empty")]
    Empty,
    #[error("secret key {0:?} is longer than {MAX_KEY_LEN} characters")]
    TooLong(String),
    #[error("secret key {0:?} may only contain letters, digits, '-', '_' and '.'")]
    InvalidCharacters(String),
    #[error("secret key {0:?} must not be '.' or '..'")]
    DotName(String),
}

/// Checks a Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`
/// (the API server refuses those too).
pub fn validate_secret_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        // Only a prefix goes into the error: the key may come from a backend's field names.
        return Err(KeyError::TooLong(format!("{}…", &key[..32])));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(KeyError::InvalidCharacters(key.to_owned()));
    }
    if key == "." || key == ".." {
        return Err(KeyError::DotName(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        for key in [
            "password",
            "tls.crt",
            ".dockerconfigjson",
            "A_b-9",
            "..x",
            &"k".repeat(253),
        ] {
            assert_eq!(validate_secret_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn rejects_invalid_keys() {
        assert_eq!(validate_secret_key(""), Err(KeyError::Empty));
        assert!(matches!(
            validate_secret_key(&"k".repeat(254)),
            Err(KeyError::TooLong(_))
        ));
        for key in ["a b", "a/b", "é", "a:b", "a\nb", "$x"] {
            assert!(
                matches!(
                    validate_secret_key(key),
                    Err(KeyError::InvalidCharacters(_))
                ),
                "{key:?}"
            );
        }
        assert!(matches!(
            validate_secret_key("."),
            Err(KeyError::DotName(_))
        ));
        assert!(matches!(
            validate_secret_key(".."),
            Err(KeyError::DotName(_))
        ));
    }
}
