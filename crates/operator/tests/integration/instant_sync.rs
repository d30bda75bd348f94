//! Instant sync from a real OpenBao's `socket` audit device: with an hourly refresh, a
//! `kv put` makes the next version and rolls it out at once; a burst of change events for
//! one key costs at most two backend reads; changes to keys nothing reads, and stores that
//! did not opt in, cost nothing.

use std::time::Duration;

use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::openbao::OpenBao;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::{
    DEADLINE, Env, Operator, create_deployment, example, password, settled, sync_yaml, wait_until,
};
use crate::user_actions::wait_template;
use crate::vault::{vault_store_at, vault_store_with};

/// An OpenBao with `app/db` = `one` and a `socket` audit device pointed at the listener of
/// the env's operator. Returns the listener's port too.
async fn listening(ns: &str) -> Option<(OpenBao, Env, u16)> {
    let (bao, env, port) = audited(ns, secretsync_sandbox::Sandbox::builder()).await?;
    bao.kv_put("secret", "app/db", &[("password", "one")]);
    Some((bao, env, port))
}

/// An OpenBao whose `socket` audit device is pointed at the listener of the env's operator,
/// and the listener's port.
pub(crate) async fn audited(
    ns: &str,
    sandbox: secretsync_sandbox::SandboxBuilder,
) -> Option<(OpenBao, Env, u16)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bao = OpenBao::start_with_socket_audit(&format!("127.0.0.1:{port}"))?;
    let env = Env::with_sandbox(ns, sandbox).await.with_operator_options(
        secretsync_operator::RunOptions {
            openbao_audit: Some(listener),
            ..Operator::options()
        },
    );
    Some((bao, env, port))
}

/// SecretSync `name` reading `app/db` through `store` hourly, synced at v1.
async fn hourly_sync(env: &Env, name: &str, store: &str) {
    env.create::<SecretSync>(&sync_yaml(name, store, "  refreshInterval: 1h"))
        .await;
    env.wait_version(name, 1).await;
}

/// `bao kv put secret/app/db password=two` with `refreshInterval: 1h`, through the store
/// and SecretSync of `examples/vault-instant`: the next version holds `two` and the
/// Deployment is rolled onto it, without waiting for the hour; a store that did not opt in
/// stays on `one` until its own refresh.
#[tokio::test]
async fn a_kv_put_is_synced_and_rolled_out_at_once_with_an_hourly_refresh() {
    let Some((bao, env, _)) = listening("payments").await else {
        return;
    };
    let example = |file: &str| example("vault-instant", file, &bao.addr());
    env.string_secret("vault-token", &[("token", bao.root_token())])
        .await;
    env.create::<SecretStore>(&example("store.yaml")).await;
    vault_store_at(&env, "polled", &bao.addr(), bao.root_token()).await;
    create_deployment(&env, "app", "db-v1").await;
    env.create::<SecretSync>(&example("secretsync.yaml")).await;
    env.wait_version("db", 1).await;
    hourly_sync(&env, "slow", "polled").await;
    env.wait_condition("db", "RolledOut", "True").await;
    env.wait_store_condition("vault", "EventsReady", "True", "EventsListening")
        .await;

    bao.kv_put("secret", "app/db", &[("password", "two")]);
    env.wait_version("db", 2).await;
    let v2 = env.secret("db-v2").await.expect("db-v2 made");
    assert_eq!(password(&v2), b"two");
    wait_template(&env, "app", "db-v2").await;
    let metrics = &env.operator().metrics;
    assert!(metrics.openbao_audit_events("matched") >= 1);

    // A key nothing reads: an unmatched event, no version anywhere.
    bao.kv_put("secret", "app/other", &[("password", "x")]);
    wait_until("an unmatched event counted", DEADLINE, || {
        metrics.openbao_audit_events("unmatched") > 0
    })
    .await;
    assert_eq!(env.status("db").await.current_version, Some(2));
    // The store that did not opt in waits for its hourly refresh.
    assert_eq!(env.status("slow").await.current_version, Some(1));
    assert!(env.secret("slow-v2").await.is_none());
}

/// A thousand change events for `app/db` within a second (what a burst of writes, or
/// someone replaying entries, sends): the three SecretSyncs that read it cost at
/// most two reads at OpenBao between them, and nothing changes, as nothing did.
#[tokio::test]
async fn a_burst_of_events_for_one_key_costs_at_most_two_reads() {
    let Some((bao, env, port)) = listening("payments").await else {
        return;
    };
    let events = json!({"events": {"source": "OpenBaoAudit"}});
    vault_store_with(&env, "vault", &bao.addr(), bao.root_token(), events).await;
    for name in ["a", "b", "c"] {
        hourly_sync(&env, name, "vault").await;
    }
    let before = bao.audited_responses("secret/data/app/db");
    let entry = json!({"type": "response", "request": {
        "operation": "update", "path": "secret/data/app/db", "namespace": {"id": "root"}}});
    // Spread over a second, so each event can find the reads of the one before done.
    let chunk = format!("{entry}\n").repeat(20);
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..50 {
        every.tick().await;
        socket.write_all(chunk.as_bytes()).await.unwrap();
    }
    socket.shutdown().await.unwrap();
    let metrics = &env.operator().metrics;
    // The first event wakes them at once (or, within a second of the setup's own `kv put`,
    // at the end of that one's window); the rest at the end of the window.
    wait_until("the burst woke a SecretSync", DEADLINE, || {
        metrics.openbao_audit_events("matched") >= 1
    })
    .await;
    let reads = || bao.audited_responses("secret/data/app/db") - before;
    wait_until("the events read at OpenBao", DEADLINE, || reads() > 0).await;
    let seen = settled(reads).await;
    assert!(
        seen <= 2,
        "{seen} reads at OpenBao for 1,000 events of one key"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(env.status(name).await.current_version, Some(1), "{name}");
    }
}
