//! The Akeyless backend (`akeyless`): static secrets through Akeyless's REST API v2 with our
//! reqwest client. crates.io has no official Akeyless SDK (only an unofficial generated
//! one, 0.1, on its own TLS stack), so the few calls are made directly:
//!
//! | call | request (JSON bodies, the token in the body) |
//! |---|---|
//! | log in | `POST /auth` with `access-type` `access_key` (`access-id`, `access-key`), `k8s` (`access-id`, `k8s-auth-config-name`, `k8s-service-account-token`: the base64 of a ServiceAccount token) or `jwt` (`access-id`, `jwt`: a ServiceAccount token) → `{"token"}` |
//! | a value | `POST /get-secret-value` with `names: [name]` and `version` when pinned → `{name: value}` |
//! | `find` | `POST /list-items` with `path`, `type: ["static-secret"]` and `pagination-token` → `{items: [{item_name, item_tags}], next_page}`, then the values |
//! | the store's check | `POST /list-items` for one item |
//!
//! `remoteRef.key` is an item's full name (`/prod/db`); `remoteRef.version` a version number.
//! Akeyless does not say which version a read of the latest returned, so only a pinned read
//! records one; a changed value still makes the next version. `find` matches `name.regexp`
//! against item names, `path` as the folder listed, and `tags`: `{team: payments}` matches
//! an item tagged `team=payments` or `team:payments` (Akeyless tags are plain strings; an
//! empty value matches the bare tag). The URL (`akeylessGWApiURL`) is Akeyless's public API
//! by default, or a gateway's; Kubernetes auth needs a gateway's. The token is kept for 10
//! minutes (Akeyless's live longer) and a refused one is replaced once by a new login.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secretsync_api::{
    AkeylessAuth, AkeylessProvider, Find, ServiceAccountRef, TokenServiceAccountRef,
};
use serde_json::{Value, json};

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::rest;
use crate::value::{ExposeSecret, RemoteValue, SecretBytes, SecretString};

/// How long a token is used before logging in again.
const TOKEN_REUSE: Duration = Duration::from_secs(10 * 60);
/// Listing pages followed at most (a `find` over more is refused anyway).
const MAX_PAGES: usize = 50;

/// A connected Akeyless store.
pub struct Akeyless {
    http: reqwest::Client,
    url: String,
    login: Login,
    token: rest::KeptToken,
}

enum Login {
    AccessKey {
        access_id: String,
        access_key: SecretString,
    },
    /// Kubernetes (`k8s`, with the gateway's auth config) or JWT auth, each with a fresh
    /// ServiceAccount token per login.
    ServiceAccount {
        access_id: String,
        k8s_conf_name: Option<String>,
        account: ServiceAccountRef,
        audiences: Vec<String>,
        field: &'static str,
        /// Boxed: the kube client is large, and the other login small.
        ctx: Box<ConnectContext>,
    },
}

/// Names only: the access key and tokens never reach a log.
impl std::fmt::Debug for Akeyless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Akeyless")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn service_account(
    access_id: &str,
    k8s_conf_name: Option<&str>,
    account: &TokenServiceAccountRef,
    field: &'static str,
    ctx: &ConnectContext,
) -> Login {
    Login::ServiceAccount {
        access_id: access_id.trim().to_owned(),
        k8s_conf_name: k8s_conf_name.map(|n| n.trim().to_owned()),
        account: ServiceAccountRef {
            name: account.name.clone(),
            namespace: account.namespace.clone(),
        },
        audiences: account.audiences.clone().unwrap_or_default(),
        field,
        ctx: Box::new(ctx.clone()),
    }
}

impl Akeyless {
    /// Connects to the API `spec` names, reading an access key through `ctx`.
    pub async fn connect(spec: &AkeylessProvider, ctx: &ConnectContext) -> Result<Akeyless> {
        let url = spec.url().trim_end_matches('/').to_owned();
        let http = rest::client(&url, spec.ca_bundle.as_deref())?;
        let login = match &spec.auth_secret_ref {
            AkeylessAuth::SecretRef(keys) => {
                const FIELD: &str = "authSecretRef.secretRef";
                if let Some(selector) = &keys.access_type {
                    let access_type = credentials::read_key(ctx, selector, FIELD).await?;
                    let access_type = access_type.expose_secret().trim();
                    if !(access_type.is_empty()
                        || access_type == "access_key"
                        || access_type == "api_key")
                    {
                        return Err(ProviderError::InvalidConfig(format!(
                            "{FIELD}.accessType {access_type:?} is not supported: use access_key \
                             here, or kubernetesAuth or jwt"
                        )));
                    }
                }
                let access_id = credentials::read_key(ctx, &keys.access_id, FIELD).await?;
                let access_key = credentials::read_key(ctx, &keys.access_type_param, FIELD).await?;
                Login::AccessKey {
                    access_id: access_id.expose_secret().trim().to_owned(),
                    access_key,
                }
            }
            AkeylessAuth::KubernetesAuth(k8s) => service_account(
                &k8s.access_id,
                Some(&k8s.k8s_conf_name),
                &k8s.service_account_ref,
                "authSecretRef.kubernetesAuth.serviceAccountRef",
                ctx,
            ),
            AkeylessAuth::Jwt(jwt) => service_account(
                &jwt.access_id,
                None,
                &jwt.service_account_ref,
                "authSecretRef.jwt.serviceAccountRef",
                ctx,
            ),
        };
        Ok(Akeyless {
            http,
            url,
            login,
            token: rest::KeptToken::new(TOKEN_REUSE),
        })
    }

