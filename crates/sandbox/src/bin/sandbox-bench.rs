//! `sandbox-bench`: load figures for the sandbox API server.
//!
//! Starts a sandbox in-process, fills it with Secrets and ConfigMaps across namespaces
//! through the HTTP API, then measures list throughput and watch fan-out, and prints
//! the figures recorded in BENCH.md.

use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Load figures for the sandbox API server")]
struct Args {
    /// Objects to create (half Secrets, half ConfigMaps).
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// Namespaces to spread them over.
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Watchers for the fan-out figure.
    #[arg(long, default_value_t = 200)]
    watchers: usize,
    /// Events each watcher must receive.
    #[arg(long, default_value_t = 500)]
    events: usize,
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sb = secretsync_sandbox::Sandbox::start().await?;
    let client = sb.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    for i in 0..args.namespaces {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("bench-{i}")}}))?;
        nss.create(&PostParams::default(), &ns).await?;
    }

    // Creates.
    let started = Instant::now();
    let creates = futures::stream::iter(0..args.objects)
        .map(|i| {
            let client = client.clone();
            let ns = format!("bench-{}", (i / 2) % args.namespaces);
            async move {
                let name = format!("obj-{i:06}");
                let labels = json!({"bench": "true", "shard": (i % 10).to_string()});
                if i % 2 == 0 {
                    let s: Secret = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "stringData": {"password": format!("p{i}")}}))?;
                    Api::<Secret>::namespaced(client, &ns).create(&PostParams::default(), &s).await?;
                } else {
                    let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"key": format!("v{i}")}}))?;
                    Api::<ConfigMap>::namespaced(client, &ns).create(&PostParams::default(), &c).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>();
    creates.await?;
    let create_secs = started.elapsed().as_secs_f64();
    let held = sb.object_count();
    let rss_filled = vm_kib("VmRSS:");

    // Lists of one namespace.
    let secrets_ns: Api<Secret> = Api::namespaced(client.clone(), "bench-0");
    let rounds = 50;
    let started = Instant::now();
    let mut listed = 0;
    for _ in 0..rounds {
        listed += secrets_ns.list(&ListParams::default()).await?.items.len();
    }
    let list_ns_secs = started.elapsed().as_secs_f64();

    // Lists across all namespaces.
    let secrets_all: Api<Secret> = Api::all(client.clone());
    let rounds_all = 3;
    let started = Instant::now();
    let mut listed_all = 0;
    for _ in 0..rounds_all {
        listed_all += secrets_all.list(&ListParams::default()).await?.items.len();
    }
    let list_all_secs = started.elapsed().as_secs_f64();

    // The same lists as raw HTTP, without client-side decoding: the server's share.
    let started = Instant::now();
    let mut raw_bytes = 0;
    for _ in 0..rounds_all {
        let req = hyper::Request::get("/api/v1/secrets").body(Vec::new())?;
        raw_bytes += client.request_text(req).await?.len();
    }
    let raw_all_secs = started.elapsed().as_secs_f64();

    // Watch fan-out.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-1");
    let rv = cms
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut streams = Vec::new();
    for _ in 0..args.watchers {
        streams.push(cms.watch(&WatchParams::default(), &rv).await?.boxed());
    }
    let started = Instant::now();
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let want = args.events;
            tokio::spawn(async move {
                let mut got = 0;
                while got < want {
                    match tokio::time::timeout(Duration::from_secs(60), s.next()).await {
                        Ok(Some(Ok(WatchEvent::Added(_)))) => got += 1,
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                got
            })
        })
        .collect();
    for i in 0..args.events {
        let c: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("fan-{i}")}, "data": {"k": "v"}}),
        )?;
        cms.create(&PostParams::default(), &c).await?;
    }
    let mut delivered = 0;
    for r in receivers {
        delivered += r.await?;
    }
    let fan_secs = started.elapsed().as_secs_f64();

    println!("objects held:              {held}");
    println!(
        "create throughput:         {:.0} obj/s ({} objects in {create_secs:.1}s, {} concurrent)",
        args.objects as f64 / create_secs,
        args.objects,
        args.concurrency
    );
    println!(
        "list one namespace:        {:.0} obj/s ({rounds} lists of {} Secrets in {list_ns_secs:.2}s)",
        listed as f64 / list_ns_secs,
        listed / rounds
    );
    println!(
        "list all namespaces:       {:.0} obj/s ({rounds_all} lists of {} Secrets in {list_all_secs:.2}s)",
        listed_all as f64 / list_all_secs,
        listed_all / rounds_all
    );
    println!(
        "list all, raw HTTP:        {:.0} obj/s ({rounds_all} lists, {:.0} MiB, in {raw_all_secs:.2}s; no client decoding)",
        listed_all as f64 / raw_all_secs,
        raw_bytes as f64 / 1048576.0
    );
    println!(
        "watch fan-out:             {:.0} events/s ({} watchers x {} events, {delivered} delivered in {fan_secs:.2}s)",
        delivered as f64 / fan_secs,
        args.watchers,
        args.events
    );
    println!(
        "RSS after creates:         {:.0} MiB (server and client in one process)",
        rss_filled as f64 / 1024.0
    );
    println!(
        "peak RSS (VmHWM):          {:.0} MiB",
        vm_kib("VmHWM:") as f64 / 1024.0
    );
    sb.shutdown().await;
    Ok(())
}
