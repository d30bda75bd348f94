//! Step 3: the content of a version — fetched data through `target.template`, keys and size
//! checked, hashed. Pure, so every rule is unit-tested from YAML.

use std::collections::BTreeMap;

use secretsync_api::hash::{HashKey, content_hash};
use secretsync_api::{SecretSync, keys::validate_secret_key};
use secretsync_providers::{SecretBytes, SecretData};

use super::fetch::{Fetched, IssuedMeta};
use crate::error::{Error, Result};

/// Kubernetes refuses Secrets over 1 MiB.
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// The content of a version before it is written: data, its hash, and the backend version
/// ids it came from.
#[derive(Debug, Clone)]
pub struct Content {
    pub data: SecretData,
    /// Keyed: `hmac-sha256:<key id>:<hex>`.
    pub hash: String,
    /// remote key → backend version id read.
    pub source_versions: BTreeMap<String, String>,
    /// The lease and serial of an issued credential (`dataFrom.pki`).
    pub issued: Option<IssuedMeta>,
}

impl Content {
    /// Whether a version whose content-hash annotation is `stored` holds this content. Only
    /// hashes made with the current key compare: [`super::rekey`] rewrites the others from
    /// the versions' data before anything is compared.
    pub fn matches(&self, stored: Option<&str>) -> bool {
        stored == Some(self.hash.as_str())
    }
}

