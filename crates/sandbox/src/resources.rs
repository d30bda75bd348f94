//! The registry of served resource types: built-in kinds plus kinds registered by CRDs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// When `metadata.generation` is bumped on update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Not tracked (Secrets, ConfigMaps, ...): no `metadata.generation` at all.
    None,
    /// Bumped when `spec` changes (workloads, CRs with a status subresource, CRDs).
    Spec,
    /// Bumped when anything but metadata changes (CRs without a status subresource).
    NonMetadata,
}

/// Per-version facts of a CRD-defined kind.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub name: String,
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    /// Served versions; the first one is the preferred version.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    pub generation: Generation,
    /// Verbs advertised in discovery.
    pub verbs: Vec<&'static str>,
    /// Extra subresources advertised in discovery besides `status`:
    /// (name, kind, group/version, verbs), e.g. `token` and `scale`.
    pub extra_subresources: Vec<(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    )>,
    /// Set for CRD-defined kinds.
    pub crd: Option<Vec<CrdVersion>>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceDef {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// Where objects of this resource are stored: events.k8s.io/v1 Events share the core
    /// Events' storage.
    pub fn storage(&self) -> (&str, &str) {
        if self.is_events_v1() {
            ("", "events")
        } else {
            (&self.group, &self.plural)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.extra_subresources.iter().any(|(n, ..)| *n == name)
    }

    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    pub fn preferred_version(&self) -> &str {
        &self.versions[0]
    }

    pub fn is_crd(&self) -> bool {
        self.crd.is_some()
    }

    pub fn crd_version(&self, version: &str) -> Option<&CrdVersion> {
        self.crd.as_ref()?.iter().find(|v| v.name == version)
    }

    /// `apiextensions` and friends: resources that only accept `create` (TokenReview).
    pub fn is_virtual(&self) -> bool {
        self.verbs == ["create"]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    cats: &[&str],
    status: bool,
    generation: Generation,
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: cats.iter().map(|s| s.to_string()).collect(),
        status_subresource: status,
        generation,
        verbs: ALL_VERBS.to_vec(),
        extra_subresources: Vec::new(),
        crd: None,
    }
}

fn builtins() -> Vec<ResourceDef> {
    use Generation::{None as N, Spec as S};
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &[],
            true,
            N,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], &[], false, N),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            false,
            N,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], &["all"], true, N),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            false,
            N,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], &[], false, N),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            &["all"],
            true,
            N,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            &[],
            false,
            N,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            &[],
            false,
            N,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            &[],
            false,
            N,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
            false,
            N,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            &[],
            true,
            S,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
            false,
            S,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            &["ing"],
            &[],
            true,
            S,
        ),
        builtin(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
            false,
            &["pc"],
            &[],
            false,
            N,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            &["all"],
            true,
            S,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            &["all"],
            true,
            S,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            &["all"],
            true,
            S,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            &["all"],
            true,
            S,
        ),
        builtin("batch", "v1", "jobs", "Job", true, &[], &["all"], true, S),
        builtin(
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            true,
            &["cj"],
            &["all"],
            true,
            S,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            false,
            N,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            &[],
            false,
            N,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            true,
            S,
        ),
    ];
    for d in &mut v {
        if d.plural == "serviceaccounts" {
            d.extra_subresources.push((
                "token",
                "TokenRequest",
                "authentication.k8s.io/v1",
                &["create"],
            ));
        }
        if matches!(
            d.plural.as_str(),
            "deployments" | "statefulsets" | "replicasets"
        ) {
            d.extra_subresources.push((
                "scale",
                "Scale",
                "autoscaling/v1",
                &["get", "patch", "update"],
            ));
        }
        if d.plural == "namespaces" {
            // Namespaces cannot be deleted as a collection.
            d.verbs.retain(|v| *v != "deletecollection");
        }
    }
    let mut tr = builtin(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        &[],
        &[],
        false,
        N,
    );
    tr.verbs = vec!["create"];
    v.push(tr);
    // No authorization: access reviews always allow (so `kubectl auth can-i` works).
    for (plural, kind, namespaced) in [
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
        ("subjectaccessreviews", "SubjectAccessReview", false),
        (
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
    ] {
        let mut r = builtin(
            "authorization.k8s.io",
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            &[],
            false,
            N,
        );
        r.verbs = vec!["create"];
        v.push(r);
    }
    v
}

/// Thread-safe registry; lookups are cheap clones of `Arc`s.
#[derive(Debug)]
pub struct Registry {
    by_resource: RwLock<HashMap<(String, String), Arc<ResourceDef>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let mut m = HashMap::new();
        for d in builtins() {
            m.insert((d.group.clone(), d.plural.clone()), Arc::new(d));
        }
        Self {
            by_resource: RwLock::new(m),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Arc<ResourceDef>>> {
        self.by_resource.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let m = self.read();
        let d = m.get(&(group.to_string(), plural.to_string()))?;
        d.versions.iter().any(|v| v == version).then(|| d.clone())
    }

    pub fn by_plural(&self, group: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.read()
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    /// The resource for an `apiVersion` + `kind` pair (owner references, events).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        let (group, version) = split_api_version(api_version);
        self.read()
            .values()
            .find(|d| d.group == group && d.kind == kind && d.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ResourceDef>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
        v
    }

    pub fn register(&self, def: ResourceDef) {
        let mut m = self.by_resource.write().unwrap_or_else(|e| e.into_inner());
        m.insert((def.group.clone(), def.plural.clone()), Arc::new(def));
    }

    pub fn unregister(&self, group: &str, plural: &str) {
        let mut m = self.by_resource.write().unwrap_or_else(|e| e.into_inner());
        m.remove(&(group.to_string(), plural.to_string()));
    }
}

/// `apps/v1` -> (`apps`, `v1`); `v1` -> (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Builds the resource definition a CRD object declares, or `None` if it is malformed.
pub fn def_from_crd(crd: &Value) -> Option<ResourceDef> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_string();
    let kind = names.get("kind")?.as_str()?.to_string();
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let list_kind = names
        .get("listKind")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut versions = Vec::new();
    let mut crd_versions = Vec::new();
    let mut status = false;
    let mut storage_first: Option<String> = None;
    for v in spec.get("versions")?.as_array()? {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = v.get("name")?.as_str()?.to_string();
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_first = Some(name.clone());
        }
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        crd_versions.push(CrdVersion {
            name: name.clone(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        });
        versions.push(name);
    }
    if versions.is_empty() {
        return None;
    }
    // Discovery prefers the storage version (a simplification of kube-version priority).
    if let Some(s) = storage_first
        && let Some(i) = versions.iter().position(|v| *v == s)
    {
        let v = versions.remove(i);
        versions.insert(0, v);
    }
    Some(ResourceDef {
        group,
        versions,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status_subresource: status,
        generation: if status {
            Generation::Spec
        } else {
            Generation::NonMetadata
        },
        verbs: ALL_VERBS.to_vec(),
        extra_subresources: Vec::new(),
        crd: Some(crd_versions),
    })
}
