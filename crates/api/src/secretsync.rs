//! The `SecretSync` kind: which remote values become which versioned Secret, and which
//! workloads follow it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// Default `refreshInterval` when the field is omitted.
pub const DEFAULT_REFRESH_INTERVAL: &str = "1h";
/// Default `history.limit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 3;
/// Default `rollout.timeout`.
pub const DEFAULT_ROLLOUT_TIMEOUT: &str = "10m";
/// How many revoked/deleted versions `status.versions` keeps as tombstones.
pub const MAX_TOMBSTONES: usize = 20;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretsync.io",
    version = "v1alpha1",
    kind = "SecretSync",
    namespaced,
    status = "SecretSyncStatus",
    shortname = "ssync",
    category = "secretsync-all",
    doc = "Which remote values become which immutable, version-suffixed Secret, and which workloads follow it",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.storeRef.name"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","description":"Newest version made","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Active","type":"string","description":"The Secret that rollout targets point at","jsonPath":".status.activeSecretName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.pinVersion) || !has(self.revokedVersions) || !(self.pinVersion in self.revokedVersions)").message("pinVersion must not name a revoked version"))]
#[x_kube(validation = Rule::new("has(self.data) || has(self.dataFrom)").message("at least one of data or dataFrom is required"))]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncSpec {
    /// The SecretStore or ClusterSecretStore to read from.
    pub store_ref: StoreRef,

    /// Rotation counter. Raising it forces a new version now, after a fresh backend read,
    /// even if the content is unchanged. It can never decrease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.version must never decrease"))]
    pub version: Option<i64>,

    /// How often the backend is polled (Go-style duration such as `1h`, `30m`, `1h30m`);
    /// `0` turns polling off. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(ms|s|m|h))+)$"))]
    pub refresh_interval: Option<String>,

    /// Individual remote values, each becoming one key of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<DataItem>>,

    /// Remote secrets whose every field becomes a key of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from: Option<Vec<DataFrom>>,

    /// The Secrets to write: `<target.name>-v<N>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,

    /// How many non-revoked versions are kept, the active one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,

    /// Workloads whose pod templates follow the active version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,

    /// Rollback: targets point at this version instead of the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pin_version: Option<i64>,

    /// Versions that must disappear (compromised credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_versions: Option<Vec<i64>>,

    /// When a revoked version's Secret is deleted. Default `AfterRollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_policy: Option<RevokePolicy>,

    /// What happens to the Secrets when the SecretSync is deleted. Default `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// When the backend is read again after the first version. Default `Periodic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `SecretStore` (default) or `ClusterSecretStore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum StoreKind {
    #[default]
    SecretStore,
    ClusterSecretStore,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DataItem {
    /// Key in the Kubernetes Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_key: String,
    pub remote_ref: RemoteRef,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// Path or name of the secret in the backend.
    #[schemars(length(min = 1))]
    pub key: String,
    /// Field of a JSON / KV secret; omitted: the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Backend version (Vault KV v2 version, AWS VersionId or VersionStage); omitted or
    /// empty: latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How the value (with `extract`: each field) is decoded before it is stored. Default
    /// `None`: stored as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// How a value read from the backend is decoded before it becomes Secret data (the values
/// and meanings of External Secrets Operator's `decodingStrategy`).
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
pub enum DecodingStrategy {
    /// Stored as read.
    #[default]
    None,
    /// Standard base64 (RFC 4648 section 4, padded); a value that is not is an error.
    Base64,
    /// URL-safe base64 (RFC 4648 section 5, padded); a value that is not is an error.
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Standard base64 if the value is that, else URL-safe base64, else as read.
    Auto,
}

/// When the backend is read again after the first version.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefreshPolicy {
    /// Every `refreshInterval`, on spec and store changes, and on rotation.
    #[default]
    Periodic,
    /// Only when the SecretSync's spec changes (including a `spec.version` rotation); no
    /// polling, store edits read nothing.
    OnChange,
    /// Only to make the first version, and on an explicit rotation (`spec.version` raised,
    /// the newest version revoked or its Secret deleted): the on-call levers keep working.
    CreatedOnce,
}

