//! **A test double of Google Cloud Secret Manager** — not Google's server and not an
//! emulator (none exists in any registry we reach). It implements exactly the REST
//! endpoints secretsync's `gcpsm` provider calls through Google's official Rust client,
//! written from Google's published API reference
//! (<https://cloud.google.com/secret-manager/docs/reference/rest>):
//!
//! - `GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access`
//!   (`AccessSecretVersion`; `{version}` a number or `latest`) → `{"name":
//!   "projects/{number}/secrets/{secret}/versions/{n}", "payload": {"data": base64,
//!   "dataCrc32c": "decimal int64"}}`; a disabled version is `FAILED_PRECONDITION`.
//! - `GET /v1/projects/{project}/secrets?pageSize=&pageToken=&filter=` (`ListSecrets`) →
//!   `{"secrets": [{"name", "labels", "createTime", "replication", "etag"}],
//!   "nextPageToken", "totalSize"}`, in name order; `filter` understands `labels.KEY=VALUE`
//!   and `name:TEXT` terms joined by spaces or `AND` (anything else is `INVALID_ARGUMENT`).
//!
//! Every request needs `Authorization: Bearer <token>`. Google's Rust auth crate does not
//! exchange a service-account key at the key's `token_uri`: it signs a JWT itself (RS256,
//! `kid` the key id, `iss`/`sub` the account, `scope` cloud-platform) and sends that as the
//! bearer token. The double checks it like Google does: signature against the public half of
//! [`TEST_KEY_PEM`], an account it knows, the key id, the scope and the expiry; else `401
//! UNAUTHENTICATED`. A denied account gets `403 PERMISSION_DENIED`. Errors are Google's
//! shape, `{"error": {"code", "message", "status"}}` with the matching HTTP status; the
//! project answers by its number in names, as Google does.
//!
//! Tests seed and change it while it serves: add versions, set labels, deny an account,
//! disable a version, go down (`503 UNAVAILABLE` to everything), and count the
//! `AccessSecretVersion` calls it served. It listens on plain HTTP on 127.0.0.1 (the client
//! accepts an `http://` endpoint).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

/// A 2048-bit RSA key made for these tests only (it authorizes nothing anywhere): the
/// private half goes into the service-account key JSON the operator reads, the public half
/// verifies the tokens the client signs with it.
pub const TEST_KEY_PEM: &str = include_str!("gcp_test_key.pem");
/// The key id in [`GcpDouble::service_account_key`] and in the tokens' `kid`.
pub const TEST_KEY_ID: &str = "secretsync-test-key-1";
/// The scope Google's client asks for by default.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The project every secret lives in.
pub const PROJECT_ID: &str = "secretsync-test";
/// Its number, which Google puts in the names it answers with.
pub const PROJECT_NUMBER: &str = "123456789012";

