//! Test harness: an API server with the CRDs installed, a namespace, and an operator running
//! in-process that can be stopped and restarted.
//!
//! The API server is the sandbox, in the test process, unless `SECRETSYNC_TEST_CLUSTER=real`:
//! then it is the real one `KUBECONFIG` names (`scripts/integration-real.sh` starts one), and
//! each [`Env`] gets a namespace of its own (deleted when the Env is dropped), an operator
//! watching only that namespace with its hash key there, and the CRDs installed once per test
//! binary. Tests that need the sandbox's own hooks (request counts, its fault injection, the
//! simulator's knobs) are listed in [`SANDBOX_ONLY`] with the reason; the real run excludes
//! them by name, and such a hook used on a real cluster panics.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use secretsync_api::{SecretStore, SecretSync, SecretSyncStatus, TargetState, VersionState};
use secretsync_operator::hash_key::KeySecret;
use secretsync_operator::process::metrics::Metrics;
use secretsync_operator::process::supervise::Stopped;
use secretsync_operator::{Config, RunOptions};
use secretsync_sandbox::Sandbox;
use secretsync_testkit::apiproxy::ApiProxy;
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
            Ok(level) => secretsync_operator::process::telemetry::init(
                secretsync_operator::process::telemetry::LogFormat::Text,
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
        Self::start_in(client, namespace.into_iter().collect(), config)
    }

    /// Like [`Operator::start_with`], watching exactly `namespaces` (every one when empty).
    pub fn start_in(client: Client, namespaces: Vec<String>, config: Config) -> Self {
        let options = RunOptions {
            namespaces,
            ..Self::options()
        };
        Self::run(client, options, config)
    }

    /// The options the tests' operators run with unless told otherwise.
    pub fn options() -> RunOptions {
        RunOptions {
            concurrency: 8,
            ..RunOptions::default()
        }
    }

    fn run(client: Client, options: RunOptions, config: Config) -> Self {
        logs();
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
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

    /// Stops the operator at once (its reconciles are cut short).
    fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
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

/// Tests that cannot run on a real API server, by `module::test` name, with the reason.
/// `scripts/integration-real.sh` passes each to the test binary as `--skip` (exact), so the
/// real run reports them as not run rather than passed.
pub const SANDBOX_ONLY: &[(&str, &str)] = &[
    (
        "crash_leases::sigkills_around_issuing_leave_no_lease_without_a_version",
        "runs the operator binary, which watches every namespace, and slows the sandbox's Secret creates so kills fall between issuing and writing",
    ),
    (
        "rollout::a_hanging_rollout_fails_after_the_timeout_and_deletes_nothing",
        "hangs the rollout by annotating the Deployment after its Pods exist (the simulator reads the workload's annotation); kwok reads the Pod's, and moving it to the template would itself roll the Deployment",
    ),
    (
        "failures::a_failed_status_write_keeps_the_failures_backoff",
        "removes the status subresource from the cluster-scoped SecretSync CRD: on a shared real cluster every other test's status writes then fail",
    ),
    (
        "sharding::an_operator_reconciles_only_its_namespaces_and_selector",
        "makes its own fixed namespaces (`payments`, …) for the operators' namespace lists: on a shared real cluster the tests running at once collide",
    ),
    (
        "endpoints::metrics_count_syncs_rotations_and_failures_without_naming_anything",
        "runs the operator binary, which watches every namespace: on a shared real cluster it would reconcile the other tests' objects",
    ),
    (
        "leader::one_leader_reconciles_and_a_standby_takes_over_when_it_dies",
        "runs the operator binary, which watches every namespace: on a shared real cluster it would reconcile the other tests' objects",
    ),
    (
        "failures::a_malformed_secretsync_is_reported_and_stalls_nothing",
        "loosens the cluster-scoped SecretSync CRD's schema to store a malformed object: on a shared real cluster every other test's SecretSyncs then go through the loosened schema",
    ),
    (
        "argo::without_the_argo_crd_a_rollout_target_is_reported_and_the_others_roll",
        "needs a cluster without the Rollout CRD, which the other argo tests install on a shared real cluster",
    ),
    (
        "crash::sigkill_at_random_points_converges_to_the_uninterrupted_end_state",
        "runs the operator binary, which watches every namespace: on a shared real cluster it would reconcile the other tests' objects",
    ),
    (
        "endpoints::readyz_waits_for_the_caches_and_sigterm_releases_the_lease",
        "runs the operator binary, which watches every namespace: on a shared real cluster it would reconcile the other tests' objects",
    ),
    (
        "examples::crds_load_in_real_kubectl_and_the_fake_example_syncs",
        "applies the repository's examples into namespace `payments` and CRDs with kubectl as on a fresh cluster: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "examples::the_gcp_example_syncs_from_the_secret_manager_double",
        "applies an example into the fixed namespace `payments`: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "examples::the_vault_example_syncs_from_openbao",
        "applies an example into the fixed namespace `payments`: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "leak::canary_values_never_appear_in_logs_events_statuses_metrics_or_errors",
        "makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "tenancy::a_namespace_label_change_admits_or_refuses_at_once",
        "makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "rbac::the_charts_per_namespace_rbac_grants_every_call_of_a_namespaced_operator",
        "records the operator's requests by user (the sandbox's request log) and makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "rbac::the_charts_cluster_wide_rbac_grants_every_call_and_no_unused_secret_verb",
        "records the operator's requests by user with the sandbox's request log (on real, the e2e journey 1 runs the operator as the chart's ServiceAccount instead)",
    ),
    (
        "leases::a_pki_version_is_a_leased_tls_certificate_and_refreshes_issue_nothing",
        "lists the SecretSyncs of every namespace for its leak check, and another test's deliberately malformed SecretSync fails the list: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "gcp::conformance_values_never_leak",
        "lists the SecretSyncs of every namespace for its leak check: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "azure::conformance_values_never_leak",
        "lists the SecretSyncs of every namespace for its leak check: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "akeyless::conformance_values_never_leak",
        "lists the SecretSyncs of every namespace for its leak check: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "conjur::conformance_values_never_leak",
        "lists the SecretSyncs of every namespace for its leak check: makes cluster-scoped objects (ClusterSecretStores, Namespaces, ClusterRoles) under fixed names, or lists every namespace: on a shared real cluster the tests running at once collide",
    ),
    (
        "hash_key::a_key_secret_without_a_usable_key_stops_the_operator_with_a_clear_error",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "hash_key::a_sync_moved_to_a_shard_with_another_key_is_re_keyed_not_re_versioned",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "hash_key::the_content_hash_is_keyed_by_the_operators_secret_and_survives_a_restart",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "hash_key::versions_with_the_legacy_hash_do_not_rotate_on_upgrade",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "hash_key::killed_while_re_keying_the_operator_converges_with_no_new_version",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace; and injects delays with the sandbox's faults",
    ),
    (
        "hash_key::deleting_the_key_and_restarting_rewrites_every_hash_and_makes_no_version",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "hash_key::moving_the_operator_to_a_namespace_with_a_fresh_key_makes_no_version",
        "is about the operator's one hash-key Secret (default/secretsync-hash-key) or its namespace; on a shared real cluster each test's operator keeps its own key in its own namespace",
    ),
    (
        "rollout::restarts_mid_rollout_and_after_it_patch_nothing_again",
        "restarts the operator mid-rollout, which needs the simulator's slow rollout (Sandbox::builder().ready_delay): kwok's Pods are Ready at once",
    ),
    (
        "stress::a_batched_failure_is_blamed_on_the_secret_the_pods_name",
        "needs a kubelet that refuses a Pod whose Secret key is missing (CreateContainerConfigError, read by the operator to blame the failure): kwok runs every Pod and no Stage can look up a Secret",
    ),
    (
        "leases::the_next_version_rolls_out_before_the_old_lease_expires",
        "measures the simulator's rollout delay (Sandbox::builder().ready_delay): kwok's Pods are Ready at once",
    ),
];

/// Panics, with the reason, when this test (libtest names its thread after it) is listed in
/// [`SANDBOX_ONLY`].
fn refuse_sandbox_only() {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or_default();
    if let Some((_, why)) = SANDBOX_ONLY.iter().find(|(name, _)| *name == test) {
        panic!("{test} is sandbox-only (common::SANDBOX_ONLY): it {why}");
    }
}

/// `KUBECONFIG` when the tests run on a real API server (`SECRETSYNC_TEST_CLUSTER=real`).
pub fn real_kubeconfig() -> Option<PathBuf> {
    match std::env::var("SECRETSYNC_TEST_CLUSTER").as_deref() {
        Ok("real") => Some(
            std::env::var_os("KUBECONFIG")
                .expect("SECRETSYNC_TEST_CLUSTER=real needs KUBECONFIG (the real API server's)")
                .into(),
        ),
        Ok("sandbox") | Err(_) => None,
        Ok(other) => panic!("SECRETSYNC_TEST_CLUSTER={other}: expected `sandbox` or `real`"),
    }
}

/// The API server a test runs against. Dereferences to the sandbox for its own hooks (request
/// counts, fault injection), which panic on a real cluster: such a test belongs in
/// [`SANDBOX_ONLY`].
pub struct Cluster {
    sandbox: Option<Sandbox>,
    kubeconfig: PathBuf,
    /// The real cluster's admin client configuration.
    real: Option<kube::Config>,
}

impl Cluster {
    async fn sandbox(builder: secretsync_sandbox::SandboxBuilder) -> Cluster {
        let sandbox = builder.start().await.expect("sandbox starts");
        Cluster {
            kubeconfig: sandbox.kubeconfig_path().to_path_buf(),
            sandbox: Some(sandbox),
            real: None,
        }
    }

    async fn real(kubeconfig: PathBuf) -> Cluster {
        let file = kube::config::Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .expect("the real cluster's kubeconfig loads");
        Cluster {
            sandbox: None,
            kubeconfig,
            real: Some(config),
        }
    }

    pub fn is_real(&self) -> bool {
        self.sandbox.is_none()
    }

    /// A kubeconfig file for the cluster (admin on a real one).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the cluster's admin credentials.
    pub fn client(&self) -> Client {
        match (&self.sandbox, &self.real) {
            (Some(sandbox), _) => sandbox.client(),
            (None, Some(config)) => {
                Client::try_from(config.clone()).expect("a client for the real cluster")
            }
            (None, None) => unreachable!("a cluster is a sandbox or a real one"),
        }
    }

    /// A client that impersonates `user` (on a real cluster the server then authorizes
    /// the requests as `user`'s).
    pub fn client_as(&self, user: &str) -> Client {
        match (&self.sandbox, &self.real) {
            (Some(sandbox), _) => sandbox.client_as(user),
            (None, Some(config)) => {
                let mut config = config.clone();
                config.auth_info.impersonate = Some(user.into());
                Client::try_from(config).expect("a client for the real cluster")
            }
            (None, None) => unreachable!("a cluster is a sandbox or a real one"),
        }
    }
}

impl Deref for Cluster {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        self.sandbox.as_ref().expect(
            "this test uses a sandbox-only hook (request counts, fault injection, simulator \
             knobs) on a real API server: list it in common::SANDBOX_ONLY with the reason",
        )
    }
}

