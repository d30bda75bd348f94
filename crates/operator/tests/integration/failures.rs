//! Failures lose nothing (guarantee 7, docs/reference/guarantees.md): each reason is caused for real, the condition
//! says what to do, and existing Secrets stay as they were.

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use secretsync_api::SecretSync;
use serde_json::json;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::common::{DEADLINE, Env, sync_yaml};

/// Waits for Ready=False with `reason` and a message mentioning `hint`; Synced agrees.
async fn expect_failure(env: &Env, sync: &str, reason: &str, hint: &str) {
    let what = format!("{sync} Ready=False {reason} mentioning {hint:?}");
    env.wait_for::<SecretSync, _>(sync, &what, |s| {
        let conditions = &s.status.as_ref()?.conditions;
        let failed = |type_: &str| {
            conditions.iter().any(|c| {
                c.type_ == type_
                    && c.status == "False"
                    && c.reason == reason
                    && c.message.contains(hint)
            })
        };
        (failed("Ready") && failed("Synced")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_store() {
    let env = Env::start("payments").await;
    env.create::<SecretSync>(&sync_yaml("db", "nowhere", ""))
        .await;
    expect_failure(
        &env,
        "db",
        "StoreNotFound",
        "SecretStore \"nowhere\" not found",
    )
    .await;
    // creating the store fixes it without touching the SecretSync
    env.fake_store("nowhere", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.wait_version("db", 1).await;
    env.wait_condition("db", "Ready", "True").await;
}

#[tokio::test]
async fn missing_remote_key_keeps_existing_versions() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("db", "vault", ""))
        .await;
    env.wait_version("db", 1).await;

    env.merge_sync(
        "db",
        json!({"spec": {"data": [{"secretKey": "password", "remoteRef": {"key": "app/missing"}}]}}),
    )
    .await;
    expect_failure(&env, "db", "RemoteKeyNotFound", "app/missing").await;
    let v1 = env.secret("db-v1").await.expect("v1 intact");
    assert_eq!(v1.data.unwrap()["password"].0, b"x");
    assert_eq!(env.version_secrets("db").await, ["db-v1"]);
    let status = env.status("db").await;
    assert_eq!(status.active_secret_name.as_deref(), Some("db-v1"));

    // A missing property is the same reason, naming the property.
    env.merge_sync(
        "db",
        json!({"spec": {"data": [{"secretKey": "password", "remoteRef": {"key": "app/db", "property": "pass"}}]}}),
    )
    .await;
    expect_failure(&env, "db", "RemoteKeyNotFound", "\"pass\"").await;
}

#[tokio::test]
async fn invalid_secret_key_from_extracted_fields() {
    let env = Env::start("payments").await;
    env.fake_store(
        "vault",
        &[("app/config", r#"{"ok":"1","not ok":"2"}"#, "1")],
    )
    .await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: cfg}
spec:
  storeRef: {name: vault}
  dataFrom: [{extract: {key: app/config}}]
"#,
    )
    .await;
    expect_failure(
        &env,
        "cfg",
        "InvalidSecretKey",
        "\"app/config\" has 1 field(s)",
    )
    .await;
    assert!(env.version_secrets("cfg").await.is_empty());
}

#[tokio::test]
async fn secret_over_one_mebibyte() {
    let env = Env::start("payments").await;
    let big = "x".repeat(600 * 1024);
    env.fake_store("vault", &[("app/blob", &big, "1")]).await;
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: blob}
spec:
  storeRef: {name: vault}
  data:
    - {secretKey: a, remoteRef: {key: app/blob}}
    - {secretKey: b, remoteRef: {key: app/blob}}
"#,
    )
    .await;
    expect_failure(&env, "blob", "SecretTooLarge", "1 MiB").await;
    assert!(env.version_secrets("blob").await.is_empty());
}

#[tokio::test]
async fn template_error() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "vault",
        "  target: {template: {data: {dsn: 'postgres://{{ username }}@db'}}}",
    ))
    .await;
    expect_failure(&env, "db", "TemplateError", "dsn").await;
}

#[tokio::test]
async fn invalid_spec_is_explained_and_not_retried_in_a_loop() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    // Valid for the schema, but two data entries write the same key.
    env.create::<SecretSync>(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db}
spec:
  storeRef: {name: vault}
  data:
    - {secretKey: password, remoteRef: {key: app/db, property: password}}
    - {secretKey: password, remoteRef: {key: app/other}}
