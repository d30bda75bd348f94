//! `import --rollout-from-reloader`: Stakater Reloader's annotations on Deployments,
//! StatefulSets and DaemonSets become `rollout.targets` of the imported SecretSyncs whose
//! Secret they name. Pure, like the rest of the import: workloads in, targets added and
//! notes out; a workload or annotation that cannot be mapped is reported, never dropped.
//!
//! | Reloader annotation (on the workload) | the Secrets it follows |
//! |---|---|
//! | `reloader.stakater.com/auto: "true"`, `secret.reloader.stakater.com/auto: "true"` | every Secret its pod template references |
//! | `secret.reloader.stakater.com/reload: "a,b"` | `a` and `b` |
//! | `reloader.stakater.com/search: "true"` | the Secrets it references that carry `reloader.stakater.com/match: "true"` (on the imported SecretSync's `target.annotations`) |
//!
//! A Secret is an imported SecretSync's when it is in the workload's namespace and named
//! after the SecretSync's `target.name` (default its name): ESO's target Secret name.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::import::{Imported, Note};

const AUTO: &str = "reloader.stakater.com/auto";
const SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
const RELOAD: &str = "secret.reloader.stakater.com/reload";
const SEARCH: &str = "reloader.stakater.com/search";
const MATCH: &str = "reloader.stakater.com/match";
const CONFIGMAP_RELOAD: &str = "configmap.reloader.stakater.com/reload";

/// Adds a rollout target to each imported SecretSync a workload in `docs` follows with
/// Reloader; notes what could not be mapped. Namespaces missing on either side are taken as
/// `default`'s, as `kubectl apply` would place them.
pub fn add_targets(docs: &[Value], imported: &mut Imported) {
    for doc in docs.iter().flat_map(items) {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
            || doc["apiVersion"].as_str() != Some("apps/v1")
        {
            continue;
        }
        let annotations = &doc["metadata"]["annotations"];
        let on = |key: &str| annotations[key].as_str() == Some("true");
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let object = format!("{kind} {namespace}/{name}");
        let referenced = secret_refs(&doc["spec"]["template"]["spec"]);
        let mut followed: Vec<(String, &str)> = Vec::new();
        if on(AUTO) || on(SECRET_AUTO) {
            let key = if on(AUTO) { AUTO } else { SECRET_AUTO };
            followed.extend(referenced.iter().map(|s| (s.clone(), key)));
        }
        if let Some(list) = annotations[RELOAD].as_str() {
            followed.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.to_owned(), RELOAD)),
            );
        }
        if on(SEARCH) {
            for secret in &referenced {
                let matched = find(imported, namespace, secret).is_some_and(|i| {
                    imported.objects[i]["spec"]["target"]["annotations"][MATCH].as_str()
                        == Some("true")
                });
                if matched {
                    followed.push((secret.clone(), SEARCH));
                }
            }
        }
        if annotations[CONFIGMAP_RELOAD].is_string() {
            note(
                imported,
                &object,
                CONFIGMAP_RELOAD,
                "ConfigMaps are not synced by secretsync: keep Reloader for them",
            );
        }
        let mut seen = BTreeSet::new();
        for (secret, key) in followed {
            if !seen.insert(secret.clone()) {
                continue;
            }
            match find(imported, namespace, &secret) {
                Some(i) => {
                    let sync = imported.objects[i]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    add_target(&mut imported.objects[i], kind, name);
                    note(
                        imported,
                        &object,
                        key,
                        format!(
                            "now a rollout target of SecretSync {sync}: point its references to \
                             {secret} at {secret}-v1 once that exists (secretsync rewrites only \
                             <name>-v<N> references), then remove the annotation"
                        ),
                    );
                }
                None => note(
                    imported,
                    &object,
                    key,
                    format!(
                        "Secret {secret} is made by no imported ExternalSecret in {namespace}: not mapped"
                    ),
                ),
            }
        }
    }
}

/// A `kind: List`'s items, or the document itself.
fn items(doc: &Value) -> Vec<&Value> {
    match doc["items"].as_array() {
        Some(items) if doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
            items.iter().collect()
        }
        _ => vec![doc],
    }
}

