//! The OpenAPI schemas kubectl reads: client-side validation of `kind: List` manifests
//! (OpenAPI v2) and `kubectl explain` (OpenAPI v3), for built-in kinds and CRDs.

use secretsync_sandbox::Sandbox;

use crate::kubectl::{CRD_YAML, Kubectl};

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx, ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: example.io/v1
kind: Gadget
metadata: {name: g1}
spec: {size: 2}
";

#[tokio::test]
async fn kubectl_applies_the_list_that_get_o_yaml_prints() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    k.ok(&["apply", "-f", "-"], Some(CRD_YAML)).await;
    k.ok(&["apply", "-f", "-"], Some(MANIFEST)).await;
    let listed = k
        .ok(
            &[
                "get",
                "deployment/web",
                "configmap/settings",
                "gadget/g1",
                "-o",
                "yaml",
            ],
            None,
        )
        .await;
    assert!(listed.contains("kind: List"), "{listed}");
    k.ok(
        &[
            "delete",
            "deployment/web",
            "configmap/settings",
            "gadget/g1",
        ],
        None,
    )
    .await;

    let applied = k.ok(&["apply", "-f", "-"], Some(&listed)).await;
    for line in [
        "deployment.apps/web created",
        "configmap/settings created",
        "gadget.example.io/g1 created",
    ] {
        assert!(applied.contains(line), "{applied}");
    }
    assert_eq!(
        k.ok(
            &["get", "configmap/settings", "-o", "jsonpath={.data.mode}"],
            None
        )
        .await,
        "fast"
    );
}

#[tokio::test]
async fn kubectl_reports_unknown_and_missing_fields_in_a_list_like_a_real_server() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    k.ok(&["apply", "-f", "-"], Some(CRD_YAML)).await;
    let list = |item: &str| format!("apiVersion: v1\nkind: List\nitems:\n{item}");

    let unknown = k
        .run(
            &["apply", "-f", "-"],
            Some(&list(
                "- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web}\n  spec:\n    replica: 2\n    selector: {matchLabels: {app: web}}\n    template:\n      metadata: {labels: {app: web}}\n      spec: {containers: [{name: web, image: nginx}]}\n",
            )),
        )
        .await;
    assert!(!unknown.ok);
    assert!(
        unknown
            .stderr
            .contains(r#"unknown field "replica" in io.k8s.api.apps.v1.DeploymentSpec"#),
        "{}",
        unknown.stderr
    );

    let missing = k
        .run(
            &["apply", "-f", "-"],
            Some(&list(
                "- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec: {containers: [{image: nginx}]}\n",
            )),
        )
        .await;
    assert!(
        missing
            .stderr
            .contains(r#"missing required field "name" in io.k8s.api.core.v1.Container"#),
        "{}",
        missing.stderr
    );

    let wrong_type = k
        .run(
            &["apply", "-f", "-"],
            Some(&list(
                "- apiVersion: example.io/v1\n  kind: Gadget\n  metadata: {name: g}\n  spec: {size: big, colour: red}\n",
            )),
        )
        .await;
    assert!(
        wrong_type
            .stderr
            .contains(r#"unknown field "colour" in io.example.v1.Gadget.spec"#)
            && wrong_type.stderr.contains("spec.size"),
        "{}",
        wrong_type.stderr
    );
    // Nothing of a rejected List is created.
    let left = k
        .ok(&["get", "deploy,pods,gadgets", "-o", "name"], None)
        .await;
    assert_eq!(left.trim(), "");
}

#[tokio::test]
async fn kubectl_explains_built_in_kinds_and_custom_resources() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    let spec = k.ok(&["explain", "deployment.spec"], None).await;
    for want in [
        "KIND:       Deployment",
        "FIELD: spec <DeploymentSpec>",
        "replicas\t<integer>",
        "template\t<PodTemplateSpec> -required-",
    ] {
        assert!(spec.contains(want), "{want:?} in\n{spec}");
    }
    let env = k
        .ok(&["explain", "pods.spec.containers.env.valueFrom"], None)
        .await;
    assert!(env.contains("secretKeyRef\t<SecretKeySelector>"), "{env}");

    k.ok(&["apply", "-f", "-"], Some(CRD_YAML)).await;
    let gadget = k.ok(&["explain", "gadget.spec"], None).await;
    assert!(
        gadget.contains("KIND:       Gadget") && gadget.contains("size\t<integer>"),
        "{gadget}"
    );
    let meta = k.ok(&["explain", "gadget.metadata.labels"], None).await;
    assert!(meta.contains("FIELD: labels <map[string]string>"), "{meta}");
    let unknown = k.run(&["explain", "gadget.spec.colour"], None).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("field \"colour\" does not exist"),
        "{}",
        unknown.stderr
    );
}
