//! `SecretStore` and `ClusterSecretStore`: how to reach one backend and authenticate.
//!
//! Both kinds share one spec. Provider and auth blocks are enums (exactly one of), so an
//! object naming two providers cannot even be represented.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretsync.io",
    version = "v1alpha1",
    kind = "SecretStore",
    namespaced,
    status = "SecretStoreStatus",
    shortname = "sstore",
    category = "secretsync-all",
    doc = "How to reach one secrets backend and authenticate, for SecretSyncs in this namespace",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "PartialEq",
    validation = Rule::new("!has(self.spec.conditions)").message("conditions are only allowed on a ClusterSecretStore"),
    validation = Rule::new(EVENTS_VALID).message(EVENTS_VALID_MESSAGE)
)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    pub provider: Provider,
    /// How often the store itself is re-validated against the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(ms|s|m|h))+)$"))]
    pub refresh_interval: Option<String>,
    /// Protects the backend from refresh storms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// ClusterSecretStore only: which namespaces may use it. Refused on a SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<StoreCondition>>,
    /// The backend tells the operator what changed, so a change is synced in about a second
    /// instead of at the next refresh; the refresh interval stays the safety net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<StoreEvents>,
}

/// CEL: each event source with what it needs — the backend it listens to, and its settings.
const EVENTS_VALID: &str = "!has(self.spec.events) || ( \
    (self.spec.events.source != 'OpenBaoAudit' || has(self.spec.provider.vault)) \
    && (self.spec.events.source != 'AwsSqs' || (has(self.spec.provider.aws) && has(self.spec.events.queueURL))) \
    && (self.spec.events.source != 'GcpPubSub' || has(self.spec.provider.gcpsm)) \
    && (self.spec.events.source != 'AzureEventGrid' || has(self.spec.provider.azurekv)) \
    && (self.spec.events.source in ['OpenBaoAudit', 'AwsSqs'] || has(self.spec.events.secretRef)))";
const EVENTS_VALID_MESSAGE: &str = "events: OpenBaoAudit needs a vault provider, AwsSqs an aws provider and queueURL, \
    GcpPubSub a gcpsm provider, AzureEventGrid an azurekv provider; Webhook, GcpPubSub and AzureEventGrid need secretRef";

/// Where the store's change events come from: one source per store. An event only wakes a
/// read of the keys it names; the backend read stays the source of truth, so a forged or
/// replayed event can cost a read but never change a value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreEvents {
    pub source: EventSource,
    /// `Webhook`: the HMAC-SHA256 key that signs each request. `GcpPubSub` and
    /// `AzureEventGrid`: the token their push URL carries (`?token=`), since neither signs
    /// what it delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// `AwsSqs`: the queue EventBridge delivers Secrets Manager's CloudTrail events to, read
    /// with the store's own AWS credentials and endpoint.
    #[serde(default, rename = "queueURL", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub queue_url: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// OpenBao's (or Vault's) `socket` audit device, pointed at the operator's audit
    /// listener (`--openbao-audit-listen`): each write or delete of a KV key under this
    /// store's mount refreshes the SecretSyncs that read that key. Only the operation and
    /// path of an entry are read; its HMAC'd values are neither logged nor kept.
    OpenBaoAudit,
    /// Signed `POST`s to the operator's event listener (`--events-listen`) naming the keys
    /// that changed (plain JSON or CloudEvents 1.0), for any provider.
    Webhook,
    /// Secrets Manager's CloudTrail events through EventBridge to an SQS queue, long-polled
    /// by the operator; a message is deleted once the refresh it caused has run.
    AwsSqs,
    /// Secret Manager's Pub/Sub notifications (`SECRET_VERSION_ADD`, …) pushed to the
    /// operator's event listener by a push subscription.
    GcpPubSub,
    /// Key Vault's Event Grid events (`SecretNewVersionCreated`, …) delivered to the
    /// operator's event listener by a webhook subscription (with Event Grid's validation
    /// handshake).
    AzureEventGrid,
}

impl EventSource {
    /// The name in metrics and conditions.
    pub fn name(self) -> &'static str {
        match self {
            EventSource::OpenBaoAudit => "openbao-audit",
            EventSource::Webhook => "webhook",
            EventSource::AwsSqs => "aws-sqs",
            EventSource::GcpPubSub => "gcp-pubsub",
            EventSource::AzureEventGrid => "azure-eventgrid",
        }
    }
}

/// The cluster-scoped twin of [`SecretStore`], shared by the namespaces its `conditions` admit.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretsync.io",
    version = "v1alpha1",
    kind = "ClusterSecretStore",
    status = "SecretStoreStatus",
    shortname = "cstore",
    category = "secretsync-all",
    derive = "PartialEq",
    validation = Rule::new(EVENTS_VALID).message(EVENTS_VALID_MESSAGE),
    doc = "How to reach one secrets backend and authenticate, shared by the namespaces its conditions admit",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    #[serde(flatten)]
    pub store: SecretStoreSpec,
}

