//! Dynamic database credentials (issue 25) on a real PostgreSQL through a real OpenBao's
//! database secrets engine: each version is a new PostgreSQL login, rolled out to the
//! Deployment's (simulated) Pods, renewed while kept, revoked at the backend when it goes.
//! A client loop connects to PostgreSQL every 100 ms as each live Pod would, with the
//! credentials of the version that Pod references, for the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams};
use secretsync_api::{SecretSync, labels};
use secretsync_testkit::leak::LeakScan;
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::postgres::Postgres;
use serde_json::json;

use crate::common::{DEADLINE, Env, create_deployment, example, logs, wait_until};
use crate::vault::vault_store;

/// OpenBao's database engine at `database/` on a fresh PostgreSQL, a dynamic role `app`
/// (`ttl`, `max_ttl`), and an env (sandbox Pods ready after `ready`) with a store for it.
pub async fn start(ttl: u64, max_ttl: u64, ready: Duration) -> (Arc<Postgres>, OpenBao, Env) {
    let pg = Arc::new(Postgres::start());
    let bao = OpenBao::start().expect("OpenBao (scripts/setup.sh installs it)");
    bao.enable_database(&pg, "database");
    bao.database_role(
        "database",
        "app",
        Duration::from_secs(ttl),
        Duration::from_secs(max_ttl),
    );
    let env = Env::start_with(
        "payments",
        secretsync_sandbox::Sandbox::builder().ready_delay(ready),
    )
    .await;
    vault_store(&env, &bao, bao.root_token()).await;
    (pg, bao, env)
}

/// SecretSync `db` issuing from `database/creds/app`, rolled out to Deployment `api`: the
/// example's, with `extra` fields.
pub fn db_sync(extra: &str) -> String {
    format!(
        "{}{extra}\n",
        example("vault-database", "secretsync.yaml", "")
    )
}

/// One version's credentials, from its Secret.
fn credentials(secret: &Secret) -> (String, String) {
    let data = secret.data.as_ref().expect("data");
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    (text("username"), text("password"))
}

/// The Secret a Pod takes its credentials from.
fn referenced(pod: &Pod) -> Option<String> {
    let spec = serde_json::to_value(&pod.spec).ok()?;
    secretsync_operator::podspec::secret_refs(&spec)
        .into_iter()
        .map(|r| r.name)
        .next()
}

/// What the client loop saw: connections made, and each failure with the Secret it used.
#[derive(Default)]
pub struct Connections {
    pub ok: usize,
    pub failed: Vec<(String, String)>,
}

/// Every 100 ms, for each live Pod of `api`, connects to PostgreSQL with the credentials of
/// the Secret that Pod references, until the returned handle is aborted.
pub fn client_loop(
    env: &Env,
    pg: &Arc<Postgres>,
) -> (Arc<Mutex<Connections>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Connections::default()));
    let (pods, secrets) = (env.api::<Pod>(), env.api::<Secret>());
    let pg = pg.clone();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let live = pods
                .list(&ListParams::default().labels("app=api"))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for pod in live
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                let Some(name) = referenced(pod) else {
                    continue;
                };
                let outcome = match secrets.get_opt(&name).await {
                    Ok(Some(secret)) => {
                        let (user, password) = credentials(&secret);
                        pg.connect(&user, &password).await
                    }
                    Ok(None) => Err("the Secret is gone".to_owned()),
                    Err(e) => Err(format!("reading the Secret: {e}")),
                };
                let mut seen = record.lock().unwrap();
                match outcome {
                    Ok(()) => seen.ok += 1,
                    Err(error) => seen.failed.push((name, error)),
                }
            }
        }
    });
    (seen, task)
}

/// The lease id on each versioned Secret of `db`, by Secret name.
async fn held_leases(env: &Env) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    for name in env.version_secrets("db").await {
        if let Some(secret) = env.secret(&name).await {
            let annotations = secret.metadata.annotations.unwrap_or_default();
            if let Some(lease) = annotations.get(labels::LEASE_ID) {
                held.insert(name, lease.clone());
            }
        }
    }
    held
}

