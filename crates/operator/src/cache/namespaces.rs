//! Namespace labels, for ClusterSecretStore `conditions[].namespaceSelector`. Kept from a
//! metadata-only watch of Namespaces, so admission is decided without a request per
//! reconcile, and a label change wakes the SecretSyncs of that namespace at once: a
//! namespace that loses its label is refused now, not at its next refresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

type Labels = BTreeMap<String, String>;

#[derive(Default)]
struct Inner {
    labels: HashMap<String, Labels>,
    relist: Option<HashMap<String, Labels>>,
}

#[derive(Default)]
pub struct NamespaceLabels {
    inner: Mutex<Inner>,
}

impl NamespaceLabels {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The labels of a namespace; empty for one not (yet) seen.
    pub fn labels(&self, namespace: &str) -> Labels {
        self.lock()
            .labels
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// Every namespace known, with its labels (for ClusterSecretSync selection).
    pub fn all(&self) -> Vec<(String, Labels)> {
        let mut all: Vec<_> = self
            .lock()
            .labels
            .iter()
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        all.sort();
        all
    }

    /// Records a namespace; returns whether its labels differ from what was known (a
    /// namespace seen for the first time counts as changed: a SecretSync in it may have
    /// been refused before its labels were known).
    pub fn apply(&self, namespace: &PartialObjectMeta<Namespace>) -> bool {
        let labels = namespace.labels().clone();
        self.lock()
            .labels
            .insert(namespace.name_any(), labels.clone())
            != Some(labels)
    }

    pub fn delete(&self, namespace: &PartialObjectMeta<Namespace>) {
        self.lock().labels.remove(&namespace.name_any());
    }

    pub fn relist_start(&self) {
        self.lock().relist = Some(HashMap::new());
    }

    pub fn relist_apply(&self, namespace: &PartialObjectMeta<Namespace>) {
        if let Some(buffer) = self.lock().relist.as_mut() {
            buffer.insert(namespace.name_any(), namespace.labels().clone());
        }
    }

    /// The relist completed: its namespaces replace what was known. Returns those whose
    /// labels changed meanwhile (a watch gap can hide a label change).
    pub fn relist_done(&self) -> Vec<String> {
        let mut inner = self.lock();
        let listed = inner.relist.take().unwrap_or_default();
        let changed = listed
            .iter()
            .filter(|(name, labels)| inner.labels.get(*name) != Some(*labels))
            .map(|(name, _)| name.clone())
            .collect();
        inner.labels = listed;
        changed
    }
}

/// Changes are the namespaces whose labels changed.
impl super::Cache<PartialObjectMeta<Namespace>> for NamespaceLabels {
    type Change = String;

    fn relist_start(&self) {
        NamespaceLabels::relist_start(self);
    }

    fn relist_apply(&self, namespace: &PartialObjectMeta<Namespace>) {
        NamespaceLabels::relist_apply(self, namespace);
    }

    fn relist_done(&self) -> Vec<String> {
        NamespaceLabels::relist_done(self)
    }

    fn apply(&self, namespace: &PartialObjectMeta<Namespace>) -> Vec<String> {
        match NamespaceLabels::apply(self, namespace) {
            true => vec![namespace.name_any()],
            false => Vec::new(),
        }
    }

    fn delete(&self, namespace: &PartialObjectMeta<Namespace>) -> Vec<String> {
        NamespaceLabels::delete(self, namespace);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.to_owned());
        meta.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        meta
    }

    #[test]
    fn a_label_change_is_reported_once() {
        let known = NamespaceLabels::default();
        assert!(known.apply(&namespace("shop", &[])), "first sight");
        assert!(!known.apply(&namespace("shop", &[])), "unchanged");
        assert!(known.apply(&namespace("shop", &[("secrets", "allowed")])));
        assert_eq!(known.labels("shop")["secrets"], "allowed");
        assert!(known.labels("elsewhere").is_empty());
    }

    #[test]
    fn a_relist_reports_what_changed_during_the_gap() {
        let known = NamespaceLabels::default();
        known.apply(&namespace("a", &[("x", "1")]));
        known.apply(&namespace("b", &[]));
        known.relist_start();
        known.relist_apply(&namespace("a", &[("x", "2")]));
        known.relist_apply(&namespace("b", &[]));
        assert_eq!(known.relist_done(), ["a"]);
        assert_eq!(known.labels("a")["x"], "2");
    }
}
