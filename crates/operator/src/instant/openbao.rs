//! Instant sync from OpenBao's (or Vault's) `socket` audit device: the operator listens
//! where the device writes (`--openbao-audit-listen`), takes from each entry only the
//! operation and path of a KV write or delete, and refreshes the SecretSyncs of the stores
//! that opted in (`spec.events.source: OpenBaoAudit`) and read that key. An entry only wakes a
//! refresh; the backend read stays the source of truth, so a forged or replayed entry can
//! cost a read but never change a value. Entries carry HMAC'd values, and the request's
//! token: nothing of an entry but its path is kept, and nothing of it is logged.

use std::sync::Arc;
use std::time::Duration;

use secretsync_api::{EventSource, SecretStoreSpec, VaultKvVersion, VaultProvider};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::coalesce::{Coalescer, coalesce};
use super::wakers::Wakers;

/// The longest audit entry read; a longer line (a huge request body) is skipped whole.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Serves the OpenBao audit device on `listener` until `stopped` resolves.
pub async fn serve_openbao_audit(
    listener: TcpListener,
    wakers: Wakers,
    stopped: impl std::future::Future<Output = ()>,
) {
    let metrics = wakers.ctx.metrics.clone();
    let health = wakers.ctx.event_sources.clone();
    let entry = Arc::new(move |audited: Option<&Audited>| {
        if let Some(audited) = audited {
            health.audit_entry(&audited.namespace);
        }
        if audited.is_none_or(|a| a.path.is_none()) {
            metrics.store_event(EventSource::OpenBaoAudit, "ignored");
        }
    });
    let dispatch = Arc::new(move |changed: &Changed| {
        let woken = wakers.changed_where(EventSource::OpenBaoAudit, |_, spec| {
            key_in_store(spec, changed)
        });
        debug!(woken = woken.len(), "store change event");
        let outcome = if woken.is_empty() {
            "unmatched"
        } else {
            "matched"
        };
        wakers
            .ctx
            .metrics
            .store_event(EventSource::OpenBaoAudit, outcome);
    });
    tokio::select! {
        () = serve(listener, dispatch, entry) => {}
        () = stopped => {}
    }
}

/// The few fields of an audit entry that say what changed; serde skips the rest unread.
#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: Option<String>,
    request: Option<Request>,
}

#[derive(Deserialize)]
struct Request {
    operation: String,
    path: String,
    #[serde(default)]
    namespace: Option<Namespace>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(default)]
    path: Option<String>,
}

/// A change an audit entry reports: a path (relative to its namespace) that was written,
/// patched or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Changed {
    /// The OpenBao namespace, `""` for the root one.
    pub namespace: String,
    pub path: String,
}

/// One audit entry: its namespace (any entry shows the device reaches the operator), and
/// the path it changed if it is the response to a successful change.
#[derive(Debug, PartialEq, Eq)]
pub struct Audited {
    pub namespace: String,
    pub path: Option<String>,
}

/// What an audit line reports, `None` for a line that is no audit entry. Requests have
/// no path (their response follows once the change is made), and neither have reads and
/// failed operations.
pub fn audited(line: &[u8]) -> Option<Audited> {
    let entry: Entry = serde_json::from_slice(line).ok()?;
    let request = entry.request?;
    let changes = matches!(
        request.operation.as_str(),
        "create" | "update" | "patch" | "delete"
    );
    let namespace = request
        .namespace
        .and_then(|n| n.path)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let changed = entry.kind == "response" && entry.error.is_none_or(|e| e.is_empty()) && changes;
    Some(Audited {
        namespace,
        path: changed.then_some(request.path),
    })
}

/// The KV key a changed path names under a store's mount: `<mount>/<key>` for KV v1; for
/// KV v2 `<mount>/{data,metadata,delete,undelete,destroy}/<key>`.
pub fn key_under(mount: &str, version: VaultKvVersion, path: &str) -> Option<String> {
    let rest = path
        .strip_prefix(mount.trim_matches('/'))?
        .strip_prefix('/')?;
    let key = match version {
        VaultKvVersion::V1 => rest,
        VaultKvVersion::V2 => {
            let (kind, key) = rest.split_once('/')?;
            matches!(
                kind,
                "data" | "metadata" | "delete" | "undelete" | "destroy"
            )
            .then_some(key)?
        }
    };
    (!key.is_empty()).then(|| key.to_owned())
}

