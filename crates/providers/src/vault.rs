//! The Vault / OpenBao backend: reads from a KV v1 or v2 mount, logged in with a token, an
//! AppRole or a Kubernetes ServiceAccount.
//!
//! The Vault protocol (this module) is kept apart from where the secret half of a login
//! comes from (the private `Credentials`): in the operator, a Secret or a ServiceAccount
//! token read through the Kubernetes API at each login; in tests and tools, a value given
//! directly ([`Vault::with_static_credential`]).
//!
//! A `Vault` logs in lazily, keeps its token until about two thirds of its TTL, then renews
//! it (or logs in again), one login at a time however many fetches are waiting. A 403 on a
//! read drops the cached token and retries once with a fresh one, so a rotated token Secret
//! or a server restart heals by itself.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod dynamic;

use secretsync_api::{DynamicSecret, Find, PkiIssue, VaultAuth, VaultKvVersion, VaultProvider};
use tokio::sync::Mutex;
use vaultrs::api::EndpointMiddleware;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::value::{
    ExposeSecret, Issued, Lease, RemoteValue, Renewed, SecretBytes, SecretData, SecretSlice,
    SecretString, StaticRead,
};

/// Whole-request timeout for every call to Vault.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A token renewed to less than this is not worth keeping: log in again instead.
const MIN_TTL: Duration = Duration::from_secs(10);
/// When renewing fails because Vault cannot be reached, the token (still valid) is used and
/// renewal tried again after this.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// A connected Vault / OpenBao store.
pub struct Vault(Box<Inner>);

struct Inner {
    /// Carries address, namespace, TLS and timeouts, never a token: each request gets the
    /// current token through [`Authed`].
    client: VaultClient,
    server: String,
    mount: String,
    kv: VaultKvVersion,
    auth: VaultAuth,
    credentials: Credentials,
    who: Who,
    state: Mutex<State>,
    logins: AtomicU64,
    /// Login attempts finished so far (mirrors `State::attempts` for reading before locking).
    attempts: AtomicU64,
}

/// Where the secret half of a login comes from.
enum Credentials {
    /// Read through the Kubernetes API at each login: the token or AppRole secret-id from
    /// its Secret, or a fresh ServiceAccount token (TokenRequest).
    FromKubernetes(ConnectContext),
    /// Given directly: the token, the AppRole secret-id or the ServiceAccount JWT.
    Static(Arc<SecretString>),
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    /// The last login attempt's error, with its attempt number: callers that queued while
    /// it ran get the same error instead of each trying again.
    failure: Option<(u64, ProviderError)>,
}

/// A token and when to refresh it.
struct Session {
    token: Arc<SecretString>,
    /// Which login produced it, so a 403 invalidates only the token it was seen with.
    generation: u64,
    /// When to renew or log in again; `None`: the token does not expire (or its TTL is
    /// unknown) and is kept until Vault refuses it.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    renewable: bool,
}

/// The token a request runs with.
struct Token {
    token: Arc<SecretString>,
    generation: u64,
}

/// Who logs in, for messages.
struct Who {
    /// "the token in Secret payments/vault-token", "the AppRole role at auth/approle".
    identity: String,
    /// What to check when a login is rejected.
    login_hint: String,
}

impl Who {
    /// `location`: where the credential is read from ("Secret payments/approle").
    fn new(auth: &VaultAuth, location: Option<&str>) -> Who {
        match auth {
            VaultAuth::TokenSecretRef(_) => {
                let identity = match location {
                    Some(location) => format!("the token in {location}"),
                    None => "the token".to_owned(),
                };
                Who {
                    login_hint: format!("that {identity} is valid"),
                    identity,
                }
            }
            VaultAuth::AppRole(approle) => Who {
                identity: format!("the AppRole role at auth/{}", approle_mount(approle)),
                login_hint: match location {
                    Some(location) => {
                        format!("that the role-id and the secret-id in {location} are right")
                    }
                    None => "that the role-id and secret-id are right".to_owned(),
                },
            },
            VaultAuth::Kubernetes(k8s) => Who {
                identity: format!(
                    "Kubernetes auth role {:?} at auth/{}",
                    k8s.role,
                    kubernetes_mount(k8s)
                ),
                login_hint: format!(
                    "that its role {:?} exists and admits {}",
                    k8s.role,
                    location.unwrap_or("the ServiceAccount")
                ),
            },
        }
    }
}

/// What went wrong in one exchange with Vault, before it is given a user-facing message.
enum Failure {
    /// Vault answered with this HTTP status.
    Status { code: u16, errors: Vec<String> },
    /// Vault answered 200 without data.
    Empty,
    /// No answer: connection refused, timeout, TLS failure. The text is the transport's
    /// error chain (addresses and causes, no payloads).
    Transport(String),
    /// An answer that is not what the API documents.
    Malformed,
    /// Already a user-facing error (from logging in).
    Provider(ProviderError),
}

