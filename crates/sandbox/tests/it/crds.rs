//! CRDs: registration in discovery, schema validation, pruning, defaulting, field validation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use serde_json::{Value, json};

use secretsync_sandbox::Sandbox;

use crate::common::{eventually, status_of};

pub fn crd_json() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.io"},
        "spec": {
            "group": "example.io",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"], "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["data"],
                            "x-kubernetes-validations": [
                                {"rule": "!has(self.mode) || self.mode != 'slow' || self.size < 5", "message": "slow gadgets must be small"}
                            ],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                                "mode": {"type": "string", "enum": ["fast", "slow"]},
                                "data": {"type": "array", "items": {
                                    "type": "object", "required": ["secretKey"],
                                    "properties": {"secretKey": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
                                }},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                    }
                }}
            }]
        }
    })
}

pub async fn install(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(crd_json()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.io", "v1", "Gadget"),
        "gadgets",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn gadget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test]
async fn crd_registers_kind_with_status_and_discovery() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    install(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("gadgets.example.io").await.unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.io", "v1", "Gadget"))
        .expect("Gadget is discoverable");
    assert_eq!(ar.plural, "gadgets");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "gadgets/status" || s.plural == "status")
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn custom_resources_are_validated_pruned_and_defaulted() {
    let sb = Sandbox::start().await.unwrap();
    let api = install(&sb.client()).await;
    let e = status_of(
        api.create(
            &PostParams::default(),
            &gadget(
                "bad",
                json!({"size": 11, "mode": "medium", "data": [{"secretKey": "x y"}]}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    for expected in [
        "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
        "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
        "spec.data[0].secretKey: Invalid value: \"x y\": spec.data[0].secretKey in body should match '^[A-Za-z0-9_.-]+$'",
    ] {
        assert!(
            e.message.contains(expected),
            "{} lacks {expected}",
            e.message
        );
    }
    assert!(
        e.message
            .starts_with("Gadget.example.io \"bad\" is invalid: "),
        "{}",
        e.message
    );
    let causes = e.details.unwrap().causes;
    assert_eq!(causes.len(), 3);

    let e = status_of(
        api.create(&PostParams::default(), &gadget("req", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.data: Required value"),
        "{}",
        e.message
    );

    // Unknown fields are pruned (default fieldValidation), preserved where the schema says so,
    // and defaults are applied.
    let ok = api
        .create(
            &PostParams::default(),
            &gadget(
                "ok",
                json!({"data": [], "junk": 1, "extra": {"any": {"thing": 1}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["size"], json!(3));
    assert!(ok.data["spec"].get("junk").is_none());
    assert_eq!(ok.data["spec"]["extra"]["any"]["thing"], json!(1));
    assert_eq!(ok.metadata.generation, Some(1));

    // Strict field validation rejects unknown fields; Warn accepts with a warning.
    let e = status_of(
        raw_post(&sb, "/apis/example.io/v1/namespaces/default/gadgets?fieldValidation=Strict",
            json!({"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "s"}, "spec": {"data": [], "foo": 1}}))
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message
            .contains("strict decoding error: unknown field \"spec.foo\""),
        "{}",
        e.message
    );
    let strict_apply = PatchParams::apply("t").validation(kube::api::ValidationDirective::Strict);
    let e = status_of(
        api.patch("s2", &strict_apply, &Patch::Apply(json!({"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "s2"}, "spec": {"data": [], "bar": 1}})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("unknown field \"spec.bar\""),
        "{}",
        e.message
    );

    // CEL rules (x-kubernetes-validations) are enforced.
    let e = status_of(
        api.create(
            &PostParams::default(),
            &gadget("cel", json!({"data": [], "mode": "slow", "size": 7})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("spec: Invalid value: \"object\": slow gadgets must be small"),
        "{}",
        e.message
    );
    api.create(
        &PostParams::default(),
        &gadget("cel", json!({"data": [], "mode": "slow", "size": 2})),
    )
    .await
    .unwrap();

    // Strategic merge patch is refused for custom resources, like the real server.
    let e = status_of(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 415);

    // Status is only writable through /status.
    let after = api
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert!(after.data.get("status").is_none());
    let after = api
        .patch_status(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["ready"], json!(true));
    assert_eq!(after.data["spec"]["size"], json!(3), "/status ignores spec");
    assert_eq!(after.metadata.generation, Some(1));
    sb.shutdown().await;
}

#[tokio::test]
async fn deleting_a_crd_removes_its_custom_resources() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let api = install(&client).await;
    api.create(&PostParams::default(), &gadget("g", json!({"data": []})))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("gadgets.example.io", &Default::default())
        .await
        .unwrap();
    eventually(5, "kind gone", || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .err()
                .map(|e| status_of(e).code)
        }
    })
    .await;
    // Recreating the CRD does not resurrect old objects.
    let api = install(&client).await;
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn builtin_kinds_honour_field_validation() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        sb.client(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}, "spec": {"foo": 1}
    })).unwrap();
    let e = status_of(
        raw_post(
            &sb,
            "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            serde_json::to_value(&obj).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("unknown field \"spec\""),
        "{}",
        e.message
    );
    let got = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(got.data.get("spec").is_none());
    assert_eq!(got.data["data"]["a"], json!("b"));
    sb.shutdown().await;
}

async fn raw_post(sb: &Sandbox, path: &str, body: Value) -> kube::Result<Value> {
    let req = hyper::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    sb.client().request::<Value>(req).await
}

/// As the real server: a custom resource's body must name its kind (its decoder has no
/// type to default it from), while a built-in kind's is taken from the URL.
#[tokio::test]
async fn a_custom_resource_without_kind_is_refused_and_a_builtin_one_is_not() {
    let sb = Sandbox::start().await.unwrap();
    install(&sb.client()).await;
    let e = status_of(
        raw_post(
            &sb,
            "/apis/example.io/v1/namespaces/default/gadgets",
            json!({"apiVersion": "example.io/v1", "metadata": {"name": "k"}, "spec": {"data": []}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("Object 'Kind' is missing"),
        "{}",
        e.message
    );
    let made = raw_post(
        &sb,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "no-kind"}, "data": {"a": "b"}}),
    )
    .await
    .unwrap();
    assert_eq!(made["kind"], "ConfigMap");
    sb.shutdown().await;
}
