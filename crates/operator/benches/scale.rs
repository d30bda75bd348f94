//! Scale benchmark: N SecretSyncs over M namespaces against the sandbox API server.
//!
//! The sandbox runs as a separate process (the `secretsync-sandbox` binary next to this
//! bench in `target/release`, or `SECRETSYNC_SANDBOX_BIN`), so the memory and CPU figures of
//! this process are the operator's plus the bench's own client; when the binary is missing
//! the bench falls back to an in-process sandbox and says so. The operator runs in-process,
//! so its `Metrics` are read directly.
//!
//! Phases: initial sync, restart (steady state), change of one remote key, with memory after
//! each. Env: `SECRETSYNC_BENCH_SYNCS` (1000), `SECRETSYNC_BENCH_NAMESPACES` (10),
//! `SECRETSYNC_BENCH_CONCURRENCY` (16). See docs/benchmarks.md.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::metrics::Metrics;
use secretsync_operator::{Config, RunOptions};
use secretsync_sandbox::{Sandbox, Stats};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Remote keys per namespace store; SecretSync `i` of a namespace reads key `i % KEYS`.
const KEYS: usize = 4;
/// Concurrent create requests from the bench.
const CREATE_CONCURRENCY: usize = 32;
/// The operator counts as settled when it did no reconcile for this long.
const SETTLE: Duration = Duration::from_secs(2);
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

struct Settings {
    syncs: usize,
    namespaces: usize,
    concurrency: u16,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let s = Settings {
            syncs: env_or("SECRETSYNC_BENCH_SYNCS", 1000),
            namespaces: env_or("SECRETSYNC_BENCH_NAMESPACES", 10),
            concurrency: env_or("SECRETSYNC_BENCH_CONCURRENCY", 16),
        };
        assert!(
            s.syncs > 0 && s.namespaces > 0 && s.concurrency > 0,
            "settings must be positive"
        );
        s
    }

    fn namespace(&self, i: usize) -> String {
        format!("bench-{}", i % self.namespaces)
    }

    /// Index of sync `i` within its namespace.
    fn local(&self, i: usize) -> usize {
        i / self.namespaces
    }

    fn key_of(&self, i: usize) -> usize {
        self.local(i) % KEYS
    }

    fn name(&self, i: usize) -> String {
        format!("sync-{}", self.local(i))
    }

    fn full_name(&self, i: usize) -> String {
        format!("{}/{}", self.namespace(i), self.name(i))
    }
}

// ---------------------------------------------------------------------------------------
// The sandbox: a separate process if the binary is there, else in-process.

enum SandboxKind {
    External {
        child: tokio::process::Child,
        pid: u32,
        binary: PathBuf,
        _dir: tempfile::TempDir,
    },
    InProcess(Sandbox),
}

struct SandboxHandle {
    kind: SandboxKind,
    url: String,
    /// Unmetered client for `/sandbox/stats`.
    raw: Client,
}

fn sandbox_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SECRETSYNC_SANDBOX_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/release/deps/scale-<hash> → target/release/secretsync-sandbox
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("secretsync-sandbox");
    candidate.is_file().then_some(candidate)
}

fn plain_client(url: &str) -> Client {
    let config = kube::Config::new(url.parse().expect("sandbox URL parses"));
    Client::try_from(config).expect("client for a plain-HTTP URL")
}

