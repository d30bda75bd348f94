//! Instant sync's latency: from a write at OpenBao to the new versioned Secret in the
//! cluster, with `refreshInterval: 1h`, through OpenBao's `socket` audit device. Run it with
//! `scripts/bench-instant.sh` (a real control plane; docs/benchmarks.md has the figures).
//! `--source sqs`: the same through AWS Secrets Manager on moto, each write a
//! `PutSecretValue` and the message EventBridge would deliver for it sent to the store's SQS
//! queue (moto has no EventBridge), read by the operator's poller.
//!
//! N SecretSyncs each read their own key; then the bench writes each key once at OpenBao's
//! HTTP API, `--rate` writes per second, and times each write's `…-v2` Secret as a watch of
//! the namespace sees it. Printed: p50, p90, p99 and max, and the reads the changes cost at
//! OpenBao (its file audit log; one per key changed is the floor). The operator runs in this
//! process, with the options the chart gives it for instant sync.
//!
//! Needs `KUBECONFIG` (the CRDs applied) and `bao` or `moto_server` (scripts/setup.sh).
//! Arguments: `--n 100`, `--rate 10`, `--source openbao|sqs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::hash_key::KeySecret;
use secretsync_operator::process::metrics::Metrics;
use secretsync_operator::{Config, RunOptions};
use secretsync_testkit::moto::{self, Moto};
use secretsync_testkit::openbao::OpenBao;
use serde_json::{Value, json};

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}

fn text_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default.to_owned(), Clone::clone)
}

/// The backend written to, and how its reads of the bench's keys are counted.
enum Backend {
    Bao {
        bao: OpenBao,
        http: reqwest::Client,
    },
    Aws {
        moto: Arc<Moto>,
        queue: String,
        /// Each key's ARN, for its events.
        arns: Vec<String>,
    },
}

impl Backend {
    /// Writes `value` to key `i` (and, on AWS, sends the event EventBridge would).
    async fn write(&self, i: usize, value: &str) {
        let key = format!("bench/k{i}");
        match self {
            Backend::Bao { bao, http } => {
                let response = http
                    .post(format!("{}/v1/secret/data/{key}", bao.addr()))
                    .header("X-Vault-Token", bao.root_token())
                    .body(json!({"data": {"password": value}}).to_string())
                    .send()
                    .await
                    .expect("bao write");
                assert!(response.status().is_success(), "bao write {key}");
            }
            Backend::Aws { moto, queue, arns } => {
                let (moto, queue, arn) = (moto.clone(), queue.clone(), arns[i].clone());
                let value = json!({"password": value}).to_string();
                tokio::task::spawn_blocking(move || {
                    moto.put_secret_value(&key, &value);
                    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
                    let event = moto::put_secret_value_event(&arn, &key, &now.to_string());
                    moto.send_message(&queue, &event);
                })
                .await
                .expect("moto write");
            }
        }
    }

