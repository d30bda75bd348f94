//! The harness of the end-to-end journeys: a cluster (the sandbox by default, any cluster
//! with `E2E_CLUSTER=existing` and `KUBECONFIG`, a real Kubernetes control plane with
//! `E2E_CLUSTER=real`, as `e2e/run-real.sh` starts one), the `secretsync-operator` binary as
//! a process on loopback, and real kubectl with the `kubectl-secretsync` plugin on its PATH.
//!
//! Everything a journey checks goes through kubectl, as a user would look; nothing here
//! depends on the sandbox except [`Journey::sandbox`], which sandbox-only checks use and
//! skip (with one printed line) on other clusters.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use secretsync_sandbox::Sandbox;
use secretsync_testkit::{ChildGuard, free_port, repo_root, require_tool};
use serde_json::Value;

/// How long any awaited outcome may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Which cluster the suite runs against.
enum Cluster {
    Sandbox(Sandbox),
    /// A cluster at `KUBECONFIG`; `enforces_rbac` with `E2E_CLUSTER=real` (kube-apiserver
    /// with `--authorization-mode=Node,RBAC`): an `existing` cluster may be one that stores
    /// RBAC objects without enforcing them, as the sandbox does.
    Existing {
        kubeconfig: PathBuf,
        enforces_rbac: bool,
    },
}

/// The directory cargo builds binaries into, found from this test executable
/// (`<target>/debug/deps/<test>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

/// The binaries a user installs, built by cargo: `cargo test --workspace` builds them
/// (the operator's and the plugin's own tests need them); `cargo test -p secretsync-e2e`
/// alone does not, so a missing one names the command.
fn built_binaries() -> PathBuf {
    let dir = bin_dir();
    for bin in ["secretsync-operator", "kubectl-secretsync"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} is not built in {}: run `cargo build --bin secretsync-operator --bin \
             kubectl-secretsync` (or `cargo test --workspace`) first",
            dir.display()
        );
    }
    dir
}

/// A user's outcome, polled until `probe` returns `Ok` or [`DEADLINE`] passes (then the
/// test fails with the last answer).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: not within {DEADLINE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A short random suffix, so that journeys on a shared cluster never collide.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(20)) & 0xff_ffff
    )
}

/// One journey: its cluster, its namespaces, its operator, its kubectl.
pub struct Journey {
    cluster: Cluster,
    /// The journey's main namespace.
    pub ns: String,
    /// Unique per journey run: a suffix for cluster-scoped names.
    pub run: String,
    namespaces: Vec<String>,
    cluster_objects: Vec<String>,
    kubectl: PathBuf,
    path: std::ffi::OsString,
    operator: Option<OperatorProcess>,
    dir: tempfile::TempDir,
}