/// Applies `target.template` (if any), then checks keys and size, and hashes the result
/// with the operator's `key`.
///
/// With a template, the Secret holds exactly the rendered keys (as External Secrets
/// Operator's default `Replace` policy does), so a template can hide the raw fields it uses.
pub fn build(sync: &SecretSync, fetched: Fetched, key: &HashKey) -> Result<Content> {
    let Fetched {
        data: fetched,
        sources: source_versions,
        issued,
        ..
    } = fetched;
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
    let secret_type = sync.spec.secret_type();
    Ok(Content {
        hash: content_hash(key, secret_type, &data),
        data,
        source_versions,
        issued,
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
    env.set_fuel(Some(TEMPLATE_FUEL));
    let mut out = SecretData::new();
    for (key, source) in templates {
        // Error messages from minijinja name the template and the variable, not values
        // (its `debug` feature, which would print them, is off).
        let failed = |message: String| Error::Template {
            key: key.clone(),
            message,
        };
        let template = env
            .template_from_str(source)
            .map_err(|e| failed(e.to_string()))?;
        let mut rendered = Capped(Vec::new());
        template
            .render_captured_to(&context, &mut rendered)
            .map_err(|e| match e.kind() {
                minijinja::ErrorKind::WriteFailure => failed(format!(
                    "renders more than {MAX_SECRET_BYTES} bytes, the most a Secret holds"
                )),
                minijinja::ErrorKind::OutOfFuel => failed(format!(
                    "runs more than {TEMPLATE_FUEL} template instructions; a loop that long cannot be meant"
                )),
                _ => failed(e.to_string()),
            })?;
        out.insert(key.clone(), SecretBytes::from(rendered.0));
    }
    Ok(out)
}

/// Template instructions one key may execute: far above what rendering a Secret value
/// takes, far below a loop that would stall the reconciler.
const TEMPLATE_FUEL: u64 = 100_000;

/// Rendered output, refused past the size of a whole Secret, so a template that explodes
/// stops early instead of filling memory.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_SECRET_BYTES {
            return Err(std::io::Error::other("template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sync(yaml: &str) -> SecretSync {
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

    pub(crate) fn build_content(
        sync: &SecretSync,
        data: SecretData,
        sources: BTreeMap<String, String>,
    ) -> Result<Content> {
        build(
            sync,
            Fetched {
                data,
                sources,
                issued: None,
                rotates_at: None,
            },
            &test_key(),
        )
    }

    pub(crate) fn test_key() -> HashKey {
        HashKey::from_bytes(&[7; 32]).unwrap()
    }

    pub(crate) fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn hash_covers_type_and_data() {
        let sync = sync(SYNC);
        let a = build_content(&sync, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        let b = build_content(&sync, data(&[("password", "b")]), BTreeMap::new()).unwrap();
        assert_ne!(a.hash, b.hash);
        let a2 = build_content(&sync, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        assert_eq!(a.hash, a2.hash);
        assert!(a.hash.starts_with("hmac-sha256:"), "{}", a.hash);
    }

    #[test]
    fn only_a_hash_of_the_same_content_by_the_same_key_matches() {
        let sync = sync(SYNC);
        let content = build_content(&sync, data(&[("password", "a")]), BTreeMap::new()).unwrap();
        assert!(content.matches(Some(&content.hash)));
        let other = build_content(&sync, data(&[("password", "b")]), BTreeMap::new()).unwrap();
        assert!(!other.matches(Some(&content.hash)));
        assert!(!content.matches(None));
        let other_key = HashKey::from_bytes(&[8; 32]).unwrap();
        let by_other_key = content_hash(&other_key, "kubernetes.io/basic-auth", &content.data);
        assert!(!content.matches(Some(&by_other_key)));
        let legacy =
            secretsync_api::hash::legacy_content_hash("kubernetes.io/basic-auth", &content.data);
        assert!(!content.matches(Some(&legacy)));
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

    fn templated(template: &str) -> SecretSync {
        let mut s = sync(SYNC);
        s.spec.target.as_mut().unwrap().template = Some(secretsync_api::Template {
            data: [("out".to_string(), template.to_string())].into(),
        });
        s
    }

    #[test]
    fn templates_that_loop_or_explode_stop_early_with_a_clear_error() {
        let values = || data(&[("password", "canary-7731")]);
        let cases = [
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}{{ password }}{% endfor %}{% endfor %}",
                "template instructions",
            ),
            (r#"{{ "x" * 100000000 }}"#, "renders more than"),
            (
                r#"{% set a = "x" * 900000 %}{{ a }}{{ a }}"#,
                "renders more than",
            ),
            ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ""),
        ];
        for (template, says) in cases {
            let started = std::time::Instant::now();
            let err = build_content(&templated(template), values(), BTreeMap::new()).unwrap_err();
            assert_eq!(
                err.reason(),
                secretsync_api::Reason::TemplateError,
                "{template}"
            );
            assert!(err.to_string().contains(says), "{template}: {err}");
            assert!(!err.to_string().contains("canary-7731"));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{template}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any template over any values — binary, empty, odd keys — renders or fails with
        /// a reason; nothing panics, and what renders fits a Secret under valid keys.
        #[test]
        fn any_template_over_any_values_renders_or_fails_cleanly(
            template in "([a-z ]|\\{\\{ ?[a-z_]{1,9} ?(\\| ?(upper|lower|b64encode|trim|length|join|nosuch))? ?\\}\\}|\\{% ?(if|for|set|endif|endfor|else|raw) ?[a-z_ =]{0,12}%\\}|[{}%|~*\"'()\\[\\]0-9])*",
            values in proptest::collection::btree_map(
                "[a-zA-Z0-9_.\\- ]{0,12}",
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                0..5,
            ),
        ) {
            let fetched: SecretData = values
                .into_iter()
                .map(|(k, v)| (k, SecretBytes::from(v)))
                .collect();
            let plain = build_content(&sync(SYNC), fetched.clone(), BTreeMap::new());
            let rendered = build_content(&templated(&template), fetched, BTreeMap::new());
            for content in [plain, rendered].into_iter().flatten() {
                let size: usize = content.data.iter().map(|(k, v)| k.len() + v.len()).sum();
                proptest::prop_assert!(size <= MAX_SECRET_BYTES);
                for key in content.data.keys() {
                    proptest::prop_assert!(validate_secret_key(key).is_ok(), "{key:?}");
                }
            }
        }
    }
}
