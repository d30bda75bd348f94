//! The plugin's errors. Each carries a hint: the next thing an on-call engineer can try.

use std::time::Duration;

/// Exit codes, one per thing a script may want to react to (listed in `--help`).
pub const EXIT_FAILED: i32 = 1;
/// A usage error (clap's own exit code).
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_CONFLICT: i32 = 4;
pub const EXIT_FORBIDDEN: i32 = 5;
pub const EXIT_TIMEOUT: i32 = 6;
pub const EXIT_ROLLOUT_FAILED: i32 = 7;
pub const EXIT_SYNC_FAILED: i32 = 8;

/// The exit code table as `--help` and the README print it.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  any other failure (cluster unreachable, refused request, bad kubeconfig, ...)
  2  usage error (unknown flag, missing argument)
  3  not found (the SecretSync, or the CRD)
  4  conflict (the object kept changing under us)
  5  forbidden (RBAC denies the request)
  6  timeout (--wait gave up; the change itself was saved)
  7  rollout failed (a rollout target did not roll out to the new version)
  8  sync failed (no new version: store not found, backend refused, invalid spec, ...)";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),

    #[error("SecretSync {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },

    /// The request makes no sense for this object (unknown, revoked or deleted version, …).
    #[error("{message}")]
    Refused { message: String, hint: String },

    #[error("{verb} {name:?}: the object kept changing under us ({attempts} conflicting writes)")]
    Conflict {
        verb: &'static str,
        name: String,
        attempts: u32,
    },

    #[error("the Kubernetes API refused the request: {0}")]
    Api(#[from] kube::Error),

    #[error("timed out after {} waiting for {name:?}: {last}", humanize(*.after))]
    WaitTimeout {
        name: String,
        after: Duration,
        last: String,
    },

    #[error("{name:?} failed: {reason}: {message}")]
    WaitFailed {
        name: String,
        reason: String,
        message: String,
    },

    #[error("{name:?} was deleted while waiting")]
    Vanished { name: String },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. } | Error::Vanished { .. } => EXIT_NOT_FOUND,
            Error::Api(kube::Error::Api(s)) if s.code == 404 => EXIT_NOT_FOUND,
            Error::Conflict { .. } => EXIT_CONFLICT,
            Error::Api(kube::Error::Api(s)) if s.code == 409 => EXIT_CONFLICT,
            Error::Api(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => EXIT_FORBIDDEN,
            Error::WaitTimeout { .. } => EXIT_TIMEOUT,
            Error::WaitFailed { reason, .. } if reason == "RolloutFailed" => EXIT_ROLLOUT_FAILED,
            Error::WaitFailed { .. } => EXIT_SYNC_FAILED,
            Error::Kubeconfig(_) | Error::Refused { .. } | Error::Api(_) => EXIT_FAILED,
        }
    }

    /// What to try next, in the user's terms.
    pub fn hint(&self, namespace: &str) -> Option<String> {
        match self {
            Error::Kubeconfig(_) => Some(
                "pass --kubeconfig PATH (or set KUBECONFIG) and --context NAME; \
                 `kubectl config get-contexts` lists the contexts"
                    .into(),
            ),
            Error::NotFound { .. } => Some(format!(
                "`kubectl secretsync list -n {namespace}` lists the SecretSyncs there; \
                 `kubectl secretsync list -A` lists all of them"
            )),
            Error::Refused { hint, .. } => Some(hint.clone()),
            Error::Conflict { .. } => {
                Some("someone else is editing it right now; run the command again".into())
            }
            Error::Api(kube::Error::Api(status)) if status.code == 403 => Some(
                "your user lacks RBAC permission for this; ask for `get`/`patch` on \
                 secretsyncs.secretsync.io in this namespace"
                    .into(),
            ),
            Error::Api(kube::Error::Api(status)) if status.code == 422 => Some(
                "the API server's validation refused the change; \
                 `kubectl secretsync status NAME` shows the current spec"
                    .into(),
            ),
            Error::Api(kube::Error::Api(status)) if status.code == 404 => Some(
                "is the secretsync CRD installed? `kubectl get crd secretsyncs.secretsync.io`"
                    .into(),
            ),
            Error::Api(_) => Some(
                "check that the cluster is reachable: `kubectl cluster-info` \
                 (with the same --kubeconfig/--context)"
                    .into(),
            ),
            Error::WaitTimeout { name, .. } | Error::WaitFailed { name, .. } => Some(format!(
                "the change itself was saved; see `kubectl secretsync status {name} -n {namespace}`, \
                 `kubectl get events -n {namespace} --field-selector involvedObject.name={name}` \
                 and the operator's logs"
            )),
            Error::Vanished { .. } => None,
        }
    }
}

/// `5m`, `1m30s`, `45s`: a timeout as the user would have typed it.
pub fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        if secs == 0 && d.subsec_millis() > 0 {
            out.push_str(&format!("{}ms", d.subsec_millis()));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}
