//! Test harness: a sandbox API server with the CRDs installed, a namespace, and an operator
//! running in-process that can be stopped and restarted.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use secretsync_api::{SecretStore, SecretSync, VersionState};
use secretsync_operator::metrics::Metrics;
use secretsync_operator::supervise::Stopped;
use secretsync_operator::{Config, RunOptions};
use secretsync_sandbox::Sandbox;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Every log line of every operator in this test binary, at debug level, so the leak test
/// can search them for canary values. `SECRETSYNC_TEST_LOG=<filter>` prints to the test
/// output instead, for debugging.
pub fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        match std::env::var("SECRETSYNC_TEST_LOG") {
            Ok(level) => secretsync_operator::telemetry::init(
                secretsync_operator::telemetry::LogFormat::Text,
                &level,
            ),
            Err(_) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter("debug")
                    .with_ansi(false)
                    .with_writer(buffer.clone())
                    .try_init();
            }
        }
        buffer
    })
}

#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Stopped>>>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    pub fn start(client: Client, namespace: Option<String>) -> Self {
        Self::start_with(client, namespace, Config::default())
    }

    /// Like [`Operator::start`] with these settings.
    pub fn start_with(client: Client, namespace: Option<String>, config: Config) -> Self {
        logs();
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RunOptions {
            namespaces: namespace.into_iter().collect(),
            concurrency: 8,
            ..RunOptions::default()
        };
        let task = tokio::spawn(secretsync_operator::run(
            client,
            config,
            options,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task: Some(task),
            metrics,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // Graceful shutdown waits for running reconciles; abort if it takes too long.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics.reconciles()
    }

    pub fn backend_reads(&self) -> u64 {
        self.metrics.backend_requests()
    }

    /// Store Ready checks made (each one backend call).
    pub fn store_checks(&self) -> u64 {
        self.metrics.store_checks()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub struct Env {
    pub sandbox: Sandbox,
    pub client: Client,
    pub ns: String,
    pub operator: Option<Operator>,
}

impl Env {
    /// A sandbox with the CRDs and namespace `ns`, and a running operator.
    pub async fn start(ns: &str) -> Env {
        let env = Self::without_operator(ns).await;
        env.with_operator()
    }

    pub async fn without_operator(ns: &str) -> Env {
        Self::with_sandbox(ns, Sandbox::builder()).await
    }

    /// Like [`Env::start`] with sandbox options (a slower simulated rollout, say).
    pub async fn start_with(ns: &str, builder: secretsync_sandbox::SandboxBuilder) -> Env {
        Self::with_sandbox(ns, builder).await.with_operator()
    }

    /// A sandbox built from `builder` with the CRDs and namespace `ns`, and no operator.
    pub async fn with_sandbox(ns: &str, builder: secretsync_sandbox::SandboxBuilder) -> Env {
        let sandbox = builder.start().await.expect("sandbox starts");
        let client = sandbox.client();
        install_crds(&client).await;
        install_namespace(&client, ns).await;
        Env {
            sandbox,
            client,
            ns: ns.to_owned(),
            operator: None,
        }
    }

    /// A bare sandbox: no CRDs, no namespace, no operator (namespace `payments` assumed).
    pub async fn bare() -> Env {
        let sandbox = Sandbox::start().await.expect("sandbox starts");
        let client = sandbox.client();
        Env {
            sandbox,
            client,
            ns: "payments".to_owned(),
            operator: None,
        }
    }

    pub fn with_operator(mut self) -> Env {
        self.operator = Some(Operator::start(self.client.clone(), None));
        self
    }

    /// An in-process operator with these settings (a short write timeout, say).
    pub fn with_operator_config(mut self, config: Config) -> Env {
        self.operator = Some(Operator::start_with(self.client.clone(), None, config));
        self
    }

    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
    }

    pub fn start_operator(&mut self) {
        self.operator = Some(Operator::start(self.client.clone(), None));
    }

    pub fn operator(&self) -> &Operator {
        self.operator.as_ref().expect("operator running")
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a namespaced object from YAML (in this env's namespace).
    pub async fn create<K>(&self, yaml: &str) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        let obj: K = serde_json::from_value(value).expect("test YAML fits the type");
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create")
    }

    /// A Secret `name` with these `stringData` entries (credentials for a store).
    pub async fn string_secret(&self, name: &str, entries: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// A fake SecretStore named `name` with these (key, value, version) entries.
    pub async fn fake_store(&self, name: &str, entries: &[(&str, &str, &str)]) -> SecretStore {
        let data: Vec<Value> = entries
            .iter()
            .map(|(k, v, ver)| json!({"key": k, "value": v, "version": ver}))
            .collect();
        let store: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"provider": {"fake": {"data": data}}},
        }))
        .unwrap();
        self.api::<SecretStore>()
            .create(&PostParams::default(), &store)
            .await
            .unwrap()
    }

    /// Replaces a fake store's entries (a backend write, as far as the operator can tell).
    pub async fn set_fake_data(&self, name: &str, entries: &[(&str, &str, &str)]) {
        let data: Vec<Value> = entries
            .iter()
            .map(|(k, v, ver)| json!({"key": k, "value": v, "version": ver}))
            .collect();
        self.api::<SecretStore>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"provider": {"fake": {"data": data}}}})),
            )
            .await
            .unwrap();
    }

    pub async fn merge_sync(&self, name: &str, patch: Value) -> SecretSync {
        self.api::<SecretSync>()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap()
    }

    /// Polls `get` until `check` returns `Some`, or panics with `what` at the deadline.
    pub async fn wait_for<K, T>(&self, name: &str, what: &str, check: impl Fn(&K) -> Option<T>) -> T
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            if let Ok(Some(obj)) = api.get_opt(name).await {
                if let Some(found) = check(&obj) {
                    return found;
                }
                last = Some(obj);
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last seen: {last:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The namespace's Events once at least one `matches` each of `wanted` (the operator
    /// queues its events, so they may land just after the status that caused them).
    pub async fn wait_events(
        &self,
        wanted: &[&str],
        matches: impl Fn(&Event, &str) -> bool,
    ) -> Vec<Event> {
        let api = self.api::<Event>();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let events = api.list(&ListParams::default()).await.unwrap().items;
            if wanted.iter().all(|w| events.iter().any(|e| matches(e, w))) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                let reasons: Vec<_> = events.iter().map(|e| (&e.reason, &e.note)).collect();
                panic!("timed out waiting for events {wanted:?}; have {reasons:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The namespace's Events once one with each of `reasons` exists.
    pub async fn wait_event_reasons(&self, reasons: &[&str]) -> Vec<Event> {
        self.wait_events(reasons, |e, r| e.reason.as_deref() == Some(r))
            .await
    }

    /// Waits for a SecretSync condition of `type_` with `status` and returns its reason and
    /// message.
    pub async fn wait_condition(&self, sync: &str, type_: &str, status: &str) -> (String, String) {
        self.wait_for::<SecretSync, _>(sync, &format!("{sync} {type_}={status}"), |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| (c.reason.clone(), c.message.clone()))
        })
        .await
    }

    /// Waits for the SecretSync's `type_` condition to be False with `reason`; returns its
    /// message. Use it for the first failure after creating a store and a SecretSync
    /// together: the operator may see the SecretSync before the store (StoreNotFound, then
    /// the real reason once the store wakes it).
    pub async fn wait_failure(&self, sync: &str, type_: &str, reason: &str) -> String {
        self.wait_for::<SecretSync, _>(sync, &format!("{sync} {type_}=False {reason}"), |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "False" && c.reason == reason)
                .map(|c| c.message.clone())
        })
        .await
    }

    /// Waits for the store's Ready condition to be `status` with `reason`; returns its
    /// message.
    pub async fn wait_store(&self, store: &str, status: &str, reason: &str) -> String {
        self.wait_for::<SecretStore, _>(
            store,
            &format!("store {store} Ready={status} {reason}"),
            |s| {
                s.status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status == status && c.reason == reason)
                    .map(|c| c.message.clone())
            },
        )
        .await
    }

    /// Waits for the SecretSync's `status.currentVersion` to reach `version`.
    pub async fn wait_version(&self, sync: &str, version: i64) -> SecretSync {
        self.wait_for::<SecretSync, _>(sync, &format!("{sync} at version {version}"), |s| {
            (s.status.as_ref()?.current_version == Some(version)).then(|| s.clone())
        })
        .await
    }

    /// Waits until the SecretSync's status lists `version` in `state`.
    pub async fn wait_version_state(&self, sync: &str, version: i64, state: VersionState) {
        let what = format!("{sync} v{version} {state:?}");
        self.wait_for::<SecretSync, _>(sync, &what, |s| {
            let listed = s
                .status
                .as_ref()?
                .versions
                .iter()
                .find(|v| v.version == version)?;
            (listed.state == state).then_some(())
        })
        .await;
    }

    /// The SecretSync's status as it is now.
    pub async fn status(&self, sync: &str) -> secretsync_api::SecretSyncStatus {
        let obj = self.api::<SecretSync>().get(sync).await.unwrap();
        obj.status.unwrap_or_default()
    }

    pub async fn secret(&self, name: &str) -> Option<Secret> {
        self.api::<Secret>().get_opt(name).await.unwrap()
    }

    /// Names of the Secrets labelled as versions of `sync`, sorted by version.
    pub async fn version_secrets(&self, sync: &str) -> Vec<String> {
        let list = self
            .api::<Secret>()
            .list_metadata(
                &kube::api::ListParams::default()
                    .labels(&secretsync_api::labels::sync_selector(sync)),
            )
            .await
            .unwrap();
        let mut named: Vec<(i64, String)> = list
            .items
            .into_iter()
            .filter_map(|s| {
                let v = s
                    .metadata
                    .labels
                    .as_ref()?
                    .get("secretsync.io/version")?
                    .parse()
                    .ok()?;
                Some((v, s.metadata.name?))
            })
            .collect();
        named.sort();
        named.into_iter().map(|(_, n)| n).collect()
    }

    /// Waits until the operator has read the backend at least `n` times.
    pub async fn wait_backend_reads(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.operator().backend_reads() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator read the backend {} times, not {n}",
                self.operator().backend_reads()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the operator has done at least `n` more reconciles than `since`.
    pub async fn wait_reconciles(&self, since: u64, n: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.operator().reconciles() < since + n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator did not reconcile"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn install_namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
}

pub async fn install_crds(client: &Client) {
    secretsync_testkit::install::install_crds(client, DEADLINE)
        .await
        .expect("CRDs installed and established");
}

/// Deployment `name` with two replicas whose container takes `DB_PASSWORD` from
/// `secret`'s `password`.
pub async fn create_deployment(env: &Env, name: &str, secret: &str) {
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{
                        "name": name, "image": "app:1",
                        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
                    }]},
                },
            },
        }))
        .unwrap();
    env.api::<k8s_openapi::api::apps::v1::Deployment>()
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
}