impl Vault {
    /// Connects to the store `spec` describes; credentials are read through `ctx` when
    /// logging in (lazily, on first use).
    pub async fn connect(spec: &VaultProvider, ctx: &ConnectContext) -> Result<Vault> {
        let identity = match &spec.tls {
            Some(tls) => Some(client_identity(ctx, tls).await?),
            None => None,
        };
        Inner::connect(spec, ctx, identity).map(|inner| Vault(Box::new(inner)))
    }

    /// A store whose credential is given directly instead of read from Kubernetes: the
    /// token for `tokenSecretRef`, the secret-id for `appRole`, the ServiceAccount JWT for
    /// `kubernetes`. The references in `spec.auth` and `spec.tls` are ignored (no client
    /// certificate); everything else applies.
    pub fn with_static_credential(spec: &VaultProvider, credential: SecretString) -> Result<Vault> {
        let who = Who::new(&spec.auth, None);
        Inner::new(spec, Credentials::Static(Arc::new(credential)), who, None)
            .map(|inner| Vault(Box::new(inner)))
    }

    /// Logins so far (for token auth: reads of the token), for metrics and tests.
    pub fn logins(&self) -> u64 {
        self.0.logins.load(Ordering::SeqCst)
    }

    /// Reads the secret at `key` under the mount: the latest version, or `version` (a KV
    /// v2 version number). The value is the JSON object of the secret's fields.
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        self.0.fetch(key, version).await
    }

    /// Checks that the store can log in and that Vault accepts the token.
    pub async fn check(&self) -> Result<()> {
        self.0.check().await
    }

    /// Every secret under `find.path` (recursively, by LIST on the mount) whose path
    /// relative to the mount matches `find.name.regexp`, read at its latest version, in
    /// path order. Vault secrets have no tags.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        self.0.find(find).await
    }

    /// Issues a certificate at `<mount>/issue/<role>`: data `tls.crt` (the certificate and
    /// its chain, roots left out), `tls.key`, `ca.crt` (the issuing CA), with the lease
    /// OpenBao attaches when the role has `generate_lease=true`.
    pub async fn issue(&self, pki: &PkiIssue) -> Result<Issued> {
        self.0.issue(pki).await
    }

    /// Revokes a lease (`sys/leases/revoke`); for a PKI lease OpenBao revokes the
    /// certificate too. A lease OpenBao no longer knows counts as revoked.
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<()> {
        self.0.revoke_lease(lease_id).await
    }

    /// Issues a credential at `dynamic.path` (`database/creds/app`): the Secret data is
    /// the answer's fields, with the lease Vault attached.
    pub async fn issue_dynamic(&self, dynamic: &DynamicSecret) -> Result<Issued> {
        self.0.issue_dynamic(dynamic).await
    }

    /// Reads a static role's credential (`database/static-creds/app`) and when it rotates.
    pub async fn read_static(&self, dynamic: &DynamicSecret) -> Result<StaticRead> {
        self.0.read_static(dynamic).await
    }

    /// Renews a lease by `increment` (`sys/leases/renew`); Vault caps it at the lease's max
    /// TTL, so a shorter answer means the lease is near its end.
    pub async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<Renewed> {
        self.0.renew_lease(lease_id, increment).await
    }

    /// The ids of the leases directly under `prefix` (`sys/leases/lookup`, LIST).
    pub async fn leases_under(&self, prefix: &str) -> Result<Vec<String>> {
        self.0.leases_under(prefix).await
    }

    /// When a lease was issued (RFC 3339); `None` for one Vault no longer knows.
    pub async fn lease_issue_time(&self, lease_id: &str) -> Result<Option<String>> {
        self.0.lease_issue_time(lease_id).await
    }
}

/// The answer to `<mount>/issue/<role>`. The private key goes straight into a redacting
/// type; this struct has no `Debug`.
#[derive(serde::Deserialize)]
struct IssueResponse {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    data: Option<IssuedCertificate>,
}

#[derive(serde::Deserialize)]
struct IssuedCertificate {
    certificate: String,
    issuing_ca: String,
    #[serde(default)]
    ca_chain: Vec<String>,
    private_key: String,
    serial_number: String,
}

impl Inner {
    fn connect(
        spec: &VaultProvider,
        ctx: &ConnectContext,
        identity: Option<reqwest::Identity>,
    ) -> Result<Inner> {
        // Resolve the credential references now, so a misplaced namespace is a store error.
        let location = match &spec.auth {
            VaultAuth::TokenSecretRef(selector) => {
                let field = "auth.tokenSecretRef";
                let ns = credentials::namespace_for(ctx, selector.namespace.as_deref(), field)?;
                format!("Secret {ns}/{}", selector.name)
            }
            VaultAuth::AppRole(approle) => {
                let selector = &approle.secret_ref;
                let field = "auth.appRole.secretRef";
                let ns = credentials::namespace_for(ctx, selector.namespace.as_deref(), field)?;
                format!("Secret {ns}/{}", selector.name)
            }
            VaultAuth::Kubernetes(k8s) => {
                let account = &k8s.service_account_ref;
                let field = "auth.kubernetes.serviceAccountRef";
                let ns = credentials::namespace_for(ctx, account.namespace.as_deref(), field)?;
                format!("ServiceAccount {ns}/{}", account.name)
            }
        };
        let who = Who::new(&spec.auth, Some(&location));
        Self::new(
            spec,
            Credentials::FromKubernetes(ctx.clone()),
            who,
            identity,
        )
    }

