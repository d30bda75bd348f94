//! Instant sync from AWS: Secrets Manager's CloudTrail events, routed by an EventBridge rule
//! (directly, or fanned out through SNS) to an SQS queue that the operator long-polls with
//! the store's own AWS settings (`spec.events.queueURL`).
//!
//! A message names a secret; every SecretSync reading it through the store is woken for a
//! read. The message is deleted only once the read it caused has run, so an operator that
//! stops in between leaves it in the queue, and it comes back after the queue's visibility
//! timeout: at least once. Messages for one secret are coalesced like every source's
//! events ([`COALESCE_WINDOW`]): one read at the start of a burst, at most one at its end.
//! A message is never logged: only its outcome is counted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use kube::Client;
use secretsync_api::{EventSource, Provider, Reason, SecretStoreSpec};
use secretsync_providers::ConnectContext;
use secretsync_providers::aws::{MAX_RECEIVE_WAIT, Message, Queue};
use serde_json::Value;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::coalesce::COALESCE_WINDOW;
use super::readiness::{EventsHealth, EventsState};
use super::wakers::{Wakers, Woken};
use crate::backend::health::BackendHealth;
use crate::cache::syncs::StoreKey;

/// The API calls whose success changes what a read of the secret returns.
const CHANGES: [&str; 7] = [
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "RotateSecret",
    "RestoreSecret",
    "DeleteSecret",
    "CreateSecret",
];

/// A secret an event says changed: its name, and the ARN it was named by, if any (a
/// SecretSync may read it by either).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub name: String,
    pub arn: Option<String>,
    /// When the event says the change happened (EventBridge's `time`, else CloudTrail's
    /// `eventTime`).
    pub at: Option<Timestamp>,
}

/// The secret a message names, `None` for anything else (another service's event, a
/// failed call, a read, a test message): such a message is deleted unread.
pub fn changed(body: &str) -> Option<Changed> {
    let mut event: Value = serde_json::from_str(body).ok()?;
    // Fanned out through SNS: the EventBridge event is the notification's message.
    if event["Type"] == "Notification" {
        event = serde_json::from_str(event["Message"].as_str()?).ok()?;
    }
    let detail = &event["detail"];
    if event["source"] != "aws.secretsmanager"
        || detail["eventSource"] != "secretsmanager.amazonaws.com"
    {
        return None;
    }
    // CloudTrail records refused and failed calls too: nothing changed then.
    if detail["errorCode"].as_str().is_some_and(|c| !c.is_empty()) {
        return None;
    }
    let name = detail["eventName"].as_str()?;
    let named = match event["detail-type"].as_str()? {
        "AWS API Call via CloudTrail" if CHANGES.contains(&name) => {
            let (request, response) = (&detail["requestParameters"], &detail["responseElements"]);
            // What AWS answered names the secret exactly (a full ARN, its name); the
            // request only as its caller did.
            let text = |v: &Value, keys: &[&str]| {
                keys.iter()
                    .find_map(|k| v[*k].as_str().filter(|s| !s.is_empty()))
                    .map(str::to_owned)
            };
            let arn = text(response, &["arn", "ARN"]);
            let by_name = text(response, &["name", "Name"]);
            let asked = text(request, &["secretId", "SecretId", "name", "Name"]);
            return secret(by_name, arn, asked).map(|c| c.at(&event));
        }
        "AWS Service Event via CloudTrail" if name == "RotationSucceeded" => {
            detail["additionalEventData"]["SecretId"].as_str()?
        }
        _ => return None,
    };
    secret(None, None, Some(named.to_owned())).map(|c| c.at(&event))
}

impl Changed {
    fn at(self, event: &Value) -> Changed {
        let time = |v: &Value| v.as_str().and_then(|t| t.parse::<Timestamp>().ok());
        Changed {
            at: time(&event["time"]).or_else(|| time(&event["detail"]["eventTime"])),
            ..self
        }
    }
}