impl SandboxHandle {
    async fn start() -> SandboxHandle {
        let in_process = std::env::var("SECRETSYNC_BENCH_SANDBOX").as_deref() == Ok("in-process");
        match sandbox_binary().filter(|_| !in_process) {
            Some(binary) => {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut child = tokio::process::Command::new(&binary)
                    .args(["--port", "0", "--kubeconfig-out"])
                    .arg(dir.path().join("kubeconfig"))
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
                let pid = child.id().expect("child pid");
                let stdout = child.stdout.take().expect("piped stdout");
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let url = loop {
                    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                        .await
                        .expect("sandbox prints its URL within 30 s")
                        .expect("reading sandbox stdout")
                        .expect("sandbox exited before printing its URL");
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_owned();
                    }
                };
                // Keep draining stdout so the child never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                SandboxHandle {
                    raw: plain_client(&url),
                    url,
                    kind: SandboxKind::External {
                        child,
                        pid,
                        binary,
                        _dir: dir,
                    },
                }
            }
            None => {
                let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
                let url = sandbox.url().to_owned();
                SandboxHandle {
                    raw: plain_client(&url),
                    url,
                    kind: SandboxKind::InProcess(sandbox),
                }
            }
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            SandboxKind::External { pid, binary, .. } => format!(
                "separate process (pid {pid}, {}) at {}",
                binary.display(),
                self.url
            ),
            SandboxKind::InProcess(_) => format!(
                "IN-PROCESS at {} (secretsync-sandbox binary not found: build it with \
                 `cargo build --release -p secretsync-sandbox`); this process's RSS includes \
                 the sandbox's store",
                self.url
            ),
        }
    }

    async fn stats(&self) -> Stats {
        match &self.kind {
            SandboxKind::InProcess(s) => s.stats(),
            SandboxKind::External { .. } => self
                .raw
                .request::<Stats>(
                    http::Request::get("/sandbox/stats")
                        .body(Vec::new())
                        .expect("request builds"),
                )
                .await
                .expect("GET /sandbox/stats"),
        }
    }

    async fn reset_stats(&self) {
        match &self.kind {
            SandboxKind::InProcess(s) => s.reset_stats(),
            SandboxKind::External { .. } => {
                self.raw
                    .request_text(
                        http::Request::post("/sandbox/stats/reset")
                            .body(Vec::new())
                            .expect("request builds"),
                    )
                    .await
                    .expect("POST /sandbox/stats/reset");
            }
        }
    }

    /// (VmRSS, VmHWM) of the sandbox process, when it is a separate one.
    fn memory(&self) -> Option<(u64, u64)> {
        match &self.kind {
            SandboxKind::External { pid, .. } => proc_memory(&format!("/proc/{pid}/status")),
            SandboxKind::InProcess(_) => None,
        }
    }

    async fn stop(self) {
        match self.kind {
            SandboxKind::External { mut child, .. } => {
                let _ = child.kill().await;
            }
            SandboxKind::InProcess(s) => s.shutdown().await,
        }
    }
}

/// (VmRSS, VmHWM) in KiB from a `/proc/*/status` file.
fn proc_memory(path: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// The bench's own API requests, counted client-side so they can be subtracted from the
// sandbox's counts: what is left is the operator's.

#[derive(Default)]
struct BenchRequests(Mutex<BTreeMap<(String, String), u64>>);

impl BenchRequests {
    fn record<B>(&self, req: &http::Request<B>) {
        let path = req.uri().path();
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match segments.as_slice() {
            ["api", _v, rest @ ..] => rest,
            ["apis", _g, _v, rest @ ..] => rest,
            _ => return,
        };
        let (resource, name) = match rest {
            ["namespaces", _ns, resource, rest @ ..] => (*resource, rest.first()),
            [resource, rest @ ..] => (*resource, rest.first()),
            [] => return,
        };
        let verb = match (req.method().as_str(), name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "other",
        };
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }

    fn reset(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn metered_client(url: &str, requests: Arc<BenchRequests>) -> Client {
    let config = kube::Config::new(url.parse().expect("sandbox URL parses"));
    kube::client::ClientBuilder::try_from(config)
        .expect("client for a plain-HTTP URL")
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                requests.record(&req);
                req
            },
        ))
        .build()
}

/// The operator's requests: the sandbox's counts less the bench's, keyed by
/// (verb, group/resource[/subresource]).
fn operator_requests(
    stats: &Stats,
    bench: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    let mut bench = bench.clone();
    let mut out = BTreeMap::new();
    for c in &stats.requests {
        let mut count = c.count;
        if c.key.subresource.is_empty()
            && let Some(b) = bench.get_mut(&(c.key.verb.clone(), c.key.resource.clone()))
        {
            let taken = (*b).min(count);
            *b -= taken;
            count -= taken;
        }
        if count == 0 {
            continue;
        }
        let mut what = if c.key.group.is_empty() {
            c.key.resource.clone()
        } else {
            format!("{}/{}", c.key.group, c.key.resource)
        };
        if !c.key.subresource.is_empty() {
            what = format!("{what}/{}", c.key.subresource);
        }
        *out.entry((c.key.verb.clone(), what)).or_default() += count;
    }
    out
}