impl Journey {
    /// Starts a journey in a fresh namespace `<name>-<run>` with the CRDs applied from
    /// `crds/`; `None` when the tools are missing and the developer opted out of tests
    /// that need them.
    pub async fn start(name: &str) -> Option<Journey> {
        let kubectl = require_tool("kubectl")?;
        let bins = built_binaries();
        let cluster = match std::env::var("E2E_CLUSTER").as_deref() {
            Ok(mode @ ("existing" | "real")) => Cluster::Existing {
                kubeconfig: std::env::var_os("KUBECONFIG")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| panic!("E2E_CLUSTER={mode} needs KUBECONFIG")),
                enforces_rbac: mode == "real",
            },
            Ok("sandbox") | Err(_) => Cluster::Sandbox(
                Sandbox::builder()
                    .ready_delay(Duration::from_millis(100))
                    .start()
                    .await
                    .expect("start the sandbox"),
            ),
            Ok(other) => {
                panic!("E2E_CLUSTER={other}: expected `sandbox`, `existing` or `real`")
            }
        };
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(bins.clone()).chain(std::env::split_paths(&inherited)),
        )
        .expect("a PATH");
        let run = run_id();
        let mut j = Journey {
            cluster,
            ns: format!("{name}-{run}"),
            run,
            namespaces: Vec::new(),
            cluster_objects: Vec::new(),
            kubectl,
            path,
            operator: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        let ns = j.ns.clone();
        j.namespace(&ns, &[]).await;
        let crds = repo_root().join("crds");
        j.ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()])
            .await;
        j.wait_established(&[
            "secretsyncs.secretsync.io",
            "secretstores.secretsync.io",
            "clustersecretstores.secretsync.io",
            "clustersecretsyncs.secretsync.io",
        ])
        .await;
        Some(j)
    }

    /// Waits until each CRD (by name) is Established. A real server sets a new CRD's
    /// conditions a moment after creating it, and until then `kubectl wait` fails at once
    /// ("accessor error") instead of waiting.
    pub async fn wait_established(&self, crds: &[&str]) {
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        let names: Vec<String> = crds.iter().map(|crd| format!("crd/{crd}")).collect();
        args.extend(names.iter().map(String::as_str));
        eventually("the CRDs Established", || async {
            let out = self.kubectl(&args).await;
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .await;
    }

    pub fn kubeconfig(&self) -> &Path {
        match &self.cluster {
            Cluster::Sandbox(s) => s.kubeconfig_path(),
            Cluster::Existing { kubeconfig, .. } => kubeconfig,
        }
    }

    /// Whether the server refuses what RBAC does not grant; when not, prints that `what` is
    /// skipped (the sandbox stores Roles and bindings but authorizes every request).
    pub fn enforces_rbac(&self, what: &str) -> bool {
        let enforced = matches!(
            self.cluster,
            Cluster::Existing {
                enforces_rbac: true,
                ..
            }
        );
        if !enforced {
            eprintln!(
                "SKIPPED on a cluster that does not enforce RBAC (E2E_CLUSTER=real only): {what}"
            );
        }
        enforced
    }

    /// The sandbox, for checks only it can make (request counts); on another cluster prints
    /// that `what` is skipped and returns `None`.
    pub fn sandbox(&self, what: &str) -> Option<&Sandbox> {
        match &self.cluster {
            Cluster::Sandbox(s) => Some(s),
            Cluster::Existing { .. } => {
                eprintln!("SKIPPED on an existing cluster (sandbox-only): {what}");
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates namespace `name` with `labels`; it is deleted when the journey ends.
    pub async fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.ok(&["create", "namespace", name]).await;
        self.namespaces.push(name.to_owned());
        for (k, v) in labels {
            self.ok(&["label", "namespace", name, &format!("{k}={v}")])
                .await;
        }
    }

    /// Deletes cluster-scoped `kind/name` when the journey ends.
    pub fn cleanup(&mut self, kind_name: &str) {
        self.cluster_objects.push(kind_name.to_owned());
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("PATH", &self.path)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    /// `kubectl ARGS`, echoed with its output (shown when a test fails).
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let out = tokio::time::timeout(Duration::from_secs(180), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {} did not finish", args.join(" ")))
            .expect("kubectl runs");
        eprintln!(
            "$ kubectl {}\n[exit {:?}]\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get ARGS -o json` in the journey's namespace, or `Err` with kubectl's
    /// message (for polling).
    pub async fn get(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["get", "-n", &self.ns, "-o", "json"];
        all.extend_from_slice(args);
        let out = self
            .command(&all)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Writes `yaml` to a file and `kubectl apply -f`s it in namespace `ns`.
    pub async fn apply(&self, ns: &str, file: &str, yaml: &str) {
        let path = self.dir.path().join(file);
        std::fs::write(&path, yaml).expect("write the manifest");
        self.ok(&["apply", "-n", ns, "-f", path.to_str().unwrap()])
            .await;
    }

    /// Starts the operator binary for `namespaces`, as the kubeconfig's user or with
    /// `kubeconfig` instead.
    pub fn start_operator(&mut self, namespaces: &[&str], kubeconfig: Option<PathBuf>) {
        let kubeconfig = kubeconfig.unwrap_or_else(|| self.kubeconfig().to_owned());
        let args = [
            "--namespace".to_owned(),
            namespaces.join(","),
            "--log-level".to_owned(),
            "info".to_owned(),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
            format!("--health-bind-address=127.0.0.1:{}", free_port()),
        ];
        self.start_operator_with(&kubeconfig, &args, &[]);
    }

    /// Starts the operator binary with exactly `args` and `env`, as `kubeconfig`'s user (a
    /// Deployment's container, run on loopback).
    pub fn start_operator_with(
        &mut self,
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) {
        let log = self.operator_log_path();
        self.operator = Some(OperatorProcess::start(kubeconfig, args, env, &log));
    }

    /// Where the operator writes its log (stdout and stderr).
    pub fn operator_log_path(&self) -> PathBuf {
        self.dir.path().join("operator.log")
    }

    /// SIGKILL: the operator gets no chance to finish anything.
    pub fn kill_operator(&mut self) {
        if let Some(mut o) = self.operator.take() {
            o.child.stop();
        }
    }

    /// The operator's log so far (printed when a journey fails).
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.operator_log_path()).unwrap_or_default()
    }

    // ---- What users look at -----------------------------------------------------------

    /// The SecretSync's condition `type`: (status, reason).
    pub async fn condition(
        &self,
        ns: &str,
        sync: &str,
        type_: &str,
    ) -> Result<(String, String), String> {
        let s = self.get_in(ns, &["secretsync", sync]).await?;
        s.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_owned(),
                    c["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .ok_or_else(|| format!("no {type_} condition: {}", s["status"]))
    }

    pub async fn get_in(&self, ns: &str, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["get", "-n", ns, "-o", "json"];
        all.extend_from_slice(args);
        let out = self
            .command(&all)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits until SecretSync `sync` is Ready with `active` as its active version and every
    /// rollout target Complete at it.
    pub async fn wait_active(&self, sync: &str, active: i64) -> Value {
        eventually(
            &format!("{sync} Ready with v{active} rolled out"),
            || async {
                let s = self.get(&["secretsync", sync]).await?;
                let ready = s
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                let rolled = s
                    .pointer("/status/rollout/targets")
                    .and_then(Value::as_array)
                    .is_none_or(|ts| {
                        ts.iter()
                            .all(|t| t["state"] == "Complete" && t["version"] == active)
                    });
                (ready && rolled && s.pointer("/status/activeVersion") == Some(&active.into()))
                    .then_some(s.clone())
                    .ok_or_else(|| s["status"].to_string())
            },
        )
        .await
    }

    /// The decoded data of Secret `name`.
    pub async fn secret_data(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let s = self.get(&["secret", name]).await?;
        let mut data: Vec<(String, String)> = s["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .unwrap_or_default();
                (k.clone(), String::from_utf8_lossy(&bytes).into_owned())
            })
            .collect();
        data.sort();
        Ok(data)
    }

    /// Names of the versioned Secrets of SecretSync `sync`, sorted.
    pub async fn versions(&self, sync: &str) -> Vec<String> {
        let list = self
            .get(&["secrets", "-l", &format!("secretsync.io/sync={sync}")])
            .await
            .expect("list Secrets");
        let mut names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Waits until exactly `replicas` live Pods labelled `selector` are Ready and every
    /// Secret they reference (env, envFrom, volumes) is `secret`.
    pub async fn wait_pods_on(&self, selector: &str, replicas: usize, secret: &str) {
        eventually(
            &format!("{replicas} Ready Pods ({selector}) on {secret}"),
            || async {
                let list = self.get(&["pods", "-l", selector]).await?;
                let pods: Vec<&Value> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                    .collect();
                let seen: Vec<(bool, Vec<String>)> = pods
                    .iter()
                    .map(|p| (pod_ready(p), pod_secret_refs(p)))
                    .collect();
                let good = seen.len() == replicas
                    && seen.iter().all(|(ready, refs)| {
                        *ready && refs.len() == 3 && refs.iter().all(|r| r == secret)
                    });
                good.then_some(()).ok_or_else(|| format!("{seen:?}"))
            },
        )
        .await;
    }

    /// Waits until the events about `name` in the journey's namespace include each of
    /// `reasons` (the operator queues events, so they may trail the status they go with).
    pub async fn wait_events(&self, name: &str, reasons: &[&str]) {
        eventually(&format!("events {reasons:?} about {name}"), || async {
            let list = self
                .get(&[
                    "events",
                    "--field-selector",
                    &format!("involvedObject.name={name}"),
                ])
                .await?;
            let have: Vec<&str> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["reason"].as_str())
                .collect();
            match reasons.iter().all(|r| have.contains(r)) {
                true => Ok(()),
                false => Err(format!("{have:?}")),
            }
        })
        .await
    }
}

pub fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Every Secret name a Pod references: env `secretKeyRef`s, `envFrom` and volumes.
pub fn pod_secret_refs(p: &Value) -> Vec<String> {
    let mut refs = Vec::new();
    let spec = &p["spec"];
    for c in spec["containers"].as_array().into_iter().flatten() {
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e
                .pointer("/valueFrom/secretKeyRef/name")
                .and_then(Value::as_str)
            {
                refs.push(n.to_owned());
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = e.pointer("/secretRef/name").and_then(Value::as_str) {
                refs.push(n.to_owned());
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v.pointer("/secret/secretName").and_then(Value::as_str) {
            refs.push(n.to_owned());
        }
    }
    refs
}

impl Drop for Journey {
    /// A shared cluster is left as it was found: the journey's namespaces and cluster-scoped
    /// objects go (without waiting). The sandbox just stops.
    fn drop(&mut self) {
        self.kill_operator();
        if std::thread::panicking() {
            eprintln!("--- secretsync-operator log\n{}", self.operator_log());
        }
        if matches!(self.cluster, Cluster::Sandbox(_)) {
            return;
        }
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        let names: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| format!("namespace/{n}"))
            .chain(self.cluster_objects.iter().cloned())
            .collect();
        args.extend(names.iter().map(String::as_str));
        let _ = Command::new(&self.kubectl)
            .args(&args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The `secretsync-operator` binary on loopback, its HTTP endpoints on free ports. Killed
/// when dropped.
struct OperatorProcess {
    child: ChildGuard,
}

impl OperatorProcess {
    fn start(kubeconfig: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the operator log");
        let mut cmd = Command::new(built_binaries().join("secretsync-operator"));
        cmd.env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::from(out.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(out));
        let child = ChildGuard::spawn("secretsync-operator", &mut cmd).expect("start the operator");
        Self { child }
    }
}