/// Exactly one backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// HashiCorp Vault or OpenBao.
    Vault(VaultProvider),
    /// AWS Secrets Manager.
    Aws(AwsProvider),
    /// Google Cloud Secret Manager (External Secrets Operator's key, so its stores move over
    /// by renaming the kind).
    Gcpsm(GcpProvider),
    /// Azure Key Vault secrets (External Secrets Operator's `azurekv`).
    #[serde(rename = "azurekv")]
    Azurekv(AzureProvider),
    /// CyberArk Conjur (Secrets Manager Self-Hosted or Open Source), External Secrets
    /// Operator's field names.
    Conjur(ConjurProvider),
    /// Akeyless static secrets, External Secrets Operator's field names.
    Akeyless(AkeylessProvider),
    /// In-memory values, for demos and tests.
    Fake(FakeProvider),
}

impl Provider {
    /// Short name used in status, logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Vault(_) => "vault",
            Provider::Aws(_) => "aws",
            Provider::Azurekv(_) => "azurekv",
            Provider::Gcpsm(_) => "gcpsm",
            Provider::Conjur(_) => "conjur",
            Provider::Akeyless(_) => "akeyless",
            Provider::Fake(_) => "fake",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// Address, e.g. `https://vault.vault:8200`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub server: String,
    /// KV mount path. Default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// KV engine version. Default `v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VaultKvVersion>,
    /// Vault namespace header (Vault Enterprise / OpenBao namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Base64-encoded PEM bundle to trust for the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A client certificate for servers that require one (mutual TLS); `https` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<VaultClientTls>,
    pub auth: VaultAuth,
}

/// The client certificate and its private key, each a PEM read from a Secret (in a
/// SecretStore, from the store's own namespace). Read when the store is connected; replaced
/// ones are used from the store's next check (its `refreshInterval`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultClientTls {
    /// PEM certificate, optionally followed by its intermediates.
    pub client_cert_secret_ref: SecretKeySelector,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key_secret_ref: SecretKeySelector,
}

impl VaultProvider {
    pub fn mount(&self) -> &str {
        self.path.as_deref().unwrap_or("secret")
    }

    pub fn kv_version(&self) -> VaultKvVersion {
        self.version.unwrap_or_default()
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum VaultKvVersion {
    V1,
    #[default]
    V2,
}

/// Exactly one way to log in to Vault.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum VaultAuth {
    /// A token read from a Secret.
    TokenSecretRef(SecretKeySelector),
    /// AppRole login.
    AppRole(AppRoleAuth),
    /// Kubernetes auth: a token for the named ServiceAccount (TokenRequest), then login.
    Kubernetes(KubernetesAuth),
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppRoleAuth {
    /// Mount path of the AppRole auth method. Default `approle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[schemars(length(min = 1))]
    pub role_id: String,
    /// The secret-id.
    pub secret_ref: SecretKeySelector,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAuth {
    /// Mount path of the Kubernetes auth method. Default `kubernetes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[schemars(length(min = 1))]
    pub role: String,
    pub service_account_ref: ServiceAccountRef,
    /// Audiences requested for the ServiceAccount token. Default: the API server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Required in a ClusterSecretStore; refused in a SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A key of a Kubernetes Secret holding a credential.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// Required in a ClusterSecretStore; refused in a SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    #[schemars(length(min = 1))]
    pub region: String,
    /// Endpoint override (VPC endpoint, local emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A role to assume (STS AssumeRole) with the credentials below, e.g. for a store in
    /// another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub role: Option<String>,
    /// Omitted: the SDK's default chain (IRSA, environment, IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum AwsAuth {
    /// Static access keys read from Secrets.
    SecretRef(AwsSecretRef),
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    pub access_key_id_secret_ref: SecretKeySelector,
    pub secret_access_key_secret_ref: SecretKeySelector,
}

/// Google Cloud Secret Manager in one project.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcpProvider {
    /// The project the secrets live in (its ID, e.g. `my-project`).
    #[serde(rename = "projectID")]
    #[schemars(length(min = 1))]
    pub project_id: String,
    /// Omitted: Application Default Credentials (on GKE, Workload Identity through the
    /// metadata server, for the operator's own ServiceAccount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GcpAuth>,
    /// Endpoint override, e.g. a Private Service Connect endpoint
    /// (`https://secretmanager-myendpoint.p.googleapis.com`) or a regional one
    /// (`https://secretmanager.europe-west1.rep.googleapis.com`). Default
    /// `https://secretmanager.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Google's rule for project IDs (6–30 lowercase letters, digits and hyphens, starting with a
/// letter and not ending with a hyphen), also allowing a legacy domain prefix
/// (`example.com:my-project`) and a project number, which the API takes in its place.
pub fn check_gcp_project_id(id: &str) -> Result<(), String> {
    let (domain, project) = match id.rsplit_once(':') {
        Some((domain, project)) => (Some(domain), project),
        None => (None, id),
    };
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
    });
    let number = !project.is_empty() && project.chars().all(|c| c.is_ascii_digit());
    let project_id = (6..=30).contains(&project.len())
        && project.starts_with(|c: char| c.is_ascii_lowercase())
        && !project.ends_with('-')
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if domain_ok && (project_id || (number && domain.is_none())) {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a project ID (6 to 30 lowercase letters, digits and hyphens, \
             starting with a letter) or a project number"
        ))
    }
}

