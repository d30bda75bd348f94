//! The plugin's errors. Each carries a hint: the next thing an on-call engineer can try.

use std::time::Duration;

/// Exit code for a failed operation (exit code 2, usage errors, comes from clap).
pub const EXIT_FAILED: i32 = 1;

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
