//! **A test double of CyberArk Conjur — not a Conjur server** (none can be had here). It
//! answers exactly the REST calls secretsync's `conjur` provider makes, written from
//! Conjur's published API reference (<https://docs.cyberark.com/conjur-open-source/latest/en/Content/Developer/Conjur_API_Overview.htm>),
//! over TLS on 127.0.0.1 ([`crate::tls_server`]):
//!
//! | endpoint | answers |
//! |---|---|
//! | `POST /authn/{account}/{login}/authenticate`, body the API key | an access token (base64 with `Accept-Encoding: base64`, else its JSON); 401 for a wrong login or key |
//! | `POST /authn-jwt/{service}/{account}[/{host}]/authenticate`, form `jwt=` | an access token when the JWT verifies against the JWKS the test gave ([`ConjurDouble::enable_jwt`]: ES256 or RS256), is in date, has the audience, and its `sub` is a host's (the URL's host, when given); else 401 |
//! | `GET /secrets/{account}/variable/{id}[?version=N]` | the value's bytes; 404 unknown variable or version; 403 denied |
//! | `GET /secrets?variable_ids=a:variable:x,…` | `{"a:variable:x": value}`, base64 values with `Accept: base64` (else a binary value is a 500, as Conjur's); 404 when any is unknown |
//! | `GET /resources/{account}?kind=variable&search=&limit=&offset=` | `[{id, kind, annotations: [{name, value}]}]` in id order, `search` a substring of the id |
//! | `GET /whoami` | `{account, username}` |
//!
//! Every call but a login needs `Authorization: Token token="<base64 token>"` with a token it
//! issued that has not expired (8 minutes, or [`ConjurDouble::expire_tokens`]): else 401.
//! Errors are `{"error": {"code", "message"}}`. Tests seed variables (each value a new
//! version), annotate them, deny reads, replace the API key, take the server down and up,
//! and count value reads and logins.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::tls_server::{Counted, Double, respond};

/// The Conjur account (organization) the double serves.
pub const ACCOUNT: &str = "secretsync";
/// The host that logs in with an API key.
pub const HOST: &str = "host/apps/secretsync";
/// Its API key, as the double starts.
pub const API_KEY: &str = "3x7kq2m9double-api-key";
/// How long an access token lives (Conjur's 8 minutes).
const TOKEN_LIFE: Duration = Duration::from_secs(8 * 60);

/// An `authn-jwt` authenticator.
struct JwtAuthenticator {
    audience: String,
    jwks: Value,
    /// `sub` claim → the host it logs in as.
    hosts: BTreeMap<String, String>,
}

#[derive(Default)]
struct Variable {
    versions: Vec<Vec<u8>>,
    annotations: BTreeMap<String, String>,
}

/// The double's state (its fields are its own).
#[derive(Default)]
pub struct State {
    api_keys: BTreeMap<String, String>,
    jwt: BTreeMap<String, JwtAuthenticator>,
    tokens: BTreeMap<String, (String, Instant)>,
    variables: BTreeMap<String, Variable>,
    denied: bool,
    issued: u64,
}

/// What the double keeps, under [`Double`]'s lock.
type Shared = Counted<State>;

/// A running double, stopped when dropped.
pub type ConjurDouble = Double<State>;

impl ConjurDouble {
    /// Starts the double, knowing [`HOST`] with [`API_KEY`]. `None` when the throwaway CA
    /// cannot be made (no `openssl` and SECRETSYNC_SKIP_TOOLS set).
    pub async fn start() -> Option<ConjurDouble> {
        let mut state = State::default();
        state.api_keys.insert(HOST.to_owned(), API_KEY.to_owned());
        Double::serve(state, handle).await
    }

    /// Stores `value` as the next version of variable `id` (creating it); returns the
    /// version's number.
    pub fn set_value(&self, id: &str, value: &[u8]) -> usize {
        let mut state = self.state();
        let variable = state.variables.entry(id.to_owned()).or_default();
        variable.versions.push(value.to_vec());
        variable.versions.len()
    }

    /// Sets annotation `name` of variable `id` (creating it without a value).
    pub fn annotate(&self, id: &str, name: &str, value: &str) {
        let mut state = self.state();
        let variable = state.variables.entry(id.to_owned()).or_default();
        variable
            .annotations
            .insert(name.to_owned(), value.to_owned());
    }

    /// Enables the `authn-jwt/{service}` authenticator: JWTs signed by a key of `jwks`, for
    /// `audience`, whose `sub` is a key of `hosts`, log in as its host.
    pub fn enable_jwt(&self, service: &str, audience: &str, jwks: Value, hosts: &[(&str, &str)]) {
        let hosts = hosts
            .iter()
            .map(|(sub, host)| ((*sub).to_owned(), (*host).to_owned()))
            .collect();
        self.state().jwt.insert(
            service.to_owned(),
            JwtAuthenticator {
                audience: audience.to_owned(),
                jwks,
                hosts,
            },
        );
    }

