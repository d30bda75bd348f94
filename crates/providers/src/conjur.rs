//! The CyberArk Conjur backend (`conjur`), on Conjur's REST API with our reqwest client
//! (CyberArk publishes no Rust SDK).
//!
//! `remoteRef.key` is a variable's id (`prod/db/password`); `remoteRef.version` a version
//! number (Conjur keeps a variable's last 20). The value is the variable's value as stored,
//! binary included. Conjur does not say which version a read of the latest returned, so only
//! a pinned read reports a version; a new value is still a new version here, because the
//! operator compares content.
//!
//! | call | request |
//! |---|---|
//! | log in, API key (`authn`) | `POST /authn/{account}/{login}/authenticate`, the API key as the body |
//! | log in, JWT (`authn-jwt`) | `POST /authn-jwt/{serviceID}/{account}[/{hostId}]/authenticate`, form `jwt=` a ServiceAccount token (TokenRequest) |
//! | one value | `GET /secrets/{account}/variable/{id}[?version=N]` |
//! | several latest values | `GET /secrets?variable_ids={account}:variable:{id},…` with `Accept: base64` (binary-safe) |
//! | `find` | `GET /resources/{account}?kind=variable&search=&limit=&offset=`, then the values in batches |
//! | the store's check | `GET /whoami` |
//!
//! The access token Conjur answers a login with lives 8 minutes; it is kept and sent as
//! `Authorization: Token token="…"` until a minute before then, and a 401 on a kept token
//! logs in again once (the server may have restarted). `find` matches `name.regexp` and
//! `path` (a prefix of the id, at a `/`) against variable ids and `tags` against their
//! annotations. The API key is read when the store is connected; a JWT login asks for a
//! fresh ServiceAccount token each time.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secretsync_api::{ConjurAuth, ConjurProvider, Find, ServiceAccountRef};
use serde_json::Value;

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::rest;
use crate::value::{ExposeSecret, RemoteValue, SecretBytes, SecretString};

/// How long an access token is used: Conjur's live 8 minutes, less a margin for clocks and
/// slow requests.
const TOKEN_REUSE: Duration = Duration::from_secs(7 * 60);
/// `GET /resources` page size.
const LIST_PAGE: usize = 100;
/// Variables per batch read, keeping the URL short.
const BATCH: usize = 50;

/// A connected Conjur store.
pub struct Conjur {
    http: reqwest::Client,
    url: reqwest::Url,
    account: String,
    login: Login,
    token: rest::KeptToken,
}

enum Login {
    ApiKey {
        login: String,
        api_key: SecretString,
    },
    Jwt {
        service_id: String,
        host_id: Option<String>,
        account: ServiceAccountRef,
        audiences: Vec<String>,
        /// Boxed: the kube client is large, and the other login small.
        ctx: Box<ConnectContext>,
    },
}