impl RemoteRef {
    /// The pinned backend version, treating `""` as "latest" like omission.
    pub fn pinned_version(&self) -> Option<&str> {
        self.version.as_deref().filter(|v| !v.is_empty())
    }
}

/// Exactly one of `extract`, `find`, `pki` and `dynamic`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(has(self.extract) ? 1 : 0) + (has(self.find) ? 1 : 0) + (has(self.pki) ? 1 : 0) + (has(self.dynamic) ? 1 : 0) == 1").message("exactly one of extract, find, pki or dynamic is required in each dataFrom item"))]
#[x_kube(validation = Rule::new("!has(self.rewrite) || has(self.find)").message("rewrite applies to find only"))]
#[serde(rename_all = "camelCase")]
pub struct DataFrom {
    /// Every field of this remote secret becomes a key of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Every remote secret that matches becomes keys of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<Find>,
    /// Turns each found name into a valid Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// A certificate issued by a Vault/OpenBao PKI engine for each version (keys `tls.crt`,
    /// `tls.key`, `ca.crt`), with a lease the operator revokes when the version goes. Must
    /// be the only entry of `data` and `dataFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<PkiIssue>,
    /// A credential a Vault/OpenBao secrets engine issues for each version
    /// (`database/creds/<role>`, `aws/creds/<role>`, `rabbitmq/creds/<role>`, …): the Secret
    /// holds what the path returned, with a lease the operator renews while the version is
    /// kept and revokes when it goes; or a static role (`database/static-creds/<role>`),
    /// read again right after the backend rotates it. Must be the only entry of `data` and
    /// `dataFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<DynamicSecret>,
}

/// Where a Vault/OpenBao secrets engine hands out credentials, and how to treat them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DynamicSecret {
    /// The API path, without `/v1/`: `database/creds/app`, `database/static-creds/app`.
    #[schemars(length(min = 1))]
    pub path: String,
    /// `GET` (default; what `database/creds` and `aws/creds` answer) or `POST` (engines that
    /// take `parameters`, such as `aws/sts/<role>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<DynamicMethod>,
    /// The request body's fields for `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub parameters: Option<crate::StringMap>,
    /// A renewable lease is renewed when this share of its TTL has passed, until the
    /// backend's max TTL; 1 to 90, default 67.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renewal_percent: Option<u8>,
    /// Whether `path` is a static role, whose password the backend rotates on its own
    /// schedule: read (not issued) at every refresh and right after each rotation, with no
    /// lease. Default: true when the path has a `static-creds` or `static-cred` segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_role: Option<bool>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum DynamicMethod {
    #[default]
    Get,
    Post,
}

/// The renewal share of a lease's TTL when `renewalPercent` is omitted.
pub const DEFAULT_RENEWAL_PERCENT: u8 = 67;

impl DynamicSecret {
    /// The path without surrounding slashes.
    pub fn path(&self) -> &str {
        self.path.trim_matches('/')
    }

    pub fn method(&self) -> DynamicMethod {
        self.method.unwrap_or_default()
    }

    pub fn renewal_percent(&self) -> u8 {
        self.renewal_percent
            .unwrap_or(DEFAULT_RENEWAL_PERCENT)
            .clamp(1, 90)
    }

    /// A static role: read like a key, never leased (see `staticRole`).
    pub fn is_static_role(&self) -> bool {
        self.static_role.unwrap_or_else(|| {
            self.path()
                .split('/')
                .any(|segment| segment == "static-creds" || segment == "static-cred")
        })
    }
}

/// What to ask a Vault/OpenBao PKI engine for (`<mount>/issue/<role>`). Each version is a
/// fresh certificate and private key; OpenBao attaches a lease when the role has
/// `generate_lease=true`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PkiIssue {
    /// The PKI engine's mount. Default `pki`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The PKI role to issue with.
    #[schemars(length(min = 1))]
    pub role: String,
    /// The certificate's common name.
    #[schemars(length(min = 1))]
    pub common_name: String,
    /// DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_names: Option<Vec<String>>,
    /// IP subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_sans: Option<Vec<String>>,
    /// Requested lifetime (Go-style duration such as `24h`); omitted: the role's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub ttl: Option<String>,
}

