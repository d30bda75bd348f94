//! The AWS Secrets Manager backend.
//!
//! `remoteRef.key` is a secret's name or ARN. `remoteRef.version` selects a version: a
//! UUID-shaped value (8-4-4-4-12 hex digits, the form AWS and the SDKs generate) is a
//! `VersionId`; anything else is a `VersionStage` (`AWSCURRENT`, `AWSPREVIOUS`, custom
//! labels). Omitted or empty: `AWSCURRENT`. A secret's value is its `SecretString`, or else
//! its `SecretBinary` bytes; the version id reported is the `VersionId` read.
//!
//! Credentials: the access keys in the Secrets `auth.secretRef` names (read through the
//! Kubernetes API, again whenever the SDK's credentials cache expires them, so rotated keys
//! are picked up), or the SDK's default chain (environment, IRSA web identity, instance
//! metadata); with `role`, those credentials assume it through STS. `endpoint` overrides
//! the Secrets Manager endpoint only: STS keeps the region's own (or
//! `AWS_ENDPOINT_URL_STS` from the operator's environment).
//!
//! The SDK retries little and gives up quickly (see the constants): the operator has its
//! own backoff, and a dead endpoint must turn into `Unavailable` within seconds.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use secretsync_api::{AwsAuth, AwsProvider, AwsSecretRef, Find};

use crate::ConnectContext;
use crate::credentials;
use crate::error::{ProviderError, Result, cut, root_cause};
use crate::find::{MAX_FOUND, Matcher, too_many};
use crate::value::{ExposeSecret, RemoteValue, SecretBytes, SecretString};

/// Time to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one attempt of a request, answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request (the first one included).
const MAX_ATTEMPTS: u32 = 2;
/// `BatchGetSecretValue` takes at most this many secret ids.
const BATCH_SIZE: usize = 20;
/// `ListSecrets` page size (the API's maximum).
const LIST_PAGE_SIZE: i32 = 100;
/// `ListSecrets` filters take at most this many values each.
const MAX_FILTER_VALUES: usize = 10;
/// The stage read when no version is given.
const CURRENT_STAGE: &str = "AWSCURRENT";

/// A connected AWS Secrets Manager store.
pub struct Aws {
    client: Client,
    region: String,
    endpoint: Option<String>,
    /// Whose credentials are used, for messages: "the access keys in Secret payments/aws".
    identity: String,
    /// Set when `BatchGetSecretValue` was denied (a policy that grants only
    /// `GetSecretValue`): from then on secrets are read one by one.
    batch_denied: AtomicBool,
}

