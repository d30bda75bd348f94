//! The operator against a raw client, each as its own process, on the sandbox API server
//! (a process too) and a real OpenBao dev server. Run it with `scripts/bench.sh`; what it
//! measures and why is in docs/benchmarks.md.
//!
//! For each N it starts a fresh sandbox, OpenBao and operator, and runs:
//!
//! 1. **raw**: N SecretSyncs (label `secretsync.io/bench=raw`) done by a minimal client at the
//!    operator's concurrency: read the key from OpenBao, create the immutable Secret, patch
//!    the status. Nothing else runs meanwhile.
//! 2. **cold**: N other SecretSyncs (label `bench=op`, each its own key) exist; the operator
//!    process starts (it reconciles only `bench=op`); time until all are Ready at v1.
//! 3. **rotation**: R SecretSyncs with a Deployment each are made Ready, then 100 and R
//!    `spec.version` bumps are sent at once: latency to the new Secret and to the template.
//! 4. **bulk**: every cold SecretSync is bumped twice, so each has three versioned Secrets.
//! 5. **steady**: S SecretSyncs over a few shared keys with a short refresh interval are made
//!    Ready, then three refresh windows are watched: API writes and backend reads.
//! 6. **restart**: SIGTERM, a new operator process; time until every SecretSync has been
//!    reconciled, with the writes and reads it cost.
//!
//! API requests are the sandbox's own accounting, per user: the operator and the raw client
//! each impersonate a user of their own. Backend reads are counted in OpenBao's audit log.
//! Memory and CPU come from `/proc/<pid>` of the operator process.
//!
//! Arguments: `--n 1000,10000` (or `SECRETSYNC_BENCH_N`), `--smoke` (N=50, small sets,
//! short windows, with assertions; for scripts/test.sh), `--out FILE` (one JSON line per N,
//! for scripts/bench-plot.py). Binaries: `SECRETSYNC_OPERATOR_BIN`, `SECRETSYNC_SANDBOX_BIN`
//! (default: next to this executable's directory).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use secretsync_api::SecretSync;
use secretsync_sandbox::Stats;
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::{ChildGuard, free_port, http_get};
use serde_json::{Value, json};

/// Operator and raw client alike.
const CONCURRENCY: usize = 16;
/// The bench's own writes (creates, bumps, seeding) at once.
const BENCH_CONCURRENCY: usize = 32;
const NAMESPACES: usize = 10;
const OPERATOR_USER: &str = "bench:operator";
const RAW_USER: &str = "bench:raw";
const BENCH_LABEL: &str = "secretsync.io/bench";
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

#[derive(Clone, Copy)]
struct Sizes {
    /// Cold-start SecretSyncs (and as many for the raw client).
    n: usize,
    /// SecretSyncs with a Deployment target, for the rotation scenario.
    rot: usize,
    /// The smaller burst of the rotation scenario.
    rot_small: usize,
    /// Steady-state SecretSyncs, over `shared_keys` remote keys.
    steady: usize,
    shared_keys: usize,
    refresh: Duration,
    windows: u32,
    /// The operator counts as idle when its reconcile counter did not move for this long
    /// (shorter than `refresh`, or the steady set never lets it be idle).
    settle: Duration,
    smoke: bool,
}

impl Sizes {
    fn full(n: usize) -> Self {
        Sizes {
            n,
            rot: 1000,
            rot_small: 100,
            steady: 1000,
            shared_keys: 20,
            refresh: Duration::from_secs(10),
            windows: 3,
            settle: Duration::from_secs(2),
            smoke: false,
        }
    }

    fn smoke() -> Self {
        Sizes {
            n: 50,
            rot: 20,
            rot_small: 5,
            steady: 20,
            shared_keys: 4,
            refresh: Duration::from_secs(2),
            windows: 3,
            settle: Duration::from_millis(700),
            smoke: true,
        }
    }

    fn total(&self) -> usize {
        self.n + self.rot + self.steady
    }

    /// How long any one wait may take before the bench gives up.
    fn limit(&self) -> Duration {
        Duration::from_secs(120) + Duration::from_millis(30) * self.total() as u32
    }
}

