//! Instant sync from AWS Secrets Manager through EventBridge and SQS, on moto: with an
//! hourly refresh, a `put-secret-value` and the message EventBridge delivers for it make the
//! next version and roll it out at once, and the message is deleted; an unreachable queue
//! says so on the store while the refresh interval keeps syncing; a thousand messages for
//! one secret cost at most two reads of it.

use std::time::Duration;

use secretsync_api::{EventSource, SecretStore, SecretSync};
use secretsync_testkit::moto::{self, Moto};
use serde_json::json;

use crate::aws::aws_store_with;
use crate::common::{DEADLINE, Env, create_deployment, password, settled, sync_yaml, wait_until};
use crate::user_actions::wait_template;

/// The message EventBridge delivers for a `PutSecretValue` of `app/db` (named by `arn`) at
/// `at`.
fn put_secret_value_event(arn: &str, at: jiff::Timestamp) -> String {
    let time = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    moto::put_secret_value_event(arn, "app/db", &time)
}

/// Waits for the store's `EventsReady` condition to be `status` with `reason`; returns its
/// message.
async fn wait_events_ready(env: &Env, store: &str, status: &str, reason: &str) -> String {
    env.wait_for::<SecretStore, _>(
        store,
        &format!("store {store} EventsReady={status} {reason}"),
        |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "EventsReady" && c.status == status && c.reason == reason)
                .map(|c| c.message.clone())
        },
    )
    .await
}

