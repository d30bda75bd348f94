//! A sandbox Kubernetes API server for tests.
//!
//! An in-memory, single-process stand-in for kube-apiserver that speaks enough of the real
//! API for kube-rs controllers (`Controller`, watchers, server-side apply, events) and real
//! `kubectl` to work against it: discovery, CRUD with optimistic concurrency, list/watch
//! with selectors, pagination and bookmarks, metadata-only responses, merge/JSON/strategic
//! patches and server-side apply with managed fields, CRDs with structural-schema pruning,
//! defaulting and validation, finalizers, garbage collection, a kwok-style workload
//! simulator, and ServiceAccount tokens with TokenReview.
//!
//! Not faithful: no authentication or authorization (any or no bearer token is accepted),
//! plain HTTP only, no admission webhooks, CRD `x-kubernetes-validations` (CEL) rules run
//! through kube-cel rather than the real CEL libraries, no version conversion between CRD
//! versions (stored objects are relabelled, as with conversion strategy `None`),
//! server-side apply of events.k8s.io/v1 Events is refused, and request bodies are JSON,
//! YAML for apply, or protobuf for the built-in kinds (see `protobuf`). The crate README lists the details.
//!
//! ```no_run
//! # async fn demo() -> Result<(), secretsync_sandbox::Error> {
//! let sandbox = secretsync_sandbox::Sandbox::start().await?;
//! let client = sandbox.client();
//! // ... use `client`, or point kubectl at `sandbox.kubeconfig_path()` ...
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod apply;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fields;
pub mod gc;
pub mod http;
pub mod kinds;
pub mod objmeta;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod render;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod sim;
pub mod stats;
pub mod store;
pub mod table;
pub mod tokens;
pub mod util;
pub mod validation;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

pub use secretsync_testkit::faults::{self, Effect, Fault, FaultStats};
pub use stats::{Scope, StatCount, StatKey, Stats};
pub use tokens::PLACEHOLDER_CA_PEM;

use api::Core;
use store::{Key, Precondition};

/// Failure to start a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error("writing the kubeconfig: {0}")]
    Kubeconfig(#[source] std::io::Error),
}

/// Options for [`Sandbox`]; see [`Sandbox::builder`].
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    simulator: Option<secretsync_simulator::Options>,
    port: u16,
    kubeconfig_out: Option<PathBuf>,
    history: usize,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self {
            simulator: Some(secretsync_simulator::Options::default()),
            port: 0,
            kubeconfig_out: None,
            history: 50_000,
        }
    }
}

impl SandboxBuilder {
    /// How long a simulated Pod takes to become Ready (default 200ms).
    pub fn ready_delay(mut self, d: Duration) -> Self {
        if let Some(o) = &mut self.simulator {
            o.ready_delay = d;
        }
        self
    }

    /// Number of simulated nodes, i.e. Pods per DaemonSet (default 3).
    pub fn nodes(mut self, n: u32) -> Self {
        if let Some(o) = &mut self.simulator {
            o.nodes = n;
        }
        self
    }

    /// Starts without the built-in workload simulator: Pods stay unbound and Pending and
    /// workloads get no Pods, as on a bare control plane, until something else (the
    /// standalone `secretsync-sim`) plays kubelet and controllers.
    pub fn without_simulator(mut self) -> Self {
        self.simulator = None;
        self
    }

    /// TCP port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }

    /// Where to write the kubeconfig (default: a temporary directory owned by the sandbox).
    pub fn kubeconfig_out(mut self, p: impl Into<PathBuf>) -> Self {
        self.kubeconfig_out = Some(p.into());
        self
    }

    /// How many past changes are kept for watch resumption (default 50,000).
    pub fn watch_history(mut self, n: usize) -> Self {
        self.history = n.max(16);
        self
    }

    pub async fn start(self) -> Result<Sandbox, Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(Error::Bind)?;
        let port = listener.local_addr().map_err(Error::Bind)?.port();
        let url = format!("http://127.0.0.1:{port}");
        let core = Arc::new(Core {
            store: store::Store::new(self.history, 65_536),
            registry: resources::Registry::new(),
            stats: stats::Recorder::default(),
            faults: faults::Faults::default(),
            signer: tokens::Signer::new(),
            cluster_ips: kinds::ClusterIps::default(),
        });
        for ns in ["default", "kube-system", "kube-public"] {
            seed_namespace(&core, ns);
        }
        let (tmp, kubeconfig) = match self.kubeconfig_out {
            Some(p) => (None, p),
            None => {
                let d = tempfile::tempdir().map_err(Error::Kubeconfig)?;
                let p = d.path().join("kubeconfig");
                (Some(d), p)
            }
        };
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url)).map_err(Error::Kubeconfig)?;

        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = http::AppState {
            core: core.clone(),
            shutdown: shutdown_rx.clone(),
            url: url.clone().into(),
        };
        let app = axum::Router::new().fallback(http::handle).with_state(state);
        let mut stop = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let mut tasks = vec![tokio::spawn(gc::run(core.clone()))];
        if let Some(opts) = self.simulator {
            tasks.push(tokio::spawn(sim::run(core.clone(), opts)));
        }
        Ok(Sandbox {
            core,
            url,
            kubeconfig,
            _tmp: tmp,
            shutdown_tx,
            server: Some(server),
            tasks,
        })
    }
}

fn seed_namespace(core: &Core, name: &str) {
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": util::new_uid(),
            "creationTimestamp": util::now_rfc3339(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    });
    let _ = core.store.put(
        &Key::new("", "namespaces", "", name),
        Precondition::Absent,
        obj,
    );
}

fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {url}
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox
    namespace: default
current-context: sandbox
users:
- name: sandbox
  user: {{}}
preferences: {{}}
"
    )
}

/// A running sandbox API server. Stops on [`Sandbox::shutdown`] or when dropped.
pub struct Sandbox {
    core: Arc<Core>,
    url: String,
    kubeconfig: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts a sandbox with default options on a free port.
    pub async fn start() -> Result<Sandbox, Error> {
        Self::builder().start().await
    }

    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let mut config =
            kube::Config::new(self.url.parse().expect("the sandbox URL is a valid URI"));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("a client for a plain-HTTP URL always builds")
    }

    /// A kube client that acts as `user` (the `Impersonate-User` header), so that
    /// [`Sandbox::stats`] can tell its requests apart. Nothing is authorized differently.
    pub fn client_as(&self, user: &str) -> kube::Client {
        let mut config =
            kube::Config::new(self.url.parse().expect("the sandbox URL is a valid URI"));
        config.default_namespace = "default".into();
        config.auth_info.impersonate = Some(user.into());
        kube::Client::try_from(config).expect("a client for a plain-HTTP URL always builds")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig (context `sandbox`, namespace `default`) for kubectl and kube clients.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn stats(&self) -> Stats {
        self.core.stats.snapshot()
    }

    pub fn reset_stats(&self) {
        self.core.stats.reset();
    }

    /// Arms a fault: matching requests get an error status or a delay (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.core.faults.arm(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.core.faults.clear();
    }

    /// Ends every open watch now; clients must re-watch.
    pub fn drop_watches(&self) {
        self.core.faults.drop_watches();
    }

    /// How many faults were injected and watches dropped.
    pub fn fault_stats(&self) -> FaultStats {
        self.core.faults.stats()
    }

    /// Number of stored objects (all kinds).
    pub fn object_count(&self) -> usize {
        self.core.store.len()
    }

    /// Stops serving: open watches end, the listener closes, background tasks stop.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.server.take() {
            let abort = s.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), s)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}