    /// POSTs `body` to `path`; the JSON answer of a success, else the error for `doing`,
    /// `key` naming what a 404 is about.
    async fn post(&self, path: &str, body: &Value, doing: &str, key: &str) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| rest::transport(&e, &self.url, doing))?;
        let code = response.status().as_u16();
        if !response.status().is_success() {
            return Err(rest::status(code, &self.url, doing, key));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| rest::transport(&e, &self.url, doing))?;
        serde_json::from_slice(&bytes).map_err(|_| {
            ProviderError::Unavailable(format!(
                "{} answered {doing} with something not JSON",
                self.url
            ))
        })
    }

    /// A fresh token from `POST /auth`.
    async fn log_in(&self) -> Result<SecretString> {
        let body = match &self.login {
            Login::AccessKey {
                access_id,
                access_key,
            } => json!({
                "access-type": "access_key",
                "access-id": access_id,
                "access-key": access_key.expose_secret(),
            }),
            Login::ServiceAccount {
                access_id,
                k8s_conf_name,
                account,
                audiences,
                field,
                ctx,
            } => {
                let jwt =
                    credentials::service_account_token(ctx, account, audiences, field).await?;
                match k8s_conf_name {
                    Some(conf) => json!({
                        "access-type": "k8s",
                        "access-id": access_id,
                        "k8s-auth-config-name": conf,
                        "k8s-service-account-token": STANDARD.encode(jwt.expose_secret()),
                    }),
                    None => json!({
                        "access-type": "jwt",
                        "access-id": access_id,
                        "jwt": jwt.expose_secret(),
                    }),
                }
            }
        };
        let answer = self.post("/auth", &body, "logging in", "").await.map_err(|e| match e {
            ProviderError::NotFound { .. } | ProviderError::PermissionDenied(_) | ProviderError::InvalidConfig(_) => {
                ProviderError::AuthFailed(format!(
                    "{} refused the login: check the access id, its auth method and the credentials",
                    self.url
                ))
            }
            other => other,
        })?;
        answer["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| {
                ProviderError::Unavailable(format!("{} answered a login without a token", self.url))
            })
    }

    /// [`Akeyless::post`] with the token in the body, logging in again once when it is
    /// refused.
    async fn call(&self, path: &str, mut body: Value, doing: &str, key: &str) -> Result<Value> {
        let mut refused = None;
        loop {
            let token = self.token.get(refused.as_ref(), self.log_in()).await?;
            body["token"] = Value::String(token.expose_secret().to_owned());
            match self.post(path, &body, doing, key).await {
                Err(ProviderError::AuthFailed(_)) if refused.is_none() => refused = Some(token),
                answer => return answer,
            }
        }
    }

    /// Reads the static secret `key`, at `version` when given (else the latest).
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        let name = key.trim();
        if name.is_empty() {
            return Err(ProviderError::InvalidConfig(
                "remote key is empty".to_owned(),
            ));
        }
        let version = version.map(str::trim).filter(|v| !v.is_empty());
        let mut body = json!({"names": [name]});
        let shown = match version {
            Some(v) => {
                let number: u32 = v.parse().map_err(|_| {
                    ProviderError::InvalidConfig(format!(
                        "version {v:?} of secret {key:?} is not a version number"
                    ))
                })?;
                body["version"] = json!(number);
                format!("{name}@{v}")
            }
            None => name.to_owned(),
        };
        let doing = format!("reading secret {shown:?}");
        let answer = self.call("/get-secret-value", body, &doing, &shown).await?;
        let value = answer[name]
            .as_str()
            .ok_or_else(|| ProviderError::NotFound { key: shown.clone() })?;
        Ok(RemoteValue {
            bytes: SecretBytes::from(value.to_owned()),
            version: version.map(str::to_owned),
        })
    }

    /// The latest value of every static secret under `find.path` whose name matches
    /// `find.name.regexp` and that has every tag of `find.tags`, in name order.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "akeyless", &["tags", "path"])?;
        let folder = format!("/{}", matcher.path.unwrap_or_default());
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body =
                json!({"path": folder, "type": ["static-secret"], "minimal-view": false});
            if let Some(token) = &page {
                body["pagination-token"] = json!(token);
            }
            let answer = self.call("/list-items", body, "listing items", "").await?;
            for item in answer["items"].as_array().into_iter().flatten() {
                let Some(name) = item["item_name"].as_str() else {
                    continue;
                };
                let tags: Vec<(&str, &str)> = item["item_tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|t| t.split_once(['=', ':']).unwrap_or((t, "")))
                    .collect();
                if matcher.name_matches(name)
                    && matcher.under_path(name.trim_start_matches('/'))
                    && matcher.tags_match(&tags)
                {
                    names.push(name.to_owned());
                    if names.len() > MAX_FOUND {
                        return Err(too_many());
                    }
                }
            }
            page = answer["next_page"]
                .as_str()
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            if page.is_none() {
                break;
            }
        }
        crate::find::read_each(names, |name| async move { self.fetch(&name, None).await }).await
    }

    /// Checks the login: a token, and Akeyless answering a one-item listing with it. A
    /// denied listing still proves the token (reading may be allowed where listing is not).
    pub async fn check(&self) -> Result<()> {
        let body = json!({"path": "/", "type": ["static-secret"], "minimal-view": true});
        match self
            .call("/list-items", body, "checking the login (list-items)", "")
            .await
        {
            Ok(_) | Err(ProviderError::PermissionDenied(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