struct ApiFigures {
    total: u64,
    writes: u64,
    by_verb: BTreeMap<String, u64>,
    detail: BTreeMap<(String, String), u64>,
    bench_total: u64,
}

impl ApiFigures {
    fn new(stats: &Stats, bench: &BTreeMap<(String, String), u64>) -> Self {
        let detail = operator_requests(stats, bench);
        let mut by_verb = BTreeMap::new();
        for ((verb, _), n) in &detail {
            *by_verb.entry(verb.clone()).or_default() += n;
        }
        ApiFigures {
            total: detail.values().sum(),
            writes: detail
                .iter()
                .filter(|((v, _), _)| WRITE_VERBS.contains(&v.as_str()))
                .map(|(_, n)| n)
                .sum(),
            by_verb,
            detail,
            bench_total: bench.values().sum(),
        }
    }

    fn print(&self, syncs: usize) {
        let per = |n: u64| n as f64 / syncs as f64;
        println!(
            "  operator API requests:   {} ({:.2} per SecretSync), writes {} ({:.2} per SecretSync); \
             bench's own requests, not included: {}",
            self.total,
            per(self.total),
            self.writes,
            per(self.writes),
            self.bench_total
        );
        let verbs: Vec<String> = self
            .by_verb
            .iter()
            .map(|(v, n)| format!("{v}={n}"))
            .collect();
        println!("    by verb:               {}", verbs.join(" "));
        for ((verb, what), n) in &self.detail {
            println!("    {verb:<7} {what:<40} {n:>8}  ({:.3}/sync)", per(*n));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The operator, in-process.

struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), secretsync_operator::supervise::Stopped>>>,
    metrics: Arc<Metrics>,
}

impl Operator {
    fn start(client: Client, concurrency: u16) -> Operator {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(secretsync_operator::run(
            client,
            Config::default(),
            RunOptions {
                concurrency,
                ..RunOptions::default()
            },
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Operator {
            stop: Some(stop),
            task: Some(task),
            metrics,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
            {
                eprintln!("operator did not stop within 30 s; aborted");
                abort.abort();
            }
        }
    }

    fn counters(&self) -> Counters {
        let m = &self.metrics;
        Counters {
            reconciles: m.reconciles(),
            reconcile_errors: m.reconcile_errors(),
            backend_reads: m.backend_requests(),
            versions_created: m.versions_created(),
            status_writes: m.status_writes(),
        }
    }

    /// Waits until no reconcile finished for [`SETTLE`] (at most `limit`).
    async fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = self.counters().reconciles;
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.counters().reconciles;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= SETTLE {
                return;
            }
        }
        eprintln!("operator still reconciling after {limit:?}");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Counters {
    reconciles: u64,
    reconcile_errors: u64,
    backend_reads: u64,
    versions_created: u64,
    status_writes: u64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            reconciles: self.reconciles - before.reconciles,
            reconcile_errors: self.reconcile_errors - before.reconcile_errors,
            backend_reads: self.backend_reads - before.backend_reads,
            versions_created: self.versions_created - before.versions_created,
            status_writes: self.status_writes - before.status_writes,
        }
    }