pub struct Env {
    /// The API server: the sandbox's hooks through it panic on a real cluster.
    pub sandbox: Cluster,
    pub client: Client,
    pub ns: String,
    pub operator: Option<Operator>,
    /// The fault-injecting proxy the operator talks through, if [`Env::with_operator_behind_proxy`].
    proxy: Option<ApiProxy>,
}

/// A namespace name of its own for `ns` on a shared real cluster.
fn fresh_namespace(ns: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{ns}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for Env {
    /// On a real cluster, stops the operator and deletes the test's namespace (the sandbox
    /// goes away with the process's memory).
    fn drop(&mut self) {
        if !self.sandbox.is_real() {
            return;
        }
        if let Some(operator) = self.operator.as_mut() {
            operator.abort();
        }
        let (config, ns) = (self.sandbox.real.clone(), self.ns.clone());
        // Drop cannot await, and the test's runtime is blocked here: one request from a
        // runtime (and a client, whose connection task runs where it was made) of its own.
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the namespace's deletion")
                .block_on(async {
                    let config = config.expect("a real cluster has its client configuration");
                    let client = Client::try_from(config).expect("a client for the real cluster");
                    Api::<Namespace>::all(client)
                        .delete(&ns, &Default::default())
                        .await
                        .map(|_| ())
                })
        })
        .join();
        if let Ok(Err(e)) = deleted
            && !matches!(&e, kube::Error::Api(status) if status.code == 404)
        {
            eprintln!("could not delete the test's namespace {}: {e}", self.ns);
        }
    }
}

