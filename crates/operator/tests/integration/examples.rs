//! The CRDs and the examples, applied with real kubectl 1.37 as a user would, reconciled by
//! the operator.

use std::path::Path;
use std::process::Output;

use secretsync_testkit::akeyless_double::{self, AkeylessDouble};
use secretsync_testkit::conjur_double::{self, ConjurDouble};
use secretsync_testkit::gcp_double::{self, GcpDouble};
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::{repo_root, require_tool};

use crate::common::{Env, Operator, install_namespace};

struct Kubectl {
    bin: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn kubectl_env() -> Option<(Env, Kubectl)> {
    let bin = require_tool("kubectl")?;
    let env = Env::bare().await;
    let kubectl = Kubectl {
        bin,
        kubeconfig: env.sandbox.kubeconfig_path().to_path_buf(),
    };
    Some((env, kubectl))
}

fn path(rel: &str) -> String {
    repo_root().join(rel).to_string_lossy().into_owned()
}

#[tokio::test]
async fn crds_load_in_real_kubectl_and_the_fake_example_syncs() {
    let Some((mut env, kubectl)) = kubectl_env().await else {
        return;
    };
    // Client-side dry run first (what issue reviewers run), then for real.
    let dry = kubectl
        .ok(&[
            "apply",
            "--dry-run=client",
            "--validate=false",
            "-f",
            &path("crds"),
        ])
        .await;
    assert_eq!(dry.matches("(dry run)").count(), 4, "{dry}");
    let applied = kubectl.ok(&["apply", "-f", &path("crds")]).await;
    assert!(
        applied.contains("secretsyncs.secretsync.io created"),
        "{applied}"
    );
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/secretsyncs.secretsync.io",
            "--timeout=30s",
        ])
        .await;
    install_namespace(&env.client, "payments").await;
    env.operator = Some(Operator::start(env.client.clone(), None));

    kubectl
        .ok(&["apply", "-n", "payments", "-f", &path("examples/fake")])
        .await;
    kubectl
        .ok(&[
            "wait",
            "-n",
            "payments",
            "--for=condition=Ready",
            "secretsync/db",
            "--timeout=30s",
        ])
        .await;
    let secret = env
        .secret("db-v1")
        .await
        .expect("db-v1 made from the example");
    let data = secret.data.unwrap();
    assert_eq!(data["username"].0, b"app");
    assert_eq!(data["password"].0, b"correct-horse-1");
    assert_eq!(data["host"].0, b"db.internal");

    // The printer columns a user sees, by short name and category.
    let table = kubectl.ok(&["get", "ssync", "-n", "payments"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STORE", "VERSION", "ACTIVE", "READY", "AGE"],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    for cell in ["db", "demo-store", "1", "db-v1", "True"] {
        assert!(
            row.split_whitespace().any(|c| c == cell),
            "{cell} missing in {row:?}"
        );
    }
    let by_category = kubectl
        .ok(&["get", "secretsync-all", "-n", "payments", "-o", "name"])
        .await;
    assert!(
        by_category.contains("secretsync.secretsync.io/db")
            && by_category.contains("secretstore.secretsync.io/demo-store"),
        "{by_category}"
    );
    // The singular name, as on-call engineers type it, names exactly one kind.
    let one = kubectl
        .ok(&["get", "secretsync", "db", "-n", "payments", "-o", "name"])
        .await;
    assert_eq!(one.trim(), "secretsync.secretsync.io/db");
    kubectl
        .ok(&[
            "patch",
            "secretsync",
            "db",
            "-n",
            "payments",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"team":"payments"}}}"#,
        ])
        .await;
    env.stop_operator().await;
}