    fn print(&self, syncs: usize) {
        let per = |n: u64| n as f64 / syncs as f64;
        println!(
            "  operator metrics:        reconciles {} ({:.2}/sync), errors {}, backend reads {} \
             ({:.2}/sync), versions created {}, status writes {} ({:.2}/sync)",
            self.reconciles,
            per(self.reconciles),
            self.reconcile_errors,
            self.backend_reads,
            per(self.backend_reads),
            self.versions_created,
            self.status_writes,
            per(self.status_writes)
        );
    }
}

// ---------------------------------------------------------------------------------------
// What the bench's SecretSync watcher has seen.

#[derive(Default)]
struct Seen {
    /// First time each `status.currentVersion` was seen together with `Ready=True`.
    ready_at: HashMap<i64, Instant>,
    max_version: i64,
}

#[derive(Default)]
struct Observed {
    syncs: HashMap<String, Seen>,
    /// How many SecretSyncs reached `Ready=True` at each version.
    ready_count: HashMap<i64, usize>,
}

fn ready_version(sync: &SecretSync) -> Option<i64> {
    let status = sync.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then_some(status.current_version?)
}

fn spawn_watcher(client: Client, observed: Arc<Mutex<Observed>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<SecretSync>::all(client);
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        loop {
            let event = match stream.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("bench watcher: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let now = Instant::now();
            let sync = match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                _ => continue,
            };
            let key = format!(
                "{}/{}",
                sync.namespace().unwrap_or_default(),
                sync.name_any()
            );
            let version = sync
                .status
                .as_ref()
                .and_then(|s| s.current_version)
                .unwrap_or(0);
            let ready = ready_version(&sync);
            let mut guard = observed.lock().unwrap_or_else(|e| e.into_inner());
            let o = &mut *guard;
            let seen = o.syncs.entry(key).or_default();
            seen.max_version = seen.max_version.max(version);
            if let Some(v) = ready
                && !seen.ready_at.contains_key(&v)
            {
                seen.ready_at.insert(v, now);
                *o.ready_count.entry(v).or_default() += 1;
            }
        }
    })
}

async fn wait_ready(
    observed: &Arc<Mutex<Observed>>,
    version: i64,
    want: usize,
    what: &str,
    limit: Duration,
) {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let have = observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready_count
            .get(&version)
            .copied()
            .unwrap_or(0);
        if have >= want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: only {have} of {want} SecretSyncs Ready at v{version} after {limit:?}"
        );
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  ... {what}: {have}/{want} Ready at v{version} after {:.0}s",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Latencies {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Percentiles in milliseconds (nearest rank).
fn latencies(mut ms: Vec<f64>) -> Latencies {
    assert!(!ms.is_empty());
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Latencies {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: ms[ms.len() - 1],
    }
}

// ---------------------------------------------------------------------------------------
// Setup helpers.

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

fn store_data(ns: &str, changed_key: Option<usize>) -> Value {
    let data: Vec<Value> = (0..KEYS)
        .map(|k| {
            let version = if changed_key == Some(k) { 2 } else { 1 };
            json!({
                "key": format!("app/k{k}"),
                "value": json!({"password": format!("{ns}-k{k}-v{version}"), "user": "app"}).to_string(),
                "version": version.to_string(),
            })
        })
        .collect();
    json!({"provider": {"fake": {"data": data}}})
}

fn sync_object(settings: &Settings, i: usize) -> SecretSync {
    serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": settings.name(i), "namespace": settings.namespace(i)},
        "spec": {
            "storeRef": {"name": "store"},
            "data": [{
                "secretKey": "password",
                "remoteRef": {"key": format!("app/k{}", settings.key_of(i)), "property": "password"},
            }],
        },
    }))
    .expect("SecretSync fits the type")
}

fn memory_line(sandbox: &SandboxHandle) -> (f64, f64) {
    let (rss, hwm) = proc_memory("/proc/self/status").unwrap_or_default();
    let sandbox_part = match sandbox.memory() {
        Some((srss, shwm)) => format!(
            "; sandbox process VmRSS {:.0} MiB, VmHWM {:.0} MiB",
            mib(srss),
            mib(shwm)
        ),
        None => "; sandbox is in this process".to_owned(),
    };
    println!(
        "  memory (bench process):  VmRSS {:.0} MiB, VmHWM {:.0} MiB{sandbox_part}",
        mib(rss),
        mib(hwm)
    );
    (mib(rss), mib(hwm))
}