/// The imported SecretSync in `namespace` whose target Secret is `secret`.
fn find(imported: &Imported, namespace: &str, secret: &str) -> Option<usize> {
    imported.objects.iter().position(|o| {
        o["kind"] == "SecretSync"
            && o["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
            && o["spec"]["target"]["name"]
                .as_str()
                .or(o["metadata"]["name"].as_str())
                == Some(secret)
    })
}

fn add_target(sync: &mut Value, kind: &str, name: &str) {
    let target = json!({"kind": kind, "name": name});
    let rollout = &mut sync["spec"]["rollout"];
    if rollout.is_null() {
        *rollout = json!({});
    }
    let targets = &mut rollout["targets"];
    if targets.is_null() {
        *targets = json!([]);
    }
    if let Some(list) = targets.as_array_mut()
        && !list.contains(&target)
    {
        list.push(target);
    }
}

fn note(imported: &mut Imported, object: &str, key: &str, why: impl Into<String>) {
    imported.notes.push(Note {
        object: object.to_owned(),
        field: format!(".metadata.annotations.{key}"),
        why: why.into(),
    });
}

/// Every Secret a pod spec references: env `secretKeyRef`, `envFrom` `secretRef`, `secret` and
/// projected volumes, `imagePullSecrets`, in containers and initContainers.
fn secret_refs(pod: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut add = |v: &Value| {
        if let Some(name) = v.as_str() {
            found.insert(name.to_owned());
        }
    };
    for list in ["containers", "initContainers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(&e["valueFrom"]["secretKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(&e["secretRef"]["name"]);
            }
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        add(&v["secret"]["secretName"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(&s["secret"]["name"]);
        }
    }
    for s in pod["imagePullSecrets"].as_array().into_iter().flatten() {
        add(&s["name"]);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::import;

    fn yaml(text: &str) -> Vec<Value> {
        crate::import::documents(text).unwrap()
    }

    const ESO: &str = r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: db, namespace: shop}
spec:
  secretStoreRef: {name: vault}
  data: [{secretKey: password, remoteRef: {key: app/db}}]
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: tls, namespace: shop}
spec:
  secretStoreRef: {name: vault}
  target:
    name: tls-cert
    template: {metadata: {annotations: {reloader.stakater.com/match: "true"}}}
  data: [{secretKey: tls.crt, remoteRef: {key: app/tls}}]
"#;

    fn targets(imported: &Imported, sync: &str) -> Value {
        let i = imported
            .objects
            .iter()
            .position(|o| o["metadata"]["name"] == sync)
            .unwrap();
        imported.objects[i]["spec"]["rollout"]["targets"].clone()
    }

    #[test]
    fn reloader_annotations_become_rollout_targets() {
        let workloads = r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop, annotations: {reloader.stakater.com/auto: "true"}}
spec: {template: {spec: {containers: [{name: a, env: [{name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}], envFrom: [{secretRef: {name: unrelated}}]}]}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, namespace: shop, annotations: {secret.reloader.stakater.com/reload: "db, missing"}}
spec: {template: {spec: {containers: [{name: c}]}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: proxy, namespace: shop, annotations: {reloader.stakater.com/search: "true", configmap.reloader.stakater.com/reload: cfg}}
spec: {template: {spec: {containers: [{name: p}], volumes: [{name: t, secret: {secretName: tls-cert}}, {name: d, secret: {secretName: db}}]}}}
"#;
        let docs = yaml(&format!("{ESO}{workloads}"));
        let mut imported = import(docs.clone());
        add_targets(&docs, &mut imported);
        assert_eq!(
            targets(&imported, "db"),
            json!([{"kind": "Deployment", "name": "api"}, {"kind": "StatefulSet", "name": "cache"}])
        );
        assert_eq!(
            targets(&imported, "tls"),
            json!([{"kind": "DaemonSet", "name": "proxy"}]),
            "search follows only the Secrets marked match (db is not)"
        );
        let notes: Vec<(&str, &str)> = imported
            .notes
            .iter()
            .filter(|n| !n.object.starts_with("ExternalSecret"))
            .map(|n| (n.object.as_str(), n.why.as_str()))
            .collect();
        let says =
            |object: &str, text: &str| notes.iter().any(|(o, w)| *o == object && w.contains(text));
        assert!(
            says(
                "Deployment shop/api",
                "Secret unrelated is made by no imported ExternalSecret"
            ),
            "{notes:#?}"
        );
        assert!(
            says(
                "StatefulSet shop/cache",
                "Secret missing is made by no imported ExternalSecret"
            ),
            "{notes:#?}"
        );
        assert!(
            says(
                "Deployment shop/api",
                "now a rollout target of SecretSync db"
            ),
            "{notes:#?}"
        );
        assert!(
            says("DaemonSet shop/proxy", "ConfigMaps are not synced"),
            "{notes:#?}"
        );
        // What it made is still a valid SecretSync.
        for object in &imported.objects {
            let sync: secretsync_api::SecretSync = serde_json::from_value(object.clone()).unwrap();
            secretsync_api::validate::validate_spec(&sync.spec, "x").unwrap();
        }
    }

    #[test]
    fn a_workload_in_another_namespace_is_not_mapped() {
        let docs = yaml(&format!(
            "{ESO}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: other, annotations: {{secret.reloader.stakater.com/reload: db}}}}\nspec: {{template: {{spec: {{containers: []}}}}}}\n"
        ));
        let mut imported = import(docs.clone());
        add_targets(&docs, &mut imported);
        assert!(targets(&imported, "db").is_null());
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n.object == "Deployment other/api" && n.why.contains("not mapped"))
        );
    }
}
