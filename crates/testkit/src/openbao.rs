//! A throwaway OpenBao dev server per test.
//!
//! ```no_run
//! use secretsync_testkit::openbao::OpenBao;
//!
//! let Some(bao) = OpenBao::start() else { return }; // SECRETSYNC_SKIP_TOOLS opt-out
//! bao.kv_put("secret", "app/db", &[("password", "hunter2")]);
//! let addr = bao.addr(); // http://127.0.0.1:PORT, root token: bao.root_token()
//! ```
//!
//! Dev mode keeps everything in memory: `secret/` is a KV v2 mount, the root token is the
//! random one [`OpenBao::root_token`] returns, and a restart ([`OpenBao::start_again`])
//! comes back empty, so callers re-seed. The server's output goes to a log file in the
//! handle's temporary directory (printed when start-up fails), never to the test output.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{ChildGuard, TempDir, free_port, random_u64, require_tool};

/// How long a dev server may take to answer `/v1/sys/health` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running OpenBao dev server, killed when dropped.
#[derive(Debug)]
pub struct OpenBao {
    // Dropped first: the server stops before its directory is removed.
    child: Option<ChildGuard>,
    bin: PathBuf,
    port: u16,
    root_token: String,
    /// Serving HTTPS with a generated CA (`-dev-tls`).
    tls: bool,
    /// Extra HTTPS listeners, each on its own port.
    listeners: Vec<(u16, TlsListener)>,
    /// Where a `socket` audit device writes, if one is configured.
    socket_audit: Option<String>,
    dir: TempDir,
}

