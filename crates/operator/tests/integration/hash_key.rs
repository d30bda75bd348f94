//! The content hash is keyed (guarantee 1, docs/reference/guarantees.md): `hmac-sha256:` with a key the operator
//! keeps in a Secret of its own namespace, the same across restarts and replicas, so the
//! hash in annotations and status reveals nothing about short values. Versions made
//! before the hash was keyed do not rotate on upgrade.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secretsync_api::hash::{HashKey, content_hash, legacy_content_hash};
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::hash_key::{self, KeySecret};
use serde_json::json;

use crate::common::{Env, sync_yaml};

fn password(value: &str) -> BTreeMap<String, Vec<u8>> {
    [("password".to_owned(), value.as_bytes().to_vec())].into()
}

async fn hash_of(env: &Env, secret: &str) -> String {
    let secret = env.secret(secret).await.expect("version exists");
    secret.metadata.annotations.unwrap()["secretsync.io/content-hash"].clone()
}

/// Waits until the operator has read the store at `generation` (a store edit forces a
/// read), then returns the SecretSync.
async fn wait_read_through(env: &Env, generation: i64) -> SecretSync {
    env.wait_for::<SecretSync, _>("db", "a read through the edited store", |s| {
        (s.status.as_ref()?.store_generation == Some(generation)).then(|| s.clone())
    })
    .await
}

async fn set_password(env: &Env, value: &str) -> i64 {
    env.set_fake_data(
        "vault",
        &[("app/db", &format!(r#"{{"password":"{value}"}}"#), "1")],
    )
    .await;
    let store = env.api::<SecretStore>().get("vault").await.unwrap();
    store.metadata.generation.unwrap()
}

#[tokio::test]
async fn the_content_hash_is_keyed_by_the_operators_secret_and_survives_a_restart() {
    let mut env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"a"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    let synced = env.wait_version("db", 1).await;
    let v1 = hash_of(&env, "db-v1").await;
    assert_eq!(
        synced.status.unwrap().versions[0].content_hash.as_deref(),
        Some(v1.as_str())
    );

    // The key is the one in the operator's Secret, and the hash is not the unkeyed one.
    let at = KeySecret::default();
    let key_secret = Api::<Secret>::namespaced(env.client.clone(), &at.namespace)
        .get(&at.name)
        .await
        .expect("the key Secret was made");
    assert_eq!(key_secret.immutable, Some(true));
    let key_bytes = &key_secret.data.unwrap()[hash_key::DATA_KEY].0;
    assert_eq!(key_bytes.len(), 32);
    let key = HashKey::from_bytes(key_bytes).unwrap();
    assert_eq!(v1, content_hash(&key, "Opaque", &password("a")));
    assert!(v1.starts_with("hmac-sha256:"), "{v1}");
    let unkeyed = legacy_content_hash("Opaque", &password("a"));
    assert_ne!(v1.rsplit(':').next(), unkeyed.rsplit(':').next());

    // A restart reads the same key: a forced read of unchanged content makes nothing...
    env.stop_operator().await;
    env.start_operator();
    let generation = set_password(&env, "a").await;
    let read = wait_read_through(&env, generation).await;
    assert_eq!(read.status.unwrap().current_version, Some(1));
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    // ...and the same content hashes the same as before the restart.
    set_password(&env, "b").await;
    env.wait_version("db", 2).await;
    set_password(&env, "a").await;
    env.wait_version("db", 3).await;
    assert_eq!(hash_of(&env, "db-v3").await, v1);
    assert_ne!(hash_of(&env, "db-v2").await, v1);
}

#[tokio::test]
async fn replicas_racing_to_make_the_key_share_one() {
    let env = Env::without_operator("payments").await;
    let at = KeySecret {
        namespace: env.ns.clone(),
        name: "raced".into(),
    };
    let (a, b, c) = tokio::join!(
        hash_key::load_or_create(&env.client, &at),
        hash_key::load_or_create(&env.client, &at),
        hash_key::load_or_create(&env.client, &at),
    );
    let hash = |key: HashKey| content_hash(&key, "Opaque", &password("x"));
    let a = hash(a.unwrap());
    assert_eq!(a, hash(b.unwrap()));
    assert_eq!(a, hash(c.unwrap()));
    // And a later start reads it back.
    assert_eq!(
        a,
        hash(hash_key::load_or_create(&env.client, &at).await.unwrap())
    );
}

#[tokio::test]
async fn a_key_secret_without_a_usable_key_stops_the_operator_with_a_clear_error() {
    let env = Env::without_operator("payments").await;
    let at = KeySecret {
        namespace: "payments".into(),
        name: "short".into(),
    };
    env.string_secret("short", &[("key", "too-short")]).await;
    let err = hash_key::load_or_create(&env.client, &at)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("payments/short"), "{err}");
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("too-short"), "{err}");
}

/// An operator upgraded from the unkeyed hash: the newest version carries `sha256:`; its
/// unchanged content must not become a new version, and its hash is rewritten with the key,
/// while changed content still makes a version (with the keyed hash).
#[tokio::test]
async fn versions_with_the_legacy_hash_do_not_rotate_on_upgrade() {
    let env = Env::without_operator("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"a"}"#, "1")])
        .await;
    let sync: SecretSync = env.create(&sync_yaml("db", "vault", "")).await;
    let legacy = legacy_content_hash("Opaque", &password("a"));
    // db-v1 as the previous release wrote it.
    let v1: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "db-v1",
            "labels": {
                "app.kubernetes.io/managed-by": "secretsync",
                "secretsync.io/sync": "db",
                "secretsync.io/version": "1",
            },
            "annotations": {
                "secretsync.io/content-hash": legacy,
                "secretsync.io/spec-version": "0",
            },
            "ownerReferences": [{
                "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync", "name": "db",
                "uid": sync.metadata.uid.clone().unwrap(), "controller": true,
            }],
        },
        "immutable": true,
        "data": {"password": "YQ=="},
    }))
    .unwrap();
    env.api::<Secret>()
        .create(&PostParams::default(), &v1)
        .await
        .unwrap();

    let mut env = env.with_operator();
    // Ready only after the first pass has read the backend and compared.
    env.wait_condition("db", "Ready", "True").await;
    let status = env.status("db").await;
    assert!(status.last_refresh_time.is_some(), "the backend was read");
    assert_eq!(status.current_version, Some(1), "{status:#?}");
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    // The unkeyed hash is gone from the annotation and the status: re-keyed in place.
    let key = read_key(&env, &KeySecret::default()).await;
    let keyed = content_hash(&key, "Opaque", &password("a"));
    assert_eq!(hash_of(&env, "db-v1").await, keyed);
    let status = env.status("db").await;
    assert_eq!(
        status.versions[0].content_hash.as_deref(),
        Some(keyed.as_str())
    );
    env.wait_event_reasons(&["HashRekeyed"]).await;

    // Still so after a restart and a forced read...
    env.stop_operator().await;
    env.start_operator();
    let generation = set_password(&env, "a").await;
    wait_read_through(&env, generation).await;
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    // ...and new content makes a version with the keyed hash.
    set_password(&env, "b").await;
    env.wait_version("db", 2).await;
    assert!(hash_of(&env, "db-v2").await.starts_with("hmac-sha256:"));
}