fn cold_ns(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

// ---------------------------------------------------------------------------------------
// Processes and /proc.

fn binary(var: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/compare-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let found = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .filter(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{name} not found next to the bench: build it, or set {var}"))
}

#[derive(Clone, Copy, Default)]
struct ProcFigures {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

/// VmRSS, VmHWM and user+system CPU of a live process.
fn proc_figures(pid: u32) -> ProcFigures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may contain spaces: state is field 3, utime 14,
    // stime 15 (clock ticks, 100 per second on Linux).
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> f64 { rest.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    ProcFigures {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_s: (ticks(14) + ticks(15)) / 100.0,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct SandboxProcess {
    _child: ChildGuard,
    pid: u32,
    url: String,
    /// Unmetered (no impersonation) client for setup and `/sandbox/stats`.
    client: Client,
}

impl SandboxProcess {
    async fn start(dir: &Path) -> Self {
        let bin = binary("SECRETSYNC_SANDBOX_BIN", "secretsync-sandbox");
        let port = free_port();
        let log = std::fs::File::create(dir.join("sandbox.log")).expect("sandbox log");
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &port.to_string(), "--ready-delay-ms", "50"])
            .arg("--kubeconfig-out")
            .arg(dir.join("sandbox.kubeconfig"))
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log));
        let child = ChildGuard::spawn("secretsync-sandbox", &mut cmd)
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "sandbox did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("sandbox.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SandboxProcess {
            pid: child.id().expect("running"),
            _child: child,
            client: client_as(&url, None),
            url,
        }
    }

    /// CPU seconds the sandbox has used: serving the writes and every watch is the other
    /// half of what a sync costs on this machine.
    fn cpu_s(&self) -> f64 {
        proc_figures(self.pid).cpu_s
    }

    async fn stats(&self) -> Stats {
        self.client
            .request::<Stats>(
                http::Request::get("/sandbox/stats")
                    .body(Vec::new())
                    .expect("request"),
            )
            .await
            .expect("GET /sandbox/stats")
    }

    async fn reset_stats(&self) {
        self.client
            .request_text(
                http::Request::post("/sandbox/stats/reset")
                    .body(Vec::new())
                    .expect("request"),
            )
            .await
            .expect("POST /sandbox/stats/reset");
    }

    /// Events `user` created since the last reset.
    async fn events_created(&self, user: &str) -> u64 {
        let stats = self.stats().await;
        stats
            .by_user(user)
            .filter(|c| c.key.verb == "create" && c.key.resource == "events")
            .map(|c| c.count)
            .sum()
    }

    /// Requests of `user` since the last reset, by verb, and how many were writes.
    async fn requests_of(&self, user: &str) -> Requests {
        let stats = self.stats().await;
        let mut by_verb = BTreeMap::new();
        for c in stats.by_user(user) {
            *by_verb.entry(c.key.verb.clone()).or_insert(0) += c.count;
        }
        Requests(by_verb)
    }
}

/// A kube client for the sandbox, impersonating `user` (the sandbox counts requests by it).
fn client_as(url: &str, user: Option<&str>) -> Client {
    let mut config = kube::Config::new(url.parse().expect("URL parses"));
    config.auth_info.impersonate = user.map(str::to_owned);
    Client::try_from(config).expect("client")
}

#[derive(Clone, Default, Debug)]
struct Requests(BTreeMap<String, u64>);

impl Requests {
    fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|(v, _)| WRITE_VERBS.contains(&v.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    fn show(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn json(&self) -> Value {
        json!(self.0)
    }
}

struct OperatorProcess {
    child: ChildGuard,
    pid: u32,
    metrics_port: u16,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(dir: &Path, kubeconfig: &Path, run: usize) -> Self {
        let bin = binary("SECRETSYNC_OPERATOR_BIN", "secretsync-operator");
        let log = dir.join(format!("operator-{run}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let metrics_port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("RUST_LOG")
            .args(["--selector", &format!("{BENCH_LABEL}=op")])
            .args(["--concurrency", &CONCURRENCY.to_string()])
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(["--health-bind-address", "0"])
            .stdout(Stdio::from(out.try_clone().expect("log fd")))
            .stderr(Stdio::from(out));
        let child = ChildGuard::spawn("secretsync-operator", &mut cmd)
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let pid = child.id().expect("running");
        OperatorProcess {
            child,
            pid,
            metrics_port,
            log,
        }
    }

    fn figures(&self) -> ProcFigures {
        proc_figures(self.pid)
    }

    async fn metric(&self, series: &str) -> f64 {
        match http_get(self.metrics_port, "/metrics").await {
            Some((_, body)) => secretsync_operator::process::metrics::sum_series(&body, series),
            None => 0.0,
        }
    }

    async fn reconciles(&self) -> u64 {
        self.metric("secretsync_reconciles_total").await as u64
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "operator exited ({status}); last lines of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Waits until no reconcile finished for `sizes.settle`.
    async fn settle(&mut self, sizes: Sizes) {
        let limit = sizes.limit();
        let start = Instant::now();
        let mut last = self.reconciles().await;
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < sizes.settle && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.assert_running();
            let now = self.reconciles().await;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    async fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {}", self.pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.stop();
    }
}

// ---------------------------------------------------------------------------------------
// OpenBao: seeding over HTTP, reads counted in its audit log.

struct Bao {
    server: OpenBao,
    http: reqwest::Client,
    /// How far the audit log has been counted.
    audit_offset: u64,
}

impl Bao {
    fn start() -> Self {
        let server = OpenBao::start().expect("bao is installed (scripts/setup.sh)");
        Bao {
            server,
            http: reqwest::Client::new(),
            audit_offset: 0,
        }
    }

    async fn seed(&self, paths: Vec<String>) {
        let (addr, token) = (self.server.addr(), self.server.root_token().to_owned());
        futures::stream::iter(paths)
            .map(|path| {
                let (http, addr, token) = (self.http.clone(), addr.clone(), token.clone());
                async move {
                    let body = json!({"data": {"password": format!("value-of-{path}")}});
                    let response = http
                        .post(format!("{addr}/v1/secret/data/{path}"))
                        .header("X-Vault-Token", token)
                        .body(body.to_string())
                        .send()
                        .await
                        .expect("bao write");
                    assert!(response.status().is_success(), "bao write {path}");
                }
            })
            .buffer_unordered(BENCH_CONCURRENCY)
            .collect::<()>()
            .await;
    }

    /// Reads answered since the last call, by the first segment of the key (`cold`, `rot`,
    /// `shared`, …), from OpenBao's file audit log.
    fn reads_since_last(&mut self) -> BTreeMap<String, u64> {
        let mut file = std::fs::File::open(self.server.audit_log_path()).expect("audit log");
        use std::io::{Read, Seek};
        file.seek(std::io::SeekFrom::Start(self.audit_offset))
            .expect("seek");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read audit log");
        // Only whole lines; a partial last line is counted next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        self.audit_offset += whole as u64;
        let mut reads = BTreeMap::new();
        for line in text[..whole].lines() {
            if !line.contains("\"type\":\"response\"") || !line.contains("\"operation\":\"read\"") {
                continue;
            }
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let path = entry["request"]["path"].as_str().unwrap_or_default();
            if let Some(key) = path.strip_prefix("secret/data/") {
                let prefix = key.split('/').next().unwrap_or_default().to_owned();
                *reads.entry(prefix).or_insert(0) += 1;
            }
        }
        reads
    }
}

// ---------------------------------------------------------------------------------------
// Objects.

fn sync_object(name: &str, labels: &str, key: &str, extra: Value) -> SecretSync {
    let mut spec = json!({
        "storeRef": {"name": "vault"},
        "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
        "history": {"limit": 3},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": name, "labels": {BENCH_LABEL: labels}},
        "spec": spec,
    }))
    .expect("SecretSync fits the type")
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in secretsync_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }
    for crd in secretsync_api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        let start = Instant::now();
        loop {
            let got = crds.get(&name).await.expect("get CRD");
            let established = got
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} not established"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A namespace with the OpenBao token Secret and a Vault SecretStore `vault`.
async fn namespace_with_store(client: &Client, ns: &str, bao: &OpenBao) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
        )
        .await
        .expect("namespace created");
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-token"},
        "stringData": {"token": bao.root_token()},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &token)
        .await
        .expect("token Secret created");
    let store: secretsync_api::SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "vault"},
        "spec": {"provider": {"vault": {
            "server": bao.addr(), "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}},
        }}},
    }))
    .expect("store fits the type");
    Api::<secretsync_api::SecretStore>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &store)
        .await
        .expect("store created");
}

