//! Step 2: reading the backend. [`plan`] lists each (key, version) the spec needs once;
//! [`fetch`] reads them through the store's shared reads (one backend read per remote key
//! however many SecretSyncs use it, batched where the backend can) and runs each
//! `dataFrom.find`; [`assemble`] turns the values into Secret data (property selection,
//! extraction, found names rewritten into keys) and the backend version id of each key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use secretsync_api::{DataFrom, DynamicSecret, SecretSync, SecretSyncSpec};
use secretsync_providers::{IssueFrom, RemoteValue, SecretData, extract};

use super::decode::decode;
use super::store::ResolvedStore;
pub use crate::backend::connections::Read;
use crate::cache::versions::LeaseMeta;
use crate::error::{Error, Result};
use crate::process::metrics::Metrics;

/// Data fetched for one version, and the backend version id of each remote key.
pub struct Fetched {
    pub data: SecretData,
    pub sources: BTreeMap<String, String>,
    /// What a dynamic-secret engine issued it with (`dataFrom.pki`, `dataFrom.dynamic`).
    pub issued: Option<IssuedMeta>,
    /// When the backend rotates a static role's credential next (`dataFrom.dynamic` of a
    /// static role): it is read again right after.
    pub rotates_at: Option<jiff::Timestamp>,
}

/// The public half of an issue: the lease (its id goes onto the Secret) and the serial.
#[derive(Clone, Debug, Default)]
pub struct IssuedMeta {
    pub lease: Option<LeaseMeta>,
    pub serial: Option<String>,
}

/// Issues a new credential for a `pki` or leased `dynamic` SecretSync. A re-issue always
/// differs, so this runs only when a version must be made (see `version::plan_refresh`).
pub(super) async fn issue(
    store: &ResolvedStore,
    from: IssueFrom<'_>,
    metrics: &Metrics,
) -> Result<Fetched> {
    let connected = &store.connected;
    only_vault_issues(store, from)?;
    if let Some(limiter) = &connected.limiter {
        limiter.acquire().await;
    }
    // Before the request: the lease is counted from no later than OpenBao counts it.
    let asked = jiff::Timestamp::now();
    let issued = connected.provider.issue(from).await;
    metrics.backend_request(connected.provider.name(), issued.is_ok());
    let issued = issued.map_err(|source| Error::Provider {
        store: store.name.clone(),
        source,
    })?;
    let lease = issued.lease.map(|lease| LeaseMeta {
        expires_at: jiff::SignedDuration::try_from(lease.duration)
            .ok()
            .and_then(|d| asked.checked_add(d).ok())
            .unwrap_or(jiff::Timestamp::MAX),
        id: lease.id,
        duration: lease.duration,
        renewable: lease.renewable,
    });
    Ok(Fetched {
        data: issued.data,
        sources: BTreeMap::new(),
        issued: Some(IssuedMeta {
            lease,
            serial: issued.serial,
        }),
        rotates_at: None,
    })
}

/// A store that cannot issue is a spec error the user fixes by pointing at another store.
fn only_vault_issues(store: &ResolvedStore, from: IssueFrom<'_>) -> Result<()> {
    let provider = &store.connected.provider;
    if provider.issues() {
        return Ok(());
    }
    let (field, what) = match from {
        IssueFrom::Pki(_) => ("pki", "certificates"),
        IssueFrom::Dynamic(_) => ("dynamic", "dynamic credentials"),
    };
    Err(Error::InvalidSpec(vec![format!(
        "spec.dataFrom[].{field}: {} {:?} is a {} store, and only a Vault/OpenBao store issues \
         {what}",
        store.kind.as_str(),
        store.name,
        provider.name()
    )]))
}

