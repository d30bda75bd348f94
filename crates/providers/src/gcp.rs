//! The Google Cloud Secret Manager backend, on Google's official client
//! (`google-cloud-secretmanager-v1`, REST transport).
//!
//! `remoteRef.key` is a secret's ID in the store's project (`db-password`), or a full
//! resource name (`projects/other/secrets/db-password`, also regional
//! `projects/p/locations/l/secrets/s`). `remoteRef.version` is a version number or an alias;
//! omitted or empty, `latest`. The value is the version's payload; the version reported is
//! the number in the name Secret Manager answers with, so `latest` is resolved to the
//! version actually read. The payload's CRC32C, when the server sends one, is checked.
//!
//! `find` lists the project's secrets (`ListSecrets`), narrowed on the server by labels
//! (`find.tags`, GCP's labels playing the part of tags) and by the literal start of an
//! anchored name pattern, then matched here exactly (`find.name.regexp` against the secret
//! ID, every label), then reads the latest version of each.
//!
//! Credentials: a service-account key JSON read from the Secret `auth.secretRef` names
//! (read when the store is connected: after replacing it, edit the store or restart the
//! operator), or Application Default Credentials (on GKE, Workload Identity through the
//! metadata server). The client retries little and gives up quickly (see the constants):
//! the operator has its own backoff, and a dead endpoint must turn into `Unavailable` within
//! seconds.

use std::fmt;
use std::time::Duration;

use google_cloud_auth::credentials::{self as gauth, Credentials, service_account};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_secretmanager_v1::Error as GcpError;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use secretsync_api::{Find, GcpAuth, GcpProvider, check_gcp_project_id};

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result, cut, root_cause};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::value::{ExposeSecret, RemoteValue, SecretBytes};

/// Time for one attempt of a request, answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per request (the first one included).
const MAX_ATTEMPTS: u32 = 2;
/// `ListSecrets` page size for `find`.
const LIST_PAGE_SIZE: i32 = 100;
/// The version read when none is given.
const LATEST: &str = "latest";
/// Google's default endpoint, for messages.
const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";

/// A connected Secret Manager store.
pub struct Gcp {
    client: SecretManagerService,
    project: String,
    endpoint: Option<String>,
    /// Whose credentials are used, for messages: "the service-account key in Secret
    /// payments/gcp".
    identity: String,
}

impl Gcp {
    /// Connects to the store `spec` describes, reading the service-account key a
    /// `auth.secretRef` names through `ctx`.
    pub async fn connect(spec: &GcpProvider, ctx: &ConnectContext) -> Result<Gcp> {
        let (credentials, identity) = match &spec.auth {
            Some(GcpAuth::SecretRef(secret_ref)) => {
                const FIELD: &str = "auth.secretRef.secretAccessKeySecretRef";
                let selector = &secret_ref.secret_access_key_secret_ref;
                let namespace =
                    credentials::namespace_for(ctx, selector.namespace.as_deref(), FIELD)?;
                let identity = format!(
                    "the service-account key in Secret {namespace}/{} (key {:?})",
                    selector.name, selector.key
                );
                let key = credentials::read_key(ctx, selector, FIELD).await?;
                (
                    service_account_credentials(key.expose_secret(), &identity)?,
                    identity,
                )
            }
            None => {
                crate::tls::install_crypto_provider();
                let credentials = gauth::Builder::default().build().map_err(|e| {
                    ProviderError::AuthFailed(format!(
                        "no Application Default Credentials: {}",
                        root_cause(&e)
                    ))
                })?;
                (credentials, ADC.to_owned())
            }
        };
        Self::build(spec, credentials, identity).await
    }

    /// A store authenticated with the service-account key `key_json` (`spec.auth` is
    /// ignored), for tests and tools.
    pub async fn with_service_account_key(spec: &GcpProvider, key_json: &str) -> Result<Gcp> {
        let identity = "the service-account key given".to_owned();
        let credentials = service_account_credentials(key_json, &identity)?;
        Self::build(spec, credentials, identity).await
    }

