//! An in-memory index of the versioned Secrets the operator manages, built from a
//! metadata-only watch (Secret bodies are never cached). It answers "which versions does
//! this SecretSync have" and "who owns `<base>-v<N>` names in this namespace" without an API
//! call, so a steady-state reconcile reads nothing from the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use secretsync_api::{StringMap, labels};

/// What the operator needs to know of one version, read from its labels and annotations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionMeta {
    pub version: i64,
    pub secret_name: String,
    pub content_hash: Option<String>,
    pub spec_version: i64,
    pub created_at: Option<Time>,
    /// The backend version of each remote key, from the source-versions annotation: a
    /// [`StringMap`], as a `BTreeMap` node per Secret was a quarter of the index.
    pub source_versions: Option<StringMap>,
    /// The Secret's UID and resourceVersion when indexed: deletes are conditional on both,
    /// so the operator never deletes a Secret other than the one it decided about.
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// The backend lease of a dynamic secret, from the Secret's annotations.
    /// Boxed: most versions have none, and the index holds every version.
    pub lease: Option<Box<LeaseMeta>>,
    /// A `pki` version's certificate serial number.
    pub serial: Option<String>,
}

/// A version's backend lease, as its Secret's annotations record it.
#[derive(Clone, PartialEq)]
pub struct LeaseMeta {
    /// Kept out of `Debug`: see [`labels::LEASE_ID`].
    pub id: String,
    pub expires_at: jiff::Timestamp,
    /// The whole lease duration when issued.
    pub duration: std::time::Duration,
    pub renewable: bool,
}

impl std::fmt::Debug for LeaseMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseMeta")
            .field("id", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("duration", &self.duration)
            .field("renewable", &self.renewable)
            .finish()
    }
}

impl LeaseMeta {
    /// Reads the lease annotations; `None` without a lease id. A lease whose expiry does not
    /// parse counts as already expired, so it is rotated rather than trusted.
    pub fn from_annotations(
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Option<LeaseMeta> {
        let id = annotations.get(labels::LEASE_ID)?.clone();
        Some(LeaseMeta {
            id,
            expires_at: annotations
                .get(labels::LEASE_EXPIRES_AT)
                .and_then(|t| t.parse().ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            duration: std::time::Duration::from_secs(
                annotations
                    .get(labels::LEASE_DURATION)
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0),
            ),
            renewable: annotations
                .get(labels::LEASE_RENEWABLE)
                .is_some_and(|r| r == "true"),
        })
    }

    /// The annotations that record this lease on its version's Secret.
    pub fn annotations(&self) -> [(&'static str, String); 4] {
        [
            (labels::LEASE_ID, self.id.clone()),
            (labels::LEASE_EXPIRES_AT, self.expires_at.to_string()),
            (labels::LEASE_DURATION, self.duration.as_secs().to_string()),
            (labels::LEASE_RENEWABLE, self.renewable.to_string()),
        ]
    }
}

impl VersionMeta {
    /// Reads a managed Secret's metadata; `None` when it is not one of ours (no controller
    /// owner of kind SecretSync, or no version label).
    pub fn from_secret(meta: &kube::core::ObjectMeta) -> Option<(String, VersionMeta)> {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "SecretSync")?;
        let version: i64 = meta.labels.as_ref()?.get(labels::VERSION)?.parse().ok()?;
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        Some((
            owner.uid.clone(),
            VersionMeta {
                version,
                secret_name: meta.name.clone()?,
                content_hash: annotation(labels::CONTENT_HASH),
                spec_version: annotation(labels::SPEC_VERSION)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                created_at: meta.creation_timestamp.clone(),
                source_versions: annotation(labels::SOURCE_VERSIONS)
                    .and_then(|v| serde_json::from_str(&v).ok()),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                lease: annotations
                    .and_then(LeaseMeta::from_annotations)
                    .map(Box::new),
                serial: annotation(labels::CERTIFICATE_SERIAL),
            },
        ))
    }
}

#[derive(Default)]
struct Inner {
    /// owner UID → its versions, oldest first. A few each: a sorted Vec, as a B-tree node
    /// per SecretSync was the index's largest cost (compare bench, heaptrack).
    by_owner: HashMap<String, Vec<VersionMeta>>,
    /// (namespace, Secret name) → owner UID, to find the owner of a name on delete.
    owner_of: HashMap<(String, String), String>,
    /// (namespace, base name) → (owner UID, Secret name) of every `<base>-v<N>` Secret, to
    /// detect two SecretSyncs claiming one target name without scanning every Secret.
    by_base: HashMap<(String, String), Vec<(String, String)>>,
    /// (namespace, owner UID, version) of each of our Secrets seen during a relist,
    /// swapped in when it completes.
    relist: Option<Vec<(String, String, VersionMeta)>>,
}

/// See the module docs. Cheap to share (`Arc`); all methods take `&self`.
#[derive(Default)]
pub struct VersionIndex {
    inner: Mutex<Inner>,
}

impl VersionIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a Secret; returns its owner UID when it is one of ours. A Secret
    /// that stopped being ours (a user removed our ownerReference to keep it) is dropped:
    /// from then on the operator neither counts it as a version nor deletes it.
    pub fn apply(&self, secret: &PartialObjectMeta<Secret>) -> Option<String> {
        let mut inner = self.lock();
        Self::apply_locked(&mut inner, secret)
    }

