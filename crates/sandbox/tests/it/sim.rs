//! The workload simulator: ReplicaSets, Pods, readiness, rollouts and status.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use secretsync_sandbox::Sandbox;

use crate::common::eventually;
use crate::kubectl::Kubectl;

fn workload<T: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    replicas: Option<i32>,
    pod_spec: Value,
    annotations: Value,
) -> T {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}
    });
    if let Some(r) = replicas {
        v["spec"]["replicas"] = json!(r);
    }
    if kind == "StatefulSet" {
        v["spec"]["serviceName"] = json!(name);
    }
    serde_json::from_value(v).unwrap()
}

fn containers(image: &str) -> Value {
    json!({"containers": [{"name": "app", "image": image}]})
}

async fn pods_with(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn fast_sandbox() -> Sandbox {
    Sandbox::builder()
        .ready_delay(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn deployment_creates_replicaset_and_ready_pods_then_rolls_out_template_changes() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deps.create(
        &PostParams::default(),
        &workload("Deployment", "web", Some(2), containers("app:1"), json!({})),
    )
    .await
    .unwrap();

    let d = eventually(10, "deployment available", || {
        let deps = deps.clone();
        async move {
            let d = deps.get("web").await.ok()?;
            let s = d.status.clone()?;
            (s.available_replicas == Some(2)
                && s.updated_replicas == Some(2)
                && s.observed_generation == Some(1))
            .then_some(d)
        }
    })
    .await;
    let conds = d.status.unwrap().conditions.unwrap();
    let progressing = conds.iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );

    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let rs = &rs_list[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision"], "1");
    assert_eq!(rs.owner_references()[0].name, "web");
    let ps = pods_with(&pods, "web").await;
    assert_eq!(ps.len(), 2);
    for p in &ps {
        assert!(p.name_any().starts_with(&format!("web-{hash}-")));
        assert_eq!(p.name_any().len(), format!("web-{hash}-").len() + 5);
        assert_eq!(p.owner_references()[0].name, rs.name_any());
        assert!(ready(p));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        assert!(
            p.status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0]
                .ready
        );
    }

    deps.patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    eventually(10, "rollout to app:2 complete", || {
        let (deps, pods) = (deps.clone(), pods.clone());
        async move {
            let d = deps.get("web").await.ok()?;
            let s = d.status?;
            let ps = pods_with(&pods, "web").await;
            let all_new = ps.len() == 2
                && ps.iter().all(|p| {
                    p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("app:2")
                        && ready(p)
                });
            let done = s.observed_generation == Some(2)
                && s.replicas == Some(2)
                && s.updated_replicas == Some(2)
                && s.conditions?
                    .iter()
                    .any(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
            (all_new && done).then_some(())
        }
    })
    .await;
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 2);
    let old = rs_list
        .iter()
        .find(|r| r.labels()["pod-template-hash"] == hash)
        .unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let new = rs_list
        .iter()
        .find(|r| r.labels()["pod-template-hash"] != hash)
        .unwrap();
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");

    // Scaling to zero removes every pod.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually(10, "scaled to zero", || {
        let pods = pods.clone();
        async move { pods_with(&pods, "web").await.is_empty().then_some(()) }
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn pods_wait_for_missing_secrets_and_start_once_they_exist() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({
        "containers": [{"name": "app", "image": "app:1",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "a"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "b", "optional": true}}}]}],
        "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "creds"}}]}}]
    });
    deps.create(
        &PostParams::default(),
        &workload("Deployment", "needs", Some(1), spec, json!({})),
    )
    .await
    .unwrap();
    let p = eventually(10, "pod blocked on secret", || {
        let pods = pods.clone();
        async move {
            let p = pods_with(&pods, "needs").await.into_iter().next()?;
            let cs = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            let w = cs.state?.waiting?;
            (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some((p, w.message))
        }
    })
    .await;
    assert_eq!(p.1.as_deref(), Some("secret \"creds\" not found"));
    assert_eq!(
        p.0.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(!ready(&p.0));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"a": "1"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    eventually(10, "pod ready after secret appears", || {
        let deps = deps.clone();
        async move { (deps.get("needs").await.ok()?.status?.ready_replicas == Some(1)).then_some(()) }
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn hang_annotation_keeps_new_pods_unready() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deps.create(
        &PostParams::default(),
        &workload(
            "Deployment",
            "hung",
            Some(1),
            containers("x"),
            json!({"sandbox.secretsync.io/hang-rollout": "true"}),
        ),
    )
    .await
    .unwrap();
    deps.create(
        &PostParams::default(),
        &workload("Deployment", "control", Some(1), containers("x"), json!({})),
    )
    .await
    .unwrap();
    // The control deployment (created after) becoming ready shows the simulator has had
    // its chance with the hung one.
    eventually(10, "control ready", || {
        let deps = deps.clone();
        async move { (deps.get("control").await.ok()?.status?.ready_replicas == Some(1)).then_some(()) }
    })
    .await;
    let hung = pods_with(&pods, "hung").await;
    assert_eq!(hung.len(), 1);
    assert!(!ready(&hung[0]));
    let d = deps.get("hung").await.unwrap();
    let progressing = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("ReplicaSetUpdated"));

    // Removing the annotation releases the rollout.
    deps.patch(
        "hung",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"sandbox.secretsync.io/hang-rollout": null}}}),
        ),
    )
    .await
    .unwrap();
    eventually(10, "hung deployment released", || {
        let deps = deps.clone();
        async move { (deps.get("hung").await.ok()?.status?.ready_replicas == Some(1)).then_some(()) }
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn pods_using_a_secret_marked_bad_never_become_ready_and_others_do() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for name in ["db-v1", "db-v2"] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": name}, "stringData": {"p": "x"}}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let using = |secret: &str| {
        json!({"containers": [{"name": "app", "image": "app:1",
            "envFrom": [{"secretRef": {"name": secret}}]}]})
    };
    deps.create(
        &PostParams::default(),
        &workload(
            "Deployment",
            "app",
            Some(1),
            using("db-v1"),
            json!({"sandbox.secretsync.io/bad-secrets": "other, db-v2"}),
        ),
    )
    .await
    .unwrap();
    eventually(10, "ready on the good secret", || {
        let deps = deps.clone();
        async move { (deps.get("app").await.ok()?.status?.ready_replicas == Some(1)).then_some(()) }
    })
    .await;

    deps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": using("db-v2")}}})),
    )
    .await
    .unwrap();
    // The new Pod exists, has its status written, and stays unready; the old one serves.
    let new_pod = eventually(10, "a pod on db-v2 with a status", || {
        let pods = pods.clone();
        async move {
            pods_with(&pods, "app").await.into_iter().find(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    serde_json::to_string(&s.containers)
                        .unwrap()
                        .contains("db-v2")
                })
            })
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // several ready delays
    let new_pod = pods.get(&new_pod.name_any()).await.unwrap();
    assert!(!ready(&new_pod), "a pod on a bad secret became ready");
    let d = deps.get("app").await.unwrap().status.unwrap();
    assert_eq!((d.ready_replicas, d.updated_replicas), (Some(1), Some(1)));
    let old_ready = pods_with(&pods, "app")
        .await
        .iter()
        .filter(|p| ready(p))
        .count();
    assert_eq!(old_ready, 1, "the pod on db-v1 keeps serving");
    sb.shutdown().await;
}