"#,
    )
    .await;
    expect_failure(&env, "db", "InvalidSpec", "\"password\" is listed twice").await;
    let reconciles = env.operator().reconciles();
    let reads = env.operator().backend_reads();
    // nothing was fetched or written for an invalid spec
    assert_eq!(reads, 0);
    assert!(env.version_secrets("db").await.is_empty());
    // fixing it recovers
    env.merge_sync(
        "db",
        json!({"spec": {"data": [{"secretKey": "password", "remoteRef": {"key": "app/db", "property": "password"}}]}}),
    )
    .await;
    env.wait_version("db", 1).await;
    assert!(env.operator().reconciles() > reconciles);
}

#[tokio::test]
async fn cluster_store_not_allowed_for_the_namespace() {
    let env = Env::start("payments").await;
    let stores: kube::Api<secretsync_api::ClusterSecretStore> = kube::Api::all(env.client.clone());
    // Named after the test's namespace: cluster-scoped, so on a real cluster a fixed name
    // outlives the run and the next run's create meets it (AlreadyExists).
    let name = format!("{}-shared", env.ns);
    let store = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": {"name": name},
        "spec": {
            "provider": {"fake": {"data": [{"key": "app/db", "value": "{\"password\":\"x\"}"}]}},
            "conditions": [{"namespaces": ["orders"]}],
        },
    }))
    .unwrap();
    stores.create(&PostParams::default(), &store).await.unwrap();
    env.create::<SecretSync>(&format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: {name}, kind: ClusterSecretStore}}
  data: [{{secretKey: password, remoteRef: {{key: app/db, property: password}}}}]
"#
    ))
    .await;
    expect_failure(&env, "db", "StoreNotAllowed", "spec.conditions").await;
    assert!(env.version_secrets("db").await.is_empty());
    stores.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn two_syncs_claiming_one_target_the_later_one_conflicts() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml("first", "vault", "  target: {name: shared}"))
        .await;
    env.wait_version("first", 1).await;
    env.create::<SecretSync>(&sync_yaml("second", "vault", "  target: {name: shared}"))
        .await;
    expect_failure(&env, "second", "TargetConflict", "shared").await;
    // the first one's Secret is untouched and still its own
    let secret: Secret = env.secret("shared-v1").await.unwrap();
    assert_eq!(
        secret.metadata.labels.unwrap()["secretsync.io/sync"],
        "first"
    );
}

#[tokio::test]
async fn a_malformed_secretsync_is_reported_and_stalls_nothing() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
    use kube::core::GroupVersionKind;

    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    // An installed CRD that no longer matches the operator (a downgrade, say): the spec
    // schema accepts anything.
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(env.client.clone());
    let loosen = json!([{
        "op": "replace",
        "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec",
        "value": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    }]);
    crds.patch(
        "secretsyncs.secretsync.io",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(loosen).unwrap()),
    )
    .await
    .unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "secretsync.io",
        "v1alpha1",
        "SecretSync",
    ));
    let dynamic: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(env.client.clone(), "payments", &resource);
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": "bad"},
        "spec": {"storeRef": "not-an-object", "data": []},
    }))
    .unwrap();
    dynamic.create(&PostParams::default(), &bad).await.unwrap();

    // The watch keeps working for everyone else...
    env.create::<SecretSync>(&sync_yaml("good", "vault", ""))
        .await;
    env.wait_version("good", 1).await;
    // ...and the malformed one says what is wrong.
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let obj = dynamic.get("bad").await.unwrap();
        let ready = obj.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
        if let Some(ready) = ready {
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "InvalidSpec");
            let message = ready["message"].as_str().unwrap();
            assert!(message.contains("Expected struct StoreRef"), "{message}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no condition on the malformed object"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Deleting it is not blocked by our finalizer (it never got one).
    dynamic.delete("bad", &Default::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    while dynamic.get_opt("bad").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "malformed SecretSync not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// When recording a failure in the status fails too, the failure keeps its own retry class:
/// a missing store is retried on the long schedule (15 s, 30 s, …), not on the write
/// error's 1 s one. The status endpoint is taken away (the CRD loses its status
/// subresource), so every status write fails with 404, and each pass of the pipeline makes
/// one such write and fails; a held wake-up does not fail. So failed reconciles count the
/// passes.
#[tokio::test]
async fn a_failed_status_write_keeps_the_failures_backoff() {
    let env = Env::start("payments").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.patch(
        "secretsyncs.secretsync.io",
        &PatchParams::default(),
        &Patch::<()>::Json(
            serde_json::from_value(
                json!([{"op": "remove", "path": "/spec/versions/0/subresources/status"}]),
            )
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    env.create::<SecretSync>(&sync_yaml("db", "nowhere", ""))
        .await;
    let failed_passes = || env.operator().metrics.reconcile_errors();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while failed_passes() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status write was tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = failed_passes();
    // An observation window: with the write error's class, passes would come at ~1 s and ~3 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        failed_passes() - first,
        0,
        "the pipeline ran again within 4 s: the backoff followed the status write's error"
    );
}
