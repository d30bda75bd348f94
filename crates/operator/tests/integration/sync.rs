//! Versions are made exactly when guarantee 2, docs/reference/guarantees.md says, and never otherwise.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use secretsync_api::{SecretStore, SecretSync};
use serde_json::json;

use crate::common::{Env, sync_yaml};

#[tokio::test]
async fn first_sync_creates_v1_with_the_contract() {
    let env = Env::counted("payments").await;
    env.fake_store(
        "vault",
        &[("app/db", r#"{"password":"hunter2","user":"app"}"#, "7")],
    )
    .await;
    let sync: SecretSync = env
        .create(&sync_yaml(
            "db",
            "vault",
            "  target: {type: kubernetes.io/basic-auth, labels: {team: payments}, annotations: {owner: ops}}",
        ))
        .await;
    let synced = env.wait_version("db", 1).await;

    let secret = env.secret("db-v1").await.expect("db-v1 exists");
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data["password"].0, b"hunter2");
    let labels = secret.labels();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "secretsync");
    assert_eq!(labels["secretsync.io/sync"], "db");
    assert_eq!(labels["secretsync.io/version"], "1");
    assert_eq!(labels["team"], "payments");
    let annotations = secret.annotations();
    assert!(annotations["secretsync.io/content-hash"].starts_with("hmac-sha256:"));
    assert_eq!(annotations["secretsync.io/spec-version"], "0");
    assert_eq!(annotations["owner"], "ops");
    let owner = &secret.owner_references()[0];
    assert_eq!(owner.kind, "SecretSync");
    assert_eq!(owner.uid, sync.uid().unwrap());
    assert_eq!(owner.controller, Some(true));

    let status = synced.status.unwrap();
    assert_eq!(status.active_version, Some(1));
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v1"));
    assert_eq!(status.versions.len(), 1);
    assert_eq!(
        status.versions[0].state,
        secretsync_api::VersionState::Active
    );
    assert_eq!(
        status.versions[0].source_versions.as_ref().unwrap()["app/db"],
        "7"
    );
    assert_eq!(status.observed_generation, synced.metadata.generation);
    let (reason, message) = env.wait_condition("db", "Ready", "True").await;
    assert_eq!(reason, "Synced");
    assert!(message.contains("db-v1"), "{message}");
    // `Delete` (the default) needs no finalizer: the ownerReference is enough, and the
    // SecretSync itself is never written (only its status).
    assert_eq!(synced.metadata.finalizers, None);
    let stats = env.proxy().requests();
    assert_eq!(
        stats.count_sub("patch", "secretsync.io", "secretsyncs", ""),
        0,
        "{stats:?}"
    );
    assert_eq!(
        stats.count_sub("update", "secretsync.io", "secretsyncs", ""),
        0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn changed_content_makes_a_new_version_and_unchanged_content_writes_nothing() {
    let env = Env::counted("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", "  refreshInterval: 1s"))
        .await;
    let first = env.wait_version("db", 1).await;
    env.wait_condition("db", "Ready", "True").await;
    let first_refresh = first.status.unwrap().last_refresh_time;

    // Three refreshes of unchanged content (one a second): the backend is read each time,
    // and nothing is written to the API server — no Secret, no status, no event.
    env.proxy().reset_requests();
    let reads = env.operator().backend_reads();
    env.wait_backend_reads(reads + 3).await;
    let stats = env.proxy().requests();
    for resource in ["secrets", "secretsyncs", "events"] {
        assert_eq!(stats.writes_to(resource), 0, "{resource}: {stats:?}");
    }
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    assert_eq!(env.status("db").await.last_refresh_time, first_refresh);

    // The backend changes: the next refresh makes v2 with the new value.
    env.set_fake_data("vault", &[("app/db", r#"{"password":"two"}"#, "2")])
        .await;
    let second = env.wait_version("db", 2).await;
    let v2 = env.secret("db-v2").await.unwrap();
    assert_eq!(v2.data.as_ref().unwrap()["password"].0, b"two");
    assert_eq!(
        v2.annotations()["secretsync.io/source-versions"],
        r#"{"app/db":"2"}"#
    );
    // v1 is kept (history) and untouched
    assert_eq!(
        env.secret("db-v1").await.unwrap().data.unwrap()["password"].0,
        b"one"
    );
    let status = second.status.unwrap();
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v2"));
    let states: Vec<_> = status
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        [
            (2, secretsync_api::VersionState::Active),
            (1, secretsync_api::VersionState::Retained)
        ]
    );
}

#[tokio::test]
async fn a_store_edit_is_picked_up_without_waiting_for_the_refresh() {
    let mut env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await; // default 1h refresh
    env.wait_version("db", 1).await;
    env.set_fake_data("vault", &[("app/db", r#"{"password":"two"}"#, "2")])
        .await;
    env.wait_version("db", 2).await;
    assert_eq!(
        env.secret("db-v2").await.unwrap().data.unwrap()["password"].0,
        b"two"
    );
    // Also right after a restart, and for an edit made while the operator was down.
    env.stop_operator().await;
    env.set_fake_data("vault", &[("app/db", r#"{"password":"three"}"#, "3")])
        .await;
    env.start_operator();
    env.wait_version("db", 3).await;
    env.set_fake_data("vault", &[("app/db", r#"{"password":"four"}"#, "4")])
        .await;
    env.wait_version("db", 4).await;
    assert_eq!(
        env.secret("db-v4").await.unwrap().data.unwrap()["password"].0,
        b"four"
    );
}

#[tokio::test]
async fn raising_spec_version_rotates_even_with_identical_content() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"same"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", "  version: 1"))
        .await;
    env.wait_version("db", 1).await;
    let reads_before = env.operator().backend_reads();

    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    let rotated = env.wait_version("db", 2).await;
    assert!(
        env.operator().backend_reads() > reads_before,
        "rotation re-reads the backend"
    );
    let v1 = env.secret("db-v1").await.unwrap();
    let v2 = env.secret("db-v2").await.unwrap();
    assert_eq!(v2.data.as_ref().unwrap()["password"].0, b"same");
    assert_eq!(
        v1.annotations()["secretsync.io/content-hash"],
        v2.annotations()["secretsync.io/content-hash"]
    );
    assert_eq!(v2.annotations()["secretsync.io/spec-version"], "2");
    assert_eq!(rotated.status.unwrap().versions[0].spec_version, 2);

    // An unrelated spec edit (same spec.version) does not rotate.
    env.merge_sync("db", json!({"spec": {"history": {"limit": 5}}}))
        .await;
    env.wait_for::<SecretSync, _>("db", "the edit observed", |s| {
        (s.status.as_ref()?.observed_generation == s.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(env.version_secrets("db").await, ["db-v1", "db-v2"]);
}

#[tokio::test]
async fn a_restart_makes_no_writes_and_no_backend_reads_for_up_to_date_syncs() {
    let mut env = Env::counted("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    for name in ["a", "b", "c"] {
        env.create::<SecretSync>(&sync_yaml(name, "vault", ""))
            .await;
    }
    for name in ["a", "b", "c"] {
        env.wait_version(name, 1).await;
        env.wait_condition(name, "Ready", "True").await;
    }
    env.stop_operator().await;
    env.proxy().reset_requests();
    env.start_operator();
    // Every SecretSync is reconciled once at start-up.
    env.wait_reconciles(0, 3).await;
    let stats = env.proxy().requests();
    for resource in ["secrets", "secretsyncs", "events"] {
        assert_eq!(stats.writes_to(resource), 0, "{resource}: {stats:?}");
    }
    assert_eq!(env.operator().backend_reads(), 0);
}

#[tokio::test]
async fn lost_status_never_reuses_a_version_number() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", "  version: 1"))
        .await;
    env.wait_version("db", 1).await;
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_version("db", 2).await;

    // The status is wiped (a backup restore without status, say).
    let api = env.api::<SecretSync>();
    api.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": null})),
    )
    .await
    .unwrap();
    // Recovered from the labelled Secrets:
    env.wait_version("db", 2).await;
    env.merge_sync("db", json!({"spec": {"version": 3}})).await;
    env.wait_version("db", 3).await;
    assert_eq!(env.version_secrets("db").await, ["db-v1", "db-v2", "db-v3"]);
}

#[tokio::test]
async fn deletion_removes_or_retains_versions_by_policy() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("gone", "vault", ""))
        .await;
    env.create::<SecretSync>(&sync_yaml("kept", "vault", "  deletionPolicy: Retain"))
        .await;
    // Made by an earlier operator version, which gave every SecretSync the finalizer.
    env.create::<SecretSync>(&sync_yaml("legacy", "vault", "").replace(
        "metadata: {name: legacy}",
        "metadata: {name: legacy, finalizers: [secretsync.io/finalizer]}",
    ))
    .await;
    let finalizers = |s: SecretSync| s.metadata.finalizers.unwrap_or_default();
    assert!(finalizers(env.wait_version("gone", 1).await).is_empty());
    env.wait_version("legacy", 1).await;
    // Retain has work to do before the garbage collector runs: it got the finalizer before
    // its first version.
    assert!(
        finalizers(env.wait_version("kept", 1).await).contains(&"secretsync.io/finalizer".into())
    );

    let api = env.api::<SecretSync>();
    for name in ["gone", "kept", "legacy"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["gone", "kept", "legacy"] {
        env.wait_for_absent::<SecretSync>(name).await;
    }
    env.wait_for_absent::<Secret>("gone-v1").await;
    env.wait_for_absent::<Secret>("legacy-v1").await;
    let kept = env.secret("kept-v1").await.expect("retained Secret stays");
    assert!(
        kept.owner_references().is_empty(),
        "{:?}",
        kept.owner_references()
    );
    assert_eq!(kept.data.unwrap()["password"].0, b"x");
}

/// A store's `rateLimit` paces backend reads under a burst: 30 SecretSyncs, each reading
/// its own key, created at once through a store allowing 5 reads a second (burst 5), need
/// at least (30 − 5) / 5 = 5 s of reads.
#[tokio::test]
async fn a_stores_rate_limit_paces_a_burst_of_new_syncs() {
    const SYNCS: usize = 30;
    let env = Env::start("payments").await;
    let entries: Vec<(String, String)> = (0..SYNCS)
        .map(|i| (format!("app/k{i}"), format!(r#"{{"password":"p{i}"}}"#)))
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str(), "1"))
        .collect();
    env.fake_store("limited", &borrowed).await;
    env.api::<SecretStore>()
        .patch(
            "limited",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rateLimit": {"qps": 5, "burst": 5}}})),
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    env.many_syncs(SYNCS, "limited", |i| i, "").await;
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(4500),
        "{SYNCS} reads at 5/s after a burst of 5 took only {took:?}"
    );
    assert!(env.operator().metrics.backend_requests() >= SYNCS as u64);
}