/// Which version of a secret to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSelector<'a> {
    /// A `VersionId`.
    Id(&'a str),
    /// A `VersionStage` label.
    Stage(&'a str),
}

impl<'a> VersionSelector<'a> {
    /// The rule for `remoteRef.version`: UUID-shaped → `VersionId`, else `VersionStage`;
    /// `None` or empty → the `AWSCURRENT` stage.
    pub fn parse(version: Option<&'a str>) -> Self {
        match version.filter(|v| !v.is_empty()) {
            Some(v) if is_uuid(v) => VersionSelector::Id(v),
            Some(v) => VersionSelector::Stage(v),
            None => VersionSelector::Stage(CURRENT_STAGE),
        }
    }

    fn is_current(self) -> bool {
        self == VersionSelector::Stage(CURRENT_STAGE)
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Aws {
    /// Connects to the store `spec` describes. Access keys named by `auth.secretRef` are
    /// read through `ctx` when the SDK first needs them.
    pub async fn connect(spec: &AwsProvider, ctx: &ConnectContext) -> Result<Aws> {
        let (credentials, identity) = credentials_of(spec, ctx)?;
        Self::build(spec, credentials, identity).await
    }

    /// A store whose access keys are given directly instead of read from Kubernetes
    /// (`spec.auth` is ignored; `role` and everything else apply), for tests and tools.
    pub async fn with_static_credentials(
        spec: &AwsProvider,
        access_key_id: &str,
        secret_access_key: SecretString,
    ) -> Result<Aws> {
        let (credentials, identity) = static_credentials(access_key_id, secret_access_key);
        Self::build(spec, credentials, identity).await
    }

    async fn build(
        spec: &AwsProvider,
        credentials: Option<SharedCredentialsProvider>,
        identity: String,
    ) -> Result<Aws> {
        let shared = SharedConfig::load(spec, credentials, identity).await?;
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&shared.sdk);
        if let Some(endpoint) = &shared.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Aws {
            client: Client::from_conf(config.build()),
            region: shared.region,
            endpoint: shared.endpoint,
            identity: shared.identity,
            batch_denied: AtomicBool::new(false),
        })
    }

    /// Reads the secret `key` (name or ARN) at `version` (see the module docs for the
    /// rule), by `GetSecretValue`.
    pub async fn fetch(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        if key.is_empty() {
            return Err(ProviderError::InvalidConfig(
                "the remote key (secret name or ARN) is empty".to_owned(),
            ));
        }
        let selector = VersionSelector::parse(version);
        let mut request = self.client.get_secret_value().secret_id(key);
        request = match selector {
            VersionSelector::Id(id) => request.version_id(id),
            VersionSelector::Stage(stage) => request.version_stage(stage),
        };
        let shown = match selector {
            _ if selector.is_current() => key.to_owned(),
            VersionSelector::Id(v) | VersionSelector::Stage(v) => format!("{key}@{v}"),
        };
        match request.send().await {
            Ok(out) => remote_value(&shown, out.version_id, out.secret_string, out.secret_binary),
            Err(e) => Err(self.describe(e, &format!("reading secret {shown:?}"), &shown)),
        }
    }

    /// Reads many secrets; results in the order of `refs`. The current versions go through
    /// `BatchGetSecretValue` (at most 20 ids per call); pinned versions, and ids a batch
    /// did not answer, are read one by one.
    pub async fn fetch_many(&self, refs: &[(&str, Option<&str>)]) -> Vec<Result<RemoteValue>> {
        let mut current: Vec<&str> = Vec::new();
        for (key, version) in refs {
            if VersionSelector::parse(*version).is_current()
                && !key.is_empty()
                && !current.contains(key)
            {
                current.push(key);
            }
        }
        let mut batched = HashMap::new();
        // One secret is one GetSecretValue either way.
        if current.len() > 1 {
            for chunk in current.chunks(BATCH_SIZE) {
                self.batch_get(chunk, &mut batched).await;
            }
        }
        let mut values = Vec::with_capacity(refs.len());
        for (key, version) in refs {
            let value = match batched.get(key) {
                Some(result) if VersionSelector::parse(*version).is_current() => result.clone(),
                _ => self.fetch(key, *version).await,
            };
            values.push(value);
        }
        values
    }

    /// One `BatchGetSecretValue` for `ids` (following its pages), recording each answer in
    /// `out`. Ids it does not answer stay out of `out`.
    async fn batch_get<'k>(
        &self,
        ids: &[&'k str],
        out: &mut HashMap<&'k str, Result<RemoteValue>>,
    ) {
        if self.batch_denied.load(Ordering::Relaxed) {
            return;
        }
        let mut next_token = None;
        loop {
            let response = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.iter().map(|id| (*id).to_owned()).collect()))
                .set_next_token(next_token.take())
                .send()
                .await;
            let output = match response {
                Ok(output) => output,
                Err(e) => {
                    match self.describe(e, "reading secrets (BatchGetSecretValue)", "") {
                        ProviderError::PermissionDenied(_) => {
                            tracing::info!(
                                identity = %self.identity,
                                "BatchGetSecretValue is not allowed; reading secrets one by one"
                            );
                            self.batch_denied.store(true, Ordering::Relaxed);
                        }
                        error => {
                            for id in ids {
                                out.entry(*id).or_insert_with(|| Err(error.clone()));
                            }
                        }
                    }
                    return;
                }
            };
            for entry in output.secret_values.unwrap_or_default() {
                let Some(id) = ids.iter().find(|id| {
                    Some(**id) == entry.name.as_deref() || Some(**id) == entry.arn.as_deref()
                }) else {
                    continue;
                };
                let value = remote_value(
                    id,
                    entry.version_id,
                    entry.secret_string,
                    entry.secret_binary,
                );
                out.insert(*id, value);
            }
            for error in output.errors.unwrap_or_default() {
                let Some(id) = ids
                    .iter()
                    .find(|id| Some(**id) == error.secret_id.as_deref())
                else {
                    continue;
                };
                let error = self.classify(
                    error.error_code.as_deref(),
                    error.message.as_deref(),
                    None,
                    &format!("reading secret {id:?}"),
                    id,
                );
                out.insert(*id, Err(error));
            }
            match output.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return,
            }
        }
    }

    /// The current value of every secret whose name matches `find.name.regexp` and that
    /// has all of `find.tags`, in name order. Tags narrow `ListSecrets` on the server and
    /// are checked exactly here; the name pattern is applied here.
    pub async fn find(&self, find: &Find) -> Result<Vec<(String, RemoteValue)>> {
        let matcher = Matcher::new(find, "aws", &["tags"])?;
        let filters = tag_filters(&matcher);
        let mut names = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .max_results(LIST_PAGE_SIZE)
                .set_filters(filters.clone())
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| self.describe(e, "listing secrets (ListSecrets)", ""))?;
            for entry in page.secret_list.unwrap_or_default() {
                let tags: Vec<(&str, &str)> = entry
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?, t.value()?)))
                    .collect();
                let Some(name) = entry.name() else { continue };
                if matcher.name_matches(name) && matcher.tags_match(&tags) {
                    names.push(name.to_owned());
                    if names.len() > MAX_FOUND {
                        return Err(too_many());
                    }
                }
            }
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        names.sort();
        names.dedup();
        let refs: Vec<(&str, Option<&str>)> = names.iter().map(|n| (n.as_str(), None)).collect();
        let values = self.fetch_many(&refs).await;
        names
            .into_iter()
            .zip(values)
            .map(|(name, value)| Ok((name, value?)))
            .collect()
    }

    /// Checks that AWS accepts the credentials, by listing one secret. A denial still
    /// proves the credentials valid (AWS authenticated the request), and reading secrets
    /// does not need `ListSecrets`, so it counts as success.
    pub async fn check(&self) -> Result<()> {
        let listed = self.client.list_secrets().max_results(1).send().await;
        match listed {
            Ok(_) => Ok(()),
            Err(e) => match self.describe(e, "listing secrets to check the credentials", "") {
                ProviderError::PermissionDenied(_) => Ok(()),
                error => Err(error),
            },
        }
    }

    fn endpoint_text(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("the {} regional endpoint", self.region),
        }
    }

    /// The user-facing error for `error` while `doing` something; `key` names the secret
    /// for a not-found error.
    fn describe<E>(&self, error: SdkError<E>, doing: &str, key: &str) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let Some(found) = credentials_failure(&error) {
            return found;
        }
        let endpoint = self.endpoint_text();
        match &error {
            SdkError::ServiceError(_) => {
                let status = error.raw_response().map(|r| r.status().as_u16());
                self.classify(error.code(), error.message(), status, doing, key)
            }
            SdkError::TimeoutError(_) => ProviderError::Unavailable(format!(
                "no answer from Secrets Manager at {endpoint} {doing} within {}s",
                OPERATION_TIMEOUT.as_secs()
            )),
            SdkError::DispatchFailure(_) => {
                let cause = root_cause(&error);
                if crate::error::is_tls_trust_failure(&cause) {
                    ProviderError::TlsFailed(format!(
                        "Secrets Manager at {endpoint} {doing}: {cause}; the endpoint's \
                         certificate is not trusted by the operator's roots"
                    ))
                } else {
                    ProviderError::Unavailable(format!(
                        "cannot reach Secrets Manager at {endpoint} {doing}: {cause}"
                    ))
                }
            }
            SdkError::ConstructionFailure(_) => ProviderError::InvalidConfig(format!(
                "cannot build the request {doing}: {}",
                root_cause(&error)
            )),
            _ => ProviderError::Unavailable(format!(
                "unexpected answer from Secrets Manager at {endpoint} {doing}"
            )),
        }
    }

    /// The error for an error code AWS answered with (a whole request's, or one secret's
    /// in a batch).
    fn classify(
        &self,
        code: Option<&str>,
        message: Option<&str>,
        status: Option<u16>,
        doing: &str,
        key: &str,
    ) -> ProviderError {
        let code = code.unwrap_or_default();
        let detail = match (code, message.map(cut)) {
            ("", None) => status.map_or_else(|| "no error code".to_owned(), |s| s.to_string()),
            ("", Some(m)) => m,
            (c, None) => c.to_owned(),
            (c, Some(m)) => format!("{c}: {m}"),
        };
        let identity = &self.identity;
        match code {
            "ResourceNotFoundException" => ProviderError::NotFound {
                key: key.to_owned(),
            },
            // What AWS ("… it was marked for deletion") and moto ("… currently marked
            // deleted") answer for a secret whose deletion is scheduled: the secret is
            // there, and comes back with RestoreSecret until the recovery window ends.
            "InvalidRequestException"
                if message.is_some_and(|m| {
                    m.contains("marked for deletion") || m.contains("marked deleted")
                }) =>
            {
                ProviderError::KeyDeleted {
                    key: key.to_owned(),
                    detail: "is scheduled for deletion in Secrets Manager; restore it \
                             (aws secretsmanager restore-secret) or point remoteRef at another \
                             secret"
                        .to_owned(),
                }
            }
            "AccessDeniedException" | "AccessDenied" | "DecryptionFailure" => {
                ProviderError::PermissionDenied(format!(
                    "{identity} may not do this {doing} ({detail}); check its IAM policy and \
                     the secret's KMS key policy"
                ))
            }
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken" => ProviderError::AuthFailed(format!(
                "AWS rejected {identity} {doing} ({detail}); check that the credentials are \
                 valid and not expired"
            )),
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "InternalServiceError"
            | "InternalFailure"
            | "ServiceUnavailable" => ProviderError::Unavailable(format!(
                "Secrets Manager at {} failed {doing} ({detail})",
                self.endpoint_text()
            )),
            // An error body the protocol cannot parse (moto answers auth failures in XML):
            // the status still says what kind of failure it is.
            _ if matches!(status, Some(401 | 403)) => ProviderError::AuthFailed(format!(
                "AWS rejected {identity} {doing} ({detail}); check that the credentials are \
                 valid and allowed to do this"
            )),
            _ if status.is_some_and(|s| s == 429 || s >= 500) => {
                ProviderError::Unavailable(format!(
                    "Secrets Manager at {} failed {doing} ({detail})",
                    self.endpoint_text()
                ))
            }
            _ => {
                ProviderError::InvalidConfig(format!("Secrets Manager refused {doing} ({detail})"))
            }
        }
    }
}