/// A running Secret Manager double; stops when dropped.
pub struct GcpDouble {
    addr: SocketAddr,
    state: Arc<Mutex<DoubleState>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct DoubleState {
    secrets: BTreeMap<String, RemoteSecret>,
    /// Service accounts whose signed tokens are accepted.
    accounts: BTreeSet<String>,
    /// Accounts authenticated but not allowed to read.
    denied: BTreeSet<String>,
    down: bool,
    accesses: BTreeMap<String, u64>,
}

#[derive(Default)]
struct RemoteSecret {
    labels: BTreeMap<String, String>,
    /// Index + 1 is the version number.
    versions: Vec<Version>,
}

struct Version {
    data: Vec<u8>,
    enabled: bool,
}

impl GcpDouble {
    /// Serves on a free loopback port, knowing the account `account` (its tokens are
    /// accepted).
    pub async fn start(account: &str) -> GcpDouble {
        let state = Arc::new(Mutex::new(DoubleState::default()));
        state.lock().unwrap().accounts.insert(account.to_owned());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Secret Manager double on 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the double");
        });
        GcpDouble {
            addr,
            state,
            server,
        }
    }

    /// The endpoint to put in a store's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service-account key JSON for `account`, signed with [`TEST_KEY_PEM`], as `gcloud
    /// iam service-accounts keys create` writes one. Its `token_uri` points at the double,
    /// so a client that did exchange the key would reach the double (and fail loudly, the
    /// double has no token endpoint), never Google.
    pub fn service_account_key(&self, account: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": TEST_KEY_ID,
            "private_key": TEST_KEY_PEM,
            "client_email": account,
            "client_id": "100000000000000000001",
            "auth_uri": format!("{}/o/oauth2/auth", self.endpoint()),
            "token_uri": format!("{}/token", self.endpoint()),
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    fn state(&self) -> MutexGuard<'_, DoubleState> {
        self.state.lock().unwrap()
    }

    /// Adds a version holding `data` to `secret` (creating the secret); returns its number.
    pub fn add_version(&self, secret: &str, data: &[u8]) -> u64 {
        let mut state = self.state();
        let entry = state.secrets.entry(secret.to_owned()).or_default();
        entry.versions.push(Version {
            data: data.to_vec(),
            enabled: true,
        });
        entry.versions.len() as u64
    }

    /// Replaces the labels of `secret` (creating it without versions if needed).
    pub fn set_labels(&self, secret: &str, labels: &[(&str, &str)]) {
        let mut state = self.state();
        state.secrets.entry(secret.to_owned()).or_default().labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Disables (or re-enables) version `number` of `secret`.
    pub fn set_enabled(&self, secret: &str, number: u64, enabled: bool) {
        let mut state = self.state();
        let version = state
            .secrets
            .get_mut(secret)
            .and_then(|s| s.versions.get_mut(number as usize - 1))
            .expect("no such secret version in the double");
        version.enabled = enabled;
    }

    /// Whether `account` is refused (403 PERMISSION_DENIED) although authenticated.
    pub fn deny(&self, account: &str, denied: bool) {
        let mut state = self.state();
        if denied {
            state.denied.insert(account.to_owned());
        } else {
            state.denied.remove(account);
        }
    }

    /// While down, every request is answered `503 UNAVAILABLE`.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// How many `AccessSecretVersion` calls for `secret` were answered with a value.
    pub fn accesses(&self, secret: &str) -> u64 {
        self.state().accesses.get(secret).copied().unwrap_or(0)
    }

    /// How many `AccessSecretVersion` calls were answered with a value, over all secrets.
    pub fn total_accesses(&self) -> u64 {
        self.state().accesses.values().sum()
    }
}

impl Drop for GcpDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Google's error body and status.
fn error(code: StatusCode, status: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code.as_u16(), "message": message, "status": status}});
    (
        code,
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// Google's answer to an account without `permission` on `resource`.
fn permission_denied(permission: &str, resource: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        &format!(
            "Permission '{permission}' denied for resource '{resource}' (or it may not exist)."
        ),
    )
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<DoubleState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Body,
) -> Response {
    let mut state = state.lock().unwrap();
    if state.down {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        );
    }
    let account = match authenticate(&headers, &state.accounts) {
        Ok(account) => account,
        Err(why) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                &format!(
                    "Request had invalid authentication credentials. Expected OAuth 2 access \
                     token, login cookie or other valid authentication credential. ({why})"
                ),
            );
        }
    };
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/v1/projects/") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
    };
    let (project, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if project != PROJECT_ID && project != PROJECT_NUMBER {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!("Permission denied on resource project {project}."),
        );
    }
    let denied = state.denied.contains(&account);
    match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (Method::GET, ["secrets"]) => {
            if denied {
                return permission_denied(
                    "secretmanager.secrets.list",
                    &format!("projects/{project}"),
                );
            }
            list(&state, uri.query().unwrap_or_default())
        }
        (Method::GET, ["secrets", secret, "versions", version_access]) => {
            let Some(version) = version_access.strip_suffix(":access") else {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
            };
            let resource = format!("projects/{project}/secrets/{secret}/versions/{version}");
            if denied {
                return permission_denied("secretmanager.versions.access", &resource);
            }
            access(&mut state, secret, version, &resource)
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method"),
    }
}

