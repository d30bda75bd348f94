//! Helpers shared by secretsync's integration tests.
//!
//! External tools (real `kubectl`, `bao`, `moto_server`) are installed by `scripts/setup.sh`
//! into the git-ignored `.venv/` at the repository root. Tests find them here; when a tool is
//! missing they fail with a message naming the set-up command, unless the developer opted out
//! of tool-backed tests (`SECRETSYNC_SKIP_TOOLS=1`), in which case they report a skip.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

pub mod akeyless_double;
pub mod apiproxy;
pub mod azure_double;
pub mod conjur_double;
pub mod eso;
pub mod faults;
pub mod gate;
pub mod gcp_double;
pub mod install;
pub mod leak;
pub mod moto;
pub mod openbao;
pub mod openbao_db;
pub mod pki;
pub mod postgres;
mod serving;
pub mod tls_server;

/// A server's stdout and stderr, both appended to the log file at `path` (a restarted
/// server keeps adding to the same log).
pub(crate) fn append_log(path: &Path) -> (std::fs::File, std::fs::File) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let log_err = log.try_clone().expect("clone the log file handle");
    (log, log_err)
}

/// Polls `answers` until the server `child` (named `what` in messages) answers, panicking
/// with its log at `log_path` when it exits first or does not answer within `timeout`.
pub(crate) fn wait_until_answers(
    child: &mut ChildGuard,
    what: &str,
    timeout: std::time::Duration,
    log_path: &Path,
    mut answers: impl FnMut() -> bool,
) {
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + timeout;
    while !answers() {
        if let Some(status) = child.try_wait() {
            panic!(
                "{what} exited with {status} before answering; log:\n{}",
                log()
            );
        }
        if std::time::Instant::now() > deadline {
            child.stop();
            panic!("{what} did not answer within {timeout:?}; log:\n{}", log());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Root of the repository (the workspace directory).
///
/// Found from the running test's `CARGO_MANIFEST_DIR` (set by cargo at run time), not the
/// one baked in when this crate was compiled: two checkouts sharing a `CARGO_TARGET_DIR`
/// would otherwise read each other's files.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// Where an external tool is: `$SECRETSYNC_<TOOL>` if set, else `.venv/bin/<tool>`, else `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let var = format!(
        "SECRETSYNC_{}",
        name.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    if let Some(p) = std::env::var_os(&var) {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The tool's path, or `None` when the developer opted out of tool-backed tests.
///
/// Panics with the set-up command when the tool is missing and tests were not opted out:
/// a missing tool must never turn into a silently passing test.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(p) => Some(p),
        None if std::env::var_os("SECRETSYNC_SKIP_TOOLS").is_some() => {
            eprintln!("SKIPPED: `{name}` not installed and SECRETSYNC_SKIP_TOOLS is set");
            None
        }
        None => panic!(
            "`{name}` is not installed; run `scripts/setup.sh` (installs it into .venv/) \
             or set SECRETSYNC_SKIP_TOOLS=1 to skip tests that need it"
        ),
    }
}

/// A minimal HTTP/1.1 GET of a loopback endpoint (the operator's metrics and health
/// probes): its status code and body, or `None` if the connection fails.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A free TCP port on 127.0.0.1. The port is released before returning, so a child process
/// can bind it; the tiny race with other processes is acceptable for tests.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A child process that is killed (and reaped) when dropped, so a failing test never leaves
/// a server running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> std::io::Result<Self> {
        let child = cmd.spawn()?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited (without blocking); `None` while it runs
    /// or after [`ChildGuard::stop`].
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process now (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn random_u64() -> u64 {
    // RandomState is seeded from the OS per instance: enough randomness for a test token.
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "secretsync-{prefix}-{}-{:016x}",
            std::process::id(),
            random_u64()
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