/// What every AWS client of a store is built from: the SDK config (region, HTTPS client,
/// retries, timeouts, credentials, the assumed role), so the store and its SQS queue are
/// read as the same identity.
struct SharedConfig {
    sdk: SdkConfig,
    region: String,
    /// `spec.endpoint`: Secrets Manager's only.
    endpoint: Option<String>,
    identity: String,
}

impl SharedConfig {
    async fn load(
        spec: &AwsProvider,
        credentials: Option<SharedCredentialsProvider>,
        identity: String,
    ) -> Result<SharedConfig> {
        let region = spec.region.trim();
        if region.is_empty() {
            return Err(ProviderError::InvalidConfig("region is empty".to_owned()));
        }
        let endpoint = spec
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        if let Some(endpoint) = endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ProviderError::InvalidConfig(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }

        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
            .region(Region::new(region.to_owned()))
            .http_client(https_client())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            .timeout_config(timeouts(ATTEMPT_TIMEOUT));
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let mut sdk: SdkConfig = loader.load().await;
        let mut identity = identity;
        if let Some(role) = spec.role.as_deref().filter(|r| !r.is_empty()) {
            let assumed = AssumeRoleProvider::builder(role)
                .session_name("secretsync")
                .configure(&sdk)
                .build()
                .await;
            sdk = sdk
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(assumed))
                .build();
            identity = format!("role {role} (assumed with {identity})");
        }
        Ok(SharedConfig {
            sdk,
            region: region.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            identity,
        })
    }
}

