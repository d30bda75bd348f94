//! The kinds a Helm chart installs next to its Deployment (RBAC, Services,
//! PodDisruptionBudgets, NetworkPolicies, a ServiceMonitor through its CRD), and request
//! accounting by user and scope.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use secretsync_sandbox::{Sandbox, Scope};

use crate::common::{create_namespace, status_of};
use crate::kubectl::Kubectl;

const SERVICEMONITOR_CRD: &str = include_str!("../fixtures/servicemonitor-crd.yaml");

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object fits its type")
}

/// The `field: message` lines of a 422's causes.
fn causes(e: kube::Error) -> Vec<String> {
    let s = status_of(e);
    assert_eq!(s.code, 422, "{s:?}");
    s.details
        .map(|d| d.causes)
        .unwrap_or_default()
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

#[tokio::test]
async fn rbac_objects_are_stored_and_validated() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let pp = PostParams::default();
    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    let role = roles
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
            ]})),
        )
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap()[0].verbs, ["get", "list"]);
    let bad = roles
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "bad"}, "rules": [{"resources": ["pods"], "verbs": ["get"]}]})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(bad),
        ["rules[0].apiGroups: Required value: resource rules must supply at least one api group"]
    );

    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    cluster_roles
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"}, "rules": [
                {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            ]})),
        )
        .await
        .unwrap();

    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    let binding = json!({"metadata": {"name": "op"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "op"}]});
    bindings.create(&pp, &obj(binding.clone())).await.unwrap();
    // roleRef is immutable, as in a real cluster (Helm users meet this on renames).
    let moved = bindings
        .patch(
            "op",
            &PatchParams::default(),
            &Patch::Merge(json!({"roleRef": {"kind": "ClusterRole"}})),
        )
        .await
        .unwrap_err();
    assert!(
        causes(moved).iter().any(
            |c| c.starts_with("roleRef: Invalid value") && c.ends_with("cannot change roleRef")
        )
    );

    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let no_namespace = cluster_bindings
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
                "subjects": [{"kind": "ServiceAccount", "name": "op"}]})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(no_namespace),
        ["subjects[0].namespace: Required value"]
    );
    cluster_bindings
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "default"}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        cluster_bindings
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn services_pdbs_and_network_policies_get_defaults_and_checks() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let pp = PostParams::default();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = |name: &str| {
        obj::<Service>(json!({"metadata": {"name": name},
            "spec": {"selector": {"app": "op"}, "ports": [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]}}))
    };
    let a = services.create(&pp, &svc("a")).await.unwrap();
    let b = services.create(&pp, &svc("b")).await.unwrap();
    let ip = |s: &Service| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert_ne!(ip(&a), ip(&b), "each Service gets its own cluster IP");
    assert_eq!(a.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
    // A replace that leaves the IP out keeps it.
    let mut replaced = svc("a");
    replaced.metadata.resource_version = a.metadata.resource_version.clone();
    let replaced = services.replace("a", &pp, &replaced).await.unwrap();
    assert_eq!(ip(&replaced), ip(&a));
    let unnamed = services
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "c"}, "spec": {"ports": [{"port": 80}, {"port": 70000}]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(unnamed),
        [
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value",
            "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            // targetPort defaults to port, and is checked after defaulting.
            "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ]
    );

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb = pdbs
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "op"}}}})),
        )
        .await
        .unwrap();
    assert_eq!(pdb.metadata.generation, Some(1));
    let both = pdbs
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "both"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}})),
        )
        .await
        .unwrap_err();
    assert!(causes(both)[0].ends_with("minAvailable and maxUnavailable cannot be both set"));

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "default");
    let np = policies
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "op"}, "spec": {"podSelector": {"matchLabels": {"app": "op"}},
                "ingress": [{"ports": [{"port": 9090}]}],
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        np.spec.unwrap().policy_types.unwrap(),
        ["Ingress", "Egress"],
        "policyTypes defaulted from the rules present"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn requests_are_counted_by_user_and_scope() {
    let sb = Sandbox::start().await.unwrap();
    create_namespace(&sb.client(), "apps").await;
    let alice = sb.client_as("system:serviceaccount:apps:alice");
    let secrets: Api<Secret> = Api::namespaced(alice.clone(), "apps");
    secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "s"}})),
        )
        .await
        .unwrap();
    Api::<Secret>::all(alice.clone())
        .list(&Default::default())
        .await
        .unwrap();
    // The unnamed admin client's requests are kept apart.
    Api::<Secret>::namespaced(sb.client(), "apps")
        .get("s")
        .await
        .unwrap();

    let stats = sb.stats();
    let mine: Vec<(String, String, Scope, String)> = stats
        .by_user("system:serviceaccount:apps:alice")
        .map(|c| {
            (
                c.key.verb.clone(),
                c.key.rbac_resource(),
                c.key.scope(),
                c.key.namespace.clone(),
            )
        })
        .collect();
    assert_eq!(
        mine,
        [
            (
                "create".into(),
                "secrets".into(),
                Scope::Namespaced,
                "apps".into()
            ),
            (
                "list".into(),
                "secrets".into(),
                Scope::Cluster,
                String::new()
            ),
        ]
    );
    assert_eq!(stats.count("get", "", "secrets"), 1);
    assert_eq!(
        stats.by_user("").count(),
        2,
        "namespace creation and the get"
    );

    // The same records over HTTP.
    let req = hyper::Request::get("/sandbox/stats")
        .body(Vec::new())
        .unwrap();
    let v: Value = sb.client().request(req).await.unwrap();
    let parsed: secretsync_sandbox::Stats = serde_json::from_value(v).unwrap();
    assert_eq!(
        parsed.by_user("system:serviceaccount:apps:alice").count(),
        2
    );
    sb.shutdown().await;
}

