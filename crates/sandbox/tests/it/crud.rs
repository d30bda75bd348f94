//! CRUD, errors, selectors, pagination, metadata-only responses, Secret rules.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use serde_json::json;

use secretsync_sandbox::Sandbox;

use crate::common::{create_namespace, status_of};

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        string_data: Some([("k".to_string(), format!("value-of-{name}"))].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_get_replace_delete_with_real_errors() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(sb.client(), "default");
    let created = api
        .create(&PostParams::default(), &secret("s1", &[]))
        .await
        .unwrap();
    // stringData is folded into data and dropped.
    assert!(created.string_data.is_none());
    assert_eq!(
        created.data.as_ref().unwrap()["k"],
        ByteString(b"value-of-s1".to_vec())
    );
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(
        created.metadata.generation.is_none(),
        "Secrets carry no generation"
    );

    let dup = status_of(
        api.create(&PostParams::default(), &secret("s1", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "secrets \"s1\" already exists");

    let missing = status_of(api.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "secrets \"nope\" not found");

    // Optimistic concurrency: a replace with a stale resourceVersion is a 409 Conflict.
    let mut fresh = created.clone();
    fresh.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    let updated = api
        .replace("s1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let stale = status_of(
        api.replace("s1", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(stale.message.contains(
        "the object has been modified; please apply your changes to the latest version and try again"
    ), "{}", stale.message);

    // Objects only live in existing namespaces.
    let nowhere: Api<Secret> = Api::namespaced(sb.client(), "ghost");
    let e = status_of(
        nowhere
            .create(&PostParams::default(), &secret("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );

    // generateName
    let mut g = secret("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let gen_obj = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(gen_obj.metadata.name.unwrap().starts_with("gen-"));

    // dryRun creates nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &secret("dry", &[])).await.unwrap();
    assert!(api.get_opt("dry").await.unwrap().is_none());

    api.delete("s1", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("s1").await.unwrap().is_none());
    let e = status_of(
        api.delete("s1", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);

    // Delete preconditions.
    let s2 = api
        .create(&PostParams::default(), &secret("s2", &[]))
        .await
        .unwrap();
    let e = status_of(
        api.delete(
            "s2",
            &DeleteParams::default().preconditions(kube::api::Preconditions {
                uid: Some("other".into()),
                resource_version: None,
            }),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    api.delete(
        "s2",
        &DeleteParams::default().preconditions(kube::api::Preconditions {
            uid: s2.metadata.uid.clone(),
            resource_version: None,
        }),
    )
    .await
    .unwrap();
    sb.shutdown().await;
}

#[tokio::test]
async fn immutable_secrets_refuse_data_changes_but_allow_metadata_changes() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(sb.client(), "default");
    let mut s = secret("imm", &[]);
    s.immutable = Some(true);
    s.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: "00000000-0000-4000-8000-000000000000".into(),
            ..Default::default()
        },
    ]);
    api.create(&PostParams::default(), &s).await.unwrap();
    let e = status_of(
        api.patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k": "new"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Secret \"imm\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let e = status_of(
        api.patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": false})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // Dropping ownerReferences and changing labels is fine.
    let after = api
        .patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null, "labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert!(after.metadata.owner_references.is_none());
    assert_eq!(after.metadata.labels.unwrap()["x"], "y");
    sb.shutdown().await;
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_paginate_and_span_namespaces() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    create_namespace(&client, "other").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let other: Api<Secret> = Api::namespaced(client.clone(), "other");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        api.create(
            &PostParams::default(),
            &secret(&format!("s{i}"), &[("app", "web"), ("tier", tier)]),
        )
        .await
        .unwrap();
    }
    other
        .create(&PostParams::default(), &secret("o1", &[("app", "db")]))
        .await
        .unwrap();

    let names = |l: kube::api::ObjectList<Secret>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier=back"))
                .await
                .unwrap()
        ),
        ["s1", "s3", "s5"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier in (back),app"))
                .await
                .unwrap()
        ),
        ["s1", "s3", "s5"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier notin (back)"))
                .await
                .unwrap()
        ),
        ["s0", "s2", "s4", "s6"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("!tier"))
                .await
                .unwrap()
        )
        .len(),
        0
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=s3"))
                .await
                .unwrap()
        ),
        ["s3"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name!=s3"))
                .await
                .unwrap()
        )
        .len(),
        6
    );

    let all: Api<Secret> = Api::all(client.clone());
    let everything = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(everything.items.len(), 8);
    assert!(everything.metadata.resource_version.is_some());
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("app=db"))
                .await
                .unwrap()
        ),
        ["o1"]
    );

    // Pagination: pages of 3 cover every object exactly once.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(names(page.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    sb.shutdown().await;
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata_without_data() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(sb.client(), "default");
    api.create(&PostParams::default(), &secret("m1", &[("a", "b")]))
        .await
        .unwrap();
    let meta: PartialObjectMeta<Secret> = api.get_metadata("m1").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["a"], "b");
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);

    // The wire format carries no data.
    let raw = reqwest_like_get(
        sb.url(),
        "/api/v1/namespaces/default/secrets/m1",
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(raw["kind"], "PartialObjectMetadata");
    assert_eq!(raw["apiVersion"], "meta.k8s.io/v1");
    assert!(raw.get("data").is_none());
    let raw = reqwest_like_get(
        sb.url(),
        "/api/v1/namespaces/default/secrets",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert!(raw["items"][0].get("data").is_none());
    sb.shutdown().await;
}

/// GET through the kube client's raw request API with a chosen Accept header.
pub async fn reqwest_like_get(url: &str, path: &str, accept: &str) -> serde_json::Value {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let req = hyper::Request::get(path)
        .header("accept", accept)
        .body(Vec::new())
        .unwrap();
    client.request::<serde_json::Value>(req).await.unwrap()
}

#[tokio::test]
async fn generation_tracks_spec_for_workloads_and_status_is_ignored_on_main_endpoint() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(sb.client(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"sandbox.secretsync.io/hang-rollout": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
        "status": {"replicas": 99}
    })).unwrap();
    let d = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert_ne!(d.status.as_ref().and_then(|s| s.replicas), Some(99));
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    let d = api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}}))).await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));

    // ConfigMaps with binaryData round-trip.
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("c".into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "b".to_string(),
            ByteString(vec![0, 1, 2]),
        )])),
        ..Default::default()
    };
    let got = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(got.binary_data.unwrap()["b"], ByteString(vec![0, 1, 2]));
    sb.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_warn_by_default_and_invalid_metadata_is_rejected() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let req = hyper::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "spec": {"x": 1}})).unwrap(),
        ))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    let warning = resp
        .headers()
        .get("warning")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(warning, "299 - \"unknown field \\\"spec\\\"\"");

    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bad", "labels": {"app": "has space"}}, "data": {"bad key": "v"}})).unwrap();
    let e = status_of(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .contains("metadata.labels: Invalid value: \"has space\""),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("data[bad key]: Invalid value: \"bad key\": a valid config key"),
        "{}",
        e.message
    );
    let long: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "long", "labels": {"app": "x".repeat(64)}}}),
    )
    .unwrap();
    let e = status_of(api.create(&PostParams::default(), &long).await.unwrap_err());
    assert!(
        e.message.contains("must be no more than 63 characters"),
        "{}",
        e.message
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_all_land_and_stale_replaces_conflict() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let base = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "hot"}, "data": {}})).unwrap(),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.patch(
                    "hot",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {format!("k{i}"): "v"}})),
                )
                .await
                .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(api.get("hot").await.unwrap().data.unwrap().len(), 20);
    // Replaces based on the original version all lose: someone else wrote first.
    let e = status_of(
        api.replace("hot", &PostParams::default(), &base)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    sb.shutdown().await;
}

#[tokio::test]
async fn broken_workload_manifests_are_rejected_like_the_real_server() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(sb.client(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap();
    let e = status_of(api.create(&PostParams::default(), &d).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"), "{}", e.message);
    assert!(
        e.message
            .contains("spec.template.spec.containers[0].image: Required value"),
        "{}",
        e.message
    );

    let ok: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "ok", "annotations": {"sandbox.secretsync.io/hang-rollout": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &ok).await.unwrap();
    let e = status_of(
        api.patch("ok", &PatchParams::default(), &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "z"}}, "template": {"metadata": {"labels": {"app": "z"}}}}})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.selector: Invalid value"),
        "{}",
        e.message
    );
    assert!(e.message.contains("field is immutable"), "{}", e.message);
    sb.shutdown().await;
}