/// SecretSyncs in the re-keying scenario: CI's size by default, `SECRETSYNC_REKEY_SYNCS=100`
/// for the figures of issue 29 by hand.
fn scenario_size() -> usize {
    std::env::var("SECRETSYNC_REKEY_SYNCS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// How the operator comes back with a key other than the one that hashed every version.
#[derive(Clone, Copy, Debug)]
enum NewKey {
    /// The key Secret was deleted (a namespace clean-up, a restore that skipped it).
    Deleted,
    /// The operator was moved to another namespace, where a fresh key is made.
    Moved,
    /// The key Secret was deleted, and the operator is SIGKILLed while it re-keys.
    KilledWhileRekeying,
}

fn key_api(env: &Env, at: &KeySecret) -> Api<Secret> {
    Api::namespaced(env.client.clone(), &at.namespace)
}

async fn read_key(env: &Env, at: &KeySecret) -> HashKey {
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        if let Some(secret) = key_api(env, at).get_opt(&at.name).await.unwrap() {
            return HashKey::from_bytes(&secret.data.unwrap()[hash_key::DATA_KEY].0).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no key Secret {at:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn rekey_sync(i: usize) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: s{i}}}
spec:
  storeRef: {{name: vault}}
  data: [{{secretKey: password, remoteRef: {{key: app/k{i}, property: password}}}}]
  rollout: {{targets: [{{kind: Deployment, name: w{i}}}]}}
"#
    )
}

fn rekey_store(n: usize, changed: Option<usize>) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let value = if changed == Some(i) { "changed" } else { "p" };
            (
                format!("app/k{i}"),
                format!(r#"{{"password":"{value}{i}"}}"#),
                "1".to_owned(),
            )
        })
        .collect()
}

fn entries(store: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    store
        .iter()
        .map(|(k, v, ver)| (k.as_str(), v.as_str(), ver.as_str()))
        .collect()
}