fn access(state: &mut DoubleState, secret: &str, version: &str, resource: &str) -> Response {
    let Some(entry) = state.secrets.get(secret) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "Secret [projects/{PROJECT_NUMBER}/secrets/{secret}] not found or has no versions."
            ),
        );
    };
    let number = match version {
        "latest" => entry.versions.len(),
        n => n.parse::<usize>().unwrap_or(0),
    };
    let Some(found) = number
        .checked_sub(1)
        .and_then(|index| entry.versions.get(index))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Secret Version [{resource}] not found."),
        );
    };
    if !found.enabled {
        return error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            &format!(
                "Secret Version [projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{number}] \
                 is in DISABLED state."
            ),
        );
    }
    let body = json!({
        "name": format!("projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{number}"),
        "payload": {
            "data": STANDARD.encode(&found.data),
            // int64 is a string in proto3 JSON.
            "dataCrc32c": crc32c(&found.data).to_string(),
        },
    });
    *state.accesses.entry(secret.to_owned()).or_default() += 1;
    ok(body)
}

fn list(state: &DoubleState, query: &str) -> Response {
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let page_size = params
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(25_000);
    let offset = match params.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(token) => match token.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(offset) => offset,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Invalid page token.",
                );
            }
        },
    };
    let terms = match parse_filter(params.get("filter").map(String::as_str).unwrap_or("")) {
        Ok(terms) => terms,
        Err(why) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &why),
    };
    let matching: Vec<(&String, &RemoteSecret)> = state
        .secrets
        .iter()
        .filter(|(name, secret)| {
            terms.iter().all(|term| match term {
                Term::Label(k, v) => secret.labels.get(k) == Some(v),
                Term::NameContains(text) => name.contains(text.as_str()),
            })
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|(name, secret)| {
            json!({
                "name": format!("projects/{PROJECT_NUMBER}/secrets/{name}"),
                "replication": {"automatic": {}},
                "createTime": "2026-01-01T00:00:00Z",
                "labels": secret.labels,
                "etag": "\"1\"",
            })
        })
        .collect();
    let mut body = json!({"secrets": page, "totalSize": matching.len()});
    if offset + page_size < matching.len() {
        body["nextPageToken"] = json!(format!("offset-{}", offset + page_size));
    }
    ok(body)
}

enum Term {
    Label(String, String),
    NameContains(String),
}

/// The subset of the list filter grammar the double understands.
fn parse_filter(filter: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for word in filter.split_whitespace().filter(|w| *w != "AND") {
        if let Some((key, value)) = word
            .strip_prefix("labels.")
            .and_then(|kv| kv.split_once('='))
        {
            terms.push(Term::Label(key.to_owned(), value.to_owned()));
        } else if let Some(text) = word.strip_prefix("name:") {
            terms.push(Term::NameContains(text.to_owned()));
        } else {
            return Err(format!("Invalid filter term {word:?}."));
        }
    }
    Ok(terms)
}

/// The account whose valid, signed token `headers` carry.
fn authenticate(headers: &HeaderMap, accounts: &BTreeSet<String>) -> Result<String, String> {
    let header = headers
        .get("authorization")
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "Authorization is not text")?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or("Authorization is not a Bearer token")?;
    let mut parts = token.split('.');
    let (Some(head), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT".into());
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad base64url");
    let signature = decode(sig)?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key())
        .verify(format!("{head}.{claims}").as_bytes(), &signature)
        .map_err(|_| "the token's signature does not verify")?;
    let head: Value = serde_json::from_slice(&decode(head)?).map_err(|_| "bad JWT header")?;
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|_| "bad JWT claims")?;
    if head["alg"] != "RS256" || head["kid"] != TEST_KEY_ID {
        return Err("unknown key".into());
    }
    let account = claims["iss"].as_str().unwrap_or_default();
    if !accounts.contains(account) {
        return Err(format!("unknown service account {account:?}"));
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == CLOUD_PLATFORM) {
        return Err("the token lacks the cloud-platform scope".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("the token expired".into());
    }
    Ok(account.to_owned())
}

