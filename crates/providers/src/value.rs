//! Secret values in redacting types. A value leaves these types only when it is serialized
//! into a Secret body (or rendered by a template into one); `Debug` prints a placeholder.

use std::collections::BTreeMap;
use std::fmt;

pub use secrecy::{ExposeSecret, SecretSlice, SecretString};

/// Bytes of a secret value. Cloning copies the bytes into another zeroize-on-drop box.
#[derive(Clone, Default)]
pub struct SecretBytes(SecretSlice<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    /// The bytes. Call sites are few and named: building a Secret body, hashing, templating.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        self.expose()
    }
}

/// The data of one Secret version, key → value.
pub type SecretData = BTreeMap<String, SecretBytes>;

/// One remote secret as the backend returned it.
#[derive(Clone, Debug)]
pub struct RemoteValue {
    /// The whole value: for key/value backends (Vault KV) the JSON object of its fields.
    pub bytes: SecretBytes,
    /// The backend's own version id (Vault KV v2 version, AWS VersionId); `None` where the
    /// backend has no versions (Vault KV v1).
    pub version: Option<String>,
}
