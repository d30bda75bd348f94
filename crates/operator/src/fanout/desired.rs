//! What a ClusterSecretSync wants in one namespace: the SecretSync it makes there
//! ([`desired`]), and whether the one there already is that ([`up_to_date`]). Pure.
//!
//! The template's spec wins, except for the on-call levers a namespace's own on-call may
//! have pulled on that SecretSync (`kubectl secretsync rotate`, `revoke`, `rollback`):
//! `spec.version` never goes down (the CRD refuses it anyway), and `pinVersion` and
//! `revokedVersions` are left to whoever set them unless the template sets them itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use secretsync_api::{ClusterSecretSync, SecretSync, SecretSyncSpec, labels};
use serde_json::{Value, json};

/// The SecretSync `css` makes in `namespace`, as the server-side apply body, given the one
/// there now (if it is `css`'s own).
pub fn desired(css: &ClusterSecretSync, namespace: &str, existing: Option<&SecretSync>) -> Value {
    let meta = css.spec.template_metadata();
    let mut sync_labels = meta.labels.unwrap_or_default();
    sync_labels.insert(labels::CLUSTER_SYNC.to_owned(), css.name_any());
    let spec = spec_in(&css.spec.template.spec, existing.map(|s| &s.spec));
    let mut metadata = json!({
        "name": css.name_any(),
        "namespace": namespace,
        "labels": sync_labels,
        "ownerReferences": [owner(css)],
    });
    if let Some(annotations) = meta.annotations.filter(|a| !a.is_empty()) {
        metadata["annotations"] = json!(annotations);
    }
    json!({
        "apiVersion": SecretSync::api_version(&()),
        "kind": SecretSync::kind(&()),
        "metadata": metadata,
        "spec": spec,
    })
}

/// The template's spec, with `spec.version` never below the existing one's.
fn spec_in(template: &SecretSyncSpec, existing: Option<&SecretSyncSpec>) -> SecretSyncSpec {
    let mut spec = template.clone();
    if let Some(existing) = existing
        && existing.spec_version() > spec.spec_version()
    {
        spec.version = existing.version;
    }
    spec
}

/// The controller ownerReference to `css`: the garbage collector deletes the SecretSync
/// with it, and no other controller may claim it.
pub fn owner(css: &ClusterSecretSync) -> OwnerReference {
    OwnerReference {
        api_version: ClusterSecretSync::api_version(&()).into_owned(),
        kind: ClusterSecretSync::kind(&()).into_owned(),
        name: css.name_any(),
        uid: css.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `sync` is `css`'s own: it carries `css`'s controller ownerReference (by UID: a
/// ClusterSecretSync deleted and made again under the same name owns nothing of the old).
pub fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    css_uid: &str,
) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == css_uid && o.controller == Some(true))
}

/// Whether `existing` (already `css`'s own) is what [`desired`] would apply: the spec (with
/// the on-call levers the template leaves alone taken from `existing`), and the template's
/// labels and annotations present. A steady state writes nothing.
pub fn up_to_date(css: &ClusterSecretSync, existing: &SecretSync) -> bool {
    let mut want = spec_in(&css.spec.template.spec, Some(&existing.spec));
    if want.pin_version.is_none() {
        want.pin_version = existing.spec.pin_version;
    }
    if want.revoked_versions.is_none() {
        want.revoked_versions
            .clone_from(&existing.spec.revoked_versions);
    }
    let meta = css.spec.template_metadata();
    let has_all = |want: Option<&std::collections::BTreeMap<String, String>>,
                   have: &std::collections::BTreeMap<String, String>| {
        want.into_iter()
            .flatten()
            .all(|(k, v)| have.get(k) == Some(v))
    };
    want == existing.spec
        && existing.labels().get(labels::CLUSTER_SYNC) == Some(&css.name_any())
        && has_all(meta.labels.as_ref(), existing.labels())
        && has_all(meta.annotations.as_ref(), existing.annotations())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn css(extra: &str) -> ClusterSecretSync {
        let mut css: ClusterSecretSync = serde_yaml::from_str(&format!(
            "apiVersion: secretsync.io/v1alpha1\nkind: ClusterSecretSync\nmetadata: {{name: db, uid: u1}}\n\
             spec:\n  namespaces: [a]\n  template:\n    metadata: {{labels: {{team: x}}}}\n    spec:\n      \
             storeRef: {{name: vault, kind: ClusterSecretStore}}\n      data: [{{secretKey: p, remoteRef: {{key: app/db}}}}]\n{extra}"
        ))
        .unwrap();
        css.metadata.uid = Some("u1".into());
        css
    }

    fn made(css: &ClusterSecretSync, ns: &str, existing: Option<&SecretSync>) -> SecretSync {
        serde_json::from_value(desired(css, ns, existing)).unwrap()
    }

    #[test]
    fn the_secretsync_made_is_owned_labelled_and_named_after_it() {
        let css = css("");
        let sync = made(&css, "shop", None);
        assert_eq!(sync.name_any(), "db");
        assert_eq!(sync.namespace().as_deref(), Some("shop"));
        assert_eq!(sync.labels()[labels::CLUSTER_SYNC], "db");
        assert_eq!(sync.labels()["team"], "x");
        assert!(owned_by(&sync.metadata, "u1"));
        assert!(
            !owned_by(&sync.metadata, "u2"),
            "another ClusterSecretSync's UID"
        );
        assert!(up_to_date(&css, &sync), "what it applies is up to date");
    }

    #[test]
    fn a_template_edit_is_not_up_to_date_but_on_call_levers_are_kept() {
        let css1 = css("");
        let mut sync = made(&css1, "shop", None);
        // The namespace's on-call rotated and pinned it.
        sync.spec.version = Some(3);
        sync.spec.pin_version = Some(1);
        assert!(up_to_date(&css1, &sync), "a rotation or a pin is not drift");
        let again = made(&css1, "shop", Some(&sync));
        assert_eq!(again.spec.version, Some(3), "spec.version never goes down");
        assert_eq!(
            again.spec.pin_version, None,
            "the pin is left to whoever set it"
        );

        let mut edited = css1.clone();
        edited.spec.template.spec.refresh_interval = Some("5m".into());
        assert!(!up_to_date(&edited, &sync), "a template edit propagates");
        let label_added = {
            let mut c = css1.clone();
            c.spec
                .template
                .metadata
                .as_mut()
                .unwrap()
                .labels
                .as_mut()
                .unwrap()
                .insert("tier".into(), "1".into());
            c
        };
        assert!(
            !up_to_date(&label_added, &sync),
            "a template label added propagates"
        );
    }
}
