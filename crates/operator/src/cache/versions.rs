//! An in-memory index of the versioned Secrets the operator manages, built from a
//! metadata-only watch (Secret bodies are never cached). It answers "which versions does
//! this SecretSync have" and "who owns `<base>-v<N>` names in this namespace" without an API
//! call, so a steady-state reconcile reads nothing from the API server.
//!
//! Versions are facts, not labels (guarantee 1, docs/reference/guarantees.md): a Secret is a version of a
//! SecretSync when it carries that SecretSync's controller ownerReference and a `-v<N>` name,
//! and N comes from the name. Labels and annotations are hints that users can rewrite with
//! one `kubectl label`; a version label that disagrees with the name is recorded, to be
//! reported, and never acted on. Secrets that look like versions but have no owner (kept by
//! a user, or left by `deletionPolicy: Retain`) are indexed apart, as [`Orphan`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
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
    /// The `secretsync.io/version` label when it disagrees with the name's number: reported,
    /// never trusted.
    pub mislabelled: Option<String>,
    /// False for a version a user disowned (removed our ownerReference to keep it): it stays
    /// a version for numbering, content comparison and as the active one until the next is
    /// made, but the operator never changes or deletes it.
    pub disowned: bool,
}

/// A Secret that looks like one of our versions but has no controller: disowned by a user,
/// or retained when its SecretSync was deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct Orphan {
    /// The SecretSync that let it go with `deletionPolicy: Retain` (the
    /// `secretsync.io/retained-by` annotation it set then): one of that name created later
    /// adopts it, after verifying its content hash. A Secret a user disowned has none.
    pub retained_by: Option<String>,
    /// Its `secretsync.io/sync` label: a later SecretSync of that name numbers after it.
    pub sync: Option<String>,
    pub meta: VersionMeta,
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
    /// owner of kind SecretSync, or no `-v<N>` name).
    pub fn from_secret(meta: &kube::core::ObjectMeta) -> Option<(String, VersionMeta)> {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "SecretSync")?;
        Some((owner.uid.clone(), Self::read(meta)?))
    }

    /// What a Secret named like a version says of itself, owned or not.
    fn read(meta: &kube::core::ObjectMeta) -> Option<VersionMeta> {
        let name = meta.name.as_deref()?;
        let version = version_of(name)?;
        let label = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::VERSION))
            .cloned();
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        Some(VersionMeta {
            version,
            secret_name: name.to_owned(),
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
            mislabelled: label.filter(|l| l.parse::<i64>().ok() != Some(version)),
            disowned: false,
        })
    }
}

impl Orphan {
    /// A Secret named like a version, with no controller, that our labels or hash annotation
    /// say we made; `None` for anything else.
    fn from_secret(meta: &kube::core::ObjectMeta) -> Option<Orphan> {
        let controlled = meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true));
        let labels = meta.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key));
        let ours = label(labels::MANAGED_BY).is_some_and(|v| v == labels::MANAGED_BY_VALUE)
            || label(labels::SYNC).is_some()
            || meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::CONTENT_HASH));
        if controlled || !ours {
            return None;
        }
        Some(Orphan {
            sync: label(labels::SYNC).cloned(),
            retained_by: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::RETAINED_BY))
                .cloned(),
            meta: VersionMeta {
                disowned: true,
                ..VersionMeta::read(meta)?
            },
        })
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
    /// (namespace, Secret name) → a Secret named like a version that no SecretSync owns.
    orphans: HashMap<(String, String), Orphan>,
    /// What a relist has seen so far, swapped in when it completes.
    relist: Option<Relist>,
}

