//! Turning a fetched remote value into Secret data: a `property` of a JSON object, or every
//! field (`dataFrom.extract`). Shared by every provider so they all behave alike.

use serde_json::Value;

use crate::error::{ProviderError, Result};
use crate::value::{RemoteValue, SecretBytes, SecretData};

/// The value for one Secret key: the whole remote value, or one `property` of it.
///
/// A property is looked up as a top-level field first, then as a dotted path into nested
/// objects (`db.password`). String fields become their text; other JSON values their JSON.
pub fn select(key: &str, remote: &RemoteValue, property: Option<&str>) -> Result<SecretBytes> {
    let Some(property) = property.filter(|p| !p.is_empty()) else {
        return Ok(remote.bytes.clone());
    };
    let object = parse_object(key, remote, "a property cannot be selected")?;
    let found = object.get(property).or_else(|| {
        let mut node = &object;
        let mut parts = property.split('.').peekable();
        while let Some(part) = parts.next() {
            let child = node.as_object()?.get(part)?;
            if parts.peek().is_none() {
                return Some(child);
            }
            node = child;
        }
        None
    });
    match found {
        Some(value) => Ok(field_bytes(value)),
        None => Err(ProviderError::PropertyNotFound {
            key: key.to_owned(),
            property: property.to_owned(),
        }),
    }
}

/// Every top-level field of the remote value (`dataFrom.extract`).
pub fn extract_all(key: &str, remote: &RemoteValue) -> Result<SecretData> {
    let object = parse_object(key, remote, "its fields cannot be extracted")?;
    let Value::Object(map) = object else {
        unreachable!("parse_object returns objects")
    };
    Ok(map
        .iter()
        .map(|(field, value)| (field.clone(), field_bytes(value)))
        .collect())
}

fn parse_object(key: &str, remote: &RemoteValue, what: &'static str) -> Result<Value> {
    // serde_json's error would quote a position, never content; we drop it anyway.
    match serde_json::from_slice::<Value>(remote.bytes.expose()) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ProviderError::NotStructured {
            key: key.to_owned(),
            what,
        }),
    }
}

fn field_bytes(value: &Value) -> SecretBytes {
    match value {
        Value::String(s) => SecretBytes::from(s.clone()),
        other => SecretBytes::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> RemoteValue {
        RemoteValue {
            bytes: SecretBytes::from(s.to_owned()),
            version: Some("1".into()),
        }
    }

    #[test]
    fn selects_whole_values_and_properties() {
        let r = remote(r#"{"password":"p4ss","port":5432,"db":{"user":"app"},"a.b":"dotted"}"#);
        assert_eq!(select("k", &r, None).unwrap().expose(), r.bytes.expose());
        assert_eq!(
            select("k", &r, Some("")).unwrap().expose(),
            r.bytes.expose()
        );
        assert_eq!(select("k", &r, Some("password")).unwrap().expose(), b"p4ss");
        assert_eq!(select("k", &r, Some("port")).unwrap().expose(), b"5432");
        assert_eq!(select("k", &r, Some("db.user")).unwrap().expose(), b"app");
        assert_eq!(
            select("k", &r, Some("db")).unwrap().expose(),
            br#"{"user":"app"}"#
        );
        assert_eq!(select("k", &r, Some("a.b")).unwrap().expose(), b"dotted");
    }

    #[test]
    fn missing_properties_and_plain_values_are_errors_without_values() {
        let r = remote(r#"{"password":"s3cr3t-canary"}"#);
        let err = select("app/db", &r, Some("user")).unwrap_err();
        assert!(matches!(err, ProviderError::PropertyNotFound { .. }));
        assert!(!err.to_string().contains("s3cr3t-canary"));

        let plain = remote("s3cr3t-canary");
        let err = select("app/db", &plain, Some("password")).unwrap_err();
        assert!(matches!(err, ProviderError::NotStructured { .. }), "{err}");
        assert!(!err.to_string().contains("s3cr3t-canary"));
        assert!(extract_all("app/db", &plain).is_err());
    }

    #[test]
    fn extracts_every_field() {
        let all = extract_all("k", &remote(r#"{"user":"app","password":"p","n":1}"#)).unwrap();
        let keys: Vec<_> = all.keys().cloned().collect();
        assert_eq!(keys, ["n", "password", "user"]);
        assert_eq!(all["n"].expose(), b"1");
    }
}