fn sandbox_rss_field(sandbox: &SandboxHandle) -> String {
    match sandbox.memory() {
        Some((rss, hwm)) => format!(
            "sandbox_rss_mib={:.0} sandbox_hwm_mib={:.0}",
            mib(rss),
            mib(hwm)
        ),
        None => "sandbox=in-process".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------

/// What every phase needs from the bench.
#[derive(Clone, Copy)]
struct Harness<'a> {
    settings: &'a Settings,
    client: &'a Client,
    sandbox: &'a SandboxHandle,
    bench_requests: &'a BenchRequests,
    observed: &'a Arc<Mutex<Observed>>,
}

struct ChangeResult {
    label: &'static str,
    affected: usize,
    reached: usize,
    seconds: f64,
    lat: Option<Latencies>,
    unexpected: usize,
    counters: Counters,
    api: ApiFigures,
    rss: f64,
    hwm: f64,
}

impl ChangeResult {
    fn summary(&self, n: usize) {
        let (p50, p99, max) = match &self.lat {
            Some(l) => (
                format!("{:.0}", l.p50),
                format!("{:.0}", l.p99),
                format!("{:.0}", l.max),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "bench phase={} syncs={n} affected={} reached_v2={} seconds={:.2} p50_ms={p50} \
             p99_ms={p99} max_ms={max} unaffected_new_versions={} api_requests={} api_writes={} \
             reconciles={} backend_reads={} versions_created={} status_writes={} \
             rss_mib={:.0} hwm_mib={:.0}",
            self.label,
            self.affected,
            self.reached,
            self.seconds,
            self.unexpected,
            self.api.total,
            self.api.writes,
            self.counters.reconciles,
            self.counters.backend_reads,
            self.counters.versions_created,
            self.counters.status_writes,
            self.rss,
            self.hwm,
        );
    }
}

/// Changes remote key `app/k{key}` in namespace `bench-{ns}`'s store and waits until every
/// SecretSync reading it is Ready at its next version, or `limit` passes: a change the
/// operator misses is reported, not waited for until the 1 h refresh.
async fn change_phase(
    label: &'static str,
    h: &Harness<'_>,
    operator: &Operator,
    ns: usize,
    key: usize,
    limit: Duration,
) -> ChangeResult {
    let Harness {
        settings,
        client,
        sandbox,
        bench_requests,
        observed,
    } = *h;
    let n = settings.syncs;
    let changed_ns = format!("bench-{ns}");
    let affected: Vec<String> = (0..n)
        .filter(|&i| settings.namespace(i) == changed_ns && settings.key_of(i) == key)
        .map(|i| settings.full_name(i))
        .collect();
    let same_store = (0..n)
        .filter(|&i| settings.namespace(i) == changed_ns)
        .count();
    let baseline: HashMap<String, i64> = observed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .syncs
        .iter()
        .map(|(k, s)| (k.clone(), s.max_version))
        .collect();
    let target: HashMap<&String, i64> = affected
        .iter()
        .map(|k| (k, baseline.get(k).copied().unwrap_or(0) + 1))
        .collect();

    sandbox.reset_stats().await;
    bench_requests.reset();
    let before = operator.counters();
    let t0 = Instant::now();
    Api::<SecretStore>::namespaced(client.clone(), &changed_ns)
        .patch(
            "store",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": store_data(&changed_ns, Some(key))})),
        )
        .await
        .expect("store patched");
    let reached = |obs: &Observed| {
        target
            .iter()
            .filter(|(k, v)| {
                obs.syncs
                    .get(**k)
                    .is_some_and(|s| s.ready_at.contains_key(v))
            })
            .count()
    };
    let mut done = 0;
    while t0.elapsed() < limit {
        done = reached(&observed.lock().unwrap_or_else(|e| e.into_inner()));
        if done == affected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    operator.settle(limit).await;
    let counters = operator.counters().since(before);
    let api = ApiFigures::new(&sandbox.stats().await, &bench_requests.snapshot());
    let (lat, unexpected) = {
        let obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        let lat = (done == affected.len() && done > 0).then(|| {
            latencies(
                target
                    .iter()
                    .map(|(k, v)| {
                        let ready = obs.syncs[*k].ready_at[v];
                        ready.saturating_duration_since(t0).as_secs_f64() * 1000.0
                    })
                    .collect(),
            )
        });
        let unexpected = obs
            .syncs
            .iter()
            .filter(|(k, s)| {
                !target.contains_key(k) && s.max_version > baseline.get(*k).copied().unwrap_or(0)
            })
            .count();
        (lat, unexpected)
    };

    println!();
    println!(
        "== phase {label}: app/k{key} changes in {changed_ns}'s store; {} SecretSyncs read it \
         ({:.1}% of all; {same_store} SecretSyncs use that store) ==",
        affected.len(),
        100.0 * affected.len() as f64 / n as f64,
    );
    match &lat {
        Some(l) => println!(
            "  all affected Ready at their next version after {seconds:.2} s; store edit→Ready: \
             p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.p50, l.p90, l.p99, l.max
        ),
        None => println!(
            "  NOT PICKED UP: only {done} of {} affected SecretSyncs reached their next version \
             within {seconds:.0} s (stopped waiting)",
            affected.len()
        ),
    }
    println!(
        "  unaffected SecretSyncs with a new version: {unexpected} (of {})",
        n - affected.len()
    );
    counters.print(affected.len().max(1));
    api.print(affected.len().max(1));
    println!("    (per-sync figures in this phase are per affected SecretSync)");
    let (rss, hwm) = memory_line(sandbox);
    ChangeResult {
        label,
        affected: affected.len(),
        reached: done,
        seconds,
        lat,
        unexpected,
        counters,
        api,
        rss,
        hwm,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let settings = Settings::from_env();
    let n = settings.syncs;
    let limit = Duration::from_secs(300) + Duration::from_millis(100) * n as u32;

    let sandbox = SandboxHandle::start().await;
    let bench_requests = Arc::new(BenchRequests::default());
    let client = metered_client(&sandbox.url, bench_requests.clone());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "secretsync scale bench: {n} SecretSyncs in {} namespaces, operator concurrency {}, \
         {cores} CPUs",
        settings.namespaces, settings.concurrency
    );
    println!("  sandbox: {}", sandbox.describe());
    println!(
        "  this process: the operator (in-process, own kube client), the bench's kube client \
         and its SecretSync watcher{}",
        if sandbox.memory().is_none() {
            ", and the sandbox"
        } else {
            ""
        }
    );

    // Setup: CRDs, namespaces, one fake store per namespace.
    install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for j in 0..settings.namespaces {
        let ns = format!("bench-{j}");
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
            )
            .await
            .expect("namespace created");
        let store: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "store"},
            "spec": store_data(&ns, None),
        }))
        .expect("store fits the type");
        Api::<SecretStore>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &store)
            .await
            .expect("store created");
    }

    // ---- Phase 1: initial sync -----------------------------------------------------------
    let observed = Arc::new(Mutex::new(Observed::default()));
    let watch_task = spawn_watcher(client.clone(), observed.clone());
    // Let the bench's watcher make its list and watch before the counts are reset.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.reset_stats().await;
    bench_requests.reset();
    let mut operator = Operator::start(plain_client(&sandbox.url), settings.concurrency);
    // Let the operator fill its caches, as it would have long before syncs appear.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let sent_at = sent_at.clone();
            let obj = sync_object(&settings, i);
            let key = settings.full_name(i);
            let ns = settings.namespace(i);
            async move {
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, Instant::now());
                Api::<SecretSync>::namespaced(client, &ns)
                    .create(&PostParams::default(), &obj)
                    .await
                    .expect("SecretSync created");
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<()>()
        .await;
    let created = t0.elapsed();
    wait_ready(&observed, 1, n, "initial sync", limit).await;
    let initial_wall = t0.elapsed();
    let at_ready = operator.counters();
    operator.settle(limit).await;
    let initial_counters = operator.counters();
    let initial_api = ApiFigures::new(&sandbox.stats().await, &bench_requests.snapshot());
    let initial_lat = {
        let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner());
        let obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        latencies(
            sent.iter()
                .map(|(k, t)| {
                    let ready = obs.syncs[k].ready_at[&1];
                    ready.saturating_duration_since(*t).as_secs_f64() * 1000.0
                })
                .collect(),
        )
    };
    println!();
    println!("== phase initial: initial sync ({n} SecretSyncs, {KEYS} keys per store) ==");
    println!(
        "  all Ready at v1 after:   {:.2} s ({:.0} syncs/s); creates took {:.2} s ({} at a time)",
        initial_wall.as_secs_f64(),
        n as f64 / initial_wall.as_secs_f64(),
        created.as_secs_f64(),
        CREATE_CONCURRENCY
    );
    println!(
        "  latency create→Ready:    p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        initial_lat.p50, initial_lat.p90, initial_lat.p99, initial_lat.max
    );
    println!(
        "  reconciles when all were Ready: {}; figures below include the tail until the \
         operator was idle for {SETTLE:?}",
        at_ready.reconciles
    );
    initial_counters.print(n);
    initial_api.print(n);
    let (initial_rss, initial_hwm) = memory_line(&sandbox);

    // ---- Phase 2: one remote key changes (the operator that did the initial sync) --------
    let harness = Harness {
        settings: &settings,
        client: &client,
        sandbox: &sandbox,
        bench_requests: &bench_requests,
        observed: &observed,
    };
    let change = change_phase("change", &harness, &operator, 0, 0, limit).await;

    // ---- Phase 3: restart ----------------------------------------------------------------
    operator.stop().await;
    sandbox.reset_stats().await;
    bench_requests.reset();
    let t0 = Instant::now();
    operator = Operator::start(plain_client(&sandbox.url), settings.concurrency);
    let start = Instant::now();
    while operator.counters().reconciles < n as u64 {
        assert!(
            start.elapsed() < limit,
            "restarted operator did only {} reconciles",
            operator.counters().reconciles
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restart_wall = t0.elapsed();
    operator.settle(limit).await;
    let restart_counters = operator.counters();
    let restart_api = ApiFigures::new(&sandbox.stats().await, &bench_requests.snapshot());
    println!();
    println!("== phase restart: restart (steady state, nothing changed) ==");
    println!(
        "  {n} reconciles after:   {:.2} s from start ({:.0} reconciles/s)",
        restart_wall.as_secs_f64(),
        n as f64 / restart_wall.as_secs_f64()
    );
    restart_counters.print(n);
    restart_api.print(n);
    let (restart_rss, restart_hwm) = memory_line(&sandbox);

    // ---- Phase 4: a remote key changes after the restart ---------------------------------
    let after_restart = change_phase(
        "change_after_restart",
        &harness,
        &operator,
        1 % settings.namespaces,
        1,
        // Missed changes wait for the 1 h refresh: do not wait for those.
        Duration::from_secs(20) + Duration::from_millis(1) * n as u32,
    )
    .await;

    // ---- Summary -------------------------------------------------------------------------
    println!();
    println!(
        "bench phase=initial syncs={n} namespaces={} concurrency={} seconds={:.2} \
         syncs_per_s={:.0} p50_ms={:.0} p90_ms={:.0} p99_ms={:.0} max_ms={:.0} api_requests={} \
         api_writes={} reconciles={} backend_reads={} versions_created={} status_writes={} \
         rss_mib={initial_rss:.0} hwm_mib={initial_hwm:.0}",
        settings.namespaces,
        settings.concurrency,
        initial_wall.as_secs_f64(),
        n as f64 / initial_wall.as_secs_f64(),
        initial_lat.p50,
        initial_lat.p90,
        initial_lat.p99,
        initial_lat.max,
        initial_api.total,
        initial_api.writes,
        initial_counters.reconciles,
        initial_counters.backend_reads,
        initial_counters.versions_created,
        initial_counters.status_writes,
    );
    change.summary(n);
    println!(
        "bench phase=restart syncs={n} seconds={:.2} api_requests={} api_writes={} \
         reconciles={} backend_reads={} versions_created={} status_writes={} \
         rss_mib={restart_rss:.0} hwm_mib={restart_hwm:.0}",
        restart_wall.as_secs_f64(),
        restart_api.total,
        restart_api.writes,
        restart_counters.reconciles,
        restart_counters.backend_reads,
        restart_counters.versions_created,
        restart_counters.status_writes,
    );
    after_restart.summary(n);
    println!(
        "bench sandbox={} {}",
        if sandbox.memory().is_some() {
            "process"
        } else {
            "in-process"
        },
        sandbox_rss_field(&sandbox)
    );

    watch_task.abort();
    operator.stop().await;
    sandbox.stop().await;
}
