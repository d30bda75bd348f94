//! End to end: the built `kubectl-secretsync` on PATH, run by real kubectl against the
//! sandbox, with the operator running in this process.
//!
//! kubectl 1.37 refuses global flags before a plugin's name ("flags cannot be placed before
//! plugin name"), so `--kubeconfig` goes after it (or in `KUBECONFIG`), as users must type it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use secretsync_api::{SecretStore, SecretSync};
use secretsync_operator::process::metrics::Metrics;
use secretsync_operator::{Config, RunOptions};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{DEADLINE, Env, sync_yaml};

struct Kubectl {
    kubectl: PathBuf,
    path: std::ffi::OsString,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn new(kubectl: PathBuf, kubeconfig: &Path, home: &Path) -> Self {
        let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-secretsync"))
            .parent()
            .expect("the binary is in a directory")
            .to_path_buf();
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(plugin_dir).chain(std::env::split_paths(&inherited)),
        )
        .unwrap();
        Self {
            kubectl,
            path,
            kubeconfig: kubeconfig.to_owned(),
            home: home.to_owned(),
        }
    }

    /// `kubectl ARGS`, with the kubeconfig only where the arguments say.
    async fn run(&self, args: &[&str], kubeconfig_env: bool) -> Output {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.args(args)
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        if kubeconfig_env {
            cmd.env("KUBECONFIG", &self.kubeconfig);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl runs");
        eprintln!(
            "$ kubectl {}\n[exit {:?}]\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_rollback_unpin_with_wait_through_real_kubectl() {
    let Some(kubectl) = secretsync_testkit::require_tool("kubectl") else {
        return;
    };
    let (env, operator, home) = start_with_db().await;
    create_api(&env).await;
    let k = Kubectl::new(kubectl, env.sandbox.kubeconfig_path(), home.path());
    let kubeconfig = env.sandbox.kubeconfig_path().to_str().unwrap().to_owned();

    // rotate --wait
    let out = k
        .run(
            &[
                "secretsync",
                "rotate",
                "db",
                "-n",
                "payments",
                "--wait",
                "--timeout",
                "60s",
                "--kubeconfig",
                &kubeconfig,
            ],
            false,
        )
        .await;
    assert!(out.status.success(), "rotate failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("rotating db: spec.version unset → 1; expect db-v2"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("done: db is Ready; db-v2 is active"),
        "{}",
        stdout(&out)
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "payments");
    assert!(
        secrets.get_opt("db-v2").await.unwrap().is_some(),
        "db-v2 exists"
    );

    // status, with the kubeconfig from KUBECONFIG
    let out = k
        .run(&["secretsync", "status", "db", "-n", "payments"], true)
        .await;
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    let status = stdout(&out);
    let row = |secret: &str| {
        status
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.get(1) == Some(&secret))
            .unwrap_or_else(|| panic!("no row for {secret} in\n{status}"))
    };
    assert_eq!(row("db-v2")[..3], ["2", "db-v2", "Active"]);
    assert_eq!(row("db-v1")[..3], ["1", "db-v1", "Retained"]);
    assert_eq!(
        *row("db-v2").last().unwrap(),
        "1",
        "made for spec.version 1"
    );
    assert!(!status.contains("s3cret-value") && !status.contains("password"));

    // list -A
    let out = k.run(&["secretsync", "list", "-A"], true).await;
    assert!(out.status.success());
    let db_row: Vec<String> = stdout(&out)
        .lines()
        .find(|l| l.starts_with("payments"))
        .expect("a row for payments/db")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(db_row[..5], ["payments", "db", "2", "db-v2", "True"]);

    // Without -n, the context's namespace (`default` in the sandbox kubeconfig).
    let out = k
        .run(&["secretsync", "list", "--context", "sandbox"], true)
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No SecretSyncs found in namespace \"default\""),
        "{}",
        stderr(&out)
    );
    let out = k
        .run(&["secretsync", "list", "--context", "nope"], true)
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: cannot load the kubeconfig"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint: "), "{}", stderr(&out));

    // A refusal exits 1 with a hint; nothing is written.
    let before: SecretSync = env.get("db").await;
    let out = k
        .run(
            &[
                "secretsync",
                "rollback",
                "db",
                "--to",
                "7",
                "-n",
                "payments",
            ],
            true,
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: cannot roll db back to version 7"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("hint: versions that can be pinned: 2, 1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.get("db").await.metadata.resource_version,
        before.metadata.resource_version
    );

    // A usage error exits 2.
    let out = k.run(&["secretsync", "rotate"], true).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // rollback --wait: v1 becomes active; unpin --wait: back to v2.
    let out = k
        .run(
            &[
                "secretsync",
                "rollback",
                "db",
                "-n",
                "payments",
                "--wait",
                "--timeout",
                "60s",
            ],
            true,
        )
        .await;
    assert!(out.status.success(), "rollback failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("done: db is Ready; db-v1 is active"),
        "{}",
        stdout(&out)
    );
    let synced = env.get("db").await;
    assert_eq!(synced.spec.pin_version, Some(1));
    assert_eq!(synced.status.unwrap().active_version, Some(1));

    let out = k
        .run(
            &["secretsync", "unpin", "db", "-n", "payments", "--wait"],
            true,
        )
        .await;
    assert!(out.status.success(), "unpin failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("done: db is Ready; db-v2 is active"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.get("db").await.spec.pin_version, None);

    operator.stop().await;
}

