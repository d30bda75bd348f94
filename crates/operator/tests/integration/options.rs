//! The options External Secrets Operator users rely on: `remoteRef.decodingStrategy` and
//! `refreshPolicy`, as a user sees them in the Secrets and the conditions.

use secretsync_api::SecretSync;
use serde_json::json;

use crate::common::{Env, secret_data};

fn manifest(name: &str, extra: &str, data: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: vault}}
  refreshInterval: 1s
{data}
{extra}
"#
    )
}

#[tokio::test]
async fn base64_values_are_stored_decoded_and_one_that_is_not_keeps_the_last_version() {
    let env = Env::start("payments").await;
    // A keystore pasted base64-encoded, and a config whose fields are URL-safe base64.
    let conf = r#"{"blob":"-_8=","plain":"as-is"}"#;
    let stored = |keystore| [("app/keystore", keystore, "1"), ("app/conf", conf, "1")];
    env.fake_store("vault", &stored(r#"{"jks":"/u3+7Q=="}"#))
        .await;
    env.create::<SecretSync>(&manifest(
        "tls",
        "",
        r#"  data:
    - secretKey: keystore.jks
      remoteRef: {key: app/keystore, property: jks, decodingStrategy: Base64}
  dataFrom:
    - extract: {key: app/conf, decodingStrategy: Auto}"#,
    ))
    .await;
    env.wait_version("tls", 1).await;
    let data = secret_data(&env.secret("tls-v1").await.unwrap());
    assert_eq!(data["keystore.jks"], b"\xfe\xed\xfe\xed");
    assert_eq!(data["blob"], b"\xfb\xff");
    assert_eq!(data["plain"], b"as-is", "Auto keeps what is not base64");

    // Someone stores the keystore raw: not base64, so no version is made from it.
    env.set_fake_data("vault", &stored(r#"{"jks":"raw keystore, s3cret!"}"#))
        .await;
    let message = env.wait_failure("tls", "Ready", "DecodingFailed").await;
    assert!(
        message.contains("data[0]")
            && message.contains("keystore.jks")
            && message.contains("Base64"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "the value leaked: {message}");
    let status = env.status("tls").await;
    assert_eq!(status.current_version, Some(1));
    assert_eq!(status.active_secret_name.as_deref(), Some("tls-v1"));
    let kept = secret_data(&env.secret("tls-v1").await.unwrap());
    assert_eq!(kept["keystore.jks"], b"\xfe\xed\xfe\xed");
    assert!(env.secret("tls-v2").await.is_none());
}

#[tokio::test]
async fn on_change_and_created_once_read_only_when_their_policy_says() {
    let env = Env::start("payments").await;
    let value = |n: u32| format!(r#"{{"password":"p{n}"}}"#);
    env.fake_store("vault", &[("app/db", &value(1), "1")]).await;
    let data = "  data: [{secretKey: password, remoteRef: {key: app/db, property: password}}]";
    env.create::<SecretSync>(&manifest("periodic", "", data))
        .await;
    env.create::<SecretSync>(&manifest("onchange", "  refreshPolicy: OnChange", data))
        .await;
    env.create::<SecretSync>(&manifest("once", "  refreshPolicy: CreatedOnce", data))
        .await;
    for name in ["periodic", "onchange", "once"] {
        env.wait_version(name, 1).await;
    }

    // Two backend changes, each seen by the Periodic one: the others stay where they are.
    for n in [2, 3] {
        env.set_fake_data("vault", &[("app/db", &value(n), &n.to_string())])
            .await;
        env.wait_version("periodic", i64::from(n)).await;
    }
    for name in ["onchange", "once"] {
        let status = env.status(name).await;
        assert_eq!(status.current_version, Some(1), "{name} read the backend");
        let v1 = secret_data(&env.secret(&format!("{name}-v1")).await.unwrap());
        assert_eq!(v1["password"], b"p1");
    }

    // A spec edit: OnChange reads (and makes a version of what it finds); CreatedOnce not.
    for name in ["onchange", "once"] {
        env.merge_sync(
            name,
            json!({"spec": {"target": {"labels": {"team": "payments"}}}}),
        )
        .await;
    }
    env.wait_version("onchange", 2).await;
    let v2 = secret_data(&env.secret("onchange-v2").await.unwrap());
    assert_eq!(v2["password"], b"p3");
    let edited = env
        .wait_for::<SecretSync, _>("once", "once observed its edit", |s| {
            let status = s.status.as_ref()?;
            (status.observed_generation == s.metadata.generation).then(|| status.clone())
        })
        .await;
    assert_eq!(
        edited.current_version,
        Some(1),
        "CreatedOnce read on a spec edit"
    );

    // The on-call lever still works: a rotation reads and makes the next version.
    env.merge_sync("once", json!({"spec": {"version": 1}}))
        .await;
    env.wait_version("once", 2).await;
    let rotated = secret_data(&env.secret("once-v2").await.unwrap());
    assert_eq!(rotated["password"], b"p3");
}