    async fn build(spec: &GcpProvider, credentials: Credentials, identity: String) -> Result<Gcp> {
        let project = spec.project_id.trim();
        check_gcp_project_id(project)
            .map_err(|e| ProviderError::InvalidConfig(format!("projectID: {e}")))?;
        let endpoint = spec
            .endpoint
            .as_deref()
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty());
        if let Some(endpoint) = endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ProviderError::InvalidConfig(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        // Both the client's HTTPS and the key's signing take the process's provider.
        crate::tls::install_crypto_provider();
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(200))
            .with_maximum_delay(Duration::from_secs(1))
            .clamp();
        let mut builder = SecretManagerService::builder()
            .with_credentials(credentials)
            .with_retry_policy(Aip194Strict.with_attempt_limit(MAX_ATTEMPTS))
            .with_backoff_policy(backoff)
            .with_attempt_timeout(ATTEMPT_TIMEOUT);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let client = builder.build().await.map_err(|e| {
            ProviderError::InvalidConfig(format!(
                "cannot build the Secret Manager client: {}",
                root_cause(&e)
            ))
        })?;
        Ok(Gcp {
            client,
            project: project.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            identity,
        })
    }

    /// Reads the secret `key` at `version` (a number or alias; `latest` when omitted) by
    /// `AccessSecretVersion`.
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        let secret = self.secret_name(key)?;
        let version = version.map(str::trim).filter(|v| !v.is_empty());
        if let Some(v) = version
            && !is_id(v)
        {
            return Err(ProviderError::InvalidConfig(format!(
                "version {v:?} of secret {key:?} is not a version number or alias"
            )));
        }
        let shown = match version {
            Some(v) => format!("{key}@{v}"),
            None => key.to_owned(),
        };
        let name = format!("{secret}/versions/{}", version.unwrap_or(LATEST));
        let response = self
            .client
            .access_secret_version()
            .set_name(name)
            .send()
            .await
            .map_err(|e| self.describe(&e, &format!("reading secret {shown:?}"), &shown))?;
        let payload = response.payload.ok_or_else(|| {
            ProviderError::Unavailable(format!(
                "Secret Manager answered for secret {shown:?} without a payload"
            ))
        })?;
        if let Some(expected) = payload.data_crc32c
            && i64::from(crc32c(&payload.data)) != expected
        {
            return Err(ProviderError::Unavailable(format!(
                "the payload of secret {shown:?} does not match its CRC32C checksum (damaged \
                 in transit?)"
            )));
        }
        Ok(RemoteValue {
            bytes: SecretBytes::new(payload.data.to_vec()),
            version: version_number(&response.name).map(str::to_owned),
        })
    }

    /// The latest value of every secret whose ID matches `find.name.regexp` and whose
    /// labels hold all of `find.tags`, in name order.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "gcpsm", &["tags"])?;
        let filter = list_filter(find, &matcher);
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .list_secrets()
                .set_parent(format!("projects/{}", self.project))
                .set_page_size(LIST_PAGE_SIZE)
                .set_filter(filter.clone().unwrap_or_default())
                .set_page_token(std::mem::take(&mut page_token))
                .send()
                .await
                .map_err(|e| self.describe(&e, "listing secrets (ListSecrets)", ""))?;
            for secret in &page.secrets {
                let Some(id) = secret.name.rsplit_once("/secrets/").map(|(_, id)| id) else {
                    continue;
                };
                let labels: Vec<(&str, &str)> = secret
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if matcher.name_matches(id) && matcher.tags_match(&labels) {
                    names.push(id.to_owned());
                    if names.len() > MAX_FOUND {
                        return Err(too_many());
                    }
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        crate::find::read_each(names, |name| async move { self.fetch(&name, None).await }).await
    }

    /// Checks that Google accepts the credentials, by listing one secret. A denial still
    /// proves them valid (Google authenticated the request), and reading secrets does not
    /// need `secretmanager.secrets.list` (`roles/secretmanager.secretAccessor` lacks it), so
    /// it counts as success.
    pub async fn check(&self) -> Result<()> {
        let listed = self
            .client
            .list_secrets()
            .set_parent(format!("projects/{}", self.project))
            .set_page_size(1)
            .send()
            .await;
        match listed {
            Ok(_) => Ok(()),
            Err(e) => match self.describe(&e, "listing secrets to check the credentials", "") {
                ProviderError::PermissionDenied(_) => Ok(()),
                error => Err(error),
            },
        }
    }

    /// `projects/{project}/secrets/{key}`, or `key` itself when it is a resource name.
    fn secret_name(&self, key: &str) -> Result<String> {
        if key.starts_with("projects/") {
            let parts: Vec<&str> = key.split('/').collect();
            let well_formed = match parts.as_slice() {
                ["projects", p, "secrets", s] => is_id(p) && is_id(s),
                ["projects", p, "locations", l, "secrets", s] => is_id(p) && is_id(l) && is_id(s),
                _ => false,
            };
            return if well_formed {
                Ok(key.to_owned())
            } else {
                Err(ProviderError::InvalidConfig(format!(
                    "remote key {key:?} is not projects/PROJECT/secrets/SECRET or \
                     projects/PROJECT/locations/LOCATION/secrets/SECRET"
                )))
            };
        }
        if !is_id(key) {
            return Err(ProviderError::InvalidConfig(format!(
                "remote key {key:?} is not a secret ID (letters, digits, '-' and '_')"
            )));
        }
        Ok(format!("projects/{}/secrets/{key}", self.project))
    }

    fn endpoint_text(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }

    /// The user-facing error for `error` while `doing` something; `key` names the secret
    /// for a not-found error.
    fn describe(&self, error: &GcpError, doing: &str, key: &str) -> ProviderError {
        let endpoint = self.endpoint_text();
        let identity = &self.identity;
        if error.is_authentication() {
            let cause = root_cause(error);
            let transient =
                std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .find_map(|e| e.downcast_ref::<google_cloud_gax::error::CredentialsError>())
                .is_some_and(|e| e.is_transient());
            return if transient {
                ProviderError::Unavailable(format!(
                    "cannot get a Google access token for {identity} {doing}: {cause}"
                ))
            } else {
                ProviderError::AuthFailed(format!(
                    "cannot get a Google access token for {identity} {doing}: {cause}"
                ))
            };
        }
        if let Some(status) = error.status() {
            let detail = format!("{}: {}", status.code.name(), cut(&status.message));
            return match status.code {
                // A disabled or destroyed version answers FAILED_PRECONDITION: for the user
                // it is as missing as one never made.
                Code::NotFound | Code::FailedPrecondition => ProviderError::NotFound {
                    key: key.to_owned(),
                },
                Code::PermissionDenied => ProviderError::PermissionDenied(format!(
                    "{identity} may not do this {doing} ({detail}); grant it \
                     roles/secretmanager.secretAccessor on the secret or project"
                )),
                Code::Unauthenticated => ProviderError::AuthFailed(format!(
                    "Google rejected {identity} {doing} ({detail}); check that the key is valid \
                     and not disabled"
                )),
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Internal
                | Code::Unknown
                | Code::Aborted
                | Code::Cancelled => ProviderError::Unavailable(format!(
                    "Secret Manager at {endpoint} failed {doing} ({detail})"
                )),
                _ => ProviderError::InvalidConfig(format!(
                    "Secret Manager refused {doing} ({detail})"
                )),
            };
        }
        if let Some(status) = error.http_status_code() {
            return match status {
                401 | 403 => ProviderError::AuthFailed(format!(
                    "Google rejected {identity} {doing} (HTTP {status})"
                )),
                404 => ProviderError::Unavailable(format!(
                    "Secret Manager at {endpoint} has no such API (HTTP 404) {doing}; check the \
                     endpoint"
                )),
                s if s == 429 || s >= 500 => ProviderError::Unavailable(format!(
                    "Secret Manager at {endpoint} failed {doing} (HTTP {status})"
                )),
                _ => ProviderError::InvalidConfig(format!(
                    "Secret Manager refused {doing} (HTTP {status})"
                )),
            };
        }
        if error.is_timeout() {
            return ProviderError::Unavailable(format!(
                "no answer from Secret Manager at {endpoint} {doing} within {}s",
                ATTEMPT_TIMEOUT.as_secs()
            ));
        }
        if error.is_binding() || error.is_serialization() {
            return ProviderError::InvalidConfig(format!(
                "cannot build the request {doing}: {}",
                root_cause(error)
            ));
        }
        // Connection failures, I/O, an answer that is not Secret Manager's.
        let cause = root_cause(error);
        if crate::error::is_tls_trust_failure(&cause) {
            // No caBundle here: Google's endpoints have public certificates, and a private
            // endpoint must be trusted by the operator's roots.
            return ProviderError::TlsFailed(format!(
                "Secret Manager at {endpoint} {doing}: {cause}; its certificate is not \
                 trusted by the operator's roots"
            ));
        }
        ProviderError::Unavailable(format!(
            "cannot reach Secret Manager at {endpoint} {doing}: {cause}"
        ))
    }
}