    fn apply_locked(inner: &mut Inner, secret: &PartialObjectMeta<Secret>) -> Option<String> {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let Some((owner, meta)) = VersionMeta::from_secret(&secret.metadata) else {
            if let Some(name) = &secret.metadata.name {
                Self::remove_locked(inner, &namespace, name);
            }
            return None;
        };
        // Re-owned or relabelled since last seen: the old entry goes first.
        Self::remove_locked(inner, &namespace, &meta.secret_name);
        Self::insert_locked(inner, namespace, owner.clone(), meta);
        Some(owner)
    }

    fn insert_locked(inner: &mut Inner, namespace: String, owner: String, meta: VersionMeta) {
        if let Some(base) = base_of(&meta.secret_name) {
            let claims = inner
                .by_base
                .entry((namespace.clone(), base.to_owned()))
                .or_default();
            let claim = (owner.clone(), meta.secret_name.clone());
            if !claims.contains(&claim) {
                claims.push(claim);
            }
        }
        inner
            .owner_of
            .insert((namespace, meta.secret_name.clone()), owner.clone());
        let versions = inner.by_owner.entry(owner).or_default();
        match versions.binary_search_by_key(&meta.version, |m| m.version) {
            Ok(at) => versions[at] = meta,
            Err(at) => versions.insert(at, meta),
        }
    }

    /// Removes a Secret; returns its owner UID when it was one of ours.
    pub fn delete(&self, secret: &PartialObjectMeta<Secret>) -> Option<String> {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone()?;
        let mut inner = self.lock();
        Self::remove_locked(&mut inner, &namespace, &name)
    }

    fn remove_locked(inner: &mut Inner, namespace: &str, name: &str) -> Option<String> {
        let owner = inner
            .owner_of
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        if let Some(versions) = inner.by_owner.get_mut(&owner) {
            versions.retain(|m| m.secret_name != name);
            if versions.is_empty() {
                inner.by_owner.remove(&owner);
            }
        }
        if let Some(base) = base_of(name) {
            let key = (namespace.to_owned(), base.to_owned());
            if let Some(claims) = inner.by_base.get_mut(&key) {
                claims.retain(|(o, n)| !(o == &owner && n == name));
                if claims.is_empty() {
                    inner.by_base.remove(&key);
                }
            }
        }
        Some(owner)
    }