/// Names only: the API key and the tokens never reach a log.
impl std::fmt::Debug for Conjur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conjur")
            .field("url", &self.url.as_str())
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Conjur {
    /// Connects to the server `spec` describes, reading an API key through `ctx`.
    pub async fn connect(spec: &ConjurProvider, ctx: &ConnectContext) -> Result<Conjur> {
        let raw = spec.url.trim().trim_end_matches('/');
        let http = rest::client(raw, spec.ca_bundle.as_deref())?;
        let url = reqwest::Url::parse(raw)
            .map_err(|e| ProviderError::InvalidConfig(format!("url {raw:?} is not a URL: {e}")))?;
        let account = spec.auth.account().trim().to_owned();
        if account.is_empty() {
            return Err(ProviderError::InvalidConfig(
                "auth's account is empty".to_owned(),
            ));
        }
        let login = match &spec.auth {
            ConjurAuth::ApiKey(key) => {
                let login = credentials::read_key(ctx, &key.user_ref, "auth.apikey.userRef")
                    .await?
                    .expose_secret()
                    .trim()
                    .to_owned();
                let api_key =
                    credentials::read_key(ctx, &key.api_key_ref, "auth.apikey.apiKeyRef").await?;
                Login::ApiKey { login, api_key }
            }
            ConjurAuth::Jwt(jwt) => Login::Jwt {
                service_id: jwt.service_id.clone(),
                host_id: jwt.host_id.clone(),
                account: ServiceAccountRef {
                    name: jwt.service_account_ref.name.clone(),
                    namespace: jwt.service_account_ref.namespace.clone(),
                },
                audiences: jwt
                    .service_account_ref
                    .audiences
                    .clone()
                    .unwrap_or_default(),
                ctx: Box::new(ctx.clone()),
            },
        };
        Ok(Conjur {
            http,
            url,
            account,
            login,
            token: rest::KeptToken::new(TOKEN_REUSE),
        })
    }

    /// `url` with `segments` appended, each percent-encoded as one segment.
    fn endpoint(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn server(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// A fresh access token (base64, as the `Token` header wants it).
    async fn log_in(&self) -> Result<SecretString> {
        let request = match &self.login {
            Login::ApiKey { login, api_key } => self
                .http
                .post(self.endpoint(&["authn", &self.account, login, "authenticate"]))
                .body(api_key.expose_secret().to_owned()),
            Login::Jwt {
                service_id,
                host_id,
                account,
                audiences,
                ctx,
            } => {
                let field = "auth.jwt.serviceAccountRef";
                let jwt =
                    credentials::service_account_token(ctx, account, audiences, field).await?;
                let mut path = vec!["authn-jwt", service_id, &self.account];
                path.extend(host_id.as_deref());
                path.push("authenticate");
                let form: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("jwt", jwt.expose_secret())
                    .finish();
                self.http
                    .post(self.endpoint(&path))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
            }
        };
        let doing = "logging in";
        let response = request
            .header("accept-encoding", "base64")
            .send()
            .await
            .map_err(|e| rest::transport(&e, self.server(), doing))?;
        let code = response.status().as_u16();
        if !response.status().is_success() {
            // A refused login is a credential problem whatever the status says.
            return Err(match rest::status(code, self.server(), doing, "") {
                ProviderError::NotFound { .. } | ProviderError::PermissionDenied(_) => {
                    ProviderError::AuthFailed(format!(
                        "{} refused the login ({code}): check the account, login and \
                         authenticator",
                        self.server()
                    ))
                }
                other => other,
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| rest::transport(&e, self.server(), doing))?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        // Asked for base64; a server that ignored that sent the token's JSON.
        let token = if text.starts_with('{') {
            STANDARD.encode(text.as_bytes())
        } else {
            text
        };
        Ok(SecretString::from(token))
    }

    /// GETs `url` with the access token (logging in again once on a 401); the body of a
    /// success, else the error for `doing`, `key` naming what a 404 is about.
    async fn get(
        &self,
        url: reqwest::Url,
        accept: Option<&str>,
        doing: &str,
        key: &str,
    ) -> Result<Vec<u8>> {
        let mut refused = None;
        loop {
            let token = self.token.get(refused.as_ref(), self.log_in()).await?;
            let mut request = self.http.get(url.clone()).header(
                "authorization",
                format!("Token token=\"{}\"", token.expose_secret()),
            );
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = request
                .send()
                .await
                .map_err(|e| rest::transport(&e, self.server(), doing))?;
            let code = response.status().as_u16();
            if code == 401 && refused.is_none() {
                refused = Some(token);
                continue;
            }
            if !response.status().is_success() {
                return Err(rest::status(code, self.server(), doing, key));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| rest::transport(&e, self.server(), doing))?;
            return Ok(body.to_vec());
        }
    }

    /// Reads the variable `key`, at `version` when given (else the latest).
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        let id = variable_id(key)?;
        let version = version.map(str::trim).filter(|v| !v.is_empty());
        let mut url = self.endpoint(&["secrets", &self.account, "variable", id]);
        let shown = match version {
            Some(v) => {
                if v.parse::<u32>().is_err() {
                    return Err(ProviderError::InvalidConfig(format!(
                        "version {v:?} of variable {key:?} is not a version number"
                    )));
                }
                url.query_pairs_mut().append_pair("version", v);
                format!("{id}@{v}")
            }
            None => id.to_owned(),
        };
        let bytes = self
            .get(url, None, &format!("reading variable {shown:?}"), &shown)
            .await?;
        Ok(RemoteValue {
            bytes: SecretBytes::new(bytes),
            version: version.map(str::to_owned),
        })
    }

    /// Reads several variables; the latest versions in batches
    /// (`GET /secrets?variable_ids=`), pinned ones one by one. A batch Conjur refuses as a
    /// whole (one id missing) is read one by one, so each key gets its own answer.
    pub async fn fetch_many(&self, refs: &[(&str, Option<&str>)]) -> Vec<Result<RemoteValue>> {
        let mut results: Vec<Option<Result<RemoteValue>>> = vec![None; refs.len()];
        let latest: Vec<usize> = (0..refs.len())
            .filter(|&i| refs[i].1.is_none_or(|v| v.trim().is_empty()))
            .filter(|&i| variable_id(refs[i].0).is_ok_and(|id| !id.contains(',')))
            .collect();
        for chunk in latest.chunks(BATCH) {
            let ids: Vec<&str> = chunk.iter().map(|&i| refs[i].0.trim()).collect();
            match self.batch(&ids).await {
                Ok(mut values) => {
                    for (&i, id) in chunk.iter().zip(&ids) {
                        results[i] = values.remove(*id).map(|bytes| {
                            Ok(RemoteValue {
                                bytes,
                                version: None,
                            })
                        });
                    }
                }
                Err(ProviderError::NotFound { .. }) => {}
                Err(e) => chunk
                    .iter()
                    .for_each(|&i| results[i] = Some(Err(e.clone()))),
            }
        }
        let mut out = Vec::with_capacity(refs.len());
        for (result, (key, version)) in results.into_iter().zip(refs) {
            out.push(match result {
                Some(result) => result,
                None => self.fetch(key, *version).await,
            });
        }
        out
    }

    /// The latest values of the variables `ids`, by id.
    async fn batch(&self, ids: &[&str]) -> Result<std::collections::BTreeMap<String, SecretBytes>> {
        let mut url = self.endpoint(&["secrets"]);
        let prefix = format!("{}:variable:", self.account);
        let joined: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
        url.query_pairs_mut()
            .append_pair("variable_ids", &joined.join(","));
        let body = self
            .get(url, Some("base64"), "reading variables in a batch", "")
            .await?;
        let map: serde_json::Map<String, Value> = serde_json::from_slice(&body).map_err(|_| {
            ProviderError::Unavailable(format!(
                "{} answered a batch read with something that is not a JSON object",
                self.server()
            ))
        })?;
        let mut values = std::collections::BTreeMap::new();
        for (full, value) in map {
            let Some(id) = full.strip_prefix(&prefix) else {
                continue;
            };
            let bytes = value
                .as_str()
                .and_then(|b64| STANDARD.decode(b64).ok())
                .ok_or_else(|| {
                    ProviderError::Unavailable(format!(
                        "{} answered a batch read of {id:?} without a base64 value",
                        self.server()
                    ))
                })?;
            values.insert(id.to_owned(), SecretBytes::new(bytes));
        }
        Ok(values)
    }

    /// The latest value of every variable whose id matches `find.name.regexp`, lies under
    /// `find.path` and has every annotation `find.tags` names, in id order.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "conjur", &["tags", "path"])?;
        let prefix = format!("{}:variable:", self.account);
        let mut ids = Vec::new();
        for offset in (0..).step_by(LIST_PAGE) {
            let mut url = self.endpoint(&["resources", &self.account]);
            url.query_pairs_mut()
                .append_pair("kind", "variable")
                .append_pair("limit", &LIST_PAGE.to_string())
                .append_pair("offset", &offset.to_string());
            if let Some(path) = matcher.path {
                url.query_pairs_mut().append_pair("search", path);
            }
            let body = self.get(url, None, "listing variables", "").await?;
            let page: Vec<Value> = serde_json::from_slice(&body).map_err(|_| {
                ProviderError::Unavailable(format!(
                    "{} answered a listing with something that is not a JSON array",
                    self.server()
                ))
            })?;
            for resource in &page {
                let Some(id) = resource["id"]
                    .as_str()
                    .and_then(|i| i.strip_prefix(&prefix))
                else {
                    continue;
                };
                let annotations: Vec<(&str, &str)> = resource["annotations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| Some((a["name"].as_str()?, a["value"].as_str()?)))
                    .collect();
                if matcher.name_matches(id)
                    && matcher.under_path(id)
                    && matcher.tags_match(&annotations)
                {
                    ids.push(id.to_owned());
                    if ids.len() > MAX_FOUND {
                        return Err(too_many());
                    }
                }
            }
            if page.len() < LIST_PAGE {
                break;
            }
        }
        ids.sort();
        ids.dedup();
        let refs: Vec<(&str, Option<&str>)> = ids.iter().map(|id| (id.as_str(), None)).collect();
        let values = self.fetch_many(&refs).await;
        ids.into_iter()
            .zip(values)
            .map(|(id, value)| Ok((id, value?)))
            .collect()
    }

    /// Checks the login: a token, and Conjur answering `GET /whoami` with it.
    pub async fn check(&self) -> Result<()> {
        self.get(
            self.endpoint(&["whoami"]),
            None,
            "checking the login (whoami)",
            "",
        )
        .await
        .map(drop)
    }
}

/// The variable id of a remote key, trimmed; refused when empty.
fn variable_id(key: &str) -> Result<&str> {
    let id = key.trim();
    if id.is_empty() || id.chars().any(char::is_control) {
        return Err(ProviderError::InvalidConfig(format!(
            "remote key {key:?} is not a Conjur variable id"
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_ids_are_trimmed_and_never_empty() {
        assert!(variable_id(" ").is_err());
        assert_eq!(variable_id(" prod/db ").unwrap(), "prod/db");
    }
}
