//! Instant sync through the operator's event listener (`--events-listen`): a signed webhook
//! after a `kv put` on a real OpenBao, a Pub/Sub push at the Secret Manager double, an
//! Event Grid delivery at the Key Vault double (with its validation handshake). Forged,
//! replayed, oversized and flooding requests are refused and read nothing; a store whose
//! events cannot arrive says so in `EventsReady`, and its refresh interval still syncs.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_testkit::gcp_double::{GcpDouble, PROJECT_ID};
use secretsync_testkit::openbao::OpenBao;
use serde_json::{Value, json};
use sha2::Sha256;

use secretsync_testkit::leak::LeakScan;

use crate::common::{
    DEADLINE, Env, Operator, create_deployment, example, logs, password, sync_yaml, wait_until,
};
use crate::user_actions::wait_template;
use crate::vault::vault_store_with;

const KEY: &str = "a-webhook-signing-key";

/// An env whose operator runs the event listener; returns the listener's base URL.
async fn listening(ns: &str) -> (Env, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let env =
        Env::without_operator(ns)
            .await
            .with_operator_options(secretsync_operator::RunOptions {
                events_listen: Some(listener),
                ..Operator::options()
            });
    (env, base)
}

/// `t=<at>,v1=<HMAC-SHA256 of "<at>.<body>">`, as `examples/webhook-instant/notify.sh` signs.
fn signature(key: &str, at: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{at}.{body}").as_bytes());
    format!("t={at},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn post(url: &str, signature: Option<&str>, body: String) -> StatusCode {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-secretsync-signature", signature);
    }
    request.send().await.unwrap().status()
}

/// An OpenBao with `app/db` = `one`; the examples' webhook store and SecretSync on it with
/// a Deployment, `db` at v1, the store's events ready. Returns the store's URL too.
async fn webhook_example() -> Option<(OpenBao, Env, String)> {
    let bao = OpenBao::start()?;
    bao.kv_put("secret", "app/db", &[("password", "one")]);
    let (env, base) = listening("payments").await;
    let example = |file: &str| example("webhook-instant", file, &bao.addr());
    env.string_secret("vault-token", &[("token", bao.root_token())])
        .await;
    // With the newline `kubectl create secret --from-file` keeps: the key is without it.
    env.string_secret("webhook-key", &[("key", &format!("{KEY}\n"))])
        .await;
    env.create::<SecretStore>(&example("store.yaml")).await;
    create_deployment(&env, "app", "db-v1").await;
    env.create::<SecretSync>(&example("secretsync.yaml")).await;
    env.wait_version("db", 1).await;
    env.wait_store_condition("vault", "EventsReady", "True", "EventsListening")
        .await;
    let url = format!("{base}/events/v1/namespaces/{}/secretstores/vault", env.ns);
    Some((bao, env, url))
}