/// The public half of [`TEST_KEY_PEM`], as ring verifies with it (PKCS#1 DER).
fn public_key() -> Vec<u8> {
    let der: String = TEST_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(der).expect("the test key is base64 PEM");
    RsaKeyPair::from_pkcs8(&der)
        .expect("the test key is a PKCS#8 RSA key")
        .public_key()
        .as_ref()
        .to_vec()
}

/// CRC32C (Castagnoli) of `data`, Secret Manager's payload checksum.
fn crc32c(data: &[u8]) -> u32 {
    // Table-less and slow, which is fine for test payloads.
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const ACCOUNT: &str = "reader@secretsync-test.iam.gserviceaccount.com";

    /// A token as Google's client makes one, signed with the test key.
    fn token(account: &str, kid: &str, exp: u64) -> String {
        let head =
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string());
        let claims = json!({"iss": account, "sub": account, "scope": CLOUD_PLATFORM, "exp": exp});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let der: String = TEST_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let key = RsaKeyPair::from_pkcs8(&STANDARD.decode(der).unwrap()).unwrap();
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            format!("{head}.{claims}").as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{head}.{claims}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The HTTP status the double answers a secret read with `authorization`.
    async fn status(double: &GcpDouble, authorization: Option<&str>) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(double.addr).await.unwrap();
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let request = format!(
            "GET /v1/projects/{PROJECT_ID}/secrets/db/versions/latest:access HTTP/1.1\r\n\
             Host: {}\r\n{auth}Connection: close\r\n\r\n",
            double.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn only_a_valid_signed_token_of_a_known_account_reads() {
        let double = GcpDouble::start(ACCOUNT).await;
        double.add_version("db", b"value");
        let later = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let good = token(ACCOUNT, TEST_KEY_ID, later);
        assert_eq!(status(&double, Some(&format!("Bearer {good}"))).await, 200);
        assert_eq!(double.accesses("db"), 1);

        // An expired token made valid again by changing its claims after signing: only the
        // signature tells.
        let expired = token(ACCOUNT, TEST_KEY_ID, 1_000);
        let (head, rest) = expired.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            json!({"iss": ACCOUNT, "sub": ACCOUNT, "scope": CLOUD_PLATFORM, "exp": later})
                .to_string(),
        );
        let forged = format!("{head}.{forged_claims}.{sig}");
        for refused in [
            None,
            Some("Basic dXNlcjpwYXNz".to_owned()),
            Some(format!("Bearer {forged}")),
            Some(format!("Bearer {}", token(ACCOUNT, TEST_KEY_ID, 1_000))),
            Some(format!("Bearer {}", token(ACCOUNT, "another-key", later))),
            Some(format!(
                "Bearer {}",
                token("stranger@x.iam.gserviceaccount.com", TEST_KEY_ID, later)
            )),
        ] {
            assert_eq!(
                status(&double, refused.as_deref()).await,
                401,
                "{refused:?}"
            );
        }
        double.deny(ACCOUNT, true);
        assert_eq!(status(&double, Some(&format!("Bearer {good}"))).await, 403);
        double.deny(ACCOUNT, false);
        double.set_down(true);
        assert_eq!(status(&double, Some(&format!("Bearer {good}"))).await, 503);
        assert_eq!(double.accesses("db"), 1, "only the first read was served");
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