/// How to authenticate to Google Cloud, when not with Application Default Credentials.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum GcpAuth {
    /// A service-account key (the JSON file `gcloud iam service-accounts keys create`
    /// writes) read from a Secret.
    SecretRef(GcpSecretRef),
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcpSecretRef {
    pub secret_access_key_secret_ref: SecretKeySelector,
}

/// An Azure Key Vault. The fields follow External Secrets Operator's `azurekv` provider.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureProvider {
    /// The vault's URL, e.g. `https://my-vault.vault.azure.net`.
    #[schemars(regex(pattern = r"^https://"))]
    pub vault_url: String,
    /// The Entra ID tenant (directory) id. Required for `ServicePrincipal`; for
    /// `WorkloadIdentity` it defaults to the ServiceAccount's
    /// `azure.workload.identity/tenant-id` annotation, else the operator's `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_id: Option<String>,
    /// How the operator gets its Entra ID token. Default: `ServicePrincipal` when
    /// `authSecretRef` is set, else `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<AzureAuthType>,
    /// The service principal's client id and secret (`ServicePrincipal`), or the client id
    /// alone for `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<AzureAuthSecretRef>,
    /// `WorkloadIdentity`: the ServiceAccount whose federated token is exchanged (its
    /// `azure.workload.identity/client-id` annotation names the identity). Omitted: the
    /// operator's own pod identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,
    /// `ManagedIdentity`: the client id of a user-assigned identity. Omitted: the
    /// system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub identity_id: Option<String>,
    /// The Entra ID authority for sovereign clouds, e.g.
    /// `https://login.microsoftonline.us`. Default `https://login.microsoftonline.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://"))]
    pub authority_host: Option<String>,
    /// Base64-encoded PEM bundle to trust for the vault's and the authority's
    /// certificates, replacing the system roots (a TLS-inspecting proxy, a private cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Whether the resource in the vault's authentication challenge must be the vault's
    /// own domain (`*.vault.azure.net` for `vault.azure.net`), so a wrong `vaultUrl`
    /// cannot obtain a token for a real vault. Default `true`; turn it off only for a
    /// vault reached through a name outside its domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_challenge_resource: Option<bool>,
}

impl AzureProvider {
    /// `authType`, defaulted: `ServicePrincipal` with `authSecretRef`, else
    /// `WorkloadIdentity`.
    pub fn auth_type(&self) -> AzureAuthType {
        self.auth_type.unwrap_or(if self.auth_secret_ref.is_some() {
            AzureAuthType::ServicePrincipal
        } else {
            AzureAuthType::WorkloadIdentity
        })
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AzureAuthType {
    /// A client id and secret read from Secrets (`authSecretRef`).
    ServicePrincipal,
    /// The node's or pod's managed identity (IMDS), `identityId` for a user-assigned one.
    ManagedIdentity,
    /// Azure Workload Identity: a Kubernetes ServiceAccount token exchanged for an Entra
    /// ID token.
    WorkloadIdentity,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureAuthSecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretKeySelector>,
}

/// A CyberArk Conjur server. The fields follow External Secrets Operator's `conjur`
/// provider, so its stores move over by renaming the kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConjurProvider {
    /// The server's URL, e.g. `https://conjur.example.com` (no trailing path).
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    /// Base64-encoded PEM bundle to trust for the server's certificate, replacing the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    pub auth: ConjurAuth,
}

/// Exactly one way to log in to Conjur.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ConjurAuth {
    /// `authn`: a host's (or user's) login and API key, read from Secrets.
    #[serde(rename = "apikey")]
    ApiKey(ConjurApiKey),
    /// `authn-jwt`: a token of a Kubernetes ServiceAccount (TokenRequest), checked by a JWT
    /// authenticator configured in Conjur with the cluster's JWKS.
    #[serde(rename = "jwt")]
    Jwt(ConjurJwt),
}

