//! The chart's RBAC (charts/secretsync) against the calls the operator really makes: the
//! operator runs as the chart's ServiceAccount (the sandbox records requests by
//! `Impersonate-User`) through a journey that touches every code path that talks to the
//! API server, and every (verb, group, resource, scope) it asked for must be granted by a
//! rule the chart renders. Verbs on Secrets are checked the other way too: each granted
//! one must have been used. The expected set is what was observed, never a list kept here,
//! so new calls (leader election, store status) show up as a failure naming them.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync, TargetState};
use secretsync_operator::Config;
use secretsync_operator::hash_key::KeySecret;
use secretsync_operator::process::leader::{Elector, LeaseConfig};
use serde_json::{Value, json};

use crate::argo::{create_rollout, healthy_argo, install_argo};
use crate::common::{Env, Operator, install_namespace, sync_yaml};

/// The chart's ServiceAccount with the release name and namespace used below.
const RELEASE: &str = "secretsync";
const RELEASE_NAMESPACE: &str = "secretsync";
const OPERATOR_USER: &str = "system:serviceaccount:secretsync:secretsync";

/// One request class as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    group: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    verb: String,
    /// Empty: cluster scope (a cluster-scoped resource, or all namespaces).
    namespace: String,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let scope = if self.namespace.is_empty() {
            "cluster".to_owned()
        } else {
            format!("namespace {}", self.namespace)
        };
        write!(f, "{:<7} {group}/{} ({scope})", self.verb, self.resource)
    }
}

/// One rendered rule, and where it applies.
#[derive(Debug)]
struct Grant {
    /// `None`: everywhere (a ClusterRole bound by a ClusterRoleBinding); `Some(ns)`: in
    /// that namespace only (bound by a RoleBinding).
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    resource_names: Vec<String>,
    /// `Kind/name` of the role, for messages.
    role: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn matches(allowed: &[String], value: &str) -> bool {
    allowed.iter().any(|a| a == "*" || a == value)
}

impl Grant {
    fn covers(&self, r: &Request) -> bool {
        let in_scope = match &self.namespace {
            None => true,
            Some(ns) => *ns == r.namespace,
        };
        // resourceNames cannot restrict create, list or watch (the name is not in the URL),
        // so such a rule grants only the named-object verbs. The sandbox does not record
        // names, so a named rule is taken to cover its verbs on any name.
        let named_ok = self.resource_names.is_empty()
            || !matches!(
                r.verb.as_str(),
                "create" | "list" | "watch" | "deletecollection"
            );
        in_scope
            && named_ok
            && matches(&self.groups, &r.group)
            && matches(&self.resources, &r.resource)
            && matches(&self.verbs, &r.verb)
    }
}

/// The rules bound to the operator's ServiceAccount in the chart rendered with `set_json`
/// overrides, through `scripts/chart.py` (Helm's Go library via helm-python-sdk).
fn rendered_grants(set_json: &[&str]) -> Option<Vec<Grant>> {
    let python = secretsync_testkit::require_tool("python")?;
    let root = secretsync_testkit::repo_root();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root.join("scripts/chart.py")).args([
        "rbac",
        "--release",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
    ]);
    for s in set_json {
        cmd.args(["--set-json", s]);
    }
    let out = cmd.output().expect("run scripts/chart.py");
    assert!(
        out.status.success(),
        "scripts/chart.py rbac failed (is helm-python-sdk installed? run scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> = serde_json::from_slice(&out.stdout).expect("chart.py prints JSON");
    let role = |kind: &str, name: &str, namespace: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
    };
    let mut grants = Vec::new();
    for binding in &objects {
        let kind = binding["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
            continue;
        }
        let binds_operator = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == RELEASE
                    && s["namespace"] == RELEASE_NAMESPACE
            });
        if !binds_operator {
            continue;
        }
        let namespace = binding["metadata"]["namespace"].as_str().map(str::to_owned);
        let ref_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let ref_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role_ns = (ref_kind == "Role")
            .then_some(namespace.as_deref())
            .flatten();
        let Some(role) = role(ref_kind, ref_name, role_ns) else {
            panic!("{kind} {ref_name} refers to a {ref_kind} the chart does not render");
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            grants.push(Grant {
                namespace: namespace.clone(),
                groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
                resource_names: strings(&rule["resourceNames"]),
                role: format!("{ref_kind}/{ref_name}"),
            });
        }
    }
    assert!(
        !grants.is_empty(),
        "the chart binds no rules to the operator"
    );
    Some(grants)
}

