//! The `secretsync-sandbox` binary, request stats, and discovery as seen by clients.

use std::process::{Command, Stdio};

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

use secretsync_sandbox::Sandbox;

#[tokio::test]
async fn binary_prints_its_address_writes_a_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secretsync-sandbox"))
        .args(["--port", "0", "--kubeconfig-out"])
        .arg(&kc)
        .args(["--ready-delay-ms", "10", "--nodes", "1"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "starts quickly");
    let url = first
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"));
    assert_eq!(second, format!("kubeconfig written to {}", kc.display()));

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kc).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[tokio::test]
async fn stats_count_requests_by_verb_and_resource() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(sb.client(), "default");
    sb.reset_stats();
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
    api.get("a").await.unwrap();
    api.list(&Default::default()).await.unwrap();
    api.delete("a", &Default::default()).await.unwrap();
    let st = sb.stats();
    assert_eq!(st.count("create", "", "secrets"), 1);
    assert_eq!(st.count("get", "", "secrets"), 1);
    assert_eq!(st.count("list", "", "secrets"), 1);
    assert_eq!(st.writes_to("secrets"), 2);
    assert_eq!(st.total(), 4);

    // Same figures over HTTP, and reset.
    let client = sb.client();
    let req = hyper::Request::get("/sandbox/stats")
        .body(Vec::new())
        .unwrap();
    let v: serde_json::Value = client.request(req).await.unwrap();
    let parsed: secretsync_sandbox::Stats = serde_json::from_value(v).unwrap();
    assert_eq!(parsed.count("create", "", "secrets"), 1);
    let req = hyper::Request::post("/sandbox/stats/reset")
        .body(Vec::new())
        .unwrap();
    let _: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(sb.stats().total(), 0);
    sb.shutdown().await;
}