async fn wait_current(env: &Env, version: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let sync = env.get("db").await;
        if sync.status.as_ref().and_then(|s| s.current_version) == Some(version) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "db never reached version {version}: {:#?}",
            sync.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator running in this test's runtime.
struct Operator {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), secretsync_operator::Stopped>>,
}

impl Operator {
    fn start(client: kube::Client) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(secretsync_operator::run(
            client,
            Config::default(),
            RunOptions {
                concurrency: 8,
                ..RunOptions::default()
            },
            Arc::new(Metrics::default()),
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Deployment `api`, the rollout target of `db`, on `db-v1`: a target that does not exist
/// would fail every `--wait` with `TargetNotFound`.
async fn create_api(env: &Env) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), "payments");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "api"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{
                            "name": "api", "image": "api:1",
                            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-v1", "key": "password"}}}],
                        }]},
                    },
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    deployments
}

/// A sandbox with the operator, a fake store `vault` and SecretSync `db` at version 1, and
/// a private HOME for kubectl's cache so the test does not touch the developer's.
async fn start_with_db() -> (Env, Operator, tempfile::TempDir) {
    let env = Env::start("payments").await;
    let operator = Operator::start(env.client.clone());
    let stores: Api<SecretStore> = Api::namespaced(env.client.clone(), "payments");
    stores
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
                "metadata": {"name": "vault"},
                "spec": {"provider": {"fake": {"data": [
                    {"key": "app/db", "value": r#"{"password":"s3cret-value"}"#, "version": "1"}
                ]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    env.create_sync(
        &sync_yaml(
            "db",
            "  rollout: {targets: [{kind: Deployment, name: api}]}",
        ),
        None,
    )
    .await;
    wait_current(&env, 1).await;
    (env, operator, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_active_version_waits_for_the_rollout_off_it() {
    let Some(kubectl) = secretsync_testkit::require_tool("kubectl") else {
        return;
    };
    let (env, operator, home) = start_with_db().await;
    let deployments = create_api(&env).await;
    let k = Kubectl::new(kubectl, env.sandbox.kubeconfig_path(), home.path());

    let out = k
        .run(
            &[
                "secretsync",
                "revoke",
                "db",
                "--version",
                "1",
                "--immediate",
                "-n",
                "payments",
                "--wait",
                "--timeout",
                "60s",
            ],
            true,
        )
        .await;
    assert!(out.status.success(), "revoke failed: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("revoking version 1 of db (db-v1, Active):"),
        "{text}"
    );
    assert!(
        text.contains("it is the newest version: the operator first makes a new version, db-v2"),
        "{text}"
    );
    assert!(
        text.contains("done: db is Ready; db-v2 is active; 1/1 targets rolled out"),
        "{text}"
    );

    let deployment = deployments.get("api").await.unwrap();
    let env_ref =
        serde_json::to_value(&deployment.spec.unwrap().template.spec.unwrap().containers[0].env)
            .unwrap();
    assert_eq!(env_ref[0]["valueFrom"]["secretKeyRef"]["name"], "db-v2");
    let synced = env.get("db").await;
    assert_eq!(synced.spec.revoked_versions, Some(vec![1]));
    assert_eq!(
        synced.spec.revoke_policy,
        Some(secretsync_api::RevokePolicy::Immediate)
    );

    let out = k
        .run(&["secretsync", "status", "db", "-n", "payments"], true)
        .await;
    let status = stdout(&out);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Deployment", "api", "2", "Complete"]),
        "{status}"
    );
    operator.stop().await;
}

/// Polls the events of SecretSync `db` until one with `reason` has a note containing
/// `needle`, and returns that note.
async fn event_note(env: &Env, reason: &str, needle: &str) -> String {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), "payments");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list = events
            .list(&kube::api::ListParams::default().fields("involvedObject.name=db"))
            .await
            .unwrap();
        let notes: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message.clone())
            .collect();
        if let Some(n) = notes.iter().find(|n| n.contains(needle)) {
            return n.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} event with {needle:?}; {reason} events: {notes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_are_recorded_and_quoted_in_the_events_they_cause() {
    let Some(kubectl) = secretsync_testkit::require_tool("kubectl") else {
        return;
    };
    let (env, operator, home) = start_with_db().await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), "payments");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "api"},
                "spec": {
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{
                            "name": "api", "image": "api:1",
                            "envFrom": [{"secretRef": {"name": "db-v1"}}],
                        }]},
                    },
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // Someone else's annotation, which the plugin's writes must leave alone.
    env.api()
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"team": "payments"}}})),
        )
        .await
        .unwrap();
    let k = Kubectl::new(kubectl, env.sandbox.kubeconfig_path(), home.path());
    let ok = |o: &Output| assert!(o.status.success(), "{}", stderr(o));
    let reason_annotation = |s: &SecretSync| s.metadata.annotations.clone().unwrap_or_default();

    let out = k
        .run(
            &[
                "secretsync",
                "rotate",
                "db",
                "-n",
                "payments",
                "--wait",
                "--reason",
                "quarterly rotation",
            ],
            true,
        )
        .await;
    ok(&out);
    let synced = env.get("db").await;
    assert_eq!(
        reason_annotation(&synced)
            .get("secretsync.io/reason")
            .map(String::as_str),
        Some("quarterly rotation")
    );
    let note = event_note(&env, "VersionCreated", "db-v2").await;
    assert!(
        note.ends_with(r#"(rotation requested by spec.version; reason: "quarterly rotation")"#),
        "{note}"
    );

    let out = k
        .run(
            &[
                "secretsync",
                "rollback",
                "db",
                "--to",
                "1",
                "-n",
                "payments",
                "--wait",
                "--reason",
                "v2 breaks logins",
            ],
            true,
        )
        .await;
    ok(&out);
    let note = event_note(&env, "RolloutStarted", "now references db-v1").await;
    assert!(
        note.ends_with(r#"(pinned; reason: "v2 breaks logins")"#),
        "{note}"
    );

    let out = k
        .run(
            &[
                "secretsync",
                "revoke",
                "db",
                "--version",
                "2",
                "--immediate",
                "-n",
                "payments",
                "--wait",
                "--reason",
                "leaked in a CI log",
            ],
            true,
        )
        .await;
    ok(&out);
    let note = event_note(&env, "VersionCreated", "db-v3").await;
    assert!(
        note.ends_with(r#"(replaces revoked db-v2; reason: "leaked in a CI log")"#),
        "{note}"
    );
    let note = event_note(&env, "VersionRevoked", "db-v2").await;
    assert_eq!(
        note,
        r#"deleted revoked db-v2 (reason: "leaked in a CI log")"#
    );

    // A change without --reason clears it: the next events quote nothing stale.
    ok(&k
        .run(
            &["secretsync", "rotate", "db", "-n", "payments", "--wait"],
            true,
        )
        .await);
    let annotations = reason_annotation(&env.get("db").await);
    assert!(!annotations.contains_key("secretsync.io/reason"));
    assert_eq!(
        annotations.get("team").map(String::as_str),
        Some("payments")
    );
    let note = event_note(&env, "VersionCreated", "db-v4").await;
    assert!(
        note.ends_with("(rotation requested by spec.version)"),
        "{note}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_exit_codes_and_completions_through_real_kubectl() {
    let Some(kubectl) = secretsync_testkit::require_tool("kubectl") else {
        return;
    };
    let (env, operator, home) = start_with_db().await;
    let k = Kubectl::new(kubectl, env.sandbox.kubeconfig_path(), home.path());

    let out = k
        .run(
            &["secretsync", "list", "-n", "payments", "-o", "json"],
            true,
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list["items"][0]["metadata"]["name"], "db");
    assert_eq!(list["items"][0]["status"]["currentVersion"], 1);
    let out = k
        .run(
            &["secretsync", "status", "db", "-n", "payments", "-o", "yaml"],
            true,
        )
        .await;
    let status: SecretSync = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(status.status.and_then(|s| s.active_version), Some(1));

    let code = |o: &Output| o.status.code();
    let missing = k
        .run(&["secretsync", "status", "nope", "-n", "payments"], true)
        .await;
    assert_eq!(code(&missing), Some(3), "{}", stderr(&missing));
    let usage = k.run(&["secretsync", "revoke", "db"], true).await;
    assert_eq!(code(&usage), Some(2), "{}", stderr(&usage));
    // A version that was never made is a refusal: a plain failure.
    let refused = k
        .run(
            &[
                "secretsync",
                "revoke",
                "db",
                "--version",
                "9",
                "-n",
                "payments",
            ],
            true,
        )
        .await;
    assert_eq!(code(&refused), Some(1), "{}", stderr(&refused));

    let help = k.run(&["secretsync", "--help"], true).await;
    let help = stdout(&help);
    for line in [
        "3  not found",
        "4  conflict",
        "5  forbidden",
        "6  timeout",
        "7  rollout failed",
    ] {
        assert!(help.contains(line), "{line:?} in\n{help}");
    }
    let bash = k.run(&["secretsync", "completion", "bash"], true).await;
    assert_eq!(code(&bash), Some(0));
    let script = stdout(&bash);
    assert!(
        script.contains("-o default kubectl-secretsync\n") && script.contains("rollback"),
        "{script}"
    );
    for shell in ["zsh", "fish"] {
        let out = k.run(&["secretsync", "completion", shell], true).await;
        assert!(stdout(&out).contains("revoke"), "{shell}");
    }
    operator.stop().await;
}
