//! Events (`events.k8s.io/v1`), each created once. kube-runtime's `Recorder` keeps every
//! event it published for six minutes, to fold a repeat into a series, and scans that
//! cache on every publish: at 10k SecretSyncs a cold start holds 10k cached events and
//! spends quadratic time scanning them. The operator publishes an event only when the
//! status changes, so there are no repeats to fold, and nothing is kept here.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// Events say `reportingController: controller`, `reportingInstance: instance` (the
    /// controller's name when none is given).
    pub fn new(client: Client, controller: String, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.clone());
        Self {
            client,
            controller,
            instance,
        }
    }

    /// Creates the event in the namespace of the object it regards.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let event = self.event(ev, regarding, jiff::Timestamp::now());
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

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
