//! Step 2: reading the backend. [`plan`] lists each (key, version) the spec needs once;
//! [`fetch`] reads them through the store's rate limiter; [`assemble`] turns the values into
//! Secret data (property selection, extraction) and the backend version id of each key.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use secretsync_api::SecretSyncSpec;
use secretsync_providers::{RemoteValue, SecretData, extract};

use super::store::ResolvedStore;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// One read: a remote key, at a pinned backend version or the latest.
pub type Read = (String, Option<String>);

/// Data fetched for one version, and the backend version id of each remote key.
pub struct Fetched {
    pub data: SecretData,
    pub sources: BTreeMap<String, String>,
}

/// Every distinct read the spec needs, in a stable order.
pub fn plan(spec: &SecretSyncSpec) -> Vec<Read> {
    let from = spec
        .data_from_items()
        .iter()
        .map(|f| (&f.extract.key, f.extract.pinned_version()));
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

pub(super) async fn fetch(
    store: &ResolvedStore,
    sync: &secretsync_api::SecretSync,
    metrics: &Metrics,
) -> Result<Fetched> {
    let mut values = HashMap::new();
    for (key, version) in plan(&sync.spec) {
        if let Some(limiter) = &store.limiter {
            limiter.acquire().await;
        }
        let value = store.provider.fetch(&key, version.as_deref()).await;
        metrics.backend_request(store.provider.name(), value.is_ok());
        let value = value.map_err(|source| Error::Provider {
            store: store.name.clone(),
            source,
        })?;
        values.insert((key, version), value);
    }
    assemble(&sync.spec, &store.name, &values)
}

/// Builds the Secret data from the values read: extracted fields first, explicit keys win
/// over extracted fields of the same name.
pub fn assemble(
    spec: &SecretSyncSpec,
    store: &str,
    values: &HashMap<Read, RemoteValue>,
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
    for from in spec.data_from_items() {
        let remote = value(&from.extract.key, from.extract.pinned_version());
        let fields = extract::extract_all(&from.extract.key, remote).map_err(provider_error)?;
        check_extracted_keys(&from.extract.key, &fields)?;
        record_source(&mut sources, &from.extract.key, remote);
        data.extend(fields);
    }
    for item in spec.data_items() {
        let remote_ref = &item.remote_ref;
        let remote = value(&remote_ref.key, remote_ref.pinned_version());
        let selected = extract::select(&remote_ref.key, remote, remote_ref.property.as_deref())
            .map_err(provider_error)?;
        record_source(&mut sources, &remote_ref.key, remote);
        data.insert(item.secret_key.clone(), selected);
    }
    Ok(Fetched { data, sources })
}

/// Field names of an extracted secret come from the backend and may themselves be
/// sensitive (a map of user → password, say), so an invalid one is counted, not quoted.
fn check_extracted_keys(remote_key: &str, fields: &SecretData) -> Result<()> {
    let invalid = fields
        .keys()
        .filter(|k| secretsync_api::keys::validate_secret_key(k).is_err())
        .count();
    if invalid == 0 {
        return Ok(());
    }
    Err(Error::InvalidSecretKey(format!(
        "remote secret {remote_key:?} has {invalid} field(s) whose names are not valid Secret keys \
         (letters, digits, '-', '_' and '.', at most 253); rename them in the backend, or select \
         fields with data[].remoteRef.property instead of dataFrom.extract"
    )))
}

fn record_source(sources: &mut BTreeMap<String, String>, key: &str, remote: &RemoteValue) {
    if let Some(version) = &remote.version {
        sources.insert(key.to_owned(), version.clone());
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
        let fetched = assemble(&spec(SPEC), "vault", &values).unwrap();
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
    fn invalid_extracted_field_names_are_counted_not_quoted() {
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
        let err = assemble(&spec(SPEC), "vault", &values).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("1 field(s)"), "{text}");
        assert!(
            !text.contains("alice") && !text.contains("canary"),
            "{text}"
        );
    }
}