/// The secret from what an event says: its name if it gives one, else the name in its ARN;
/// the ARN it was named by, if any.
fn secret(name: Option<String>, arn: Option<String>, asked: Option<String>) -> Option<Changed> {
    let arn = arn.or_else(|| asked.clone().filter(|a| a.starts_with("arn:")));
    let name = name
        .or_else(|| arn.as_deref().and_then(name_in_arn))
        .or(asked.filter(|a| !a.starts_with("arn:")))?;
    Some(Changed {
        name,
        arn,
        at: None,
    })
}

/// The secret name in a Secrets Manager ARN,
/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-<6 characters>`: AWS
/// appends a dash and six random characters to the name. A partial ARN (without them)
/// cannot be told from a name that ends that way; AWS's events carry full ones.
pub fn name_in_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let [_, _, service, _, _, kind, rest] = parts.as_slice() else {
        return None;
    };
    if *service != "secretsmanager" || *kind != "secret" || rest.is_empty() {
        return None;
    }
    let cut = rest
        .len()
        .checked_sub(7)
        .filter(|at| rest.is_char_boundary(*at));
    let name = match cut.map(|at| rest.split_at(at)) {
        Some((name, suffix))
            if !name.is_empty()
                && suffix.starts_with('-')
                && suffix[1..].chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            name
        }
        _ => rest,
    };
    Some(name.to_owned())
}

/// How often in-flight reads are looked at (the delete waits for them).
const TICK: Duration = Duration::from_millis(50);
/// A message whose read has not run this long after it was asked for is left in the
/// queue: it comes back after the visibility timeout and asks again.
const READ_DEADLINE: Duration = Duration::from_secs(30);
/// Added to the time an event gives its change: CloudTrail's and EventBridge's times are
/// cut to the second, and AWS's clock and the operator's may differ a little.
const EVENT_TIME_MARGIN: Duration = Duration::from_secs(2);
/// How long what a read covered is remembered for late copies of the events it answered.
const COVERED_KEPT: Duration = Duration::from_secs(600);
/// Backoff after a failed receive: from the first to the last, doubling.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// One store generation's poller: what it reads with and reports to.
pub struct Poller {
    pub wakers: Wakers,
    pub health: Arc<EventsHealth>,
    pub backend: Arc<BackendHealth>,
    pub client: Client,
    pub store: StoreKey,
    pub uid: String,
    pub generation: i64,
    pub spec: SecretStoreSpec,
}

/// Starts the poller; it runs until aborted (a new generation, the store gone).
pub fn spawn(poller: Poller) -> AbortHandle {
    tokio::spawn(poller.run()).abort_handle()
}

/// What the poller knows of one secret's messages.
#[derive(Default)]
struct Secret {
    /// When its readers were last asked to read: the next ask waits for the end of the
    /// window.
    asked: Option<Timestamp>,
    /// Every reader has read the backend at or after this.
    covered: Option<Timestamp>,
    /// Messages waiting for the next ask, and the ARNs they named the secret by.
    pending: Vec<Received>,
    arns: BTreeSet<String>,
    asked_for: Vec<Asked>,
}

/// A message waiting for a read.
struct Received {
    /// A read that starts at or after this sees the change it reports.
    since: Timestamp,
    /// When the event says the change happened, with [`EVENT_TIME_MARGIN`].
    reported: Option<Timestamp>,
    receipt: String,
}

/// A read asked for: those it woke, since when, and the messages it answers.
struct Asked {
    woken: Vec<Woken>,
    since: Timestamp,
    until: Timestamp,
    receipts: Vec<String>,
}

/// Per secret name, the messages waiting for reads. Each message needs a read that starts
/// after the change it reports: after it was received, or after the change's time in the
/// event. So a read covers every message received before it was asked for, and every
/// message about a change before it, however late it comes: a thousand copies of one event
/// cost a read at the first and one after the change's time, not one per copy.
#[derive(Default)]
struct Rounds {
    secrets: HashMap<String, Secret>,
}

impl Rounds {
    /// A message received at `now` about `changed`; returns its receipt when no read is
    /// needed (one since the change already ran).
    fn offer(&mut self, changed: Changed, receipt: String, now: Timestamp) -> Option<String> {
        let reported = changed.at.map(|at| at + EVENT_TIME_MARGIN);
        let since = reported.map_or(now, |r| r.min(now));
        let secret = self.secrets.entry(changed.name).or_default();
        if secret.covered.is_some_and(|c| c >= since) {
            return Some(receipt);
        }
        secret.arns.extend(changed.arn);
        if let Some(asked) = secret.asked_for.iter_mut().find(|a| a.since >= since) {
            asked.receipts.push(receipt);
        } else {
            secret.pending.push(Received {
                since,
                reported,
                receipt,
            });
        }
        None
    }

    /// Asks for the reads that are due (`ask` wakes a secret's readers, by name and ARNs);
    /// hands over the receipts of messages whose reads ran (`read`: whether those woken
    /// read since), and forgets those whose reads did not run in time.
    fn step(
        &mut self,
        now: Timestamp,
        mut ask: impl FnMut(&str, &BTreeSet<String>, usize) -> Vec<Woken>,
        read: impl Fn(&[Woken], Timestamp) -> bool,
        delete: &mut Vec<String>,
    ) {
        self.secrets.retain(|name, secret| {
            secret.asked_for.retain_mut(|asked| {
                if read(&asked.woken, asked.since) {
                    secret.covered = secret.covered.max(Some(asked.since));
                    delete.append(&mut asked.receipts);
                    false
                } else {
                    // Past its deadline the messages stay in the queue: they come back
                    // after the visibility timeout and ask again.
                    now < asked.until
                }
            });
            if let Some(covered) = secret.covered {
                secret.pending.retain_mut(|received| {
                    let done = received.since <= covered;
                    if done {
                        delete.push(std::mem::take(&mut received.receipt));
                    }
                    !done
                });
            }
            if !secret.pending.is_empty() && secret.due(now) {
                let arns = std::mem::take(&mut secret.arns);
                let woken = ask(name, &arns, secret.pending.len());
                secret.asked = Some(now);
                secret.asked_for.push(Asked {
                    woken,
                    since: now,
                    until: now + READ_DEADLINE,
                    receipts: secret.pending.drain(..).map(|r| r.receipt).collect(),
                });
            }
            // What was read is kept a while for late copies of the same events.
            !secret.pending.is_empty()
                || !secret.asked_for.is_empty()
                || secret.asked.is_some_and(|asked| now < asked + COVERED_KEPT)
        });
    }
}

impl Secret {
    /// Whether the pending messages' read is due: at once for the first; else at the end
    /// of the window, or a little later when the change an event reports is that recent,
    /// so the read also covers the copies of it still on their way.
    fn due(&self, now: Timestamp) -> bool {
        let Some(asked) = self.asked else {
            return true;
        };
        let window = asked + COALESCE_WINDOW;
        let reported = self.pending.iter().filter_map(|r| r.reported).max();
        let at = reported.map_or(window, |r| r.min(window + EVENT_TIME_MARGIN).max(window));
        now >= at
    }
}

impl Poller {
    async fn run(self) {
        let mut retry = FIRST_RETRY;
        let queue = loop {
            match self.connect().await {
                Ok(queue) => break Arc::new(queue),
                Err(error) => {
                    self.report(EventsState::not_ready(
                        Reason::EventSourceUnavailable,
                        unavailable(&error),
                    ));
                    tokio::time::sleep(retry).await;
                    if self.wakers.wake.is_closed() {
                        return;
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        };
        let mut retry = FIRST_RETRY;
        let mut receiving = Box::pin(receive(queue.clone(), Duration::ZERO));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds = Rounds::default();
        let mut delete = Vec::new();
        loop {
            tokio::select! {
                received = &mut receiving => {
                    let pause = match received {
                        Ok(messages) => {
                            retry = FIRST_RETRY;
                            self.report(EventsState::ready(format!("receiving from {}", queue.url())));
                            self.take(messages, &mut rounds, &mut delete);
                            Duration::ZERO
                        }
                        Err(error) => {
                            self.report(EventsState::not_ready(
                                Reason::EventSourceUnavailable,
                                unavailable(&error),
                            ));
                            let pause = retry;
                            retry = (retry * 2).min(LAST_RETRY);
                            pause
                        }
                    };
                    receiving = Box::pin(receive(queue.clone(), pause));
                }
                _ = tick.tick() => {}
            }
            // The controllers that take the wakes have stopped (leadership lost, the
            // operator stopping): nothing would read, so nothing is taken from the queue.
            if self.wakers.wake.is_closed() {
                return;
            }
            rounds.step(
                Timestamp::now(),
                |name, arns, messages| self.ask(name, arns, messages),
                |woken, since| self.wakers.all_read_since(woken, since),
                &mut delete,
            );
            if !delete.is_empty() {
                let receipts = std::mem::take(&mut delete);
                if let Err(error) = queue.delete(&receipts).await {
                    // They come back after the visibility timeout and cost a read each.
                    warn!(store = ?self.store, %error, "could not delete handled SQS messages");
                }
            }
        }
    }

    async fn connect(&self) -> secretsync_providers::Result<Queue> {
        let (Provider::Aws(aws), Some(url)) = (
            &self.spec.provider,
            self.spec
                .events
                .as_ref()
                .and_then(|e| e.queue_url.as_deref()),
        ) else {
            return Err(secretsync_providers::ProviderError::InvalidConfig(
                "events.source AwsSqs needs an aws provider and events.queueURL".into(),
            ));
        };
        let ctx = ConnectContext::new(self.client.clone(), self.store.1.clone());
        Queue::connect(aws, url, &ctx).await
    }

    /// The store's `EventsReady` for this generation; its status is written again when it
    /// changed.
    fn report(&self, state: EventsState) {
        if self.health.report(&self.uid, self.generation, state) {
            self.backend.restatus(&self.store);
        }
    }

    /// Received messages: each names a secret (a read is asked for, unless one since its
    /// change ran) or nothing (deleted at once).
    fn take(&self, messages: Vec<Message>, rounds: &mut Rounds, delete: &mut Vec<String>) {
        let metrics = &self.wakers.ctx.metrics;
        let now = Timestamp::now();
        for message in messages {
            let Some(changed) = changed(&message.body) else {
                metrics.store_event(EventSource::AwsSqs, "ignored");
                delete.push(message.receipt);
                continue;
            };
            delete.extend(rounds.offer(changed, message.receipt, now));
        }
    }

    /// Wakes the readers of secret `name` (and of the ARNs it was named by).
    fn ask(&self, name: &str, arns: &BTreeSet<String>, messages: usize) -> Vec<Woken> {
        let store = &self.store;
        let mut woken = self.wakers.changed(EventSource::AwsSqs, store, name);
        for arn in arns {
            woken.extend(self.wakers.changed(EventSource::AwsSqs, store, arn));
        }
        let outcome = if woken.is_empty() {
            "unmatched"
        } else {
            "matched"
        };
        self.wakers
            .ctx
            .metrics
            .store_event(EventSource::AwsSqs, outcome);
        debug!(?store, woken = woken.len(), messages, "SQS change event");
        woken
    }
}

/// A receive after `pause` (a failure's backoff), long-polling.
async fn receive(queue: Arc<Queue>, pause: Duration) -> secretsync_providers::Result<Vec<Message>> {
    tokio::time::sleep(pause).await;
    queue.receive(MAX_RECEIVE_WAIT).await
}

fn unavailable(error: &secretsync_providers::ProviderError) -> String {
    format!("{error}; changes are synced at the refresh interval meanwhile")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-AbC123";

    /// What EventBridge delivers to SQS for a Secrets Manager call CloudTrail recorded.
    fn api_call(name: &str, request: Value, response: Value) -> Value {
        secretsync_testkit::moto::cloudtrail_event(name, request, response, "2026-12-07T10:00:00Z")
    }

    /// The secret a message names: its name and ARN.
    fn named(body: &str) -> Option<(String, Option<String>)> {
        changed(body).map(|c| (c.name, c.arn))
    }

    fn by_name(name: &str) -> Option<(String, Option<String>)> {
        Some((name.into(), None))
    }

    fn by_arn() -> Option<(String, Option<String>)> {
        Some(("app/db".into(), Some(ARN.into())))
    }

    #[test]
    fn each_change_names_its_secret() {
        let put = api_call(
            "PutSecretValue",
            json!({"secretId": "app/db", "clientRequestToken": "t",
                "secretString": "HIDDEN_DUE_TO_SECURITY_REASONS"}),
            json!({"arn": ARN, "versionId": "3b8e3f7c-0c6e-4a57-9d8b-1f2a3b4c5d6e"}),
        );
        assert_eq!(named(&put.to_string()), by_arn());
        let at = changed(&put.to_string()).unwrap().at;
        assert_eq!(at, Some("2026-12-07T10:00:00Z".parse().unwrap()));
        // A response without the ARN: the name asked for.
        let put = api_call("PutSecretValue", json!({"secretId": "app/db"}), Value::Null);
        assert_eq!(named(&put.to_string()), by_name("app/db"));
        // By ARN in the request.
        for name in [
            "UpdateSecret",
            "UpdateSecretVersionStage",
            "RotateSecret",
            "RestoreSecret",
            "DeleteSecret",
        ] {
            let event = api_call(name, json!({"secretId": ARN}), Value::Null);
            assert_eq!(named(&event.to_string()), by_arn(), "{name}");
        }
        let created = api_call(
            "CreateSecret",
            json!({"name": "app/db", "secretString": "HIDDEN_DUE_TO_SECURITY_REASONS"}),
            json!({"arn": ARN, "name": "app/db", "versionId": "v"}),
        );
        assert_eq!(named(&created.to_string()), by_arn());
        let rotated = json!({
            "version": "0", "detail-type": "AWS Service Event via CloudTrail",
            "source": "aws.secretsmanager",
            "detail": {"eventSource": "secretsmanager.amazonaws.com",
                "eventName": "RotationSucceeded", "eventType": "AwsServiceEvent",
                "additionalEventData": {"SecretId": ARN}},
        });
        assert_eq!(named(&rotated.to_string()), by_arn());
    }

    #[test]
    fn an_sns_notification_carries_the_event() {
        let event = api_call("PutSecretValue", json!({"secretId": "app/db"}), Value::Null);
        let notification = json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:secrets",
            "Message": event.to_string(),
            "Timestamp": "2026-12-07T10:00:01.000Z",
            "SignatureVersion": "1",
        });
        assert_eq!(named(&notification.to_string()), by_name("app/db"));
    }

    #[test]
    fn anything_else_is_ignored() {
        let read = api_call("GetSecretValue", json!({"secretId": "app/db"}), Value::Null);
        assert_eq!(named(&read.to_string()), None, "a read changes nothing");
        let mut failed = api_call("PutSecretValue", json!({"secretId": "app/db"}), Value::Null);
        failed["detail"]["errorCode"] = json!("AccessDenied");
        assert_eq!(named(&failed.to_string()), None, "a refused call");
        let mut other = api_call("PutParameter", json!({"name": "x"}), Value::Null);
        other["source"] = json!("aws.ssm");
        other["detail"]["eventSource"] = json!("ssm.amazonaws.com");
        assert_eq!(named(&other.to_string()), None);
        let rotation_failed = json!({
            "detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
            "detail": {"eventSource": "secretsmanager.amazonaws.com",
                "eventName": "RotationFailed", "additionalEventData": {"SecretId": ARN}},
        });
        assert_eq!(named(&rotation_failed.to_string()), None);
        // SQS's own test message when a rule or subscription is set up, and junk.
        assert_eq!(named(r#"{"Event":"s3:TestEvent"}"#), None);
        assert_eq!(named("not json"), None);
        assert_eq!(
            changed(r#"{"Type":"Notification","Message":"not json"}"#),
            None
        );
        let nameless = api_call("PutSecretValue", json!({}), Value::Null);
        assert_eq!(named(&nameless.to_string()), None);
    }

    #[test]
    fn an_arn_names_the_secret_without_the_suffix_aws_appends() {
        assert_eq!(name_in_arn(ARN).as_deref(), Some("app/db"));
        assert_eq!(
            name_in_arn("arn:aws-cn:secretsmanager:cn-north-1:1:secret:db-prod-x1Y2z3").as_deref(),
            Some("db-prod")
        );
        // A partial ARN keeps its whole name.
        assert_eq!(
            name_in_arn("arn:aws:secretsmanager:us-east-1:1:secret:app/db").as_deref(),
            Some("app/db")
        );
        assert_eq!(name_in_arn("arn:aws:ssm:us-east-1:1:parameter/x"), None);
        assert_eq!(name_in_arn("app/db"), None);
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn db(reported: Option<Timestamp>) -> Changed {
        Changed {
            name: "app/db".into(),
            arn: None,
            at: reported,
        }
    }

    /// Steps `rounds` at `now`, its reads done when `reads_done` says so; returns the asks
    /// made and the receipts handed over.
    fn step(rounds: &mut Rounds, now: Timestamp, reads_done: bool) -> (usize, Vec<String>) {
        let (mut asks, mut delete) = (0, Vec::new());
        rounds.step(
            now,
            |_, _, _| {
                asks += 1;
                Vec::new()
            },
            |_, _| reads_done,
            &mut delete,
        );
        (asks, delete)
    }

    #[test]
    fn a_message_is_handed_over_only_once_its_read_ran() {
        let mut rounds = Rounds::default();
        assert_eq!(rounds.offer(db(None), "r1".into(), at(0)), None);
        assert_eq!(
            step(&mut rounds, at(0), false),
            (1, vec![]),
            "asked at once"
        );
        assert_eq!(
            step(&mut rounds, at(50), false),
            (0, vec![]),
            "not read yet"
        );
        assert_eq!(step(&mut rounds, at(100), true), (0, vec!["r1".into()]));
        // Its read never runs: the message stays queued.
        rounds.offer(db(None), "r2".into(), at(5_000));
        assert_eq!(step(&mut rounds, at(5_000), false).0, 1);
        let late = at(5_000) + READ_DEADLINE;
        assert_eq!(step(&mut rounds, late, false), (0, vec![]));
        assert_eq!(step(&mut rounds, late, true), (0, vec![]), "given up");
    }

    #[test]
    fn a_thousand_copies_of_one_event_cost_two_reads() {
        let mut rounds = Rounds::default();
        let changed_at = Some(at(0));
        let (mut asks, mut handed) = (0, 0);
        // Ten copies every 50 ms for five seconds, each read taking 100 ms.
        let mut asked_at = Vec::<Timestamp>::new();
        for tick in 0..100 {
            let now = at(100 + tick * 50);
            for copy in 0..10 {
                let receipt = format!("{tick}.{copy}");
                handed += rounds.offer(db(changed_at), receipt, now).iter().count();
            }
            let read = asked_at
                .last()
                .is_some_and(|a| now >= *a + Duration::from_millis(100));
            let (n, delete) = step(&mut rounds, now, read);
            if n > 0 {
                asked_at.push(now);
            }
            asks += n;
            handed += delete.len();
        }
        let (n, delete) = step(&mut rounds, at(10_000), true);
        asks += n;
        handed += delete.len();
        assert_eq!(handed, 1000, "every message handed over");
        assert_eq!(asks, 2, "read at {asked_at:?}");
        // The second read waited for the change's time (plus the margin), so it covers
        // the copies still coming.
        assert!(asked_at[1] >= at(0) + EVENT_TIME_MARGIN, "{asked_at:?}");
    }

    #[test]
    fn messages_without_a_time_wait_for_the_end_of_the_window() {
        let mut rounds = Rounds::default();
        rounds.offer(db(None), "a".into(), at(0));
        assert_eq!(step(&mut rounds, at(0), false).0, 1);
        // Received after that read was asked for: it needs one of its own.
        rounds.offer(db(None), "b".into(), at(10));
        rounds.offer(db(None), "c".into(), at(20));
        assert_eq!(step(&mut rounds, at(200), true), (0, vec!["a".into()]));
        assert_eq!(step(&mut rounds, at(999), true).0, 0, "within the window");
        assert_eq!(
            step(&mut rounds, at(1_000), false).0,
            1,
            "one read for both"
        );
        assert_eq!(
            step(&mut rounds, at(1_100), true),
            (0, vec!["b".into(), "c".into()])
        );
        // An event about a change the last read already saw costs nothing.
        let old = Some(at(500) - EVENT_TIME_MARGIN);
        assert_eq!(
            rounds.offer(db(old), "d".into(), at(1_200)),
            Some("d".into())
        );
    }
}