/// What `kubectl rollout undo deployment NAME` writes when the previous revision used
/// `secret`: the template back on it, under kubectl's own field manager. For Deployments made
/// by [`create_deployment`].
pub async fn rollout_undo(env: &Env, name: &str, secret: &str) {
    let d = env
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get(name)
        .await
        .unwrap();
    let mut template = serde_json::to_value(&d.spec.unwrap().template).unwrap();
    template["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] =
        json!(secret);
    env.api::<k8s_openapi::api::apps::v1::Deployment>()
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kubectl-rollout".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"template": template}})),
        )
        .await
        .unwrap();
}

/// A Secret's data as bytes by key.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// A SecretSync manifest reading property `password` of `key` through `store`, refreshed
/// every second.
pub fn keyed_sync_yaml(name: &str, store: &str, key: &str) -> String {
    sync_manifest(name, store, key, "  refreshInterval: 1s")
}

/// A SecretSync manifest reading `password` from the fake store's `app/db`.
pub fn sync_yaml(name: &str, store: &str, extra: &str) -> String {
    sync_manifest(name, store, "app/db", extra)
}

/// SecretSync `name` reading property `password` of `key` through `store`, with `extra`
/// spec lines.
fn sync_manifest(name: &str, store: &str, key: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: {store}}}
  data:
    - secretKey: password
      remoteRef: {{key: {key}, property: password}}
{extra}
"#
    )
}

