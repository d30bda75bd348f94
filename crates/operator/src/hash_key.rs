//! The content-hash key (guarantee 1, docs/reference/guarantees.md): 32 random bytes in a Secret in the operator's
//! own namespace, made once and read at start. Every replica and every restart hashes with
//! the same key, so unchanged content never looks new; nobody without read access to that
//! one Secret can test guesses against the hashes in annotations and status.
//!
//! Losing the key costs no rollout: every hash names its key, and versions hashed with
//! another one are re-keyed from their data (`reconcile::rekey`) before anything is
//! compared. A new key is still never made quietly: the log says so, and so does each
//! re-keyed SecretSync (a `HashRekeyed` event, `secretsync_hashes_rekeyed_total`).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use rand::TryRngCore;
use secretsync_api::hash::{HashKey, MIN_KEY_BYTES};
use tracing::{info, warn};

/// The key's entry in the Secret's data.
pub const DATA_KEY: &str = "key";

/// Where the key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySecret {
    pub namespace: String,
    pub name: String,
}

impl Default for KeySecret {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            name: "secretsync-hash-key".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the content-hash key Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the content-hash key Secret {namespace}/{name} has no data entry {DATA_KEY:?} of at \
         least {MIN_KEY_BYTES} bytes; restore it from a backup, or delete it to have a new key \
         made (every version's hash is then rewritten from its data: no new versions)"
    )]
    Malformed { namespace: String, name: String },
    #[error("the operating system gave no random bytes for a new content-hash key: {0}")]
    Random(String),
}

/// Reads the key, creating it first if absent. Create-if-absent: when replicas race, one
/// create wins and the others read the winner's key, so all of them share it.
pub async fn load_or_create(client: &kube::Client, at: &KeySecret) -> Result<HashKey, KeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    let api_error = |source| KeyError::Api {
        namespace: at.namespace.clone(),
        name: at.name.clone(),
        source,
    };
    if let Some(secret) = api.get_opt(&at.name).await.map_err(api_error)? {
        let key = parse(at, &secret)?;
        info!(namespace = %at.namespace, name = %at.name, key_id = key.id(), "content-hash key read");
        return Ok(key);
    }
    let mut bytes = vec![0; MIN_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    match api
        .create(&PostParams::default(), &key_secret(at, bytes))
        .await
    {
        Ok(created) => {
            let key = parse(at, &created)?;
            warn!(
                namespace = %at.namespace,
                name = %at.name,
                key_id = key.id(),
                "content-hash key not found: a new one was made. Versions hashed with another \
                 key are re-keyed from their data (HashRekeyed events), no new versions. On a \
                 first install this is expected; otherwise restore the key Secret from backup"
            );
            Ok(key)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(&at.name).await.map_err(api_error)?;
            parse(at, &secret)
        }
        Err(e) => Err(api_error(e)),
    }
}

fn parse(at: &KeySecret, secret: &Secret) -> Result<HashKey, KeyError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .and_then(|bytes| HashKey::from_bytes(&bytes.0))
        .ok_or_else(|| KeyError::Malformed {
            namespace: at.namespace.clone(),
            name: at.name.clone(),
        })
}

/// Immutable: the key is never edited in place. Replacing it (delete the Secret, restart
/// the operator) changes every hash: each version's hash is rewritten from its data, once.
fn key_secret(at: &KeySecret, bytes: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(at.name.clone()),
            namespace: Some(at.namespace.clone()),
            // Not `managed-by: secretsync`: that label marks versions, and this is none.
            labels: Some(
                [
                    ("app.kubernetes.io/part-of".into(), "secretsync".into()),
                    ("app.kubernetes.io/component".into(), "hash-key".into()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some([(DATA_KEY.into(), ByteString(bytes))].into()),
        ..Secret::default()
    }
}
