//! The closed set of condition reasons and event reasons users see (api.md).

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
    RemoteKeyNotFound,
    InvalidSecretKey,
    SecretTooLarge,
    TemplateError,
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
            Reason::RemoteKeyNotFound => "RemoteKeyNotFound",
            Reason::InvalidSecretKey => "InvalidSecretKey",
            Reason::SecretTooLarge => "SecretTooLarge",
            Reason::TemplateError => "TemplateError",
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
}