impl Env {
    /// A cluster with the CRDs and namespace `ns` (on a real cluster, a fresh namespace named
    /// after it), and a running operator.
    pub async fn start(ns: &str) -> Env {
        let env = Self::without_operator(ns).await;
        env.with_operator()
    }

    pub async fn without_operator(ns: &str) -> Env {
        Self::with_sandbox(ns, Sandbox::builder()).await
    }

    /// Like [`Env::start`] with sandbox options (a slower simulated rollout, say). On a real
    /// cluster the options do not apply: its Pods are kwok's.
    pub async fn start_with(ns: &str, builder: secretsync_sandbox::SandboxBuilder) -> Env {
        Self::with_sandbox(ns, builder).await.with_operator()
    }

    /// A cluster (a sandbox built from `builder`) with the CRDs and namespace `ns`, and no
    /// operator.
    pub async fn with_sandbox(ns: &str, builder: secretsync_sandbox::SandboxBuilder) -> Env {
        let env = Self::cluster(ns, builder).await;
        if env.sandbox.is_real() {
            static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
            CRDS.get_or_init(|| install_crds(&env.client)).await;
        } else {
            install_crds(&env.client).await;
        }
        install_namespace(&env.client, &env.ns).await;
        env
    }

    /// A cluster without CRDs, namespace (`payments` on the sandbox, where it is not made
    /// either) or operator.
    pub async fn bare() -> Env {
        Self::cluster("payments", Sandbox::builder()).await
    }