    /// Removes a Secret we deleted ourselves, before its watch event arrives.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        Self::remove_locked(&mut inner, namespace, name);
    }

    /// A relist began: collect objects until [`VersionIndex::relist_done`].
    pub fn relist_start(&self) {
        self.lock().relist = Some(Vec::new());
    }

    /// Buffers what the index keeps of a listed Secret, not the Secret: a relist of every
    /// managed Secret's full metadata (managedFields and all) was the operator's peak
    /// memory at start. Secrets not ours are left out, as the index is rebuilt from scratch.
    pub fn relist_apply(&self, secret: &PartialObjectMeta<Secret>) {
        let mut inner = self.lock();
        if let Some(buffer) = inner.relist.as_mut()
            && let Some((owner, meta)) = VersionMeta::from_secret(&secret.metadata)
        {
            let namespace = secret.metadata.namespace.clone().unwrap_or_default();
            buffer.push((namespace, owner, meta));
        }
    }

    /// The relist completed: its objects replace the index (Secrets deleted while the watch
    /// was down disappear).
    pub fn relist_done(&self) {
        let mut inner = self.lock();
        let listed = inner.relist.take().unwrap_or_default();
        inner.by_owner.clear();
        inner.owner_of.clear();
        inner.by_base.clear();
        for (namespace, owner, meta) in listed {
            Self::insert_locked(&mut inner, namespace, owner, meta);
        }
    }

    /// The versions of one SecretSync (by UID), oldest first.
    pub fn versions(&self, owner_uid: &str) -> BTreeMap<i64, VersionMeta> {
        self.lock()
            .by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .map(|m| (m.version, m.clone()))
            .collect()
    }

    /// The owner of a Secret name in a namespace, if it is a managed Secret.
    pub fn owner_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.lock()
            .owner_of
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A `<base>-v<N>` Secret in `namespace` owned by someone other than `uid`, if any.
    pub fn other_owner_of_base(&self, namespace: &str, base: &str, uid: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .by_base
            .get(&(namespace.to_owned(), base.to_owned()))?
            .iter()
            .find(|(owner, _)| owner != uid)
            .map(|(_, name)| name.clone())
    }

    /// How many Secrets are indexed (for metrics and tests).
    pub fn len(&self) -> usize {
        self.lock().owner_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `db` for `db-v12`; `None` for a name without a `-v<N>` suffix.
pub fn base_of(name: &str) -> Option<&str> {
    let (base, _) = name.rsplit_once("-v")?;
    secretsync_api::naming::parse_versioned_name(base, name).map(|_| base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::{ObjectMeta, PartialObjectMetaExt};

    fn secret(ns: &str, name: &str, owner: &str, version: i64) -> PartialObjectMeta<Secret> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                [(labels::VERSION.to_string(), version.to_string())]
                    .into_iter()
                    .collect(),
            ),
            annotations: Some(
                [
                    (
                        labels::CONTENT_HASH.to_string(),
                        format!("sha256:{version}"),
                    ),
                    (labels::SPEC_VERSION.to_string(), "2".to_string()),
                    (
                        labels::SOURCE_VERSIONS.to_string(),
                        r#"{"app/db":"7"}"#.to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "secretsync.io/v1alpha1".into(),
                kind: "SecretSync".into(),
                name: "db".into(),
                uid: owner.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        }
        .into_request_partial::<Secret>()
    }

    #[test]
    fn indexes_versions_by_owner_and_forgets_deleted_ones() {
        let index = VersionIndex::default();
        assert_eq!(
            index.apply(&secret("ns", "db-v1", "u1", 1)).as_deref(),
            Some("u1")
        );
        index.apply(&secret("ns", "db-v2", "u1", 2));
        let versions = index.versions("u1");
        assert_eq!(versions.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(versions[&2].content_hash.as_deref(), Some("sha256:2"));
        assert_eq!(versions[&2].spec_version, 2);
        assert_eq!(
            versions[&2].source_versions.as_ref().unwrap()["app/db"],
            "7"
        );
        assert_eq!(
            index.delete(&secret("ns", "db-v1", "u1", 1)).as_deref(),
            Some("u1")
        );
        assert_eq!(
            index.versions("u1").keys().copied().collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(index.owner_of("ns", "db-v2").as_deref(), Some("u1"));
    }

    #[test]
    fn unowned_secrets_are_ignored() {
        let index = VersionIndex::default();
        let mut foreign = secret("ns", "db-v1", "u1", 1);
        foreign.metadata.owner_references = None;
        assert_eq!(index.apply(&foreign), None);
        assert!(index.is_empty());
    }

    #[test]
    fn a_secret_that_stops_being_ours_is_dropped() {
        let index = VersionIndex::default();
        index.apply(&secret("ns", "db-v1", "u1", 1));
        index.apply(&secret("ns", "db-v2", "u1", 2));
        let mut kept = secret("ns", "db-v1", "u1", 1);
        kept.metadata.owner_references = Some(Vec::new());
        assert_eq!(index.apply(&kept), None);
        assert_eq!(
            index.versions("u1").keys().copied().collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(index.owner_of("ns", "db-v1"), None);
        assert_eq!(
            index.other_owner_of_base("ns", "db", "u9").as_deref(),
            Some("db-v2")
        );
    }

    #[test]
    fn finds_other_owners_of_a_base_name() {
        let index = VersionIndex::default();
        index.apply(&secret("ns", "db-v1", "u1", 1));
        assert_eq!(index.other_owner_of_base("ns", "db", "u1"), None);
        assert_eq!(
            index.other_owner_of_base("ns", "db", "u2").as_deref(),
            Some("db-v1")
        );
        assert_eq!(index.other_owner_of_base("other", "db", "u2"), None);
        assert_eq!(index.other_owner_of_base("ns", "d", "u2"), None);
    }

    #[test]
    fn base_names_are_what_precedes_the_version_suffix() {
        assert_eq!(base_of("db-v12"), Some("db"));
        assert_eq!(base_of("db-v2-v3"), Some("db-v2"));
        for other in ["db", "db-v", "db-v01", "db-vx", "db-v1-old"] {
            assert_eq!(base_of(other), None, "{other}");
        }
    }

    #[test]
    fn conflicts_are_forgotten_with_the_secrets() {
        let index = VersionIndex::default();
        index.apply(&secret("ns", "db-v1", "u1", 1));
        index.apply(&secret("ns", "db-v2", "u1", 2));
        index.delete(&secret("ns", "db-v1", "u1", 1));
        assert_eq!(
            index.other_owner_of_base("ns", "db", "u2").as_deref(),
            Some("db-v2")
        );
        index.forget("ns", "db-v2");
        assert_eq!(index.other_owner_of_base("ns", "db", "u2"), None);
        assert!(index.is_empty());
    }

    #[test]
    fn relist_replaces_the_index() {
        let index = VersionIndex::default();
        index.apply(&secret("ns", "db-v1", "u1", 1));
        index.relist_start();
        index.relist_apply(&secret("ns", "db-v2", "u1", 2));
        // until the relist completes, the old view is served
        assert_eq!(index.versions("u1").len(), 1);
        index.relist_done();
        assert_eq!(
            index.versions("u1").keys().copied().collect::<Vec<_>>(),
            [2]
        );
    }
}