/// The OpenBao namespace a store reads in, as audit entries name it (`""`: the root one).
pub fn vault_namespace(vault: &VaultProvider) -> &str {
    vault.namespace.as_deref().unwrap_or("").trim_matches('/')
}

/// The remote key `changed` names in a store that listens to the audit device, if any.
pub fn key_in_store(spec: &SecretStoreSpec, changed: &Changed) -> Option<String> {
    (spec.events.as_ref()?.source == EventSource::OpenBaoAudit).then_some(())?;
    let vault = match &spec.provider {
        secretsync_api::Provider::Vault(vault) => vault,
        _ => return None,
    };
    (vault_namespace(vault) == changed.namespace).then_some(())?;
    key_under(vault.mount(), vault.kv_version(), &changed.path)
        .or_else(|| static_role_rotated(&changed.path))
}

/// The path a static role is read at (`<mount>/static-creds/<role>`, the key a
/// `dataFrom.dynamic` SecretSync reads) when `path` rotated it by hand
/// (`<mount>/rotate-role/<role>`).
pub fn static_role_rotated(path: &str) -> Option<String> {
    let (mount, role) = path.split_once("/rotate-role/")?;
    (!mount.is_empty() && !role.is_empty() && !role.contains('/'))
        .then(|| format!("{mount}/static-creds/{role}"))
}

/// What a change is handed to once coalesced.
pub type Dispatch = Arc<dyn Fn(&Changed) + Send + Sync>;

/// What sees every line: its entry, change or not (`None`: no audit entry).
pub type OnEntry = Arc<dyn Fn(Option<&Audited>) + Send + Sync>;

/// Accepts the audit device's connections and hands each change to `dispatch`, coalesced;
/// `entry` sees every entry first. Runs until the process stops; a connection that breaks
/// is the device's to reopen.
pub async fn serve(listener: TcpListener, dispatch: Dispatch, entry: OnEntry) {
    let coalescer = Arc::new(Coalescer::default());
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!(%peer, "audit device connected");
                let entries =
                    read_entries(stream, coalescer.clone(), dispatch.clone(), entry.clone());
                tokio::spawn(entries);
            }
            Err(error) => {
                warn!(%error, "audit listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection's entries, until it ends.
async fn read_entries(
    stream: TcpStream,
    coalescer: Arc<Coalescer<Changed>>,
    dispatch: Dispatch,
    entry: OnEntry,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                debug!(%error, "audit device connection ended");
                return;
            }
        }
        let audited = audited(&line);
        entry(audited.as_ref());
        if let Some(Audited {
            namespace,
            path: Some(path),
        }) = audited
        {
            let changed = Changed { namespace, path };
            coalesce(&coalescer, changed, dispatch.clone());
        }
    }
}