/// `kv put` then a signed webhook naming `app/db`, with `refreshInterval: 1h`: the next
/// version holds the new value and the Deployment is rolled onto it. Then each forged
/// request — no signature, a wrong one, one older than five minutes, the good one replayed,
/// a body over 64 KiB — is refused, counted, and reads nothing: the value changed again at
/// OpenBao stays unsynced.
#[tokio::test]
async fn a_signed_webhook_syncs_at_once_and_forged_ones_read_nothing() {
    let Some((bao, env, url)) = webhook_example().await else {
        return;
    };

    bao.kv_put("secret", "app/db", &[("password", "two")]);
    let body = json!({"keys": ["app/db"]}).to_string();
    let good = signature(KEY, now(), &body);
    assert_eq!(
        post(&url, Some(&good), body.clone()).await,
        StatusCode::ACCEPTED
    );
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
    wait_template(&env, "app", "db-v2").await;

    let metrics = &env.operator().metrics;
    // The version the event made was timed from the event.
    let timed = metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("secretsync_event_to_secret_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(timed, Some(1), "event_to_secret observations");
    let webhook = secretsync_api::EventSource::Webhook;
    bao.kv_put("secret", "app/db", &[("password", "three")]);
    let reads_before = bao.audited_responses("secret/data/app/db");
    let old = now() - 301;
    let forged = [
        (None, body.clone(), StatusCode::UNAUTHORIZED),
        (
            Some(signature("not-the-key", now(), &body)),
            body.clone(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(signature(KEY, old, &body)),
            body.clone(),
            StatusCode::UNAUTHORIZED,
        ),
        (Some(good.clone()), body.clone(), StatusCode::UNAUTHORIZED),
        (
            Some(signature(KEY, now(), &"x".repeat(70_000))),
            "x".repeat(70_000),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (i, (signature, body, expected)) in forged.into_iter().enumerate() {
        assert_eq!(
            post(&url, signature.as_deref(), body).await,
            expected,
            "forgery {i}"
        );
    }
    assert_eq!(metrics.store_events_of(webhook, "refused"), 5);
    // A request to the same store that is genuine comes after them: had a forgery woken a
    // read, v3 would be made before this one's.
    let tell = json!({"keys": ["app/other"]}).to_string();
    let signed = signature(KEY, now(), &tell);
    assert_eq!(post(&url, Some(&signed), tell).await, StatusCode::ACCEPTED);
    wait_until("the genuine event counted", DEADLINE, || {
        metrics.store_events_of(webhook, "unmatched") >= 1
    })
    .await;
    assert_eq!(bao.audited_responses("secret/data/app/db"), reads_before);
    assert_eq!(env.status("db").await.current_version, Some(2));
    assert!(env.secret("db-v3").await.is_none());

    // Neither the signing key nor a signature shows in the logs, events, statuses or
    // metrics (the key's own Secret apart: the scan skips Secrets' data).
    let signature_hex = good.split("v1=").nth(1).unwrap().to_owned();
    let mut scan = LeakScan::new([KEY.to_owned(), signature_hex]);
    let logs = logs().contents();
    scan.items("operator debug log lines", logs.lines());
    scan.text("metrics", &metrics.encode());
    scan.cluster(&env.client).await;
    eprintln!("{}", scan.assert_clean());
}

/// A flood of requests at the listener: past its burst (200) and rate (100/s) they are
/// refused with 429 before any signature is checked; no more pass than the bucket allows
/// over the time the flood took.
#[tokio::test]
async fn a_flood_of_requests_is_refused_past_the_listeners_rate() {
    let Some((_bao, _env, url)) = webhook_example().await else {
        return;
    };
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let sends = (0..1000).map(|_| {
        let request = client.post(&url).body("{}");
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(sends).await;
    let took = started.elapsed().as_secs_f64();
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    let (limited, unsigned) = (
        count(StatusCode::TOO_MANY_REQUESTS),
        count(StatusCode::UNAUTHORIZED),
    );
    assert_eq!(limited + unsigned, 1000, "{statuses:?}");
    let allowed = 200.0 + 100.0 * took;
    assert!(
        limited > 0 && unsigned as f64 <= allowed + 1.0,
        "{unsigned} checked, {limited} refused for the rate in {took:.2} s (at most {allowed:.0} may pass)"
    );
}

/// Secret Manager's notification for a new version, pushed by a Pub/Sub push subscription
/// with the store's token: the next version is made at once with `refreshInterval: 1h`; a
/// push without the token is refused.
#[tokio::test]
async fn a_pubsub_push_syncs_a_new_secret_manager_version_at_once() {
    const ACCOUNT: &str = "secretsync@secretsync-test.iam.gserviceaccount.com";
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", br#"{"password":"one"}"#);
    let (env, base) = listening("payments").await;
    env.string_secret("gcp", &[("key.json", &double.service_account_key(ACCOUNT))])
        .await;
    env.string_secret("push-token", &[("token", "a-push-token")])
        .await;
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "gcp"},
        "spec": {"provider": {"gcpsm": {
            "projectID": PROJECT_ID, "endpoint": double.endpoint(),
            "auth": {"secretRef": {"secretAccessKeySecretRef": {"name": "gcp", "key": "key.json"}}}}},
            "events": {"source": "GcpPubSub", "secretRef": {"name": "push-token", "key": "token"}}},
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&Default::default(), &store)
        .await
        .unwrap();
    env.create::<SecretSync>(
        &sync_yaml("db", "gcp", "  refreshInterval: 1h").replace("app/db", "db"),
    )
    .await;
    env.wait_version("db", 1).await;
    env.wait_store_condition("gcp", "EventsReady", "True", "EventsListening")
        .await;

    double.add_version("db", br#"{"password":"two"}"#);
    let push = json!({"message": {"attributes": {"eventType": "SECRET_VERSION_ADD",
        "secretId": "projects/123456789/secrets/db", "versionId": "projects/123456789/secrets/db/versions/2",
        "dataFormat": "JSON_API_V1"}, "data": "e30=", "messageId": "1", "publishTime": "2026-12-07T10:00:00Z"},
        "subscription": "projects/secretsync-test/subscriptions/secretsync"});
    let url = format!("{base}/events/v1/namespaces/{}/secretstores/gcp", env.ns);
    assert_eq!(
        post(&url, None, push.to_string()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&format!("{url}?token=wrong"), None, push.to_string()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(env.status("db").await.current_version, Some(1));
    let pushed = post(&format!("{url}?token=a-push-token"), None, push.to_string()).await;
    assert_eq!(pushed, StatusCode::ACCEPTED);
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
}

/// Event Grid's subscription validation is answered with its code; then Key Vault's
/// `SecretNewVersionCreated` makes the next version at once with `refreshInterval: 1h`.
#[tokio::test]
async fn an_event_grid_delivery_syncs_a_new_key_vault_version_at_once() {
    let Some(double) = secretsync_testkit::azure_double::AzureDouble::start().await else {
        return;
    };
    double.set_secret("app-db", r#"{"password":"one"}"#, &[]);
    let (env, base) = listening("payments").await;
    env.string_secret("grid-token", &[("token", "a-grid-token")])
        .await;
    crate::azure::azure_store_with(
        &env,
        &double,
        secretsync_testkit::azure_double::CLIENT_SECRET,
        json!({"events": {"source": "AzureEventGrid", "secretRef": {"name": "grid-token", "key": "token"}}}),
    )
    .await;
    env.create::<SecretSync>(
        &sync_yaml("db", "azure", "  refreshInterval: 1h").replace("app/db", "app-db"),
    )
    .await;
    env.wait_version("db", 1).await;
    env.wait_store_condition("azure", "EventsReady", "True", "EventsListening")
        .await;
    let url = format!(
        "{base}/events/v1/namespaces/{}/secretstores/azure?token=a-grid-token",
        env.ns
    );

    let validation = json!([{"id": "v", "topic": "/subscriptions/s", "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-12-07T10:00:00Z",
        "data": {"validationCode": "0123-abcd", "validationUrl": "https://example.invalid/validate"},
        "dataVersion": "2", "metadataVersion": "1"}]);
    let answer: Value = reqwest::Client::new()
        .post(&url)
        .header("aeg-event-type", "SubscriptionValidation")
        .json(&validation)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"validationResponse": "0123-abcd"}));

    double.set_secret("app-db", r#"{"password":"two"}"#, &[]);
    let vault = double
        .url()
        .split("://")
        .nth(1)
        .and_then(|h| h.split(['.', ':', '/']).next())
        .unwrap()
        .to_owned();
    let event = json!([{"id": "e", "topic": "/subscriptions/s/providers/Microsoft.KeyVault/vaults/v",
        "subject": "app-db", "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
        "eventTime": "2026-12-07T10:00:01Z", "dataVersion": "1", "metadataVersion": "1",
        "data": {"Id": "https://v.vault.azure.net/secrets/app-db/2", "VaultName": vault,
            "ObjectType": "Secret", "ObjectName": "app-db", "Version": "2"}}]);
    let delivered = reqwest::Client::new()
        .post(&url)
        .header("aeg-event-type", "Notification")
        .json(&event)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(delivered, StatusCode::ACCEPTED);
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
}

/// A store whose events cannot arrive says why in `EventsReady`: its key Secret missing
/// (until it is created), the operator without the listener its source needs, OpenBao's
/// audit device pointing where nobody listens. Meanwhile the refresh interval syncs.
#[tokio::test]
async fn events_ready_says_why_events_cannot_arrive_and_the_refresh_still_syncs() {
    let Some(bao) = OpenBao::start() else {
        return;
    };
    bao.kv_put("secret", "app/db", &[("password", "one")]);
    let (env, _) = listening("payments").await;
    let hook =
        json!({"events": {"source": "Webhook", "secretRef": {"name": "hook", "key": "key"}}});
    vault_store_with(&env, "hooked", &bao.addr(), bao.root_token(), hook).await;
    let message = env
        .wait_store_condition("hooked", "EventsReady", "False", "EventSecretMissing")
        .await;
    assert!(message.contains(&format!("{}/hook", env.ns)), "{message}");
    env.string_secret("hook", &[("key", KEY)]).await;
    env.wait_store_condition("hooked", "EventsReady", "True", "EventsListening")
        .await;
    // This operator has no audit listener.
    let audit = json!({"events": {"source": "OpenBaoAudit"}});
    vault_store_with(&env, "audited", &bao.addr(), bao.root_token(), audit).await;
    let message = env
        .wait_store_condition("audited", "EventsReady", "False", "EventListenerOff")
        .await;
    assert!(message.contains("--openbao-audit-listen"), "{message}");
    env.create::<SecretSync>(&sync_yaml("db", "audited", "  refreshInterval: 2s"))
        .await;
    env.wait_version("db", 1).await;
    bao.kv_put("secret", "app/db", &[("password", "two")]);
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
}

/// OpenBao's socket device writes where no operator listens: the store's check is audited
/// but nothing reaches this operator's listener, so `EventsReady=False NoAuditEntries`; a
/// `kv put` is still synced, at the SecretSync's refresh slot.
#[tokio::test]
async fn an_audit_device_that_does_not_reach_the_operator_is_reported() {
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = elsewhere.local_addr().unwrap();
    drop(elsewhere);
    let Some(bao) = OpenBao::start_with_socket_audit(&nowhere.to_string()) else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let env = Env::without_operator("payments")
        .await
        .with_operator_options(secretsync_operator::RunOptions {
            openbao_audit: Some(listener),
            ..Operator::options()
        });
    let audit = json!({"events": {"source": "OpenBaoAudit"}});
    vault_store_with(&env, "vault", &bao.addr(), bao.root_token(), audit).await;
    let message = env
        .wait_store_condition("vault", "EventsReady", "False", "NoAuditEntries")
        .await;
    assert!(message.contains("bao audit list"), "{message}");
    bao.kv_put("secret", "app/db", &[("password", "one")]);
    env.create::<SecretSync>(&sync_yaml("db", "vault", "  refreshInterval: 2s"))
        .await;
    env.wait_version("db", 1).await;
    bao.kv_put("secret", "app/db", &[("password", "two")]);
    env.wait_version("db", 2).await;
    assert_eq!(password(&env.secret("db-v2").await.unwrap()), b"two");
    assert_eq!(
        env.operator()
            .metrics
            .store_events_of(secretsync_api::EventSource::OpenBaoAudit, "matched"),
        0,
        "no event reached this operator"
    );
}

/// Each event source without what it needs is refused by the API server (the CRD's CEL
/// rule), with a message naming what is missing; with it, the store is stored.
#[tokio::test]
async fn an_event_source_without_what_it_needs_is_refused_by_the_api_server() {
    let env = Env::without_operator("payments").await;
    let vault = json!({"vault": {"server": "http://127.0.0.1:8200", "path": "secret",
        "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}});
    let aws = json!({"aws": {"region": "eu-west-1"}});
    let key = r#""secretRef": {"name": "k", "key": "key"}"#;
    let queue = r#""queueURL": "http://127.0.0.1:4566/000000000000/events""#;
    // name, provider, the fields of spec.events besides `source`, whether it is valid
    let cases = [
        ("no-key", &vault, "Webhook", "", false),
        ("sqs-on-vault", &vault, "AwsSqs", queue, false),
        ("sqs-no-queue", &aws, "AwsSqs", "", false),
        ("pubsub-on-aws", &aws, "GcpPubSub", key, false),
        ("grid-on-aws", &aws, "AzureEventGrid", key, false),
        ("audit-on-aws", &aws, "OpenBaoAudit", "", false),
        ("hook-on-aws", &aws, "Webhook", key, true),
        ("sqs-on-aws", &aws, "AwsSqs", queue, true),
        ("audit-on-vault", &vault, "OpenBaoAudit", "", true),
    ];
    for (name, provider, source, fields, valid) in cases {
        let fields = if fields.is_empty() {
            String::new()
        } else {
            format!(", {fields}")
        };
        let events: Value =
            serde_json::from_str(&format!(r#"{{"source": "{source}"{fields}}}"#)).unwrap();
        let store: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"provider": provider, "events": events},
        }))
        .unwrap();
        let created = env
            .api::<SecretStore>()
            .create(&Default::default(), &store)
            .await;
        match (created, valid) {
            (Ok(_), true) => {}
            (Err(kube::Error::Api(answer)), false) => assert!(
                answer
                    .message
                    .contains("events: OpenBaoAudit needs a vault provider"),
                "{name}: {}",
                answer.message
            ),
            (other, _) => panic!("{name}: expected valid={valid}, got {other:?}"),
        }
    }
}
