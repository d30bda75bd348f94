//! Step 4: versions (guarantee 2, docs/reference/guarantees.md). [`plan_refresh`] decides whether this pass reads
//! the backend and whether the result must become a new version whatever it holds (a
//! rotation); [`next_number`] decides whether the content makes a version and its number;
//! [`write`] creates the immutable Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::{ObjectMeta, PartialObjectMetaExt};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secretsync_api::reason::event;
use secretsync_api::validate::check_spec_version;
use secretsync_api::{
    RefreshPolicy, SecretSync, SecretSyncSpec, SecretSyncStatus, VersionStatus, labels,
    naming::versioned_name,
};
use tracing::info;

use super::content::Content;
use super::store::ResolvedStore;
use crate::cache::versions::VersionMeta;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::secret_ref;

/// Why this pass reads the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The result becomes a new version even if its content is unchanged: the first sync,
    /// `spec.version` raised above the newest version's, or the newest version revoked.
    pub rotate: bool,
    /// A `pki` SecretSync rotating ahead of its newest version's lease expiry.
    pub ahead_of_lease: bool,
    /// The read bypasses the values other SecretSyncs of the store read moments ago
    /// (`SharedReads`): a rotation of a version made before (`spec.version` raised, the newest
    /// revoked or lost) must see the backend as it is now. A first version need not: nothing
    /// older exists for a shared value to be staler than, and the SecretSyncs a
    /// ClusterSecretSync makes at once would otherwise each read every key (N namespaces × K
    /// keys instead of K).
    pub fresh: bool,
}

pub struct RefreshInput<'a> {
    /// The refresh grid; `None` when polling is off.
    pub grid: Option<Grid>,
    /// When this process last read the backend for this SecretSync, or first saw it
    /// (`Context::refreshes`).
    pub last_read: Option<jiff::Timestamp>,
    pub spec: &'a SecretSyncSpec,
    pub generation: Option<i64>,
    pub previous: &'a SecretSyncStatus,
    pub newest: Option<&'a VersionMeta>,
    /// The store's generation now (from the cache).
    pub store_generation: Option<i64>,
    pub now: jiff::Timestamp,
    /// A leased version's deadline has passed (`expiry::rotate_at`), or its renewal failed
    /// (`renew::renew`).
    pub lease_due: bool,
    /// The backend has rotated a static role's credential since the last read.
    pub rotated: bool,
    /// A store's change event named a key this SecretSync reads after its last read began.
    pub asked: bool,
}

/// Whether this pass reads the backend: to rotate, after a spec edit, when the refresh is
/// due, or after a store edit. `None`: nothing to read, the pass only rolls out and prunes.
pub fn plan_refresh(input: &RefreshInput<'_>) -> Option<Refresh> {
    let spec = input.spec;
    // A revoked newest version is replaced first (guarantee 5), like a rotation.
    let rotate = input
        .newest
        .is_none_or(|n| spec.spec_version() > n.spec_version || spec.is_revoked(n.version));
    // A version exists, or the status names one (its Secret since deleted).
    let made_before = input.newest.is_some() || input.previous.current_version.is_some();
    let fresh = rotate && made_before;
    if spec.issues_credentials() {
        // A re-issued credential always differs, so a refresh would make a version every
        // time: a pki or leased dynamic SecretSync issues only when a version must be made.
        return (rotate || input.lease_due).then_some(Refresh {
            rotate: true,
            ahead_of_lease: !rotate,
            fresh,
        });
    }
    let spec_changed = input.generation != input.previous.observed_generation;
    // Due once per slot of the grid. A refresh that finds nothing new writes nothing, so
    // the status cannot say when the last one was: this process remembers it, and after a
    // restart the slot it starts in counts as done, so a restart never reads early.
    let refresh_due = match (&input.previous.last_refresh_time, input.grid) {
        (None, _) => true,
        (Some(_), Some(grid)) => input
            .last_read
            .is_some_and(|last| grid.slot(input.now) > grid.slot(last)),
        (Some(_), None) => false,
    };
    // The generation fetched through is kept in the status, so a restart neither misses a
    // store edit nor re-reads for nothing.
    let store_changed = matches!(
        (input.previous.store_generation, input.store_generation),
        (Some(seen), Some(now)) if seen != now
    );
    let due = match spec.refresh_policy() {
        RefreshPolicy::Periodic => {
            rotate || spec_changed || refresh_due || store_changed || input.asked || input.rotated
        }
        RefreshPolicy::OnChange => rotate || spec_changed || input.rotated,
        RefreshPolicy::CreatedOnce => rotate,
    };
    due.then_some(Refresh {
        rotate,
        ahead_of_lease: false,
        fresh,
    })
}

