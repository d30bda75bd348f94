//! The standalone simulator over the API, against a sandbox started without its built-in
//! one: the same code path as a bare control plane.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secretsync_sandbox::Sandbox;
use secretsync_simulator::{Options, apiserver};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} did not happen within {DEADLINE:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn start(controllers: bool) -> (Sandbox, Client, tokio::task::JoinHandle<()>) {
    let sandbox = Sandbox::builder()
        .without_simulator()
        .start()
        .await
        .unwrap();
    let client = sandbox.client();
    let sim = tokio::spawn(apiserver::run(
        client.clone(),
        Options {
            ready_delay: Duration::from_millis(50),
            nodes: 2,
            node_prefix: "sim-node".into(),
            controllers,
        },
    ));
    (sandbox, client, sim)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn waiting_message(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let w = st.state.as_ref()?.waiting.as_ref()?;
    (w.reason.as_deref() == Some("CreateContainerConfigError")).then(|| w.message.clone())?
}

fn deployment(secret_ref: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "app:1",
                                                        "env": [{"name": "P", "valueFrom": {"secretKeyRef": secret_ref}}]}]}}}
    }))
    .unwrap()
}

async fn web_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn without_a_simulator_the_sandbox_runs_no_pods() {
    let sandbox = Sandbox::builder()
        .without_simulator()
        .start()
        .await
        .unwrap();
    let deps: Api<Deployment> = Api::default_namespaced(sandbox.client());
    deps.create(
        &PostParams::default(),
        &deployment(json!({"name": "db-v1", "key": "password"})),
    )
    .await
    .unwrap();
    let rss: Api<ReplicaSet> = Api::default_namespaced(sandbox.client());
    // Nothing may ever appear; give a working simulator ample time to have acted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rss.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let d = deps.get("web").await.unwrap();
    assert!(d.status.is_none(), "{:?}", d.status);
}

#[tokio::test]
async fn controllers_roll_a_deployment_whose_pods_wait_for_their_secret_key() {
    let (_sandbox, client, _sim) = start(true).await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    deps.create(
        &PostParams::default(),
        &deployment(json!({"name": "db-v1", "key": "password"})),
    )
    .await
    .unwrap();

    let msgs = eventually("pods wait for the missing Secret", || async {
        let ps = web_pods(&pods).await;
        let msgs: Vec<String> = ps.iter().filter_map(waiting_message).collect();
        (ps.len() == 2 && msgs.len() == 2)
            .then_some(msgs)
            .ok_or(format!("{} pods", ps.len()))
    })
    .await;
    assert!(
        msgs.iter().all(|m| m == "secret \"db-v1\" not found"),
        "{msgs:?}"
    );
    assert!(web_pods(&pods).await.iter().all(|p| {
        p.spec
            .as_ref()
            .unwrap()
            .node_name
            .as_deref()
            .unwrap()
            .starts_with("sim-node-")
    }));

    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db-v1"}, "stringData": {"user": "app"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    eventually("pods name the missing key", || async {
        let msgs: Vec<String> = web_pods(&pods)
            .await
            .iter()
            .filter_map(waiting_message)
            .collect();
        (msgs.len() == 2
            && msgs
                .iter()
                .all(|m| m == "couldn't find key password in Secret default/db-v1"))
        .then_some(())
        .ok_or(format!("{msgs:?}"))
    })
    .await;

    secrets
        .patch(
            "db-v1",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "x"}})),
        )
        .await
        .unwrap();
    eventually("the Deployment is available", || async {
        let d = deps.get("web").await.unwrap();
        let s = d.status.unwrap_or_default();
        (s.ready_replicas == Some(2) && s.updated_replicas == Some(2))
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;

    // A template change rolls: a second ReplicaSet takes over, the first is scaled to 0.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "password"}}}]}]}}}})),
    )
    .await
    .unwrap();
    eventually("the rollout completes", || async {
        let d = deps.get("web").await.unwrap();
        let gen_ = d.metadata.generation;
        let s = d.status.unwrap_or_default();
        let ps = web_pods(&pods).await;
        let images: Vec<String> = ps
            .iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        (s.observed_generation == gen_
            && s.updated_replicas == Some(2)
            && s.replicas == Some(2)
            && s.ready_replicas == Some(2)
            && images.len() == 2
            && images.iter().all(|i| i == "app:2")
            && ps.iter().all(ready))
        .then_some(())
        .ok_or(format!("{s:?} {images:?}"))
    })
    .await;
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut replicas: Vec<i32> = rss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.spec.as_ref().unwrap().replicas.unwrap_or(1))
        .collect();
    replicas.sort();
    assert_eq!(replicas, [0, 2]);
}

#[tokio::test]
async fn the_kubelet_layer_alone_binds_and_starts_pods_but_runs_no_controllers() {
    let (_sandbox, client, _sim) = start(false).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = eventually("the bare Pod is Ready", || async {
        let p = pods.get("bare").await.unwrap();
        ready(&p)
            .then_some(p)
            .ok_or_else(|| "not ready".to_string())
    })
    .await;
    assert!(p.spec.unwrap().node_name.unwrap().starts_with("sim-node-"));

    let dss: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "a", "image": "a:1"}]}}}
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();
    // The Pod above proves the simulator is running; no DaemonSet Pods may follow.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names, ["bare"]);
}
