//! Checks of a spec that the API server may not enforce (a sandbox or an old cluster may not
//! run CEL): the operator repeats every schema rule here, so a bad object is explained with
//! `InvalidSpec` and never crashes or half-applies anything.

use std::collections::BTreeSet;

use crate::duration::parse_duration;
use crate::keys::validate_secret_key;
use crate::naming::validate_base_name;
use crate::secretsync::{DynamicMethod, DynamicSecret, Find, PkiIssue, SecretSync, SecretSyncSpec};
use crate::store::{
    AzureAuthType, AzureProvider, Provider, SecretKeySelector, SecretStoreSpec, VaultAuth,
};

/// Every problem found, each as one sentence naming the field.
pub type Problems = Vec<String>;

/// Validates a SecretSync's spec; `Err` lists every problem, not just the first.
pub fn validate_secret_sync(sync: &SecretSync) -> Result<(), Problems> {
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    validate_spec(&sync.spec, name)
}

pub fn validate_spec(spec: &SecretSyncSpec, metadata_name: &str) -> Result<(), Problems> {
    let mut problems = Problems::new();

    if spec.store_ref.name.is_empty() {
        problems.push("spec.storeRef.name must not be empty".into());
    }
    if spec.spec_version() < 0 {
        problems.push(format!(
            "spec.version must be 0 or more, got {}",
            spec.spec_version()
        ));
    }
    if let Some(raw) = &spec.refresh_interval
        && let Err(e) = parse_duration(raw)
    {
        problems.push(format!("spec.refreshInterval: {e}"));
    }
    if let Err(e) = validate_base_name(spec.target_name(metadata_name)) {
        let field = if spec.target.as_ref().is_some_and(|t| t.name.is_some()) {
            "spec.target.name"
        } else {
            "metadata.name (the default target.name)"
        };
        problems.push(format!("{field}: {e}"));
    }

    if let Some(windows) = spec.rollout.as_ref().and_then(|r| r.windows.as_ref())
        && let Err(bad) = crate::window::parse_all(windows)
    {
        problems.extend(bad);
    }
    if spec.data_items().is_empty() && spec.data_from_items().is_empty() {
        problems.push("at least one of spec.data or spec.dataFrom is required".into());
    }
    let mut seen = BTreeSet::new();
    for (i, item) in spec.data_items().iter().enumerate() {
        if let Err(e) = validate_secret_key(&item.secret_key) {
            problems.push(format!("spec.data[{i}].secretKey: {e}"));
        }
        if !seen.insert(item.secret_key.as_str()) {
            problems.push(format!(
                "spec.data[{i}].secretKey: {:?} is listed twice",
                item.secret_key
            ));
        }
        if item.remote_ref.key.is_empty() {
            problems.push(format!("spec.data[{i}].remoteRef.key must not be empty"));
        }
    }
    for (i, item) in spec.data_from_items().iter().enumerate() {
        let field = format!("spec.dataFrom[{i}]");
        match (&item.extract, &item.find, &item.pki, &item.dynamic) {
            (Some(extract), None, None, None) => {
                if extract.key.is_empty() {
                    problems.push(format!("{field}.extract.key must not be empty"));
                }
            }
            (None, Some(find), None, None) => validate_find(find, &field, &mut problems),
            (None, None, Some(pki), None) => validate_pki(pki, &field, &mut problems),
            (None, None, None, Some(dynamic)) => validate_dynamic(dynamic, &field, &mut problems),
            _ => problems.push(format!(
                "{field}: exactly one of extract, find, pki or dynamic is required in each \
                 dataFrom item"
            )),
        }
        if let Some(rewrite) = &item.rewrite {
            if item.find.is_none() {
                problems.push(format!("{field}.rewrite: rewrite applies to find only"));
            }
            if let Err(e) = regex::Regex::new(&rewrite.regexp.source) {
                problems.push(format!(
                    "{field}.rewrite.regexp.source is not a valid regular expression: {e}"
                ));
            }
        }
    }
    let sources = spec.data_items().len() + spec.data_from_items().len();
    if spec.pki().is_some() && sources > 1 {
        problems.push(
            "spec.dataFrom[].pki must be the only entry of spec.data and spec.dataFrom: each \
             version is one issued certificate (tls.crt, tls.key, ca.crt); use a template to \
             rename or add keys"
                .into(),
        );
    }
    if spec.dynamic().is_some() && sources > 1 {
        problems.push(
            "spec.dataFrom[].dynamic must be the only entry of spec.data and spec.dataFrom: \
             each version is one credential the backend issued; use a template to rename or \
             add keys"
                .into(),
        );
    }
    if let Some(template) = spec.target.as_ref().and_then(|t| t.template.as_ref()) {
        for key in template.data.keys() {
            if let Err(e) = validate_secret_key(key) {
                problems.push(format!("spec.target.template.data: {e}"));
            }
        }
    }
    if let Some(limit) = spec.history.as_ref().and_then(|h| h.limit)
        && !(1..=100).contains(&limit)
    {
        problems.push(format!(
            "spec.history.limit must be between 1 and 100, got {limit}"
        ));
    }
    if let Some(rollout) = &spec.rollout {
        if let Some(raw) = &rollout.timeout {
            match parse_duration(raw) {
                Ok(d) if d.is_zero() => {
                    problems.push("spec.rollout.timeout must be greater than 0".into())
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("spec.rollout.timeout: {e}")),
            }
        }
        let mut targets = BTreeSet::new();
        for (i, target) in rollout.targets.iter().flatten().enumerate() {
            if target.name.is_empty() {
                problems.push(format!("spec.rollout.targets[{i}].name must not be empty"));
            }
            if !targets.insert(target) {
                problems.push(format!(
                    "spec.rollout.targets[{i}]: {} {} is listed twice",
                    target.kind.as_str(),
                    target.name
                ));
            }
        }
        for expr in rollout
            .selector
            .iter()
            .flat_map(|s| s.match_expressions.iter().flatten())
        {
            if !matches!(
                expr.operator.as_str(),
                "In" | "NotIn" | "Exists" | "DoesNotExist"
            ) {
                problems.push(format!(
                    "spec.rollout.selector: unknown operator {:?} (In, NotIn, Exists, DoesNotExist)",
                    expr.operator
                ));
            }
        }
    }
    if let Some(pin) = spec.pin_version
        && pin < 1
    {
        problems.push(format!("spec.pinVersion must be 1 or more, got {pin}"));
    }
    for v in spec.revoked() {
        if *v < 1 {
            problems.push(format!(
                "spec.revokedVersions: {v} is not a version (versions start at 1)"
            ));
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn validate_find(find: &Find, field: &str, problems: &mut Problems) {
    if find.name.is_none() && find.tags.is_none() && find.path.is_none() {
        problems.push(format!(
            "{field}.find needs at least one of name, tags or path"
        ));
    }
    if let Some(name) = &find.name
        && let Err(e) = regex::Regex::new(&name.regexp)
    {
        problems.push(format!(
            "{field}.find.name.regexp is not a valid regular expression: {e}"
        ));
    }
}

fn validate_dynamic(dynamic: &DynamicSecret, field: &str, problems: &mut Problems) {
    let path = dynamic.path();
    if path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        problems.push(format!(
            "{field}.dynamic.path {:?} must be a path such as database/creds/app, without \
             empty, . or .. segments",
            dynamic.path
        ));
    }
    if path.starts_with("v1/") {
        problems.push(format!(
            "{field}.dynamic.path {:?} starts with v1/: give the path without it",
            dynamic.path
        ));
    }
    if dynamic.parameters.as_ref().is_some_and(|p| !p.is_empty())
        && dynamic.method() == DynamicMethod::Get
    {
        problems.push(format!(
            "{field}.dynamic.parameters are sent only with method: POST"
        ));
    }
    if let Some(percent) = dynamic.renewal_percent
        && !(1..=90).contains(&percent)
    {
        problems.push(format!(
            "{field}.dynamic.renewalPercent must be between 1 and 90, got {percent}"
        ));
    }
}

fn validate_pki(pki: &PkiIssue, field: &str, problems: &mut Problems) {
    if pki.role.trim().is_empty() {
        problems.push(format!("{field}.pki.role must not be empty"));
    }
    if pki.common_name.trim().is_empty() {
        problems.push(format!("{field}.pki.commonName must not be empty"));
    }
    for (list, name) in [(&pki.alt_names, "altNames"), (&pki.ip_sans, "ipSans")] {
        for (i, entry) in list.iter().flatten().enumerate() {
            // Vault takes these as one comma-separated string.
            if entry.trim().is_empty() || entry.contains(',') {
                problems.push(format!(
                    "{field}.pki.{name}[{i}] {entry:?} must be one non-empty name without commas"
                ));
            }
        }
    }
    if let Some(raw) = &pki.ttl {
        match parse_duration(raw) {
            Ok(d) if d.as_secs() == 0 => {
                problems.push(format!("{field}.pki.ttl must be at least 1s"))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{field}.pki.ttl: {e}")),
        }
    }
}

/// `spec.version` may only grow (the CRD's transition rule, repeated for servers without CEL).
/// `newest_spec_version` is the `specVersion` of the newest version made.
pub fn check_spec_version(spec_version: i64, newest_spec_version: i64) -> Result<(), String> {
    if spec_version < newest_spec_version {
        Err(format!(
            "spec.version decreased to {spec_version}, below {newest_spec_version} of the newest version; \
             it may only grow (use pinVersion to roll back)"
        ))
    } else {
        Ok(())
    }
}

/// Where a store's credentials may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreScope {
    /// A SecretStore: every reference is read from the store's own namespace.
    Namespaced,
    /// A ClusterSecretStore: every reference names its namespace.
    Cluster,
}

/// One credential reference of a store: its field path, the namespace it names, and the
/// Secret's name (`None` for a ServiceAccount).
type CredentialRef<'a> = (&'static str, Option<&'a str>, Option<&'a str>);

/// Every credential reference of a store: its field path and the namespace it names.
pub fn credential_refs(spec: &SecretStoreSpec) -> Vec<(&'static str, Option<&str>)> {
    all_refs(spec)
        .into_iter()
        .map(|(field, namespace, _)| (field, namespace))
        .collect()
}

/// The Secrets a store reads credentials from (token, AppRole secret-id, access keys,
/// client certificate), as `(namespace, name)`: a reference's own namespace, else the
/// store's (`store_namespace`, `None` for a ClusterSecretStore). A change to one of them
/// is a reason to check the store again.
pub fn credential_secrets(
    spec: &SecretStoreSpec,
    store_namespace: Option<&str>,
) -> Vec<(String, String)> {
    all_refs(spec)
        .into_iter()
        .filter_map(|(_, namespace, name)| {
            Some((namespace.or(store_namespace)?.to_owned(), name?.to_owned()))
        })
        .collect()
}

fn all_refs(spec: &SecretStoreSpec) -> Vec<CredentialRef<'_>> {
    fn key_ref<'a>(field: &'static str, sel: &'a SecretKeySelector) -> CredentialRef<'a> {
        (field, sel.namespace.as_deref(), Some(sel.name.as_str()))
    }
    let mut refs = Vec::new();
    match &spec.provider {
        Provider::Vault(vault) => {
            if let Some(tls) = &vault.tls {
                refs.push(key_ref(
                    "spec.provider.vault.tls.clientCertSecretRef",
                    &tls.client_cert_secret_ref,
                ));
                refs.push(key_ref(
                    "spec.provider.vault.tls.clientKeySecretRef",
                    &tls.client_key_secret_ref,
                ));
            }
            refs.push(match &vault.auth {
                VaultAuth::TokenSecretRef(sel) => {
                    key_ref("spec.provider.vault.auth.tokenSecretRef", sel)
                }
                VaultAuth::AppRole(approle) => key_ref(
                    "spec.provider.vault.auth.appRole.secretRef",
                    &approle.secret_ref,
                ),
                VaultAuth::Kubernetes(k8s) => (
                    "spec.provider.vault.auth.kubernetes.serviceAccountRef",
                    k8s.service_account_ref.namespace.as_deref(),
                    None,
                ),
            })
        }
        Provider::Aws(aws) => {
            if let Some(crate::store::AwsAuth::SecretRef(secret_refs)) = &aws.auth {
                refs.push(key_ref(
                    "spec.provider.aws.auth.secretRef.accessKeyIdSecretRef",
                    &secret_refs.access_key_id_secret_ref,
                ));
                refs.push(key_ref(
                    "spec.provider.aws.auth.secretRef.secretAccessKeySecretRef",
                    &secret_refs.secret_access_key_secret_ref,
                ));
            }
        }
        Provider::Azurekv(azure) => {
            if let Some(secret_refs) = &azure.auth_secret_ref {
                if let Some(id) = &secret_refs.client_id {
                    refs.push(key_ref("spec.provider.azurekv.authSecretRef.clientId", id));
                }
                if let Some(secret) = &secret_refs.client_secret {
                    refs.push(key_ref(
                        "spec.provider.azurekv.authSecretRef.clientSecret",
                        secret,
                    ));
                }
            }
            if let Some(account) = &azure.service_account_ref {
                refs.push((
                    "spec.provider.azurekv.serviceAccountRef",
                    account.namespace.as_deref(),
                    None,
                ));
            }
        }
        Provider::Gcpsm(gcp) => {
            if let Some(crate::store::GcpAuth::SecretRef(secret_ref)) = &gcp.auth {
                refs.push(key_ref(
                    "spec.provider.gcpsm.auth.secretRef.secretAccessKeySecretRef",
                    &secret_ref.secret_access_key_secret_ref,
                ));
            }
        }
        Provider::Conjur(conjur) => match &conjur.auth {
            crate::store::ConjurAuth::ApiKey(key) => {
                refs.push(key_ref(
                    "spec.provider.conjur.auth.apikey.userRef",
                    &key.user_ref,
                ));
                refs.push(key_ref(
                    "spec.provider.conjur.auth.apikey.apiKeyRef",
                    &key.api_key_ref,
                ));
            }
            crate::store::ConjurAuth::Jwt(jwt) => refs.push((
                "spec.provider.conjur.auth.jwt.serviceAccountRef",
                jwt.service_account_ref.namespace.as_deref(),
                None,
            )),
        },
        Provider::Akeyless(akeyless) => match &akeyless.auth_secret_ref {
            crate::store::AkeylessAuth::SecretRef(keys) => {
                refs.push(key_ref(
                    "spec.provider.akeyless.authSecretRef.secretRef.accessID",
                    &keys.access_id,
                ));
                if let Some(access_type) = &keys.access_type {
                    refs.push(key_ref(
                        "spec.provider.akeyless.authSecretRef.secretRef.accessType",
                        access_type,
                    ));
                }
                refs.push(key_ref(
                    "spec.provider.akeyless.authSecretRef.secretRef.accessTypeParam",
                    &keys.access_type_param,
                ));
            }
            crate::store::AkeylessAuth::KubernetesAuth(k8s) => refs.push((
                "spec.provider.akeyless.authSecretRef.kubernetesAuth.serviceAccountRef",
                k8s.service_account_ref.namespace.as_deref(),
                None,
            )),
            crate::store::AkeylessAuth::Jwt(jwt) => refs.push((
                "spec.provider.akeyless.authSecretRef.jwt.serviceAccountRef",
                jwt.service_account_ref.namespace.as_deref(),
                None,
            )),
        },
        Provider::Fake(_) => {}
    }
    if let Some(secret_ref) = spec.events.as_ref().and_then(|e| e.secret_ref.as_ref()) {
        refs.push(key_ref("spec.events.secretRef", secret_ref));
    }
    refs
}