/// The number of the version to make from `content`, or `None` when the newest version
/// already holds it (and no rotation asks for a new one anyway).
pub fn next_number(
    newest: Option<&VersionMeta>,
    content: &Content,
    rotate: bool,
    highest_used: i64,
) -> Option<i64> {
    let changed = newest.is_none_or(|n| !content.matches(n.content_hash.as_deref()));
    (rotate || changed).then_some(highest_used + 1)
}

/// The highest number ever used: Secrets (ours, and unowned ones labelled with this
/// SecretSync's name), status (tombstones included) and this process's own recent writes. A
/// number is never reused, even after the status is lost.
pub fn highest_used(
    newest: Option<&VersionMeta>,
    previous: &SecretSyncStatus,
    written: Option<i64>,
    labelled: Option<i64>,
) -> i64 {
    [
        newest.map(|m| m.version),
        previous.current_version,
        previous.versions.iter().map(|v| v.version).max(),
        written,
        labelled,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
}

/// `spec.version` never goes below the newest version's, and a pin names a version that
/// exists and is not revoked (guarantee 6).
pub fn check_spec(
    spec: &SecretSyncSpec,
    newest: Option<&VersionMeta>,
    existing: &BTreeMap<i64, VersionMeta>,
) -> Result<()> {
    if let Some(newest) = newest {
        check_spec_version(spec.spec_version(), newest.spec_version)
            .map_err(|e| Error::InvalidSpec(vec![e]))?;
    }
    if let Some(pin) = spec.pin_version {
        if spec.is_revoked(pin) {
            return Err(Error::PinnedVersionUnavailable {
                version: pin,
                why: "it is revoked",
            });
        }
        if !existing.contains_key(&pin) {
            return Err(Error::PinnedVersionUnavailable {
                version: pin,
                why: "its Secret does not exist (never made, or deleted)",
            });
        }
    }
    Ok(())
}

/// The instants at which the SecretSyncs of one store with one refresh interval read the
/// backend: slot `k` starts at `phase + k·interval`. The phase comes from the store (and the
/// interval), so every SecretSync of one store refreshes at the same instants and their reads
/// of a shared remote key coalesce into one backend read, while different stores are spread
/// over the interval. Derived, not drawn at random: a restarted operator keeps the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    phase_ms: i64,
    step_ms: i64,
}

impl Grid {
    /// The grid a SecretSync follows: its store's, at its interval; `None` when polling is off.
    pub fn of(sync: &SecretSync) -> Option<Grid> {
        if sync.spec.refresh_policy() != RefreshPolicy::Periodic {
            return None;
        }
        let interval = sync.spec.refresh_interval()?;
        let store = &sync.spec.store_ref.name;
        let name = match sync.spec.store_kind() {
            secretsync_api::StoreKind::SecretStore => format!(
                "SecretStore/{}/{store}",
                sync.metadata.namespace.as_deref().unwrap_or_default()
            ),
            secretsync_api::StoreKind::ClusterSecretStore => format!("ClusterSecretStore/{store}"),
        };
        Some(Grid::new(&name, interval))
    }

    fn new(name: &str, interval: Duration) -> Grid {
        use sha2::{Digest, Sha256};
        let step_ms = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let digest = Sha256::digest(format!("{name}/{step_ms}"));
        let seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let phase_ms = i64::try_from(seed % step_ms.unsigned_abs()).unwrap_or(0);
        Grid { phase_ms, step_ms }
    }