/// Reads a static role's credential (`database/static-creds/<role>`): like a key, its
/// content makes a version when the backend rotated it; and when it rotates next.
pub(super) async fn read_static(
    store: &ResolvedStore,
    dynamic: &DynamicSecret,
    metrics: &Metrics,
) -> Result<Fetched> {
    let connected = &store.connected;
    only_vault_issues(store, IssueFrom::Dynamic(dynamic))?;
    if let Some(limiter) = &connected.limiter {
        limiter.acquire().await;
    }
    let asked = jiff::Timestamp::now();
    let read = connected.provider.read_static(dynamic).await;
    metrics.backend_request(connected.provider.name(), read.is_ok());
    let read = read.map_err(|source| Error::Provider {
        store: store.name.clone(),
        source,
    })?;
    // The backend rotates a moment after the TTL runs out: until then, read again each
    // second, not in a loop.
    let rotates_at = read
        .rotates_in
        .map(|d| d.max(Duration::from_secs(1)))
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
        .and_then(|d| asked.checked_add(d).ok());
    Ok(Fetched {
        data: read.data,
        sources: BTreeMap::new(),
        issued: None,
        rotates_at,
    })
}

/// What each `dataFrom.find` matched, by its index in `dataFrom`.
pub type Found = HashMap<usize, Vec<(String, RemoteValue)>>;

/// Every distinct read the spec needs (`dataFrom.find` aside), in a stable order.
pub fn plan(spec: &SecretSyncSpec) -> Vec<Read> {
    let from = spec
        .data_from_items()
        .iter()
        .filter_map(|f| f.extract.as_ref())
        .map(|e| (&e.key, e.pinned_version()));
    let items = spec
        .data_items()
        .iter()
        .map(|i| (&i.remote_ref.key, i.remote_ref.pinned_version()));
    let reads: BTreeSet<Read> = from
        .chain(items)
        .map(|(key, version)| (key.clone(), version.map(str::to_owned)))
        .collect();
    reads.into_iter().collect()
}