#[tokio::test]
async fn the_vault_example_syncs_from_openbao() {
    let Some(bao) = OpenBao::start() else { return };
    let Some((mut env, kubectl)) = kubectl_env().await else {
        return;
    };
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "from-openbao")],
    );
    bao.kv_put(
        "secret",
        "app/config",
        &[("host", "db.internal"), ("port", "5432")],
    );
    install(&env, &kubectl).await;
    env.operator = Some(Operator::start(env.client.clone(), None));

    // The examples as a user would adapt them: the token and the server address.
    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples/vault");
    for file in ["token-secret.yaml", "store.yaml", "secretsync.yaml"] {
        let text = std::fs::read_to_string(examples.join(file))
            .unwrap()
            .replace("token: root", &format!("token: {}", bao.root_token()))
            .replace("http://127.0.0.1:8200", &bao.addr());
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    kubectl
        .ok(&[
            "apply",
            "-n",
            "payments",
            "-f",
            &dir.path().to_string_lossy(),
        ])
        .await;
    env.wait_version("db", 1).await;
    let data = env.secret("db-v1").await.unwrap().data.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&data["dsn"].0),
        "postgres://app:from-openbao@db.internal:5432/app"
    );
    assert_eq!(data["username"].0, b"app");
    assert_eq!(
        data.len(),
        2,
        "a template Secret holds exactly the rendered keys"
    );
    assert!(Path::new(&examples.join("store-kubernetes-auth.yaml")).exists());
    env.stop_operator().await;
}

/// The GCP example, adapted as a user outside GKE would (a service-account key instead of
/// Workload Identity) and pointed at the Secret Manager test double, applied with kubectl.
#[tokio::test]
async fn the_gcp_example_syncs_from_the_secret_manager_double() {
    let Some((mut env, kubectl)) = kubectl_env().await else {
        return;
    };
    let account = "secretsync@secretsync-test.iam.gserviceaccount.com";
    let double = GcpDouble::start(account).await;
    for password in ["one", "two", "old-horse", "correct-horse-1"] {
        let value = format!(r#"{{"db":{{"user":"app","password":"{password}"}}}}"#);
        double.add_version("db", value.as_bytes());
    }
    double.add_version("app-config", br#"{"host":"db.internal"}"#);
    double.add_version("payments-api", b"api-key");
    double.set_labels("payments-api", &[("team", "payments")]);
    install(&env, &kubectl).await;
    env.string_secret(
        "gcp-key",
        &[("key.json", &double.service_account_key(account))],
    )
    .await;
    env.operator = Some(Operator::start(env.client.clone(), None));

    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples/gcp");
    let store = std::fs::read_to_string(examples.join("store.yaml")).unwrap();
    let adapted = format!(
        "projectID: {}\n      endpoint: {}\n      auth:\n        secretRef:\n          \
         secretAccessKeySecretRef: {{name: gcp-key, key: key.json}}",
        gcp_double::PROJECT_ID,
        double.endpoint()
    );
    // The store's own line, not the one in its comment.
    let (before, after) = store
        .rsplit_once("projectID: my-project\n")
        .expect("the example names projectID: my-project");
    let store = format!("{before}{adapted}\n{after}");
    std::fs::write(dir.path().join("store.yaml"), store).unwrap();
    std::fs::copy(
        examples.join("secretsync.yaml"),
        dir.path().join("secretsync.yaml"),
    )
    .unwrap();
    kubectl
        .ok(&[
            "apply",
            "-n",
            "payments",
            "-f",
            &dir.path().to_string_lossy(),
        ])
        .await;
    env.wait_version("payments", 1).await;
    let data = env.secret("payments-v1").await.unwrap().data.unwrap();
    let data: std::collections::BTreeMap<&str, &[u8]> = data
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    assert_eq!(
        data,
        [
            ("api", b"api-key".as_slice()),
            ("host", b"db.internal"),
            ("password", b"correct-horse-1"),
            ("previous-password", b"old-horse"),
            ("username", b"app"),
        ]
        .into_iter()
        .collect()
    );
    env.wait_store("gcp", "True", "Valid").await;
    env.stop_operator().await;
}

/// The CRDs applied with kubectl, and the namespace `payments`.
async fn install(env: &Env, kubectl: &Kubectl) {
    kubectl.ok(&["apply", "-f", &path("crds")]).await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/secretstores.secretsync.io",
        ])
        .await;
    install_namespace(&env.client, "payments").await;
}

