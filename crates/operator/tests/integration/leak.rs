//! Secret values never leak (api.md guarantee 8): a canary value travels through every path
//! — sync, rotation, templating, failures — and is then searched for in the operator's
//! debug logs, in every Event, and in every SecretSync's status and metadata.

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use secretsync_api::SecretSync;
use serde_json::json;

use crate::common::{Env, logs, sync_yaml};

const CANARY: &str = "CANARY-6f1d0b7e-never-print-me";

#[tokio::test]
async fn canary_values_never_appear_in_logs_events_or_status() {
    let env = Env::start("payments").await;
    let value = format!(r#"{{"password":"{CANARY}","user":"app-{CANARY}"}}"#);
    env.fake_store("vault", &[("app/db", &value, "1")]).await;

    // sync, with a template using the value
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  target: {template: {data: {dsn: 'postgres://{{ password }}@db', password: '{{ password }}'}}}",
    ))
    .await;
    env.wait_version("db", 1).await;
    // rotation
    env.merge_sync("db", json!({"spec": {"version": 1}})).await;
    env.wait_version("db", 2).await;
    // failures whose messages are built near the value: a template error, a missing
    // property, an invalid key extracted from a field named after the value
    env.merge_sync(
        "db",
        json!({"spec": {"target": {"template": {"data": {"dsn": "{{ password | nosuchfilter }}"}}}}}),
    )
    .await;
    env.wait_condition("db", "Ready", "False").await;
    env.fake_store(
        "bad-keys",
        &[("app/x", &format!(r#"{{"{CANARY} key":"{CANARY}"}}"#), "1")],
    )
    .await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: extract}
spec:
  storeRef: {name: bad-keys}
  dataFrom: [{extract: {key: app/x}}]
"#,
    )
    .await;
    env.wait_condition("extract", "Ready", "False").await;
    env.create::<SecretSync>(
        &sync_yaml("prop", "vault", "").replace("property: password", "property: nope"),
    )
    .await;
    env.wait_condition("prop", "Ready", "False").await;

    // The Secret really holds the value (so the search below is meaningful)...
    let v1 = env.secret("db-v1").await.unwrap();
    assert_eq!(v1.data.unwrap()["password"].0, CANARY.as_bytes());

    // ...and it is nowhere else.
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(CANARY)).collect();
    assert!(leaked.is_empty(), "log lines hold the canary: {leaked:#?}");
    let syncs = env
        .api::<SecretSync>()
        .list(&ListParams::default())
        .await
        .unwrap();
    for sync in syncs {
        let text = serde_json::to_string(&sync).unwrap();
        assert!(!text.contains(CANARY), "SecretSync {text}");
    }
    let events = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty(), "events were recorded");
    for event in events {
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains(CANARY), "Event {text}");
    }
    for event in env
        .api::<CoreEvent>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains(CANARY), "core Event {text}");
    }
}