/// How long a value read for one SecretSync serves the others: half the refresh interval,
/// between 1 s and a minute. SecretSyncs of one store refresh together on its grid (see
/// `version::Grid`), so one read serves them all, and the next window, an interval
/// later, always reads again.
pub fn shared_for(spec: &SecretSyncSpec) -> Duration {
    spec.refresh_interval()
        .map(|i| i / 2)
        .unwrap_or(Duration::from_secs(5))
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Reads what the spec needs; `fresh` (a rotation) bypasses every shared value.
pub(super) async fn fetch(
    store: &ResolvedStore,
    sync: &SecretSync,
    metrics: &Metrics,
    fresh: bool,
) -> Result<Fetched> {
    let provider_error = |source| Error::Provider {
        store: store.name.clone(),
        source,
    };
    let connected = &store.connected;
    let reads = plan(&sync.spec);
    let outcomes = connected
        .reads
        .read(connected, metrics, &reads, shared_for(&sync.spec), fresh)
        .await;
    let mut values = HashMap::new();
    for (read, outcome) in reads.into_iter().zip(outcomes) {
        values.insert(read, outcome.map_err(provider_error)?);
    }
    let mut found = Found::new();
    for (i, from) in sync.spec.data_from_items().iter().enumerate() {
        let Some(find) = &from.find else { continue };
        if let Some(limiter) = &connected.limiter {
            limiter.acquire().await;
        }
        let matched = connected.provider.find(find).await;
        metrics.backend_request(connected.provider.name(), matched.is_ok());
        found.insert(i, matched.map_err(provider_error)?);
    }
    assemble(&sync.spec, &store.name, &values, &found)
}

/// Builds the Secret data from the values read: `dataFrom` entries in order (extracted
/// fields, found secrets), then explicit keys, which win over the same names from
/// `dataFrom`.
pub fn assemble(
    spec: &SecretSyncSpec,
    store: &str,
    values: &HashMap<Read, RemoteValue>,
    found: &Found,
) -> Result<Fetched> {
    let provider_error = |source| Error::Provider {
        store: store.to_owned(),
        source,
    };
    let value = |key: &str, version: Option<&str>| {
        values
            .get(&(key.to_owned(), version.map(str::to_owned)))
            .expect("fetch read every planned key")
    };
    let mut data = SecretData::new();
    let mut sources = BTreeMap::new();
    for (i, from) in spec.data_from_items().iter().enumerate() {
        if let Some(remote_ref) = &from.extract {
            let remote = value(&remote_ref.key, remote_ref.pinned_version());
            let fields = extract::extract_all(&remote_ref.key, remote).map_err(provider_error)?;
            check_extracted_keys(&remote_ref.key, &fields)?;
            let strategy = remote_ref.decoding_strategy.unwrap_or_default();
            let fields = fields
                .into_iter()
                .map(|(field, bytes)| {
                    let place = format!(
                        "dataFrom[{i}].extract {:?}, field {field:?}",
                        remote_ref.key
                    );
                    Ok((field, decode(strategy, bytes, &place)?))
                })
                .collect::<Result<SecretData>>()?;
            record_source(
                &mut sources,
                &remote_ref.key,
                remote_ref.pinned_version(),
                remote,
            );
            data.extend(fields);
        }
        for (name, remote) in found.get(&i).into_iter().flatten() {
            let key = found_key(from, name)?;
            record_source(&mut sources, name, None, remote);
            data.insert(key, remote.bytes.clone());
        }
    }
    for (i, item) in spec.data_items().iter().enumerate() {
        let remote_ref = &item.remote_ref;
        let remote = value(&remote_ref.key, remote_ref.pinned_version());
        let selected = extract::select(&remote_ref.key, remote, remote_ref.property.as_deref())
            .map_err(provider_error)?;
        let selected = decode(
            remote_ref.decoding_strategy.unwrap_or_default(),
            selected,
            &format!("data[{i}] (secretKey {:?})", item.secret_key),
        )?;
        record_source(
            &mut sources,
            &remote_ref.key,
            remote_ref.pinned_version(),
            remote,
        );
        data.insert(item.secret_key.clone(), selected);
    }
    Ok(Fetched {
        data,
        sources,
        issued: None,
        rotates_at: None,
    })
}

/// The Secret key a found remote secret becomes: its name, through `rewrite` when given.
/// Names are paths, not values, so an invalid result may be quoted.
fn found_key(from: &DataFrom, name: &str) -> Result<String> {
    let key = match &from.rewrite {
        Some(rewrite) => rewrite.regexp.apply(name).map_err(|e| {
            Error::InvalidSpec(vec![format!("dataFrom.rewrite.regexp.source: {e}")])
        })?,
        None => name.to_owned(),
    };
    secretsync_api::keys::validate_secret_key(&key).map_err(|_| {
        Error::InvalidSecretKey(format!(
            "dataFrom.find matched {name:?}, which makes the key {key:?}: not a valid Secret key \
             (letters, digits, '-', '_' and '.'); add a rewrite, e.g. \
             {{regexp: {{source: \"/\", target: \"_\"}}}}"
        ))
    })?;
    Ok(key)
}

/// Field names of an extracted secret come from the backend and may themselves be
/// sensitive (a map of user → password, say), so an invalid one is counted, not quoted.
fn check_extracted_keys(remote_key: &str, fields: &SecretData) -> Result<()> {
    let invalid: Vec<String> = fields
        .keys()
        .filter(|k| secretsync_api::keys::validate_secret_key(k).is_err())
        .map(|k| describe_field(k))
        .collect();
    if invalid.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSecretKey(format!(
        "remote secret {remote_key:?} has {} field(s) whose names are not valid Secret keys \
         (letters, digits, '-', '_' and '.', at most 253): {}; rename them in the backend, or \
         select fields with data[].remoteRef.property instead of dataFrom.extract",
        invalid.len(),
        invalid.join(", ")
    )))
}

/// Enough of an invalid field name to find it in the backend — its first characters, its
/// length and what is wrong — without quoting the whole of a name that may be sensitive.
fn describe_field(name: &str) -> String {
    const SHOWN: usize = 3;
    let shown: String = name.chars().take(SHOWN).collect();
    let more = if name.chars().count() > SHOWN {
        "…"
    } else {
        ""
    };
    let what = match name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some((at, c)) => format!("{c:?} at byte {at}"),
        None if name.is_empty() => "empty".to_owned(),
        None if name.len() > 253 => "too long".to_owned(),
        None => "\".\" or \"..\"".to_owned(),
    };
    format!("{shown:?}{more} ({} chars; {what})", name.chars().count())
}

