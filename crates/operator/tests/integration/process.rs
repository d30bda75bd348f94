//! The real `secretsync-operator` binary as a child process against the sandbox, with its
//! HTTP endpoints on free loopback ports. Killed when dropped.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

use secretsync_testkit::{ChildGuard, free_port, http_get};

use crate::common::{Cluster, DEADLINE};

/// Lease timings short enough for a test: duration 2 s, renew deadline 1 s, retry 250 ms.
pub const LEASE_DURATION: Duration = Duration::from_secs(2);
pub const RETRY_PERIOD: Duration = Duration::from_millis(250);
pub const LEASE_NAME: &str = "secretsync-test";

pub struct OperatorProcess {
    pub name: String,
    child: ChildGuard,
    metrics_port: u16,
    health_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts the binary as pod `name`, electing on [`LEASE_NAME`] in `default` when
    /// `elect`.
    pub fn start(cluster: &Cluster, name: &str, elect: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).unwrap();
        let (metrics_port, health_port) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretsync-operator"));
        cmd.env("KUBECONFIG", cluster.kubeconfig_path())
            .env("POD_NAME", name)
            .env_remove("POD_NAMESPACE")
            .env_remove("RUST_LOG")
            .args(["--log-level", "info,secretsync_operator=debug"])
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(["--health-bind-address", &format!("127.0.0.1:{health_port}")])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        if elect {
            cmd.args(["--leader-elect", "--lease-name", LEASE_NAME])
                .args(["--lease-namespace", "default"])
                .args(["--lease-duration-seconds", "2"])
                .args(["--lease-renew-deadline-seconds", "1"])
                .args(["--lease-retry-period-seconds", "0.25"]);
        }
        let child = ChildGuard::spawn(name, &mut cmd).expect("start secretsync-operator");
        Self {
            name: name.to_owned(),
            child,
            metrics_port,
            health_port,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to release anything.
    pub fn kill(&mut self) {
        self.child.stop();
    }

    /// SIGTERM, as the kubelet sends it.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still running after {within:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics_port, "/metrics")
            .await
            .unwrap_or_else(|| panic!("{} serves /metrics; log:\n{}", self.name, self.log()));
        assert_eq!(status, 200);
        body
    }

    /// `/metrics`, or `None` while nothing answers yet.
    pub async fn try_metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics")
            .await
            .and_then(|(status, body)| (status == 200).then_some(body))
    }

    /// `/readyz`'s status code, or `None` while nothing listens yet.
    pub async fn readyz(&self) -> Option<u16> {
        http_get(self.health_port, "/readyz").await.map(|(s, _)| s)
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_alive(&self) {
        self.wait_status("/healthz", 200).await;
    }

    /// Waits until `/readyz` answers `code`.
    pub async fn wait_readyz(&self, code: u16) {
        self.wait_status("/readyz", code).await;
    }

    async fn wait_status(&self, path: &str, code: u16) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while http_get(self.health_port, path).await.map(|r| r.0) != Some(code) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never answered {path} with {code}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of one sample line (`name{labels}` exactly as exposed), 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The current holder of the test Lease, if any.
pub async fn lease_holder(client: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(LEASE_NAME)
        .await
        .unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Polls until the Lease is held by one of `candidates`; returns the holder.
pub async fn wait_holder(client: &Client, candidates: &[&str], within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(holder) = lease_holder(client).await
            && candidates.contains(&holder.as_str())
        {
            return holder;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Lease holder among {candidates:?} within {within:?}; now {:?}",
            lease_holder(client).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
