//! **A test double of Akeyless's REST API v2 — not Akeyless** (no server or gateway can be
//! had here). It answers exactly the calls secretsync's `akeyless` provider makes, written
//! from Akeyless's published API reference (<https://docs.akeyless.io/reference>), over TLS
//! on 127.0.0.1 ([`crate::tls_server`]). Every body is JSON and every call but `/auth`
//! carries its `token` in the body:
//!
//! | endpoint | answers |
//! |---|---|
//! | `POST /auth` `access-type: access_key` | `{"token": "t-…"}` for [`ACCESS_ID`] with its current access key; else 401 |
//! | `POST /auth` `access-type: k8s` | a token when `k8s-auth-config-name` is the configured one and `k8s-service-account-token` is the base64 of a JWT the cluster's JWKS verifies, in date, for the configured audience, from the allowed `sub`; else 401 |
//! | `POST /auth` `access-type: jwt` | the same checks on `jwt` (not base64-wrapped) |
//! | `POST /get-secret-value` `{names, version?}` | `{name: value}`; 404 unknown item or version; 403 denied |
//! | `POST /list-items` `{path, type, pagination-token?}` | `{items: [{item_name, item_type, item_tags}], next_page}`, items under `path`, two per page |
//!
//! A token unknown or expired ([`AkeylessDouble::expire_tokens`]) is 401; errors are
//! `{"error": "…"}`. Tests seed items (each value a new version), tag them, deny reads,
//! rotate the access key, take the API down and up, and count value reads and logins.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::tls_server::{Counted, Double, respond};

/// The access id of every auth method the double knows.
pub const ACCESS_ID: &str = "p-secretsync0001";
/// Its access key, as the double starts.
pub const ACCESS_KEY: &str = "akl-double-access-key-4q8w";
/// Items listed per page.
const PAGE: usize = 2;

/// What a ServiceAccount token must be to log in (`k8s` or `jwt`).
struct TokenRule {
    jwks: Value,
    audience: String,
    sub: String,
    /// `k8s` only: the gateway's Kubernetes auth config name.
    config: Option<String>,
}

#[derive(Default)]
struct Item {
    versions: Vec<String>,
    tags: Vec<String>,
}

/// The double's state (its fields are its own).
#[derive(Default)]
pub struct State {
    access_key: String,
    rules: Vec<TokenRule>,
    tokens: Vec<String>,
    items: BTreeMap<String, Item>,
    denied: bool,
}

/// What the double keeps, under [`Double`]'s lock.
type Shared = Counted<State>;

/// A running double, stopped when dropped.
pub type AkeylessDouble = Double<State>;

impl AkeylessDouble {
    /// Starts the double. `None` when the throwaway CA cannot be made.
    pub async fn start() -> Option<AkeylessDouble> {
        let state = State {
            access_key: ACCESS_KEY.to_owned(),
            ..State::default()
        };
        Double::serve(state, handle).await
    }

    /// Stores `value` as the next version of item `name` (a full name, `/a/b`), replacing
    /// its tags when `tags` is not empty; returns the version's number.
    pub fn set_value(&self, name: &str, value: &str, tags: &[&str]) -> usize {
        let mut state = self.state();
        let item = state.items.entry(name.to_owned()).or_default();
        item.versions.push(value.to_owned());
        if !tags.is_empty() {
            item.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        }
        item.versions.len()
    }

    /// Lets ServiceAccount tokens log in: signed by a key of `jwks`, for `audience`, with
    /// `sub`; through the Kubernetes auth config `config`, or as JWT auth when `None`.
    pub fn allow_service_account(
        &self,
        jwks: Value,
        audience: &str,
        sub: &str,
        config: Option<&str>,
    ) {
        self.state().rules.push(TokenRule {
            jwks,
            audience: audience.to_owned(),
            sub: sub.to_owned(),
            config: config.map(str::to_owned),
        });
    }

    /// Replaces the access key (rotated in Akeyless) and forgets every token.
    pub fn set_access_key(&self, key: &str) {
        let mut state = self.state();
        state.access_key = key.to_owned();
        state.tokens.clear();
    }

    /// Every issued token expires now.
    pub fn expire_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Denies (or allows again) reading values: 403.
    pub fn deny(&self, denied: bool) {
        self.state().denied = denied;
    }
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({"error": message}).to_string(),
    )
}