/// Timeouts with this much time for one attempt (a long poll needs its wait on top).
fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(OPERATION_TIMEOUT.max(attempt * MAX_ATTEMPTS))
        .build()
}

/// The credentials `spec.auth` names (`None`: the SDK's default chain), and whose they
/// are, for messages.
fn credentials_of(
    spec: &AwsProvider,
    ctx: &ConnectContext,
) -> Result<(Option<SharedCredentialsProvider>, String)> {
    Ok(match &spec.auth {
        Some(AwsAuth::SecretRef(refs)) => {
            let provider = SecretRefCredentials::new(ctx, refs)?;
            let identity = format!("the access keys in {}", provider.location);
            (Some(SharedCredentialsProvider::new(provider)), identity)
        }
        None => (None, DEFAULT_CHAIN.to_owned()),
    })
}

fn static_credentials(
    access_key_id: &str,
    secret_access_key: SecretString,
) -> (Option<SharedCredentialsProvider>, String) {
    let credentials = Credentials::new(
        access_key_id,
        secret_access_key.expose_secret(),
        None,
        None,
        "secretsync-static",
    );
    (
        Some(SharedCredentialsProvider::new(credentials)),
        format!("access key {access_key_id}"),
    )
}

const DEFAULT_CHAIN: &str =
    "the SDK's default credentials (environment, IRSA web identity or instance metadata)";