fn observed_requests(env: &Env) -> BTreeSet<Request> {
    env.sandbox
        .stats()
        .by_user(OPERATOR_USER)
        .map(|c| Request {
            group: c.key.group.clone(),
            resource: c.key.rbac_resource(),
            verb: c.key.verb.clone(),
            namespace: c.key.namespace.clone(),
        })
        .collect()
}

/// Requests no grant covers, and verbs on Secrets that are granted but were never used.
fn check(observed: &BTreeSet<Request>, grants: &[Grant]) -> Result<(), String> {
    let uncovered: Vec<&Request> = observed
        .iter()
        .filter(|r| !grants.iter().any(|g| g.covers(r)))
        .collect();
    let used_on_secrets: BTreeSet<&str> = observed
        .iter()
        .filter(|r| r.group.is_empty() && r.resource == "secrets")
        .map(|r| r.verb.as_str())
        .collect();
    let unused_on_secrets: BTreeSet<String> = grants
        .iter()
        .filter(|g| matches(&g.groups, "") && matches(&g.resources, "secrets"))
        .flat_map(|g| {
            g.verbs
                .iter()
                .filter(|v| !used_on_secrets.contains(v.as_str()))
                .map(move |v| format!("{v} (in {})", g.role))
        })
        .collect();
    if uncovered.is_empty() && unused_on_secrets.is_empty() {
        return Ok(());
    }
    let mut report = String::new();
    if !uncovered.is_empty() {
        report.push_str("requests the chart's RBAC does not grant (add a rule with a reason):\n");
        for r in &uncovered {
            report.push_str(&format!("  + {r}\n"));
        }
    }
    if !unused_on_secrets.is_empty() {
        report.push_str(
            "verbs on secrets the chart grants but the operator never used (drop them):\n",
        );
        for v in &unused_on_secrets {
            report.push_str(&format!("  - {v}\n"));
        }
    }
    report.push_str("every request the operator made:\n");
    for r in observed {
        report.push_str(&format!("    {r}\n"));
    }
    Err(report)
}

async fn create_cluster<K>(env: &Env, value: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("test object fits its type");
    Api::<K>::all(env.client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

async fn wait_ready_false(env: &Env, sync: &str, reason: &str) {
    let (found, message) = env
        .wait_for::<SecretSync, _>(sync, &format!("{sync} Ready=False"), |s| {
            s.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone()))
        })
        .await;
    assert_eq!(found, reason, "{message}");
}

