//! A throwaway PostgreSQL server per test, for OpenBao's database secrets engine (issue 25).
//!
//! ```no_run
//! # async fn f() {
//! use secretsync_testkit::postgres::Postgres;
//!
//! let pg = Postgres::start(); // panics when PostgreSQL's server binaries are missing
//! pg.connect(pg.admin_user(), pg.admin_password()).await.unwrap();
//! assert!(pg.role_exists("secretsync_admin").await);
//! # }
//! ```
//!
//! The server is Debian's (`/usr/lib/postgresql/<newest>/bin`, installed by
//! `scripts/setup.sh`), initialised into a fresh temporary directory with one superuser,
//! [`ADMIN_USER`], whose password is random. It listens on 127.0.0.1 only, on a free port,
//! with password authentication (`scram-sha-256`) for every connection, and its unix socket
//! in the temporary directory. Its output goes to a log file there ([`Postgres::log_path`]).
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the directory is handed to
//! the unprivileged `postgres` system user (Debian's package makes it; when it is missing a
//! system user `secretsync-postgres` is created) and `initdb`, `postgres` and `pg_ctl` run as
//! that user through `setpriv`, which execs the server itself, so the child this handle
//! holds is the postmaster. Dropping the handle stops the server (`pg_ctl stop -m
//! immediate`, then SIGKILL if it is still there) and removes the directory.
//!
//! The queries are `async` (the integration tests run the operator on the test's runtime,
//! which a blocking connect would stall); each has a `_blocking` twin that runs it on a
//! thread of its own, callable with or without a runtime.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, TempDir, free_port, random_u64};

/// The superuser `initdb` creates, which OpenBao's database engine connects as.
pub const ADMIN_USER: &str = "secretsync_admin";

/// How long the server may take to accept connections after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The system user that runs the server when the tests run as root, if `postgres` is missing.
const FALLBACK_USER: &str = "secretsync-postgres";

/// A running PostgreSQL server, stopped and deleted when dropped.
#[derive(Debug)]
pub struct Postgres {
    // Dropped first (after `Drop::drop` stopped it): the server is gone before its
    // directory is removed.
    child: Option<ChildGuard>,
    bin_dir: PathBuf,
    /// `(uid, gid)` the server runs as when the tests run as root; `None`: as ourselves.
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    dir: TempDir,
}