/// The HTTPS client for every AWS call: rustls with ring, the provider kube uses. The SDK's
/// default client would compile aws-lc-rs in as a second provider.
fn https_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A secret version's value: its `SecretString`, or else its `SecretBinary`.
fn remote_value(
    key: &str,
    version_id: Option<String>,
    string: Option<String>,
    binary: Option<Blob>,
) -> Result<RemoteValue> {
    let bytes = match (string, binary) {
        (Some(text), _) => SecretBytes::from(text),
        (None, Some(blob)) => SecretBytes::new(blob.into_inner()),
        (None, None) => {
            return Err(ProviderError::Unavailable(format!(
                "Secrets Manager answered for secret {key:?} without a value"
            )));
        }
    };
    Ok(RemoteValue {
        bytes,
        version: version_id,
    })
}

/// `ListSecrets` filters that narrow the listing to secrets with the wanted tag keys and
/// values. `None` when there is nothing to filter on or the filters could not express it
/// (too many tags, characters filters refuse); the tags are checked exactly afterwards.
fn tag_filters(matcher: &Matcher<'_>) -> Option<Vec<Filter>> {
    let tags = matcher.tags.filter(|t| !t.is_empty())?;
    // The characters ListSecrets accepts in filter values, without a leading '!' (negation).
    let filterable = |s: &str| {
        !s.is_empty()
            && !s.starts_with('!')
            && s.len() <= 512
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || " :_@/+=.-".contains(c))
    };
    if tags.len() > MAX_FILTER_VALUES || !tags.iter().all(|(k, v)| filterable(k) && filterable(v)) {
        return None;
    }
    let filter = |key: FilterNameStringType, values: Vec<String>| {
        Filter::builder().key(key).set_values(Some(values)).build()
    };
    Some(vec![
        filter(FilterNameStringType::TagKey, tags.keys().cloned().collect()),
        filter(
            FilterNameStringType::TagValue,
            tags.values().cloned().collect(),
        ),
    ])
}