#[derive(Default)]
struct Relist {
    /// (namespace, owner UID, version) of each of our Secrets.
    owned: Vec<(String, String, VersionMeta)>,
    orphans: HashMap<(String, String), Orphan>,
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
        let name = secret.metadata.name.clone()?;
        // Re-owned, disowned or relabelled since last seen: the old entry goes first.
        Self::remove_locked(inner, &namespace, &name);
        let key = (namespace.clone(), name);
        inner.orphans.remove(&key);
        let Some((owner, meta)) = VersionMeta::from_secret(&secret.metadata) else {
            if let Some(orphan) = Orphan::from_secret(&secret.metadata) {
                inner.orphans.insert(key, orphan);
            }
            return None;
        };
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
        inner.orphans.remove(&(namespace.clone(), name.clone()));
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
        self.lock().relist = Some(Relist::default());
    }

    /// Buffers what the index keeps of a listed Secret, not the Secret: a relist of every
    /// managed Secret's full metadata (managedFields and all) was the operator's peak
    /// memory at start. Secrets not ours are left out, as the index is rebuilt from scratch.
    pub fn relist_apply(&self, secret: &PartialObjectMeta<Secret>) {
        let mut inner = self.lock();
        let Some(buffer) = inner.relist.as_mut() else {
            return;
        };
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        if let Some((owner, meta)) = VersionMeta::from_secret(&secret.metadata) {
            buffer.owned.push((namespace, owner, meta));
        } else if let Some(orphan) = Orphan::from_secret(&secret.metadata) {
            let name = orphan.meta.secret_name.clone();
            buffer.orphans.insert((namespace, name), orphan);
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
        inner.orphans = listed.orphans;
        for (namespace, owner, meta) in listed.owned {
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

    /// The lease id of every version's Secret, ours or let go (retained, disowned): the
    /// leases some Secret still holds.
    pub fn lease_ids(&self) -> std::collections::HashSet<String> {
        let inner = self.lock();
        let owned = inner.by_owner.values().flatten();
        let orphans = inner.orphans.values().map(|o| &o.meta);
        owned
            .chain(orphans)
            .filter_map(|m| m.lease.as_ref().map(|l| l.id.clone()))
            .collect()
    }

    /// The Secret `name` in `namespace` if it looks like a version and no one owns it.
    pub fn orphan(&self, namespace: &str, name: &str) -> Option<Orphan> {
        self.lock()
            .orphans
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The unowned Secrets in `namespace` that SecretSync `sync` let go with `Retain`, oldest
    /// first: what a SecretSync of that name created later adopts.
    pub fn retained_by(&self, namespace: &str, sync: &str) -> Vec<VersionMeta> {
        let mut found: Vec<VersionMeta> = self
            .lock()
            .orphans
            .iter()
            .filter(|((ns, _), o)| ns == namespace && o.retained_by.as_deref() == Some(sync))
            .map(|(_, o)| o.meta.clone())
            .collect();
        found.sort_by_key(|m| m.version);
        found
    }

    /// The unowned Secrets in `namespace` labelled as SecretSync `sync`'s (a user kept them,
    /// perhaps from an earlier object of that name): numbering goes on after them, and
    /// references to them are references to this SecretSync's versions.
    pub fn labelled_orphans(&self, namespace: &str, sync: &str) -> Vec<VersionMeta> {
        self.lock()
            .orphans
            .iter()
            .filter(|((ns, _), o)| ns == namespace && o.sync.as_deref() == Some(sync))
            .map(|(_, o)| o.meta.clone())
            .collect()
    }

    /// The owner of a Secret name in a namespace, if it is a managed Secret.
    #[cfg(test)]
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
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().owner_of.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `db` for `db-v12`; `None` for a name without a `-v<N>` suffix.
pub fn base_of(name: &str) -> Option<&str> {
    let (base, _) = name.rsplit_once("-v")?;
    secretsync_api::naming::parse_versioned_name(base, name).map(|_| base)
}

/// `12` for `db-v12`; `None` for a name without a `-v<N>` suffix.
pub fn version_of(name: &str) -> Option<i64> {
    let (base, _) = name.rsplit_once("-v")?;
    secretsync_api::naming::parse_versioned_name(base, name)
}

/// A Secret as it concerns more than the index.
pub struct SecretChange {
    pub namespace: String,
    pub name: String,
    /// `None` once deleted.
    pub resource_version: Option<String>,
    /// Not (or no longer) one of ours: a SecretSync blocked on its name may proceed.
    pub unowned: bool,
}

impl super::Cache<PartialObjectMeta<Secret>> for VersionIndex {
    type Change = SecretChange;

    fn relist_start(&self) {
        VersionIndex::relist_start(self);
    }

    fn relist_apply(&self, secret: &PartialObjectMeta<Secret>) {
        VersionIndex::relist_apply(self, secret);
    }

    fn relist_done(&self) -> Vec<SecretChange> {
        VersionIndex::relist_done(self);
        Vec::new()
    }

    fn apply(&self, secret: &PartialObjectMeta<Secret>) -> Vec<SecretChange> {
        let unowned = VersionIndex::apply(self, secret).is_none();
        vec![SecretChange {
            namespace: secret.namespace().unwrap_or_default(),
            name: secret.name_any(),
            resource_version: Some(secret.resource_version().unwrap_or_default()),
            unowned,
        }]
    }

    fn delete(&self, secret: &PartialObjectMeta<Secret>) -> Vec<SecretChange> {
        VersionIndex::delete(self, secret);
        vec![SecretChange {
            namespace: secret.namespace().unwrap_or_default(),
            name: secret.name_any(),
            resource_version: None,
            unowned: true,
        }]
    }
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
