//! The event listener (`--events-listen`): one URL per store,
//! `/events/v1/namespaces/<ns>/secretstores/<name>` or `/events/v1/clustersecretstores/<name>`,
//! taking what the store's `events.source` sends:
//! - `Webhook`: a `POST` signed with HMAC-SHA256 under the key in `events.secretRef`
//!   (`X-Secretsync-Signature: t=<unix seconds>,v1=<hex of HMAC("<t>.<body>")>`), naming keys
//!   as `{"keys": [...]}`, or as a CloudEvents 1.0 event (structured: `subject` and/or
//!   `data.keys`; binary: `ce-*` headers and a `{"keys": [...]}` body). A signature older or
//!   newer than [`MAX_SKEW`] is refused, and so is one seen before.
//! - `GcpPubSub`: a push subscription's `POST` of a Secret Manager notification
//!   (`message.attributes.eventType`, `secretId`), with the token in `events.secretRef` as
//!   `?token=`.
//! - `AzureEventGrid`: an Event Grid webhook delivery of Key Vault events (Event Grid or
//!   CloudEvents schema), with the token as `?token=`; its subscription validation
//!   handshake (`SubscriptionValidation`, and the CloudEvents `OPTIONS` one) is answered.
//!
//! Everything is refused unread (401) before the signature or token is checked, and
//! nothing is read from the backend for a refused request. Bodies over [`MAX_BODY`] are
//! refused (413) and requests over the listener's rate (429). The store is named by the
//! URL so the key checking the request is known before the body is parsed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hmac::{Hmac, Mac};
use kube::ResourceExt;
use secretsync_api::{EventSource, Provider, SecretStoreSpec, StoreKind};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::coalesce::{Coalescer, coalesce};
use super::wakers::Wakers;
use crate::backend::ratelimit::RateLimiter;
use crate::cache::syncs::StoreKey;

/// The largest body taken; a larger one is refused unread.
pub const MAX_BODY: usize = 64 * 1024;

/// How far a webhook signature's timestamp may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Requests per second the listener takes, with bursts of [`BURST`]; more are refused
/// with 429 (a sender retries), so a flood costs neither the backend nor the API server.
const RATE_PER_SECOND: u32 = 100;
const BURST: u32 = 200;

/// The most keys one request may name.
const MAX_KEYS: usize = 1000;

/// The header a webhook's signature travels in.
pub const SIGNATURE_HEADER: &str = "x-secretsync-signature";

struct Listener {
    wakers: Wakers,
    coalescer: Arc<Coalescer<(StoreKey, String)>>,
    limiter: RateLimiter,
    /// Webhook signatures seen within [`MAX_SKEW`], with when they expire.
    seen: Mutex<HashMap<Vec<u8>, Instant>>,
}