/// The credential references of a SecretStore that leave its namespace (name a
/// `namespace`), as `field.namespace: <namespace>`.
pub fn refs_leaving_namespace(spec: &SecretStoreSpec) -> Vec<String> {
    credential_refs(spec)
        .into_iter()
        .filter_map(|(field, ns)| ns.map(|ns| format!("{field}.namespace: {ns}")))
        .collect()
}

/// The combinations of an `azurekv` store's fields that can never work.
fn validate_azure(azure: &AzureProvider, problems: &mut Problems) {
    let field = "spec.provider.azurekv";
    for (name, url) in [
        ("vaultUrl", Some(&azure.vault_url)),
        ("authorityHost", azure.authority_host.as_ref()),
    ] {
        if let Some(url) = url
            && !url.starts_with("https://")
        {
            problems.push(format!("{field}.{name} {url:?} must start with https://"));
        }
    }
    let secrets = azure.auth_secret_ref.as_ref();
    let has_id = secrets.is_some_and(|s| s.client_id.is_some());
    let has_secret = secrets.is_some_and(|s| s.client_secret.is_some());
    match azure.auth_type() {
        AzureAuthType::ServicePrincipal => {
            if !(has_id && has_secret) {
                problems.push(format!(
                    "{field}.authSecretRef.clientId and .clientSecret are required for authType ServicePrincipal"
                ));
            }
            if azure.tenant_id.is_none() {
                problems.push(format!(
                    "{field}.tenantId is required for authType ServicePrincipal"
                ));
            }
        }
        AzureAuthType::ManagedIdentity => {
            if secrets.is_some() || azure.service_account_ref.is_some() {
                problems.push(format!(
                    "{field}.authSecretRef and .serviceAccountRef are not used by authType ManagedIdentity"
                ));
            }
        }
        AzureAuthType::WorkloadIdentity => {
            if has_secret {
                problems.push(format!(
                    "{field}.authSecretRef.clientSecret is not used by authType WorkloadIdentity (only clientId is)"
                ));
            }
        }
    }
    if azure.identity_id.is_some() && azure.auth_type() != AzureAuthType::ManagedIdentity {
        problems.push(format!(
            "{field}.identityId is only used by authType ManagedIdentity"
        ));
    }
    if azure.service_account_ref.is_some() && azure.auth_type() != AzureAuthType::WorkloadIdentity {
        problems.push(format!(
            "{field}.serviceAccountRef is only used by authType WorkloadIdentity"
        ));
    }
}