    fn new(
        spec: &VaultProvider,
        credentials: Credentials,
        who: Who,
        identity: Option<reqwest::Identity>,
    ) -> Result<Inner> {
        let mount = spec.mount().trim_matches('/');
        if mount.is_empty() {
            return Err(ProviderError::InvalidConfig(
                "the KV mount (path) is empty".to_owned(),
            ));
        }
        Ok(Inner {
            client: build_client(spec, identity)?,
            server: spec.server.clone(),
            mount: mount.to_owned(),
            kv: spec.kv_version(),
            auth: spec.auth.clone(),
            credentials,
            who,
            state: Mutex::new(State::default()),
            logins: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        })
    }

    async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        let path = key.trim_matches('/');
        if path.is_empty() {
            return Err(ProviderError::InvalidConfig(format!(
                "remote key {key:?} names no secret"
            )));
        }
        let version = match (self.kv, version.filter(|v| !v.is_empty())) {
            (_, None) => None,
            (VaultKvVersion::V1, Some(_)) => {
                return Err(ProviderError::InvalidConfig(format!(
                    "remote key {key:?} asks for a version, but mount {} is KV v1, which keeps \
                     no versions; remove the version or use a KV v2 mount",
                    self.mount
                )));
            }
            (VaultKvVersion::V2, Some(v)) => {
                Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ProviderError::InvalidConfig(format!(
                        "remote key {key:?}: version {v:?} is not a KV v2 version number \
                         (a positive integer)"
                    ))
                })?)
            }
        };
        let read = self
            .authorized(|token| async move { self.read(&token, path, version).await })
            .await;
        let not_found = || ProviderError::NotFound {
            key: not_found_key(key, version),
        };
        match read {
            Ok((serde_json::Value::Object(data), read_version)) => Ok(RemoteValue {
                bytes: SecretBytes::new(
                    serde_json::to_vec(&data).expect("a JSON object serializes"),
                ),
                version: read_version.map(|v| v.to_string()),
            }),
            // Deleted KV v2 versions answer with null data (or 404): say so when they are.
            Ok(_) | Err(Failure::Empty | Failure::Status { code: 404, .. }) => {
                Err(match self.deleted(path, version).await {
                    Some(detail) => ProviderError::KeyDeleted {
                        key: not_found_key(key, version),
                        detail,
                    },
                    None => not_found(),
                })
            }
            Err(failure) => Err(self.describe(failure, &format!("reading {}/{path}", self.mount))),
        }
    }

    async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "vault", &["path"])?;
        let mut names = Vec::new();
        // Folders still to list, each "" (the mount's root) or ending in '/'.
        let mut folders = vec![matcher.path.map(|p| format!("{p}/")).unwrap_or_default()];
        while let Some(folder) = folders.pop() {
            let folder = &folder;
            let listed = self
                .authorized(|token| async move { self.list(&token, folder).await })
                .await;
            let keys = match listed {
                Ok(keys) => keys,
                // Nothing under this folder (or it is gone since its parent was listed).
                Err(Failure::Status { code: 404, .. } | Failure::Empty) => Vec::new(),
                Err(failure) => {
                    return Err(self.describe(failure, &format!("listing {}/{folder}", self.mount)));
                }
            };
            for key in keys {
                let name = format!("{folder}{key}");
                if key.ends_with('/') {
                    folders.push(name);
                } else if matcher.name_matches(&name) {
                    names.push(name);
                    if names.len() > MAX_FOUND {
                        return Err(too_many());
                    }
                }
            }
        }
        names.sort();
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            let value = self.fetch(&name, None).await?;
            found.push((name, value));
        }
        Ok(found)
    }

    async fn issue(&self, pki: &PkiIssue) -> Result<Issued> {
        let path = format!("{}/issue/{}", pki.mount(), pki.role.trim_matches('/'));
        let mut request = serde_json::json!({
            "common_name": pki.common_name,
            // tls.crt gets the chain up to, not including, the root; ca.crt the issuer.
            "remove_roots_from_chain": true,
        });
        let alt_names = pki.alt_names.as_deref().unwrap_or_default();
        if !alt_names.is_empty() {
            request["alt_names"] = alt_names.join(",").into();
        }
        let ip_sans = pki.ip_sans.as_deref().unwrap_or_default();
        if !ip_sans.is_empty() {
            request["ip_sans"] = ip_sans.join(",").into();
        }
        if let Some(ttl) = pki.ttl() {
            request["ttl"] = format!("{}s", ttl.as_secs().max(1)).into();
        }
        let body = request.to_string();
        let (path, body) = (&path, &body);
        let doing = format!("issuing a certificate at {path}");
        let raw = self
            .authorized(|token| async move {
                self.call(&token, reqwest::Method::POST, path, Some(body))
                    .await
            })
            .await
            .map_err(|f| match f {
                Failure::Status { code: 404, .. } => ProviderError::InvalidConfig(format!(
                    "Vault at {} has no PKI role at {path}: check pki.mount and pki.role",
                    self.server
                )),
                f => self.describe(f, &doing),
            })?;
        // Parse errors from serde_json name a position, never the input.
        let response: IssueResponse = serde_json::from_slice(raw.expose())
            .map_err(|_| self.describe(Failure::Malformed, &doing))?;
        let Some(cert) = response.data else {
            return Err(self.describe(Failure::Empty, &doing));
        };
        let mut chain = cert.certificate.trim_end().to_owned();
        for ca in &cert.ca_chain {
            chain.push('\n');
            chain.push_str(ca.trim_end());
        }
        chain.push('\n');
        let data: SecretData = [
            ("tls.crt".to_owned(), SecretBytes::from(chain)),
            (
                "tls.key".to_owned(),
                SecretBytes::from(cert.private_key + "\n"),
            ),
            (
                "ca.crt".to_owned(),
                SecretBytes::from(cert.issuing_ca.trim_end().to_owned() + "\n"),
            ),
        ]
        .into();
        let lease = (!response.lease_id.is_empty()).then(|| Lease {
            id: response.lease_id,
            duration: Duration::from_secs(response.lease_duration),
            renewable: response.renewable,
        });
        Ok(Issued {
            data,
            lease,
            serial: Some(cert.serial_number),
        })
    }

    async fn revoke_lease(&self, lease_id: &str) -> Result<()> {
        let revoked = self
            .put_lease(
                "sys/leases/revoke",
                serde_json::json!({ "lease_id": lease_id }),
            )
            .await;
        match revoked {
            Ok(_) => Ok(()),
            // Already gone (expired, or revoked by someone else): what we wanted.
            Err(Failure::Status { code: 400, errors })
                if errors.iter().any(|e| e.contains("invalid lease")) =>
            {
                Ok(())
            }
            Err(f) => Err(self.describe(f, "revoking a lease (sys/leases/revoke)")),
        }
    }

    /// One request to `/v1/<path>` with `token`, for the endpoints vaultrs has no call for
    /// that returns the lease. The answer's body is returned in a redacting type: it may
    /// hold a private key.
    async fn call(
        &self,
        token: &SecretString,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<SecretBytes, Failure> {
        let (code, bytes) = self.send(token, method, path, body).await?;
        if (200..300).contains(&code) {
            return Ok(bytes);
        }
        // Vault's error answers carry messages, never secrets.
        #[derive(serde::Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<String>,
        }
        let errors = serde_json::from_slice::<Errors>(bytes.expose())
            .map(|e| e.errors)
            .unwrap_or_default();
        Err(Failure::Status { code, errors })
    }

    /// Why a KV v2 read found nothing when the secret is there but deleted: Vault answers
    /// 404 with the version's metadata, `deletion_time` set (a soft delete, which
    /// `kv undelete` reverts) or `destroyed`. `None` for a key that does not exist (or
    /// when the answer says nothing more).
    async fn deleted(&self, path: &str, version: Option<u64>) -> Option<String> {
        if self.kv != VaultKvVersion::V2 {
            return None;
        }
        let endpoint = match version {
            Some(v) => format!("{}/data/{path}?version={v}", self.mount),
            None => format!("{}/data/{path}", self.mount),
        };
        let endpoint = &endpoint;
        let (_, body) = self
            .authorized(|token| async move {
                self.send(&token, reqwest::Method::GET, endpoint, None)
                    .await
            })
            .await
            .ok()?;
        // Only the metadata is kept; a version's data (if it was undeleted meanwhile) is
        // skipped by the parser.
        #[derive(serde::Deserialize)]
        struct Answer {
            data: Option<Versioned>,
        }
        #[derive(serde::Deserialize)]
        struct Versioned {
            metadata: Option<Metadata>,
        }
        #[derive(serde::Deserialize)]
        struct Metadata {
            #[serde(default)]
            deletion_time: String,
            #[serde(default)]
            destroyed: bool,
            version: Option<u64>,
        }
        let metadata = serde_json::from_slice::<Answer>(body.expose())
            .ok()?
            .data?
            .metadata?;
        let which = metadata.version.map_or_else(
            || "its latest version".to_owned(),
            |v| format!("version {v}"),
        );
        let mount = &self.mount;
        if metadata.destroyed {
            Some(format!(
                "is destroyed at {which} (KV v2 destroy: its data is gone); write the secret \
                 again or pin an earlier version"
            ))
        } else if !metadata.deletion_time.is_empty() {
            let versions = metadata
                .version
                .map(|v| format!(" -versions={v}"))
                .unwrap_or_default();
            Some(format!(
                "is deleted at {which} (KV v2 soft delete at {}); `bao kv undelete{versions} \
                 {mount}/{path}` brings it back",
                metadata.deletion_time
            ))
        } else {
            None
        }
    }

    /// One request to `/v1/<path>` with `token`: the status and the body, in a redacting
    /// type (it may hold a secret or a private key).
    async fn send(
        &self,
        token: &SecretString,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, SecretBytes), Failure> {
        let url = format!("{}/v1/{path}", self.client.http.base.trim_end_matches('/'));
        let mut request = self
            .client
            .http
            .http
            .request(method, url)
            .header("X-Vault-Token", token.expose_secret())
            .header("X-Vault-Request", "true");
        if let Some(namespace) = &self.client.settings.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let transport = |e: reqwest::Error| Failure::Transport(transport_cause(Some(&e), &e));
        let response = request.send().await.map_err(transport)?;
        let code = response.status().as_u16();
        let bytes = SecretBytes::new(response.bytes().await.map_err(transport)?.to_vec());
        Ok((code, bytes))
    }

    /// The keys directly under `folder`; sub-folders end in '/'.
    async fn list(&self, token: &SecretString, folder: &str) -> Result<Vec<String>, Failure> {
        let client = self.authed(token);
        match self.kv {
            VaultKvVersion::V2 => Ok(vaultrs::kv2::list(&client, &self.mount, folder).await?),
            VaultKvVersion::V1 => Ok(vaultrs::kv1::list(&client, &self.mount, folder)
                .await?
                .data
                .keys),
        }
    }

    async fn check(&self) -> Result<()> {
        self.authorized(|token| async move {
            vaultrs::token::lookup_self(&self.authed(&token))
                .await
                .map(|_| ())
                .map_err(Failure::from)
        })
        .await
        .map_err(|f| self.describe(f, "looking up its own token (auth/token/lookup-self)"))
    }

    /// A `PUT` of `body` to one of Vault's `sys/leases/*` endpoints, with the store's token.
    async fn put_lease(&self, path: &str, body: serde_json::Value) -> Result<SecretBytes, Failure> {
        let body = body.to_string();
        let body = &body;
        self.authorized(|token| async move {
            self.call(&token, reqwest::Method::PUT, path, Some(body))
                .await
        })
        .await
    }

    /// Runs `op` with the current token; when Vault answers 403, drops that token and runs
    /// `op` once more with a fresh one.
    async fn authorized<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Arc<SecretString>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let first = self.token().await.map_err(Failure::Provider)?;
        match op(first.token).await {
            Err(Failure::Status { code: 403, .. }) => {
                self.invalidate(first.generation).await;
                let second = self.token().await.map_err(Failure::Provider)?;
                op(second.token).await
            }
            other => other,
        }
    }

    async fn read(
        &self,
        token: &SecretString,
        path: &str,
        version: Option<u64>,
    ) -> Result<(serde_json::Value, Option<u64>), Failure> {
        let client = self.authed(token);
        match self.kv {
            VaultKvVersion::V2 => {
                let endpoint = ReadSecretRequest::builder()
                    .mount(self.mount.as_str())
                    .path(path)
                    .version(version)
                    .build()
                    .map_err(|_| Failure::Malformed)?;
                let response = vaultrs::api::exec_with_result(&client, endpoint).await?;
                Ok((response.data, Some(response.metadata.version)))
            }
            VaultKvVersion::V1 => {
                let response = vaultrs::kv1::get_raw(&client, &self.mount, path).await?;
                Ok((response.data, None))
            }
        }
    }

    /// The cached token, or a renewed or new one when it is due. Holds the state lock while
    /// logging in, so concurrent callers wait for one login instead of each doing their own.
    async fn token(&self) -> Result<Token> {
        let attempts_seen = self.attempts.load(Ordering::SeqCst);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(session) = &state.session
            && session.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(session.handle());
        }
        if let Some((attempt, error)) = &state.failure
            && *attempt > attempts_seen
        {
            return Err(copy_error(error));
        }
        let previous = state.session.take();
        let result = self.refresh(previous).await;
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        match result {
            Ok(session) => {
                let handle = session.handle();
                state.session = Some(session);
                state.failure = None;
                Ok(handle)
            }
            Err(error) => {
                state.failure = Some((attempt, copy_error(&error)));
                Err(error)
            }
        }
    }

    /// Forgets the token of login `generation` (if it is still the cached one).
    async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .session
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            state.session = None;
        }
    }

    /// Renews `previous` when it can be renewed, else logs in.
    async fn refresh(&self, previous: Option<Session>) -> Result<Session> {
        let Some(mut previous) = previous else {
            return self.login().await;
        };
        let now = Instant::now();
        if !previous.renewable || previous.expires_at.is_some_and(|at| now >= at) {
            return self.login().await;
        }
        match vaultrs::token::renew_self(&self.authed(&previous.token), None).await {
            Ok(auth) if Duration::from_secs(auth.lease_duration) >= MIN_TTL => {
                let mut renewed =
                    Session::new(previous.token, previous.generation, &auth_ttl(&auth));
                renewed.renewable = auth.renewable;
                Ok(renewed)
            }
            Ok(_) => self.login().await,
            Err(e) => match Failure::from(e) {
                // Vault is away but the token still lives: keep using it, renew later.
                Failure::Transport(_) | Failure::Status { code: 500.., .. } => {
                    previous.refresh_at = Some(now + RENEW_RETRY);
                    Ok(previous)
                }
                _ => self.login().await,
            },
        }
    }

    async fn login(&self) -> Result<Session> {
        let credential = self.credential().await?;
        let generation = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
        let secret = credential.expose_secret();
        let (what, mount, result) = match &self.auth {
            VaultAuth::TokenSecretRef(_) => {
                if !header_safe(secret) {
                    return Err(ProviderError::AuthFailed(format!(
                        "{} contains characters a Vault token cannot have",
                        self.who.identity
                    )));
                }
                // Learn the token's TTL. Vault refusing the lookup is left to the read to
                // report: a token may lack lookup-self and still read secrets.
                return match vaultrs::token::lookup_self(&self.authed(&credential)).await {
                    Ok(lookup) => {
                        let ttl = TokenTtl {
                            ttl: Duration::from_secs(lookup.ttl),
                            renewable: lookup.renewable.unwrap_or(false),
                        };
                        Ok(Session::new(credential, generation, &ttl))
                    }
                    Err(e) => match Failure::from(e) {
                        Failure::Status { code: 403, .. } => {
                            Ok(Session::new(credential, generation, &TokenTtl::unknown()))
                        }
                        failure => Err(self.describe(failure, "looking up its token")),
                    },
                };
            }
            VaultAuth::AppRole(approle) => {
                let mount = approle_mount(approle);
                let result =
                    vaultrs::auth::approle::login(&self.client, mount, &approle.role_id, secret)
                        .await;
                ("an AppRole", mount, result)
            }
            VaultAuth::Kubernetes(k8s) => {
                let mount = kubernetes_mount(k8s);
                let result =
                    vaultrs::auth::kubernetes::login(&self.client, mount, &k8s.role, secret).await;
                ("a Kubernetes", mount, result)
            }
        };
        match result {
            Ok(auth) => {
                if !header_safe(&auth.client_token) {
                    return Err(ProviderError::AuthFailed(format!(
                        "the login at auth/{mount}/login returned an unusable token"
                    )));
                }
                let ttl = auth_ttl(&auth);
                Ok(Session::new(
                    Arc::new(SecretString::from(auth.client_token)),
                    generation,
                    &ttl,
                ))
            }
            Err(e) => match Failure::from(e) {
                Failure::Status { code, errors } if (400..500).contains(&code) && code != 429 => {
                    Err(ProviderError::AuthFailed(format!(
                        "Vault rejected the login at auth/{mount}/login ({}); check \
                         that auth/{mount} is {what} auth method and {}",
                        status_text(code, &errors),
                        self.who.login_hint
                    )))
                }
                failure => Err(self.describe(failure, &format!("logging in at auth/{mount}"))),
            },
        }
    }

    async fn credential(&self) -> Result<Arc<SecretString>> {
        let ctx = match &self.credentials {
            Credentials::Static(credential) => return Ok(credential.clone()),
            Credentials::FromKubernetes(ctx) => ctx,
        };
        let credential = match &self.auth {
            VaultAuth::TokenSecretRef(selector) => {
                credentials::read_key(ctx, selector, "auth.tokenSecretRef").await?
            }
            VaultAuth::AppRole(approle) => {
                credentials::read_key(ctx, &approle.secret_ref, "auth.appRole.secretRef").await?
            }
            VaultAuth::Kubernetes(k8s) => {
                credentials::service_account_token(
                    ctx,
                    &k8s.service_account_ref,
                    k8s.audiences.as_deref().unwrap_or_default(),
                    "auth.kubernetes.serviceAccountRef",
                )
                .await?
            }
        };
        Ok(Arc::new(credential))
    }

    /// A client sending `token`.
    fn authed<'a>(&'a self, token: &SecretString) -> Authed<'a> {
        let mut middle = self.client.middle.clone();
        middle.token = token.expose_secret().to_owned();
        Authed {
            base: &self.client,
            middle,
        }
    }

    /// The user-facing error for `failure` while `doing` something ("reading secret/app").
    fn describe(&self, failure: Failure, doing: &str) -> ProviderError {
        let server = &self.server;
        match failure {
            Failure::Provider(e) => e,
            Failure::Status { code: 403, .. } => ProviderError::AuthFailed(format!(
                "permission denied {doing}: check that {} is valid and that its policies \
                 allow it",
                self.who.identity
            )),
            Failure::Status { code, errors } if code == 429 || code >= 500 => {
                ProviderError::Unavailable(format!(
                    "Vault at {server} failed {doing} ({})",
                    status_text(code, &errors)
                ))
            }
            Failure::Status { code, errors } => ProviderError::InvalidConfig(format!(
                "Vault at {server} refused {doing} ({})",
                status_text(code, &errors)
            )),
            Failure::Empty | Failure::Malformed => ProviderError::Unavailable(format!(
                "unexpected answer from Vault at {server} {doing}"
            )),
            Failure::Transport(cause) if crate::error::is_tls_trust_failure(&cause) => {
                ProviderError::TlsFailed(format!(
                    "Vault at {server} {doing}: {cause}{}",
                    tls_hint(&cause)
                ))
            }
            Failure::Transport(cause) => ProviderError::Unavailable(format!(
                "cannot reach Vault at {server} {doing}: {cause}"
            )),
        }
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.0;
        let auth = match inner.auth {
            VaultAuth::TokenSecretRef(_) => "token",
            VaultAuth::AppRole(_) => "appRole",
            VaultAuth::Kubernetes(_) => "kubernetes",
        };
        f.debug_struct("Vault")
            .field("server", &inner.server)
            .field("namespace", &inner.client.settings.namespace)
            .field("mount", &inner.mount)
            .field("kv", &inner.kv)
            .field("auth", &auth)
            .field("identity", &inner.who.identity)
            .field("logins", &self.logins())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(token: Arc<SecretString>, generation: u64, ttl: &TokenTtl) -> Session {
        let now = Instant::now();
        let expires = (!ttl.ttl.is_zero()).then_some(ttl.ttl);
        Session {
            token,
            generation,
            refresh_at: expires.map(|t| now + t * 2 / 3),
            expires_at: expires.map(|t| now + t),
            renewable: ttl.renewable,
        }
    }

    fn handle(&self) -> Token {
        Token {
            token: self.token.clone(),
            generation: self.generation,
        }
    }
}