fn ok(body: &Value) -> Response<Full<Bytes>> {
    respond(200, "application/json", body.to_string())
}

fn handle(shared: &Shared, request: Request<Bytes>) -> Response<Full<Bytes>> {
    let Ok(body) = serde_json::from_slice::<Value>(request.body()) else {
        return error(400, "the body is not JSON");
    };
    let mut state = shared.state.lock().unwrap();
    let path = request.uri().path().to_owned();
    if path == "/auth" {
        return match auth(&state, &body) {
            Ok(()) => {
                let n = shared.logins.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("t-double-{n}-{}", STANDARD.encode(n.to_be_bytes()));
                state.tokens.push(token.clone());
                ok(&json!({"token": token}))
            }
            Err(why) => error(401, &format!("failed to authenticate: {why}")),
        };
    }
    if !body["token"]
        .as_str()
        .is_some_and(|t| state.tokens.iter().any(|k| k == t))
    {
        return error(401, "Unauthorized: the token is invalid or expired");
    }
    match path.as_str() {
        "/get-secret-value" => get_value(shared, &state, &body),
        "/list-items" => list(&state, &body),
        _ => error(404, "no such endpoint"),
    }
}

fn auth(state: &State, body: &Value) -> Result<(), String> {
    if body["access-id"] != ACCESS_ID {
        return Err("unknown access id".into());
    }
    let (jwt, config) = match body["access-type"].as_str() {
        Some("access_key") => {
            return (body["access-key"] == state.access_key.as_str())
                .then_some(())
                .ok_or_else(|| "wrong access key".into());
        }
        Some("k8s") => {
            let token = body["k8s-service-account-token"]
                .as_str()
                .unwrap_or_default();
            let token = STANDARD
                .decode(token)
                .map_err(|_| "the token is not base64")?;
            let token = String::from_utf8(token).map_err(|_| "the token is not text")?;
            (token, body["k8s-auth-config-name"].as_str())
        }
        Some("jwt") => (body["jwt"].as_str().unwrap_or_default().to_owned(), None),
        _ => return Err("unknown access type".into()),
    };
    let mut why = "no auth method of that kind".to_owned();
    for rule in state.rules.iter().filter(|r| r.config.as_deref() == config) {
        match crate::conjur_double::check_claims(&jwt, &rule.jwks, &rule.audience) {
            Ok(claims) if claims["sub"] == rule.sub.as_str() => return Ok(()),
            Ok(_) => why = "the token's sub is not allowed".into(),
            Err(e) => why = e,
        }
    }
    Err(why)
}

fn get_value(shared: &Shared, state: &State, body: &Value) -> Response<Full<Bytes>> {
    if state.denied {
        return error(403, "Unauthorized: access denied to the item");
    }
    let mut values = serde_json::Map::new();
    for name in body["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let Some(item) = state.items.get(name) else {
            return error(404, &format!("item {name} not found"));
        };
        let number = body["version"]
            .as_u64()
            .map_or(item.versions.len(), |v| v as usize);
        let Some(value) = number.checked_sub(1).and_then(|i| item.versions.get(i)) else {
            return error(404, &format!("version {number} of item {name} not found"));
        };
        values.insert(name.to_owned(), Value::String(value.clone()));
    }
    shared
        .reads
        .fetch_add(values.len() as u64, Ordering::SeqCst);
    ok(&Value::Object(values))
}

fn list(state: &State, body: &Value) -> Response<Full<Bytes>> {
    let folder = body["path"].as_str().unwrap_or("/").trim_end_matches('/');
    let offset: usize = body["pagination-token"]
        .as_str()
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let under: Vec<(&String, &Item)> = state
        .items
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix(folder)
                .is_some_and(|r| r.starts_with('/'))
        })
        .collect();
    let items: Vec<Value> = under
        .iter()
        .skip(offset)
        .take(PAGE)
        .map(|(name, item)| json!({"item_name": name, "item_type": "STATIC_SECRET", "item_tags": item.tags}))
        .collect();
    let next = if offset + PAGE < under.len() {
        format!("page-{}", offset + PAGE)
    } else {
        String::new()
    };
    ok(&json!({"items": items, "next_page": next}))
}