    async fn cluster(ns: &str, builder: secretsync_sandbox::SandboxBuilder) -> Env {
        let (sandbox, ns) = match real_kubeconfig() {
            Some(kubeconfig) => {
                refuse_sandbox_only();
                (Cluster::real(kubeconfig).await, fresh_namespace(ns))
            }
            None => (Cluster::sandbox(builder).await, ns.to_owned()),
        };
        Env {
            client: sandbox.client(),
            sandbox,
            ns,
            operator: None,
            proxy: None,
        }
    }

    /// An operator with these settings whose requests go through an [`ApiProxy`] in front of
    /// the cluster (sandbox or real): the test injects API faults there and counts the
    /// operator's requests, and its own requests go to the cluster directly.
    pub async fn with_operator_behind_proxy(mut self, config: Config) -> Env {
        let proxy = ApiProxy::start(self.client.clone()).await;
        let operator = self.operator_for(proxy.client(), config);
        self.proxy = Some(proxy);
        self.operator = Some(operator);
        self
    }

    /// The proxy in front of the cluster ([`Env::with_operator_behind_proxy`]).
    pub fn proxy(&self) -> &ApiProxy {
        self.proxy
            .as_ref()
            .expect("the operator runs behind a proxy (Env::with_operator_behind_proxy)")
    }

    /// Like [`Env::start`], with the operator behind an [`ApiProxy`] that counts its
    /// requests (`env.proxy().requests()`), on the sandbox and on a real cluster alike.
    pub async fn counted(ns: &str) -> Env {
        Self::without_operator(ns)
            .await
            .with_operator_behind_proxy(Config::default())
            .await
    }

    pub fn with_operator(mut self) -> Env {
        self.start_operator();
        self
    }

    /// An in-process operator with these settings (a short write timeout, say).
    pub fn with_operator_config(mut self, config: Config) -> Env {
        self.operator = Some(self.operator_with(config));
        self
    }

    /// An in-process operator run with `options`; on a shared real cluster it watches only
    /// the test's own namespace, with its hash key there.
    pub fn with_operator_options(mut self, mut options: RunOptions) -> Env {
        let client = match &self.proxy {
            Some(proxy) => proxy.client(),
            None => self.client.clone(),
        };
        let mut config = Config::default();
        if self.sandbox.is_real() {
            options.namespaces = vec![self.ns.clone()];
            config.hash_key.namespace = self.ns.clone();
        }
        self.operator = Some(Operator::run(client, options, config));
        self
    }

    /// An operator for this env: on the sandbox it watches every namespace; on a shared real
    /// cluster only the test's own, with its hash key there (unless `config` names another).
    fn operator_with(&self, config: Config) -> Operator {
        let client = match &self.proxy {
            Some(proxy) => proxy.client(),
            None => self.client.clone(),
        };
        self.operator_for(client, config)
    }

