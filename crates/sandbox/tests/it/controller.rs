//! Priority-1 acceptance: a kube-runtime Controller on a CRD kind that owns ConfigMaps.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use secretsync_sandbox::Sandbox;

use crate::common::eventually;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.secretsync.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
pub struct WidgetSpec {
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    pub observed: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(w: Arc<Widget>, client: Arc<kube::Client>) -> Result<Action, ReconcileError> {
    let ns = w.namespace().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), &ns);
    let child = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{}-child", w.name_any())),
            owner_references: Some(vec![w.controller_owner_ref(&()).unwrap()]),
            ..Default::default()
        },
        data: Some([("value".to_string(), w.spec.value.clone())].into()),
        ..Default::default()
    };
    cms.patch(
        &child.name_any(),
        &PatchParams::apply("widget-controller").force(),
        &Patch::Apply(&child),
    )
    .await?;
    let widgets: Api<Widget> = Api::namespaced((*client).clone(), &ns);
    let status = json!({
        "apiVersion": "test.secretsync.io/v1",
        "kind": "Widget",
        "status": {"observed": w.spec.value},
    });
    widgets
        .patch_status(
            &w.name_any(),
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

pub async fn install_widget_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    eventually(5, "CRD established", || {
        let crds = crds.clone();
        async move {
            let c = crds.get("widgets.test.secretsync.io").await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn controller_reconciles_children_and_status_and_reacts_to_spec_changes() {
    let sandbox = Sandbox::start().await.unwrap();
    let client = sandbox.client();
    install_widget_crd(&client).await;

    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctl = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client.clone()))
        .for_each(|_| async {});
    let ctl = tokio::spawn(ctl);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { value: "a".into() }),
        )
        .await
        .unwrap();
    eventually(10, "status observed=a and child a", || {
        let (widgets, cms) = (widgets.clone(), cms.clone());
        async move {
            let w = widgets.get("w1").await.ok()?;
            let cm = cms.get("w1-child").await.ok()?;
            (w.status?.observed.as_deref() == Some("a")
                && cm.data?.get("value").map(String::as_str) == Some("a"))
            .then_some(())
        }
    })
    .await;

    let w = widgets.get("w1").await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"value": "b"}})),
        )
        .await
        .unwrap();
    eventually(10, "status observed=b and child b", || {
        let (widgets, cms) = (widgets.clone(), cms.clone());
        async move {
            let w = widgets.get("w1").await.ok()?;
            let cm = cms.get("w1-child").await.ok()?;
            (w.status?.observed.as_deref() == Some("b")
                && cm.data?.get("value").map(String::as_str) == Some("b"))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        widgets.get("w1").await.unwrap().metadata.generation,
        Some(2)
    );

    // Deleting the child makes the controller (via .owns) recreate it.
    cms.delete("w1-child", &Default::default()).await.unwrap();
    eventually(10, "child recreated", || {
        let cms = cms.clone();
        async move { cms.get("w1-child").await.ok() }
    })
    .await;
    ctl.abort();
    sandbox.shutdown().await;
}