/// Serves the event listener on `listener` until `stopped` resolves.
pub async fn serve(
    listener: TcpListener,
    wakers: Wakers,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let state = Arc::new(Listener {
        wakers,
        coalescer: Arc::default(),
        limiter: RateLimiter::new(RATE_PER_SECOND, Some(BURST)),
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route(
            "/events/v1/namespaces/{namespace}/secretstores/{name}",
            any(store_route),
        )
        .route("/events/v1/clustersecretstores/{name}", any(store_route))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        warn!(%error, "event listener stopped");
    }
}

/// What a request carries besides its body.
struct Request {
    method: Method,
    headers: HeaderMap,
    token: Option<String>,
    body: Body,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Either route: a `namespace` in the path names a SecretStore, none a ClusterSecretStore.
async fn store_route(
    State(listener): State<Arc<Listener>>,
    Path(mut path): Path<HashMap<String, String>>,
    Query(query): Query<TokenQuery>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let name = path.remove("name").unwrap_or_default();
    let store = match path.remove("namespace") {
        Some(namespace) => (StoreKind::SecretStore, Some(namespace), name),
        None => (StoreKind::ClusterSecretStore, None, name),
    };
    let request = Request {
        method,
        headers,
        token: query.token,
        body,
    };
    listener.handle(store, request).await
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

impl Listener {
    /// The store's spec, UID and event source, if it listens on this listener.
    fn store(&self, key: &StoreKey) -> Option<(SecretStoreSpec, String, EventSource)> {
        let ctx = &self.wakers.ctx;
        let (spec, uid) = match key {
            (StoreKind::SecretStore, Some(namespace), name) => ctx
                .stores
                .state()
                .iter()
                .find(|s| s.namespace().as_deref() == Some(namespace) && &s.name_any() == name)
                .map(|s| (s.spec.clone(), s.uid().unwrap_or_default()))?,
            (_, _, name) => ctx
                .cluster_stores
                .state()
                .iter()
                .find(|s| &s.name_any() == name)
                .map(|s| (s.spec.store.clone(), s.uid().unwrap_or_default()))?,
        };
        let source = spec.events.as_ref()?.source;
        matches!(
            source,
            EventSource::Webhook | EventSource::GcpPubSub | EventSource::AzureEventGrid
        )
        .then_some((spec, uid, source))
    }

    async fn handle(&self, store: StoreKey, request: Request) -> Response {
        let Some((spec, uid, source)) = self.store(&store) else {
            return refuse(StatusCode::NOT_FOUND, "no store listens here\n");
        };
        let metrics = &self.wakers.ctx.metrics;
        let refused = |status, why| {
            metrics.store_event(source, "refused");
            debug!(store = %store.2, source = source.name(), why, "event refused");
            refuse(status, why)
        };
        if !self.limiter.try_acquire() {
            return refused(StatusCode::TOO_MANY_REQUESTS, "over the listener's rate\n");
        }
        let Some(key) = self.wakers.ctx.event_sources.key(&uid) else {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store's events.secretRef has not been read\n",
            );
        };
        let Ok(body) = axum::body::to_bytes(request.body, MAX_BODY).await else {
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB\n");
        };
        let keys = match source {
            EventSource::Webhook => {
                if let Err(why) = self.verify_signature(&key, &request.headers, &body) {
                    return refused(StatusCode::UNAUTHORIZED, why);
                }
                webhook_keys(&request.headers, &body)
            }
            EventSource::AzureEventGrid | EventSource::GcpPubSub => {
                let token = request.token.as_deref().unwrap_or_default().as_bytes();
                if !bool::from(token.ct_eq(&key)) {
                    return refused(StatusCode::UNAUTHORIZED, "missing or wrong token\n");
                }
                if source == EventSource::AzureEventGrid
                    && let Some(answer) =
                        event_grid_handshake(&request.method, &request.headers, &body)
                {
                    return answer;
                }
                match source {
                    EventSource::GcpPubSub => pubsub_keys(&body),
                    _ => event_grid_keys(&spec, &body),
                }
            }
            _ => Ok(Vec::new()),
        };
        let keys = match keys {
            Ok(keys) if keys.len() <= MAX_KEYS => keys,
            Ok(_) => return refused(StatusCode::BAD_REQUEST, "more than 1000 keys\n"),
            Err(why) => return refused(StatusCode::BAD_REQUEST, why),
        };
        if keys.is_empty() {
            metrics.store_event(source, "ignored");
        }
        for key in keys {
            self.dispatch(source, &store, key);
        }
        StatusCode::ACCEPTED.into_response()
    }

    /// Wakes the readers of `key`, coalesced per store and key.
    fn dispatch(&self, source: EventSource, store: &StoreKey, key: String) {
        let wakers = self.wakers.clone();
        let dispatch = Arc::new(move |(store, key): &(StoreKey, String)| {
            let woken = wakers.changed(source, store, key);
            let outcome = if woken.is_empty() {
                "unmatched"
            } else {
                "matched"
            };
            wakers.ctx.metrics.store_event(source, outcome);
        });
        coalesce(&self.coalescer, (store.clone(), key), dispatch);
    }

    /// Checks a webhook's signature: fresh, not seen before, and made with `key`.
    fn verify_signature(
        &self,
        key: &[u8],
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), &'static str> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("missing signature\n")?;
        let (mut at, mut signature) = (None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => at = t.parse::<i64>().ok(),
                Some(("v1", v)) => signature = hex::decode(v).ok(),
                _ => {}
            }
        }
        let (Some(at), Some(signature)) = (at, signature) else {
            return Err("malformed signature\n");
        };
        let now = jiff::Timestamp::now().as_second();
        if now.abs_diff(at) > MAX_SKEW.as_secs() {
            return Err("signature timestamp outside 5 minutes of now\n");
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "unusable key\n")?;
        mac.update(at.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&signature)
            .map_err(|_| "wrong signature\n")?;
        // Only a valid signature is remembered, so forged ones cannot fill the set.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        seen.retain(|_, expires| *expires > now);
        if seen.insert(signature, now + MAX_SKEW * 2).is_some() {
            return Err("signature replayed\n");
        }
        Ok(())
    }
}

