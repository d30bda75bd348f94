//! **A test double of Azure Key Vault and Entra ID — not a real server.** No Key Vault
//! emulator exists in any registry we reach, so this serves just the REST endpoints the
//! official Rust SDK (`azure_security_keyvault_secrets`, `azure_identity`) calls, written
//! from Microsoft's published REST reference, on 127.0.0.1 over TLS (the SDK sends bearer
//! tokens to `https` only) with a throwaway CA from [`crate::pki`]:
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /secrets/{name}/{version}?api-version=…` (empty version: latest) | `{value, id, attributes, tags}`; 404 `SecretNotFound`; 403 `Forbidden` (disabled secret, or [`AzureDouble::deny`]) |
//! | `GET /secrets?api-version=…&maxresults=N` (+ `$skiptoken`) | `{value: [{id, attributes, tags}], nextLink}` |
//! | any of the above without `Authorization` | 401 with `WWW-Authenticate: Bearer authorization="…/{tenant}", resource="https://vault.azure.net"` (Key Vault's challenge) |
//! | … with an unknown bearer token | 401 `Unauthorized` with the challenge |
//! | `POST /{tenant}/oauth2/v2.0/token` (form: `client_credentials` with `client_secret`, or `client_assertion`) | `{token_type, expires_in, access_token}`; 400/401 `{error, error_description, error_codes}` |
//!
//! Errors are `{"error":{"code","message"}}` with Key Vault's status codes. The vault and
//! the authority share one listener: `vaultUrl` and `authorityHost` are both
//! [`AzureDouble::url`]. Its challenge names the real `vault.azure.net` resource, which no
//! `127.0.0.1` URL belongs to, so stores pointed here set `verifyChallengeResource: false`
//! (and a store that does not is refused, as against a look-alike vault).
//!
//! Tests seed and change it ([`AzureDouble::set_secret`] makes a new version), count value
//! reads ([`AzureDouble::reads`]), deny access, and take it down and up again.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;
use crate::serving::Serving;
use crate::tls_server;

/// The tenant, service principal and workload identity the double knows.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "0b5c6f3e-1d2a-4c8b-9e7f-3a4b5c6d7e8f";
pub const CLIENT_SECRET: &str = "double-client-secret";
/// The client id of a federated (workload) identity: any non-empty client assertion is
/// accepted for it.
pub const WORKLOAD_CLIENT_ID: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
/// The `api-version` the SDK sends (`azure_security_keyvault_secrets` 1.1.0-beta.1); others
/// are refused like Key Vault refuses unknown versions.
const API_VERSIONS: &[&str] = &["2025-07-01", "2026-03-01-preview"];

/// One version of a secret.
struct Version {
    id: String,
    value: String,
    created: u64,
}

struct StoredSecret {
    versions: Vec<Version>,
    tags: BTreeMap<String, String>,
    enabled: bool,
}

#[derive(Default)]
struct State {
    secrets: BTreeMap<String, StoredSecret>,
    tokens: HashSet<String>,
    client_secret: String,
    /// Every vault operation answers 403, as after a role assignment was removed.
    denied: bool,
    next: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Value reads answered with 200.
    reads: AtomicU64,
    /// Token requests answered with a token.
    tokens_issued: AtomicU64,
    base: String,
}

/// A running double, stopped when dropped.
pub struct AzureDouble {
    shared: Arc<Shared>,
    serving: Serving,
    acceptor: TlsAcceptor,
    pki: TestPki,
}

impl AzureDouble {
    /// Starts the double on a free port. `None` when `openssl` (for the throwaway CA) is
    /// missing and SECRETSYNC_SKIP_TOOLS is set.
    pub async fn start() -> Option<AzureDouble> {
        let pki = TestPki::generate()?;
        let (serving, listener) = Serving::bind().await;
        let addr = serving.addr();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client_secret: CLIENT_SECRET.to_owned(),
                ..State::default()
            }),
            reads: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            base: format!("https://{addr}"),
        });
        let double = AzureDouble {
            shared,
            serving,
            acceptor: tls_server::acceptor(&pki),
            pki,
        };
        double.serve(listener);
        Some(double)
    }

    fn serve(&self, listener: TcpListener) {
        let acceptor = self.acceptor.clone();
        let shared = self.shared.clone();
        let mut connections = JoinSet::new();
        self.serving.run(async move {
            // Connections live in this task's set: aborting it closes them all.
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
    }

    /// `https://127.0.0.1:PORT`: the `vaultUrl` and the `authorityHost`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The CA that signed the double's certificate, base64 PEM (a store's `caBundle`).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pki.ca_pem())
    }

    /// Stores `value` as a new version of `name` (creating it), with `tags` replacing its
    /// tags; returns the new version's id.
    pub fn set_secret(&self, name: &str, value: &str, tags: &[(&str, &str)]) -> String {
        let mut state = self.shared.state.lock().unwrap();
        state.next += 1;
        // 32 lowercase hex digits, like Key Vault's version ids.
        let id = format!(
            "{:016x}{:016x}",
            state.next.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            u64::from(self.serving.addr().port()) << 32 | state.next
        );
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let secret = state
            .secrets
            .entry(name.to_owned())
            .or_insert_with(|| StoredSecret {
                versions: Vec::new(),
                tags: BTreeMap::new(),
                enabled: true,
            });
        secret.versions.push(Version {
            id: id.clone(),
            value: value.to_owned(),
            created,
        });
        secret.tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        id
    }

    /// Enables or disables a secret (a disabled one is not readable: 403 `SecretDisabled`).
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        let mut state = self.shared.state.lock().unwrap();
        if let Some(secret) = state.secrets.get_mut(name) {
            secret.enabled = enabled;
        }
    }

    /// Makes every vault operation answer 403 `Forbidden` (`deny(true)`), as when the
    /// identity lost its role assignment, or lifts that.
    pub fn deny(&self, denied: bool) {
        self.shared.state.lock().unwrap().denied = denied;
    }

    /// Changes the service principal's client secret and forgets every issued token.
    pub fn set_client_secret(&self, secret: &str) {
        let mut state = self.shared.state.lock().unwrap();
        state.client_secret = secret.to_owned();
        state.tokens.clear();
    }

    /// Value reads (`GET /secrets/{name}/…` answered with 200) so far.
    pub fn reads(&self) -> u64 {
        self.shared.reads.load(Ordering::SeqCst)
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Goes down: the listener and every open connection close, so connections are
    /// refused.
    pub fn go_down(&self) {
        self.serving.go_down();
    }

    /// Comes back on the same port, with the same contents.
    pub async fn come_back(&self) {
        self.serve(self.serving.rebind().await);
    }
}

