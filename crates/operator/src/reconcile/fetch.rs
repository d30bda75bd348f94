//! Reading the backend: every remote key once, property selection and extraction.

use super::*;

/// Reads every remote key the spec names, each (key, version) once, and assembles the
/// Secret data plus the backend version id of each key.
pub(super) async fn fetch_all(
    store: &ResolvedStore,
    sync: &SecretSync,
    metrics: &Metrics,
) -> Result<(SecretData, BTreeMap<String, String>)> {
    let provider_error = |source| Error::Provider {
        store: store.name.clone(),
        source,
    };
    let mut fetched: HashMap<(String, Option<String>), RemoteValue> = HashMap::new();
    let mut get = async |key: &str, version: Option<&str>| -> Result<RemoteValue> {
        let cache_key = (key.to_owned(), version.map(str::to_owned));
        if let Some(v) = fetched.get(&cache_key) {
            return Ok(v.clone());
        }
        if let Some(limiter) = &store.limiter {
            limiter.acquire().await;
        }
        Metrics::inc(&metrics.backend_reads);
        let value = store
            .provider
            .fetch(key, version)
            .await
            .map_err(provider_error)?;
        fetched.insert(cache_key, value.clone());
        Ok(value)
    };
    let mut data = SecretData::new();
    let mut sources = BTreeMap::new();
    for from in sync.spec.data_from_items() {
        let Some(extract) = &from.extract else {
            return Err(Error::InvalidSpec(vec![
                "dataFrom.find is not supported yet".to_owned(),
            ]));
        };
        let remote = get(&extract.key, extract.pinned_version()).await?;
        let fields = extract::extract_all(&extract.key, &remote).map_err(provider_error)?;
        check_extracted_keys(&extract.key, &fields)?;
        record_source(&mut sources, &extract.key, &remote);
        data.extend(fields);
    }
    // Explicit keys win over extracted fields of the same name.
    for item in sync.spec.data_items() {
        let remote_ref = &item.remote_ref;
        let remote = get(&remote_ref.key, remote_ref.pinned_version()).await?;
        let value = extract::select(&remote_ref.key, &remote, remote_ref.property.as_deref())
            .map_err(provider_error)?;
        record_source(&mut sources, &remote_ref.key, &remote);
        data.insert(item.secret_key.clone(), value);
    }
    Ok((data, sources))
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