/// An HTTPS listener beside the dev one, with a certificate of the caller's (see
/// [`crate::pki::TestPki`]).
#[derive(Clone, Debug)]
pub struct TlsListener {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set: clients must present a certificate this CA signed (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

impl OpenBao {
    /// Starts a dev server on a free port with a random root token and waits until it
    /// answers health checks.
    ///
    /// `None` when `bao` is missing and the developer set `SECRETSYNC_SKIP_TOOLS` (the test
    /// should return early); panics when `bao` is missing otherwise, or when the server
    /// does not come up (with its log).
    pub fn start() -> Option<OpenBao> {
        Self::start_with(false)
    }

    /// Like [`OpenBao::start`], but serving HTTPS (`-dev-tls`) with a certificate from a
    /// generated CA, whose PEM [`OpenBao::ca_pem`] returns. The CLI helpers trust it.
    pub fn start_tls() -> Option<OpenBao> {
        Self::start_with(true)
    }

    /// Like [`OpenBao::start`] (the dev listener serves plain HTTP, for the CLI helpers),
    /// plus these HTTPS listeners; [`OpenBao::listener_addr`] gives their addresses.
    pub fn start_with_listeners(listeners: Vec<TlsListener>) -> Option<OpenBao> {
        Self::start_with_options(false, listeners)
    }

    /// Like [`OpenBao::start`], plus a `socket` audit device writing each entry to `address`
    /// over TCP (OpenBao 2 takes audit devices from its configuration only), with
    /// `skip_test` as docs/instant-sync.md says: nothing need listen there when it starts.
    pub fn start_with_socket_audit(address: &str) -> Option<OpenBao> {
        let mut bao = Self::unstarted(false, Vec::new())?;
        bao.socket_audit = Some(address.to_owned());
        bao.spawn();
        Some(bao)
    }

    fn start_with(tls: bool) -> Option<OpenBao> {
        Self::start_with_options(tls, Vec::new())
    }

    fn start_with_options(tls: bool, listeners: Vec<TlsListener>) -> Option<OpenBao> {
        let mut bao = Self::unstarted(tls, listeners)?;
        bao.spawn();
        Some(bao)
    }

    fn unstarted(tls: bool, listeners: Vec<TlsListener>) -> Option<OpenBao> {
        let bin = require_tool("bao")?;
        let bao = OpenBao {
            child: None,
            bin,
            port: free_port(),
            root_token: format!("root-{:016x}{:016x}", random_u64(), random_u64()),
            tls,
            listeners: listeners.into_iter().map(|l| (free_port(), l)).collect(),
            socket_audit: None,
            dir: TempDir::new("openbao"),
        };
        Some(bao)
    }

    /// The server's file audit log: one JSON line per request and per response.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// How many responses the server gave to requests under `path_prefix` (such as
    /// `secret/data/app/`), from its audit log.
    pub fn audited_responses(&self, path_prefix: &str) -> usize {
        let needle = format!("\"path\":\"{path_prefix}");
        std::fs::read_to_string(self.audit_log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"type\":\"response\"") && l.contains(&needle))
            .count()
    }

    /// `http://127.0.0.1:PORT` (`https://` after [`OpenBao::start_tls`]), the address
    /// clients use (`BAO_ADDR`).
    pub fn addr(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The PEM of the CA that signed the server's certificate (`None` without TLS). A
    /// restart generates a new one.
    pub fn ca_pem(&self) -> Option<String> {
        self.tls.then(|| {
            std::fs::read_to_string(self.ca_path())
                .unwrap_or_else(|e| panic!("read {}: {e}", self.ca_path().display()))
        })
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls").join("vault-ca.pem")
    }

    /// `https://127.0.0.1:PORT` of the `index`th listener given to
    /// [`OpenBao::start_with_listeners`].
    pub fn listener_addr(&self, index: usize) -> String {
        format!("https://127.0.0.1:{}", self.listeners[index].0)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dev server's root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Where the server's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs the `bao` CLI against this server as root and returns its output, whatever
    /// the exit status.
    pub fn bao(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", self.bin.display()))
    }

    /// Runs the `bao` CLI like [`OpenBao::bao`], panics (with its stderr) unless it
    /// succeeds, and returns its stdout, trimmed.
    pub fn bao_ok(&self, args: &[&str]) -> String {
        let out = self.bao(args);
        assert!(
            out.status.success(),
            "bao {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a secret with the given string fields at `path` of the KV mount `mount`
    /// (v1 or v2; on v2 this creates a new version). Panics when the CLI fails.
    pub fn kv_put(&self, mount: &str, path: &str, fields: &[(&str, &str)]) {
        let mount_arg = format!("-mount={mount}");
        let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["kv", "put", mount_arg.as_str(), path];
        args.extend(pairs.iter().map(String::as_str));
        self.bao_ok(&args);
    }

    /// Mounts a PKI engine at `mount` with a generated root CA and a role `role` that
    /// issues certificates for `domain` and its subdomains (and IP SANs), up to an hour,
    /// each with a lease (`generate_lease=true`), so revoking the lease revokes the
    /// certificate.
    pub fn enable_pki(&self, mount: &str, role: &str, domain: &str) {
        let path = format!("-path={mount}");
        self.bao_ok(&["secrets", "enable", &path, "pki"]);
        self.bao_ok(&["secrets", "tune", "-max-lease-ttl=8760h", mount]);
        self.bao_ok(&[
            "write",
            "-field=serial_number",
            &format!("{mount}/root/generate/internal"),
            "common_name=secretsync test root",
            "ttl=8760h",
        ]);
        self.bao_ok(&[
            "write",
            &format!("{mount}/roles/{role}"),
            &format!("allowed_domains={domain}"),
            "allow_subdomains=true",
            "allow_bare_domains=true",
            "allow_ip_sans=true",
            "generate_lease=true",
            "max_ttl=1h",
        ]);
    }

    /// The ids of the leases OpenBao still holds under `prefix` (such as `pki/issue/app/`),
    /// each as the full lease id (`pki/issue/app/<id>`).
    pub fn leases(&self, prefix: &str) -> Vec<String> {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let path = format!("sys/leases/lookup/{prefix}");
        let out = self.bao(&["list", "-format=json", &path]);
        // No lease left: `bao list` prints `{}` (or nothing, with "No value found").
        if !out.status.success() && out.stdout.is_empty() {
            return Vec::new();
        }
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bao list {path}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        match listed {
            serde_json::Value::Array(ids) => ids
                .iter()
                .map(|id| format!("{prefix}{}", id.as_str().expect("lease ids are strings")))
                .collect(),
            serde_json::Value::Object(empty) if empty.is_empty() => Vec::new(),
            other => panic!("bao list {path}: unexpected {other}"),
        }
    }

    /// When OpenBao revoked the certificate with `serial` (Unix seconds), or `None` while it
    /// is not revoked. Panics when the certificate is unknown.
    pub fn certificate_revoked_at(&self, mount: &str, serial: &str) -> Option<i64> {
        let out = self.bao_ok(&["read", "-format=json", &format!("{mount}/cert/{serial}")]);
        let read: serde_json::Value = serde_json::from_str(&out).expect("bao read prints JSON");
        read["data"]["revocation_time"].as_i64().filter(|t| *t > 0)
    }

    /// A `bao` command with the server's address and root token in its environment (both
    /// the `BAO_*` and the `VAULT_*` names), for callers that need more control.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("BAO_ADDR", self.addr())
            .env("BAO_TOKEN", &self.root_token)
            .env("VAULT_ADDR", self.addr())
            .env("VAULT_TOKEN", &self.root_token)
            // Keeps the CLI's token helper away from the developer's ~/.vault-token.
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        if self.tls {
            cmd.env("BAO_CACERT", self.ca_path())
                .env("VAULT_CACERT", self.ca_path());
        }
        cmd
    }

    /// Kills the server (SIGKILL), for outage tests. Requests then fail with
    /// "connection refused" until [`OpenBao::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }

    /// Starts a fresh dev server on the same port with the same root token (stopping the
    /// running one first, if any). Dev mode is in-memory: mounts, policies and secrets
    /// made since [`OpenBao::start`] are gone, so callers re-seed.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let (log, log_err) = crate::append_log(&self.log_path());
        // A file audit device, OpenBao's own record of every request it served (tests count
        // reads with it). OpenBao 2 enables audit devices only from configuration. Listeners
        // in the configuration are added to the dev one.
        let audit_config = self.dir.path().join("audit.hcl");
        let mut config = format!(
            "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
            self.audit_log_path().display().to_string()
        );
        if let Some(address) = &self.socket_audit {
            config.push_str(&format!(
                "audit \"socket\" \"to-socket\" {{\n  options {{\n    address = {address:?}\n    socket_type = \"tcp\"\n    skip_test = \"true\"\n  }}\n}}\n"
            ));
        }
        for (port, listener) in &self.listeners {
            config.push_str(&format!(
                "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_cert_file = {:?}\n  tls_key_file = {:?}\n",
                listener.cert_file.display().to_string(),
                listener.key_file.display().to_string(),
            ));
            if let Some(ca) = &listener.client_ca_file {
                config.push_str(&format!(
                    "  tls_require_and_verify_client_cert = true\n  tls_client_ca_file = {:?}\n",
                    ca.display().to_string()
                ));
            }
            config.push_str("}\n");
        }
        std::fs::write(&audit_config, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", audit_config.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg("-dev")
            .arg(format!("-config={}", audit_config.display()))
            .arg(format!("-dev-root-token-id={}", self.root_token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .arg("-dev-no-store-token")
            .env("HOME", self.dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if self.tls {
            let certs = self.dir.path().join("tls");
            // A restart makes a new CA; the old files must not pass for the new ones.
            let _ = std::fs::remove_dir_all(&certs);
            std::fs::create_dir_all(&certs)
                .unwrap_or_else(|e| panic!("create {}: {e}", certs.display()));
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        let mut child = ChildGuard::spawn("bao server -dev", &mut cmd)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let what = format!("bao server at {}/v1/sys/health", self.addr());
        crate::wait_until_answers(&mut child, &what, START_TIMEOUT, &self.log_path(), || {
            self.healthy(addr)
        });
        self.child = Some(child);
    }

    fn healthy(&self, addr: SocketAddr) -> bool {
        if !self.tls {
            return health_status(addr) == Some(200);
        }
        // Over TLS the CLI does the handshake: `bao status` exits 0 once unsealed.
        self.ca_path().is_file()
            && self
                .command(&["status"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }
}

/// The HTTP status of `GET /v1/sys/health`, or `None` when nothing answers yet. A bare
/// HTTP/1.0 request keeps the test kit free of an HTTP client dependency.
fn health_status(addr: SocketAddr) -> Option<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET /v1/sys/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.x NNN"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_seeds_stops_and_starts_again() {
        let Some(mut bao) = OpenBao::start() else {
            return;
        };
        assert!(bao.addr().starts_with("http://127.0.0.1:"));
        bao.kv_put("secret", "app/db", &[("password", "p4ss")]);
        let got = bao.bao_ok(&["kv", "get", "-mount=secret", "-field=password", "app/db"]);
        assert_eq!(got, "p4ss");

        bao.stop();
        assert!(!bao.is_running());
        assert_eq!(
            health_status(SocketAddr::from(([127, 0, 0, 1], bao.port()))),
            None
        );
        assert!(
            !bao.bao(&["kv", "get", "-mount=secret", "app/db"])
                .status
                .success()
        );

        bao.start_again();
        assert!(bao.is_running());
        // In-memory: the secret is gone, the root token still works.
        let out = bao.bao(&["kv", "get", "-mount=secret", "app/db"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("No value found"));
        bao.kv_put("secret", "app/db", &[("password", "again")]);
        let log = bao.log_path();
        drop(bao);
        assert!(!log.exists(), "the temporary directory is removed on drop");
    }

    #[test]
    fn serves_tls_with_a_generated_ca() {
        let Some(bao) = OpenBao::start_tls() else {
            return;
        };
        assert!(bao.addr().starts_with("https://127.0.0.1:"));
        assert!(bao.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
        bao.kv_put("secret", "app/db", &[("password", "p4ss")]);
    }
}