    /// The store's spec, listening to this backend's events.
    fn store_spec(&self) -> Value {
        match self {
            Backend::Bao { bao, .. } => json!({
                "provider": {"vault": {"server": bao.addr(), "path": "secret", "version": "v2",
                    "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}},
                "events": {"source": "OpenBaoAudit"},
            }),
            Backend::Aws { moto, queue, .. } => json!({
                "provider": {"aws": {"region": moto.region(), "endpoint": moto.endpoint(),
                    "auth": {"secretRef": {
                        "accessKeyIdSecretRef": {"name": "vault-token", "key": "id"},
                        "secretAccessKeySecretRef": {"name": "vault-token", "key": "secret"}}}}},
                "events": {"source": "AwsSqs", "queueURL": queue},
            }),
        }
    }

    /// The credentials Secret's data.
    fn credentials(&self) -> Value {
        match self {
            Backend::Bao { bao, .. } => json!({"token": bao.root_token()}),
            Backend::Aws { .. } => json!({"id": "AKIDEXAMPLE", "secret": "any"}),
        }
    }

    /// The reads of the bench's keys the backend has answered so far.
    fn reads(&self) -> usize {
        match self {
            Backend::Bao { bao, .. } => reads(bao),
            Backend::Aws { moto, .. } => {
                moto.recorded("GetSecretValue") + moto.recorded("BatchGetSecretValue")
            }
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

async fn bench() {
    // reqwest is built without a crypto provider (as in the operator): ring, like kube.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (n, rate) = (arg("--n", 100), arg("--rate", 10));
    let sqs = match text_arg("--source", "openbao").as_str() {
        "openbao" => false,
        "sqs" => true,
        other => panic!("--source {other}: openbao or sqs"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audit = listener.local_addr().unwrap();
    let backend = if sqs {
        let moto = Moto::start().expect("moto_server is installed (scripts/setup.sh)");
        let queue = moto.create_queue("secretsync-bench", Duration::from_secs(30));
        let arns = (0..n)
            .map(|i| {
                let key = format!("bench/k{i}");
                moto.create_secret(&key, r#"{"password":"one"}"#, &[]);
                moto.arn_of(&key)
            })
            .collect();
        moto.record();
        Backend::Aws {
            moto: Arc::new(moto),
            queue,
            arns,
        }
    } else {
        let bao = OpenBao::start_with_socket_audit(&audit.to_string())
            .expect("bao is installed (scripts/setup.sh)");
        let backend = Backend::Bao {
            bao,
            http: reqwest::Client::new(),
        };
        for i in 0..n {
            backend.write(i, "one").await;
        }
        backend
    };

    let client = Client::try_default().await.expect("KUBECONFIG");
    let ns = format!("instant-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create the namespace");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(secretsync_operator::run(
        client.clone(),
        Config {
            hash_key: KeySecret {
                namespace: ns.clone(),
                name: "secretsync-hash-key".into(),
            },
            ..Config::default()
        },
        RunOptions {
            namespaces: vec![ns.clone()],
            openbao_audit: (!sqs).then_some(listener),
            ..RunOptions::default()
        },
        Arc::new(Metrics::default()),
        async move {
            let _ = stopped.await;
        },
    ));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-token"}, "stringData": backend.credentials()}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let store: SecretStore = serde_json::from_value(json!({
        "metadata": {"name": "vault"},
        "spec": backend.store_spec(),
    }))
    .unwrap();
    Api::<SecretStore>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &store)
        .await
        .unwrap();

    // When each Secret appeared, by name, as a watch sees it.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = tokio::spawn({
        let metadata = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &ns);
        let seen = seen.clone();
        async move {
            let mut events = watcher(metadata, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(secret)) = events.next().await {
                let mut seen = seen.lock().unwrap();
                seen.entry(secret.name_any()).or_insert_with(Instant::now);
            }
        }
    });
    let syncs: Api<SecretSync> = Api::namespaced(client.clone(), &ns);
    for i in 0..n {
        let sync: SecretSync = serde_json::from_value(json!({
            "metadata": {"name": format!("s{i}")},
            "spec": {"storeRef": {"name": "vault"}, "refreshInterval": "1h",
                "data": [{"secretKey": "password",
                    "remoteRef": {"key": format!("bench/k{i}"), "property": "password"}}]},
        }))
        .unwrap();
        syncs.create(&PostParams::default(), &sync).await.unwrap();
    }
    wait_for(&seen, (0..n).map(|i| format!("s{i}-v1")).collect()).await;
    let reads_before = backend.reads();

    // Each key written once, `rate` per second.
    let mut written = Vec::with_capacity(n);
    let mut every = tokio::time::interval(Duration::from_secs(1) / rate.max(1) as u32);
    for i in 0..n {
        every.tick().await;
        let at = Instant::now();
        backend.write(i, "two").await;
        written.push(at);
    }
    let names: Vec<String> = (0..n).map(|i| format!("s{i}-v2")).collect();
    wait_for(&seen, names.clone()).await;
    let mut latencies: Vec<Duration> = {
        let seen = seen.lock().unwrap();
        names
            .iter()
            .zip(&written)
            .map(|(name, at)| seen[name].saturating_duration_since(*at))
            .collect()
    };
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, n) - 1];
    let reads = backend.reads() - reads_before;
    let (through, at) = if sqs {
        ("Secrets Manager (moto) through SQS", "moto")
    } else {
        ("OpenBao's audit device", "OpenBao")
    };
    println!(
        "instant sync from {through}, {n} keys written at {rate}/s, refreshInterval 1h: \
         write → new Secret p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; {reads} reads at {at} \
         for {n} changed keys",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[n - 1],
    );

    watching.abort();
    let _ = stop.send(());
    let _ = operator.await;
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &Default::default())
        .await;
}

/// Waits (with a deadline) until every name has been seen.
async fn wait_for(seen: &Mutex<HashMap<String, Instant>>, names: Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            names.iter().filter(|n| !seen.contains_key(*n)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} Secrets never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reads of the bench's keys OpenBao has answered so far (its file audit log).
fn reads(bao: &OpenBao) -> usize {
    std::fs::read_to_string(bao.audit_log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("\"type\":\"response\"")
                && l.contains("\"operation\":\"read\"")
                && l.contains("\"path\":\"secret/data/bench/")
        })
        .count()
}