#[tokio::test]
async fn statefulsets_and_daemonsets_get_named_pods_and_status() {
    let sb = Sandbox::builder()
        .ready_delay(Duration::from_millis(20))
        .nodes(2)
        .start()
        .await
        .unwrap();
    let client = sb.client();
    let stss: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    stss.create(
        &PostParams::default(),
        &workload("StatefulSet", "db", Some(3), containers("db:1"), json!({})),
    )
    .await
    .unwrap();
    dss.create(
        &PostParams::default(),
        &workload("DaemonSet", "agent", None, containers("a:1"), json!({})),
    )
    .await
    .unwrap();
    let st = eventually(10, "statefulset ready", || {
        let stss = stss.clone();
        async move {
            let s = stss.get("db").await.ok()?.status?;
            (s.ready_replicas == Some(3) && s.current_revision == s.update_revision).then_some(s)
        }
    })
    .await;
    let mut names: Vec<String> = pods_with(&pods, "db")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let ds = eventually(10, "daemonset ready", || {
        let dss = dss.clone();
        async move {
            let s = dss.get("agent").await.ok()?.status?;
            (s.number_ready == 2 && s.desired_number_scheduled == 2).then_some(s)
        }
    })
    .await;
    assert_eq!(ds.updated_number_scheduled, Some(2));
    let mut nodes: Vec<String> = pods_with(&pods, "agent")
        .await
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["sandbox-node-0", "sandbox-node-1"]);

    // Template change: statefulset pods are recreated with the new revision.
    let old_rev = st.update_revision.unwrap();
    stss.patch("db", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "db:2"}]}}}}))).await.unwrap();
    eventually(10, "statefulset rolled", || {
        let (stss, old_rev) = (stss.clone(), old_rev.clone());
        async move {
            let s = stss.get("db").await.ok()?.status?;
            (s.updated_replicas == Some(3)
                && s.ready_replicas == Some(3)
                && s.current_revision == s.update_revision
                && s.update_revision != Some(old_rev))
            .then_some(())
        }
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn kubectl_rollout_status_finishes_after_template_changes() {
    let sb = fast_sandbox().await;
    let Some(k) = Kubectl::new(&sb) else { return };
    let manifests = |img: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: app, image: '{img}'}}]}}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: 2\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: app, image: '{img}'}}]}}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec: {{containers: [{{name: app, image: '{img}'}}]}}\n"
        )
    };
    k.ok(&["apply", "-f", "-"], Some(&manifests("v1"))).await;
    for w in ["deployment/web", "statefulset/db", "daemonset/agent"] {
        k.ok(&["rollout", "status", w, "--timeout=30s"], None).await;
    }
    k.ok(&["apply", "-f", "-"], Some(&manifests("v2"))).await;
    let out = k
        .ok(
            &["rollout", "status", "deployment/web", "--timeout=30s"],
            None,
        )
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    k.ok(
        &["rollout", "status", "statefulset/db", "--timeout=30s"],
        None,
    )
    .await;
    let out = k
        .ok(
            &["rollout", "status", "daemonset/agent", "--timeout=30s"],
            None,
        )
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let images = k
        .ok(
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ],
            None,
        )
        .await;
    assert_eq!(images, "v2 v2");

    // Rolling back reuses the first ReplicaSet, which becomes revision 3.
    k.ok(&["rollout", "undo", "deployment/web"], None).await;
    k.ok(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    )
    .await;
    let rss = k.ok(&["get", "rs", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.annotations.deployment\\.kubernetes\\.io/revision}:{.spec.template.spec.containers[0].image}:{.spec.replicas} {end}"], None).await;
    let mut rss: Vec<&str> = rss.split_whitespace().collect();
    rss.sort();
    assert_eq!(rss, ["2:v2:0", "3:v1:2"]);
    sb.shutdown().await;
}

