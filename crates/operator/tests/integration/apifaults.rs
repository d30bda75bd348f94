//! The operator rides through a misbehaving API server and racing writers (guarantee
//! 7): injected 500/503/429 answers, writes that land after the client gave up, watches
//! dropped and refused for a while, and other writers on the same objects. No version is
//! lost or made twice, and nobody loops: requests are counted. The faults are injected by an
//! HTTP proxy between the operator and the API server, so these run on the sandbox and on a
//! real kube-apiserver alike.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use secretsync_api::SecretSync;
use secretsync_operator::Config;
use secretsync_testkit::apiproxy::ApiProxy;
use secretsync_testkit::faults::{Effect, Fault};
use serde_json::json;

use crate::common::{Env, create_deployment, sync_yaml};

/// Spec lines of SecretSync `db` ([`sync_yaml`]): rotated by `spec.version`, polled every
/// second, rolling Deployment `api`.
const SPEC: &str = "  version: 1\n  refreshInterval: 1s\n  history: {limit: 10}\n  rollout: {targets: [{kind: Deployment, name: api}]}";

/// Store, Deployment `api` and SecretSync `db`, rolled out to db-v1.
async fn seed(env: &Env) {
    env.fake_store("vault", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    create_deployment(env, "api", "db-v1").await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", SPEC))
        .await;
    env.wait_rolled_out("db", "api", 1).await;
}

/// Each version Secret's `spec-version` annotation, by version.
async fn spec_versions(env: &Env) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in env.version_secrets("db").await {
        let secret: Secret = env.secret(&name).await.unwrap();
        let spec_version =
            secret.metadata.annotations.unwrap()["secretsync.io/spec-version"].clone();
        out.push((name, spec_version));
    }
    out
}

fn fault(verbs: &[&str], resource: &str, effect: Effect, every: u64) -> Fault {
    Fault {
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource: Some(resource.into()),
        effect,
        every: Some(every),
        ..Fault::default()
    }
}

/// Requests of the operator that write.
fn operator_writes(proxy: &ApiProxy) -> u64 {
    proxy
        .requests()
        .of_verbs(&["create", "update", "patch", "delete"])
}

#[tokio::test]
async fn api_errors_and_dropped_watches_lose_no_version_and_cause_no_hot_loop() {
    let env = Env::counted("payments").await;
    seed(&env).await;
    let proxy = env.proxy();
    proxy.reset_requests();
    let reconciles = env.operator().reconciles();
    // Every other Secret create fails, every third Deployment patch is throttled, every
    // other status write is refused.
    proxy.faults().arm(fault(
        &["create"],
        "secrets",
        Effect::Status { code: 500 },
        2,
    ));
    proxy.faults().arm(fault(
        &["patch"],
        "deployments",
        Effect::Status { code: 429 },
        3,
    ));
    proxy.faults().arm(Fault {
        subresource: Some("status".into()),
        ..fault(&["patch"], "secretsyncs", Effect::Status { code: 503 }, 2)
    });
    for version in 2..=4 {
        env.merge_sync("db", json!({"spec": {"version": version}}))
            .await;
        // The API server restarts: every watch ends and none is served for a while.
        proxy.faults().drop_watches();
        proxy.faults().arm(Fault {
            verbs: vec!["watch".into(), "list".into()],
            effect: Effect::Status { code: 503 },
            for_ms: Some(1500),
            ..Fault::default()
        });
        env.wait_rolled_out("db", "api", version).await;
    }
    let injected = proxy.faults().stats();
    proxy.faults().clear();
    let during = proxy.requests();
    let writes = operator_writes(proxy);
    let reconciled = env.operator().reconciles() - reconciles;
    println!(
        "API faults: {} injected, {} watch drops; operator: {} reconciles, {} writes, {} requests",
        injected.injected,
        injected.watches_dropped,
        reconciled,
        writes,
        during.total()
    );
    let watches = proxy.requests().of_verbs(&["watch", "list"]);
    println!("  of which watch and list requests: {watches}");
    assert!(injected.injected >= 6, "{injected:?}");
    assert_eq!(injected.watches_dropped, 3);

    // One version per rotation, none lost, none made twice.
    assert_eq!(
        spec_versions(&env).await,
        [
            ("db-v1".to_owned(), "1".to_owned()),
            ("db-v2".to_owned(), "2".to_owned()),
            ("db-v3".to_owned(), "3".to_owned()),
            ("db-v4".to_owned(), "4".to_owned()),
        ]
    );
    let deployment = env.api::<Deployment>().get("api").await.unwrap();
    let template = serde_json::to_value(deployment.spec.unwrap().template.spec).unwrap();
    assert_eq!(
        template["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "db-v4"
    );
    // No hot loop: three rotations through faults take a bounded number of passes and
    // writes (a loop would make thousands within the backoff-free window).
    assert!(reconciled < 150, "{reconciled} reconciles");
    assert!(writes < 80, "{during:?}");

    // Once the server behaves, the operator is quiet again: refreshes read the backend and
    // write nothing. (The last rollout's RolloutComplete event is queued after the status
    // that says so: on a real server it can land after that status is seen.)
    env.wait_events(&["db-v4"], |e, name| {
        e.reason.as_deref() == Some("RolloutComplete")
            && e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    })
    .await;
    proxy.reset_requests();
    let reads = env.operator().backend_reads();
    env.wait_backend_reads(reads + 2).await;
    assert_eq!(operator_writes(proxy), 0, "{:?}", proxy.requests());
}

#[tokio::test]
async fn a_create_that_lands_after_the_client_gave_up_is_adopted_not_doubled() {
    let env = Env::without_operator("payments")
        .await
        .with_operator_behind_proxy(Config {
            write_timeout: Duration::from_millis(500),
            ..Config::default()
        })
        .await;
    seed(&env).await;
    // The next Secret create reaches the server only after the operator stopped waiting
    // for it.
    env.proxy().faults().arm(Fault {
        times: Some(1),
        ..fault(&["create"], "secrets", Effect::Delay { ms: 1500 }, 1)
    });
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_rolled_out("db", "api", 2).await;
    assert_eq!(env.proxy().faults().stats().injected, 1);
    assert!(env.operator().metrics.api_write_timeouts() >= 1);
    assert_eq!(
        spec_versions(&env).await,
        [
            ("db-v1".to_owned(), "1".to_owned()),
            ("db-v2".to_owned(), "2".to_owned())
        ]
    );
}

fn by(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.into()),
        ..PatchParams::default()
    }
}