/// The keys a webhook names: `{"keys": [...]}`, or a CloudEvent (structured, with
/// `subject` and/or `data.keys`; binary, with the keys object as its body).
fn webhook_keys(headers: &HeaderMap, body: &[u8]) -> Result<Vec<String>, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON\n")?;
    let binary_cloud_event = headers.contains_key("ce-specversion");
    let mut keys = Vec::new();
    if !binary_cloud_event && value.get("specversion").is_some() {
        if let Some(subject) = value.get("subject").and_then(Value::as_str) {
            keys.push(subject.to_owned());
        }
        if let Some(data) = value.get("data") {
            keys.extend(listed_keys(data)?);
        }
    } else {
        keys.extend(listed_keys(&value)?);
    }
    Ok(keys)
}

fn listed_keys(value: &Value) -> Result<Vec<String>, &'static str> {
    match value.get("keys") {
        None => Ok(Vec::new()),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| {
                k.as_str()
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .ok_or("keys must be non-empty strings\n")
            })
            .collect(),
        Some(_) => Err("keys must be a list\n"),
    }
}

/// The secret a Secret Manager notification names, if it is one about a secret or its
/// versions (`SECRET_VERSION_ADD`, `SECRET_VERSION_ENABLE`, `SECRET_VERSION_DISABLE`,
/// `SECRET_VERSION_DESTROY`, `SECRET_UPDATE`, `SECRET_DELETE`, …). `secretId` is
/// `projects/<project number>/secrets/<name>`: the number is not the store's project ID,
/// so only the name is matched.
fn pubsub_keys(body: &[u8]) -> Result<Vec<String>, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON\n")?;
    let attributes = value
        .pointer("/message/attributes")
        .ok_or("not a Pub/Sub push (no message.attributes)\n")?;
    let event = attributes
        .get("eventType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !event.starts_with("SECRET_") {
        return Ok(Vec::new());
    }
    let name = attributes
        .get("secretId")
        .and_then(Value::as_str)
        .and_then(|id| id.rsplit_once("/secrets/"))
        .map(|(_, name)| name.to_owned())
        .ok_or("no secretId attribute\n")?;
    Ok(vec![name])
}

/// Event Grid's validation handshakes: the `SubscriptionValidation` event (answered with
/// its code) and the CloudEvents `OPTIONS` request (answered with the allowed origin).
fn event_grid_handshake(method: &Method, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    if method == Method::OPTIONS {
        let origin = headers
            .get("webhook-request-origin")
            .cloned()
            .unwrap_or(HeaderValue::from_static("*"));
        return Some((StatusCode::OK, [("webhook-allowed-origin", origin)], "").into_response());
    }
    let validating = headers
        .get("aeg-event-type")
        .is_some_and(|v| v == "SubscriptionValidation");
    if !validating {
        return None;
    }
    let events: Value = serde_json::from_slice(body).ok()?;
    let code = as_events(&events).into_iter().find_map(|e| {
        (e.get("eventType").and_then(Value::as_str)
            == Some("Microsoft.EventGrid.SubscriptionValidationEvent"))
        .then(|| {
            e.pointer("/data/validationCode")?
                .as_str()
                .map(str::to_owned)
        })
        .flatten()
    })?;
    let answer = serde_json::json!({"validationResponse": code});
    Some((StatusCode::OK, axum::Json(answer)).into_response())
}

/// An Event Grid delivery is an array of events; a CloudEvents one may be a single event.
fn as_events(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(events) => events.iter().collect(),
        event => vec![event],
    }
}

/// The secrets Key Vault's events name, for the store's vault: `SecretNewVersionCreated`
/// (Event Grid schema: `eventType`, `data.ObjectName`, `data.VaultName`; CloudEvents:
/// `type`, the same `data`). Other events change no secret's value.
fn event_grid_keys(spec: &SecretStoreSpec, body: &[u8]) -> Result<Vec<String>, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON\n")?;
    let vault = match &spec.provider {
        Provider::Azurekv(azure) => vault_name(&azure.vault_url),
        _ => None,
    };
    let mut keys = Vec::new();
    for event in as_events(&value) {
        let kind = event
            .get("eventType")
            .or_else(|| event.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != "Microsoft.KeyVault.SecretNewVersionCreated" {
            continue;
        }
        let data = event.get("data").ok_or("an event without data\n")?;
        let same_vault = data
            .get("VaultName")
            .and_then(Value::as_str)
            .is_none_or(|name| {
                vault
                    .as_deref()
                    .is_none_or(|v| v.eq_ignore_ascii_case(name))
            });
        if let Some(name) = data.get("ObjectName").and_then(Value::as_str)
            && same_vault
        {
            keys.push(name.to_owned());
        }
    }
    Ok(keys)
}