    fn operator_for(&self, client: Client, mut config: Config) -> Operator {
        if !self.sandbox.is_real() {
            return Operator::start_with(client, None, config);
        }
        if config.hash_key == KeySecret::default() {
            config.hash_key.namespace = self.ns.clone();
        }
        Operator::start_with(client, Some(self.ns.clone()), config)
    }

    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
    }

    pub fn start_operator(&mut self) {
        self.operator = Some(self.operator_with(Config::default()));
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
        self.wait_in(&self.ns, name, what, |obj| check(obj?)).await
    }

    /// Polls `get` of a namespaced object in `namespace` until `check` returns `Some`, or
    /// panics with `what` at the deadline.
    pub async fn wait_in<K, T>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(Option<&K>) -> Option<T>,
    ) -> T
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            let got = api.get_opt(name).await.ok().flatten();
            if let Some(found) = check(got.as_ref()) {
                return found;
            }
            last = got.or(last);
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what} ({namespace}/{name}); last seen: {last:#?}");
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
        self.wait_events_in(&self.ns, wanted, matches).await
    }

    /// Like [`Env::wait_events`], in `namespace`.
    pub async fn wait_events_in(
        &self,
        namespace: &str,
        wanted: &[&str],
        matches: impl Fn(&Event, &str) -> bool,
    ) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let events = api.list(&ListParams::default()).await.unwrap().items;
            if wanted.iter().all(|w| events.iter().any(|e| matches(e, w))) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                let reasons: Vec<_> = events.iter().map(|e| (&e.reason, &e.note)).collect();
                panic!("timed out waiting for events {wanted:?} in {namespace}; have {reasons:?}");
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
        self.wait_store_condition(store, "Ready", status, reason)
            .await
    }

    /// Waits for the store's condition `type_` to be `status` with `reason`; returns its
    /// message.
    pub async fn wait_store_condition(
        &self,
        store: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> String {
        self.wait_for::<SecretStore, _>(
            store,
            &format!("store {store} {type_}={status} {reason}"),
            |s| {
                s.status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == type_ && c.status == status && c.reason == reason)
                    .map(|c| c.message.clone())
            },
        )
        .await
    }

    /// Waits until `version` is active and `target` completed its rollout to it.
    pub async fn wait_rolled_out(&self, sync: &str, target: &str, version: i64) {
        let what = format!("{sync}: v{version} rolled out to {target}");
        self.wait_for::<SecretSync, _>(sync, &what, |s| {
            rolled_out(s.status.as_ref()?, target, version).then_some(())
        })
        .await;
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
    create_deployment_in(env, &env.ns, name, secret).await;
}

/// Like [`create_deployment`], in `namespace`.
pub async fn create_deployment_in(env: &Env, namespace: &str, name: &str, secret: &str) {
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
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), namespace)
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

/// Creates an Argo Rollout from JSON in the env's namespace. Through a dynamic object, which
/// keeps `apiVersion` and `kind`: the operator's [`secretsync_operator::rollout::argo::Rollout`] type
/// serializes neither (it only ever patches), and a real API server refuses a body without
/// them (`Object 'Kind' is missing`).
pub async fn create_rollout_json(env: &Env, rollout: Value) {
    let resource =
        kube::discovery::ApiResource::erase::<secretsync_operator::rollout::argo::Rollout>(&());
    kube::Api::<kube::api::DynamicObject>::namespaced_with(env.client.clone(), &env.ns, &resource)
        .create(
            &PostParams::default(),
            &serde_json::from_value(rollout).expect("a Rollout as JSON"),
        )
        .await
        .expect("create the Rollout");
}

/// The `password` key of a Secret's data.
pub fn password(secret: &Secret) -> Vec<u8> {
    secret_data(secret)["password"].clone()
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

/// Polls `done` every 50 ms until it holds, failing with `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count()` once it has stopped moving: an upper bound needs an observation window, so the
/// count is taken once two seconds (twice instant sync's coalescing window) pass without a
/// new one.
pub async fn settled<T: PartialEq>(count: impl Fn() -> T) -> T {
    let mut seen = count();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if count() == seen {
            return seen;
        }
        seen = count();
    }
}