impl ConjurAuth {
    /// The Conjur account (organization) the login is in.
    pub fn account(&self) -> &str {
        match self {
            ConjurAuth::ApiKey(k) => &k.account,
            ConjurAuth::Jwt(j) => &j.account,
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConjurApiKey {
    /// The Conjur account (organization), e.g. `default`.
    #[schemars(length(min = 1))]
    pub account: String,
    /// The login, e.g. `host/data/app1/host001`.
    pub user_ref: SecretKeySelector,
    /// Its API key.
    pub api_key_ref: SecretKeySelector,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConjurJwt {
    /// The Conjur account (organization), e.g. `default`.
    #[schemars(length(min = 1))]
    pub account: String,
    /// The `authn-jwt` authenticator's service id.
    #[serde(rename = "serviceID")]
    #[schemars(length(min = 1))]
    pub service_id: String,
    /// The host to log in as, when the authenticator does not take it from a claim
    /// (`token-app-property`), e.g. `host/data/app1/host001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub host_id: Option<String>,
    /// The ServiceAccount whose token is presented.
    pub service_account_ref: TokenServiceAccountRef,
}

/// Akeyless, through its public API or a gateway. The fields follow External Secrets
/// Operator's `akeyless` provider, so its stores move over by renaming the kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AkeylessProvider {
    /// The API's URL: `https://api.akeyless.io` (the default), or a gateway's
    /// (`https://gateway.example.com:8081/v2`).
    #[serde(
        default,
        rename = "akeylessGWApiURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = r"^https?://"))]
    pub gateway_url: Option<String>,
    /// Base64-encoded PEM bundle to trust for the API's certificate, replacing the system
    /// roots (a gateway with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    pub auth_secret_ref: AkeylessAuth,
}

impl AkeylessProvider {
    /// The API's URL, defaulted.
    pub fn url(&self) -> &str {
        self.gateway_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or("https://api.akeyless.io")
    }
}

/// Exactly one way to authenticate to Akeyless.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum AkeylessAuth {
    /// An access id and access key read from Secrets (`access_key` auth).
    SecretRef(AkeylessSecretRef),
    /// Kubernetes auth: a ServiceAccount token, checked by Akeyless through the gateway's
    /// Kubernetes auth config.
    KubernetesAuth(AkeylessKubernetesAuth),
    /// OAuth2/JWT auth: a ServiceAccount token, checked by Akeyless against the cluster's
    /// JWKS.
    Jwt(AkeylessJwtAuth),
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AkeylessSecretRef {
    /// The access id (`p-…`).
    #[serde(rename = "accessID")]
    pub access_id: SecretKeySelector,
    /// The access type; only `access_key` (the default) is read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_type: Option<SecretKeySelector>,
    /// The access key.
    pub access_type_param: SecretKeySelector,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AkeylessKubernetesAuth {
    /// The Kubernetes auth method's access id (`p-…`).
    #[serde(rename = "accessID")]
    #[schemars(length(min = 1))]
    pub access_id: String,
    /// The gateway's Kubernetes auth config name.
    #[schemars(length(min = 1))]
    pub k8s_conf_name: String,
    /// The ServiceAccount whose token is presented.
    pub service_account_ref: TokenServiceAccountRef,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AkeylessJwtAuth {
    /// The OAuth2/JWT auth method's access id (`p-…`).
    #[serde(rename = "accessID")]
    #[schemars(length(min = 1))]
    pub access_id: String,
    /// The ServiceAccount whose token is presented.
    pub service_account_ref: TokenServiceAccountRef,
}

/// A ServiceAccount to request a token for, with the token's audiences.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenServiceAccountRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Required in a ClusterSecretStore; refused in a SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The token's audiences (what the authenticator's `audience` expects). Default: the
    /// API server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FakeProvider {
    #[serde(default)]
    pub data: Vec<FakeEntry>,
}

/// One value of the fake backend. Its value is inline in the store spec, so the fake
/// backend is for demos and tests only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FakeEntry {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl std::fmt::Debug for FakeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEntry")
            .field("key", &self.key)
            .field("value", &"[REDACTED]")
            .field("version", &self.version)
            .finish()
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[schemars(range(min = 1))]
    pub qps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}

/// One rule admitting namespaces to a ClusterSecretStore; a namespace is admitted when any
/// rule matches it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoreCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

impl StoreCondition {
    /// Whether this rule admits a namespace with these labels.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        crate::selector::picks_namespace(
            self.namespaces.as_deref(),
            self.namespace_selector.as_ref(),
            namespace,
            labels,
        )
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    /// The provider in use (`vault`, `aws`, `gcpsm`, `azurekv`, `conjur`, `akeyless`,
    /// `fake`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
