//! Pure builders: fetched values → Secret data → the Secret of one version. No I/O here, so
//! every rule is unit-tested from YAML.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::core::ObjectMeta;
use secretsync_api::{SecretSync, hash::content_hash, keys::validate_secret_key, labels};
use secretsync_providers::{SecretBytes, SecretData};

use crate::error::{Error, Result};

/// Kubernetes refuses Secrets over 1 MiB.
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// The content of a version before it is written: data, its hash, and the backend version
/// ids it came from.
#[derive(Debug, Clone)]
pub struct Content {
    pub data: SecretData,
    pub hash: String,
    /// remote key → backend version id read.
    pub source_versions: BTreeMap<String, String>,
}

/// Applies `target.template` (if any), then checks keys and size, and hashes the result.
///
/// With a template, the Secret holds exactly the rendered keys (as External Secrets
/// Operator's default `Replace` policy does), so a template can hide the raw fields it uses.
pub fn build_content(
    sync: &SecretSync,
    fetched: SecretData,
    source_versions: BTreeMap<String, String>,
) -> Result<Content> {
    let template = sync
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .filter(|t| !t.data.is_empty());
    let data = match template {
        Some(template) => render(&template.data, &fetched)?,
        None => fetched,
    };
    for key in data.keys() {
        validate_secret_key(key).map_err(|e| Error::InvalidSecretKey(e.to_string()))?;
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err(Error::SecretTooLarge { size });
    }
    let hash = content_hash(sync.spec.secret_type(), &data);
    Ok(Content {
        data,
        hash,
        source_versions,
    })
}

/// Renders each template key with the fetched values as variables (Jinja syntax).
/// Undefined variables are errors, so a typo never renders an empty password.
fn render(templates: &BTreeMap<String, String>, values: &SecretData) -> Result<SecretData> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let mut context = BTreeMap::new();
    for (key, value) in values {
        let text = std::str::from_utf8(value.expose()).map_err(|_| Error::Template {
            key: key.clone(),
            message: format!("the value of {key:?} is not UTF-8 text, so templates cannot use it"),
        })?;
        context.insert(key.as_str(), text);
    }
    let mut out = SecretData::new();
    for (key, source) in templates {
        // Error messages from minijinja name the template and the variable, not values
        // (its `debug` feature, which would print them, is off).
        let rendered = env
            .render_str(source, &context)
            .map_err(|e| Error::Template {
                key: key.clone(),
                message: e.to_string(),
            })?;
        out.insert(key.clone(), SecretBytes::from(rendered));
    }
    Ok(out)
}

