//! The in-memory `fake` backend: values inline in the store spec, for demos and tests.

use secretsync_api::FakeProvider;

use crate::error::{ProviderError, Result};
use crate::value::{RemoteValue, SecretBytes};

#[derive(Clone, Debug)]
pub struct Fake {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    version: Option<String>,
    value: SecretBytes,
}

impl Fake {
    pub fn new(spec: &FakeProvider) -> Self {
        Self {
            entries: spec
                .data
                .iter()
                .map(|e| Entry {
                    key: e.key.clone(),
                    version: e.version.clone(),
                    value: SecretBytes::from(e.value.clone()),
                })
                .collect(),
        }
    }

    /// The entry for `key` at `version`; without a version, the last one listed for `key`
    /// (so appending an entry is how a demo "writes" a new backend version).
    pub fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key && version.is_none_or(|v| e.version.as_deref() == Some(v)))
            .map(|e| RemoteValue {
                bytes: e.value.clone(),
                version: e.version.clone(),
            })
            .ok_or_else(|| ProviderError::NotFound {
                key: match version {
                    Some(v) => format!("{key}@{v}"),
                    None => key.to_owned(),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::FakeEntry;

    fn entry(key: &str, value: &str, version: &str) -> FakeEntry {
        FakeEntry {
            key: key.into(),
            value: value.into(),
            version: Some(version.into()),
        }
    }

    #[test]
    fn latest_is_the_last_listed_and_versions_can_be_pinned() {
        let fake = Fake::new(&FakeProvider {
            data: vec![entry("app/db", "one", "1"), entry("app/db", "two", "2")],
        });
        let latest = fake.fetch("app/db", None).unwrap();
        assert_eq!(latest.bytes.expose(), b"two");
        assert_eq!(latest.version.as_deref(), Some("2"));
        assert_eq!(
            fake.fetch("app/db", Some("1")).unwrap().bytes.expose(),
            b"one"
        );
        assert!(matches!(
            fake.fetch("app/db", Some("3")),
            Err(ProviderError::NotFound { .. })
        ));
        assert!(matches!(
            fake.fetch("app/other", None),
            Err(ProviderError::NotFound { .. })
        ));
    }
}
