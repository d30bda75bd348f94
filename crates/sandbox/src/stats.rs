//! Request accounting: how many requests of each verb hit each resource.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One counted request class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatKey {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
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
}

#[derive(Debug, Default)]
pub struct Recorder {
    counts: Mutex<BTreeMap<StatKey, u64>>,
}

impl Recorder {
    pub fn record(&self, verb: &str, group: &str, resource: &str, subresource: &str) {
        let key = StatKey {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        };
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
