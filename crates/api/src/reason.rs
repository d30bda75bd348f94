//! The closed set of condition reasons and event reasons users see (docs/reference/conditions.md, events.md).

use std::fmt;

/// Why a SecretSync is (not) Ready, Synced or RolledOut. Also the event reason for failures
/// and the `reason` label of metrics, so the set stays small and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Synced,
    /// A store's credentials and settings were accepted by its backend.
    Valid,
    StoreNotFound,
    StoreNotAllowed,
    StoreInvalid,
    ProviderAuthFailed,
    ProviderUnavailable,
    /// The backend's TLS certificate is not trusted, or it refused the client certificate:
    /// nothing changes until someone sets `caBundle` or the client certificate.
    ProviderTLSFailed,
    RemoteKeyNotFound,
    InvalidSecretKey,
    SecretTooLarge,
    TemplateError,
    /// A value is not in the encoding its `remoteRef.decodingStrategy` names.
    DecodingFailed,
    PinnedVersionUnavailable,
    RolloutFailed,
    RolloutProgressing,
    RolloutComplete,
    /// A new version waits for the next rollout window (`spec.rollout.windows`).
    RolloutWaiting,
    /// A rollout target's own controller will not move it now (a paused Deployment).
    TargetPaused,
    /// A target still references a revoked version.
    RevokedVersionInUse,
    TargetConflict,
    InvalidSpec,
    KubernetesApiError,
    /// The lease of the version the targets use has expired at the backend.
    LeaseExpired,
    /// A rollout target does not exist (a typo, a workload not deployed yet, or a kind
    /// whose CRD is not installed).
    TargetNotFound,
    /// `revokedVersions` names a version that was never made: it revokes nothing.
    RevokedVersionUnknown,
    /// ClusterSecretSync: some selected namespaces' SecretSyncs have not reported Ready yet.
    SecretSyncsPending,
    /// ClusterSecretSync: some selected namespaces' SecretSyncs failed or could not be made
    /// (`status.failures` names them).
    NamespacesFailed,
    /// ClusterSecretSync, per namespace: a SecretSync of its name exists there and is not
    /// its own; it is left untouched.
    SecretSyncNotOwned,
    /// ClusterSecretSync, per namespace no longer selected: its SecretSync is kept while a
    /// workload or Pod there references one of its versions.
    VersionsInUse,
    /// Store `EventsReady=True`: its change events reach the operator.
    EventsListening,
    /// Store `EventsReady=False`: the operator runs without the listener its event source
    /// needs (`--openbao-audit-listen`, `--events-listen`).
    EventListenerOff,
    /// Store `EventsReady=False`: no OpenBao audit entry reached the listener after the
    /// store's check (the device is missing, points elsewhere, or cannot reach it).
    NoAuditEntries,
    /// Store `EventsReady=False`: the event source (an SQS queue) could not be read.
    EventSourceUnavailable,
    /// Store `EventsReady=False`: the Secret (or key) in `events.secretRef` is missing.
    EventSecretMissing,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::Valid => "Valid",
            Reason::StoreNotFound => "StoreNotFound",
            Reason::StoreNotAllowed => "StoreNotAllowed",
            Reason::StoreInvalid => "StoreInvalid",
            Reason::ProviderAuthFailed => "ProviderAuthFailed",
            Reason::ProviderUnavailable => "ProviderUnavailable",
            Reason::ProviderTLSFailed => "ProviderTLSFailed",
            Reason::RemoteKeyNotFound => "RemoteKeyNotFound",
            Reason::InvalidSecretKey => "InvalidSecretKey",
            Reason::SecretTooLarge => "SecretTooLarge",
            Reason::TemplateError => "TemplateError",
            Reason::DecodingFailed => "DecodingFailed",
            Reason::PinnedVersionUnavailable => "PinnedVersionUnavailable",
            Reason::RolloutFailed => "RolloutFailed",
            Reason::RolloutProgressing => "RolloutProgressing",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::RolloutWaiting => "RolloutWaiting",
            Reason::TargetPaused => "TargetPaused",
            Reason::RevokedVersionInUse => "RevokedVersionInUse",
            Reason::TargetConflict => "TargetConflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::KubernetesApiError => "KubernetesApiError",
            Reason::LeaseExpired => "LeaseExpired",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::RevokedVersionUnknown => "RevokedVersionUnknown",
            Reason::SecretSyncsPending => "SecretSyncsPending",
            Reason::NamespacesFailed => "NamespacesFailed",
            Reason::SecretSyncNotOwned => "SecretSyncNotOwned",
            Reason::VersionsInUse => "VersionsInUse",
            Reason::EventsListening => "EventsListening",
            Reason::EventListenerOff => "EventListenerOff",
            Reason::NoAuditEntries => "NoAuditEntries",
            Reason::EventSourceUnavailable => "EventSourceUnavailable",
            Reason::EventSecretMissing => "EventSecretMissing",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Condition types on a SecretSync.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const SYNCED: &str = "Synced";
    pub const ROLLED_OUT: &str = "RolledOut";
    /// On a store with `spec.events`: whether its change events reach the operator.
    pub const EVENTS_READY: &str = "EventsReady";
}