struct TokenTtl {
    /// Zero: no expiry.
    ttl: Duration,
    renewable: bool,
}

impl TokenTtl {
    fn unknown() -> TokenTtl {
        TokenTtl {
            ttl: Duration::ZERO,
            renewable: false,
        }
    }
}

fn auth_ttl(auth: &vaultrs::api::AuthInfo) -> TokenTtl {
    TokenTtl {
        ttl: Duration::from_secs(auth.lease_duration),
        renewable: auth.renewable,
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        use rustify::errors::ClientError as Rest;
        // Never keep a payload-bearing error (ResponseParseError carries the body): only
        // statuses and transport causes survive.
        match e {
            ClientError::APIError { code, errors } => Failure::Status { code, errors },
            ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => Failure::Empty,
            ClientError::RestClientError { source } => match source {
                Rest::ServerResponseError { code, .. } => Failure::Status {
                    code,
                    errors: Vec::new(),
                },
                Rest::RequestError { source, .. } => Failure::Transport(transport_cause(
                    source.downcast_ref::<reqwest::Error>(),
                    source.as_ref(),
                )),
                Rest::ResponseError { .. } => {
                    Failure::Transport("the response was cut off".to_owned())
                }
                _ => Failure::Malformed,
            },
            _ => Failure::Malformed,
        }
    }
}