    /// Replaces the API key of `login` (rotating it), and forgets every token.
    pub fn set_api_key(&self, login: &str, key: &str) {
        let mut state = self.state();
        state.api_keys.insert(login.to_owned(), key.to_owned());
        state.tokens.clear();
    }

    /// Every issued token expires now.
    pub fn expire_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Denies (or allows again) reading any variable: 403, as when a host loses `execute`.
    pub fn deny(&self, denied: bool) {
        self.state().denied = denied;
    }
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"error": {"code": code, "message": message}});
    respond(status, "application/json", body.to_string())
}

fn json_ok(body: &Value) -> Response<Full<Bytes>> {
    respond(200, "application/json", body.to_string())
}

fn percent_decode(segment: &str) -> String {
    let bytes: Vec<u8> =
        form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn handle(shared: &Shared, request: Request<Bytes>) -> Response<Full<Bytes>> {
    let path: Vec<String> = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut state = shared.state.lock().unwrap();
    if request.method() == Method::POST {
        let host = match path.as_slice() {
            ["authn", ACCOUNT, login, "authenticate"] => {
                let key = String::from_utf8_lossy(request.body());
                state
                    .api_keys
                    .get(*login)
                    .filter(|k| *k == key.trim())
                    .map(|_| (*login).to_owned())
                    .ok_or_else(|| "wrong login or API key".to_owned())
            }
            ["authn-jwt", service, ACCOUNT, rest @ ..] if rest.last() == Some(&"authenticate") => {
                jwt_login(
                    &state,
                    service,
                    rest.first().filter(|_| rest.len() == 2).copied(),
                    request.body(),
                )
            }
            _ => return error(404, "not_found", "no such endpoint"),
        };
        return match host {
            Ok(host) => {
                shared.logins.fetch_add(1, Ordering::SeqCst);
                issue(&mut state, &host, request.headers())
            }
            Err(_) => respond(401, "text/plain", "Unauthorized"),
        };
    }
    let Some(host) = authorized(&mut state, request.headers()) else {
        return respond(401, "text/plain", "Unauthorized");
    };
    let base64 = request
        .headers()
        .get("accept")
        .is_some_and(|a| a.as_bytes() == b"base64");
    match path.as_slice() {
        ["whoami"] => json_ok(&json!({"account": ACCOUNT, "username": host})),
        ["secrets", ACCOUNT, "variable", id @ ..] => {
            let id = id.join("/");
            read_one(shared, &state, &id, query.get("version"))
        }
        ["secrets"] => read_batch(shared, &state, query.get("variable_ids"), base64),
        ["resources", ACCOUNT] => list(&state, &query),
        _ => error(404, "not_found", "no such endpoint"),
    }
}

/// A new access token for `host`, as Conjur sends it.
fn issue(state: &mut State, host: &str, headers: &hyper::HeaderMap) -> Response<Full<Bytes>> {
    state.issued += 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let payload = STANDARD.encode(json!({"sub": host, "iat": now, "exp": now + 480}).to_string());
    let token = json!({
        "protected": STANDARD.encode(r#"{"alg":"conjur.org/slosilo/v2","kid":"double"}"#),
        "payload": payload,
        "signature": STANDARD.encode(format!("double-{}-{now}", state.issued)),
    })
    .to_string();
    let encoded = STANDARD.encode(&token);
    state
        .tokens
        .insert(encoded.clone(), (host.to_owned(), Instant::now()));
    if headers
        .get("accept-encoding")
        .is_some_and(|a| a.as_bytes() == b"base64")
    {
        respond(200, "text/plain", encoded)
    } else {
        respond(200, "application/json", token)
    }
}

/// The host whose unexpired token the request carries.
fn authorized(state: &mut State, headers: &hyper::HeaderMap) -> Option<String> {
    let header = headers.get("authorization")?.to_str().ok()?;
    let token = header.strip_prefix("Token token=\"")?.strip_suffix('"')?;
    let (host, at) = state.tokens.get(token)?;
    (at.elapsed() < TOKEN_LIFE).then(|| host.clone())
}

/// The host a JWT logs in as at `authn-jwt/{service}`, or why not.
fn jwt_login(
    state: &State,
    service: &str,
    url_host: Option<&str>,
    body: &[u8],
) -> Result<String, String> {
    let authenticator = state.jwt.get(service).ok_or("authenticator not enabled")?;
    let jwt = form_urlencoded::parse(body)
        .find(|(k, _)| k == "jwt")
        .map(|(_, v)| v.into_owned())
        .ok_or("no jwt in the form")?;
    let claims = check_claims(&jwt, &authenticator.jwks, &authenticator.audience)?;
    let sub = claims["sub"].as_str().unwrap_or_default();
    let host = authenticator
        .hosts
        .get(sub)
        .ok_or("no host for the JWT's sub")?;
    if url_host.is_some_and(|h| h != host) {
        return Err("the JWT's sub is not the host's".into());
    }
    Ok(host.clone())
}

/// The claims of `jwt` when a key of `jwks` signed it, it has not expired, and `audience`
/// is one of its audiences: what an identity provider checks of a ServiceAccount token.
pub fn check_claims(jwt: &str, jwks: &Value, audience: &str) -> Result<Value, String> {
    let claims = verify_jwt(jwt, jwks)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("the JWT expired".into());
    }
    let has_audience = match &claims["aud"] {
        Value::String(aud) => aud == audience,
        Value::Array(auds) => auds.iter().any(|a| a == audience),
        _ => false,
    };
    if !has_audience {
        return Err(format!("the JWT is not for audience {audience:?}"));
    }
    Ok(claims)
}

/// The claims of `jwt` when a key of `jwks` signed it (ES256 or RS256).
fn verify_jwt(jwt: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, sig] = parts.as_slice() else {
        return Err("not a JWT".into());
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "bad base64url".to_owned())
    };
    let signed = format!("{head}.{claims}");
    let sig = decode(sig)?;
    let verified = jwks["keys"].as_array().into_iter().flatten().any(|key| {
        let part = |name: &str| {
            key[name]
                .as_str()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        };
        match key["kty"].as_str() {
            Some("EC") => {
                let (Some(x), Some(y)) = (part("x"), part("y")) else {
                    return false;
                };
                let point = [&[4u8][..], &x, &y].concat();
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            }
            Some("RSA") => {
                let (Some(n), Some(e)) = (part("n"), part("e")) else {
                    return false;
                };
                RsaPublicKeyComponents { n, e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        signed.as_bytes(),
                        &sig,
                    )
                    .is_ok()
            }
            _ => false,
        }
    });
    if !verified {
        return Err("the JWT's signature does not verify".into());
    }
    serde_json::from_slice(&decode(claims)?).map_err(|_| "bad claims".into())
}