/// Event reasons on a SecretSync.
pub mod event {
    pub const VERSION_CREATED: &str = "VersionCreated";
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const VERSION_REVOKED: &str = "VersionRevoked";
    pub const VERSION_DELETED: &str = "VersionDeleted";
    pub const SYNC_FAILED: &str = "SyncFailed";
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    pub const REVOKED_STILL_REFERENCED: &str = "RevokedStillReferenced";
    /// A version's lease could not be revoked at the backend; its Secret is kept (with the
    /// lease id) and revocation retried.
    pub const LEASE_REVOKE_FAILED: &str = "LeaseRevokeFailed";
    /// A dynamic credential's lease could not be renewed after retries; for the newest
    /// version the next one was made at once, while the old credential was still valid.
    pub const LEASE_RENEW_FAILED: &str = "LeaseRenewFailed";
    /// Leases under a SecretSync's path that no version holds, left by an operator process
    /// that stopped between issuing and writing the Secret, were revoked at start.
    pub const ORPHAN_LEASES_REVOKED: &str = "OrphanLeasesRevoked";
    /// The newest version's Secret was deleted by someone else; the next version was made
    /// from a fresh read (never a step back to an older one).
    pub const ACTIVE_VERSION_DELETED: &str = "ActiveVersionDeleted";
    /// A version's labels or annotations disagree with its name or the status history; the
    /// name and history are used.
    pub const VERSION_METADATA_MISMATCH: &str = "VersionMetadataMismatch";
    /// Someone else set a rollout target back to another version; it was put back on the
    /// active one.
    pub const ROLLOUT_REVERTED: &str = "RolloutReverted";
    /// Secrets retained by an earlier SecretSync of the same name became this one's versions.
    pub const VERSIONS_ADOPTED: &str = "VersionsAdopted";
    /// Version hashes were rewritten with the operator's current content-hash key (the key
    /// changed); their content was unchanged, so no version was made.
    pub const HASH_REKEYED: &str = "HashRekeyed";
    /// `revokedVersions` names a version that was never made (Warning).
    pub const REVOKED_VERSION_UNKNOWN: &str = "RevokedVersionUnknown";
    /// A ClusterSecretSync made its SecretSync in a newly selected namespace (Normal).
    pub const SECRET_SYNC_CREATED: &str = "SecretSyncCreated";
    /// A ClusterSecretSync deleted its SecretSync from a namespace no longer selected
    /// (Normal).
    pub const SECRET_SYNC_REMOVED: &str = "SecretSyncRemoved";
    /// A SecretSync of a ClusterSecretSync's name exists in a selected namespace and is not
    /// its own: left untouched (Warning, on both).
    pub const SECRET_SYNC_NOT_OWNED: &str = "SecretSyncNotOwned";
    /// A namespace is no longer selected, but a workload or Pod there references a version
    /// of its SecretSync: the SecretSync is kept until nothing does (Warning).
    pub const REMOVAL_HELD: &str = "RemovalHeld";
    /// A ClusterSecretSync's spec cannot be used; nothing is made or changed (Warning).
    pub const CLUSTER_SYNC_INVALID: &str = "ClusterSyncInvalid";
}