impl std::fmt::Debug for AzureDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureDouble")
            .field("url", &self.shared.base)
            .finish_non_exhaustive()
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// Key Vault's error body.
fn kv_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// 401 with Key Vault's authentication challenge.
fn challenge(base: &str, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = kv_error(StatusCode::UNAUTHORIZED, code, message);
    let value =
        format!("Bearer authorization=\"{base}/{TENANT}\", resource=\"https://vault.azure.net\"");
    response
        .headers_mut()
        .insert("www-authenticate", value.parse().expect("header value"));
    response
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if request.method() == Method::POST && path.ends_with("/oauth2/v2.0/token") {
        let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let tenant = tenant.to_owned();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return token(shared, &tenant, &body);
    }
    if !path.starts_with("/secrets") {
        return kv_error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint");
    }
    let query = query(&request);
    if !query
        .get("api-version")
        .is_some_and(|v| API_VERSIONS.contains(&v.as_str()))
    {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The specified version of the api-version parameter is not supported",
        );
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let state = shared.state.lock().unwrap();
    let Some(bearer) = bearer else {
        return challenge(
            &shared.base,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    };
    if !state.tokens.contains(&bearer) {
        return challenge(
            &shared.base,
            "Unauthorized",
            "AKV10032: Invalid issuer or token.",
        );
    }
    if state.denied {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": {
                "code": "Forbidden",
                "message": "Caller is not authorized to perform action on resource.",
                "innererror": {"code": "ForbiddenByRbac"},
            }}),
        );
    }
    if request.method() != Method::GET {
        return kv_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadParameter",
            "the double serves reads only",
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["secrets"] => list(shared, &state, &query),
        ["secrets", name] => get(shared, &state, name, ""),
        ["secrets", name, version] => get(shared, &state, name, version),
        _ => kv_error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
    }
}