/// The cause of a failed request, from its error chain (addresses and causes only).
fn transport_cause(
    reqwest: Option<&reqwest::Error>,
    error: &(dyn std::error::Error + 'static),
) -> String {
    if reqwest.is_some_and(reqwest::Error::is_timeout) {
        return format!("no answer within {}s", REQUEST_TIMEOUT.as_secs());
    }
    let mut parts: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    match parts.last() {
        Some(cause) => cause.clone(),
        None => error.to_string(),
    }
}

/// What to do about a failed TLS handshake, from rustls' cause; empty for other causes.
fn tls_hint(cause: &str) -> &'static str {
    if cause.contains("invalid peer certificate") {
        "; the server's certificate is not trusted: set caBundle to the PEM of the CA that \
         signed it (caBundle replaces the system roots)"
    } else if cause.contains("CertificateRequired")
        || cause.contains("BadCertificate")
        || cause.contains("UnknownCA")
    {
        "; the server refused the client certificate: set tls.clientCertSecretRef and \
         tls.clientKeySecretRef to one signed by a CA it trusts"
    } else {
        ""
    }
}

/// A status and Vault's error strings for a message: "503: Vault is sealed", or "404".
fn status_text(code: u16, errors: &[String]) -> String {
    let joined = errors
        .iter()
        .flat_map(|e| e.lines())
        .map(|l| l.trim().trim_start_matches('*').trim())
        .filter(|l| !l.is_empty() && !l.ends_with("occurred:"))
        .collect::<Vec<_>>()
        .join("; ");
    if joined.is_empty() {
        return code.to_string();
    }
    let mut cut: String = joined.chars().take(200).collect();
    if cut.len() < joined.len() {
        cut.push('…');
    }
    format!("{code}: {cut}")
}

