//! The in-memory `fake` backend: values inline in the store spec, for demos and tests.

use std::collections::BTreeSet;

use secretsync_api::{FakeProvider, Find};

use crate::error::{ProviderError, Result};
use crate::find::{MAX_FOUND, Matcher, too_many};
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

    /// The latest value of every key under `find.path` whose name matches
    /// `find.name.regexp`, in key order. The fake backend has no tags.
    pub fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "fake", &["path"])?;
        let keys: BTreeSet<&str> = self
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .filter(|key| matcher.under_path(key) && matcher.name_matches(key))
            .collect();
        if keys.len() > MAX_FOUND {
            return Err(too_many());
        }
        keys.into_iter()
            .map(|key| Ok((key.to_owned(), self.fetch(key, None)?)))
            .collect()
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

    fn names(found: &[(String, RemoteValue)]) -> Vec<&str> {
        found.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn find(name: Option<&str>, path: Option<&str>) -> Find {
        Find {
            name: name.map(|r| secretsync_api::FindName { regexp: r.into() }),
            tags: None,
            path: path.map(Into::into),
        }
    }

    #[test]
    fn find_filters_by_path_and_name_in_key_order_with_latest_values() {
        let fake = Fake::new(&FakeProvider {
            data: vec![
                entry("app/payments/z", "z1", "1"),
                entry("app/payments/db", "one", "1"),
                entry("app/payments/db", "two", "2"),
                entry("app/payments-old/db", "old", "1"),
                entry("app/orders/db", "o", "1"),
            ],
        });
        let found = fake.find(&find(None, Some("app/payments"))).unwrap();
        assert_eq!(names(&found), ["app/payments/db", "app/payments/z"]);
        assert_eq!(found[0].1.bytes.expose(), b"two");
        assert_eq!(found[0].1.version.as_deref(), Some("2"));

        let found = fake.find(&find(Some("/db$"), None)).unwrap();
        assert_eq!(
            names(&found),
            ["app/orders/db", "app/payments-old/db", "app/payments/db"]
        );
        let found = fake
            .find(&find(Some("^app/payments"), Some("/app/")))
            .unwrap();
        assert_eq!(found.len(), 3);
        assert!(fake.find(&find(Some("^nothing"), None)).unwrap().is_empty());
    }

    #[test]
    fn find_refuses_tags_bad_patterns_and_too_many_matches() {
        let fake = Fake::new(&FakeProvider {
            data: (0..=MAX_FOUND)
                .map(|i| entry(&format!("bulk/{i:04}"), "v", "1"))
                .collect(),
        });
        let tags = Find {
            tags: Some([("team".to_owned(), "a".to_owned())].into()),
            ..find(None, Some("bulk"))
        };
        let err = fake.find(&tags).unwrap_err();
        assert!(
            err.to_string().contains("find.tags is not supported"),
            "{err}"
        );
        let err = fake.find(&find(Some("("), None)).unwrap_err();
        assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
        let err = fake.find(&find(None, Some("bulk"))).unwrap_err();
        assert!(err.to_string().contains("more than 500"), "{err}");
        assert_eq!(fake.find(&find(Some("^bulk/00"), None)).unwrap().len(), 100);
    }
}
