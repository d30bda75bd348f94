//! The operator against Google Cloud Secret Manager — through Google's official client, at
//! a local **test double** of the REST API (`secretsync_testkit::gcp_double`), not a real
//! server. The conformance kit's cases (`crate::conformance`), then what is GCP's own: a
//! key Secret that holds no key.

use kube::api::PostParams;
use secretsync_api::SecretStore;
use secretsync_testkit::gcp_double::{GcpDouble, PROJECT_ID, TEST_KEY_PEM};
use serde_json::{Value, json};

use crate::common::Env;
use crate::conformance::{Backend, conformance_suite};

const ACCOUNT: &str = "secretsync@secretsync-test.iam.gserviceaccount.com";

/// The kit's fixture: the double, with a service-account key of [`ACCOUNT`].
struct Gcp(GcpDouble);

impl Backend for Gcp {
    const PROVIDER: &'static str = "gcpsm";
    const TAGS: bool = true;

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    async fn put(&mut self, key: &str, value: &[u8], tags: &[(&str, &str)]) -> String {
        let version = self.0.add_version(key, value);
        if !tags.is_empty() {
            self.0.set_labels(key, tags);
        }
        version.to_string()
    }

    fn credentials(&self, stale: bool) -> Vec<(String, String)> {
        // A key of an account Google does not know is refused like a deleted key.
        let account = if stale {
            "stranger@elsewhere.iam.gserviceaccount.com"
        } else {
            ACCOUNT
        };
        vec![("key.json".to_owned(), self.0.service_account_key(account))]
    }

    fn provider(&self, secret: &str) -> Value {
        json!({"gcpsm": {
            "projectID": PROJECT_ID,
            "endpoint": self.0.endpoint(),
            "auth": {"secretRef": {"secretAccessKeySecretRef": {"name": secret, "key": "key.json"}}},
        }})
    }

    async fn deny(&mut self, denied: bool) {
        self.0.deny(ACCOUNT, denied);
    }

    async fn go_down(&mut self) {
        self.0.set_down(true);
    }

    async fn come_back(&mut self) {
        self.0.set_down(false);
    }

    fn reads(&self) -> u64 {
        self.0.total_accesses()
    }

    /// A line from the middle of the private key.
    fn canaries(&self) -> Vec<String> {
        vec![TEST_KEY_PEM.lines().nth(5).unwrap().to_owned()]
    }
}

conformance_suite!(async { Some(Gcp(GcpDouble::start(ACCOUNT).await)) });

/// A SecretStore `name` on the double, authenticated with the key JSON `key` (stored in
/// the Secret `name`).
async fn gcp_store(env: &Env, double: &GcpDouble, name: &str, key: &str) {
    env.string_secret(name, &[("key.json", key)]).await;
    let store: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"refreshInterval": "1s", "provider": {"gcpsm": {
            "projectID": PROJECT_ID,
            "endpoint": double.endpoint(),
            "auth": {"secretRef": {"secretAccessKeySecretRef": {"name": name, "key": "key.json"}}},
        }}},
    }))
    .unwrap();
    env.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
}

/// The store's Ready condition proves access: a key Google does not know, and a Secret that
/// holds no key at all, each make the store not Ready, saying why.
#[tokio::test]
async fn a_gcp_store_with_a_bad_key_is_not_ready() {
    let double = GcpDouble::start(ACCOUNT).await;
    double.add_version("db", br#"{"password":"p"}"#);
    let env = Env::start("payments").await;
    let stranger = double.service_account_key("stranger@elsewhere.iam.gserviceaccount.com");
    gcp_store(&env, &double, "unknown", &stranger).await;
    let message = env
        .wait_store("unknown", "False", "ProviderAuthFailed")
        .await;
    assert!(
        message.contains("UNAUTHENTICATED") && message.contains(&format!("{}/unknown", env.ns)),
        "{message}"
    );
    gcp_store(&env, &double, "garbage", "not a key").await;
    let message = env
        .wait_store("garbage", "False", "ProviderAuthFailed")
        .await;
    assert!(message.contains("not a service-account key"), "{message}");
    gcp_store(&env, &double, "gcp", &double.service_account_key(ACCOUNT)).await;
    env.wait_store("gcp", "True", "Valid").await;
}