/// The PKI mount used when `pki.mount` is omitted.
pub const DEFAULT_PKI_MOUNT: &str = "pki";

impl PkiIssue {
    /// The mount, without surrounding slashes; `pki` when omitted or empty.
    pub fn mount(&self) -> &str {
        self.mount
            .as_deref()
            .map(|m| m.trim_matches('/'))
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_PKI_MOUNT)
    }

    /// The requested lifetime; `None` when omitted (or invalid: validation reports that).
    pub fn ttl(&self) -> Option<std::time::Duration> {
        self.ttl.as_deref().and_then(|t| parse_duration(t).ok())
    }
}

/// Which remote secrets a `dataFrom.find` selects. The criteria that are set must all hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("has(self.name) || has(self.tags) || has(self.path)").message("find needs at least one of name, tags or path"))]
#[serde(rename_all = "camelCase")]
pub struct Find {
    /// Pattern on the secret's name (AWS) or path (Vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// AWS only: the secret has all these tags with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Vault only: list under this path (recursively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// Regular expression (Rust `regex` syntax, RE2-like) matched anywhere in the name
    /// unless anchored.
    #[schemars(length(min = 1))]
    pub regexp: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    pub regexp: RewriteRegexp,
}

/// A regular-expression replacement applied to each found name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// The pattern; every match in the name is replaced.
    #[schemars(length(min = 1))]
    pub source: String,
    /// The replacement; `$1` or `${name}` refer to capture groups.
    pub target: String,
}

impl RewriteRegexp {
    /// `name` with every match of `source` replaced by `target`.
    pub fn apply(&self, name: &str) -> Result<String, regex::Error> {
        let source = regex::Regex::new(&self.source)?;
        Ok(source.replace_all(name, self.target.as_str()).into_owned())
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Base name; Secrets are `<name>-v<N>`. Default `metadata.name`. A DNS subdomain short
    /// enough to leave room for the `-v<N>` suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 242),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,
    /// Secret type; default `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Secret keys rendered from the fetched values (Jinja syntax).
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Non-revoked versions kept, the active one included. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<RolloutTarget>>,
    /// All workloads of the rollout kinds in the namespace with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// After this, a rollout that has not completed is Failed. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
    /// What happens when a rollout fails. `Hold` (default): stay and report. `Rollback`:
    /// targets return to the last good version — the newest earlier one that still exists,
    /// is neither revoked nor failed, and completed a rollout once (none: hold, and say so);
    /// the failed version is kept, and not rolled out again until a new version, a rotation
    /// or a spec edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Targets move only inside these windows; versions are made at any time. Moving off a
    /// revoked version, a rollback after a failed rollout, and a rotation annotated
    /// `secretsync.io/rollout-now` (`kubectl secretsync rotate --now`) move them outside a
    /// window too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<RolloutWindow>>,
    /// A target on a revoked version moves off it at once, windows or not (a revocation is
    /// an incident). `true`: it waits for a window like any other change, with a Warning
    /// event while it waits (`revokePolicy: Immediate` never waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respect_windows_on_revoke: Option<bool>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Hold,
    Rollback,
}

/// A cron-style window in which targets may move.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutWindow {
    /// Cron schedule of the window's start: five fields, or six with seconds first.
    pub schedule: String,
    /// How long the window stays open.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub duration: String,
    /// IANA time zone of the schedule; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// An Argo Rollouts `Rollout` (argoproj.io/v1alpha1); followed only when that CRD is
    /// installed.
    Rollout,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::Rollout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Rollout => "Rollout",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RevokePolicy {
    /// Delete the revoked Secret once the rollout off it is Complete (or Failed by timeout).
    #[default]
    AfterRollout,
    /// Delete the revoked Secret at once.
    Immediate,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Remove every versioned Secret (and revoke leases).
    #[default]
    Delete,
    /// Drop the ownerReferences and leave the Secrets.
    Retain,
}

impl SecretSyncSpec {
    /// `spec.target.name`, defaulting to the SecretSync's own name.
    pub fn target_name<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.target
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .unwrap_or(metadata_name)
    }