fn read_one(
    shared: &Shared,
    state: &State,
    id: &str,
    version: Option<&String>,
) -> Response<Full<Bytes>> {
    if state.denied {
        return error(403, "forbidden", "Forbidden");
    }
    let Some(variable) = state.variables.get(id) else {
        return error(
            404,
            "not_found",
            &format!("Variable {id} is empty or not found."),
        );
    };
    let number = match version {
        Some(v) => v.parse::<usize>().unwrap_or(0),
        None => variable.versions.len(),
    };
    let Some(value) = number.checked_sub(1).and_then(|i| variable.versions.get(i)) else {
        return error(
            404,
            "not_found",
            &format!("Requested version does not exist for {id}"),
        );
    };
    shared.reads.fetch_add(1, Ordering::SeqCst);
    respond(200, "application/octet-stream", value.clone())
}

fn read_batch(
    shared: &Shared,
    state: &State,
    ids: Option<&String>,
    base64: bool,
) -> Response<Full<Bytes>> {
    if state.denied {
        return error(403, "forbidden", "Forbidden");
    }
    let prefix = format!("{ACCOUNT}:variable:");
    let mut values = serde_json::Map::new();
    for full in ids.map(String::as_str).unwrap_or_default().split(',') {
        let value = full
            .strip_prefix(&prefix)
            .and_then(|id| state.variables.get(id))
            .and_then(|v| v.versions.last());
        let Some(value) = value else {
            return error(
                404,
                "not_found",
                &format!("Variable {full} is empty or not found."),
            );
        };
        let text = if base64 {
            STANDARD.encode(value)
        } else {
            match String::from_utf8(value.clone()) {
                Ok(text) => text,
                Err(_) => return error(500, "internal", "binary value without Accept: base64"),
            }
        };
        values.insert(full.to_owned(), Value::String(text));
    }
    shared
        .reads
        .fetch_add(values.len() as u64, Ordering::SeqCst);
    json_ok(&Value::Object(values))
}

fn list(state: &State, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    if query.get("kind").is_some_and(|k| k != "variable") {
        return json_ok(&json!([]));
    }
    let search = query.get("search").cloned().unwrap_or_default();
    let offset: usize = query
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000);
    let page: Vec<Value> = state
        .variables
        .iter()
        .filter(|(id, _)| id.contains(&search))
        .skip(offset)
        .take(limit)
        .map(|(id, variable)| {
            let annotations: Vec<Value> = variable
                .annotations
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            json!({"id": format!("{ACCOUNT}:variable:{id}"), "kind": "variable", "annotations": annotations})
        })
        .collect();
    json_ok(&Value::Array(page))
}
