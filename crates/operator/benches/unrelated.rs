//! The operator's memory against the cluster it sits in: 100 SecretSyncs, each rolling out
//! to a Deployment of its own, beside N Deployments that have nothing to do with secretsync.
//! The operator binary runs as its own process, so its VmRSS/VmHWM are its own.
//!
//! Three layouts: no unrelated Deployments, N small ones, N large ones (each with a 4 KiB
//! annotation and 40 plain env vars, as `kubectl apply` and real apps leave them). Memory
//! that follows the work stays flat from small to large.
//!
//! `cargo bench -p secretsync-operator --bench unrelated`. Env: `SECRETSYNC_BENCH_UNRELATED`
//! (2000), `SECRETSYNC_BENCH_OPERATOR` (the operator binary; default: this build's),
//! `SECRETSYNC_BENCH_OPERATOR_ARGS`.
//! Results: docs/benchmarks.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_sandbox::Sandbox;
use serde_json::{Value, json};

const SYNCS: usize = 100;
const NAMESPACE: &str = "apps";

fn deployment(name: &str, large: bool, secret: Option<&str>) -> Deployment {
    let mut env: Vec<Value> = Vec::new();
    if large {
        env.extend((0..40).map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}-{}", "x".repeat(40))})));
    }
    if let Some(secret) = secret {
        env.push(json!({"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}));
    }
    let annotations = if large {
        json!({"kubectl.kubernetes.io/last-applied-configuration": "y".repeat(4096)})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations, "labels": {"app": name}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "registry.example.com/app:1.2.3", "command": ["serve", "--port", "8080"], "env": env},
                    {"name": "sidecar", "image": "registry.example.com/proxy:2", "args": ["--upstream", "127.0.0.1:8080"]},
                ]},
            },
        },
    }))
    .expect("Deployment fits the type")
}

struct Figures {
    rss_kib: u64,
    hwm_kib: u64,
    ready_after: Duration,
}

fn proc_memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn run(operator: &PathBuf, unrelated: usize, large: bool) -> Figures {
    let sandbox = Sandbox::builder()
        .ready_delay(Duration::from_millis(10))
        .start()
        .await
        .expect("sandbox starts");
    let client: Client = sandbox.client();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in secretsync_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
        )
        .await
        .expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for i in 0..unrelated {
        deployments
            .create(
                &PostParams::default(),
                &deployment(&format!("unrelated-{i}"), large, None),
            )
            .await
            .expect("unrelated Deployment");
    }
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "store", "namespace": NAMESPACE},
        "spec": {"provider": {"fake": {"data": [{"key": "app/db", "value": "{\"password\":\"p\"}", "version": "1"}]}}},
    }))
    .unwrap();
    Api::<SecretStore>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &store)
        .await
        .expect("store");
    let syncs: Api<SecretSync> = Api::namespaced(client.clone(), NAMESPACE);
    for i in 0..SYNCS {
        let name = format!("db{i}");
        deployments
            .create(
                &PostParams::default(),
                &deployment(&format!("app{i}"), large, Some(&format!("{name}-v1"))),
            )
            .await
            .expect("target Deployment");
        let sync: SecretSync = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "storeRef": {"name": "store"},
                "data": [{"secretKey": "password", "remoteRef": {"key": "app/db", "property": "password"}}],
                "rollout": {"targets": [{"kind": "Deployment", "name": format!("app{i}")}]},
            },
        }))
        .unwrap();
        syncs
            .create(&PostParams::default(), &sync)
            .await
            .expect("SecretSync");
    }

    let started = Instant::now();
    let mut child = tokio::process::Command::new(operator)
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .args(operator_args())
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");
    let pid = child.id().expect("pid");
    loop {
        let list = syncs.list(&Default::default()).await.expect("list");
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "RolledOut" && c.status == "True")
                })
            })
            .count();
        if ready == SYNCS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {ready}/{SYNCS} rolled out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready_after = started.elapsed();
    // Let allocations settle after the initial lists.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_kib, hwm_kib) = proc_memory(pid);
    let _ = child.kill().await;
    sandbox.shutdown().await;
    Figures {
        rss_kib,
        hwm_kib,
        ready_after,
    }
}

/// Extra arguments for the operator (`SECRETSYNC_BENCH_OPERATOR_ARGS`, space-separated):
/// by default the HTTP endpoints are off, so runs never compete for a port.
fn operator_args() -> Vec<String> {
    std::env::var("SECRETSYNC_BENCH_OPERATOR_ARGS")
        .unwrap_or_else(|_| "--metrics-bind-address 0 --health-bind-address 0".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let unrelated: usize = std::env::var("SECRETSYNC_BENCH_UNRELATED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let operator = std::env::var_os("SECRETSYNC_BENCH_OPERATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_secretsync-operator")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "operator {} with {SYNCS} SecretSyncs (each rolling out a Deployment)",
        operator.display()
    );
    for (label, count, large) in [
        ("no unrelated Deployments", 0, false),
        ("small unrelated Deployments", unrelated, false),
        ("large unrelated Deployments", unrelated, true),
    ] {
        let f = runtime.block_on(run(&operator, count, large));
        println!(
            "  {label:<28} n={count:<5} operator VmRSS {:>6.1} MiB  VmHWM {:>6.1} MiB  all rolled out after {:.1} s",
            f.rss_kib as f64 / 1024.0,
            f.hwm_kib as f64 / 1024.0,
            f.ready_after.as_secs_f64()
        );
    }
}