    /// The slot `t` falls in.
    pub fn slot(&self, t: jiff::Timestamp) -> i64 {
        t.as_millisecond()
            .saturating_sub(self.phase_ms)
            .div_euclid(self.step_ms)
    }

    /// When slot `k` starts.
    pub fn start(&self, k: i64) -> jiff::Timestamp {
        let ms = self.phase_ms.saturating_add(k.saturating_mul(self.step_ms));
        jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::MAX)
    }

    /// How long from `now` until the next slot starts.
    pub fn until_next(&self, now: jiff::Timestamp) -> Duration {
        let wait = self
            .start(self.slot(now).saturating_add(1))
            .duration_since(now);
        Duration::try_from(wait).unwrap_or(Duration::ZERO)
    }
}

/// The `VersionCreated` event, saying why the version was made.
pub(super) fn created_event(
    sync: &SecretSync,
    store: &ResolvedStore,
    made: &VersionMeta,
    newest: Option<&VersionMeta>,
    why: Refresh,
) -> Event {
    let spec = &sync.spec;
    let lease_of = |n: &VersionMeta| n.lease.as_ref().map(|l| l.expires_at);
    let why = match newest {
        Some(n) if why.ahead_of_lease => format!(
            " (rotating before the lease of {} expires at {})",
            n.secret_name,
            lease_of(n).map(|t| t.to_string()).unwrap_or_default()
        ),
        Some(n) if spec.is_revoked(n.version) => format!(
            " (replaces revoked {}{})",
            n.secret_name,
            crate::events::asked_reason(sync)
        ),
        Some(n) if spec.spec_version() > n.spec_version => format!(
            " (rotation requested by spec.version{})",
            crate::events::asked_reason(sync)
        ),
        _ => String::new(),
    };
    Event {
        type_: EventType::Normal,
        reason: event::VERSION_CREATED.into(),
        note: Some(format!(
            "created {} from {} {:?}{why}",
            made.secret_name,
            store.kind.as_str(),
            store.name,
        )),
        action: "CreateVersion".into(),
        secondary: Some(secret_ref(sync, &made.secret_name)),
    }
}

/// The Warning that says why a version was made out of turn: the newest one's Secret was
/// deleted by someone else.
pub(super) fn lost_event(sync: &SecretSync, lost: &VersionStatus, made: &VersionMeta) -> Event {
    Event {
        type_: EventType::Warning,
        reason: event::ACTIVE_VERSION_DELETED.into(),
        note: Some(format!(
            "{} was deleted by someone other than the operator while it was the newest \
             version; made {} from a fresh read, and the targets move forward to it",
            lost.secret_name, made.secret_name
        )),
        action: "CreateVersion".into(),
        secondary: Some(secret_ref(sync, &made.secret_name)),
    }
}