async fn create_all<K>(client: &Client, objects: Vec<(String, K)>)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    futures::stream::iter(objects)
        .map(|(ns, obj)| {
            let client = client.clone();
            async move {
                Api::<K>::namespaced(client, &ns)
                    .create(&PostParams::default(), &obj)
                    .await
                    .unwrap_or_else(|e| panic!("create {}/{}: {e}", ns, obj.name_any()));
            }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .collect::<()>()
        .await;
}

/// Sets `spec.version` of each (namespace, name) at once (BENCH_CONCURRENCY in flight);
/// returns when each patch was sent.
async fn bump_all(
    client: &Client,
    targets: Vec<(String, String)>,
    version: i64,
) -> HashMap<String, Instant> {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(targets)
        .map(|(ns, name)| {
            let (client, sent) = (client.clone(), sent.clone());
            async move {
                let at = Instant::now();
                Api::<SecretSync>::namespaced(client, &ns)
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"version": version}})),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("bump {ns}/{name}: {e}"));
                lock(&sent).insert(format!("{ns}/{name}"), at);
            }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .collect::<()>()
        .await;
    Arc::try_unwrap(sent)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// What the bench watches: when each SecretSync was first Ready at each version, when each
// Secret of the rotation namespace first appeared, and when each Deployment's template first
// named each Secret.

#[derive(Default)]
struct Seen {
    /// "ns/name" → version → first seen Ready at it.
    ready: HashMap<String, BTreeMap<i64, Instant>>,
    secrets: HashMap<String, Instant>,
    /// (Deployment, Secret name in its template) → first seen.
    templates: HashMap<(String, String), Instant>,
}

impl Seen {
    /// How many of `keys` are Ready at `version` or later.
    fn ready_count<'a>(&self, keys: impl Iterator<Item = &'a String>, version: i64) -> usize {
        keys.filter(|k| {
            self.ready
                .get(*k)
                .is_some_and(|v| v.range(version..).next().is_some())
        })
        .count()
    }

    fn ready_at(&self, key: &str, version: i64) -> Option<Instant> {
        self.ready.get(key)?.range(version..).map(|(_, t)| *t).min()
    }
}

fn ready_version(sync: &SecretSync) -> Option<i64> {
    let status = sync.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then_some(status.current_version?)
}

