//! [`StringMap`]: a small string-to-string map stored as a sorted `Vec`, serialized exactly
//! like a `BTreeMap<String, String>`.
//!
//! Every version in a SecretSync's status carries one (`sourceVersions`), usually with a
//! single entry, and the operator caches every SecretSync. A `BTreeMap` allocates an
//! eleven-slot node (about half a KiB) even for one entry, which made these maps a third of
//! each cached SecretSync (compare bench, heaptrack: docs/benchmarks.md).

use std::collections::BTreeMap;
use std::ops::Index;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Keys are unique and kept sorted, so equality, iteration order and the serialized form
/// are those of the equivalent `BTreeMap`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringMap(Vec<(String, String)>);

impl StringMap {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|at| self.0[at].1.as_str())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key`, replacing its value if present.
    pub fn insert(&mut self, key: String, value: String) {
        match self.position(&key) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (key, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl FromIterator<(String, String)> for StringMap {
    /// A later duplicate key wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut entries: Vec<(String, String)> = iter.into_iter().collect();
        // Stable: among equal keys the last one is last, and dedup keeps the first of a run.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        entries.shrink_to_fit();
        StringMap(entries)
    }
}

impl From<BTreeMap<String, String>> for StringMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique; an ExactSizeIterator, so the Vec is allocated once.
        StringMap(map.into_iter().collect())
    }
}

impl Index<&str> for StringMap {
    type Output = String;

    /// Panics when `key` is absent, like `BTreeMap`'s index.
    fn index(&self, key: &str) -> &String {
        match self.position(key) {
            Ok(at) => &self.0[at].1,
            Err(_) => panic!("no key {key:?} in the map"),
        }
    }
}

impl Serialize for StringMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(StringMap::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> StringMap {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_and_writes_like_a_btreemap() {
        let m = map(&[("b/key", "2"), ("a/key", "1"), ("b/key", "3")]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b/key"), Some("3"), "the later duplicate wins");
        assert_eq!(m["a/key"], "1");
        assert_eq!(m.get("c"), None);
        assert!(m.contains_key("a/key") && !m.contains_key("a"));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"a/key":"1","b/key":"3"}"#);
        let back: StringMap = serde_json::from_str(r#"{"b/key":"3","a/key":"1"}"#).unwrap();
        assert_eq!(back, m);
        let as_btree: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
        assert_eq!(StringMap::from(as_btree), m);
    }

    #[test]
    fn insert_keeps_keys_sorted_and_unique() {
        let mut m = StringMap::default();
        m.insert("z".into(), "1".into());
        m.insert("a".into(), "2".into());
        m.insert("z".into(), "3".into());
        assert_eq!(m.iter().collect::<Vec<_>>(), [("a", "2"), ("z", "3")]);
    }

    #[test]
    fn one_entry_takes_one_slot() {
        let m = map(&[("app/db", "7")]);
        assert_eq!(m.0.capacity(), 1);
    }
}
