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

/// What a dynamic-secret engine issued for one version: the Secret data, the lease the
/// backend holds on it, and a public identifier (a certificate's serial number).
pub struct Issued {
    pub data: SecretData,
    /// `None` when the backend attached no lease (a PKI role without `generate_lease`).
    pub lease: Option<Lease>,
    pub serial: Option<String>,
}

/// Keys only: the values (a private key) never reach a log.
impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("lease", &self.lease)
            .field("serial", &self.serial)
            .finish()
    }
}

/// A backend lease on an issued credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    /// The backend's lease id (`pki/issue/app/…`). Not a credential, but it lets whoever
    /// holds a suitable token revoke or renew the lease, so it is kept out of logs too.
    pub id: String,
    /// How long the lease lasts from when it was issued.
    pub duration: std::time::Duration,
    pub renewable: bool,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &"[REDACTED]")
            .field("duration", &self.duration)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// A static role's credential as read: its data without `ttl` (which changes at every
/// read, so it would make a version each time), and how long until the backend rotates it.
pub struct StaticRead {
    pub data: SecretData,
    pub rotates_in: Option<std::time::Duration>,
}

/// Keys only: the values (a password) never reach a log.
impl fmt::Debug for StaticRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRead")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("rotates_in", &self.rotates_in)
            .finish()
    }
}

/// What a renewal gave: the lease's new TTL from now, and whether it may be renewed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewed {
    pub duration: std::time::Duration,
    pub renewable: bool,
}