/// `https://<name>.vault.azure.net/` → `<name>`.
fn vault_name(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    Some(host.split('.').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_names_keys_plainly_or_as_a_cloud_event() {
        let plain = json!({"keys": ["app/db", "app/api"]}).to_string();
        assert_eq!(
            webhook_keys(&HeaderMap::new(), plain.as_bytes()).unwrap(),
            ["app/db", "app/api"]
        );
        let structured = json!({"specversion": "1.0", "type": "com.example.changed",
            "source": "/vault", "id": "1", "subject": "app/db", "data": {"keys": ["app/x"]}})
        .to_string();
        assert_eq!(
            webhook_keys(&HeaderMap::new(), structured.as_bytes()).unwrap(),
            ["app/db", "app/x"]
        );
        let mut binary = HeaderMap::new();
        binary.insert("ce-specversion", HeaderValue::from_static("1.0"));
        assert_eq!(webhook_keys(&binary, plain.as_bytes()).unwrap().len(), 2);
        assert!(webhook_keys(&HeaderMap::new(), b"{\"keys\": [1]}").is_err());
        assert!(webhook_keys(&HeaderMap::new(), b"not json").is_err());
    }

    #[test]
    fn a_secret_manager_notification_names_its_secret() {
        let push = |event: &str| {
            json!({"message": {"attributes": {"eventType": event,
                "secretId": "projects/123456/secrets/db-password", "dataFormat": "JSON_API_V1"},
                "data": "e30=", "messageId": "1"}, "subscription": "projects/p/subscriptions/s"})
            .to_string()
        };
        assert_eq!(
            pubsub_keys(push("SECRET_VERSION_ADD").as_bytes()).unwrap(),
            ["db-password"]
        );
        assert_eq!(
            pubsub_keys(push("SECRET_VERSION_DESTROY").as_bytes()).unwrap(),
            ["db-password"]
        );
        assert!(
            pubsub_keys(push("TOPIC_PING").as_bytes())
                .unwrap()
                .is_empty()
        );
        assert!(pubsub_keys(b"{}").is_err());
    }

    #[test]
    fn key_vault_events_name_new_versions_of_the_stores_vault_only() {
        let spec: SecretStoreSpec = serde_json::from_value(json!({"provider": {"azurekv": {
            "vaultUrl": "https://team-vault.vault.azure.net/",
            "tenantId": "t", "authSecretRef": {"clientId": {"name": "a", "key": "id"},
            "clientSecret": {"name": "a", "key": "secret"}}}}}))
        .unwrap();
        let event = |kind: &str, vault: &str| {
            json!({"id": "1", "topic": "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/x",
                "subject": "db", "eventType": kind, "eventTime": "2026-12-07T10:00:00Z",
                "data": {"Id": "https://x.vault.azure.net/secrets/db/abc", "VaultName": vault,
                    "ObjectType": "Secret", "ObjectName": "db", "Version": "abc"},
                "dataVersion": "1", "metadataVersion": "1"})
        };
        let body = json!([
            event("Microsoft.KeyVault.SecretNewVersionCreated", "team-vault"),
            event("Microsoft.KeyVault.SecretNewVersionCreated", "other-vault"),
            event("Microsoft.KeyVault.SecretNearExpiry", "team-vault"),
        ])
        .to_string();
        assert_eq!(event_grid_keys(&spec, body.as_bytes()).unwrap(), ["db"]);
        let cloud = json!({"specversion": "1.0", "type": "Microsoft.KeyVault.SecretNewVersionCreated",
            "source": "x", "id": "1", "subject": "db", "data": {"VaultName": "team-vault", "ObjectName": "db"}})
        .to_string();
        assert_eq!(event_grid_keys(&spec, cloud.as_bytes()).unwrap(), ["db"]);
    }

    #[test]
    fn event_grid_validation_is_answered_with_its_code() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "aeg-event-type",
            HeaderValue::from_static("SubscriptionValidation"),
        );
        let body =
            json!([{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": "512d38b6", "validationUrl": "https://example.invalid"},
            "subject": "", "eventTime": "2026-12-07T10:00:00Z", "dataVersion": "1"}])
            .to_string();
        let answer = event_grid_handshake(&Method::POST, &headers, body.as_bytes()).unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(event_grid_handshake(&Method::POST, &HeaderMap::new(), body.as_bytes()).is_none());
        let mut options = HeaderMap::new();
        options.insert(
            "webhook-request-origin",
            HeaderValue::from_static("eventgrid.azure.net"),
        );
        let answer = event_grid_handshake(&Method::OPTIONS, &options, b"").unwrap();
        assert_eq!(
            answer.headers().get("webhook-allowed-origin").unwrap(),
            "eventgrid.azure.net"
        );
    }

    #[test]
    fn a_vault_is_named_by_its_host() {
        assert_eq!(
            vault_name("https://team-vault.vault.azure.net/").as_deref(),
            Some("team-vault")
        );
    }
}