/// When a request failed because no credentials could be had: the error that says so.
/// Our own error (reading the access-key Secrets) is passed on as it was.
fn credentials_failure(error: &(dyn std::error::Error + 'static)) -> Option<ProviderError> {
    let chain = || std::iter::successors(Some(error), |e| e.source());
    if let Some(ours) = chain().find_map(|e| e.downcast_ref::<ProviderError>()) {
        return Some(ours.clone());
    }
    let credentials = chain().find_map(|e| e.downcast_ref::<CredentialsError>())?;
    Some(match credentials {
        CredentialsError::ProviderTimedOut(_) => ProviderError::Unavailable(format!(
            "cannot get AWS credentials: {}",
            root_cause(credentials)
        )),
        _ => ProviderError::AuthFailed(format!(
            "no usable AWS credentials: {}",
            root_cause(credentials)
        )),
    })
}

/// `ReceiveMessage` waits at most this long for a message (the API's maximum).
pub const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// `ReceiveMessage` and `DeleteMessageBatch` take at most this many messages.
const MAX_MESSAGES: usize = 10;

/// An SQS queue read with a store's AWS settings and credentials (instant sync's
/// `events.queueURL`). Requests go to the queue URL's own host: `spec.endpoint` is Secrets
/// Manager's, and a queue URL names where its queue lives (a VPC endpoint, an emulator).
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
    identity: String,
}

/// One received message. Its receipt handle deletes it; it is a credential of sorts (it
/// deletes the message), so it is never shown: `Debug` leaves it out.
pub struct Message {
    pub body: String,
    pub receipt: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The queue at `url`, read with the store's region, credentials and role.
    pub async fn connect(spec: &AwsProvider, url: &str, ctx: &ConnectContext) -> Result<Queue> {
        let (credentials, identity) = credentials_of(spec, ctx)?;
        Self::build(spec, url, credentials, identity).await
    }

    /// Like [`Queue::connect`] with access keys given directly, for tests and tools.
    pub async fn with_static_credentials(
        spec: &AwsProvider,
        url: &str,
        access_key_id: &str,
        secret_access_key: SecretString,
    ) -> Result<Queue> {
        let (credentials, identity) = static_credentials(access_key_id, secret_access_key);
        Self::build(spec, url, credentials, identity).await
    }