impl Postgres {
    /// Initialises and starts a server, and waits until it accepts the admin's connection.
    ///
    /// Panics when PostgreSQL's server binaries are not installed (with the set-up
    /// command: a test needing a database fails rather than skips), or when the server does
    /// not come up (with its log).
    pub fn start() -> Postgres {
        let bin_dir = server_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries (initdb, postgres, pg_ctl) are not installed: none \
                 under /usr/lib/postgresql/*/bin, and no initdb on PATH; run `scripts/setup.sh` \
                 (it installs Debian's `postgresql` package) or set SECRETSYNC_PG_BIN_DIR"
            )
        });
        let run_as = (effective_uid() == 0).then(unprivileged_user);
        let pg = Postgres {
            child: None,
            bin_dir,
            run_as,
            port: free_port(),
            password: format!("{:016x}{:016x}", random_u64(), random_u64()),
            dir: TempDir::new("postgres"),
        };
        pg.init();
        pg.spawn()
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name, [`ADMIN_USER`].
    pub fn admin_user(&self) -> &str {
        ADMIN_USER
    }

    /// The superuser's (random) password.
    pub fn admin_password(&self) -> &str {
        &self.password
    }

    /// The connection URL in the template form OpenBao's database engine takes
    /// (`connection_url`), with `{{username}}` and `{{password}}` left for it to fill:
    /// `postgresql://{{username}}:{{password}}@127.0.0.1:PORT/postgres?sslmode=disable`.
    pub fn admin_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server's output (and `initdb`'s) goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildGuard::id)
    }

    /// Opens a real connection to the `postgres` database over TCP as `user` and runs
    /// `SELECT 1`; the error's text when either fails (such as `password authentication
    /// failed for user "…"`).
    pub async fn connect(&self, user: &str, password: &str) -> Result<(), String> {
        let client = self.client(user, password).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| error_text(&e))
    }

    /// Opens a connection as `user` and keeps it: a [`Session`], to see a revocation end
    /// the sessions of the user it drops. Its connection runs on the caller's runtime.
    pub async fn session(&self, user: &str, password: &str) -> Result<Session, String> {
        let client = self.client(user, password).await?;
        Ok(Session { client })
    }

    /// [`Postgres::connect`] on a thread of its own.
    pub fn connect_blocking(&self, user: &str, password: &str) -> Result<(), String> {
        blocking(self.connect(user, password))
    }

    /// Every role's name (`SELECT rolname FROM pg_roles`), sorted. Panics when the admin
    /// cannot query.
    pub async fn roles(&self) -> Vec<String> {
        let client = self.admin().await;
        let rows = client
            .query("SELECT rolname FROM pg_roles ORDER BY rolname", &[])
            .await
            .unwrap_or_else(|e| panic!("list pg_roles: {}", error_text(&e)));
        rows.iter().map(|row| row.get::<_, String>(0)).collect()
    }

    /// [`Postgres::roles`] on a thread of its own.
    pub fn roles_blocking(&self) -> Vec<String> {
        blocking(self.roles())
    }

    /// Whether a role named `name` exists. Panics when the admin cannot query.
    pub async fn role_exists(&self, name: &str) -> bool {
        let client = self.admin().await;
        let rows = client
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .unwrap_or_else(|e| panic!("look up role {name:?}: {}", error_text(&e)));
        !rows.is_empty()
    }

    /// [`Postgres::role_exists`] on a thread of its own.
    pub fn role_exists_blocking(&self, name: &str) -> bool {
        blocking(self.role_exists(name))
    }

    /// Runs `sql` (one or more statements) as the superuser; the error's text on failure.
    pub async fn admin_execute(&self, sql: &str) -> Result<(), String> {
        let client = self.client(ADMIN_USER, &self.password).await?;
        client.batch_execute(sql).await.map_err(|e| error_text(&e))
    }

    /// [`Postgres::admin_execute`] on a thread of its own.
    pub fn admin_execute_blocking(&self, sql: &str) -> Result<(), String> {
        blocking(self.admin_execute(sql))
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.client(ADMIN_USER, &self.password)
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL as {ADMIN_USER}: {e}"))
    }

    /// A client connected to the `postgres` database as `user`. Its connection runs on a
    /// task of the caller's runtime and ends when the client is dropped.
    async fn client(&self, user: &str, password: &str) -> Result<tokio_postgres::Client, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname("postgres")
            .application_name("secretsync-testkit")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| error_text(&e))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A command running `program` of the server's binaries, as the unprivileged user when
    /// the tests run as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            // setpriv execs the program: no process stays between us and it.
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.env_remove("PGDATA")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    /// `initdb` into `data/` with the admin and its password, password authentication only.
    fn init(&self) {
        let pwfile = self.dir.path().join("admin.pw");
        std::fs::write(&pwfile, &self.password)
            .unwrap_or_else(|e| panic!("write {}: {e}", pwfile.display()));
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", pwfile.display()));
        if let Some((uid, gid)) = self.run_as {
            // The server's user makes its data directory and socket here, and reads the
            // password file.
            for path in [self.dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to {uid}:{gid}: {e}", path.display()));
            }
        }
        let out = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg(format!("--username={ADMIN_USER}"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--auth=scram-sha-256")
            .arg("--encoding=UTF8")
            .arg("--no-locale")
            .arg("--no-sync")
            .output()
            .unwrap_or_else(|e| panic!("run initdb: {e}"));
        let _ = std::fs::remove_file(&pwfile);
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::write(self.log_path(), &output);
        assert!(
            out.status.success(),
            "initdb into {} failed ({}){}:\n{output}",
            self.data_dir().display(),
            out.status,
            match self.run_as {
                Some((uid, _)) => format!(
                    " as uid {uid} (every directory above {} must let it through)",
                    self.dir.path().display()
                ),
                None => String::new(),
            }
        );
    }

    /// Spawns the postmaster and waits until the admin can connect.
    fn spawn(mut self) -> Postgres {
        let (log, log_err) = crate::append_log(&self.log_path());
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .arg("-c")
            .arg("password_encryption=scram-sha-256")
            // A throwaway database: durability only costs time.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(log)
            .stderr(log_err);
        let mut child = ChildGuard::spawn("postgres", &mut cmd)
            .unwrap_or_else(|e| panic!("spawn postgres from {}: {e}", self.bin_dir.display()));
        let what = format!("postgres on 127.0.0.1:{}", self.port);
        crate::wait_until_answers(&mut child, &what, START_TIMEOUT, &self.log_path(), || {
            self.connect_blocking(ADMIN_USER, &self.password).is_ok()
        });
        self.child = Some(child);
        self
    }
}

/// An open connection to the test server ([`Postgres::session`]), closed when dropped.
#[derive(Debug)]
pub struct Session {
    client: tokio_postgres::Client,
}

impl Session {
    /// Runs `SELECT 1` on this connection; the error's text when it fails (after the server
    /// ended the session: `connection closed`).
    pub async fn select_1(&self) -> Result<(), String> {
        self.client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| error_text(&e))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // An immediate shutdown: the postmaster stops its backends and exits; `-w` waits
        // until it has. Whatever is left is killed.
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        child.stop();
    }
}

/// Runs `fut` to completion on a current-thread runtime on a thread of its own, so a caller
/// with or without a runtime can wait for it.
fn blocking<T: Send>(fut: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime")
                    .block_on(fut)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The error's text with its cause (the server's message for a database error).
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// The directory of PostgreSQL's server binaries: `$SECRETSYNC_PG_BIN_DIR`, else the
/// newest `/usr/lib/postgresql/<version>/bin` with an `initdb`, else the directory an
/// `initdb` on `PATH` links to (Debian puts only symlinks in `/usr/local/bin` or none).
fn server_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SECRETSYNC_PG_BIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; `None` for a name that is not a version.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The effective uid of this process (`id -u`).
fn effective_uid() -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .unwrap_or_else(|e| panic!("run `id -u`: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`id -u` printed no uid ({e})"))
}

/// `(uid, gid)` of the unprivileged user the server runs as under root: `postgres` (made by
/// Debian's package), else a system user of our own, created when missing.
fn unprivileged_user() -> (u32, u32) {
    if let Some(ids) = user_ids("postgres") {
        return ids;
    }
    if user_ids(FALLBACK_USER).is_none() {
        // A concurrent test may create it first; the look-up after says whether it exists.
        let _ = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", FALLBACK_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    user_ids(FALLBACK_USER).unwrap_or_else(|| {
        panic!(
            "PostgreSQL refuses to run as root, and there is no `postgres` user and \
             `useradd --system {FALLBACK_USER}` did not make one"
        )
    })
}

/// `(uid, gid)` of the user `name`, or `None` when there is no such user.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, name])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("common"), None);
        assert!(version_key("16") > version_key("9.6"));
    }
}
