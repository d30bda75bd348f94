//! OpenBao's database secrets engine against a test [`Postgres`] (issue 25): helpers on a
//! running [`OpenBao`], through its CLI.
//!
//! ```no_run
//! use std::time::Duration;
//! use secretsync_testkit::{openbao::OpenBao, postgres::Postgres};
//!
//! let pg = Postgres::start();
//! let Some(bao) = OpenBao::start() else { return };
//! bao.enable_database(&pg, "database");
//! bao.database_role("database", "app", Duration::from_secs(60), Duration::from_secs(300));
//! let creds = bao.database_creds("database", "app"); // a new PostgreSQL user per read
//! pg.connect_blocking(&creds.username, &creds.password).unwrap();
//! ```
//!
//! The engine's connection is named [`DB_CONNECTION`] and uses OpenBao's built-in
//! `postgresql-database-plugin`, connecting as the server's superuser. A dynamic role's
//! users are created with a password valid until the lease expires and dropped (after their
//! sessions are ended) when the lease is revoked, so `pg_roles` shows a revoked one gone.

use std::time::Duration;

use crate::openbao::OpenBao;
use crate::postgres::Postgres;

/// The name of the engine's connection (`<mount>/config/<name>`), which every role uses.
pub const DB_CONNECTION: &str = "pg";

/// A dynamic role's user: one per lease, with a password valid until the lease ends.
const CREATION_STATEMENTS: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' \
     VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";";

/// Revoking the lease ends the user's sessions and drops it. The grant is revoked first: a
/// role that still holds a privilege cannot be dropped.
const REVOCATION_STATEMENTS: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE usename = '{{name}}'; REVOKE ALL PRIVILEGES ON DATABASE postgres FROM \"{{name}}\"; \
     DROP ROLE IF EXISTS \"{{name}}\";";

/// Credentials read from the database engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbCreds {
    pub username: String,
    pub password: String,
    /// The lease of a dynamic role's credentials (`<mount>/creds/<role>/<id>`); `None` for
    /// a static role's.
    pub lease_id: Option<String>,
    /// The lease's duration (dynamic), or the time until the next rotation (static).
    pub ttl: Duration,
}

impl OpenBao {
    /// Mounts the database engine at `mount` with a connection [`DB_CONNECTION`] to `pg`
    /// as its superuser, allowed for every role; OpenBao checks the connection before
    /// accepting it (`verify_connection=true`).
    pub fn enable_database(&self, pg: &Postgres, mount: &str) {
        self.bao_ok(&["secrets", "enable", &format!("-path={mount}"), "database"]);
        self.bao_ok(&[
            "write",
            &format!("{mount}/config/{DB_CONNECTION}"),
            "plugin_name=postgresql-database-plugin",
            &format!("connection_url={}", pg.admin_url()),
            &format!("username={}", pg.admin_user()),
            &format!("password={}", pg.admin_password()),
            "allowed_roles=*",
            "verify_connection=true",
        ]);
    }

    /// A dynamic role `role` at `<mount>/roles/<role>`: each read of `<mount>/creds/<role>`
    /// creates a PostgreSQL user with a lease of `default_ttl`, renewable up to `max_ttl`;
    /// revoking the lease drops the user.
    pub fn database_role(&self, mount: &str, role: &str, default_ttl: Duration, max_ttl: Duration) {
        self.bao_ok(&[
            "write",
            &format!("{mount}/roles/{role}"),
            &format!("db_name={DB_CONNECTION}"),
            &format!("creation_statements={CREATION_STATEMENTS}"),
            &format!("revocation_statements={REVOCATION_STATEMENTS}"),
            &format!("default_ttl={}s", default_ttl.as_secs()),
            &format!("max_ttl={}s", max_ttl.as_secs()),
        ]);
    }

    /// A static role `role` at `<mount>/static-roles/<role>` for the PostgreSQL user
    /// `username`, which is created first (through `pg`'s admin connection) with a password
    /// nobody knows. OpenBao sets a password of its own at once and then every
    /// `rotation_period` (at least 5 s), or when told to ([`OpenBao::rotate_static_role`]).
    pub fn database_static_role(
        &self,
        pg: &Postgres,
        mount: &str,
        role: &str,
        username: &str,
        rotation_period: Duration,
    ) {
        assert!(
            !username.contains(['"', '\'']),
            "a static role's username is quoted into SQL: {username:?}"
        );
        let unknown = format!("{:016x}", crate::random_u64());
        pg.admin_execute_blocking(&format!(
            "CREATE ROLE \"{username}\" WITH LOGIN PASSWORD '{unknown}'"
        ))
        .unwrap_or_else(|e| panic!("create the PostgreSQL user {username:?}: {e}"));
        self.bao_ok(&[
            "write",
            &format!("{mount}/static-roles/{role}"),
            &format!("db_name={DB_CONNECTION}"),
            &format!("username={username}"),
            &format!("rotation_period={}s", rotation_period.as_secs()),
        ]);
    }

    /// Rotates the static role's password now (`write -f <mount>/rotate-role/<role>`).
    pub fn rotate_static_role(&self, mount: &str, role: &str) {
        self.bao_ok(&["write", "-f", &format!("{mount}/rotate-role/{role}")]);
    }

    /// Reads `<mount>/creds/<role>`: new credentials (a new PostgreSQL user) with a lease.
    pub fn database_creds(&self, mount: &str, role: &str) -> DbCreds {
        let read = self.read_json(&format!("{mount}/creds/{role}"));
        DbCreds {
            username: string_field(&read["data"], "username"),
            password: string_field(&read["data"], "password"),
            lease_id: Some(string_field(&read, "lease_id")),
            ttl: Duration::from_secs(read["lease_duration"].as_u64().unwrap_or_default()),
        }
    }

    /// Reads `<mount>/static-creds/<role>`: the static role's user and current password.
    pub fn database_static_creds(&self, mount: &str, role: &str) -> DbCreds {
        let read = self.read_json(&format!("{mount}/static-creds/{role}"));
        DbCreds {
            username: string_field(&read["data"], "username"),
            password: string_field(&read["data"], "password"),
            lease_id: None,
            ttl: Duration::from_secs(read["data"]["ttl"].as_u64().unwrap_or_default()),
        }
    }

    fn read_json(&self, path: &str) -> serde_json::Value {
        let out = self.bao_ok(&["read", "-format=json", path]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bao read {path}: {e}: {out}"))
    }
}

fn string_field(value: &serde_json::Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {value}"))
        .to_owned()
}
