//! Before the versions are compared: re-keying (issue 29). A version whose content hash was not made with the
//! operator's current key — the key Secret was lost or replaced, the operator moved to
//! another namespace, the SecretSync moved to a shard with another key, or the hash predates
//! key ids or keys — cannot be compared with fetched content by its hash: taking it for
//! changed content would make a version of every SecretSync and roll every workload.
//!
//! Instead its Secret's data is read once (a GET: the watch stays metadata-only) and hashed
//! with the current key, and the hash annotation is rewritten in place (the metadata of an
//! immutable Secret may change). No version is made and no workload moves; from then on
//! fetched content compares with the new hash as usual, so only a real change makes a
//! version. Each rewrite stands alone, guarded by the resourceVersion read: a crash in the
//! middle leaves the rest for the next pass, which reads them again.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use secretsync_api::hash::{HashKey, LEGACY_PREFIX, content_hash, key_id_of};
use secretsync_api::reason::event;
use secretsync_api::{SecretSync, labels};
use secretsync_providers::{SecretBytes, SecretData};
use serde_json::json;
use tracing::info;

use crate::cache::versions::VersionMeta;
use crate::context::Context;
use crate::error::Result;

/// The versions whose hash `key` did not make, oldest first.
pub fn stale<'a>(existing: &'a BTreeMap<i64, VersionMeta>, key: &HashKey) -> Vec<&'a VersionMeta> {
    existing
        .values()
        // A disowned version is the user's: never written, so never re-keyed.
        .filter(|m| !m.disowned && !m.content_hash.as_deref().is_some_and(|h| key.made(h)))
        .collect()
}

/// A version's hash with `key`, from its Secret: over the type and data it was made with,
/// as [`super::content::build`] hashed them.
pub fn rehash(secret: &mut Secret, key: &HashKey) -> String {
    // Into the zeroizing type at once: these are the values.
    let data: SecretData = secret
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretBytes::from(v.0)))
        .collect();
    content_hash(key, secret.type_.as_deref().unwrap_or("Opaque"), &data)
}

/// How a user can tell the key a stale hash was made with.
fn made_with(hash: Option<&str>) -> String {
    match hash {
        None => "no hash".into(),
        Some(h) if h.starts_with(LEGACY_PREFIX) => "the unkeyed sha256".into(),
        Some(h) => match key_id_of(h) {
            Some(id) => format!("key {id}"),
            None => "a key without an id".into(),
        },
    }
}

/// Rewrites the hash of every version in `existing` that the current key did not make, and
/// updates `existing` and the index with what was written. One `HashRekeyed` event says
/// which were rewritten.
pub(super) async fn rekey(
    sync: &SecretSync,
    ctx: &Context,
    existing: &mut BTreeMap<i64, VersionMeta>,
) -> Result<()> {
    let key = &ctx.hash_key;
    let to_rekey: Vec<VersionMeta> = stale(existing, key).into_iter().cloned().collect();
    if to_rekey.is_empty() {
        return Ok(());
    }
    let uid = sync.uid().unwrap_or_default();
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sync.namespace().unwrap_or_default());
    let params = PatchParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut rewritten = Vec::new();
    let mut before = BTreeSet::new();
    for meta in to_rekey {
        let name = &meta.secret_name;
        // Gone, or no longer ours, since it was indexed: the watch brings that news, and
        // what is not ours is never written.
        let Some(mut secret) = api.get_opt(name).await? else {
            continue;
        };
        let ours = secret
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == uid);
        if !ours {
            continue;
        }
        let hash = rehash(&mut secret, key);
        let patch = json!({"metadata": {
            "resourceVersion": secret.resource_version(),
            "annotations": {labels::CONTENT_HASH: hash},
        }});
        let patched = ctx
            .bounded(api.patch_metadata(name, &params, &Patch::Merge(&patch)))
            .await??;
        ctx.metrics.hash_rekeyed();
        ctx.index.apply(&patched);
        if let Some((_, updated)) = VersionMeta::from_secret(&patched.metadata) {
            existing.insert(updated.version, updated);
        }
        info!(secret = %name, key_id = key.id(), "content hash rewritten with the current key");
        before.insert(made_with(meta.content_hash.as_deref()));
        rewritten.push(name.clone());
    }
    if !rewritten.is_empty() {
        ctx.publish(sync, &rekeyed_event(&rewritten, &before, key.id()))
            .await;
    }
    Ok(())
}

