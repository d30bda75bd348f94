//! The content hash that decides whether fetched content is new.
//!
//! It is keyed (HMAC-SHA256) with a key only the operator holds: the hash sits in the
//! Secret's annotations and in the SecretSync's status, readable by anyone who may read
//! SecretSyncs, and an unkeyed hash of a short password can be brute-forced offline.

use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;
use sha2::{Digest, Sha256};

/// Prefix of the keyed hash, the form every new version carries.
pub const KEYED_PREFIX: &str = "hmac-sha256:";
/// Prefix of the unkeyed hash that versions made before the hash was keyed carry.
pub const LEGACY_PREFIX: &str = "sha256:";
/// The shortest key accepted: HMAC-SHA256's block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// The operator's content-hash key. `Debug` never prints it.
#[derive(Clone)]
pub struct HashKey(hmac::Key);

impl HashKey {
    /// A key from its bytes; `None` when shorter than [`MIN_KEY_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey([REDACTED])")
    }
}

/// `hmac-sha256:<hex>` over the Secret type and its data, keys in sorted order.
pub fn content_hash<V: AsRef<[u8]>>(
    key: &HashKey,
    secret_type: &str,
    data: &BTreeMap<String, V>,
) -> String {
    let mut mac = hmac::Context::with_key(&key.0);
    encode(secret_type, data, |bytes| mac.update(bytes));
    format!("{KEYED_PREFIX}{}", hex::encode(mac.sign().as_ref()))
}

/// `sha256:<hex>`, the unkeyed hash of versions made before the hash was keyed. Only
/// compared with, never written: an upgrade must not make a new version of content that
/// did not change.
pub fn legacy_content_hash<V: AsRef<[u8]>>(
    secret_type: &str,
    data: &BTreeMap<String, V>,
) -> String {
    let mut hasher = Sha256::new();
    encode(secret_type, data, |bytes| hasher.update(bytes));
    format!("{LEGACY_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// Every field is length-prefixed, so no two different (type, data) pairs share an encoding
/// (`{"ab": "c"}` and `{"a": "bc"}` hash differently). The encoding uses fixed-width
/// little-endian lengths, so the hash is stable across runs and platforms.
fn encode<V: AsRef<[u8]>>(
    secret_type: &str,
    data: &BTreeMap<String, V>,
    mut update: impl FnMut(&[u8]),
) {
    let mut field = |bytes: &[u8]| {
        update(&(bytes.len() as u64).to_le_bytes());
        update(bytes);
    };
    field(b"secretsync/content-hash/v1");
    field(secret_type.as_bytes());
    for (key, value) in data {
        field(key.as_bytes());
        field(value.as_ref());
    }
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

    fn key(byte: u8) -> HashKey {
        HashKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn stable_across_runs_and_platforms() {
        // Pinned values (the keyed one checked with Python's hmac module): if these change,
        // every deployed Secret would look changed and roll out a new version on upgrade.
        let d = data(&[("password", "hunter2"), ("user", "app")]);
        assert_eq!(
            legacy_content_hash("Opaque", &d),
            "sha256:e4e5737deabbde2774d8903640bbc7ed805e7019d0b110c3762c638d28509960"
        );
        assert_eq!(
            content_hash(&key(7), "Opaque", &d),
            "hmac-sha256:c55de9ad9ca36fe9a1532037f7d462a11271fa106e3653ba7bd396ead7d5eee0"
        );
    }

    #[test]
    fn the_key_decides_the_hash() {
        let d = data(&[("password", "hunter2")]);
        let a = content_hash(&key(1), "Opaque", &d);
        assert_eq!(a, content_hash(&key(1), "Opaque", &d));
        assert_ne!(a, content_hash(&key(2), "Opaque", &d));
        // Not the unkeyed digest under another name.
        let legacy = legacy_content_hash("Opaque", &d);
        assert_ne!(&a[KEYED_PREFIX.len()..], &legacy[LEGACY_PREFIX.len()..]);
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(HashKey::from_bytes(&[1; MIN_KEY_BYTES - 1]).is_none());
        let key = HashKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{key:?}"), "HashKey([REDACTED])");
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = BTreeMap::new();
        a.insert("b".to_string(), b"2".to_vec());
        a.insert("a".to_string(), b"1".to_vec());
        let mut b = BTreeMap::new();
        b.insert("a".to_string(), b"1".to_vec());
        b.insert("b".to_string(), b"2".to_vec());
        assert_eq!(
            content_hash(&key(1), "Opaque", &a),
            content_hash(&key(1), "Opaque", &b)
        );
    }

    #[test]
    fn every_input_matters() {
        let hash = |t: &str, d: &[(&str, &str)]| content_hash(&key(1), t, &data(d));
        let base = hash("Opaque", &[("a", "bc")]);
        assert_ne!(base, hash("Opaque", &[("ab", "c")]));
        assert_ne!(base, hash("kubernetes.io/tls", &[("a", "bc")]));
        assert_ne!(base, hash("Opaque", &[("a", "bd")]));
        assert_ne!(base, hash("Opaque", &[("a", "bc"), ("d", "")]));
        assert_ne!(hash("Opaque", &[]), hash("", &[]));
    }
}
