//! The journeys: the platform team, the app team and on-call, as each meets the product
//! with kubectl, helm, the `kubectl secretsync` plugin and the operator binary (1–7 of issue
//! 11, then helm, a move from ESO, and the same life on Conjur and Akeyless). Each runs in
//! its own namespaces, on the sandbox, `E2E_CLUSTER=existing` or `E2E_CLUSTER=real`.

use std::time::Duration;

use secretsync_e2e::{Journey, eventually};
use secretsync_testkit::akeyless_double::{self, AkeylessDouble};
use secretsync_testkit::conjur_double::{self, ConjurDouble};
use secretsync_testkit::moto::Moto;
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::{free_port, repo_root};
use serde_json::{Value, json};

const APP: &str = "app=demo";

fn sync_yaml(history: u32) -> String {
    format!(
        r#"apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: vault}}
  refreshInterval: 2s
  data:
    - secretKey: password
      remoteRef: {{key: app/db, property: password}}
    - secretKey: username
      remoteRef: {{key: app/db, property: username}}
  dataFrom:
    - extract: {{key: app/config}}
  target:
    template:
      data:
        password: "{{{{ password }}}}"
        dsn: "postgres://{{{{ username }}}}:{{{{ password }}}}@{{{{ host }}}}:5432/app"
  history: {{limit: {history}}}
  rollout:
    targets: [{{kind: Deployment, name: app}}]
    timeout: 5m
"#
    )
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 2
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef: {name: db-v1, key: password}
          envFrom:
            - secretRef: {name: db-v1}
          volumeMounts:
            - {name: db, mountPath: /etc/db, readOnly: true}
      volumes:
        - name: db
          secret: {secretName: db-v1}
"#;

fn store_yaml(bao: &OpenBao) -> String {
    format!(
        "apiVersion: secretsync.io/v1alpha1
kind: SecretStore
metadata: {{name: vault}}
spec:
  provider:
    vault:
      server: {}
      path: secret
      version: v2
      auth:
        tokenSecretRef: {{name: vault-token, key: token}}
",
        bao.addr()
    )
}

/// Journey 2's state: OpenBao with `app/db` and `app/config`, a store, SecretSync `db`
/// (data, dataFrom and a template) and Deployment `app` using it by env, envFrom and a
/// volume, applied with `kubectl apply -f` of the files; the Pods Ready on `db-v1`.
async fn app_team(j: &mut Journey, history: u32) -> OpenBao {
    let ns = j.ns.clone();
    j.start_operator(&[&ns], None);
    app_team_objects(j, history).await
}

/// [`app_team`] for an operator already running (one the journey started otherwise).
async fn app_team_objects(j: &mut Journey, history: u32) -> OpenBao {
    let bao = OpenBao::start().expect("OpenBao (require_tool passed for kubectl)");
    openbao_app_keys(j, &bao).await;
    let ns = j.ns.clone();
    j.apply(&ns, "store.yaml", &store_yaml(&bao)).await;
    j.apply(&ns, "secretsync.yaml", &sync_yaml(history)).await;
    j.apply(&ns, "deployment.yaml", DEPLOYMENT).await;
    j.wait_active("db", 1).await;
    j.ok(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        &ns,
        "--timeout=90s",
    ])
    .await;
    j.wait_pods_on(APP, 2, "db-v1").await;
    bao
}

/// `app/db` (username, password `pw-1`) and `app/config` (host) at `bao`, and its root token
/// in Secret `vault-token` of the journey's namespace.
async fn openbao_app_keys(j: &mut Journey, bao: &OpenBao) {
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-1")],
    );
    bao.kv_put("secret", "app/config", &[("host", "db.internal")]);
    let ns = j.ns.clone();
    j.ok(&[
        "create",
        "secret",
        "generic",
        "vault-token",
        "-n",
        &ns,
        &format!("--from-literal=token={}", bao.root_token()),
    ])
    .await;
}

