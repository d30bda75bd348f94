//! Merge, JSON, strategic merge patches and server-side apply.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use secretsync_sandbox::Sandbox;

use crate::common::status_of;

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"sandbox.secretsync.io/hang-rollout": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "side:1"}
            ]}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let sb = Sandbox::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let c = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        c.data.unwrap(),
        [
            ("b".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string())
        ]
        .into()
    );
    let p: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/b", "value": "9"}]))
            .unwrap();
    let c = cms
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(p))
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["b"], "9");
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "0"}])).unwrap();
    assert_eq!(
        status_of(
            cms.patch("c", &PatchParams::default(), &Patch::<()>::Json(bad))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    // A patch carrying a stale resourceVersion is a conflict.
    let e = status_of(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "z"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    let deps: Api<Deployment> = Api::namespaced(sb.client(), "default");
    deps.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "B", "value": "2"}]},
                {"name": "side", "$patch": "delete"}
            ]}}}})),
        )
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("app:1"));
    let env: Vec<_> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"]);
    sb.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_creates_owns_conflicts_and_prunes() {
    let sb = Sandbox::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cfg = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});

    // fieldManager is required.
    let e = status_of(
        cms.patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Apply(cfg(json!({"a": "1"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    let created = cms
        .patch(
            "ssa",
            &PatchParams::apply("alice"),
            &Patch::Apply(cfg(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Another manager changing alice's field conflicts...
    let e = status_of(
        cms.patch(
            "ssa",
            &PatchParams::apply("bob"),
            &Patch::Apply(cfg(json!({"a": "X"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\""),
        "{}",
        e.message
    );
    assert!(e.message.contains(".data.a"), "{}", e.message);
    // ...agreeing on the value does not...
    cms.patch(
        "ssa",
        &PatchParams::apply("bob"),
        &Patch::Apply(cfg(json!({"b": "2"}))),
    )
    .await
    .unwrap();
    // ...and force takes ownership.
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cfg(json!({"a": "X", "b": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "X");

    // alice stops applying b: bob co-owns it, so it stays. carol's own field is dropped
    // when carol stops applying it.
    cms.patch(
        "ssa",
        &PatchParams::apply("alice"),
        &Patch::Apply(cfg(json!({}))),
    )
    .await
    .unwrap();
    cms.patch(
        "ssa",
        &PatchParams::apply("carol"),
        &Patch::Apply(cfg(json!({"c": "3"}))),
    )
    .await
    .unwrap();
    let now = cms
        .patch(
            "ssa",
            &PatchParams::apply("carol"),
            &Patch::Apply(cfg(json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(
        now.data.unwrap(),
        [
            ("a".to_string(), "X".to_string()),
            ("b".to_string(), "2".to_string())
        ]
        .into()
    );

    // YAML bodies are accepted too.
    let client = sb.client();
    let req = hyper::Request::patch("/api/v1/namespaces/default/configmaps/yaml?fieldManager=y")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yaml\ndata:\n  k: v\n".to_vec())
        .unwrap();
    let v: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(v["data"]["k"], "v");
    sb.shutdown().await;
}

#[tokio::test]
async fn apply_to_status_subresource_only_touches_status() {
    let sb = Sandbox::start().await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(sb.client(), "default");
    deps.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 5}, "status": {"observedGeneration": 7}});
    let d = deps
        .patch_status(
            "web",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().observed_generation, Some(7));
    assert_eq!(d.spec.unwrap().replicas, Some(0));
    sb.shutdown().await;
}

#[tokio::test]
async fn identical_reapply_is_a_no_op() {
    let sb = Sandbox::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same"}, "data": {"a": "1"}});
    let first = cms
        .patch(
            "same",
            &PatchParams::apply("op").force(),
            &Patch::Apply(&cfg),
        )
        .await
        .unwrap();
    let second = cms
        .patch(
            "same",
            &PatchParams::apply("op").force(),
            &Patch::Apply(&cfg),
        )
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    // A merge patch that changes nothing is a no-op too.
    let third = cms
        .patch(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        third.metadata.resource_version
    );
    sb.shutdown().await;
}