/// Issue 29's "done when": SecretSyncs with rollout targets, all Ready; the operator comes
/// back with another key. Then no version is made and no workload patched, every hash
/// (annotation and status) is rewritten with the new key, an event and a metric say so, and
/// one backend change still makes exactly one version.
async fn rekey_scenario(how: NewKey) {
    use k8s_openapi::api::apps::v1::Deployment;
    let n = scenario_size();
    let mut env = Env::start("payments").await;
    env.fake_store("vault", &entries(&rekey_store(n, None)))
        .await;
    for i in 0..n {
        env.create::<SecretSync>(&rekey_sync(i)).await;
    }
    for i in 0..n {
        env.wait_version(&format!("s{i}"), 1).await;
        crate::common::create_deployment(&env, &format!("w{i}"), &format!("s{i}-v1")).await;
    }
    for i in 0..n {
        env.wait_condition(&format!("s{i}"), "RolledOut", "True")
            .await;
        env.wait_condition(&format!("s{i}"), "Ready", "True").await;
    }
    let generations = |deployments: Vec<Deployment>| -> Vec<(String, Option<i64>)> {
        deployments
            .into_iter()
            .map(|d| (d.metadata.name.unwrap(), d.metadata.generation))
            .collect()
    };
    let deployments = env.api::<Deployment>();
    let before = generations(deployments.list(&Default::default()).await.unwrap().items);
    let old_key = read_key(&env, &KeySecret::default()).await;
    env.stop_operator().await;

    let at = match how {
        NewKey::Deleted | NewKey::KilledWhileRekeying => {
            let at = KeySecret::default();
            key_api(&env, &at)
                .delete(&at.name, &Default::default())
                .await
                .unwrap();
            at
        }
        NewKey::Moved => {
            crate::common::install_namespace(&env.client, "secretsync-new").await;
            KeySecret {
                namespace: "secretsync-new".into(),
                name: "secretsync-hash-key".into(),
            }
        }
    };
    let mut rewritten_by_killed = 0.0;
    if let NewKey::KilledWhileRekeying = how {
        // Slow hash rewrites, so that the kill lands while some are done and others not.
        env.sandbox.inject(secretsync_sandbox::faults::Fault {
            verbs: vec!["patch".into()],
            resource: Some("secrets".into()),
            effect: secretsync_sandbox::faults::Effect::Delay { ms: 300 },
            ..Default::default()
        });
        let mut killed =
            crate::process::OperatorProcess::start(&env.sandbox, "secretsync-killed", false);
        let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
        while rewritten_by_killed < 1.0 {
            assert!(tokio::time::Instant::now() < deadline, "{}", killed.log());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Some(body) = killed.try_metrics().await {
                rewritten_by_killed = secretsync_operator::process::metrics::sum_series(
                    &body,
                    "secretsync_hashes_rekeyed_total",
                );
            }
        }
        killed.kill();
        env.sandbox.clear_faults();
        assert!(
            rewritten_by_killed < n as f64,
            "killed after all {n} hashes were rewritten: not in the middle"
        );
    }
    let restarted = tokio::time::Instant::now();
    env.operator = Some(crate::common::Operator::start_with(
        env.client.clone(),
        None,
        secretsync_operator::Config {
            hash_key: at.clone(),
            ..Default::default()
        },
    ));
    let new_key = read_key(&env, &at).await;
    let expected =
        |i: usize, key: &HashKey| content_hash(key, "Opaque", &password(&format!("p{i}")));
    assert_ne!(expected(0, &old_key), expected(0, &new_key), "a new key");
    for i in 0..n {
        let want = expected(i, &new_key);
        let synced = env
            .wait_for::<SecretSync, _>(&format!("s{i}"), "the status hash rewritten", |s| {
                let status = s.status.as_ref()?;
                (status.versions.first()?.content_hash.as_deref() == Some(want.as_str()))
                    .then(|| status.clone())
            })
            .await;
        assert_eq!(synced.current_version, Some(1), "s{i}: {synced:#?}");
        assert_eq!(hash_of(&env, &format!("s{i}-v1")).await, want, "s{i}");
        assert_eq!(
            env.version_secrets(&format!("s{i}")).await,
            [format!("s{i}-v1")]
        );
        let ready = synced
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "s{i}: {ready:?}");
    }
    let took = restarted.elapsed();
    let operator = &env.operator().metrics;
    assert_eq!(operator.versions_created(), 0);
    assert_eq!(operator.sum("secretsync_rollouts_total"), 0.0, "no rollout");
    let rewritten = operator.sum("secretsync_hashes_rekeyed_total");
    match how {
        // What the killed process had done is not done again (and patches it had sent may
        // have landed after its count was read).
        NewKey::KilledWhileRekeying => assert!(
            rewritten <= n as f64 - rewritten_by_killed,
            "{rewritten} rewritten again after {rewritten_by_killed}"
        ),
        _ => assert_eq!(rewritten, n as f64),
    }
    let events = env.wait_event_reasons(&["HashRekeyed"]).await;
    let rekeyed: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("HashRekeyed"))
        .collect();
    let note = rekeyed[0].note.clone().unwrap_or_default();
    assert!(note.contains("no new version"), "{note}");
    if !matches!(how, NewKey::KilledWhileRekeying) {
        assert_eq!(rekeyed.len(), n, "one event per SecretSync");
    }
    let after = generations(deployments.list(&Default::default()).await.unwrap().items);
    assert_eq!(before, after, "no workload was patched");
    // The figures for the issue's note (`--nocapture`).
    println!(
        "{how:?}: {n} SecretSyncs re-keyed within {took:?} of the restart; hashes rewritten: \
         {} by the restarted operator{}; versions created: {}; rollouts started: {}; \
         Deployments whose generation changed: {}",
        rewritten as u64,
        match how {
            NewKey::KilledWhileRekeying => {
                format!(", at least {rewritten_by_killed} before the kill")
            }
            _ => String::new(),
        },
        operator.versions_created(),
        operator.sum("secretsync_rollouts_total") as u64,
        before.iter().zip(&after).filter(|(b, a)| b != a).count(),
    );

    // A real change still makes exactly one version, of the one SecretSync it concerns.
    env.set_fake_data("vault", &entries(&rekey_store(n, Some(0))))
        .await;
    let generation = env
        .api::<SecretStore>()
        .get("vault")
        .await
        .unwrap()
        .metadata
        .generation;
    env.wait_version("s0", 2).await;
    for i in 0..n {
        env.wait_for::<SecretSync, _>(&format!("s{i}"), "a read through the edit", |s| {
            (s.status.as_ref()?.store_generation == generation).then_some(())
        })
        .await;
    }
    assert_eq!(env.operator().metrics.versions_created(), 1);
    assert_eq!(env.version_secrets("s1").await, ["s1-v1"]);
    println!(
        "{how:?}: after one backend change: versions created: 1 (s0-v2); the other {} read \
         it and made none",
        n - 1
    );
}