/// The immutable Secret of version `version`.
pub fn version_secret(sync: &SecretSync, name: &str, version: i64, content: &Content) -> Secret {
    let target = sync.spec.target.clone().unwrap_or_default();
    let mut secret_labels = target.labels.unwrap_or_default();
    secret_labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    secret_labels.insert(
        labels::SYNC.into(),
        sync.metadata.name.clone().unwrap_or_default(),
    );
    secret_labels.insert(labels::VERSION.into(), version.to_string());
    let mut annotations = target.annotations.unwrap_or_default();
    annotations.insert(labels::CONTENT_HASH.into(), content.hash.clone());
    annotations.insert(
        labels::SPEC_VERSION.into(),
        sync.spec.spec_version().to_string(),
    );
    if !content.source_versions.is_empty() {
        annotations.insert(
            labels::SOURCE_VERSIONS.into(),
            serde_json::to_string(&content.source_versions).expect("a string map serializes"),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: sync.metadata.namespace.clone(),
            labels: Some(secret_labels),
            annotations: Some(annotations),
            owner_references: sync.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some(sync.spec.secret_type().to_owned()),
        // The one place values leave their redacting type: into the Secret body.
        data: Some(
            content
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(yaml: &str) -> SecretSync {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value(value).unwrap()
    }

    const SYNC: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db, namespace: payments, uid: 1b7e-uid}
spec:
  storeRef: {name: vault}
  version: 2
  data: [{secretKey: password, remoteRef: {key: app/db, property: password}}]
  target:
    type: kubernetes.io/basic-auth
    labels: {team: payments}
    annotations: {owner: "payments@example.com"}
"#;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn version_secret_carries_the_contract() {
        let sync = sync(SYNC);
        let content = build_content(
            &sync,
            data(&[("password", "hunter2")]),
            [("app/db".to_string(), "7".to_string())].into(),
        )
        .unwrap();
        let secret = version_secret(&sync, "db-v3", 3, &content);
        assert_eq!(secret.metadata.name.as_deref(), Some("db-v3"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let l = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(l["app.kubernetes.io/managed-by"], "secretsync");
        assert_eq!(l["secretsync.io/sync"], "db");
        assert_eq!(l["secretsync.io/version"], "3");
        assert_eq!(l["team"], "payments");
        let a = secret.metadata.annotations.as_ref().unwrap();
        assert_eq!(a["secretsync.io/spec-version"], "2");
        assert_eq!(a["secretsync.io/source-versions"], r#"{"app/db":"7"}"#);
        assert_eq!(a["owner"], "payments@example.com");
        assert!(a["secretsync.io/content-hash"].starts_with("sha256:"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SecretSync", "db", "1b7e-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(secret.data.as_ref().unwrap()["password"].0, b"hunter2");
    }

    #[test]
    fn hash_covers_type_and_data() {
        let sync = sync(SYNC);
        let a = build_content(&sync, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        let b = build_content(&sync, data(&[("password", "b")]), BTreeMap::new()).unwrap();
        assert_ne!(a.hash, b.hash);
        let a2 = build_content(&sync, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        assert_eq!(a.hash, a2.hash);
    }

    #[test]
    fn templates_render_from_fetched_values_and_replace_them() {
        let mut s = sync(SYNC);
        s.spec.target.as_mut().unwrap().template = Some(secretsync_api::Template {
            data: [(
                "dsn".to_string(),
                "postgres://{{ username }}:{{ password }}@db:5432/app".to_string(),
            )]
            .into(),
        });
        let content = build_content(
            &s,
            data(&[("username", "app"), ("password", "p4ss")]),
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(content.data.keys().collect::<Vec<_>>(), ["dsn"]);
        assert_eq!(
            content.data["dsn"].expose(),
            b"postgres://app:p4ss@db:5432/app"
        );
    }

    #[test]
    fn template_errors_name_the_key_but_no_value() {
        let mut s = sync(SYNC);
        s.spec.target.as_mut().unwrap().template = Some(secretsync_api::Template {
            data: [("dsn".to_string(), "{{ pasword }}".to_string())].into(),
        });
        let err =
            build_content(&s, data(&[("password", "canary-7731")]), BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, Error::Template { ref key, .. } if key == "dsn"),
            "{err}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("canary-7731"), "{text}");

        s.spec.target.as_mut().unwrap().template = Some(secretsync_api::Template {
            data: [(
                "dsn".to_string(),
                "{{ password | nosuchfilter }}".to_string(),
            )]
            .into(),
        });
        let err =
            build_content(&s, data(&[("password", "canary-7731")]), BTreeMap::new()).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("canary-7731"));
        assert_eq!(err.reason(), secretsync_api::Reason::TemplateError);
    }

    #[test]
    fn invalid_keys_and_oversized_data_are_refused() {
        let s = sync(SYNC);
        let err = build_content(&s, data(&[("bad key", "x")]), BTreeMap::new()).unwrap_err();
        assert_eq!(err.reason(), secretsync_api::Reason::InvalidSecretKey);
        assert!(err.to_string().contains("bad key"));

        let big = "x".repeat(MAX_SECRET_BYTES);
        let err = build_content(&s, data(&[("k", &big)]), BTreeMap::new()).unwrap_err();
        assert_eq!(err.reason(), secretsync_api::Reason::SecretTooLarge);
        // just under the limit is fine
        let fits = "x".repeat(MAX_SECRET_BYTES - 1);
        build_content(&s, data(&[("k", &fits)]), BTreeMap::new()).unwrap();
    }
}