fn rekeyed_event(rewritten: &[String], before: &BTreeSet<String>, key_id: &str) -> Event {
    let count = match rewritten.len() {
        1 => "1 content hash".to_owned(),
        n => format!("{n} content hashes"),
    };
    let before: Vec<&str> = before.iter().map(String::as_str).collect();
    Event {
        type_: EventType::Normal,
        reason: event::HASH_REKEYED.into(),
        note: Some(crate::conditions::truncate(
            format!(
                "{count} rewritten with the operator's current key {key_id} (made with {}): \
                 {}; their data is unchanged, so no new version and no rollout",
                before.join(", "),
                rewritten.join(", "),
            ),
            1024,
        )),
        action: "Rekey".into(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn key(byte: u8) -> HashKey {
        HashKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn meta(version: i64, hash: Option<String>) -> VersionMeta {
        VersionMeta {
            version,
            secret_name: format!("db-v{version}"),
            content_hash: hash,
            ..VersionMeta::default()
        }
    }

    fn secret(type_: &str, password: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some([("password".to_owned(), ByteString(password.into()))].into()),
            ..Secret::default()
        }
    }

    #[test]
    fn a_rehash_is_the_hash_the_version_was_made_with() {
        let data: SecretData = [(
            "password".to_owned(),
            SecretBytes::from("hunter2".to_owned()),
        )]
        .into();
        for type_ in ["Opaque", "kubernetes.io/basic-auth"] {
            let mut s = secret(type_, "hunter2");
            assert_eq!(rehash(&mut s, &key(1)), content_hash(&key(1), type_, &data));
        }
        // A Secret without a type is Opaque, as the API server defaults it.
        let mut untyped = secret("Opaque", "hunter2");
        untyped.type_ = None;
        assert_eq!(
            rehash(&mut untyped, &key(1)),
            content_hash(&key(1), "Opaque", &data)
        );
    }

    #[test]
    fn every_hash_not_made_with_the_key_is_stale() {
        let (current, old) = (key(1), key(2));
        let data: SecretData = [("password".to_owned(), SecretBytes::from("x".to_owned()))].into();
        let by_current = content_hash(&current, "Opaque", &data);
        let by_old = content_hash(&old, "Opaque", &data);
        let unnamed = format!("hmac-sha256:{}", by_current.rsplit_once(':').unwrap().1);
        let legacy = secretsync_api::hash::legacy_content_hash("Opaque", &data);
        let existing: BTreeMap<i64, VersionMeta> = [
            meta(1, Some(by_old.clone())),
            meta(2, Some(unnamed.clone())),
            meta(3, Some(legacy.clone())),
            meta(4, None),
            meta(5, Some(by_current)),
        ]
        .into_iter()
        .map(|m| (m.version, m))
        .collect();
        let versions: Vec<i64> = stale(&existing, &current)
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        let said: Vec<String> = [Some(by_old.as_str()), Some(&unnamed), Some(&legacy), None]
            .into_iter()
            .map(made_with)
            .collect();
        assert_eq!(
            said,
            [
                format!("key {}", old.id()),
                "a key without an id".into(),
                "the unkeyed sha256".into(),
                "no hash".into()
            ]
        );
    }

    #[test]
    fn the_event_says_how_many_and_that_nothing_rolled() {
        let before: BTreeSet<String> = ["key 0011223344556677".to_owned()].into();
        let ev = rekeyed_event(
            &["db-v1".into(), "db-v2".into()],
            &before,
            "8899aabbccddeeff",
        );
        assert_eq!(ev.reason, "HashRekeyed");
        assert_eq!(
            ev.note.as_deref(),
            Some(
                "2 content hashes rewritten with the operator's current key 8899aabbccddeeff \
                 (made with key 0011223344556677): db-v1, db-v2; their data is unchanged, so no \
                 new version and no rollout"
            )
        );
    }
}