    /// Whether this spec reads the remote `key` (a store's change event names it): by
    /// `data`, by `dataFrom.extract`, or by a `dataFrom.find` whose path the key is under
    /// (a find by name pattern may match it too: an extra read, never a wrong value).
    pub fn reads_key(&self, key: &str) -> bool {
        let data = self.data.iter().flatten().any(|d| d.remote_ref.key == key);
        let from = self.data_from.iter().flatten().any(|f| {
            f.extract.as_ref().is_some_and(|e| e.key == key)
                // A static role is read again when its rotation is reported at that path.
                || f.dynamic.as_ref().is_some_and(|d| d.path() == key)
                || f.find.as_ref().is_some_and(|find| {
                    find.path.as_deref().is_none_or(|path| {
                        key.strip_prefix(path.trim_end_matches('/'))
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    })
                })
        });
        data || from
    }

    /// The rotation counter, 0 when unset.
    pub fn spec_version(&self) -> i64 {
        self.version.unwrap_or(0)
    }

    pub fn store_kind(&self) -> StoreKind {
        self.store_ref.kind.unwrap_or_default()
    }

    /// The refresh interval, `None` when polling is off (`"0"`). Assumes a validated spec and
    /// falls back to the default for an unparsable value.
    pub fn refresh_interval(&self) -> Option<std::time::Duration> {
        let raw = self
            .refresh_interval
            .as_deref()
            .unwrap_or(DEFAULT_REFRESH_INTERVAL);
        let interval = parse_duration(raw)
            .or_else(|_| parse_duration(DEFAULT_REFRESH_INTERVAL))
            .unwrap_or_default();
        (!interval.is_zero()).then_some(interval)
    }

    pub fn history_limit(&self) -> u32 {
        self.history
            .as_ref()
            .and_then(|h| h.limit)
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    pub fn on_failure(&self) -> OnFailure {
        self.rollout
            .as_ref()
            .and_then(|r| r.on_failure)
            .unwrap_or_default()
    }

    pub fn rollout_timeout(&self) -> std::time::Duration {
        let raw = self
            .rollout
            .as_ref()
            .and_then(|r| r.timeout.as_deref())
            .unwrap_or(DEFAULT_ROLLOUT_TIMEOUT);
        parse_duration(raw)
            .or_else(|_| parse_duration(DEFAULT_ROLLOUT_TIMEOUT))
            .unwrap_or_default()
    }

    pub fn revoked(&self) -> &[i64] {
        self.revoked_versions.as_deref().unwrap_or_default()
    }

    pub fn is_revoked(&self, version: i64) -> bool {
        self.revoked().contains(&version)
    }

    pub fn data_items(&self) -> &[DataItem] {
        self.data.as_deref().unwrap_or_default()
    }

    pub fn data_from_items(&self) -> &[DataFrom] {
        self.data_from.as_deref().unwrap_or_default()
    }

    /// `target.type`; default `kubernetes.io/tls` for a `pki` source, else `Opaque`.
    pub fn secret_type(&self) -> &str {
        let default = if self.pki().is_some() {
            "kubernetes.io/tls"
        } else {
            "Opaque"
        };
        self.target
            .as_ref()
            .and_then(|t| t.type_.as_deref())
            .unwrap_or(default)
    }

    /// The `dataFrom[].pki` source, if any (validation makes it the only source).
    pub fn pki(&self) -> Option<&PkiIssue> {
        self.data_from_items().iter().find_map(|f| f.pki.as_ref())
    }

    /// The `dataFrom[].dynamic` source, if any (validation makes it the only source).
    pub fn dynamic(&self) -> Option<&DynamicSecret> {
        self.data_from_items()
            .iter()
            .find_map(|f| f.dynamic.as_ref())
    }

    /// Whether each version is issued by the backend (a `pki` certificate, a leased
    /// `dynamic` credential): reading issues a new credential, so it happens only when a
    /// version must be made, never at a refresh.
    pub fn issues_credentials(&self) -> bool {
        self.pki().is_some() || self.dynamic().is_some_and(|d| !d.is_static_role())
    }

    /// Whether its versions carry leases at the backend, which must be revoked when the
    /// SecretSync is deleted: such a SecretSync needs the finalizer whatever its
    /// `deletionPolicy`.
    pub fn holds_leases(&self) -> bool {
        self.issues_credentials()
    }

    pub fn revoke_policy(&self) -> RevokePolicy {
        self.revoke_policy.unwrap_or_default()
    }

    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }

    pub fn refresh_policy(&self) -> RefreshPolicy {
        self.refresh_policy.unwrap_or_default()
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Newest version made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// What targets point at: `pinVersion` or `currentVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_secret_name: Option<String>,
    /// The last backend read that changed this status. A read that finds nothing new
    /// writes nothing, so with polling on this can be older than `refreshInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,
    /// The store's `metadata.generation` at the last refresh: a store edit triggers a
    /// refresh at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_generation: Option<i64>,
    /// Newest first; revoked and deleted versions stay as tombstones (the last 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub version: i64,
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(default)]
    pub spec_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Backend version id of each remote key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub source_versions: Option<crate::StringMap>,
    pub state: VersionState,
    #[serde(default)]
    pub revoked_at: Option<Time>,
    /// The backend lease of a dynamic secret (a `pki` certificate). Its id is kept on the
    /// version's Secret (`secretsync.io/lease-id`), not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// The serial number of a `pki` version's certificate (public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// When the backend lease (and the credential) expires.
    pub expires_at: Time,
    /// Whether the backend lets the lease be renewed.
    #[serde(default)]
    pub renewable: bool,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VersionState {
    /// Targets point at it.
    Active,
    /// Kept for rollback or while something still references it.
    #[default]
    Retained,
    Revoked,
    Deleted,
    /// A user removed our ownerReference to keep it: it is no longer ours, never changed or
    /// deleted by the operator, and stays active until the next version is made.
    Disowned,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default)]
    pub targets: Vec<TargetStatus>,
    /// The version this rollout moves targets to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// When the rollout to `version` began; `rollout.timeout` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// A failed rollout that `onFailure: Rollback` undid: targets stay on `version` (an
    /// earlier one) until a newer version, a rotation or a spec edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedRollout>,
    /// How long the last completed rollout took, from the first target patch to every target
    /// Complete (such as `4210ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration: Option<String>,
    /// The longest completed rollout seen for these targets: lease-aware rotation makes the
    /// next version early enough for a rollout this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_duration: Option<String>,
    /// Versions whose rollout was Complete at least once (those that still exist): the only
    /// ones `onFailure: Rollback` goes back to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_versions: Vec<i64>,
    /// Versions whose rollout failed (those that still exist): never a rollback target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_versions: Vec<i64>,
}

/// Every field has a default: server-side apply may leave an emptied `failed: {}` behind
/// when the operator drops the field, and that must read as "no failure" (version 0 never
/// matches), not fail validation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailedRollout {
    /// The version whose rollout failed; kept for inspection, not rolled out again.
    #[serde(default)]
    pub version: i64,
    /// The SecretSync's `metadata.generation` then: an edit since allows a new attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Why it failed, as the RolloutFailed condition said.
    #[serde(default)]
    pub message: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub kind: WorkloadKind,
    pub name: String,
    /// The version this target was rolled to.
    pub version: i64,
    pub state: TargetState,
    /// Progress in words, such as "2/3 replicas updated".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why a target is `Waiting`, such as `TargetPaused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    Progressing,
    Complete,
    Failed,
    NotFound,
    /// Its own controller will not move it now (a paused Deployment); no timeout runs.
    Waiting,
}