/// A remote key as errors name it: `key@version` for a pinned read.
fn not_found_key(key: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("{key}@{v}"),
        None => key.to_owned(),
    }
}

fn copy_error(e: &ProviderError) -> ProviderError {
    match e {
        ProviderError::NotFound { key } => ProviderError::NotFound { key: key.clone() },
        ProviderError::KeyDeleted { key, detail } => ProviderError::KeyDeleted {
            key: key.clone(),
            detail: detail.clone(),
        },
        ProviderError::PropertyNotFound { key, property } => ProviderError::PropertyNotFound {
            key: key.clone(),
            property: property.clone(),
        },
        ProviderError::NotStructured { key, what } => ProviderError::NotStructured {
            key: key.clone(),
            what,
        },
        ProviderError::AuthFailed(m) => ProviderError::AuthFailed(m.clone()),
        ProviderError::PermissionDenied(m) => ProviderError::PermissionDenied(m.clone()),
        ProviderError::Unavailable(m) => ProviderError::Unavailable(m.clone()),
        ProviderError::TlsFailed(m) => ProviderError::TlsFailed(m.clone()),
        ProviderError::InvalidConfig(m) => ProviderError::InvalidConfig(m.clone()),
    }
}

fn approle_mount(approle: &secretsync_api::AppRoleAuth) -> &str {
    approle
        .path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or("approle")
}