fn spawn_watchers(client: &Client, rot_ns: &str, seen: &Arc<Mutex<Seen>>) {
    let syncs: Api<SecretSync> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{BENCH_LABEL}=op"));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(syncs, config).default_backoff());
        while let Some(event) = stream.next().await {
            let sync = match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                _ => continue,
            };
            let now = Instant::now();
            if let Some(v) = ready_version(&sync) {
                let key = format!(
                    "{}/{}",
                    sync.namespace().unwrap_or_default(),
                    sync.name_any()
                );
                lock(&s)
                    .ready
                    .entry(key)
                    .or_default()
                    .entry(v)
                    .or_insert(now);
            }
        }
    });
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), rot_ns);
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher(secrets, watcher::Config::default()).default_backoff());
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) = event {
                lock(&s)
                    .secrets
                    .entry(m.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), rot_ns);
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher(deployments, watcher::Config::default()).default_backoff());
        while let Some(event) = stream.next().await {
            let d = match event {
                Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
                _ => continue,
            };
            let now = Instant::now();
            let names: Vec<String> = d
                .spec
                .iter()
                .flat_map(|s| s.template.spec.iter())
                .flat_map(|p| p.containers.iter())
                .flat_map(|c| c.env.iter().flatten())
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.name.clone())
                .collect();
            let mut seen = lock(&s);
            for name in names {
                seen.templates.entry((d.name_any(), name)).or_insert(now);
            }
        }
    });
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> (usize, usize)) {
    let start = Instant::now();
    let mut reported = Instant::now();
    loop {
        let (have, want) = done();
        if have >= want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: {have} of {want} after {limit:?}"
        );
        if reported.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "  … {what}: {have}/{want} after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy, Default)]
struct Pcts {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Percentiles in milliseconds (nearest rank).
fn pcts(mut ms: Vec<f64>) -> Pcts {
    if ms.is_empty() {
        return Pcts::default();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Pcts {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: ms[ms.len() - 1],
    }
}

impl Pcts {
    fn show(&self) -> String {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            self.p50, self.p90, self.p99, self.max
        )
    }

    fn json(&self) -> Value {
        json!({"p50_ms": self.p50.round(), "p90_ms": self.p90.round(), "p99_ms": self.p99.round(), "max_ms": self.max.round()})
    }
}

fn ms_since(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// The raw client: exactly the minimal work per SecretSync.

async fn raw_baseline(url: &str, bao: &OpenBao, n: usize) -> (Duration, Pcts) {
    let kube = client_as(url, Some(RAW_USER));
    let http = reqwest::Client::new();
    let (addr, token) = (bao.addr(), bao.root_token().to_owned());
    let t0 = Instant::now();
    let syncs = Api::<SecretSync>::all(kube.clone())
        .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=raw")))
        .await
        .expect("list raw SecretSyncs")
        .items;
    assert_eq!(syncs.len(), n, "raw SecretSyncs listed");
    let done: Vec<Instant> = futures::stream::iter(syncs)
        .map(|sync| {
            let (kube, http, addr, token) =
                (kube.clone(), http.clone(), addr.clone(), token.clone());
            async move {
                let ns = sync.namespace().unwrap_or_default();
                let name = sync.name_any();
                let key = sync.spec.data.as_ref().expect("data")[0]
                    .remote_ref
                    .key
                    .clone();
                let body: Value = http
                    .get(format!("{addr}/v1/secret/data/{key}"))
                    .header("X-Vault-Token", token)
                    .send()
                    .await
                    .expect("bao read")
                    .bytes()
                    .await
                    .map(|b| serde_json::from_slice(&b).expect("JSON from OpenBao"))
                    .expect("bao read body");
                let password = body["data"]["data"]["password"]
                    .as_str()
                    .expect("password in the secret")
                    .to_owned();
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {
                        "name": format!("{name}-v1"),
                        "labels": {BENCH_LABEL: "raw"},
                        "ownerReferences": [{
                            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
                            "name": name, "uid": sync.uid().unwrap_or_default(),
                            "controller": true,
                        }],
                    },
                    "immutable": true,
                    "stringData": {"password": password},
                }))
                .expect("secret");
                Api::<Secret>::namespaced(kube.clone(), &ns)
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("raw Secret created");
                let now = jiff::Timestamp::now().to_string();
                Api::<SecretSync>::namespaced(kube, &ns)
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                            "currentVersion": 1,
                            "conditions": [{
                                "type": "Ready", "status": "True", "reason": "Synced",
                                "message": "", "lastTransitionTime": now,
                            }],
                        }})),
                    )
                    .await
                    .expect("raw status patched");
                Instant::now()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let wall = t0.elapsed();
    (wall, pcts(done.iter().map(|t| ms_since(t0, *t)).collect()))
}

// ---------------------------------------------------------------------------------------
// One run at one N.

struct Run {
    sizes: Sizes,
    sandbox: SandboxProcess,
    bao: Bao,
    client: Client,
    seen: Arc<Mutex<Seen>>,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    operator_runs: usize,
    result: serde_json::Map<String, Value>,
    lines: Vec<(String, String)>,
}

impl Run {
    fn record(&mut self, key: &str, value: Value, row: &str, shown: String) {
        self.result.insert(key.to_owned(), value);
        if !row.is_empty() {
            self.lines.push((row.to_owned(), shown));
        }
    }

    fn operator(&mut self) -> OperatorProcess {
        self.operator_runs += 1;
        OperatorProcess::start(self.dir.path(), &self.kubeconfig, self.operator_runs)
    }

    async fn phase_start(&mut self) {
        self.sandbox.reset_stats().await;
        self.bao.reads_since_last();
    }
}