fn data(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Secret names the Deployment's pod template references.
async fn template_refs(j: &Journey) -> Vec<String> {
    let d = j.get(&["deployment", "app"]).await.expect("get deployment");
    secretsync_e2e::pod_secret_refs(&json!({"spec": d["spec"]["template"]["spec"]}))
}

async fn status_version_state(j: &Journey, version: i64) -> String {
    let s = j.get(&["secretsync", "db"]).await.expect("get secretsync");
    s.pointer("/status/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["version"] == version))
        .and_then(|v| v["state"].as_str())
        .unwrap_or("absent")
        .to_owned()
}

/// ClusterSecretStore `name` for OpenBao, its token in `token_ns`, for namespaces labelled
/// `e2e.secretsync.io/secrets=<run>` only.
fn cluster_store_yaml(name: &str, bao: &OpenBao, token_ns: &str, run: &str) -> String {
    format!(
        "apiVersion: secretsync.io/v1alpha1
kind: ClusterSecretStore
metadata: {{name: {name}}}
spec:
  provider:
    vault:
      server: {}
      path: secret
      auth:
        tokenSecretRef: {{name: vault-token, key: token, namespace: {token_ns}}}
  conditions:
    - namespaceSelector: {{matchLabels: {{e2e.secretsync.io/secrets: \"{run}\"}}}}
",
        bao.addr()
    )
}

/// Installs the chart as `helm install` would, in the journey's namespace watching `watch`,
/// and runs the operator as the chart's Deployment would ([`run_as_chart_deployment`]).
/// Everything else the chart renders is applied; its Deployment is not (the operator runs
/// here, not in a Pod). `without_rule` drops the ClusterRole rule for that resource first,
/// to prove that the server enforces the rules. Returns the arguments.
async fn install_chart_operator(
    j: &mut Journey,
    watch: &[&str],
    without_rule: Option<&str>,
    set_json: &[&str],
) -> Vec<String> {
    let platform = j.ns.clone();
    let release = format!("secretsync-{}", j.run);
    let watch_json = serde_json::to_string(watch).unwrap();
    // Rendered as scripts/chart-check.sh renders it (Helm's own library).
    let rendered = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("scripts/chart.py"))
        .args(["render", "--namespace", &platform, "--release", &release])
        .args(["--set-json", &format!("watchNamespaces={watch_json}")])
        .args(set_json.iter().flat_map(|value| ["--set-json", value]))
        .output()
        .expect("render the chart");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut objects: Vec<Value> = serde_yaml::Deserializer::from_slice(&rendered.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("a rendered manifest"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    let deployment = objects
        .iter()
        .position(|o| o["kind"] == "Deployment")
        .map(|i| objects.remove(i))
        .expect("the chart renders a Deployment");
    if let Some(resource) = without_rule {
        let role = objects
            .iter_mut()
            .find(|o| o["kind"] == "ClusterRole")
            .expect("the chart renders a ClusterRole");
        let rules = role["rules"].as_array_mut().unwrap();
        let before = rules.len();
        rules.retain(|r| r["resources"] != json!([resource]));
        assert_eq!(
            rules.len(),
            before - 1,
            "no ClusterRole rule for {resource}"
        );
    }
    for o in &objects {
        if o["metadata"]["namespace"].is_null() {
            j.cleanup(&format!(
                "{}/{}",
                o["kind"].as_str().unwrap().to_lowercase(),
                o["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
    let manifests = j.dir().join("chart.yaml");
    std::fs::write(&manifests, docs.join("\n---\n")).unwrap();
    // The rendered objects carry their namespaces.
    j.ok(&["apply", "-f", manifests.to_str().unwrap()]).await;
    run_as_chart_deployment(j, &deployment, &format!("{release}-e2e")).await
}

/// Runs the operator as the chart's `deployment` would run it: as its ServiceAccount with a
/// token from the TokenRequest API, with the container's exact arguments (leader election on)
/// and POD_NAME `pod_name` / POD_NAMESPACE. Only the bind addresses move to free loopback
/// ports, as journeys share a host (the OpenBao audit and event listeners to loopback, on the
/// ports the journey chose). Returns the arguments.
async fn run_as_chart_deployment(
    j: &mut Journey,
    deployment: &Value,
    pod_name: &str,
) -> Vec<String> {
    let platform = deployment["metadata"]["namespace"]
        .as_str()
        .expect("the Deployment's namespace")
        .to_owned();
    let pod = &deployment["spec"]["template"]["spec"];
    let service_account = pod["serviceAccountName"].as_str().unwrap().to_owned();
    let token = j
        .ok(&[
            "create",
            "token",
            &service_account,
            "-n",
            &platform,
            "--duration=1h",
        ])
        .await;
    let mut kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(j.kubeconfig()).unwrap()).unwrap();
    let context = kubeconfig["current-context"].as_str().unwrap().to_owned();
    let ctx = kubeconfig["contexts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == context.as_str())
        .unwrap();
    ctx["context"]["user"] = json!("secretsync-sa");
    kubeconfig["users"] = json!([{"name": "secretsync-sa", "user": {"token": token.trim()}}]);
    let sa_kubeconfig = j.dir().join("operator.kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();

    // $(POD_NAMESPACE) is expanded as the kubelet expands it from the container's env.
    let args: Vec<String> = pod["containers"][0]["args"]
        .as_array()
        .expect("the operator container's args")
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap().replace("$(POD_NAMESPACE)", &platform);
            match a.split_once('=') {
                Some((flag @ ("--metrics-bind-address" | "--health-bind-address"), _)) => {
                    format!("{flag}=127.0.0.1:{}", free_port())
                }
                // The port is the journey's choice (its OpenBao writes there): loopback only.
                Some((flag @ ("--openbao-audit-listen" | "--events-listen"), address)) => {
                    format!("{flag}={}", address.replace("0.0.0.0", "127.0.0.1"))
                }
                _ => a,
            }
        })
        .collect();
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    j.start_operator_with(
        &sa_kubeconfig,
        &args,
        &[("POD_NAME", pod_name), ("POD_NAMESPACE", &platform)],
    );
    args
}

/// The value of `--flag=value` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

// ---- 1. Platform team -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j1_platform_team_stores_ready_and_limited_to_admitted_namespaces() {
    let Some(mut j) = Journey::start("e2e-platform").await else {
        return;
    };
    let (bao, moto) = (OpenBao::start().unwrap(), Moto::start().unwrap());
    bao.kv_put("secret", "app/db", &[("password", "pw-1")]);
    moto.create_secret("app/api", r#"{"key":"api-1"}"#, &[]);
    let run = j.run.clone();
    let platform = j.ns.clone();
    let (admitted, other) = (format!("e2e-team-a-{run}"), format!("e2e-team-b-{run}"));
    j.namespace(&admitted, &[("e2e.secretsync.io/secrets", &run)])
        .await;
    j.namespace(&other, &[]).await;

    let args = install_chart_operator(&mut j, &[&platform, &admitted, &other], None, &[]).await;

    // A ClusterSecretStore for OpenBao, for namespaces labelled for this run only.
    let css = format!("openbao-{run}");
    j.cleanup(&format!("clustersecretstores.secretsync.io/{css}"));
    j.ok(&[
        "create",
        "secret",
        "generic",
        "vault-token",
        "-n",
        &platform,
        &format!("--from-literal=token={}", bao.root_token()),
    ])
    .await;
    j.apply(
        &platform,
        "css.yaml",
        &cluster_store_yaml(&css, &bao, &platform, &run),
    )
    .await;
    // A namespaced store for AWS Secrets Manager (moto).
    j.ok(&[
        "create",
        "secret",
        "generic",
        "aws",
        "-n",
        &admitted,
        "--from-literal=id=AKIDEXAMPLE",
        "--from-literal=secret=moto-accepts-any",
    ])
    .await;
    j.apply(
        &admitted,
        "aws.yaml",
        &format!(
            "apiVersion: secretsync.io/v1alpha1
kind: SecretStore
metadata: {{name: aws}}
spec:
  provider:
    aws:
      region: {}
      endpoint: {}
      auth:
        secretRef:
          accessKeyIdSecretRef: {{name: aws, key: id}}
          secretAccessKeySecretRef: {{name: aws, key: secret}}
",
            moto.region(),
            moto.endpoint()
        ),
    )
    .await;

    // Both stores report Ready, as `kubectl get` shows them.
    for (ns, kind, name) in [
        // By group: journey 9 installs ESO's SecretStore kinds beside ours.
        ("", "clustersecretstores.secretsync.io", css.as_str()),
        (admitted.as_str(), "secretstores.secretsync.io", "aws"),
    ] {
        eventually(&format!("{kind} {name} Ready"), || async {
            let out = j
                .kubectl(&[
                    "get",
                    kind,
                    name,
                    "-n",
                    if ns.is_empty() { &platform } else { ns },
                ])
                .await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let row: Vec<&str> = text
                .lines()
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            (row.first() == Some(&name) && row.get(2) == Some(&"True"))
                .then_some(())
                .ok_or(text)
        })
        .await;
    }

    let sync = |store: &str, kind: &str, key: &str, property: &str| {
        format!(
            "apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: {store}, kind: {kind}}}
  data:
    - secretKey: value
      remoteRef: {{key: {key}, property: {property}}}
"
        )
    };
    j.apply(
        &admitted,
        "db-a.yaml",
        &sync(&css, "ClusterSecretStore", "app/db", "password"),
    )
    .await;
    j.apply(
        &other,
        "db-b.yaml",
        &sync(&css, "ClusterSecretStore", "app/db", "password"),
    )
    .await;
    j.apply(
        &admitted,
        "api.yaml",
        &sync("aws", "SecretStore", "app/api", "key").replace("name: db}", "name: api}"),
    )
    .await;

    for (name, want) in [("db", "pw-1"), ("api", "api-1")] {
        eventually(
            &format!("{name} Ready in the admitted namespace"),
            || async {
                let c = j.condition(&admitted, name, "Ready").await?;
                (c.0 == "True").then_some(()).ok_or(format!("{c:?}"))
            },
        )
        .await;
        let s = j
            .get_in(&admitted, &["secret", &format!("{name}-v1")])
            .await
            .unwrap();
        let got = s["data"]["value"].as_str().unwrap_or_default().to_owned();
        use base64::Engine as _;
        let got = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(got)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(got, want);
    }
    // The chart's arguments took effect: this operator leads through the release's Lease
    // and keeps its hash key in the release namespace, where the chart's Roles allow both.
    let lease = j
        .get_in(&platform, &["lease", flag_value(&args, "--lease-name")])
        .await
        .unwrap();
    assert_eq!(
        lease["spec"]["holderIdentity"],
        format!("secretsync-{run}-e2e"),
        "{lease}"
    );
    j.get_in(
        &platform,
        &["secret", flag_value(&args, "--hash-key-secret")],
    )
    .await
    .unwrap();
    let (status, _) = eventually("StoreNotAllowed in the other namespace", || async {
        let c = j.condition(&other, "db", "Ready").await?;
        (c.1 == "StoreNotAllowed")
            .then_some(c.clone())
            .ok_or(format!("{c:?}"))
    })
    .await;
    assert_eq!(status, "False");
    let out = j
        .ok(&[
            "get",
            "secrets",
            "-n",
            &other,
            "-l",
            "secretsync.io/sync=db",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(
        out.trim(),
        "",
        "no Secret in a namespace the store does not admit"
    );
}

/// Journey 1's setup with one rule the operator needs removed from the chart's ClusterRole
/// (the status of ClusterSecretStores): on a server that enforces RBAC the store never turns
/// Ready, and the operator's log names the refused request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j1_platform_team_chart_without_a_needed_rule_is_refused_by_name() {
    let Some(mut j) = Journey::start("e2e-rbac").await else {
        return;
    };
    if !j.enforces_rbac("a missing ClusterRole rule makes journey 1 fail") {
        return;
    }
    let bao = OpenBao::start().unwrap();
    let (run, platform) = (j.run.clone(), j.ns.clone());
    install_chart_operator(
        &mut j,
        &[&platform],
        Some("clustersecretstores/status"),
        &[],
    )
    .await;
    let css = format!("openbao-{run}");
    j.cleanup(&format!("clustersecretstores.secretsync.io/{css}"));
    j.ok(&[
        "create",
        "secret",
        "generic",
        "vault-token",
        "-n",
        &platform,
        &format!("--from-literal=token={}", bao.root_token()),
    ])
    .await;
    j.apply(
        &platform,
        "css.yaml",
        &cluster_store_yaml(&css, &bao, &platform, &run),
    )
    .await;

    let refused = eventually("the operator's log names the refused request", || async {
        let log = j.operator_log();
        log.lines()
            .find(|l| {
                l.contains("forbidden")
                    && l.contains("cannot patch resource")
                    && l.contains("clustersecretstores/status")
                    && l.contains(&format!("system:serviceaccount:{platform}:"))
            })
            .map(str::to_owned)
            .ok_or_else(|| format!("{} log lines", log.lines().count()))
    })
    .await;
    eprintln!("refused as expected: {refused}");
    let store = j
        .get_in(&platform, &["clustersecretstores.secretsync.io", &css])
        .await
        .unwrap();
    let ready = store
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].clone());
    assert_ne!(ready, Some(json!("True")), "{}", store["status"]);
}

// ---- 2. App team ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j2_app_team_deployment_pods_ready_on_v1() {
    let Some(mut j) = Journey::start("e2e-app").await else {
        return;
    };
    let _bao = app_team(&mut j, 3).await;
    let ns = j.ns.clone();

    // `kubectl get secretsync db`: NAME STORE VERSION ACTIVE READY AGE
    let table = j.ok(&["get", "secretsync", "db", "-n", &ns]).await;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["db", "vault", "1", "db-v1", "True"], "{table}");
    // Exactly the template's keys, rendered from data and dataFrom.
    assert_eq!(
        j.secret_data("db-v1").await.unwrap(),
        data(&[
            ("dsn", "postgres://app:pw-1@db.internal:5432/app"),
            ("password", "pw-1")
        ])
    );
    let secret = j.get(&["secret", "db-v1"]).await.unwrap();
    assert_eq!(secret["immutable"], true);
    assert_eq!(secret["metadata"]["labels"]["secretsync.io/version"], "1");
    j.wait_events("db", &["VersionCreated"]).await;

    if let Some(sandbox) = j.sandbox("a steady state writes nothing") {
        sandbox.reset_stats();
        // Three refresh intervals with an unchanged source: reads, but no new version, no
        // rollout, no status write and no event (guarantee 2, docs/reference/guarantees.md).
        tokio::time::sleep(Duration::from_secs(7)).await;
        let stats = sandbox.stats();
        let writes: u64 = [
            "secrets",
            "secretsyncs",
            "events",
            "deployments",
            "replicasets",
        ]
        .iter()
        .map(|r| stats.writes_to(r))
        .sum();
        assert_eq!(writes, 0, "{stats:?}");
    }
}

// ---- 3. The secret changes at the source ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j3_source_change_new_version_rolled_old_kept_then_pruned() {
    let Some(mut j) = Journey::start("e2e-change").await else {
        return;
    };
    let bao = app_team(&mut j, 1).await;
    let ns = j.ns.clone();
    // Hold the rollout, so "kept until the rollout completes" is observable.
    j.ok(&["rollout", "pause", "deployment/app", "-n", &ns])
        .await;
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-2")],
    );

    eventually(
        "db-v2 made and the template rewritten, the paused rollout waiting",
        || async {
            let s = j.get(&["secretsync", "db"]).await?;
            let t = &s["status"]["rollout"]["targets"][0];
            let refs = template_refs(&j).await;
            (s["status"]["activeVersion"] == 2
                && t["version"] == 2
                && t["state"] == "Waiting"
                && t["reason"] == "TargetPaused"
                && refs.iter().all(|r| r == "db-v2"))
            .then_some(())
            .ok_or(format!("{} {refs:?}", s["status"]))
        },
    )
    .await;
    assert_eq!(
        j.secret_data("db-v2").await.unwrap(),
        data(&[
            ("dsn", "postgres://app:pw-2@db.internal:5432/app"),
            ("password", "pw-2")
        ])
    );
    // History 1, but the Pods still run on db-v1: it stays.
    assert_eq!(j.versions("db").await, ["db-v1", "db-v2"]);
    assert_eq!(status_version_state(&j, 1).await, "Retained");
    j.wait_pods_on(APP, 2, "db-v1").await;

    j.ok(&["rollout", "resume", "deployment/app", "-n", &ns])
        .await;
    j.ok(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        &ns,
        "--timeout=90s",
    ])
    .await;
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    eventually("db-v1 pruned by history", || async {
        let v = j.versions("db").await;
        (v == ["db-v2"]).then_some(()).ok_or(format!("{v:?}"))
    })
    .await;
    j.wait_events("db", &["VersionDeleted"]).await;
}

// ---- 4. On-call incident: revoke, rollback, unpin ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j4_oncall_revoke_then_rollback_then_unpin() {
    let Some(mut j) = Journey::start("e2e-revoke").await else {
        return;
    };
    let bao = app_team(&mut j, 3).await;
    let ns = j.ns.clone();
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-2")],
    );
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;

    // db-v2 leaked.
    j.ok(&[
        "secretsync",
        "revoke",
        "db",
        "--version",
        "2",
        "-n",
        &ns,
        "--wait",
        "--timeout",
        "90s",
    ])
    .await;
    j.wait_active("db", 3).await;
    j.wait_pods_on(APP, 2, "db-v3").await;
    eventually("db-v2 deleted", || async {
        let v = j.versions("db").await;
        (v == ["db-v1", "db-v3"])
            .then_some(())
            .ok_or(format!("{v:?}"))
    })
    .await;
    assert_eq!(status_version_state(&j, 2).await, "Revoked");
    // The replacement holds the source's current value (which on-call rotates at the
    // backend separately).
    assert_eq!(
        j.secret_data("db-v3").await.unwrap(),
        data(&[
            ("dsn", "postgres://app:pw-2@db.internal:5432/app"),
            ("password", "pw-2")
        ])
    );

    // Roll back to the newest retained version before the active one: v1 (v2 is revoked).
    j.ok(&[
        "secretsync",
        "rollback",
        "db",
        "-n",
        &ns,
        "--wait",
        "--timeout",
        "90s",
    ])
    .await;
    j.wait_active("db", 1).await;
    j.wait_pods_on(APP, 2, "db-v1").await;
    assert_eq!(template_refs(&j).await, ["db-v1"; 3]);

    j.ok(&[
        "secretsync",
        "unpin",
        "db",
        "-n",
        &ns,
        "--wait",
        "--timeout",
        "90s",
    ])
    .await;
    j.wait_active("db", 3).await;
    j.wait_pods_on(APP, 2, "db-v3").await;
    let s = j.get(&["secretsync", "db"]).await.unwrap();
    assert!(s["spec"]["pinVersion"].is_null(), "{}", s["spec"]);
}

// ---- 5. On-call rotation without a source change ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j5_oncall_rotate_fresh_fetch_new_version_rolled() {
    let Some(mut j) = Journey::start("e2e-rotate").await else {
        return;
    };
    let bao = app_team(&mut j, 3).await;
    let ns = j.ns.clone();
    let reads_before = bao.audited_responses("secret/data/app/db");

    let out = j
        .ok(&[
            "secretsync",
            "rotate",
            "db",
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "90s",
        ])
        .await;
    assert!(out.contains("db-v2"), "{out}");
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    assert!(
        bao.audited_responses("secret/data/app/db") > reads_before,
        "no fresh read at OpenBao"
    );
    assert_eq!(
        j.secret_data("db-v2").await.unwrap(),
        j.secret_data("db-v1").await.unwrap()
    );
    let v2 = j.get(&["secret", "db-v2"]).await.unwrap();
    assert_eq!(
        v2["metadata"]["annotations"]["secretsync.io/spec-version"],
        "1"
    );
    assert_eq!(j.versions("db").await, ["db-v1", "db-v2"]);
}

// ---- 6. Operator killed during journey 3 ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j6_operator_sigkilled_mid_rollout_converges_without_duplicates() {
    let Some(mut j) = Journey::start("e2e-kill").await else {
        return;
    };
    let bao = app_team(&mut j, 1).await;
    let ns = j.ns.clone();
    j.ok(&["rollout", "pause", "deployment/app", "-n", &ns])
        .await;
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-2")],
    );
    eventually("db-v2 made", || async {
        j.get(&["secret", "db-v2"]).await.map(drop)
    })
    .await;
    j.kill_operator();

    // While it is down, the rollout is released; then the operator comes back.
    j.ok(&["rollout", "resume", "deployment/app", "-n", &ns])
        .await;
    j.start_operator(&[&ns], None);
    j.ok(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        &ns,
        "--timeout=90s",
    ])
    .await;
    let s = j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    eventually("db-v1 pruned", || async {
        let v = j.versions("db").await;
        (v == ["db-v2"]).then_some(()).ok_or(format!("{v:?}"))
    })
    .await;
    assert_eq!(s["status"]["currentVersion"], 2, "{}", s["status"]);
    let mut numbers: Vec<i64> = s["status"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    let n = numbers.len();
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        n,
        "duplicate version numbers: {}",
        s["status"]["versions"]
    );
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        j.secret_data("db-v2").await.unwrap(),
        data(&[
            ("dsn", "postgres://app:pw-2@db.internal:5432/app"),
            ("password", "pw-2")
        ])
    );
}