/// OpenBao's leases under the role equal those the Secrets hold.
pub async fn assert_leases_match(env: &Env, bao: &OpenBao) {
    let held: BTreeSet<String> = held_leases(env).await.into_values().collect();
    let at_openbao: BTreeSet<String> = bao.leases("database/creds/app/").into_iter().collect();
    assert_eq!(at_openbao, held, "OpenBao's leases are the versions'");
}

/// Scans the logs, the cluster's objects and `/metrics` for every version's password (and
/// `extra`, one gone already) and lease id.
async fn leak_scan(env: &Env, extra: String) {
    let mut canaries = vec![extra];
    for name in env.version_secrets("db").await {
        canaries.push(credentials(&env.secret(&name).await.unwrap()).1);
    }
    canaries.extend(held_leases(env).await.into_values());
    let mut scan = LeakScan::new(canaries);
    scan.items("operator debug log lines", logs().contents().lines());
    scan.cluster(&env.client).await;
    scan.text("/metrics", &crate::common::metrics_text(env).await);
    eprintln!("{}", scan.assert_clean());
}

/// Three rotations and one `Immediate` revoke, with a client connecting as every Pod all
/// along: no connection fails before the revoke; after it, only those with the revoked
/// version's credentials (the point of `Immediate`). `pg_roles` shows the revoked user
/// gone and the live ones present; OpenBao's leases are the versions'.
#[tokio::test]
async fn rotations_and_a_revoke_roll_out_new_database_logins_with_zero_failed_connections() {
    let (pg, bao, env) = start(3600, 86_400, Duration::from_millis(500)).await;
    env.create::<k8s_openapi::api::apps::v1::Deployment>(&example(
        "vault-database",
        "deployment.yaml",
        "",
    ))
    .await;
    env.create::<SecretSync>(&db_sync("  revokePolicy: Immediate"))
        .await;
    env.wait_rolled_out("db", "api", 1).await;
    let v1 = env.secret("db-v1").await.unwrap();
    let (v1_user, v1_password) = credentials(&v1);
    assert!(v1_user.starts_with("v-"), "an OpenBao-made user: {v1_user}");
    assert!(pg.role_exists(&v1_user).await);
    let (seen, client) = client_loop(&env, &pg);
    wait_until("the client connected", DEADLINE, || {
        seen.lock().unwrap().ok > 0
    })
    .await;

    let mut users = vec![v1_user.clone()];
    for rotation in 1..=3 {
        env.merge_sync("db", json!({"spec": {"version": rotation}}))
            .await;
        let v = rotation + 1;
        env.wait_rolled_out("db", "api", v).await;
        let (user, _) = credentials(&env.secret(&format!("db-v{v}")).await.unwrap());
        assert!(!users.contains(&user), "v{v} is a new login");
        users.push(user);
    }
    let before_revoke = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        before_revoke.failed.is_empty(),
        "failed connections before the revoke: {:?}",
        before_revoke.failed
    );

    env.merge_sync("db", json!({"spec": {"revokedVersions": [4]}}))
        .await;
    env.wait_rolled_out("db", "api", 5).await;
    env.wait_for_absent::<Secret>("db-v4").await;
    let v5_user = credentials(&env.secret("db-v5").await.unwrap()).0;
    // Connections go on until the revoked login is out of every Pod.
    let after = tokio::time::Instant::now();
    while tokio::time::Instant::now() < after + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.abort();
    let after_revoke = std::mem::take(&mut *seen.lock().unwrap());
    let unexpected: Vec<_> = after_revoke
        .failed
        .iter()
        .filter(|(secret, _)| secret != "db-v4")
        .collect();
    assert!(
        unexpected.is_empty(),
        "failed with live versions: {unexpected:?}"
    );
    eprintln!(
        "client: {} connections before the revoke, 0 failed; {} after, {} failed with the \
         revoked db-v4 (Immediate)",
        before_revoke.ok,
        after_revoke.ok,
        after_revoke.failed.len()
    );

    // The revoked version's login is gone from PostgreSQL (its lease was revoked before
    // its Secret was deleted); the kept ones are there.
    let revoked_user = &users[3];
    assert!(
        !pg.role_exists(revoked_user).await,
        "{revoked_user} dropped"
    );
    assert!(pg.connect(revoked_user, "x").await.is_err());
    assert!(pg.role_exists(&v5_user).await);
    for (name, _) in held_leases(&env).await {
        let user = credentials(&env.secret(&name).await.unwrap()).0;
        assert!(pg.role_exists(&user).await, "{name}'s login {user} is live");
    }
    assert_leases_match(&env, &bao).await;

    // No password or lease id shows in the logs, events, statuses or metrics (on the
    // sandbox: the scan lists every namespace, which on a shared real cluster holds other
    // tests' deliberately broken objects).
    if !env.sandbox.is_real() {
        leak_scan(&env, v1_password).await;
    }

    // Deleting the SecretSync (Delete) revokes every lease: every login it made is gone.
    env.api::<SecretSync>()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("db").await;
    assert!(bao.leases("database/creds/app/").is_empty());
    users.push(v5_user);
    for user in &users {
        assert!(
            !pg.role_exists(user).await,
            "{user} dropped with the SecretSync"
        );
    }
}