async fn run_one(sizes: Sizes) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = SandboxProcess::start(dir.path()).await;
    let bao = Bao::start();
    let client = sandbox.client.clone();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: operator\n  user: {{as: \"{OPERATOR_USER}\"}}\ncontexts:\n\
             - name: sandbox\n  context: {{cluster: sandbox, user: operator, namespace: default}}\n\
             current-context: sandbox\n",
            sandbox.url
        ),
    )
    .expect("kubeconfig");
    let mut run = Run {
        sizes,
        sandbox,
        bao,
        client,
        seen: Arc::default(),
        kubeconfig,
        dir,
        operator_runs: 0,
        result: serde_json::Map::new(),
        lines: Vec::new(),
    };
    let s = sizes;
    run.record("n", json!(s.n), "", String::new());
    run.record(
        "loadavg_start",
        json!(loadavg()),
        "load average at start",
        loadavg(),
    );

    // ---- setup: CRDs, namespaces, stores, keys, SecretSyncs ------------------------------
    let setup = Instant::now();
    install_crds(&run.client).await;
    let mut namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("bench-{i}")).collect();
    namespaces.extend(["rot".to_owned(), "steady".to_owned()]);
    for ns in &namespaces {
        namespace_with_store(&run.client, ns, &run.bao.server).await;
    }
    let mut keys: Vec<String> = (0..s.n).map(|i| format!("cold/k{i}")).collect();
    keys.extend((0..s.rot).map(|i| format!("rot/k{i}")));
    keys.extend((0..s.shared_keys).map(|i| format!("shared/k{i}")));
    run.bao.seed(keys).await;
    let mut objects = Vec::new();
    for i in 0..s.n {
        let local = i / NAMESPACES;
        let key = format!("cold/k{i}");
        objects.push((
            cold_ns(i),
            sync_object(&format!("raw-{local}"), "raw", &key, json!({})),
        ));
        objects.push((
            cold_ns(i),
            sync_object(&format!("sync-{local}"), "op", &key, json!({})),
        ));
    }
    create_all(&run.client, objects).await;
    spawn_watchers(&run.client, "rot", &run.seen);
    println!(
        "  setup (CRDs, {} namespaces, {} keys in OpenBao, 2 × {} SecretSyncs): {:.1} s",
        namespaces.len(),
        s.n + s.rot + s.shared_keys,
        s.n,
        setup.elapsed().as_secs_f64()
    );

    // ---- raw baseline ---------------------------------------------------------------------
    run.phase_start().await;
    let (sandbox_cpu, bench_cpu) = (run.sandbox.cpu_s(), proc_figures(std::process::id()).cpu_s);
    let (raw_wall, raw_lat) = raw_baseline(&run.sandbox.url, &run.bao.server, s.n).await;
    let raw_sandbox_cpu = run.sandbox.cpu_s() - sandbox_cpu;
    let raw_client_cpu = proc_figures(std::process::id()).cpu_s - bench_cpu;
    let raw_rate = s.n as f64 / raw_wall.as_secs_f64();
    let raw_requests = run.sandbox.requests_of(RAW_USER).await;
    let raw_reads = run.bao.reads_since_last();
    run.record(
        "raw",
        json!({"seconds": raw_wall.as_secs_f64(), "syncs_per_s": raw_rate, "latency": raw_lat.json(),
               "sandbox_cpu_s": raw_sandbox_cpu, "client_cpu_s": raw_client_cpu,
               "requests": raw_requests.json(), "backend_reads": raw_reads}),
        "raw client: all done (wall, syncs/s)",
        format!("{:.2} s, {raw_rate:.0}/s", raw_wall.as_secs_f64()),
    );
    run.lines.push((
        "raw client: latency p50 / p90 / p99 / max (ms)".into(),
        raw_lat.show(),
    ));
    run.lines
        .push(("raw client: API requests".into(), raw_requests.show()));
    run.lines.push((
        "raw client: CPU ms per sync, sandbox / client (the bench process)".into(),
        format!(
            "{:.2} / {:.2}",
            1000.0 * raw_sandbox_cpu / s.n as f64,
            1000.0 * raw_client_cpu / s.n as f64
        ),
    ));

    // ---- cold start -------------------------------------------------------------------
    run.phase_start().await;
    let sandbox_cpu = run.sandbox.cpu_s();
    let t0 = Instant::now();
    let mut op = run.operator();
    let cold_keys: Vec<String> = (0..s.n)
        .map(|i| format!("{}/sync-{}", cold_ns(i), i / NAMESPACES))
        .collect();
    {
        let seen = run.seen.clone();
        let keys = &cold_keys;
        wait_until("cold start: Ready at v1", s.limit(), || {
            (lock(&seen).ready_count(keys.iter(), 1), keys.len())
        })
        .await;
    }
    let cold_wall = t0.elapsed();
    let cold_lat = {
        let seen = lock(&run.seen);
        pcts(
            cold_keys
                .iter()
                .filter_map(|k| seen.ready_at(k, 1))
                .map(|t| ms_since(t0, t))
                .collect(),
        )
    };
    let cold_fig = op.figures();
    let cold_sandbox_cpu = run.sandbox.cpu_s() - sandbox_cpu;
    // Events trail the reconciles (the operator queues them): when the last one landed.
    let events_wall = {
        let limit = s.limit();
        loop {
            if run.sandbox.events_created(OPERATOR_USER).await >= s.n as u64 {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "cold start: events not created in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    op.settle(s).await;
    let cold_requests = run.sandbox.requests_of(OPERATOR_USER).await;
    let cold_reads = run.bao.reads_since_last();
    let cold_rate = s.n as f64 / cold_wall.as_secs_f64();
    let ratio = cold_rate / raw_rate;
    run.record(
        "cold",
        json!({"seconds": cold_wall.as_secs_f64(), "syncs_per_s": cold_rate, "ratio": ratio,
               "latency": cold_lat.json(), "requests": cold_requests.json(),
               "writes_per_sync": cold_requests.writes() as f64 / s.n as f64,
               "events_seconds": events_wall.as_secs_f64(), "sandbox_cpu_s": cold_sandbox_cpu,
               "backend_reads": cold_reads, "cpu_s": cold_fig.cpu_s,
               "hwm_kib": cold_fig.hwm_kib}),
        "cold start: all Ready at v1 (wall, syncs/s)",
        format!("{:.2} s, {cold_rate:.0}/s", cold_wall.as_secs_f64()),
    );
    run.lines.push((
        "cold start: operator / raw rate (target ≥ 0.70)".into(),
        format!("{ratio:.2}"),
    ));
    run.lines.push((
        "cold start: latency from operator start p50 / p90 / p99 / max (ms)".into(),
        cold_lat.show(),
    ));
    run.lines.push((
        "cold start: API requests (writes per SecretSync)".into(),
        format!(
            "{} ({:.2})",
            cold_requests.show(),
            cold_requests.writes() as f64 / s.n as f64
        ),
    ));
    run.lines.push((
        "cold start: every VersionCreated event created (s from operator start)".into(),
        format!("{:.2}", events_wall.as_secs_f64()),
    ));
    run.lines.push((
        "cold start: backend reads".into(),
        format!("{}", cold_reads.values().sum::<u64>()),
    ));
    run.lines.push((
        "cold start: operator CPU s / peak RSS MiB".into(),
        format!("{:.1} / {:.1}", cold_fig.cpu_s, mib(cold_fig.hwm_kib)),
    ));
    run.lines.push((
        "cold start: CPU ms per sync, sandbox / operator (until all Ready)".into(),
        format!(
            "{:.2} / {:.2}",
            1000.0 * cold_sandbox_cpu / s.n as f64,
            1000.0 * cold_fig.cpu_s / s.n as f64
        ),
    ));

    // ---- rotation -----------------------------------------------------------------------
    let rot_keys: Vec<String> = (0..s.rot).map(|j| format!("rot/rot-{j}")).collect();
    {
        let mut deployments = Vec::new();
        let mut syncs = Vec::new();
        for j in 0..s.rot {
            deployments.push(("rot".to_owned(), deployment(j)));
            syncs.push((
                "rot".to_owned(),
                sync_object(
                    &format!("rot-{j}"),
                    "op",
                    &format!("rot/k{j}"),
                    json!({"rollout": {"targets": [{"kind": "Deployment", "name": format!("app-{j}")}]}}),
                ),
            ));
        }
        create_all(&run.client, deployments).await;
        let t = Instant::now();
        create_all(&run.client, syncs).await;
        let seen = run.seen.clone();
        let keys = &rot_keys;
        wait_until("rotation set: Ready at v1", s.limit(), || {
            (lock(&seen).ready_count(keys.iter(), 1), keys.len())
        })
        .await;
        op.settle(s).await;
        println!(
            "  rotation set: {} SecretSyncs with a Deployment each Ready at v1 in {:.1} s",
            s.rot,
            t.elapsed().as_secs_f64()
        );
    }
    // Each burst bumps SecretSyncs 0..burst to their next version at once.
    let mut version_of: Vec<i64> = vec![1; s.rot];
    for (label, burst) in [("rotation_small", s.rot_small), ("rotation", s.rot)] {
        run.phase_start().await;
        let mut sent = HashMap::new();
        // One patch per version: group by next version (the second burst mixes v2 and v3).
        let mut by_version: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
        for (j, v) in version_of.iter_mut().enumerate().take(burst) {
            *v += 1;
            by_version
                .entry(*v)
                .or_default()
                .push(("rot".to_owned(), format!("rot-{j}")));
        }
        let t0 = Instant::now();
        let groups: Vec<_> = by_version
            .into_iter()
            .map(|(v, targets)| bump_all(&run.client, targets, v))
            .collect();
        for m in futures::future::join_all(groups).await {
            sent.extend(m);
        }
        let want: Vec<(usize, String)> = (0..burst)
            .map(|j| (j, format!("rot-{j}-v{}", version_of[j])))
            .collect();
        {
            let seen = run.seen.clone();
            let want = &want;
            wait_until(
                &format!("{label}: new Secret and template"),
                s.limit(),
                || {
                    let seen = lock(&seen);
                    let have = want
                        .iter()
                        .filter(|(j, name)| {
                            seen.secrets.contains_key(name)
                                && seen
                                    .templates
                                    .contains_key(&(format!("app-{j}"), name.clone()))
                        })
                        .count();
                    (have, want.len())
                },
            )
            .await;
        }
        let wall = t0.elapsed();
        let (to_secret, to_template) = {
            let seen = lock(&run.seen);
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (j, name) in &want {
                let at = sent[&format!("rot/rot-{j}")];
                a.push(ms_since(at, seen.secrets[name]));
                b.push(ms_since(
                    at,
                    seen.templates[&(format!("app-{j}"), name.clone())],
                ));
            }
            (pcts(a), pcts(b))
        };
        op.settle(s).await;
        let requests = run.sandbox.requests_of(OPERATOR_USER).await;
        let reads = run.bao.reads_since_last();
        run.record(
            label,
            json!({"bumps": burst, "seconds": wall.as_secs_f64(), "to_secret": to_secret.json(),
                   "to_template": to_template.json(), "requests": requests.json(),
                   "backend_reads": reads}),
            &format!("rotation, {burst} bumps at once: bump→new Secret p50 / p90 / p99 / max (ms)"),
            to_secret.show(),
        );
        run.lines.push((
            format!("rotation, {burst} bumps at once: bump→template p50 / p90 / p99 / max (ms)"),
            to_template.show(),
        ));
        run.lines.push((
            format!("rotation, {burst} bumps at once: API requests, backend reads"),
            format!("{}; {}", requests.show(), reads.values().sum::<u64>()),
        ));
    }

    // ---- bulk: every cold SecretSync to v2, then v3 (three versioned Secrets each) -------
    for version in [2, 3] {
        run.phase_start().await;
        let targets: Vec<(String, String)> = (0..s.n)
            .map(|i| (cold_ns(i), format!("sync-{}", i / NAMESPACES)))
            .collect();
        let t0 = Instant::now();
        bump_all(&run.client, targets, version).await;
        {
            let seen = run.seen.clone();
            let keys = &cold_keys;
            wait_until(&format!("bulk: Ready at v{version}"), s.limit(), || {
                (lock(&seen).ready_count(keys.iter(), version), keys.len())
            })
            .await;
        }
        let wall = t0.elapsed();
        op.settle(s).await;
        let requests = run.sandbox.requests_of(OPERATOR_USER).await;
        run.record(
            &format!("bulk_v{version}"),
            json!({"seconds": wall.as_secs_f64(), "syncs_per_s": s.n as f64 / wall.as_secs_f64(),
                   "requests": requests.json()}),
            &format!("bulk: all N bumped to v{version} (wall from first bump, syncs/s)"),
            format!(
                "{:.2} s, {:.0}/s",
                wall.as_secs_f64(),
                s.n as f64 / wall.as_secs_f64()
            ),
        );
    }

    // ---- steady state ----------------------------------------------------------------------
    let steady_keys: Vec<String> = (0..s.steady).map(|j| format!("steady/st-{j}")).collect();
    {
        let refresh = format!("{}s", s.refresh.as_secs());
        let syncs: Vec<_> = (0..s.steady)
            .map(|j| {
                (
                    "steady".to_owned(),
                    sync_object(
                        &format!("st-{j}"),
                        "op",
                        &format!("shared/k{}", j % s.shared_keys),
                        json!({"refreshInterval": refresh}),
                    ),
                )
            })
            .collect();
        create_all(&run.client, syncs).await;
        let seen = run.seen.clone();
        let keys = &steady_keys;
        wait_until("steady set: Ready at v1", s.limit(), || {
            (lock(&seen).ready_count(keys.iter(), 1), keys.len())
        })
        .await;
        op.settle(s).await;
    }
    let versioned = Api::<Secret>::all(run.client.clone())
        .list_metadata(&ListParams::default().labels(&secretsync_api::labels::managed_selector()))
        .await
        .expect("list versioned Secrets")
        .items
        .len();
    run.phase_start().await;
    let window = s.refresh * s.windows;
    let cpu_before = op.figures().cpu_s;
    tokio::time::sleep(window).await;
    let steady_requests = run.sandbox.requests_of(OPERATOR_USER).await;
    let steady_reads = run.bao.reads_since_last();
    let steady_cpu = op.figures().cpu_s - cpu_before;
    let peak = op.figures();
    let shared_reads = steady_reads.get("shared").copied().unwrap_or(0);
    let other_reads: u64 = steady_reads
        .iter()
        .filter(|(k, _)| k.as_str() != "shared")
        .map(|(_, v)| v)
        .sum();
    run.record(
        "steady",
        json!({"window_s": window.as_secs_f64(), "syncs": s.steady, "keys": s.shared_keys,
               "requests": steady_requests.json(), "writes": steady_requests.writes(),
               "backend_reads": steady_reads, "cpu_s": steady_cpu}),
        &format!(
            "steady, {} windows of {} s: API writes (target 0)",
            s.windows,
            s.refresh.as_secs()
        ),
        format!("{}", steady_requests.writes()),
    );
    run.lines.push((
        format!(
            "steady: reads of the {} shared keys read by {} SecretSyncs (target {} = keys × windows); other reads",
            s.shared_keys,
            s.steady,
            s.shared_keys as u32 * s.windows
        ),
        format!("{shared_reads}; {other_reads}"),
    ));
    run.lines.push((
        "steady: API requests; operator CPU s in the window".into(),
        format!("{}; {steady_cpu:.2}", steady_requests.show()),
    ));

    // ---- memory at the peak ----------------------------------------------------------------
    let syncs_total = s.total();
    run.record(
        "memory",
        json!({"syncs": syncs_total, "versioned_secrets": versioned, "hwm_kib": peak.hwm_kib,
               "rss_kib": peak.rss_kib, "cpu_s": peak.cpu_s,
               "bytes_per_sync": peak.hwm_kib as f64 * 1024.0 / syncs_total as f64}),
        "operator peak RSS (VmHWM) MiB, at SecretSyncs / versioned Secrets (target < 64 at 10k / 30k)",
        format!("{:.1} at {syncs_total} / {versioned}", mib(peak.hwm_kib)),
    );
    run.lines.push((
        "operator VmHWM bytes per SecretSync held (all of it / SecretSyncs)".into(),
        format!("{:.0}", peak.hwm_kib as f64 * 1024.0 / syncs_total as f64),
    ));
    run.lines.push((
        "operator CPU seconds, whole first run".into(),
        format!("{:.1}", peak.cpu_s),
    ));

    // ---- restart ---------------------------------------------------------------------------
    op.terminate().await;
    run.phase_start().await;
    let t0 = Instant::now();
    let mut op = run.operator();
    let mut reconciled_at = None;
    while reconciled_at.is_none() {
        op.assert_running();
        if op.reconciles().await >= syncs_total as u64 {
            reconciled_at = Some(t0.elapsed());
        }
        assert!(t0.elapsed() < s.limit(), "restart: not all reconciled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_wall = reconciled_at.unwrap_or_default();
    op.settle(s).await;
    let restart_requests = run.sandbox.requests_of(OPERATOR_USER).await;
    let restart_reads = run.bao.reads_since_last();
    let restart_fig = op.figures();
    let not_due: u64 = restart_reads
        .iter()
        .filter(|(k, _)| k.as_str() != "shared")
        .map(|(_, v)| v)
        .sum();
    run.record(
        "restart",
        json!({"seconds": restart_wall.as_secs_f64(), "syncs": syncs_total,
               "requests": restart_requests.json(), "writes": restart_requests.writes(),
               "backend_reads": restart_reads, "hwm_kib": restart_fig.hwm_kib,
               "cpu_s": restart_fig.cpu_s}),
        &format!("restart: all {syncs_total} reconciled (target < 5 s)"),
        format!("{:.2} s", restart_wall.as_secs_f64()),
    );
    run.lines.push((
        format!(
            "restart: API writes (target 0); reads of syncs not due (target 0); reads of the {} s steady set",
            s.refresh.as_secs()
        ),
        format!(
            "{}; {not_due}; {}",
            restart_requests.writes(),
            restart_reads.get("shared").copied().unwrap_or(0)
        ),
    ));
    run.lines
        .push(("restart: API requests".into(), restart_requests.show()));
    run.lines.push((
        "restart: operator peak RSS MiB, CPU s".into(),
        format!("{:.1}, {:.1}", mib(restart_fig.hwm_kib), restart_fig.cpu_s),
    ));
    op.terminate().await;
    run.record(
        "loadavg_end",
        json!(loadavg()),
        "load average at end",
        loadavg(),
    );

    if s.smoke {
        assert_eq!(steady_requests.writes(), 0, "steady state writes nothing");
        assert_eq!(restart_requests.writes(), 0, "a restart writes nothing");
        assert_eq!(not_due, 0, "a restart reads nothing not due");
        assert!(
            shared_reads <= u64::from(s.windows + 1) * s.shared_keys as u64,
            "steady reads {shared_reads} are per key, not per SecretSync"
        );
        assert_eq!(
            versioned,
            3 * s.n + 2 * s.rot + s.rot_small + s.steady,
            "versioned Secrets"
        );
    }
    run
}

fn deployment(j: usize) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": format!("app-{j}")},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": format!("app-{j}")}},
            "template": {
                "metadata": {"labels": {"app": format!("app-{j}")}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.example/app:1",
                    "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {
                        "name": format!("rot-{j}-v1"), "key": "password"}}}],
                }]},
            },
        },
    }))
    .expect("Deployment fits the type")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    // reqwest is built without a crypto provider (as in the operator): ring, like kube.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let ns: Vec<usize> = value_of("--n")
        .or_else(|| std::env::var("SECRETSYNC_BENCH_N").ok())
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("--n takes numbers, comma-separated")
        })
        .collect();
    let out = value_of("--out");
    let sizes: Vec<Sizes> = if smoke {
        vec![Sizes::smoke()]
    } else {
        ns.into_iter().map(Sizes::full).collect()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "secretsync compare bench: N = {}; {cores} CPUs; load average {}",
        sizes
            .iter()
            .map(|s| s.n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        loadavg()
    );
    let mut runs = Vec::new();
    for s in sizes {
        println!("\n== N = {} ==", s.n);
        let run = run_one(s).await;
        if let Some(path) = &out {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open --out");
            writeln!(f, "{}", Value::Object(run.result.clone())).expect("write --out");
        }
        runs.push(run);
    }
    print_table(&runs);
}

fn print_table(runs: &[Run]) {
    println!();
    let header: Vec<String> = runs.iter().map(|r| format!("N = {}", r.sizes.n)).collect();
    println!("| measure | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(runs.len()));
    let Some(first) = runs.first() else { return };
    for (i, (row, _)) in first.lines.iter().enumerate() {
        let cells: Vec<&str> = runs
            .iter()
            .map(|r| r.lines.get(i).map_or("", |(_, v)| v.as_str()))
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
}