// ---- 7. Teardown ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j7_teardown_delete_removes_secrets_retain_keeps_them_unowned() {
    let Some(mut j) = Journey::start("e2e-teardown").await else {
        return;
    };
    let _bao = app_team(&mut j, 3).await;
    let ns = j.ns.clone();
    let keep = sync_yaml(3).replace("name: db}", "name: keep}").replace(
        "  rollout:\n    targets: [{kind: Deployment, name: app}]\n    timeout: 5m\n",
        "  deletionPolicy: Retain\n",
    );
    j.apply(&ns, "keep.yaml", &keep).await;
    j.wait_active("keep", 1).await;

    // Deleting the SecretSync takes its Secrets, with `Delete` (the default).
    j.ok(&["delete", "secretsync", "db", "-n", &ns, "--timeout=60s"])
        .await;
    eventually("db's Secrets deleted", || async {
        let v = j.versions("db").await;
        v.is_empty().then_some(()).ok_or(format!("{v:?}"))
    })
    .await;

    j.ok(&["delete", "secretsync", "keep", "-n", &ns, "--timeout=60s"])
        .await;
    let s = eventually("keep-v1 left without owner", || async {
        let s = j.get(&["secret", "keep-v1"]).await?;
        let owners = s
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        (owners == 0)
            .then_some(s.clone())
            .ok_or(format!("{owners} owners"))
    })
    .await;
    assert_eq!(s["immutable"], true);
    assert_eq!(
        j.secret_data("keep-v1").await.unwrap(),
        data(&[
            ("dsn", "postgres://app:pw-1@db.internal:5432/app"),
            ("password", "pw-1")
        ])
    );
    let gone = j.kubectl(&["get", "secretsync", "keep", "-n", &ns]).await;
    assert!(!gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}