/// Everything the operator does against the API server, once: sync, rollout, rotation,
/// history pruning, revocation, a ClusterSecretStore admitted by namespace labels, Vault
/// stores that read a token Secret and request a ServiceAccount token (the backend itself
/// is unreachable), and deletion with both policies.
async fn journey(env: &Env) {
    let ns = &env.ns;
    env.fake_store("fake", &[("app/db", r#"{"password":"one"}"#, "1")])
        .await;
    env.create::<SecretSync>(&sync_yaml(
        "db",
        "fake",
        "  history: {limit: 1}\n  rollout: {targets: [{kind: Deployment, name: api}, {kind: Rollout, name: web}]}",
    ))
    .await;
    env.wait_version("db", 1).await;
    // An Argo Rollout target, reported Healthy by a stand-in for Argo at each generation.
    let argo = healthy_argo(env.client.clone(), ns);
    create_rollout(env, "web", "db-v1", json!({})).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{
                "name": "api", "image": "api:1",
                "envFrom": [{"secretRef": {"name": "db-v1"}}],
            }]}},
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let rolled_out = |version: i64| {
        move |s: &SecretSync| {
            let targets = &s.status.as_ref()?.rollout.as_ref()?.targets;
            targets
                .iter()
                .all(|t| t.version == version && t.state == TargetState::Complete)
                .then_some(())
        }
    };
    env.wait_for::<SecretSync, _>("db", "api rolled out to v1", rolled_out(1))
        .await;

    // Rotation: a new version, rolled out; history 1 prunes db-v1 once nothing uses it.
    env.merge_sync("db", json!({"spec": {"version": 2}})).await;
    env.wait_version("db", 2).await;
    env.wait_for::<SecretSync, _>("db", "api rolled out to v2", rolled_out(2))
        .await;
    env.wait_for_absent::<Secret>("db-v1").await;

    // Revocation of the active version: v3 is made, rolled out, and db-v2 deleted.
    env.merge_sync("db", json!({"spec": {"revokedVersions": [2]}}))
        .await;
    env.wait_version("db", 3).await;
    env.wait_for_absent::<Secret>("db-v2").await;

    // A ClusterSecretStore that admits namespaces by label.
    Api::<Namespace>::all(env.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"secrets": "allowed"}}})),
        )
        .await
        .unwrap();
    create_cluster::<ClusterSecretStore>(
        env,
        json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretStore",
            "metadata": {"name": "shared"},
            "spec": {
                "provider": {"fake": {"data": [{"key": "app/db", "value": "{\"password\":\"x\"}", "version": "1"}]}},
                "conditions": [{"namespaceSelector": {"matchLabels": {"secrets": "allowed"}}}],
            },
        }),
    )
    .await;
    env.create::<SecretSync>(
        &sync_yaml("shared", "shared", "  deletionPolicy: Retain").replace(
            "storeRef: {name: shared}",
            "storeRef: {name: shared, kind: ClusterSecretStore}",
        ),
    )
    .await;
    env.wait_version("shared", 1).await;

    // Vault stores: the credentials are read from Kubernetes before Vault is contacted.
    let closed = format!("http://127.0.0.1:{}", secretsync_testkit::free_port());
    env.create::<Secret>(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: vault-token}\nstringData: {token: not-a-real-token}\n",
    )
    .await;
    env.create::<ServiceAccount>("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n")
        .await;
    for (store, auth) in [
        (
            "vault-token",
            json!({"tokenSecretRef": {"name": "vault-token", "key": "token"}}),
        ),
        (
            "vault-k8s",
            json!({"kubernetes": {"mountPath": "kubernetes", "role": "app", "serviceAccountRef": {"name": "app"}}}),
        ),
    ] {
        let obj: SecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": store},
            "spec": {"provider": {"vault": {"server": closed, "path": "secret", "auth": auth}}},
        }))
        .unwrap();
        env.api::<SecretStore>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
        env.create::<SecretSync>(&sync_yaml(store, store, "")).await;
        wait_ready_false(env, store, "ProviderUnavailable").await;
    }

    // Deletion: Delete removes the versions, Retain leaves them without an owner.
    let syncs = env.api::<SecretSync>();
    for name in ["db", "shared"] {
        syncs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["db", "shared"] {
        env.wait_for_absent::<SecretSync>(name).await;
    }
    env.wait_for_absent::<Secret>("db-v3").await;
    let kept = env.secret("shared-v1").await.expect("retained");
    assert!(kept.owner_references().is_empty());
    argo.abort();
}

/// Leader election as the binary runs it, as the chart's ServiceAccount on the chart's
/// Lease: acquired, renewed a few times, released.
async fn elect(env: &Env) {
    let elector = Elector::new(
        env.sandbox.client_as(OPERATOR_USER),
        LeaseConfig {
            name: RELEASE.into(),
            namespace: RELEASE_NAMESPACE.into(),
            identity: "rbac-test".into(),
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
        },
    );
    let lease = elector.acquire().await;
    // Still holding after several renewals: hold() only returns when the Lease is lost.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), elector.hold(lease))
            .await
            .is_err(),
        "the Lease was lost while renewing"
    );
    elector.release().await.expect("the Lease is released");
}

