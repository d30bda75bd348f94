//! `kubectl secretsync import` on External Secrets Operator's own corpus: every manifest among
//! the documentation snippets of the ESO release we compare against (read from the Go module
//! cache, never copied into this project) is converted, and what comes out is applied to the
//! sandbox, whose CRD validation must accept it.

use std::path::PathBuf;
use std::process::Command;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kubectl_secretsync::import::{Imported, import};
use secretsync_testkit::eso;
use serde_json::Value;

use crate::common::Env;

#[tokio::test]
async fn eso_documentation_snippets_convert_and_validate() {
    let snippets = eso::module().join("docs/snippets");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&snippets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let env = Env::start("imported").await;
    let (mut converted, mut reported, mut unparsed, mut notes) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if !text.contains("external-secrets.io/") {
            continue;
        }
        // The docs site strips the `{% raw %}` lines that keep mkdocs off ESO's templates:
        // what a user copies is the rest.
        let text: String = text
            .lines()
            .filter(|l| !matches!(l.trim(), "{% raw %}" | "{% endraw %}"))
            .map(|l| format!("{l}\n"))
            .collect();
        // Anything else that is not YAML is not ours to judge (counted).
        let docs: Result<Vec<Value>, _> = serde_yaml::Deserializer::from_str(&text)
            .map(serde::Deserialize::deserialize)
            .collect();
        let Ok(docs) = docs else {
            unparsed += 1;
            continue;
        };
        let Imported {
            objects,
            notes: file_notes,
            failed,
            ignored: _,
        } = import(docs);
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        reported += failed.len();
        notes += file_notes.len();
        for note in &file_notes {
            assert!(
                !note.why.is_empty() && note.field.starts_with('.'),
                "{stem}: {note:?}"
            );
        }
        for (i, object) in objects.into_iter().enumerate() {
            match apply(&env, object, &format!("{stem}-{i}")).await {
                Ok(()) => converted += 1,
                Err(e) => failures.push(format!("{stem}: {e}")),
            }
        }
    }
    println!(
        "ESO {} snippets: {converted} converted, {reported} not converted (reported with \
         the reason), {} failed; {notes} fields reported; {unparsed} files are not plain YAML",
        eso::MODULE,
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        converted >= 40,
        "only {converted} converted: is the corpus there?"
    );
}

/// Creates `object` under `name` (snippets reuse names) in the test namespace: the API
/// server's validation (the CRDs' schemas and rules) has to accept it. (The import checked it
/// against the operator's own validation already.)
async fn apply(env: &Env, mut object: Value, name: &str) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    object["metadata"]["name"] = Value::from(name);
    let gvk = GroupVersionKind::gvk("secretsync.io", "v1alpha1", &kind);
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = if kind.starts_with("Cluster") {
        Api::all_with(env.client.clone(), &resource)
    } else {
        object["metadata"]["namespace"] = Value::from(env.ns.as_str());
        Api::namespaced_with(env.client.clone(), &env.ns, &resource)
    };
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    api.create(&PostParams::default(), &dynamic)
        .await
        .map(|_| ())
        .map_err(|e| format!("{kind} {name} refused: {e}\n{object:#}"))
}

/// The plugin as a user runs it: `import -f FILE --rollout-from-reloader` prints the
/// SecretSync with the Reloader-annotated Deployment as its rollout target, and the report
/// says what to do with the Deployment.
#[test]
fn import_with_rollout_from_reloader_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eso.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: db, namespace: shop}
spec:
  secretStoreRef: {name: vault}
  data: [{secretKey: password, remoteRef: {key: app/db, property: password}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop, annotations: {secret.reloader.stakater.com/reload: db}}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: app:1}]}
"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-secretsync"))
            .args(["import", "-f"])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
            .map(serde::Deserialize::deserialize)
            .collect::<Result<_, _>>()
            .unwrap();
        (docs, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (docs, report) = run(&["--rollout-from-reloader"]);
    assert_eq!(docs.len(), 1, "the Deployment itself is not printed");
    assert_eq!(
        docs[0]["spec"]["rollout"]["targets"],
        serde_json::json!([{"kind": "Deployment", "name": "api"}])
    );
    assert!(
        report.contains("Deployment shop/api:")
            && report.contains("now a rollout target of SecretSync db"),
        "{report}"
    );
    let (without, _) = run(&[]);
    assert!(
        without[0]["spec"]["rollout"].is_null(),
        "only when asked for"
    );
}