// ---- 8. Platform team: helm install, upgrade, rollback, uninstall -----------------------

/// The chart a release is upgraded from: the last commit before the chart's RBAC let the
/// operator list ServiceAccounts and its SecretSync CRD gained `decodingStrategy`.
const PREVIOUS_CHART_COMMIT: &str = "a0d4bf5";

/// Runs the real `helm` (built by scripts/tools.sh, cached) as the journey's admin, with its
/// config, cache and data in the journey's directory.
async fn helm_output(j: &Journey, args: &[&str]) -> std::process::Output {
    let bin = std::process::Command::new(repo_root().join("scripts/tools.sh"))
        .arg("helm")
        .output()
        .expect("run scripts/tools.sh helm");
    assert!(
        bin.status.success(),
        "{}",
        String::from_utf8_lossy(&bin.stderr)
    );
    let bin = String::from_utf8(bin.stdout).unwrap();
    let home = j.dir().join("helm");
    tokio::process::Command::new(bin.trim())
        .args(args)
        .env("KUBECONFIG", j.kubeconfig())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .expect("run helm")
}

/// [`helm_output`]'s stdout; fails on a non-zero exit.
async fn helm(j: &Journey, args: &[&str]) -> String {
    let out = helm_output(j, args).await;
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The release's objects as `helm get manifest` prints them.
async fn release_objects(j: &Journey, release: &str) -> Vec<Value> {
    let text = helm(j, &["get", "manifest", release, "-n", &j.ns]).await;
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a manifest"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The chart's Deployment in the release, and the verbs its (Cluster)Roles, as stored, grant
/// on ServiceAccounts (what changed between the two chart versions).
async fn release_state(j: &Journey, release: &str) -> (Value, Value) {
    let objects = release_objects(j, release).await;
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the release has a Deployment")
        .clone();
    let mut verbs = Vec::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        let stored = match role["metadata"]["namespace"].as_str() {
            Some(ns) => j.get_in(ns, &["role", name]).await,
            None => j.get(&["clusterrole", name]).await,
        }
        .expect("the release's role is stored");
        verbs.extend(
            stored["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["resources"] == json!(["serviceaccounts"]))
                .map(|r| r["verbs"].clone()),
        );
    }
    (deployment, Value::Array(verbs))
}

/// The SecretSync CRD is this checkout's (it has `remoteRef.decodingStrategy`, which the
/// previous chart's lacks).
async fn assert_crds_current(j: &Journey, when: &str) {
    let crd = j
        .get(&["crd", "secretsyncs.secretsync.io"])
        .await
        .unwrap_or_else(|e| panic!("the SecretSync CRD {when}: {e}"));
    assert!(
        crd.to_string().contains("decodingStrategy"),
        "{when}: the SecretSync CRD is the previous chart's"
    );
}

/// GET /metrics of the operator listening on `addr`.
fn scrape(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// The value of the unlabelled sample `name` in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What a chart upgrade must not change: the versioned Secrets (name and uid: none re-made),
/// the app Deployment's template and generation (not rolled), the status' version list.
async fn app_state(j: &Journey) -> Value {
    let secrets = j
        .get(&["secrets", "-l", "secretsync.io/sync=db"])
        .await
        .expect("list Secrets");
    let mut secrets: Vec<Value> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["metadata"]["name"], s["metadata"]["uid"]]))
        .collect();
    secrets.sort_by_key(Value::to_string);
    let app = j.get(&["deployment", "app"]).await.expect("Deployment app");
    let sync = j.get(&["secretsync", "db"]).await.expect("SecretSync db");
    json!({
        "secrets": secrets,
        "template": app["spec"]["template"],
        "generation": app["metadata"]["generation"],
        "versions": sync["status"]["versions"],
    })
}