impl Env {
    /// Creates SecretSyncs `s0`..`s{n-1}` through `store`, SecretSync `i` reading `password`
    /// from `app/k{key_of(i)}`, with `extra` spec lines; waits until each has made v1.
    pub async fn many_syncs(
        &self,
        n: usize,
        store: &str,
        key_of: impl Fn(usize) -> usize,
        extra: &str,
    ) {
        for i in 0..n {
            self.create::<SecretSync>(&format!(
                r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: s{i}}}
spec:
  storeRef: {{name: {store}}}
  data: [{{secretKey: password, remoteRef: {{key: app/k{}, property: password}}}}]
{extra}
"#,
                key_of(i)
            ))
            .await;
        }
        for i in 0..n {
            self.wait_version(&format!("s{i}"), 1).await;
        }
    }

    /// Waits until the named object no longer exists.
    pub async fn wait_for_absent<K>(&self, name: &str)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while api.get_opt(name).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} still exists"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// splitmix64: a seed's schedule is the same on every machine (the seeded harnesses).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`, `None` when there are none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let n = items.len() as u64;
        (n > 0).then(|| &items[self.below(n) as usize])
    }
}

/// The seeds a harness runs: `{prefix}_SEED=N` replays seed N alone, `{prefix}_SEEDS=K` runs
/// 1..=K, else 1..=`default`.
pub fn seeds(prefix: &str, default: u64) -> Vec<u64> {
    let var = |suffix: &str| {
        std::env::var(format!("{prefix}_{suffix}"))
            .ok()
            .and_then(|s| s.parse().ok())
    };
    if let Some(seed) = var("SEED") {
        return vec![seed];
    }
    (1..=var("SEEDS").unwrap_or(default)).collect()
}