fn kubernetes_mount(k8s: &secretsync_api::KubernetesAuth) -> &str {
    k8s.mount_path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or("kubernetes")
}

/// Whether `s` can travel in an HTTP header (vaultrs panics on anything else).
fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn build_client(spec: &VaultProvider, identity: Option<reqwest::Identity>) -> Result<VaultClient> {
    crate::tls::install_crypto_provider();
    let server = &spec.server;
    let address = reqwest::Url::parse(server).map_err(|e| {
        ProviderError::InvalidConfig(format!("server {server:?} is not a URL: {e}"))
    })?;
    let https = match address.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(ProviderError::InvalidConfig(format!(
                "server {server:?}: scheme {other:?} is not http or https"
            )));
        }
    };
    let namespace = spec
        .namespace
        .as_deref()
        .map(|ns| ns.trim_matches('/'))
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned);
    if let Some(ns) = &namespace
        && !header_safe(ns)
    {
        return Err(ProviderError::InvalidConfig(format!(
            "namespace {ns:?} has characters a Vault namespace cannot have"
        )));
    }

    let mut http = reqwest::Client::builder()
        .tls_backend_rustls()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    let roots = spec
        .ca_bundle
        .as_deref()
        .map(crate::tls::parse_ca_bundle)
        .transpose()?;
    http = match (https, roots) {
        // caBundle replaces the system roots: the store trusts exactly that CA.
        (true, Some(roots)) => http.tls_certs_only(roots),
        (true, None) => http,
        // Plain HTTP needs no roots; skipping the platform's keeps start-up cheap.
        (false, _) => http.tls_certs_only(Vec::new()),
    };
    if let Some(identity) = identity {
        if !https {
            return Err(ProviderError::InvalidConfig(format!(
                "tls (a client certificate) needs an https server, not {server:?}"
            )));
        }
        http = http.identity(identity);
    }
    let http = http.build().map_err(|e| {
        ProviderError::InvalidConfig(format!("cannot set up TLS for {server} (caBundle?): {e}"))
    })?;

    let mut settings = VaultClientSettingsBuilder::default();
    // Every field set explicitly: the defaults read VAULT_* environment variables.
    settings
        .address(address.as_str())
        .token("")
        .ca_certs(Vec::new())
        .identity(None)
        .verify(true)
        .timeout(Some(REQUEST_TIMEOUT))
        .namespace(namespace.clone());
    let settings: VaultClientSettings = settings
        .build()
        .map_err(|e| ProviderError::InvalidConfig(format!("server {server:?}: {e}")))?;
    let middle = EndpointMiddleware {
        token: String::new(),
        version: format!("v{}", settings.version),
        wrap: None,
        namespace,
    };
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(address.as_str(), http),
        middle,
        settings,
    })
}