/// Reads one line into `line`, or skips it whole (leaving `line` empty) when it is longer
/// than [`MAX_ENTRY_BYTES`]. Returns the bytes consumed, 0 at the end of the stream.
async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let (mut consumed, mut too_long) = (0, false);
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            break;
        }
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        let len = chunk.len();
        too_long |= line.len() + len > MAX_ENTRY_BYTES;
        if !too_long {
            line.extend_from_slice(chunk);
        }
        reader.consume(len);
        consumed += len;
        if done {
            break;
        }
    }
    if too_long {
        line.clear();
    }
    Ok(consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The change an audit line reports, if any.
    fn changed(line: &[u8]) -> Option<Changed> {
        let audited = audited(line)?;
        Some(Changed {
            namespace: audited.namespace,
            path: audited.path?,
        })
    }
    use serde_json::json;

    #[test]
    fn rotating_a_static_role_names_the_path_it_is_read_at() {
        assert_eq!(
            static_role_rotated("database/rotate-role/app").as_deref(),
            Some("database/static-creds/app")
        );
        assert_eq!(
            static_role_rotated("teams/db/rotate-role/app").as_deref(),
            Some("teams/db/static-creds/app")
        );
        assert_eq!(static_role_rotated("database/rotate-root/pg"), None);
        assert_eq!(static_role_rotated("database/rotate-role/"), None);
        assert_eq!(static_role_rotated("secret/data/rotate-role"), None);
    }

    fn line(kind: &str, operation: &str, path: &str) -> Vec<u8> {
        json!({
            "time": "2026-12-07T10:00:00Z", "type": kind,
            "auth": {"client_token": "hmac-sha256:abc"},
            "request": {"id": "1", "operation": operation, "mount_point": "secret/",
                "namespace": {"id": "root"}, "path": path,
                "data": {"data": {"password": "hmac-sha256:def"}}},
            "response": {"data": {"version": "hmac-sha256:123"}},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_successful_changes_are_taken() {
        let changed = |l: &[u8]| changed(l).map(|c| c.path);
        let at = Some("secret/data/app/db".to_owned());
        assert_eq!(
            changed(&line("response", "create", "secret/data/app/db")),
            at
        );
        assert_eq!(
            changed(&line("response", "update", "secret/data/app/db")),
            at
        );
        assert_eq!(
            changed(&line("response", "patch", "secret/data/app/db")),
            at
        );
        assert_eq!(
            changed(&line("response", "delete", "secret/data/app/db")),
            at
        );
        // The request comes before the change is made; reads change nothing.
        assert_eq!(
            changed(&line("request", "update", "secret/data/app/db")),
            None
        );
        assert_eq!(
            changed(&line("response", "read", "secret/data/app/db")),
            None
        );
        let mut failed: serde_json::Value =
            serde_json::from_slice(&line("response", "update", "secret/data/x")).unwrap();
        failed["error"] = json!("permission denied");
        assert_eq!(changed(failed.to_string().as_bytes()), None);
        assert_eq!(changed(b"not json"), None);
    }

    #[test]
    fn kv_paths_name_their_key() {
        use VaultKvVersion::{V1, V2};
        for op in ["data", "metadata", "delete", "undelete", "destroy"] {
            let path = format!("secret/{op}/app/db");
            assert_eq!(key_under("secret", V2, &path).as_deref(), Some("app/db"));
        }
        assert_eq!(
            key_under("secret/", V2, "secret/data/app/db").as_deref(),
            Some("app/db")
        );
        assert_eq!(key_under("secret", V2, "secret/config"), None);
        assert_eq!(key_under("secret", V2, "secretive/data/app"), None);
        assert_eq!(key_under("secret", V2, "other/data/app/db"), None);
        assert_eq!(key_under("kv", V1, "kv/app/db").as_deref(), Some("app/db"));
        assert_eq!(
            key_under("team/kv", V1, "team/kv/db").as_deref(),
            Some("db")
        );
    }

    #[test]
    fn a_store_takes_changes_in_its_namespace_under_its_mount_when_it_listens() {
        let store = |events: bool, namespace: Option<&str>| -> SecretStoreSpec {
            let mut spec = json!({"provider": {"vault": {
                "server": "http://127.0.0.1:8200", "path": "secret",
                "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}}});
            if let Some(ns) = namespace {
                spec["provider"]["vault"]["namespace"] = json!(ns);
            }
            if events {
                spec["events"] = json!({"source": "OpenBaoAudit"});
            }
            serde_json::from_value(spec).unwrap()
        };
        let at = |namespace: &str| Changed {
            namespace: namespace.into(),
            path: "secret/data/app/db".into(),
        };
        assert_eq!(
            key_in_store(&store(true, None), &at("")).as_deref(),
            Some("app/db")
        );
        assert_eq!(key_in_store(&store(false, None), &at("")), None);
        assert_eq!(key_in_store(&store(true, None), &at("team")), None);
        assert_eq!(
            key_in_store(&store(true, Some("team/")), &at("team")).as_deref(),
            Some("app/db")
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_skipped_whole_and_the_next_one_read() {
        let mut input = vec![b'y'; MAX_ENTRY_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let mut reader = BufReader::new(input.as_slice());
        let mut line = Vec::new();
        let consumed = read_bounded_line(&mut reader, &mut line).await.unwrap();
        assert_eq!(consumed, MAX_ENTRY_BYTES + 11, "the whole line consumed");
        assert!(line.is_empty(), "kept {} bytes", line.len());
        line.clear();
        read_bounded_line(&mut reader, &mut line).await.unwrap();
        assert_eq!(line, b"next\n");
    }
}