#[tokio::test]
async fn scale_subresource_and_progress_deadline() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deps.create(
        &PostParams::default(),
        &workload("Deployment", "web", Some(1), containers("x"), json!({})),
    )
    .await
    .unwrap();
    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    eventually(10, "three ready pods", || {
        let pods = pods.clone();
        async move {
            (pods_with(&pods, "web")
                .await
                .iter()
                .filter(|p| ready(p))
                .count()
                == 3)
                .then_some(())
        }
    })
    .await;
    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));

    // A rollout that cannot finish runs into its progress deadline.
    let mut hung: Deployment = workload(
        "Deployment",
        "stuck",
        Some(1),
        containers("x"),
        json!({"sandbox.secretsync.io/hang-rollout": "true"}),
    );
    hung.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deps.create(&PostParams::default(), &hung).await.unwrap();
    eventually(10, "progress deadline exceeded", || {
        let deps = deps.clone();
        async move {
            let conds = deps.get("stuck").await.ok()?.status?.conditions?;
            conds
                .iter()
                .any(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
                .then_some(())
        }
    })
    .await;
    if let Some(k) = Kubectl::new(&sb) {
        let out = k
            .run(
                &["rollout", "status", "deployment/stuck", "--timeout=20s"],
                None,
            )
            .await;
        assert!(!out.ok);
        assert!(
            out.stderr.contains("exceeded its progress deadline"),
            "{}",
            out.stderr
        );
        let scaled = k
            .ok(&["scale", "deployment/web", "--replicas=1"], None)
            .await;
        assert!(scaled.contains("scaled"), "{scaled}");
        assert_eq!(
            deps.get("web").await.unwrap().spec.unwrap().replicas,
            Some(1)
        );
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn deleting_a_deployment_cascades_to_replicasets_and_pods() {
    let sb = fast_sandbox().await;
    let client = sb.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deps.create(
        &PostParams::default(),
        &workload("Deployment", "gone", Some(2), containers("x"), json!({})),
    )
    .await
    .unwrap();
    eventually(10, "pods exist", || {
        let pods = pods.clone();
        async move { (pods_with(&pods, "gone").await.len() == 2).then_some(()) }
    })
    .await;
    deps.delete("gone", &Default::default()).await.unwrap();
    eventually(10, "replicasets and pods collected", || {
        let (rss, pods) = (rss.clone(), pods.clone());
        async move {
            (rss.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                && pods_with(&pods, "gone").await.is_empty())
            .then_some(())
        }
    })
    .await;
    sb.shutdown().await;
}
