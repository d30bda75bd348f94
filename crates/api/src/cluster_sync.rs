//! The `ClusterSecretSync` kind: one SecretSync template fanned out to every namespace a
//! selector (or an explicit list) picks. The operator makes and owns one SecretSync per
//! selected namespace; only ClusterSecretStores may be read, so no namespace's own store is
//! reachable from a cluster-wide object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secretsync::{SecretSyncSpec, StoreKind};
use crate::validate::{Problems, validate_spec};

/// How many namespaces `status.failures` (and `status.removing`) name at most; the counts
/// are always complete.
pub const MAX_LISTED_NAMESPACES: usize = 20;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretsync.io",
    version = "v1alpha1",
    kind = "ClusterSecretSync",
    status = "ClusterSecretSyncStatus",
    shortname = "cssync",
    category = "secretsync-all",
    doc = "One SecretSync template made into a SecretSync in every namespace a selector or list picks",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.template.spec.storeRef.name"}"#,
    printcolumn = r#"{"name":"Selected","type":"integer","description":"Namespaces selected","jsonPath":".status.namespaces.selected"}"#,
    printcolumn = r#"{"name":"Synced","type":"integer","description":"Selected namespaces whose SecretSync is Ready","jsonPath":".status.namespaces.synced"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","description":"Selected namespaces whose SecretSync failed or could not be made","jsonPath":".status.namespaces.failed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.namespaces)").message("at least one of namespaceSelector or namespaces is required"))]
#[x_kube(validation = Rule::new("has(self.template.spec.storeRef.kind) && self.template.spec.storeRef.kind == 'ClusterSecretStore'").message("template.spec.storeRef.kind must be ClusterSecretStore: a ClusterSecretSync may read only cluster-wide stores"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretSyncSpec {
    /// What each SecretSync made is: its spec, and labels and annotations for it.
    pub template: SecretSyncTemplate,
    /// Namespaces whose labels match. With `namespaces` too, a namespace either picks is
    /// selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces selected by name (each is used once it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// A SecretSync spec; `storeRef.kind` must be `ClusterSecretStore`.
    pub spec: SecretSyncSpec,
}

/// Labels and annotations put on every SecretSync made (the operator's own label
/// `secretsync.io/cluster-sync` is added and wins).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretSyncStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceCounts>,
    /// Selected namespaces whose SecretSync failed or could not be made, by namespace (the
    /// first 20 by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NamespaceFailure>,
    /// Namespaces no longer selected whose SecretSync is kept for now, by namespace (the
    /// first 20 by name): a workload or Pod there still references one of its versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NamespaceFailure>,
    /// `Ready`, with reason `Synced`, `SecretSyncsPending`, `NamespacesFailed` or
    /// `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    /// Namespaces the selector or list picks.
    pub selected: u32,
    /// Of those, namespaces whose SecretSync is Ready.
    pub synced: u32,
    /// Of those, namespaces whose SecretSync is not Ready with a failure, or could not be
    /// made.
    pub failed: u32,
    /// Namespaces no longer selected whose SecretSync is kept while its versions are in use.
    #[serde(default)]
    pub removing: u32,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    pub namespace: String,
    /// The SecretSync's own Ready reason, or `SecretSyncNotOwned`, `VersionsInUse`,
    /// `KubernetesApiError`.
    pub reason: String,
    pub message: String,
}

impl ClusterSecretSyncSpec {
    /// Whether a namespace with these labels is selected.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        crate::selector::picks_namespace(
            self.namespaces.as_deref(),
            self.namespace_selector.as_ref(),
            namespace,
            labels,
        )
    }

    /// The template's labels and annotations.
    pub fn template_metadata(&self) -> TemplateMetadata {
        self.template.metadata.clone().unwrap_or_default()
    }
}

/// The operator's check of a ClusterSecretSync, repeating its CEL rules (a server without
/// CEL admits anything) and the SecretSync spec's own checks on the template.
pub fn validate_cluster_sync(spec: &ClusterSecretSyncSpec, name: &str) -> Result<(), Problems> {
    let mut problems = Problems::new();
    if spec.namespace_selector.is_none() && spec.namespaces.is_none() {
        problems
            .push("at least one of spec.namespaceSelector or spec.namespaces is required".into());
    }
    let store = &spec.template.spec.store_ref;
    if store.kind != Some(StoreKind::ClusterSecretStore) {
        problems.push(format!(
            "spec.template.spec.storeRef.kind must be ClusterSecretStore: {} {:?} lives in one \
             namespace, and a ClusterSecretSync may read only cluster-wide stores",
            store.kind.unwrap_or_default().as_str(),
            store.name
        ));
    }
    if let Err(more) = validate_spec(&spec.template.spec, name) {
        problems.extend(more.into_iter().map(|p| {
            format!(
                "template: {}",
                p.replacen("spec.", "spec.template.spec.", 1)
            )
        }));
    }
    let mut seen = BTreeSet::new();
    for n in spec.namespaces.iter().flatten() {
        if !seen.insert(n) {
            problems.push(format!("spec.namespaces lists {n:?} twice"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ClusterSecretSyncSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TEMPLATE: &str = "template:\n  spec:\n    storeRef: {name: vault, kind: ClusterSecretStore}\n    data: [{secretKey: p, remoteRef: {key: app/db}}]\n";

    #[test]
    fn a_namespace_is_selected_by_label_or_by_name() {
        let s = spec(&format!(
            "{TEMPLATE}namespaceSelector: {{matchLabels: {{team: a}}}}\nnamespaces: [extra]\n"
        ));
        let team_a = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        assert!(s.selects("shop", &team_a));
        assert!(s.selects("extra", &BTreeMap::new()));
        assert!(!s.selects("other", &BTreeMap::new()));
        let only_list = spec(&format!("{TEMPLATE}namespaces: [extra]\n"));
        assert!(
            !only_list.selects("shop", &team_a),
            "no selector selects nothing by label"
        );
    }

    #[test]
    fn a_namespaced_store_is_refused_with_the_reason() {
        let s = spec(
            "template:\n  spec:\n    storeRef: {name: vault}\n    data: [{secretKey: p, remoteRef: {key: app/db}}]\nnamespaces: [a]\n",
        );
        let problems = validate_cluster_sync(&s, "db").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("must be ClusterSecretStore")
                && problems[0].contains("SecretStore \"vault\""),
            "{problems:?}"
        );
    }

    #[test]
    fn the_template_and_the_selection_are_checked() {
        let s = spec(
            "template:\n  spec:\n    storeRef: {name: vault, kind: ClusterSecretStore}\n    refreshInterval: soon\n    data: [{secretKey: p, remoteRef: {key: app/db}}]\n",
        );
        let problems = validate_cluster_sync(&s, "db").unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("namespaceSelector")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.template.spec.refreshInterval")),
            "{problems:?}"
        );
        assert!(
            validate_cluster_sync(&spec(&format!("{TEMPLATE}namespaces: [a]\n")), "db").is_ok()
        );
    }
}
