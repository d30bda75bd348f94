//! Finalizers, garbage collection, namespace deletion, events and leases.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;

use secretsync_sandbox::Sandbox;

use crate::common::{create_namespace, eventually, status_of};

fn cm(name: &str, extra_meta: serde_json::Value) -> ConfigMap {
    let mut meta = json!({"name": name});
    if let (Some(m), Some(x)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(x.clone());
    }
    serde_json::from_value(json!({"metadata": meta})).unwrap()
}

fn owned_by(owner: &ConfigMap) -> serde_json::Value {
    json!({"ownerReferences": [owner.controller_owner_ref(&()).unwrap()]})
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    api.create(
        &PostParams::default(),
        &cm("f", json!({"finalizers": ["example.io/hold"]})),
    )
    .await
    .unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));
    // New finalizers cannot be added once deletion started.
    let e = status_of(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.io/hold", "example.io/more"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
    sb.shutdown().await;
}

#[tokio::test]
async fn background_foreground_and_orphan_propagation() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let secrets: Api<Secret> = Api::namespaced(sb.client(), "default");

    // Background: owner goes now, dependents shortly after.
    let owner = api
        .create(&PostParams::default(), &cm("bg", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("bg-child", owned_by(&owner)))
        .await
        .unwrap();
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "bg-secret", "ownerReferences": [owner.controller_owner_ref(&()).unwrap()]}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    api.delete("bg", &DeleteParams::background()).await.unwrap();
    assert!(api.get_opt("bg").await.unwrap().is_none());
    eventually(5, "background dependents deleted", || {
        let (api, secrets) = (api.clone(), secrets.clone());
        async move {
            (api.get_opt("bg-child").await.unwrap().is_none()
                && secrets.get_opt("bg-secret").await.unwrap().is_none())
            .then_some(())
        }
    })
    .await;

    // Foreground: the owner waits (with the foregroundDeletion finalizer) for its dependents.
    let owner = api
        .create(&PostParams::default(), &cm("fg", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("fg-child", json!({"ownerReferences": [owner.controller_owner_ref(&()).unwrap()], "finalizers": ["example.io/hold"]}))).await.unwrap();
    api.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let waiting = api.get("fg").await.unwrap();
    assert!(
        waiting
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    assert!(waiting.metadata.deletion_timestamp.is_some());
    eventually(5, "child marked for deletion", || {
        let api = api.clone();
        async move { api.get("fg-child").await.ok()?.metadata.deletion_timestamp }
    })
    .await;
    api.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(5, "foreground owner removed", || {
        let api = api.clone();
        async move { api.get_opt("fg").await.unwrap().is_none().then_some(()) }
    })
    .await;

    // Orphan: dependents survive without the owner reference.
    let owner = api
        .create(&PostParams::default(), &cm("or", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("or-child", owned_by(&owner)))
        .await
        .unwrap();
    api.delete("or", &DeleteParams::orphan()).await.unwrap();
    let child = api.get("or-child").await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents_then_itself() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    create_namespace(&client, "doomed").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(5, "namespace gone", || {
        let nss = nss.clone();
        async move { nss.get_opt("doomed").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert!(
        all.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|c| c.namespace().as_deref() != Some("doomed"))
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn event_recorder_creates_and_aggregates_series() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let target = cms
        .create(&PostParams::default(), &cm("evented", json!({})))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tester".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("all good".into()),
        action: "Sync".into(),
        secondary: None,
    };
    let oref = target.object_ref(&());
    recorder.publish(&ev, &oref).await.unwrap();
    recorder.publish(&ev, &oref).await.unwrap();
    let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Synced"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("evented")
    );
    let selected = events
        .list(&ListParams::default().fields("regarding.name=evented"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);

    // The same Event through core/v1, as `kubectl get events` reads it.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=evented"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let c = &list.items[0];
    assert_eq!(c.message.as_deref(), Some("all good"));
    assert_eq!(c.involved_object.name.as_deref(), Some("evented"));
    assert_eq!(c.reporting_component.as_deref(), Some("tester"));
    sb.shutdown().await;
}

#[tokio::test]
async fn leases_support_crud_and_apply_with_resource_version_precondition() {
    let sb = Sandbox::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(sb.client(), "default");
    let body = |holder: &str, rv: Option<&str>| {
        let mut v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}});
        if let Some(rv) = rv {
            v["metadata"]["resourceVersion"] = json!(rv);
        }
        v
    };
    let l = leases
        .patch(
            "leader",
            &PatchParams::apply("a").force(),
            &Patch::Apply(body("a", None)),
        )
        .await
        .unwrap();
    let rv = l.metadata.resource_version.clone().unwrap();
    let l2 = leases
        .patch(
            "leader",
            &PatchParams::apply("a").force(),
            &Patch::Apply(body("b", Some(&rv))),
        )
        .await
        .unwrap();
    assert_eq!(l2.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A stale precondition loses the race.
    let e = status_of(
        leases
            .patch(
                "leader",
                &PatchParams::apply("a").force(),
                &Patch::Apply(body("c", Some(&rv))),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    leases
        .delete("leader", &DeleteParams::default())
        .await
        .unwrap();
    assert!(leases.get_opt("leader").await.unwrap().is_none());
    sb.shutdown().await;
}