/// Applies every file of `examples/<dir>`, each passed through `adapt` (the replacements a
/// user makes: their server, their credentials), with real kubectl to a cluster with the CRDs
/// and the operator; checks that the store `<dir>` is Ready and the SecretSync `payments`'s
/// first version holds `want`.
async fn apply_example(
    env: &mut Env,
    kubectl: &Kubectl,
    dir: &str,
    adapt: impl Fn(String) -> String,
    want: &[(&str, &str)],
) {
    install(env, kubectl).await;
    env.operator = Some(Operator::start(env.client.clone(), None));
    let adapted = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_root().join("examples").join(dir)).unwrap() {
        let file = entry.unwrap().path();
        let text = adapt(std::fs::read_to_string(&file).unwrap());
        std::fs::write(adapted.path().join(file.file_name().unwrap()), text).unwrap();
    }
    let adapted = adapted.path().to_string_lossy();
    kubectl
        .ok(&["apply", "-n", "payments", "-f", &adapted])
        .await;
    env.wait_version("payments", 1).await;
    let want: std::collections::BTreeMap<String, Vec<u8>> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(
        crate::common::secret_data(&env.secret("payments-v1").await.unwrap()),
        want
    );
    env.wait_store(dir, "True", "Valid").await;
    env.stop_operator().await;
}

/// The Conjur example, its server, account and host's API key replaced by the double's.
#[tokio::test]
async fn the_conjur_example_syncs_from_the_conjur_double() {
    let Some(double) = ConjurDouble::start().await else {
        return;
    };
    let Some((mut env, kubectl)) = kubectl_env().await else {
        return;
    };
    double.set_value("data/payments/db/username", b"app");
    double.set_value("data/payments/db/password", b"old-horse");
    double.set_value("data/payments/db/password", b"correct-horse-1");
    double.set_value("data/payments/keys/api", b"api-key");
    double.annotate("data/payments/keys/api", "team", "payments");
    double.set_value("data/payments/keys/ledger", b"ledger-key");
    double.annotate("data/payments/keys/ledger", "team", "ledger");
    let adapt = |text: String| {
        text.replace(
            "url: https://conjur.example.com\n      auth",
            &format!(
                "url: {}\n      caBundle: {}\n      auth",
                double.url(),
                double.ca_bundle()
            ),
        )
        .replace(
            "account: default",
            &format!("account: {}", conjur_double::ACCOUNT),
        )
        .replace("host/data/payments/secretsync", conjur_double::HOST)
        .replace("replace-with-the-host-api-key", conjur_double::API_KEY)
    };
    let want = [
        ("api", "api-key"),
        ("password", "correct-horse-1"),
        ("previous-password", "old-horse"),
        ("username", "app"),
    ];
    apply_example(&mut env, &kubectl, "conjur", adapt, &want).await;
}

/// The Akeyless example, its API URL and access key replaced by the double's.
#[tokio::test]
async fn the_akeyless_example_syncs_from_the_akeyless_double() {
    let Some(double) = AkeylessDouble::start().await else {
        return;
    };
    let Some((mut env, kubectl)) = kubectl_env().await else {
        return;
    };
    for password in ["old-horse", "correct-horse-1"] {
        let value = format!(r#"{{"db":{{"user":"app","password":"{password}"}}}}"#);
        double.set_value("/payments/db", &value, &[]);
    }
    double.set_value("/payments/config", r#"{"host":"db.internal"}"#, &[]);
    double.set_value("/payments/keys/api", "api-key", &["team=payments"]);
    double.set_value("/payments/keys/ledger", "ledger-key", &["team=ledger"]);
    let adapt = |text: String| {
        text.replace(
            "akeylessGWApiURL: https://api.akeyless.io",
            &format!(
                "akeylessGWApiURL: {}\n      caBundle: {}",
                double.url(),
                double.ca_bundle()
            ),
        )
        .replace("p-replace-with-access-id", akeyless_double::ACCESS_ID)
        .replace("replace-with-the-access-key", akeyless_double::ACCESS_KEY)
    };
    let want = [
        ("api", "api-key"),
        ("host", "db.internal"),
        ("password", "correct-horse-1"),
        ("previous-password", "old-horse"),
        ("username", "app"),
    ];
    apply_example(&mut env, &kubectl, "akeyless", adapt, &want).await;
}
