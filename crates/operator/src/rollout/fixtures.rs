//! Workloads and SecretSyncs the rollout unit tests share.

use std::sync::Arc;

use secretsync_api::WorkloadKind;
use serde_json::Value;

use crate::rollout::target::Target;

pub fn db() -> Vec<String> {
    vec!["db".to_owned()]
}

pub fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    let value: Value = serde_yaml::from_str(text).unwrap();
    serde_json::from_value(value).unwrap()
}

pub const SYNC: &str = r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {name: db, namespace: payments, uid: u1}
spec:
  storeRef: {name: vault}
  rollout: {targets: [{kind: Deployment, name: api}, {kind: Deployment, name: gone}], timeout: 5m}
"#;

pub fn deployment(reference: &str, updated: i64) -> Arc<Value> {
    Arc::new(yaml(&format!(
        r#"
metadata: {{name: api, namespace: payments, resourceVersion: "41", generation: 2}}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - envFrom: [{{secretRef: {{name: {reference}}}}}]
status: {{observedGeneration: 2, replicas: 2, updatedReplicas: {updated}, readyReplicas: 2, availableReplicas: 2}}
"#
    )))
}

/// The `api` Deployment as the only target.
pub fn api_only(api: Arc<Value>) -> Vec<Target> {
    vec![Target {
        kind: WorkloadKind::Deployment,
        name: "api".into(),
        workload: Some(api),
        kind_served: true,
        named: true,
        pod_failures: Vec::new(),
    }]
}

/// `api`, and a named target `gone` that does not exist.
pub fn targets(api: Arc<Value>) -> Vec<Target> {
    let mut targets = api_only(api);
    targets.push(Target {
        name: "gone".into(),
        workload: None,
        ..api_only(Arc::default()).remove(0)
    });
    targets
}

pub const NOW: &str = "2026-11-23T10:00:00Z";
