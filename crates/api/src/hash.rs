//! The content hash that decides whether fetched content is new.
//!
//! It is keyed (HMAC-SHA256) with a key only the operator holds: the hash sits in the
//! Secret's annotations and in the SecretSync's status, readable by anyone who may read
//! SecretSyncs, and an unkeyed hash of a short password can be brute-forced offline.
//!
//! A hash names the key that made it (`hmac-sha256:<key id>:<hex>`), so an operator with
//! another key — the key Secret lost, the operator moved, another shard — knows that it
//! cannot compare the hash, instead of taking it for changed content.

use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;
use sha2::{Digest, Sha256};

/// Prefix of the keyed hash, the form every new version carries.
pub const KEYED_PREFIX: &str = "hmac-sha256:";
/// Prefix of the unkeyed hash that versions made before the hash was keyed carry.
pub const LEGACY_PREFIX: &str = "sha256:";
/// Hex digits of a key id: 64 bits, so two random keys practically never share one.
const KEY_ID_HEX: usize = 16;
/// The shortest key accepted: HMAC-SHA256's block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// The operator's content-hash key. `Debug` never prints it.
#[derive(Clone)]
pub struct HashKey {
    key: hmac::Key,
    id: String,
}

impl HashKey {
    /// A key from its bytes; `None` when shorter than [`MIN_KEY_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < MIN_KEY_BYTES {
            return None;
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        // A MAC of a fixed label: public, and says nothing of the key without it.
        let tag = hmac::sign(&key, b"secretsync/content-hash-key-id");
        let id = hex::encode(&tag.as_ref()[..KEY_ID_HEX / 2]);
        Some(Self { key, id })
    }

    /// The key's public id, which every hash it makes carries.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `hash` was made with this key; when not (another key's id, a hash made before
    /// hashes named their key, the unkeyed form), comparing it says nothing about content.
    pub fn made(&self, hash: &str) -> bool {
        key_id_of(hash) == Some(self.id.as_str())
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey([REDACTED])")
    }
}

/// `hmac-sha256:<key id>:<hex>` over the Secret type and its data, keys in sorted order.
pub fn content_hash<V: AsRef<[u8]>>(
    key: &HashKey,
    secret_type: &str,
    data: &BTreeMap<String, V>,
) -> String {
    let mut mac = hmac::Context::with_key(&key.key);
    encode(secret_type, data, |bytes| mac.update(bytes));
    format!(
        "{KEYED_PREFIX}{}:{}",
        key.id,
        hex::encode(mac.sign().as_ref())
    )
}

/// The id of the key that made `hash`; `None` for the unkeyed form and for keyed hashes
/// made before hashes named their key (`hmac-sha256:<hex>`).
pub fn key_id_of(hash: &str) -> Option<&str> {
    let (id, _) = hash.strip_prefix(KEYED_PREFIX)?.split_once(':')?;
    Some(id)
}

/// `sha256:<hex>`, the unkeyed hash that versions made before the hash was keyed carry.
/// Never written: the operator re-keys such versions from their data. Kept to make such
/// versions in tests, and to search for it where it must not appear.
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
        let keyed = content_hash(&key(7), "Opaque", &d);
        assert_eq!(
            keyed.rsplit_once(':').unwrap().1,
            "c55de9ad9ca36fe9a1532037f7d462a11271fa106e3653ba7bd396ead7d5eee0"
        );
        // The id checked with Python's hmac module too.
        assert_eq!(key(7).id(), "dbb7ca37ff0a9f26");
        assert!(
            keyed.starts_with("hmac-sha256:dbb7ca37ff0a9f26:"),
            "{keyed}"
        );
    }

    #[test]
    fn a_hash_names_the_key_that_made_it() {
        let d = data(&[("password", "hunter2")]);
        let (one, two) = (key(1), key(2));
        assert_ne!(one.id(), two.id());
        assert_eq!(one.id().len(), 16);
        let hash = content_hash(&one, "Opaque", &d);
        assert_eq!(key_id_of(&hash), Some(one.id()));
        assert!(one.made(&hash));
        assert!(!two.made(&hash));
        // Forms that name no key: made before hashes named theirs, and the unkeyed one.
        let unnamed = format!("{KEYED_PREFIX}{}", hash.rsplit_once(':').unwrap().1);
        assert_eq!(key_id_of(&unnamed), None);
        assert!(!one.made(&unnamed));
        let legacy = legacy_content_hash("Opaque", &d);
        assert_eq!(key_id_of(&legacy), None);
        assert!(!one.made(&legacy));
        assert!(!one.made(""));
        // The id is no part of the key: a key made from the id's bytes has another id.
        let mut padded = one.id().as_bytes().to_vec();
        padded.resize(MIN_KEY_BYTES, 0);
        assert_ne!(HashKey::from_bytes(&padded).unwrap().id(), one.id());
    }

    #[test]
    fn the_key_decides_the_hash() {
        let d = data(&[("password", "hunter2")]);
        let a = content_hash(&key(1), "Opaque", &d);
        assert_eq!(a, content_hash(&key(1), "Opaque", &d));
        assert_ne!(a, content_hash(&key(2), "Opaque", &d));
        // Not the unkeyed digest under another name.
        let legacy = legacy_content_hash("Opaque", &d);
        assert_ne!(
            a.rsplit_once(':').unwrap().1,
            &legacy[LEGACY_PREFIX.len()..]
        );
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