/// Polls until `db`'s status satisfies `done`, for up to `within`.
async fn wait_status(
    env: &Env,
    what: &str,
    within: Duration,
    done: impl Fn(&secretsync_api::SecretSyncStatus) -> bool,
) -> secretsync_api::SecretSyncStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = env.status("db").await;
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A version's lease expiry as its Secret records it.
async fn lease_expiry(env: &Env, secret: &str) -> jiff::Timestamp {
    let secret = env.secret(secret).await.expect("the Secret");
    secret.metadata.annotations.unwrap()[labels::LEASE_EXPIRES_AT]
        .parse()
        .unwrap()
}

/// Renewal (TTL 10 s, max TTL 40 s): v1's lease is renewed at two thirds of its TTL until
/// the max TTL caps it; v2 is made before v1 expires and its rollout completes before that,
/// while the client never fails to connect.
#[tokio::test]
async fn leases_are_renewed_until_the_max_ttl_and_the_next_login_is_rolled_out_before_it() {
    let (pg, bao, env) = start(10, 40, Duration::from_secs(1)).await;
    create_deployment(&env, "api", "db-v1").await;
    env.create::<SecretSync>(&db_sync("")).await;
    env.wait_rolled_out("db", "api", 1).await;
    let v1_made = env
        .secret("db-v1")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    let (seen, client) = client_loop(&env, &pg);

    let status = wait_status(&env, "v2 rolled out", Duration::from_secs(70), |s| {
        crate::common::rolled_out(s, "api", 2)
    })
    .await;
    let rolled_at = jiff::Timestamp::now();
    let v2_made = env
        .secret("db-v2")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    let v1_expiry = lease_expiry(&env, "db-v1").await;
    client.abort();
    let renewals = bao.audited_responses("sys/leases/renew");
    let v1_lease = status
        .versions
        .iter()
        .find(|v| v.version == 1)
        .and_then(|v| v.lease.clone());
    assert!(
        renewals >= 3,
        "a 10 s lease lasting 40 s is renewed several times: {renewals}"
    );
    assert!(
        v1_lease.is_some_and(|l| !l.renewable),
        "capped at its max TTL, no longer renewed"
    );
    let lifetime = v1_expiry.duration_since(v1_made).as_secs_f64();
    assert!(
        (35.0..=41.0).contains(&lifetime),
        "v1 lived to its max TTL through renewals: {lifetime} s"
    );
    assert!(v2_made < v1_expiry, "v2 made before v1 expired");
    assert!(rolled_at < v1_expiry, "v2 rolled out before v1 expired");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.failed.is_empty(),
        "failed connections: {:?}",
        seen.failed
    );
    assert!(seen.ok > 0);
    eprintln!(
        "renewal: {renewals} renewals; v1 lived {lifetime:.1} s; v2 made {:.1} s and rolled out \
         {:.1} s before v1 expired; {} connections, 0 failed",
        v1_expiry.duration_since(v2_made).as_secs_f64(),
        v1_expiry.duration_since(rolled_at).as_secs_f64(),
        seen.ok
    );
    assert_leases_match(&env, &bao).await;
}

