//! The content hash that decides whether fetched content is new.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` over the Secret type and its data, keys in sorted order.
///
/// Every field is length-prefixed, so no two different (type, data) pairs share an encoding
/// (`{"ab": "c"}` and `{"a": "bc"}` hash differently). The encoding uses fixed-width
/// little-endian lengths, so the hash is stable across runs and platforms.
pub fn content_hash<V: AsRef<[u8]>>(secret_type: &str, data: &BTreeMap<String, V>) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"secretsync/content-hash/v1");
    field(secret_type.as_bytes());
    for (key, value) in data {
        field(key.as_bytes());
        field(value.as_ref());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn stable_across_runs_and_platforms() {
        // A pinned value: if this changes, every deployed Secret would look changed and
        // roll out a new version on upgrade.
        assert_eq!(
            content_hash("Opaque", &data(&[("password", "hunter2"), ("user", "app")])),
            "sha256:e4e5737deabbde2774d8903640bbc7ed805e7019d0b110c3762c638d28509960"
        );
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = BTreeMap::new();
        a.insert("b".to_string(), b"2".to_vec());
        a.insert("a".to_string(), b"1".to_vec());
        let mut b = BTreeMap::new();
        b.insert("a".to_string(), b"1".to_vec());
        b.insert("b".to_string(), b"2".to_vec());
        assert_eq!(content_hash("Opaque", &a), content_hash("Opaque", &b));
    }

    #[test]
    fn every_input_matters() {
        let base = content_hash("Opaque", &data(&[("a", "bc")]));
        assert_ne!(base, content_hash("Opaque", &data(&[("ab", "c")])));
        assert_ne!(
            base,
            content_hash("kubernetes.io/tls", &data(&[("a", "bc")]))
        );
        assert_ne!(base, content_hash("Opaque", &data(&[("a", "bd")])));
        assert_ne!(
            base,
            content_hash("Opaque", &data(&[("a", "bc"), ("d", "")]))
        );
        assert_ne!(
            content_hash("Opaque", &data(&[])),
            content_hash("", &data(&[]))
        );
    }
}
