//! Request accounting: how many requests of each verb hit each resource, in which
//! namespace and as which user — what an RBAC check needs to know about the calls a
//! client made.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One counted request class.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatKey {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// The namespace in the URL; empty for cluster-scoped resources and for lists and
    /// watches across all namespaces, which only a ClusterRole can grant.
    #[serde(default)]
    pub namespace: String,
    /// Who asked: the `Impersonate-User` header (kubectl `--as`, kube's
    /// `AuthInfo::impersonate`), empty when absent. The sandbox authenticates nobody, so
    /// this is how a test tells its own requests from those of the client under test.
    #[serde(default)]
    pub user: String,
}

/// Where a request's permission must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A request in one namespace: a Role there or a ClusterRole can grant it.
    Namespaced,
    /// A cluster-scoped resource or an all-namespaces list/watch: only a ClusterRole can.
    Cluster,
}

impl StatKey {
    pub fn scope(&self) -> Scope {
        if self.namespace.is_empty() {
            Scope::Cluster
        } else {
            Scope::Namespaced
        }
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// One request class and how many requests it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatCount {
    #[serde(flatten)]
    pub key: StatKey,
    pub count: u64,
}

/// A snapshot of request counts; served as JSON at `GET /sandbox/stats`:
/// `{"requests": [{"verb": "create", "group": "", "resource": "secrets", "subresource": "", "count": 3}, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: Vec<StatCount>,
}

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Stats {
    /// Requests of `verb` on `group`/`resource`, any subresource.
    pub fn count(&self, verb: &str, group: &str, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|c| c.key.verb == verb && c.key.group == group && c.key.resource == resource)
            .map(|c| c.count)
            .sum()
    }

    /// Requests of `verb` on one subresource (`""` for the main resource).
    pub fn count_sub(&self, verb: &str, group: &str, resource: &str, subresource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|c| {
                c.key.verb == verb
                    && c.key.group == group
                    && c.key.resource == resource
                    && c.key.subresource == subresource
            })
            .map(|c| c.count)
            .sum()
    }

    /// Mutating requests (create/update/patch/delete/deletecollection) on a resource, in
    /// any group.
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|c| c.key.resource == resource && WRITE_VERBS.contains(&c.key.verb.as_str()))
            .map(|c| c.count)
            .sum()
    }

    /// Requests of a verb on any resource.
    pub fn verb_total(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|c| c.key.verb == verb)
            .map(|c| c.count)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.requests.iter().map(|c| c.count).sum()
    }

    /// The request classes `user` made (see [`StatKey::user`]).
    pub fn by_user<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a StatCount> + 'a {
        self.requests.iter().filter(move |c| c.key.user == user)
    }
}

#[derive(Debug, Default)]
pub struct Recorder {
    counts: Mutex<BTreeMap<StatKey, u64>>,
}

impl Recorder {
    pub fn record(&self, key: StatKey) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            requests: self
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| StatCount {
                    key: k.clone(),
                    count: *v,
                })
                .collect(),
        }
    }

    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
