//! Events (`events.k8s.io/v1`), each created once, in the background.
//!
//! kube-runtime's `Recorder` keeps every event it published for six minutes, to fold a
//! repeat into a series, and scans that cache on every publish: at 10k SecretSyncs a cold
//! start holds 10k cached events and spends quadratic time scanning them. The operator
//! publishes an event only when the status changes, so there are no repeats to fold, and
//! nothing is kept here.
//!
//! Like client-go's broadcaster, publishing queues the event and returns: an event is an
//! audit record, and a reconcile should not hold one of its slots for it while the
//! Secrets, templates and statuses of other SecretSyncs wait. The compare bench measured
//! the inline create as 2 of the 5 writes a rotation waits for (docs/benchmarks.md). Unlike
//! client-go's, a full queue makes the publisher wait instead of dropping the event: the
//! contract promises them (docs/reference/events.md). On shutdown the queue is delivered before the process
//! exits, within the grace period.

use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

/// Events waiting to be created. Bounds memory during an API outage (about 0.5 KiB each);
/// a cold start of 10k SecretSyncs queues one each.
const QUEUE: usize = 16_384;
/// Creates in flight at once: a few, so that events trail the reconciles' own writes
/// instead of competing with them.
const IN_FLIGHT: usize = 4;

pub struct Publisher {
    queue: mpsc::Sender<K8sEvent>,
    stop: watch::Sender<bool>,
    delivery: Mutex<Option<JoinHandle<()>>>,
    controller: String,
    instance: String,
}

impl Publisher {
    /// Events say `reportingController: controller`, `reportingInstance: instance` (the
    /// controller's name when none is given). Starts the task that creates them: call
    /// within the Tokio runtime.
    pub fn new(client: Client, controller: String, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.clone());
        let (queue, queued) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(false);
        let delivery = tokio::spawn(deliver(client, queued, stopped));
        Self {
            queue,
            stop,
            delivery: Mutex::new(Some(delivery)),
            controller,
            instance,
        }
    }

    /// Queues the event for the namespace of the object it regards, stamped now. Waits only
    /// while the queue is full; after [`Publisher::close`] the event is dropped and logged.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) {
        let event = self.event(ev, regarding, jiff::Timestamp::now());
        if self.queue.send(event).await.is_err() {
            warn!(reason = %ev.reason, "event not published: shutting down");
        }
    }

    /// Stops taking events and creates the queued ones (bounded by the shutdown grace
    /// period of `main`, like the reconciles in flight).
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let delivery = self
            .delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(delivery) = delivery {
            let _ = delivery.await;
        }
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference, now: jiff::Timestamp) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            metadata: ObjectMeta {
                // Unique per object and moment, as kubectl and client-go name theirs.
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }
}

/// Creates queued events, [`IN_FLIGHT`] at a time, until `stop`; then the rest of the queue.
async fn deliver(
    client: Client,
    mut queued: mpsc::Receiver<K8sEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut closed = false;
    loop {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            event = queued.recv(), if in_flight.len() < IN_FLIGHT => match event {
                Some(event) => in_flight.push(create(&client, event)),
                // Closed and empty.
                None => break,
            },
            _ = stop.wait_for(|stop| *stop), if !closed => {
                closed = true;
                queued.close();
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

async fn create(client: &Client, event: K8sEvent) {
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let created = Api::<K8sEvent>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await;
    if let Err(e) = created {
        warn!(reason = event.reason.as_deref().unwrap_or_default(), error = %e, "could not publish event");
    }
}

/// The Secret of a version, as an event's related object: events about different versions
/// stay separate instead of folding into one series with the first version's note.
pub fn secret_ref(sync: &secretsync_api::SecretSync, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(name.to_owned()),
        namespace: kube::ResourceExt::namespace(sync),
        ..Default::default()
    }
}

/// `; reason: "…"`: why the change was asked for (`kubectl secretsync … --reason`), for the
/// events of what that change causes. The plugin sets or clears the annotation in the same
/// write as the change, so it never belongs to an older one.
pub fn asked_reason(sync: &secretsync_api::SecretSync) -> String {
    kube::ResourceExt::annotations(sync)
        .get(secretsync_api::labels::REASON)
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            format!(
                "; reason: {:?}",
                crate::conditions::truncate(r.trim().to_owned(), 256)
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_queued_event_is_created_by_close_and_none_after() {
        let sandbox = secretsync_sandbox::Sandbox::start()
            .await
            .expect("sandbox starts");
        let client = sandbox.client();
        let namespace = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some("payments".into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        };
        Api::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let publisher = Publisher::new(client.clone(), "secretsync".into(), None);
        let ev = Event {
            type_: EventType::Normal,
            reason: "VersionCreated".into(),
            note: None,
            action: "Sync".into(),
            secondary: None,
        };
        let regarding = |i: usize| ObjectReference {
            kind: Some("SecretSync".into()),
            name: Some(format!("db{i}")),
            namespace: Some("payments".into()),
            ..ObjectReference::default()
        };
        // More than are created at once, all queued before any can have been created.
        for i in 0..(IN_FLIGHT * 10) {
            publisher.publish(&ev, &regarding(i)).await;
        }
        publisher.close().await;
        publisher.publish(&ev, &regarding(999)).await;

        let api = Api::<K8sEvent>::namespaced(client, "payments");
        let mut names: Vec<String> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.regarding?.name)
            .collect();
        names.sort();
        let mut want: Vec<String> = (0..(IN_FLIGHT * 10)).map(|i| format!("db{i}")).collect();
        want.sort();
        assert_eq!(names, want, "each queued event once, none after close");
    }

    #[tokio::test]
    async fn an_event_names_its_object_reporter_and_moment() {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let publisher = Publisher::new(client, "secretsync".into(), None);
        let regarding = ObjectReference {
            kind: Some("SecretSync".into()),
            name: Some("db".into()),
            namespace: Some("payments".into()),
            ..ObjectReference::default()
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "RolloutFailed".into(),
            note: Some("api did not become ready".into()),
            action: "RollOut".into(),
            secondary: None,
        };
        let now: jiff::Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let event = publisher.event(&ev, &regarding, now);
        assert_eq!(
            event.metadata.name.as_deref(),
            Some(format!("db.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("RolloutFailed"));
        assert_eq!(event.reporting_instance.as_deref(), Some("secretsync"));
        assert_eq!(event.regarding, Some(regarding));
        assert!(event.series.is_none());
    }
}
