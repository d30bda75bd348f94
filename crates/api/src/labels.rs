//! Label and annotation keys that make up the contract with users and tools.

/// `app.kubernetes.io/managed-by` on every Secret the operator writes.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "secretsync";
/// The owning SecretSync's name.
pub const SYNC: &str = "secretsync.io/sync";
/// The version number N of a `<name>-v<N>` Secret.
pub const VERSION: &str = "secretsync.io/version";
/// `hmac-sha256:<hex>` over type and sorted data, keyed (see [`crate::hash`]); versions
/// made before the hash was keyed carry `sha256:<hex>`.
pub const CONTENT_HASH: &str = "secretsync.io/content-hash";
/// The SecretSync's `spec.version` when this version was made.
pub const SPEC_VERSION: &str = "secretsync.io/spec-version";
/// JSON map of remote key → backend version id read for this version.
pub const SOURCE_VERSIONS: &str = "secretsync.io/source-versions";
/// On a version of a dynamic secret (`dataFrom.pki`): the backend lease id, kept on the
/// Secret rather than in the status because Secrets are better guarded than SecretSyncs,
/// which every app team reads. The lease is revoked before the Secret is deleted.
pub const LEASE_ID: &str = "secretsync.io/lease-id";
/// When that lease expires (RFC 3339).
pub const LEASE_EXPIRES_AT: &str = "secretsync.io/lease-expires-at";
/// The lease's whole duration when issued, in seconds.
pub const LEASE_DURATION: &str = "secretsync.io/lease-duration-seconds";
/// Whether the backend lets the lease be renewed (`"true"`/`"false"`).
pub const LEASE_RENEWABLE: &str = "secretsync.io/lease-renewable";
/// The serial number of a `pki` version's certificate.
pub const CERTIFICATE_SERIAL: &str = "secretsync.io/certificate-serial";
/// On a SecretSync: why its last rotate, revoke or rollback was asked for (`kubectl secretsync
/// … --reason`), quoted in the events of what that change causes.
pub const REASON: &str = "secretsync.io/reason";
/// On a Secret let go by `deletionPolicy: Retain`: the name of the SecretSync that owned it.
/// A SecretSync of that name created later adopts it (after verifying its content hash).
pub const RETAINED_BY: &str = "secretsync.io/retained-by";
/// Finalizer on SecretSyncs, for Secret deletion and lease revocation.
pub const FINALIZER: &str = "secretsync.io/finalizer";
/// On a SecretSync, set with a rotation (`kubectl secretsync rotate --now`) to the
/// `spec.version` it raised to: the version that rotation makes rolls out outside the
/// rollout windows. Honoured once: later versions wait for a window again.
pub const ROLLOUT_NOW: &str = "secretsync.io/rollout-now";
/// On a SecretSync made by a ClusterSecretSync: that ClusterSecretSync's name. The
/// ownerReference, not this label, is what makes it the ClusterSecretSync's.
pub const CLUSTER_SYNC: &str = "secretsync.io/cluster-sync";
/// The field manager used for every server-side apply by the operator.
pub const FIELD_MANAGER: &str = "secretsync";

/// The label selector matching every Secret the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The label selector matching the Secrets of one SecretSync.
pub fn sync_selector(sync_name: &str) -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{SYNC}={sync_name}")
}