/// The client certificate and key `tls` names, read from Kubernetes. Messages name the
/// Secrets, never their contents.
async fn client_identity(
    ctx: &ConnectContext,
    tls: &secretsync_api::VaultClientTls,
) -> Result<reqwest::Identity> {
    let cert_field = "tls.clientCertSecretRef";
    let key_field = "tls.clientKeySecretRef";
    let cert = credentials::read_key(ctx, &tls.client_cert_secret_ref, cert_field).await?;
    let key = credentials::read_key(ctx, &tls.client_key_secret_ref, key_field).await?;
    let mut pem = Vec::with_capacity(cert.expose_secret().len() + key.expose_secret().len() + 1);
    pem.extend_from_slice(cert.expose_secret().as_bytes());
    pem.push(b'\n');
    pem.extend_from_slice(key.expose_secret().as_bytes());
    // Holds the private key: zeroed when dropped.
    let pem = SecretSlice::from(pem);
    reqwest::Identity::from_pem(pem.expose_secret()).map_err(|_| {
        ProviderError::InvalidConfig(format!(
            "{cert_field} and {key_field} must hold a PEM certificate and its PEM private key"
        ))
    })
}

/// `base` with a token: the vaultrs client interface over a shared HTTP client.
struct Authed<'a> {
    base: &'a VaultClient,
    middle: EndpointMiddleware,
}

impl vaultrs::client::Client for Authed<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.base.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.base.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_owned();
    }
}