#[tokio::test]
async fn racing_writers_lose_no_update_and_start_no_fight() {
    let env = Env::counted("payments").await;
    seed(&env).await;
    env.proxy().reset_requests();
    // The people write with the cluster's admin client, not through the proxy, which then
    // counts the operator's requests only.
    let engineer = || kubectl_secretsync::ops::Syncs::new(env.client.clone(), &env.ns);
    let (alice, bob) = (engineer(), engineer());
    let labeller: kube::Api<SecretSync> = env.api();
    let editor: kube::Api<Deployment> = env.api();
    // Two on-call engineers rotate at the same instant while a second field manager
    // relabels the SecretSync and someone `kubectl edit`s the Deployment's labels.
    let relabel = async {
        for i in 0..20 {
            let patch = json!({"metadata": {"labels": {"touched": i.to_string()}}});
            labeller
                .patch("db", &by("labeller"), &Patch::Merge(&patch))
                .await
                .unwrap();
            let patch = json!({"metadata": {"labels": {"edited": i.to_string()}}});
            editor
                .patch("api", &by("kubectl-edit"), &Patch::Merge(&patch))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (a, b, ()) = tokio::join!(
        kubectl_secretsync::ops::rotate(&alice, "db", false, Some("leaked in a log")),
        kubectl_secretsync::ops::rotate(&bob, "db", false, Some("quarterly rotation")),
        relabel
    );
    a.unwrap();
    b.unwrap();
    // Both rotations landed: spec.version went 1 → 3, and each made its version.
    let sync: SecretSync = env.api::<SecretSync>().get("db").await.unwrap();
    assert_eq!(sync.spec.version, Some(3));
    assert_eq!(sync.metadata.labels.unwrap()["touched"], "19");
    env.wait_rolled_out("db", "api", 3).await;
    // The operator saw spec.version 2 and then 3, or only 3: one version per spec.version
    // it saw, the newest for 3.
    let made: Vec<String> = spec_versions(&env)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert!(made == ["1", "2", "3"] || made == ["1", "3"], "{made:?}");
    let deployment = env.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(deployment.metadata.labels.unwrap()["edited"], "19");
    let writes = operator_writes(env.proxy());
    println!("racing writers: operator made {writes} writes for 2 rotations and 40 foreign edits");
    // No fight: the operator wrote a handful of times per version, not once per edit.
    assert!(writes < 30, "{:?}", env.proxy().requests());
}

/// A SecretSync deleted while the operator's watch of SecretSyncs lags (on a real cluster
/// the garbage collector can delete its versions before the operator hears of the deletion):
/// the deleted versions' events must not make it mint a replacement version for the gone
/// SecretSync and roll the workloads onto it. Found by journey 7 on the real plane.
#[tokio::test]
async fn a_sync_deleted_while_the_watch_lags_gets_no_replacement_version() {
    let env = Env::counted("payments").await;
    seed(&env).await;
    let proxy = env.proxy();
    // The operator hears nothing of SecretSyncs until the end of the test: the watch ends
    // and is refused, so its cache keeps the deleted SecretSync.
    proxy.faults().arm(Fault {
        verbs: vec!["watch".into(), "list".into()],
        resource: Some("secretsyncs".into()),
        effect: Effect::Status { code: 503 },
        ..Fault::default()
    });
    proxy.faults().drop_watches();
    proxy.reset_requests();
    env.api::<SecretSync>()
        .delete("db", &Default::default())
        .await
        .unwrap();
    // The garbage collector deletes db-v1; the operator hears of that on its Secret watch.
    // A real garbage collector learns of a CRD installed moments ago at its next resync
    // of resource types (every 30 s), and only then deletes the CRD's dependents.
    let deadline = tokio::time::Instant::now() + 3 * crate::common::DEADLINE;
    while env.secret("db-v1").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "db-v1 never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator's answer to its newest version going, on a cached SecretSync that the
    // server has deleted: without the fix it mints db-v2 (a Secret create); with it, it asks
    // the server first (a SecretSync get).
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let requests = proxy.requests();
        if requests.count("get", "secretsync.io", "secretsyncs") > 0
            || requests.count("create", "", "secrets") > 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to db-v1 going: {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.version_secrets("db").await, Vec::<String>::new());
    let deployment = env.api::<Deployment>().get("api").await.unwrap();
    let template = serde_json::to_value(deployment.spec.unwrap().template.spec).unwrap();
    assert_eq!(
        template["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"], "db-v1",
        "the workload was rolled onto a version of a deleted SecretSync"
    );
    proxy.faults().clear();
}