/// The backend version id read, under the remote key — or `key@version` for a pinned read,
/// so a key read both latest and pinned (or at two stages) shows each.
fn record_source(
    sources: &mut BTreeMap<String, String>,
    key: &str,
    pinned: Option<&str>,
    remote: &RemoteValue,
) {
    if let Some(version) = &remote.version {
        let name = match pinned {
            Some(pinned) => format!("{key}@{pinned}"),
            None => key.to_owned(),
        };
        sources.insert(name, version.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_providers::SecretBytes;

    fn spec(yaml: &str) -> SecretSyncSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SPEC: &str = r#"
storeRef: {name: vault}
data:
  - {secretKey: password, remoteRef: {key: app/db, property: password}}
  - {secretKey: user, remoteRef: {key: app/db, property: user}}
  - {secretKey: old, remoteRef: {key: app/db, property: password, version: "3"}}
dataFrom:
  - extract: {key: app/config}
"#;

    fn value(text: &str, version: &str) -> RemoteValue {
        RemoteValue {
            bytes: SecretBytes::from(text.to_owned()),
            version: Some(version.to_owned()),
        }
    }

    #[test]
    fn each_key_and_version_is_read_once() {
        assert_eq!(
            plan(&spec(SPEC)),
            [
                ("app/config".to_owned(), None),
                ("app/db".to_owned(), None),
                ("app/db".to_owned(), Some("3".to_owned())),
            ]
        );
    }

    #[test]
    fn explicit_keys_win_over_extracted_fields() {
        let values: HashMap<Read, RemoteValue> = [
            (
                ("app/config".to_owned(), None),
                value(r#"{"user":"from-config","mode":"ro"}"#, "9"),
            ),
            (
                ("app/db".to_owned(), None),
                value(r#"{"user":"app","password":"new"}"#, "4"),
            ),
            (
                ("app/db".to_owned(), Some("3".to_owned())),
                value(r#"{"user":"app","password":"old"}"#, "3"),
            ),
        ]
        .into();
        let fetched = assemble(&spec(SPEC), "vault", &values, &Found::new()).unwrap();
        let data: BTreeMap<&str, &[u8]> = fetched
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            data,
            BTreeMap::from([
                ("mode", b"ro".as_slice()),
                ("old", b"old".as_slice()),
                ("password", b"new".as_slice()),
                ("user", b"app".as_slice()),
            ])
        );
        assert_eq!(fetched.sources["app/config"], "9");
    }

    #[test]
    fn found_secrets_become_keys_through_the_rewrite() {
        let spec = spec(
            r#"
storeRef: {name: aws}
dataFrom:
  - find: {name: {regexp: "^app/payments/"}}
    rewrite: {regexp: {source: "^app/payments/", target: ""}}
  - find: {name: {regexp: "^raw/"}}
"#,
        );
        let found: Found = [
            (
                0,
                vec![
                    ("app/payments/db".to_owned(), value("a", "v1")),
                    ("app/payments/api".to_owned(), value("b", "v2")),
                ],
            ),
            (1, vec![]),
        ]
        .into();
        let fetched = assemble(&spec, "aws", &HashMap::new(), &found).unwrap();
        let keys: Vec<&str> = fetched.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["api", "db"]);
        assert_eq!(fetched.data["db"].expose(), b"a");
        assert_eq!(fetched.sources["app/payments/api"], "v2");

        let unrewritten: Found = [(1, vec![("raw/x".to_owned(), value("c", "v1"))])].into();
        let err = assemble(&spec, "aws", &HashMap::new(), &unrewritten)
            .err()
            .unwrap();
        assert_eq!(err.reason(), secretsync_api::Reason::InvalidSecretKey);
        assert!(err.to_string().contains("rewrite"), "{err}");
    }

    #[test]
    fn invalid_extracted_field_names_are_pointed_at_not_quoted() {
        let values: HashMap<Read, RemoteValue> = [
            (
                ("app/config".to_owned(), None),
                value(r#"{"alice smith":"canary-pw"}"#, "1"),
            ),
            (
                ("app/db".to_owned(), None),
                value(r#"{"user":"a","password":"b"}"#, "1"),
            ),
            (
                ("app/db".to_owned(), Some("3".to_owned())),
                value(r#"{"password":"c"}"#, "3"),
            ),
        ]
        .into();
        let err = assemble(&spec(SPEC), "vault", &values, &Found::new())
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("1 field(s)"), "{text}");
        // Enough to find it in the backend: its start, length and the offending character.
        assert!(
            text.contains(r#""ali"… (11 chars; ' ' at byte 5)"#),
            "{text}"
        );
        assert!(
            !text.contains("alice") && !text.contains("canary"),
            "{text}"
        );
    }
}