fn attributes(secret: &StoredSecret, version: &Version) -> Value {
    json!({
        "enabled": secret.enabled,
        "created": version.created,
        "updated": version.created,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    })
}

fn get(shared: &Shared, state: &State, name: &str, version: &str) -> Response<Full<Bytes>> {
    let not_found = || {
        kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name}/{version} was not found in this key vault. If \
                 you recently deleted this secret you may be able to recover it using the \
                 correct recovery command."
            ),
        )
    };
    let Some(secret) = state.secrets.get(name) else {
        return not_found();
    };
    let found = if version.is_empty() {
        secret.versions.last()
    } else {
        secret.versions.iter().find(|v| v.id == version)
    };
    let Some(found) = found else {
        return not_found();
    };
    if !secret.enabled {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": {
                "code": "Forbidden",
                "message": "Operation get is not allowed on a disabled secret.",
                "innererror": {"code": "SecretDisabled"},
            }}),
        );
    }
    shared.reads.fetch_add(1, Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &json!({
            "value": found.value,
            "id": format!("{}/secrets/{name}/{}", shared.base, found.id),
            "attributes": attributes(secret, found),
            "tags": secret.tags,
        }),
    )
}

fn list(shared: &Shared, state: &State, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let page_size: usize = query
        .get("maxresults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(25)
        .clamp(1, 25);
    let skip: usize = query
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = state
        .secrets
        .iter()
        .skip(skip)
        .take(page_size)
        .filter_map(|(name, secret)| {
            let latest = secret.versions.last()?;
            Some(json!({
                "id": format!("{}/secrets/{name}", shared.base),
                "attributes": attributes(secret, latest),
                "tags": secret.tags,
            }))
        })
        .collect();
    let next = skip + page_size;
    let next_link = (next < state.secrets.len()).then(|| {
        format!(
            "{}/secrets?api-version={}&$skiptoken={next}&maxresults={page_size}",
            shared.base, API_VERSIONS[0]
        )
    });
    json_response(
        StatusCode::OK,
        &json!({"value": page, "nextLink": next_link}),
    )
}

/// Whether `assertion` is a JWT for the audience Azure Workload Identity's federated
/// credentials trust. (Entra ID also checks the issuer and subject against the federated
/// credential; the double trusts any issuer.)
fn federated_audience(assertion: &str) -> bool {
    let Some(payload) = assertion.split('.').nth(1) else {
        return false;
    };
    let Ok(payload) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<Value>(&payload) else {
        return false;
    };
    let audience = "api://AzureADTokenExchange";
    match &claims["aud"] {
        Value::String(aud) => aud == audience,
        Value::Array(auds) => auds.iter().any(|a| a == audience),
        _ => false,
    }
}

/// Entra ID's error body.
fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
        }),
    )
}

fn token(shared: &Shared, tenant: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if tenant != TENANT {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("scope") != "https://vault.azure.net/.default" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let mut state = shared.state.lock().unwrap();
    let accepted = match field("client_id") {
        CLIENT_ID => field("client_secret") == state.client_secret,
        WORKLOAD_CLIENT_ID => {
            field("client_assertion_type")
                == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                && federated_audience(field("client_assertion"))
        }
        other => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{other}' was not found in the directory."),
            );
        }
    };
    if !accepted {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is \
             the client secret value, not the client secret ID.",
        );
    }
    state.next += 1;
    let access_token = format!("double-token-{}", state.next);
    state.tokens.insert(access_token.clone());
    shared.tokens_issued.fetch_add(1, Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }),
    )
}