/// Stops the operator (its Pod replaced) and runs the release's current Deployment as a new
/// Pod; waits until that operator leads and has reconciled `db` again and again, having made
/// no version and rolled nothing.
async fn replace_operator_pod(j: &mut Journey, release: &str, pod: &str) {
    j.kill_operator();
    let (deployment, _) = release_state(j, release).await;
    let args = run_as_chart_deployment(j, &deployment, pod).await;
    let addr = flag_value(&args, "--metrics-bind-address").to_owned();
    // refreshInterval is 2s: each refresh reads the backend and compares what it got with
    // the active version.
    let text = eventually(&format!("{pod} leading and reconciling"), || async {
        let text = scrape(&addr)?;
        let synced = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("secretsync_reconciles_total{result=\"success\",reason=\"Synced\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (sample(&text, "secretsync_leader") == Some(1.0) && synced >= 3.0)
            .then_some(text.clone())
            .ok_or(format!(
                "leader {:?}, {synced} Synced reconciles",
                sample(&text, "secretsync_leader")
            ))
    })
    .await;
    assert_eq!(
        sample(&text, "secretsync_versions_created_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "secretsync_hashes_rekeyed_total"),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("secretsync_rollouts_total{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j8_platform_team_helm_install_upgrade_rollback_uninstall_keeps_every_version() {
    let Some(mut j) = Journey::start("e2e-helm").await else {
        return;
    };
    // helm needs a real API server (its discovery, server-side apply and release Secrets).
    if !j.enforces_rbac("helm install, upgrade, rollback and uninstall") {
        return;
    }
    let ns = j.ns.clone();
    let release = format!("ss-{}", j.run);
    let previous = j.dir().join("previous");
    std::fs::create_dir_all(&previous).unwrap();
    let archived = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive {PREVIOUS_CHART_COMMIT} charts/secretsync | tar -x -C '{}'",
            repo_root().display(),
            previous.display()
        ))
        .output()
        .expect("run git archive");
    assert!(
        archived.status.success(),
        "the chart of {PREVIOUS_CHART_COMMIT} (needs the git history): {}",
        String::from_utf8_lossy(&archived.stderr)
    );
    let previous = previous.join("charts/secretsync");
    let current = repo_root().join("charts/secretsync");
    let watch = format!("watchNamespaces=[\"{ns}\"]");
    let install = |chart: &std::path::Path| {
        vec![
            release.clone(),
            chart.to_str().unwrap().to_owned(),
            "-n".to_owned(),
            ns.clone(),
            "--set-json".to_owned(),
            watch.clone(),
        ]
    };

    // Helm 4 installs crds/ by server-side apply, over CRDs that exist: here they are this
    // checkout's, applied with `kubectl apply --server-side` (as the chart README says to),
    // and the previous chart's differ, so the install fails on the conflict and changes
    // nothing, not even the CRD.
    let args = install(&previous);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = helm_output(&j, &[&["install"], &args[..]].concat()).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("failed to install CRD")
            && stderr.contains("conflict"),
        "{stderr}"
    );
    assert_eq!(helm(&j, &["list", "-n", &ns, "-q"]).await.trim(), "");
    assert_crds_current(&j, "after the refused install").await;

    // With --skip-crds (the CRDs are managed apart from the release), the previous chart
    // installs; the operator runs as its Deployment; the app team's SecretSync makes db-v1
    // and the app runs on it.
    helm(&j, &[&["install", "--skip-crds"], &args[..]].concat()).await;
    for o in release_objects(&j, &release).await {
        if o["metadata"]["namespace"].is_null() {
            j.cleanup(&format!(
                "{}/{}",
                o["kind"].as_str().unwrap().to_lowercase(),
                o["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    let (deployment, verbs) = release_state(&j, &release).await;
    assert_eq!(
        verbs,
        json!([["get"]]),
        "the previous chart's ServiceAccount rule"
    );
    run_as_chart_deployment(&mut j, &deployment, &format!("{release}-1")).await;
    let bao = app_team_objects(&mut j, 5).await;
    let before = app_state(&j).await;

    // `helm upgrade` to this chart: the release's RBAC changes, the operator's Pod is
    // replaced; nothing of the app's changes.
    let args = install(&current);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm(&j, &[&["upgrade"], &args[..]].concat()).await;
    let (_, verbs) = release_state(&j, &release).await;
    assert_eq!(
        verbs,
        json!([["get", "list"]]),
        "the current chart's ServiceAccount rule"
    );
    replace_operator_pod(&mut j, &release, &format!("{release}-2")).await;
    assert_eq!(app_state(&j).await, before, "across the upgrade");

    // `helm rollback` to the first revision: the previous chart's RBAC again.
    helm(&j, &["rollback", &release, "1", "-n", &ns]).await;
    let (_, verbs) = release_state(&j, &release).await;
    assert_eq!(
        verbs,
        json!([["get"]]),
        "rolled back to the previous chart's rule"
    );
    let history = helm(&j, &["history", &release, "-n", &ns, "-o", "json"]).await;
    let history: Value = serde_json::from_str(&history).unwrap();
    let charts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["chart"].as_str().unwrap())
        .collect();
    let current_version = format!(
        "secretsync-{}",
        std::fs::read_to_string(current.join("Chart.yaml"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("version: "))
            .unwrap()
    );
    assert_eq!(
        charts,
        [
            "secretsync-0.1.0",
            current_version.as_str(),
            "secretsync-0.1.0"
        ]
    );
    replace_operator_pod(&mut j, &release, &format!("{release}-3")).await;
    assert_eq!(app_state(&j).await, before, "across the rollback");
    // A rollback to a chart with older crds/ leaves the CRDs alone, as upgrades do.
    assert_crds_current(&j, "after the rollback").await;

    // The operator still works: a new value makes exactly one new version, rolled out.
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-2")],
    );
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    assert_eq!(j.versions("db").await, ["db-v1", "db-v2"]);
    let sync = j.get(&["secretsync", "db"]).await.unwrap();
    let numbers: Vec<i64> = sync["status"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "no version made twice");

    // `helm uninstall`: the release's objects go; the CRDs, the SecretSync and its versioned
    // Secrets (not the release's) stay, and the app keeps running on db-v2.
    j.kill_operator();
    helm(&j, &["uninstall", &release, "-n", &ns, "--wait"]).await;
    assert_eq!(
        helm(&j, &["list", "-n", &ns, "-q"]).await.trim(),
        "",
        "no release left"
    );
    for o in release_workload_objects(&deployment) {
        let out = j.kubectl(&["get", &o, "-n", &ns]).await;
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{o} left after helm uninstall"
        );
    }
    assert_crds_current(&j, "after the uninstall").await;
    j.get(&["secretsync", "db"])
        .await
        .expect("helm uninstall keeps the SecretSync");
    assert_eq!(j.versions("db").await, ["db-v1", "db-v2"]);
    assert_eq!(template_refs(&j).await, ["db-v2", "db-v2", "db-v2"]);
}

/// The release objects a user sees: its Deployment and ServiceAccount.
fn release_workload_objects(deployment: &Value) -> Vec<String> {
    vec![
        format!(
            "deployment/{}",
            deployment["metadata"]["name"].as_str().unwrap()
        ),
        format!(
            "serviceaccount/{}",
            deployment["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap()
        ),
    ]
}

// ---- 9. An ESO user moves over ------------------------------------------------------------

/// A team on External Secrets Operator moves over, with the operator running as the chart's
/// ServiceAccount with the chart's arguments (instant sync on). In the cluster: ESO's CRDs
/// (from its own module), the team's SecretStore and ExternalSecret, and a platform team's
/// ClusterSecretStore and ClusterExternalSecret selecting the team's namespace by label
/// (`external-secrets.io/v1`). `kubectl secretsync import --from-cluster -n NS` prints ours
/// and reports nothing lost; `kubectl apply` of that makes the Secrets the ExternalSecrets
/// named, versioned, with the same keys and values. Then the team turns instant sync on
/// with `kubectl patch`: a write at OpenBao reaches the hourly-refreshed Secret at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j9_eso_user_migrates_with_import_and_gets_the_same_secrets() {
    let Some(mut j) = Journey::start("e2e-migrate").await else {
        return;
    };
    let plurals = [
        "externalsecrets",
        "secretstores",
        "clustersecretstores",
        "clusterexternalsecrets",
    ];
    let crds: Vec<String> = plurals
        .iter()
        .map(|plural| format!("{plural}.external-secrets.io"))
        .collect();
    for (plural, crd) in plurals.iter().zip(&crds) {
        j.cleanup(&format!("crd/{crd}"));
        let file = secretsync_testkit::eso::crd(plural);
        j.ok(&["apply", "--server-side", "-f", file.to_str().unwrap()])
            .await;
    }
    j.wait_established(&crds.iter().map(String::as_str).collect::<Vec<_>>())
        .await;

    let audit_port = free_port();
    let bao = OpenBao::start_with_socket_audit(&format!("127.0.0.1:{audit_port}"))
        .expect("OpenBao (require_tool passed for kubectl)");
    openbao_app_keys(&mut j, &bao).await;
    let (ns, run) = (j.ns.clone(), j.run.clone());
    j.ok(&[
        "label",
        "namespace",
        &ns,
        &format!("e2e.secretsync.io/migrate={run}"),
    ])
    .await;
    let listener_port = free_port();
    let events = format!(
        "events={{\"openbaoAudit\":{{\"enabled\":true,\"port\":{audit_port}}},\
         \"listener\":{{\"enabled\":true,\"port\":{listener_port}}}}}"
    );
    install_chart_operator(&mut j, &[&ns], None, &[&events]).await;

    let (store, shared) = (format!("openbao-{run}"), format!("registry-{run}"));
    j.cleanup(&format!("clustersecretstores.external-secrets.io/{store}"));
    j.cleanup(&format!(
        "clusterexternalsecrets.external-secrets.io/{shared}"
    ));
    j.cleanup(&format!("clustersecretstores.secretsync.io/{store}"));
    j.cleanup(&format!("clustersecretsyncs.secretsync.io/{shared}"));
    let eso = format!(
        "apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {{name: vault-backend}}
spec:
  provider:
    vault:
      server: {server}
      path: secret
      version: v2
      auth:
        tokenSecretRef: {{name: vault-token, key: token}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: db}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: vault-backend, kind: SecretStore}}
  target: {{name: db-credentials}}
  data:
    - secretKey: password
      remoteRef: {{key: app/db, property: password}}
  dataFrom:
    - extract: {{key: app/config}}
---
apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {{name: {store}}}
spec:
  provider:
    vault:
      server: {server}
      path: secret
      version: v2
      auth:
        tokenSecretRef: {{name: vault-token, key: token, namespace: {ns}}}
---
apiVersion: external-secrets.io/v1
kind: ClusterExternalSecret
metadata: {{name: {shared}}}
spec:
  externalSecretName: {shared}
  namespaceSelector: {{matchLabels: {{e2e.secretsync.io/migrate: '{run}'}}}}
  externalSecretSpec:
    refreshInterval: 1h
    secretStoreRef: {{name: {store}, kind: ClusterSecretStore}}
    target: {{name: registry}}
    data:
      - secretKey: password
        remoteRef: {{key: app/db, property: password}}
",
        server = bao.addr()
    );
    j.apply(&ns, "eso.yaml", &eso).await;

    let out = j
        .kubectl(&["secretsync", "import", "--from-cluster", "-n", &ns])
        .await;
    let (ours, report) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "import failed: {report}");
    assert!(
        report.contains(
            "converted 4 object(s); 0 field(s) not carried over; 0 object(s) not converted"
        ),
        "{report}"
    );
    j.apply(&ns, "imported.yaml", &ours).await;
    j.wait_active("db", 1).await;
    assert_eq!(
        j.secret_data("db-credentials-v1").await.unwrap(),
        data(&[("host", "db.internal"), ("password", "pw-1")])
    );
    // What the platform team sees: its ClusterSecretSync Ready, one namespace synced.
    eventually(&format!("ClusterSecretSync {shared} Ready"), || async {
        let status = j.get(&["clustersecretsync", &shared]).await?["status"].clone();
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && status["namespaces"]["synced"] == 1)
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    j.wait_active(&shared, 1).await;
    assert_eq!(
        j.secret_data("registry-v1").await.unwrap(),
        data(&[("password", "pw-1")])
    );

    // Instant sync, turned on as a user would.
    set_store_events(&j, r#"{"source":"OpenBaoAudit"}"#).await;
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-2")],
    );
    j.wait_active("db", 2).await;
    assert_eq!(
        j.secret_data("db-credentials-v2").await.unwrap(),
        data(&[("host", "db.internal"), ("password", "pw-2")])
    );
    wait_events_ready(&j, "vault-backend", "EventsListening").await;

    // A pipeline that writes to OpenBao tells the operator itself: the store switched to
    // signed webhooks, and the example's notify.sh run as the pipeline would run it.
    j.ok(&[
        "create",
        "secret",
        "generic",
        "webhook-key",
        "-n",
        &ns,
        "--from-literal=key=e2e-signing-key",
    ])
    .await;
    set_store_events(
        &j,
        r#"{"source":"Webhook","secretRef":{"name":"webhook-key","key":"key"}}"#,
    )
    .await;
    wait_events_ready(&j, "vault-backend", "EventsListening").await;
    bao.kv_put(
        "secret",
        "app/db",
        &[("username", "app"), ("password", "pw-3")],
    );
    let notified =
        std::process::Command::new(repo_root().join("examples/webhook-instant/notify.sh"))
            .args([
                &format!("http://127.0.0.1:{listener_port}"),
                ns.as_str(),
                "vault-backend",
                "app/db",
            ])
            .env("WEBHOOK_KEY", "e2e-signing-key")
            .output()
            .expect("run notify.sh");
    assert!(
        notified.status.success(),
        "notify.sh: {}{}",
        String::from_utf8_lossy(&notified.stdout),
        String::from_utf8_lossy(&notified.stderr)
    );
    j.wait_active("db", 3).await;
    assert_eq!(
        j.secret_data("db-credentials-v3").await.unwrap(),
        data(&[("host", "db.internal"), ("password", "pw-3")])
    );
}

/// Sets the store `vault-backend`'s `spec.events` as a user would (`kubectl patch`, the store
/// named by its group, as with ESO's kinds beside ours). The store edit itself reads again:
/// once `db` has read through the edited store (its status names the store's generation), a
/// write at OpenBao is the event's alone to bring.
async fn set_store_events(j: &Journey, events: &str) {
    let store = ["secretstores.secretsync.io", "vault-backend"];
    let patch = format!(r#"{{"spec":{{"events":{events}}}}}"#);
    j.ok(&[
        "patch",
        store[0],
        store[1],
        "-n",
        &j.ns,
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
    let edited = j.get(&store).await.unwrap()["metadata"]["generation"].clone();
    eventually("db read through the edited store", || async {
        let sync = j.get(&["secretsync", "db"]).await?;
        let read = &sync["status"]["storeGeneration"];
        (*read == edited)
            .then_some(())
            .ok_or_else(|| format!("storeGeneration {read}, the store is at {edited}"))
    })
    .await;
}

/// Waits for the store's `EventsReady` to be `True` with `reason`, for its current spec.
async fn wait_events_ready(j: &Journey, store: &str, reason: &str) {
    eventually(&format!("{store} EventsReady {reason}"), || async {
        let store = j.get(&["secretstores.secretsync.io", store]).await?;
        let conditions = store["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let events = conditions
            .iter()
            .find(|c| c["type"] == "EventsReady")
            .ok_or("no EventsReady yet")?;
        let current = events["observedGeneration"] == store["metadata"]["generation"];
        (current && events["status"] == "True" && events["reason"] == reason)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "EventsReady {} {}: {}",
                    events["status"], events["reason"], events["message"]
                )
            })
    })
    .await;
}

// ---- 10. The same life on CyberArk Conjur and on Akeyless ---------------------------------

/// A backend of journey 10: a TLS double of its REST API (no server of either can be had
/// here), the store that logs in to it with the credentials in Secret `creds`, and how a
/// value is written there.
trait ThirdParty {
    fn provider(&self) -> Value;
    fn credentials(&self) -> [(&'static str, &'static str); 2];
    fn key(&self, name: &str) -> String;
    fn put(&self, name: &str, value: &str);
}

impl ThirdParty for ConjurDouble {
    fn provider(&self) -> Value {
        json!({"conjur": {
            "url": self.url(),
            "caBundle": self.ca_bundle(),
            "auth": {"apikey": {
                "account": conjur_double::ACCOUNT,
                "userRef": {"name": "creds", "key": "hostid"},
                "apiKeyRef": {"name": "creds", "key": "apikey"},
            }},
        }})
    }
    fn credentials(&self) -> [(&'static str, &'static str); 2] {
        [
            ("hostid", conjur_double::HOST),
            ("apikey", conjur_double::API_KEY),
        ]
    }
    fn key(&self, name: &str) -> String {
        format!("data/app/{name}")
    }
    fn put(&self, name: &str, value: &str) {
        self.set_value(&self.key(name), value.as_bytes());
    }
}

impl ThirdParty for AkeylessDouble {
    fn provider(&self) -> Value {
        json!({"akeyless": {
            "akeylessGWApiURL": self.url(),
            "caBundle": self.ca_bundle(),
            "authSecretRef": {"secretRef": {
                "accessID": {"name": "creds", "key": "access-id"},
                "accessTypeParam": {"name": "creds", "key": "access-key"},
            }},
        }})
    }
    fn credentials(&self) -> [(&'static str, &'static str); 2] {
        [
            ("access-id", akeyless_double::ACCESS_ID),
            ("access-key", akeyless_double::ACCESS_KEY),
        ]
    }
    fn key(&self, name: &str) -> String {
        format!("/app/{name}")
    }
    fn put(&self, name: &str, value: &str) {
        self.set_value(&self.key(name), value, &[]);
    }
}

/// The app team's and on-call's life on `backend`, with kubectl and the plugin, the
/// operator binary reading the double over TLS with the store's `caBundle`: synced and
/// rolled out, the source changed, a rotation, a revoke and a rollback — each time the
/// Secret's data and the Pods' version checked.
async fn third_party_journey(j: &mut Journey, backend: &impl ThirdParty) {
    let ns = j.ns.clone();
    j.start_operator(&[&ns], None);
    backend.put("username", "app");
    backend.put("password", "pw-1");
    let mut create = vec!["create", "secret", "generic", "creds", "-n", &ns];
    let literals: Vec<String> = backend
        .credentials()
        .iter()
        .map(|(k, v)| format!("--from-literal={k}={v}"))
        .collect();
    create.extend(literals.iter().map(String::as_str));
    j.ok(&create).await;
    let store = json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "vault"},
        "spec": {"provider": backend.provider()},
    });
    j.apply(&ns, "store.yaml", &store.to_string()).await;
    let sync = format!(
        "apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: vault}}
  refreshInterval: 2s
  data:
    - {{secretKey: username, remoteRef: {{key: {}}}}}
    - {{secretKey: password, remoteRef: {{key: {}}}}}
  history: {{limit: 3}}
  rollout:
    targets: [{{kind: Deployment, name: app}}]
    timeout: 5m
",
        backend.key("username"),
        backend.key("password")
    );
    j.apply(&ns, "secretsync.yaml", &sync).await;
    j.apply(&ns, "deployment.yaml", DEPLOYMENT).await;
    j.wait_active("db", 1).await;
    j.wait_pods_on(APP, 2, "db-v1").await;
    let pw = |p: &str| data(&[("password", p), ("username", "app")]);
    assert_eq!(j.secret_data("db-v1").await.unwrap(), pw("pw-1"));

    // The value changes at the backend: the next refresh makes db-v2 and rolls it out.
    backend.put("password", "pw-2");
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    assert_eq!(j.secret_data("db-v2").await.unwrap(), pw("pw-2"));

    // On-call rotates: a fresh read, db-v3, rolled out.
    oncall(j, "rotate", &[]).await;
    j.wait_active("db", 3).await;
    j.wait_pods_on(APP, 2, "db-v3").await;
    assert_eq!(j.secret_data("db-v3").await.unwrap(), pw("pw-2"));

    // db-v3 leaked: revoked, replaced by db-v4 and deleted once no Pod uses it.
    oncall(j, "revoke", &["--version", "3"]).await;
    j.wait_active("db", 4).await;
    j.wait_pods_on(APP, 2, "db-v4").await;
    eventually("db-v3 deleted", || async {
        let v = j.versions("db").await;
        (!v.contains(&"db-v3".to_owned()))
            .then_some(())
            .ok_or(format!("{v:?}"))
    })
    .await;
    assert_eq!(status_version_state(j, 3).await, "Revoked");

    // Rolled back past the revoked version to db-v2.
    oncall(j, "rollback", &[]).await;
    j.wait_active("db", 2).await;
    j.wait_pods_on(APP, 2, "db-v2").await;
    assert_eq!(template_refs(j).await, ["db-v2"; 3]);
}

/// `kubectl secretsync <verb> db [extra…] --wait`, in the journey's namespace.
async fn oncall(j: &Journey, verb: &str, extra: &[&str]) {
    let ns = j.ns.clone();
    let mut args = vec!["secretsync", verb, "db", "-n", &ns];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--wait", "--timeout", "90s"]);
    j.ok(&args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j10_conjur_sync_rotate_revoke_rollback_rolled_out() {
    let Some(mut j) = Journey::start("e2e-conjur").await else {
        return;
    };
    let Some(conjur) = ConjurDouble::start().await else {
        return;
    };
    third_party_journey(&mut j, &conjur).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j10_akeyless_sync_rotate_revoke_rollback_rolled_out() {
    let Some(mut j) = Journey::start("e2e-akeyless").await else {
        return;
    };
    let Some(akeyless) = AkeylessDouble::start().await else {
        return;
    };
    third_party_journey(&mut j, &akeyless).await;
}
