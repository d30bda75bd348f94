//! Test harness: a sandbox with the CRDs and a namespace; SecretSyncs with a hand-written
//! status, standing in for what the operator would report.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubectl_secretsync::ops::Syncs;
use secretsync_api::SecretSync;
use secretsync_sandbox::Sandbox;
use serde_json::{Value, json};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Env {
    pub sandbox: Sandbox,
    pub client: Client,
    pub ns: String,
}

impl Env {
    pub async fn start(ns: &str) -> Env {
        let sandbox = Sandbox::start().await.expect("sandbox starts");
        let client = sandbox.client();
        install_crds(&client).await;
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        Env {
            sandbox,
            client,
            ns: ns.to_owned(),
        }
    }

    pub fn syncs(&self) -> Syncs {
        Syncs::new(self.client.clone(), &self.ns)
    }

    pub fn api(&self) -> Api<SecretSync> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn get(&self, name: &str) -> SecretSync {
        self.api().get(name).await.unwrap()
    }

    /// Creates a SecretSync from a YAML manifest and, if given, writes its status through
    /// the status subresource.
    pub async fn create_sync(&self, yaml: &str, status: Option<&str>) -> SecretSync {
        let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        let sync: SecretSync = serde_json::from_value(value).expect("test YAML is a SecretSync");
        let name = sync.metadata.name.clone().unwrap();
        self.api()
            .create(&PostParams::default(), &sync)
            .await
            .expect("create");
        if let Some(status) = status {
            let status: Value = serde_yaml::from_str(status).expect("status YAML parses");
            self.api()
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
                .expect("status written");
        }
        self.get(&name).await
    }
}

pub async fn install_crds(client: &Client) {
    secretsync_testkit::install::install_crds(client, DEADLINE)
        .await
        .expect("CRDs installed and established");
}

/// A SecretSync `db` in the fake store `vault`, with extra spec lines.
pub fn sync_yaml(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: {name}}}
spec:
  storeRef: {{name: vault}}
  data:
    - secretKey: password
      remoteRef: {{key: app/db, property: password}}
{extra}
"#
    )
}

/// Five versions: 5 Active, 4 Revoked, 3 Retained, 2 Deleted, 1 Retained; one target.
pub const FIVE_VERSIONS: &str = r#"
observedGeneration: 1
currentVersion: 5
activeVersion: 5
activeSecretName: db-v5
versions:
  - {version: 5, secretName: db-v5, specVersion: 2, createdAt: "2026-01-01T10:00:00Z", state: Active}
  - {version: 4, secretName: db-v4, specVersion: 2, createdAt: "2026-01-01T09:00:00Z", state: Revoked}
  - {version: 3, secretName: db-v3, specVersion: 1, createdAt: "2026-01-01T08:00:00Z", state: Retained}
  - {version: 2, secretName: db-v2, specVersion: 1, createdAt: "2026-01-01T07:00:00Z", state: Deleted}
  - {version: 1, secretName: db-v1, specVersion: 0, createdAt: "2026-01-01T06:00:00Z", state: Retained}
rollout:
  targets:
    - {kind: Deployment, name: api, version: 5, state: Complete}
conditions:
  - {type: Ready, status: "True", reason: Synced, message: "db-v5 active", lastTransitionTime: "2026-01-01T10:00:00Z"}
"#;