/// A static role (`database/static-creds/app-static`, rotated hourly by OpenBao) read through
/// a store that listens to OpenBao's audit device: `rotate-role` by hand makes the next
/// version within 2 s and rolls it out; the new password connects, the old one no longer
/// does (the unavoidable gap: OpenBao changed it at once).
#[tokio::test]
async fn rotating_a_static_role_makes_and_rolls_out_the_next_version_at_once() {
    let (bao, env, _) = crate::instant_sync::audited(
        "payments",
        secretsync_sandbox::Sandbox::builder().ready_delay(Duration::from_millis(500)),
    )
    .await
    .expect("OpenBao");
    let pg = Arc::new(Postgres::start());
    bao.enable_database(&pg, "database");
    bao.database_static_role(
        &pg,
        "database",
        "app-static",
        "app_static",
        Duration::from_secs(3600),
    );
    crate::vault::vault_store_with(
        &env,
        "vault",
        &bao.addr(),
        bao.root_token(),
        json!({"events": {"source": "OpenBaoAudit"}}),
    )
    .await;
    create_deployment(&env, "api", "db-v1").await;
    env.create::<SecretSync>(
        &example("vault-database", "static-role.yaml", "").replace("name: db-static", "name: db"),
    )
    .await;
    env.wait_rolled_out("db", "api", 1).await;
    let (user, v1_password) = credentials(&env.secret("db-v1").await.unwrap());
    assert_eq!(user, "app_static");
    pg.connect(&user, &v1_password).await.unwrap();
    env.wait_store_condition("vault", "EventsReady", "True", "EventsListening")
        .await;

    let rotated = tokio::time::Instant::now();
    bao.rotate_static_role("database", "app-static");
    env.wait_version("db", 2).await;
    let made_in = rotated.elapsed();
    env.wait_rolled_out("db", "api", 2).await;
    let rolled_in = rotated.elapsed();
    let v2_password = credentials(&env.secret("db-v2").await.unwrap()).1;
    assert_ne!(v2_password, v1_password);
    pg.connect(&user, &v2_password).await.unwrap();
    assert!(pg.connect(&user, &v1_password).await.is_err());
    assert!(
        made_in < Duration::from_secs(2),
        "v2 made {made_in:?} after rotate-role"
    );
    eprintln!("static role: rotate-role → db-v2 in {made_in:?}, rolled out in {rolled_in:?}");
    // Its ttl and rotation time are no version of their own: refreshes make nothing new.
    let data = env.secret("db-v2").await.unwrap().data.unwrap();
    assert!(!data.contains_key("ttl"), "{:?}", data.keys());
    assert!(bao.leases("database/static-creds/").is_empty(), "no lease");
}

/// A lease revoked behind the operator's back (by hand, or by an admin's `lease revoke
/// -prefix`) cannot be renewed: after retries the next version is made at once, with a
/// Warning, and rolled out.
#[tokio::test]
async fn a_lease_that_cannot_be_renewed_makes_the_next_version_at_once() {
    let (pg, bao, env) = start(10, 3600, Duration::from_millis(500)).await;
    create_deployment(&env, "api", "db-v1").await;
    env.create::<SecretSync>(&db_sync("")).await;
    env.wait_rolled_out("db", "api", 1).await;
    let lease = held_leases(&env).await["db-v1"].clone();
    bao.bao_ok(&["lease", "revoke", &lease]);

    let events = env.wait_event_reasons(&["LeaseRenewFailed"]).await;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("LeaseRenewFailed"))
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(
        note.contains("renewing the lease of db-v1 failed")
            && note.contains("the next version is made now"),
        "{note}"
    );
    assert!(
        !note.contains(&lease),
        "the lease id stays out of events: {note}"
    );
    env.wait_rolled_out("db", "api", 2).await;
    let (user, password) = credentials(&env.secret("db-v2").await.unwrap());
    pg.connect(&user, &password).await.unwrap();
    let status = env.status("db").await;
    let v2 = status.versions.iter().find(|v| v.version == 2).unwrap();
    assert!(v2.lease.as_ref().is_some_and(|l| l.renewable));
}