/// Runs the journey with the operator acting as the chart's ServiceAccount, watching
/// `watch` (None: all namespaces), and checks what it did against the chart rendered with
/// `set_json`.
async fn run(watch: Option<&str>, set_json: &[&str]) {
    let Some(grants) = rendered_grants(set_json) else {
        return;
    };
    let mut env = Env::without_operator("payments").await;
    install_namespace(&env.client, RELEASE_NAMESPACE).await;
    // Before the operator starts, so its discovery finds Rollouts and it watches them.
    install_argo(&env.client).await;
    // As the chart runs it: the content-hash key in the release namespace.
    let config = Config {
        hash_key: KeySecret {
            namespace: RELEASE_NAMESPACE.into(),
            name: format!("{RELEASE}-hash-key"),
        },
        ..Config::default()
    };
    env.operator = Some(Operator::start_with(
        env.sandbox.client_as(OPERATOR_USER),
        watch.map(str::to_owned),
        config,
    ));
    journey(&env).await;
    env.stop_operator().await;
    elect(&env).await;
    let observed = observed_requests(&env);
    assert!(
        observed
            .iter()
            .any(|r| r.resource == "secrets" && r.verb == "create"),
        "the operator's requests were not recorded under {OPERATOR_USER}"
    );
    assert!(
        observed
            .iter()
            .any(|r| r.group == "argoproj.io" && r.resource == "rollouts" && r.verb == "patch"),
        "the journey never rolled an Argo Rollout"
    );
    eprintln!("operator requests ({} classes):", observed.len());
    for r in &observed {
        eprintln!("    {r}");
    }
    if let Err(report) = check(&observed, &grants) {
        panic!("the chart's RBAC does not match what the operator does:\n{report}");
    }
}

#[tokio::test]
async fn the_charts_cluster_wide_rbac_grants_every_call_and_no_unused_secret_verb() {
    run(None, &[]).await;
}

#[tokio::test]
async fn the_charts_per_namespace_rbac_grants_every_call_of_a_namespaced_operator() {
    run(Some("payments"), &[r#"watchNamespaces=["payments"]"#]).await;
}

#[test]
fn the_check_reports_uncovered_requests_and_unused_secret_verbs() {
    let request = |verb: &str, group: &str, resource: &str, namespace: &str| Request {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        namespace: namespace.into(),
    };
    let grant =
        |namespace: Option<&str>, resources: &[&str], verbs: &[&str], names: &[&str]| Grant {
            namespace: namespace.map(str::to_owned),
            groups: vec![String::new()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            role: "Role/test".into(),
        };
    let observed: BTreeSet<Request> = [
        request("list", "", "secrets", ""),
        request("create", "", "secrets", "a"),
        request("get", "", "configmaps", "b"),
        request("create", "", "configmaps", "b"),
    ]
    .into();
    let grants = [
        grant(None, &["secrets"], &["list", "create", "delete"], &[]),
        // Namespace b only, and by name: get yes, create no.
        grant(Some("b"), &["configmaps"], &["get", "create"], &["lock"]),
    ];
    let report = check(&observed, &grants).unwrap_err();
    assert!(
        report.contains("+ create  core/configmaps (namespace b)"),
        "{report}"
    );
    assert!(!report.contains("+ get"), "{report}");
    assert!(report.contains("- delete (in Role/test)"), "{report}");
    // A Role elsewhere grants nothing here.
    let elsewhere = [grant(Some("c"), &["*"], &["*"], &[])];
    let only_b: BTreeSet<Request> = [request("get", "", "configmaps", "b")].into();
    assert!(check(&only_b, &elsewhere).is_err());
}