/// The file `examples/<dir>/<file>`, with the examples' OpenBao address replaced by `addr`.
pub fn example(dir: &str, file: &str, addr: &str) -> String {
    let path = secretsync_testkit::repo_root()
        .join("examples")
        .join(dir)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("http://127.0.0.1:8200", addr)
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
        self.wait_gone_in::<K>(&self.ns, name, DEADLINE).await;
    }

    /// Waits, up to `deadline` from now, until the named object no longer exists in
    /// `namespace`.
    pub async fn wait_gone_in<K>(&self, namespace: &str, name: &str, deadline: Duration)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + deadline;
        while api.get_opt(name).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} still exists in {namespace}"
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

/// Cluster-scoped objects a test made under names of its own (namespaces beyond the Env's,
/// ClusterSecretSyncs, ClusterSecretStores): deleted when dropped on a real cluster, as the
/// Env's namespace is (the sandbox goes with the process).
pub struct ClusterObjects {
    real: Option<kube::Config>,
    pub namespaces: Vec<String>,
    pub cluster_syncs: Vec<String>,
    pub cluster_stores: Vec<String>,
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let Some(config) = self.real.clone() else {
            return;
        };
        let (namespaces, syncs, stores) = (
            std::mem::take(&mut self.namespaces),
            std::mem::take(&mut self.cluster_syncs),
            std::mem::take(&mut self.cluster_stores),
        );
        // As Env's drop: a runtime of its own, the test's is blocked here.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(async {
                    let client = Client::try_from(config).expect("a client for the real cluster");
                    let dp = Default::default();
                    for name in syncs {
                        let _ = Api::<secretsync_api::ClusterSecretSync>::all(client.clone())
                            .delete(&name, &dp)
                            .await;
                    }
                    for name in stores {
                        let _ = Api::<secretsync_api::ClusterSecretStore>::all(client.clone())
                            .delete(&name, &dp)
                            .await;
                    }
                    for name in namespaces {
                        let _ = Api::<Namespace>::all(client.clone())
                            .delete(&name, &dp)
                            .await;
                    }
                })
        })
        .join();
    }
}

impl Env {
    /// An Env (namespace `ns`, no operator yet) plus namespaces `<env ns>-<suffix>` for each
    /// suffix, and an operator watching all of them (on the sandbox: every namespace), and
    /// those of `later` too, which the test creates itself. The returned [`ClusterObjects`]
    /// deletes them on a real cluster; cluster-scoped objects the test makes are named after
    /// the Env's namespace and added to it.
    pub async fn with_namespaces(
        ns: &str,
        suffixes: &[String],
        later: &[String],
    ) -> (Env, ClusterObjects) {
        let mut env = Self::without_operator(ns).await;
        let named = |list: &[String]| -> Vec<String> {
            list.iter().map(|s| format!("{}-{s}", env.ns)).collect()
        };
        for name in &named(suffixes) {
            install_namespace(&env.client, name).await;
        }
        let namespaces: Vec<String> = named(suffixes).into_iter().chain(named(later)).collect();
        let objects = ClusterObjects {
            real: env.sandbox.real.clone(),
            namespaces: namespaces.clone(),
            cluster_syncs: Vec::new(),
            cluster_stores: Vec::new(),
        };
        let operator = if env.sandbox.is_real() {
            let config = Config {
                hash_key: KeySecret {
                    namespace: env.ns.clone(),
                    ..KeySecret::default()
                },
                ..Config::default()
            };
            let watched = std::iter::once(env.ns.clone()).chain(namespaces).collect();
            Operator::start_in(env.client.clone(), watched, config)
        } else {
            Operator::start_in(env.client.clone(), Vec::new(), Config::default())
        };
        env.operator = Some(operator);
        (env, objects)
    }
}

/// What the env's operator serves at `/metrics`.
pub async fn metrics_text(env: &Env) -> String {
    use tower::ServiceExt as _;
    let response =
        secretsync_operator::process::server::metrics_routes(env.operator().metrics.clone())
            .oneshot(
                http::Request::get("/metrics")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
    let metrics = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(metrics.to_vec()).unwrap()
}

/// Whether `version` is active and `target` completed its rollout to it.
pub fn rolled_out(status: &SecretSyncStatus, target: &str, version: i64) -> bool {
    status.active_version == Some(version)
        && status.rollout.as_ref().is_some_and(|r| {
            r.targets.iter().any(|t| {
                t.name == target && t.version == version && t.state == TargetState::Complete
            })
        })
}