/// Everything the secretsync chart renders, in one stream, as `helm template` would print it.
fn chart_like_manifest() -> String {
    r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: op, namespace: ops}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: op}
rules:
  # comments survive in rendered charts
  - apiGroups: ["secretsync.io"]
    resources: ["secretsyncs", "secretsyncs/status"]
    verbs: ["list", "watch", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: op}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: op}
subjects: [{kind: ServiceAccount, name: op, namespace: ops}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: op-leader-election, namespace: ops}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [op], verbs: [get, update, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: op-leader-election, namespace: ops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: op-leader-election}
subjects: [{kind: ServiceAccount, name: op, namespace: ops}]
---
apiVersion: v1
kind: Service
metadata: {name: op-metrics, namespace: ops}
spec:
  selector: {app: op}
  ports: [{name: metrics, port: 9090, targetPort: metrics}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: op, namespace: ops}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: op}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: op, namespace: ops}
spec:
  podSelector: {matchLabels: {app: op}}
  policyTypes: [Ingress, Egress]
  ingress: [{ports: [{port: 9090, protocol: TCP}]}]
  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: 443, protocol: TCP}]}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: op, namespace: ops}
spec:
  selector: {matchLabels: {app: op}}
  endpoints: [{port: metrics, interval: 30s}]
"#
    .to_string()
}

#[tokio::test]
async fn kubectl_applies_a_charts_kinds_and_reapplies_them_unchanged() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    k.ok(&["create", "namespace", "ops"], None).await;
    k.ok(&["apply", "-f", "-"], Some(SERVICEMONITOR_CRD)).await;
    k.ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
        ],
        None,
    )
    .await;
    let manifest = chart_like_manifest();
    let first = k.ok(&["apply", "-f", "-"], Some(&manifest)).await;
    assert_eq!(first.matches(" created").count(), 9, "{first}");
    let again = k.ok(&["apply", "-f", "-"], Some(&manifest)).await;
    // kubectl always sends a PodDisruptionBudget's selector (its patch strategy is
    // `replace`), so a real server answers "configured" for it too.
    assert_eq!(again.matches(" unchanged").count(), 8, "{again}");
    assert!(
        again.contains("poddisruptionbudget.policy/op configured"),
        "{again}"
    );
    for kind in [
        "serviceaccounts",
        "roles",
        "rolebindings",
        "services",
        "poddisruptionbudgets",
        "networkpolicies",
        "servicemonitors",
    ] {
        let names = k.ok(&["get", "-n", "ops", kind, "-o", "name"], None).await;
        assert_eq!(names.lines().count(), 1, "{kind}: {names}");
    }
    for kind in ["clusterroles/op", "clusterrolebindings/op"] {
        k.ok(&["get", kind], None).await;
    }
    // A changed port is a strategic-merge patch by kubectl; the cluster IP stays.
    let ip_before = k
        .ok(
            &[
                "get",
                "-n",
                "ops",
                "svc/op-metrics",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .await;
    let changed = manifest.replace("port: 9090, targetPort", "port: 9091, targetPort");
    let out = k.ok(&["apply", "-f", "-"], Some(&changed)).await;
    assert!(out.contains("service/op-metrics configured"), "{out}");
    let svc = k
        .ok(
            &[
                "get",
                "-n",
                "ops",
                "svc/op-metrics",
                "-o",
                "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
            ],
            None,
        )
        .await;
    assert_eq!(svc, format!("{ip_before} 9091"));
    // The fixture CRD's schema is enforced like any other.
    let bad = k
        .run(
            &["apply", "-f", "-"],
            Some("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: bad, namespace: ops}\nspec: {endpoints: []}\n"),
        )
        .await;
    assert!(
        !bad.ok && bad.stderr.contains("spec.selector: Required value"),
        "{}",
        bad.stderr
    );
    // A ServiceMonitor through the dynamic API, as the chart's Prometheus would read it.
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let api: Api<DynamicObject> =
        Api::namespaced_with(sb.client(), "ops", &ApiResource::from_gvk(&gvk));
    let sm = api.get("op").await.unwrap();
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
    sb.shutdown().await;
}