/// Validates a store's spec for its scope; `Err` lists every problem.
pub fn validate_store(spec: &SecretStoreSpec, scope: StoreScope) -> Result<(), Problems> {
    let mut problems = Problems::new();
    for (field, namespace) in credential_refs(spec) {
        match (scope, namespace) {
            (StoreScope::Namespaced, Some(_)) => problems.push(format!(
                "{field}.namespace is not allowed in a SecretStore: credentials are read from the store's own namespace"
            )),
            (StoreScope::Cluster, None) => problems.push(format!(
                "{field}.namespace is required in a ClusterSecretStore"
            )),
            _ => {}
        }
    }
    if let Provider::Vault(vault) = &spec.provider
        && !(vault.server.starts_with("http://") || vault.server.starts_with("https://"))
    {
        problems.push(format!(
            "spec.provider.vault.server {:?} must start with http:// or https://",
            vault.server
        ));
    }
    if let Provider::Azurekv(azure) = &spec.provider {
        validate_azure(azure, &mut problems);
    }
    if let Provider::Gcpsm(gcp) = &spec.provider {
        if let Err(e) = crate::store::check_gcp_project_id(&gcp.project_id) {
            problems.push(format!("spec.provider.gcpsm.projectID: {e}"));
        }
        if let Some(endpoint) = &gcp.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "spec.provider.gcpsm.endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
    }
    if let Some(raw) = &spec.refresh_interval
        && let Err(e) = parse_duration(raw)
    {
        problems.push(format!("spec.refreshInterval: {e}"));
    }
    if scope == StoreScope::Namespaced && spec.conditions.is_some() {
        problems.push("spec.conditions is only allowed on a ClusterSecretStore".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