const ADC: &str = "Application Default Credentials (GKE Workload Identity, \
                   GOOGLE_APPLICATION_CREDENTIALS or the metadata server)";

/// Credentials from a service-account key JSON. Neither the key nor parse errors (which may
/// quote it) end up in the message.
fn service_account_credentials(key_json: &str, identity: &str) -> Result<Credentials> {
    let not_a_key = || {
        ProviderError::AuthFailed(format!(
            "{identity} is not a service-account key (a JSON object with type \
             \"service_account\", client_email, private_key_id and private_key)"
        ))
    };
    let key: serde_json::Value = serde_json::from_str(key_json).map_err(|_| not_a_key())?;
    let is_key = ["client_email", "private_key"]
        .iter()
        .all(|field| key.get(field).is_some_and(serde_json::Value::is_string));
    if !is_key {
        return Err(not_a_key());
    }
    crate::tls::install_crypto_provider();
    service_account::Builder::new(key)
        .build()
        .map_err(|_| not_a_key())
}

/// Whether `s` may be a resource ID in a name (a secret, project, location or version):
/// letters, digits, '-', '_', '.' and ':' (domain-scoped projects), no '/'.
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// The version number in `projects/p/secrets/s/versions/3`.
fn version_number(name: &str) -> Option<&str> {
    name.rsplit_once("/versions/")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `ListSecrets` filter narrowing the listing on the server: every wanted label
/// (`labels.k=v`) and the literal start of an anchored name pattern (`name:prefix`, which
/// Google matches as "contains"), terms joined by AND. `None` when there is nothing to
/// filter on. Labels that would need quoting are left out; what the filter lets through is
/// matched exactly afterwards either way.
fn list_filter(find: &Find, matcher: &Matcher<'_>) -> Option<String> {
    // What GCP allows in label keys and values (lowercase letters, digits, '_', '-').
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
    };
    let mut terms: Vec<String> = Vec::new();
    if let Some(tags) = matcher.tags
        && tags.iter().all(|(k, v)| plain(k) && plain(v))
    {
        terms.extend(tags.iter().map(|(k, v)| format!("labels.{k}={v}")));
    }
    if let Some(prefix) = find.name.as_ref().and_then(|n| literal_prefix(&n.regexp)) {
        terms.push(format!("name:{prefix}"));
    }
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

/// The literal text every match of `^…` starts with, up to the first character that means
/// more than itself in a regular expression (or could not be a secret ID's); `None` when the
/// pattern is not anchored, starts with such a character or has an alternation anywhere
/// (`^a|b` matches names not starting with `a`). A character followed by a quantifier (`?`,
/// `*`, `{`) is not required, so it ends the prefix too.
fn literal_prefix(regexp: &str) -> Option<&str> {
    if regexp.contains('|') {
        return None;
    }
    let rest = regexp.strip_prefix('^')?;
    let mut end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    if rest[end..].starts_with(['?', '*', '{']) {
        end = end.saturating_sub(1);
    }
    (end > 0).then(|| &rest[..end])
}

/// CRC32C (Castagnoli), the checksum Secret Manager keeps of each payload.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl fmt::Debug for Gcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gcp")
            .field("project", &self.project)
            .field("endpoint", &self.endpoint)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720 B.4 and every CRC catalogue: CRC-32C of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn the_version_read_is_the_number_in_the_answered_name() {
        assert_eq!(
            version_number("projects/123/secrets/db/versions/7"),
            Some("7")
        );
        assert_eq!(version_number("projects/123/secrets/db"), None);
        assert_eq!(version_number("projects/123/secrets/db/versions/"), None);
    }

    #[test]
    fn anchored_patterns_give_their_literal_start_to_the_server_filter() {
        assert_eq!(literal_prefix("^payments-"), Some("payments-"));
        assert_eq!(literal_prefix("^payments-(api)$"), Some("payments-"));
        assert_eq!(
            literal_prefix("^payments-(api|queue)$"),
            None,
            "alternation"
        );
        assert_eq!(literal_prefix("^abc|^xyz"), None, "alternation");
        assert_eq!(literal_prefix("^db_v2$"), Some("db_v2"));
        // The character before a quantifier is optional: not part of the prefix.
        assert_eq!(literal_prefix("^dbs?-x"), Some("db"));
        assert_eq!(literal_prefix("^d*"), None);
        assert_eq!(literal_prefix("payments"), None, "not anchored");
        assert_eq!(literal_prefix("^(a|b)"), None);
        assert_eq!(literal_prefix("^a.b"), Some("a"));
    }

    #[test]
    fn ids_refuse_slashes_and_empty() {
        assert!(is_id("db-password_2"));
        assert!(is_id("example.com:proj"));
        for bad in ["", "a/b", "a b", "ä"] {
            assert!(!is_id(bad), "{bad:?}");
        }
    }
}