    async fn build(
        spec: &AwsProvider,
        url: &str,
        credentials: Option<SharedCredentialsProvider>,
        identity: String,
    ) -> Result<Queue> {
        let url = url.trim();
        let origin = queue_origin(url).ok_or_else(|| {
            ProviderError::InvalidConfig(format!(
                "events.queueURL {url:?} is not an http(s) URL with a host"
            ))
        })?;
        let shared = SharedConfig::load(spec, credentials, identity).await?;
        let config = aws_sdk_sqs::config::Builder::from(&shared.sdk)
            .endpoint_url(origin)
            // A long poll holds the request open for its wait: the attempt gets it on top.
            .timeout_config(timeouts(MAX_RECEIVE_WAIT + ATTEMPT_TIMEOUT));
        Ok(Queue {
            client: aws_sdk_sqs::Client::from_conf(config.build()),
            url: url.to_owned(),
            identity: shared.identity,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Up to 10 messages, waiting up to `wait` (at most 20 s) for the first (a long poll).
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Message>> {
        let wait = wait.min(MAX_RECEIVE_WAIT).as_secs() as i32;
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(wait)
            .max_number_of_messages(MAX_MESSAGES as i32)
            .send()
            .await
            .map_err(|e| self.describe(e, "receiving messages (ReceiveMessage)", true))?;
        Ok(received
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Message {
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Deletes the messages these receipt handles name (`DeleteMessageBatch`, 10 a call).
    /// A message not deleted comes back after its visibility timeout, so a failure costs a
    /// read, never a change; every batch is tried, and the first failure returned.
    pub async fn delete(&self, receipts: &[String]) -> Result<()> {
        let mut first_error = None;
        for chunk in receipts.chunks(MAX_MESSAGES) {
            if let Err(error) = self.delete_batch(chunk).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<()> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|e| {
                        ProviderError::InvalidConfig(format!(
                            "cannot build DeleteMessageBatch: {}",
                            root_cause(&e)
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let deleted = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            // AWS's message may quote a receipt handle: the error code only.
            .map_err(|e| self.describe(e, "deleting messages (DeleteMessageBatch)", false))?;
        match deleted.failed.first() {
            // The failure's code only: its message may quote the receipt handle, and its id
            // is our index.
            Some(failed) => Err(ProviderError::Unavailable(format!(
                "SQS queue {} did not delete {} of {} messages ({})",
                self.url,
                deleted.failed.len(),
                receipts.len(),
                failed.code,
            ))),
            None => Ok(()),
        }
    }

    /// The user-facing error for `error` while `doing` something; AWS's own message is
    /// quoted only when `quote` (a request that carries no receipt handle).
    fn describe<E>(&self, error: SdkError<E>, doing: &str, quote: bool) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let Some(found) = credentials_failure(&error) {
            return found;
        }
        let (url, identity) = (&self.url, &self.identity);
        match &error {
            SdkError::ServiceError(_) => {
                let status = error.raw_response().map(|r| r.status().as_u16());
                let code = error.code().unwrap_or_default();
                let message = error.message().filter(|_| quote).map(cut);
                let detail = match (code, message) {
                    ("", None) => {
                        status.map_or_else(|| "no error code".to_owned(), |s| s.to_string())
                    }
                    ("", Some(m)) => m,
                    (c, None) => c.to_owned(),
                    (c, Some(m)) => format!("{c}: {m}"),
                };
                match code {
                    "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => {
                        ProviderError::InvalidConfig(format!(
                            "SQS queue {url} does not exist ({detail})"
                        ))
                    }
                    "AccessDenied"
                    | "AccessDeniedException"
                    | "KmsAccessDenied"
                    | "KMS.AccessDeniedException" => ProviderError::PermissionDenied(format!(
                        "{identity} may not do this on SQS queue {url} {doing} ({detail}); it \
                         needs sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes"
                    )),
                    "InvalidClientTokenId"
                    | "UnrecognizedClientException"
                    | "SignatureDoesNotMatch"
                    | "InvalidSignatureException"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "ExpiredToken"
                    | "ExpiredTokenException" => ProviderError::AuthFailed(format!(
                        "SQS rejected {identity} {doing} ({detail})"
                    )),
                    _ if matches!(status, Some(401 | 403)) => ProviderError::AuthFailed(format!(
                        "SQS rejected {identity} {doing} ({detail})"
                    )),
                    _ if status.is_some_and(|s| s == 429 || s >= 500) => {
                        ProviderError::Unavailable(format!(
                            "SQS queue {url} failed {doing} ({detail})"
                        ))
                    }
                    _ => ProviderError::InvalidConfig(format!(
                        "SQS queue {url} refused {doing} ({detail})"
                    )),
                }
            }
            SdkError::TimeoutError(_) => {
                ProviderError::Unavailable(format!("no answer from SQS queue {url} {doing}"))
            }
            SdkError::DispatchFailure(_) => {
                let cause = root_cause(&error);
                if crate::error::is_tls_trust_failure(&cause) {
                    ProviderError::TlsFailed(format!(
                        "SQS queue {url} {doing}: {cause}; its certificate is not trusted by the \
                         operator's roots"
                    ))
                } else {
                    ProviderError::Unavailable(format!(
                        "cannot reach SQS queue {url} {doing}: {cause}"
                    ))
                }
            }
            SdkError::ConstructionFailure(_) => ProviderError::InvalidConfig(format!(
                "cannot build the request {doing}: {}",
                root_cause(&error)
            )),
            _ => ProviderError::Unavailable(format!(
                "unexpected answer from SQS queue {url} {doing}"
            )),
        }
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.url)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of a queue URL: where its requests go.
fn queue_origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_len = rest.find('/').unwrap_or(rest.len());
    (host_len > 0).then(|| &url[..url.len() - rest.len() + host_len])
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Access keys read from the Secrets an `auth.secretRef` names, each time the SDK asks
/// (its identity cache keeps them for a while), so a rotated Secret takes effect.
struct SecretRefCredentials {
    ctx: ConnectContext,
    refs: AwsSecretRef,
    /// "Secret payments/aws", for messages.
    location: String,
}

impl SecretRefCredentials {
    const ID_FIELD: &str = "auth.secretRef.accessKeyIdSecretRef";
    const SECRET_FIELD: &str = "auth.secretRef.secretAccessKeySecretRef";

    /// Resolves the references' namespaces now, so a misplaced namespace is a store error.
    fn new(ctx: &ConnectContext, refs: &AwsSecretRef) -> Result<Self> {
        let id = &refs.access_key_id_secret_ref;
        let secret = &refs.secret_access_key_secret_ref;
        let id_ns = credentials::namespace_for(ctx, id.namespace.as_deref(), Self::ID_FIELD)?;
        let secret_ns =
            credentials::namespace_for(ctx, secret.namespace.as_deref(), Self::SECRET_FIELD)?;
        let location = if (id_ns, &id.name) == (secret_ns, &secret.name) {
            format!("Secret {id_ns}/{}", id.name)
        } else {
            format!(
                "Secrets {id_ns}/{} and {secret_ns}/{}",
                id.name, secret.name
            )
        };
        Ok(Self {
            ctx: ctx.clone(),
            refs: refs.clone(),
            location,
        })
    }

    async fn load(&self) -> Result<Credentials, CredentialsError> {
        let id = credentials::read_key(
            &self.ctx,
            &self.refs.access_key_id_secret_ref,
            Self::ID_FIELD,
        )
        .await
        .map_err(CredentialsError::provider_error)?;
        let secret = credentials::read_key(
            &self.ctx,
            &self.refs.secret_access_key_secret_ref,
            Self::SECRET_FIELD,
        )
        .await
        .map_err(CredentialsError::provider_error)?;
        Ok(Credentials::new(
            id.expose_secret(),
            secret.expose_secret(),
            None,
            None,
            "secretsync-secret-ref",
        ))
    }
}

impl fmt::Debug for SecretRefCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRefCredentials")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl ProvideCredentials for SecretRefCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shaped_versions_are_ids_and_the_rest_stages() {
        let id = "3b8e3f7c-0c6e-4a57-9d8b-1f2a3b4c5d6e";
        assert_eq!(VersionSelector::parse(Some(id)), VersionSelector::Id(id));
        assert_eq!(
            VersionSelector::parse(Some("AWSPREVIOUS")),
            VersionSelector::Stage("AWSPREVIOUS")
        );
        assert_eq!(
            VersionSelector::parse(Some("blue")),
            VersionSelector::Stage("blue")
        );
        // Not quite a UUID: a stage.
        let stage = "3b8e3f7c-0c6e-4a57-9d8b-1f2a3b4c5d6";
        assert_eq!(
            VersionSelector::parse(Some(stage)),
            VersionSelector::Stage(stage)
        );
        for latest in [None, Some("")] {
            assert!(VersionSelector::parse(latest).is_current());
        }
        assert!(VersionSelector::parse(Some("AWSCURRENT")).is_current());
    }

    #[test]
    fn a_queue_url_is_sent_to_its_own_host() {
        let aws = "https://sqs.eu-west-1.amazonaws.com/123456789012/secrets";
        assert_eq!(
            queue_origin(aws),
            Some("https://sqs.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            queue_origin("http://127.0.0.1:5000/123456789012/q"),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            queue_origin("http://localhost:4566"),
            Some("http://localhost:4566")
        );
        assert_eq!(queue_origin("https:///q"), None);
        assert_eq!(queue_origin("sqs.amazonaws.com/q"), None);
    }

    #[test]
    fn a_message_shows_no_receipt() {
        let message = Message {
            body: "{}".into(),
            receipt: "AQEB-receipt-handle".into(),
        };
        assert!(!format!("{message:?}").contains("AQEB"));
    }
}