#[tokio::test]
async fn deleting_the_key_and_restarting_rewrites_every_hash_and_makes_no_version() {
    rekey_scenario(NewKey::Deleted).await;
}

#[tokio::test]
async fn moving_the_operator_to_a_namespace_with_a_fresh_key_makes_no_version() {
    rekey_scenario(NewKey::Moved).await;
}

#[tokio::test]
async fn killed_while_re_keying_the_operator_converges_with_no_new_version() {
    rekey_scenario(NewKey::KilledWhileRekeying).await;
}

/// A SecretSync relabelled from one shard (`--selector`) to another whose operator holds
/// another key: the new shard re-keys its version instead of making one.
#[tokio::test]
async fn a_sync_moved_to_a_shard_with_another_key_is_re_keyed_not_re_versioned() {
    use std::sync::Arc;

    use secretsync_operator::process::metrics::Metrics;
    use secretsync_operator::{Config, RunOptions};

    let env = Env::without_operator("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"a"}"#, "1")])
        .await;
    let key_at = |name: &str| KeySecret {
        namespace: "payments".into(),
        name: name.into(),
    };
    let shard = |selector: &str, key: &str| {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(secretsync_operator::run(
            env.client.clone(),
            Config {
                hash_key: key_at(key),
                ..Config::default()
            },
            RunOptions {
                selector: Some(selector.into()),
                ..RunOptions::default()
            },
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (metrics, stop, task)
    };
    let (_, _stop_a, shard_a) = shard("shard=a", "key-a");
    let (b_metrics, _stop_b, shard_b) = shard("shard=b", "key-b");
    env.create::<SecretSync>(&sync_yaml("db", "vault", "").replace(
        "metadata: {name: db}",
        "metadata: {name: db, labels: {shard: a}}",
    ))
    .await;
    env.wait_version("db", 1).await;
    let (key_a, key_b) = (
        read_key(&env, &key_at("key-a")).await,
        read_key(&env, &key_at("key-b")).await,
    );
    assert_eq!(
        hash_of(&env, "db-v1").await,
        content_hash(&key_a, "Opaque", &password("a"))
    );

    env.merge_sync("db", json!({"metadata": {"labels": {"shard": "b"}}}))
        .await;
    let by_b = content_hash(&key_b, "Opaque", &password("a"));
    env.wait_for::<SecretSync, _>("db", "the hash rewritten by shard b", |s| {
        (s.status.as_ref()?.versions.first()?.content_hash.as_deref() == Some(by_b.as_str()))
            .then_some(())
    })
    .await;
    assert_eq!(hash_of(&env, "db-v1").await, by_b);
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert_eq!(b_metrics.versions_created(), 0);
    assert_eq!(b_metrics.sum("secretsync_hashes_rekeyed_total"), 1.0);
    shard_a.abort();
    shard_b.abort();
}