/// moto with `app/db` = `one` and an empty queue; returns the queue's URL.
fn seeded() -> Option<(Moto, String)> {
    let moto = Moto::start()?;
    moto.create_secret("app/db", r#"{"password":"one"}"#, &[]);
    let queue = moto.create_queue("secretsync-events", Duration::from_secs(30));
    Some((moto, queue))
}

/// `aws secretsmanager put-secret-value` with `refreshInterval: 1h`, through the store and
/// SecretSync of `examples/aws-instant`: the message EventBridge delivers makes the next
/// version, which holds the new value and is rolled out, without waiting for the hour; the
/// message is then deleted. A message about something else is deleted unread.
#[tokio::test]
async fn an_aws_change_through_sqs_is_synced_and_rolled_out_at_once() {
    let Some((moto, queue)) = seeded() else {
        return;
    };
    let env = Env::start("payments").await;
    let example = |file: &str| {
        std::fs::read_to_string(
            secretsync_testkit::repo_root()
                .join("examples/aws-instant")
                .join(file),
        )
        .unwrap()
        .replace(
            "http://127.0.0.1:5000/123456789012/secretsync-events",
            &queue,
        )
        .replace("http://127.0.0.1:5000", &moto.endpoint())
    };
    env.string_secret("aws", &[("id", "AKIDEXAMPLE"), ("secret", "any")])
        .await;
    env.create::<SecretStore>(&example("store.yaml")).await;
    create_deployment(&env, "app", "db-v1").await;
    env.create::<SecretSync>(&example("secretsync.yaml")).await;
    env.wait_version("db", 1).await;
    env.wait_condition("db", "RolledOut", "True").await;
    let listening = wait_events_ready(&env, "aws", "True", "EventsListening").await;
    assert!(listening.contains(&queue), "{listening}");

    let arn = moto.arn_of("app/db");
    let changed_at = jiff::Timestamp::now();
    moto.put_secret_value("app/db", r#"{"password":"two"}"#);
    moto.send_message(&queue, &put_secret_value_event(&arn, changed_at));
    env.wait_version("db", 2).await;
    let v2 = env.secret("db-v2").await.expect("db-v2 made");
    assert_eq!(password(&v2), b"two");
    wait_template(&env, "app", "db-v2").await;
    let metrics = &env.operator().metrics;
    assert!(metrics.store_events_of(EventSource::AwsSqs, "matched") >= 1);
    wait_until("the message deleted after its read", DEADLINE, || {
        moto.queue_messages(&queue) == 0
    })
    .await;

    // Not a Secrets Manager change: counted as ignored, and deleted all the same.
    moto.send_message(&queue, r#"{"Event":"s3:TestEvent"}"#);
    wait_until("the other message ignored", DEADLINE, || {
        metrics.store_events_of(EventSource::AwsSqs, "ignored") >= 1
    })
    .await;
    wait_until("the ignored message deleted", DEADLINE, || {
        moto.queue_messages(&queue) == 0
    })
    .await;
    assert_eq!(env.status("db").await.current_version, Some(2));
}

/// A queue that does not exist, and one on a closed port: the store says its events do not
/// arrive, and why, while it stays Ready; with a 5 s refresh a change is still synced by
/// the refresh slot.
#[tokio::test]
async fn an_unreachable_queue_is_reported_and_the_refresh_still_syncs() {
    let Some((moto, _queue)) = seeded() else {
        return;
    };
    let env = Env::start("payments").await;
    let missing = format!("{}/123456789012/nowhere", moto.endpoint());
    let events = json!({"events": {"source": "AwsSqs", "queueURL": missing}});
    aws_store_with(&env, &moto, "AKIDEXAMPLE", "any", events).await;
    env.create::<SecretSync>(&sync_yaml("db", "aws", "  refreshInterval: 5s"))
        .await;
    env.wait_version("db", 1).await;
    let why = wait_events_ready(&env, "aws", "False", "EventSourceUnavailable").await;
    assert!(why.contains("nowhere"), "{why}");
    env.wait_store("aws", "True", "Valid").await;

    // Nothing listens on this port: the store's next generation says so.
    let closed = format!(
        "http://127.0.0.1:{}/123456789012/q",
        secretsync_testkit::free_port()
    );
    let patch = json!({"spec": {"events": {"source": "AwsSqs", "queueURL": closed}}});
    env.api::<SecretStore>()
        .patch(
            "aws",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let why = env
        .wait_for::<SecretStore, _>("aws", "EventsReady on the closed port", |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == "EventsReady"
                        && c.reason == "EventSourceUnavailable"
                        && c.message.contains(&closed)
                })
                .map(|c| c.message.clone())
        })
        .await;
    assert!(why.contains("refresh interval"), "{why}");

    // Nothing lost: the refresh slot reads the change.
    moto.put_secret_value("app/db", r#"{"password":"two"}"#);
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
}

/// A thousand messages for `app/db` (sent ten a request, as fast as moto takes them) to a
/// store whose three SecretSyncs read it hourly: at most two reads of it at moto between
/// them, every message deleted, and no new version, as nothing changed.
#[tokio::test]
async fn a_thousand_messages_for_one_secret_cost_at_most_two_reads() {
    let Some((moto, queue)) = seeded() else {
        return;
    };
    let env = Env::start("payments").await;
    let events = json!({"events": {"source": "AwsSqs", "queueURL": queue}});
    aws_store_with(&env, &moto, "AKIDEXAMPLE", "any", events).await;
    for name in ["a", "b", "c"] {
        env.create::<SecretSync>(&sync_yaml(name, "aws", "  refreshInterval: 1h"))
            .await;
        env.wait_version(name, 1).await;
    }
    wait_events_ready(&env, "aws", "True", "EventsListening").await;
    // Copies of one event, as a replay or a misconfigured fan-out sends them.
    let arn = moto.arn_of("app/db");
    let bodies = vec![put_secret_value_event(&arn, jiff::Timestamp::now()); 1000];
    moto.record();
    let sent = std::time::Instant::now();
    moto.send_messages(&queue, &bodies);
    let sending = sent.elapsed();
    let metrics = &env.operator().metrics;
    // moto hands out ten messages a receive, slowly: a minute for the lot.
    wait_until(
        "every message handled and deleted",
        Duration::from_secs(120),
        || moto.queue_messages(&queue) == 0,
    )
    .await;
    let reads = || moto.recorded("GetSecretValue") + moto.recorded("BatchGetSecretValue");
    let seen = settled(reads).await;
    let matched = metrics.store_events_of(EventSource::AwsSqs, "matched");
    eprintln!("1,000 messages sent in {sending:?}: {seen} reads at moto, {matched} asked for");
    assert!(seen >= 1, "the messages read nothing");
    assert!(
        seen <= 2,
        "{seen} reads at moto for 1,000 messages of one secret (sent in {sending:?})"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(env.status(name).await.current_version, Some(1), "{name}");
    }
}