/// Creates `<base>-v<next>`, moving past numbers already taken. A name taken by this
/// SecretSync with the same content is a version made just before a crash: it is adopted.
pub(super) async fn write(
    sync: &SecretSync,
    ctx: &Context,
    base: &str,
    mut next: i64,
    content: &Content,
) -> Result<VersionMeta> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    loop {
        let name =
            versioned_name(base, next).map_err(|e| Error::InvalidSpec(vec![e.to_string()]))?;
        let secret = version_secret(sync, &name, next, content);
        match ctx.bounded(api.create(&params, &secret)).await? {
            Ok(created) => {
                ctx.metrics.version_created();
                ctx.memory
                    .written
                    .update(&uid, |old| old.map_or(next, |o| o.max(next)));
                // The response carries the data; keep only the metadata.
                let meta = created.metadata.into_request_partial::<Secret>();
                ctx.index.apply(&meta);
                info!(secret = %name, version = next, "version created");
                return VersionMeta::from_secret(&meta.metadata)
                    .map(|(_, m)| m)
                    .ok_or_else(|| {
                        Error::InvalidSpec(vec!["created Secret lost its labels".into()])
                    });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let taken = api.get_metadata_opt(&name).await?;
                let owner = taken
                    .as_ref()
                    .and_then(|m| VersionMeta::from_secret(&m.metadata));
                match owner {
                    Some((owner_uid, meta)) if owner_uid == uid => {
                        ctx.memory
                            .written
                            .update(&uid, |old| old.map_or(next, |o| o.max(next)));
                        if let Some(m) = &taken {
                            ctx.index.apply(m);
                        }
                        if content.matches(meta.content_hash.as_deref())
                            && meta.spec_version == sync.spec.spec_version()
                        {
                            return Ok(meta);
                        }
                        next += 1;
                    }
                    _ if taken.is_none() => continue, // deleted meanwhile: try the name again
                    // One of ours that a user kept (disowned), perhaps of an earlier object of
                    // the same name: its number stays used, and the name is not a conflict.
                    _ if taken.as_ref().is_some_and(|m| {
                        m.labels().get(labels::SYNC) == Some(&sync.name_any())
                            && m.owner_references()
                                .iter()
                                .all(|o| o.controller != Some(true))
                    }) =>
                    {
                        next += 1;
                    }
                    _ => {
                        return Err(Error::TargetConflict(format!(
                            "Secret {namespace}/{name} already exists and is not owned by this SecretSync; \
                             delete it or choose another spec.target.name"
                        )));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The immutable Secret of version `version`.
pub fn version_secret(sync: &SecretSync, name: &str, version: i64, content: &Content) -> Secret {
    let target = sync.spec.target.clone().unwrap_or_default();
    let mut secret_labels = target.labels.unwrap_or_default();
    secret_labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    secret_labels.insert(
        labels::SYNC.into(),
        sync.metadata.name.clone().unwrap_or_default(),
    );
    secret_labels.insert(labels::VERSION.into(), version.to_string());
    let mut annotations = target.annotations.unwrap_or_default();
    annotations.insert(labels::CONTENT_HASH.into(), content.hash.clone());
    annotations.insert(
        labels::SPEC_VERSION.into(),
        sync.spec.spec_version().to_string(),
    );
    if let Some(issued) = &content.issued {
        for (key, value) in issued.lease.iter().flat_map(|l| l.annotations()) {
            annotations.insert(key.into(), value);
        }
        if let Some(serial) = &issued.serial {
            annotations.insert(labels::CERTIFICATE_SERIAL.into(), serial.clone());
        }
    }
    if !content.source_versions.is_empty() {
        annotations.insert(
            labels::SOURCE_VERSIONS.into(),
            serde_json::to_string(&content.source_versions).expect("a string map serializes"),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: sync.metadata.namespace.clone(),
            labels: Some(secret_labels),
            annotations: Some(annotations),
            owner_references: sync.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some(sync.spec.secret_type().to_owned()),
        // The one place values leave their redacting type: into the Secret body.
        data: Some(
            content
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::content::tests::{build_content, data, sync};

    const SYNC: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db, namespace: payments, uid: 1b7e-uid, generation: 4}
spec:
  storeRef: {name: vault}
  version: 2
  refreshInterval: 1h
  data: [{secretKey: password, remoteRef: {key: app/db, property: password}}]
  target:
    type: kubernetes.io/basic-auth
    labels: {team: payments}
    annotations: {owner: "payments@example.com"}
"#;

    fn meta(version: i64, spec_version: i64, hash: &str) -> VersionMeta {
        VersionMeta {
            version,
            secret_name: format!("db-v{version}"),
            content_hash: Some(hash.into()),
            spec_version,
            ..VersionMeta::default()
        }
    }

    fn status(yaml: &str) -> SecretSyncStatus {
        serde_yaml::from_str(yaml).unwrap()
    }

    const STEADY: &str = r#"
observedGeneration: 4
currentVersion: 3
lastRefreshTime: "2026-11-23T10:00:00Z"
storeGeneration: 1
"#;

    fn input<'a>(
        s: &'a SecretSync,
        previous: &'a SecretSyncStatus,
        newest: Option<&'a VersionMeta>,
        store_generation: Option<i64>,
        now: &str,
    ) -> RefreshInput<'a> {
        RefreshInput {
            grid: Grid::of(s),
            last_read: Some("2026-11-23T10:00:00Z".parse().unwrap()),
            spec: &s.spec,
            generation: s.metadata.generation,
            previous,
            newest,
            store_generation,
            now: now.parse().unwrap(),
            lease_due: false,
            rotated: false,
            asked: false,
        }
    }

    #[test]
    fn a_steady_state_reads_once_per_slot_of_the_grid() {
        let s = sync(SYNC);
        let grid = Grid::of(&s).unwrap();
        let previous = status(STEADY);
        let newest = meta(3, 2, "h");
        let last_read: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let next_slot = grid.start(grid.slot(last_read) + 1);
        let at = |now: jiff::Timestamp| {
            let mut i = input(
                &s,
                &previous,
                Some(&newest),
                Some(1),
                "2026-11-23T10:00:00Z",
            );
            i.now = now;
            plan_refresh(&i)
        };
        assert_eq!(at(next_slot - jiff::SignedDuration::from_millis(1)), None);
        assert_eq!(
            at(next_slot),
            Some(Refresh {
                rotate: false,
                ahead_of_lease: false,
                fresh: false
            })
        );
        // After a restart this process has read nothing yet: the slot it starts in counts
        // as done, so a restart never reads early, only at the next slot.
        let mut restarted = input(
            &s,
            &previous,
            Some(&newest),
            Some(1),
            "2026-11-23T12:00:00Z",
        );
        restarted.last_read = None;
        assert_eq!(plan_refresh(&restarted), None);
    }

    #[test]
    fn refresh_policies_read_on_the_slot_on_edits_or_only_on_rotation() {
        let previous = status(STEADY);
        let newest = meta(3, 2, "h");
        let older = meta(3, 1, "h");
        let none = SecretSyncStatus::default();
        // At the next slot, after a store edit and after a spec edit (generation 5 against
        // the observed 4), then for a rotation: whether each policy reads.
        let cases = |policy: RefreshPolicy| {
            let mut s = sync(SYNC);
            s.spec.refresh_policy = Some(policy);
            let slot = input(
                &s,
                &previous,
                Some(&newest),
                Some(1),
                "2026-11-23T12:00:00Z",
            );
            let store_edit = input(
                &s,
                &previous,
                Some(&newest),
                Some(2),
                "2026-11-23T10:01:00Z",
            );
            let mut edited = s.clone();
            edited.metadata.generation = Some(5);
            let spec_edit = input(
                &edited,
                &previous,
                Some(&newest),
                Some(1),
                "2026-11-23T10:01:00Z",
            );
            let rotation = input(&s, &previous, Some(&older), Some(1), "2026-11-23T10:01:00Z");
            let first = input(&s, &none, None, Some(1), "2026-11-23T10:01:00Z");
            (
                Grid::of(&s).is_some(),
                [&slot, &store_edit, &spec_edit, &rotation, &first]
                    .map(|i| plan_refresh(i).is_some()),
            )
        };
        assert_eq!(
            cases(RefreshPolicy::Periodic),
            (true, [true, true, true, true, true])
        );
        assert_eq!(
            cases(RefreshPolicy::OnChange),
            (false, [false, false, true, true, true])
        );
        assert_eq!(
            cases(RefreshPolicy::CreatedOnce),
            (false, [false, false, false, true, true])
        );
    }

    #[test]
    fn edits_rotations_and_revocations_read_at_once() {
        let previous = status(STEADY);
        let now = "2026-11-23T10:01:00Z";
        let s = sync(SYNC);
        // the store was edited
        let newest = meta(3, 2, "h");
        let edited = input(&s, &previous, Some(&newest), Some(2), now);
        assert_eq!(
            plan_refresh(&edited),
            Some(Refresh {
                rotate: false,
                ahead_of_lease: false,
                fresh: false
            })
        );
        // spec.version raised above the newest version's
        let older = meta(3, 1, "h");
        let rotation = input(&s, &previous, Some(&older), Some(1), now);
        assert_eq!(
            plan_refresh(&rotation),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: true
            })
        );
        // the newest is revoked
        let mut revoking = sync(SYNC);
        revoking.spec.revoked_versions = Some(vec![3]);
        let revoked = input(&revoking, &previous, Some(&newest), Some(1), now);
        assert_eq!(
            plan_refresh(&revoked),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: true
            })
        );
        // the spec changed (new generation)
        let mut edited_spec = sync(SYNC);
        edited_spec.metadata.generation = Some(5);
        let spec_edit = input(&edited_spec, &previous, Some(&newest), Some(1), now);
        assert_eq!(
            plan_refresh(&spec_edit),
            Some(Refresh {
                rotate: false,
                ahead_of_lease: false,
                fresh: false
            })
        );
        // the status names a version whose Secret is gone: a fresh read
        let gone = input(&s, &previous, None, Some(1), now);
        assert_eq!(
            plan_refresh(&gone),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: true
            })
        );
        // first sync: a new version, from the store's shared reads (the SecretSyncs a
        // ClusterSecretSync makes at once read each key once, not once each)
        let never = SecretSyncStatus::default();
        let first = input(&s, &never, None, Some(1), now);
        assert_eq!(
            plan_refresh(&first),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: false
            })
        );
    }

    #[test]
    fn a_pki_sync_issues_only_when_a_version_must_be_made() {
        let mut s = sync(SYNC);
        s.spec.data = None;
        s.spec.data_from = Some(vec![
            serde_yaml::from_str("{pki: {role: app, commonName: api.example}}").unwrap(),
        ]);
        let previous = status(STEADY);
        let newest = meta(3, 2, "h");
        let now = "2026-11-23T12:00:00Z";
        // a due refresh, a spec edit, a store edit: no issue (each would make a version)
        let refresh_due = input(&s, &previous, Some(&newest), Some(1), now);
        assert_eq!(plan_refresh(&refresh_due), None);
        let mut edited = sync(SYNC);
        edited.spec = s.spec.clone();
        edited.metadata.generation = Some(5);
        assert_eq!(
            plan_refresh(&input(&edited, &previous, Some(&newest), Some(2), now)),
            None
        );
        // the lease-aware deadline, and the usual rotations, issue
        let mut due = input(&s, &previous, Some(&newest), Some(1), now);
        due.lease_due = true;
        assert_eq!(
            plan_refresh(&due),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: true,
                fresh: false
            })
        );
        let first = input(&s, &previous, None, Some(1), now);
        assert_eq!(
            plan_refresh(&first),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: true
            })
        );
        let older = meta(3, 1, "h");
        assert_eq!(
            plan_refresh(&input(&s, &previous, Some(&older), Some(1), now)),
            Some(Refresh {
                rotate: true,
                ahead_of_lease: false,
                fresh: true
            })
        );
    }

    #[test]
    fn polling_off_never_refreshes_by_time() {
        let mut s = sync(SYNC);
        s.spec.refresh_interval = Some("0".into());
        let previous = status(STEADY);
        let newest = meta(3, 2, "h");
        let years_later = input(
            &s,
            &previous,
            Some(&newest),
            Some(1),
            "2030-01-01T00:00:00Z",
        );
        assert_eq!(plan_refresh(&years_later), None);
        assert_eq!(Grid::of(&s), None, "no grid, so no refresh requeue");
    }

    #[test]
    fn new_content_or_a_rotation_makes_the_next_number() {
        let s = sync(SYNC);
        let content = build_content(&s, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        let same = meta(3, 2, &content.hash);
        assert_eq!(next_number(Some(&same), &content, false, 5), None);
        assert_eq!(next_number(Some(&same), &content, true, 5), Some(6));
        let other = meta(3, 2, "hmac-sha256:other");
        assert_eq!(next_number(Some(&other), &content, false, 3), Some(4));
        assert_eq!(next_number(None, &content, true, 0), Some(1));
    }

    #[test]
    fn numbers_are_never_reused() {
        let previous = status(
            r#"
currentVersion: 4
versions:
  - {version: 7, secretName: db-v7, specVersion: 0, state: Deleted}
"#,
        );
        assert_eq!(
            highest_used(Some(&meta(2, 0, "h")), &previous, None, None),
            7
        );
        assert_eq!(
            highest_used(Some(&meta(2, 0, "h")), &previous, Some(9), None),
            9
        );
        assert_eq!(
            highest_used(None, &SecretSyncStatus::default(), None, None),
            0
        );
        // A Secret a user kept from an earlier object of the same name.
        assert_eq!(
            highest_used(None, &SecretSyncStatus::default(), None, Some(4)),
            4
        );
    }

    #[test]
    fn pins_must_name_a_live_version() {
        let mut s = sync(SYNC);
        let existing: BTreeMap<i64, VersionMeta> =
            [(2, meta(2, 2, "h")), (3, meta(3, 2, "h"))].into();
        s.spec.pin_version = Some(2);
        check_spec(&s.spec, existing.get(&3), &existing).unwrap();
        s.spec.pin_version = Some(1);
        let err = check_spec(&s.spec, existing.get(&3), &existing).unwrap_err();
        assert_eq!(
            err.reason(),
            secretsync_api::Reason::PinnedVersionUnavailable
        );
        s.spec.pin_version = Some(2);
        s.spec.revoked_versions = Some(vec![2]);
        let err = check_spec(&s.spec, existing.get(&3), &existing).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        // spec.version below the newest version's is refused
        s.spec.pin_version = None;
        s.spec.revoked_versions = None;
        s.spec.version = Some(1);
        let err = check_spec(&s.spec, existing.get(&3), &existing).unwrap_err();
        assert_eq!(err.reason(), secretsync_api::Reason::InvalidSpec);
    }

    #[test]
    fn refreshes_follow_the_stores_grid() {
        let hour = Duration::from_secs(3600);
        let at = |t: &str| -> jiff::Timestamp { t.parse().unwrap() };
        let grid = Grid::new("SecretStore/payments/vault", hour);
        // Two SecretSyncs of one store, synced at different times, meet on the grid: both
        // wait until the same instant.
        let a = at("2026-11-23T10:00:00Z");
        let b = at("2026-11-23T10:17:00Z");
        let next =
            |t: jiff::Timestamp| t + jiff::SignedDuration::try_from(grid.until_next(t)).unwrap();
        assert!(
            next(a) == next(b) || next(a).duration_since(next(b)).as_secs().abs() == 3600,
            "{} {}",
            next(a),
            next(b)
        );
        // Then every interval, and never later than one interval.
        assert_eq!(next(next(a)).duration_since(next(a)).as_secs(), 3600);
        for minute in 0..120 {
            let t = a + jiff::SignedDuration::from_mins(minute);
            let wait = grid.until_next(t).as_secs();
            assert!((1..=3600).contains(&wait), "{wait}");
            assert_eq!(grid.slot(next(t)), grid.slot(t) + 1);
        }
        // Other stores are spread over the interval.
        let phases: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| {
                Grid::new(&format!("SecretStore/ns/s{i}"), hour)
                    .until_next(a)
                    .as_secs()
                    / 60
            })
            .collect();
        assert!(phases.len() > 20, "{phases:?}");
    }

    #[test]
    fn version_secret_carries_the_contract() {
        let sync = sync(SYNC);
        let content = build_content(
            &sync,
            data(&[("password", "hunter2")]),
            [("app/db".to_string(), "7".to_string())].into(),
        )
        .unwrap();
        let secret = version_secret(&sync, "db-v3", 3, &content);
        assert_eq!(secret.metadata.name.as_deref(), Some("db-v3"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let l = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(l["app.kubernetes.io/managed-by"], "secretsync");
        assert_eq!(l["secretsync.io/sync"], "db");
        assert_eq!(l["secretsync.io/version"], "3");
        assert_eq!(l["team"], "payments");
        let a = secret.metadata.annotations.as_ref().unwrap();
        assert_eq!(a["secretsync.io/spec-version"], "2");
        assert_eq!(a["secretsync.io/source-versions"], r#"{"app/db":"7"}"#);
        assert_eq!(a["owner"], "payments@example.com");
        assert!(a["secretsync.io/content-hash"].starts_with("hmac-sha256:"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SecretSync", "db", "1b7e-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(secret.data.as_ref().unwrap()["password"].0, b"hunter2");
    }
}
