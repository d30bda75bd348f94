//! Defaulting and validation of the kinds a Helm chart installs next to its workload:
//! RBAC (Roles, ClusterRoles and their bindings), Services, PodDisruptionBudgets and
//! NetworkPolicies. Only what a real API server refuses and what a broken manifest
//! usually gets wrong, with the real field paths and messages.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::error::Cause;
use crate::util::is_dns_label;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Hands out Service cluster IPs from 10.96.0.0/16, never reusing one: enough for tests,
/// without the real allocator's bitmap and repair loop.
#[derive(Debug)]
pub struct ClusterIps(AtomicU32);

impl Default for ClusterIps {
    fn default() -> Self {
        // 10.96.0.1 is the `kubernetes` Service's in a real cluster.
        Self(AtomicU32::new(10))
    }
}

impl ClusterIps {
    fn next(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// Defaulting the real server does for these kinds on create and update.
pub fn defaults(group: &str, kind: &str, old: Option<&Value>, new: &mut Value, ips: &ClusterIps) {
    match (group, kind) {
        ("", "Service") => service_defaults(old, new, ips),
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
                && !spec.contains_key("policyTypes")
            {
                let mut types = vec![json!("Ingress")];
                if spec.contains_key("egress") {
                    types.push(json!("Egress"));
                }
                spec.insert("policyTypes".into(), Value::Array(types));
            }
        }
        _ => {}
    }
}

fn service_defaults(old: Option<&Value>, new: &mut Value, ips: &ClusterIps) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .entry("type")
        .or_insert_with(|| json!("ClusterIP"))
        .clone();
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
        }
    }
    if ty == "ExternalName" {
        return;
    }
    // A client may leave the cluster IP out of an update: the stored one stays.
    let stored_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
    let ip = match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => json!(ip),
        _ => stored_ip.unwrap_or_else(|| json!(ips.next())),
    };
    spec.insert("clusterIPs".into(), json!([ip.clone()]));
    spec.insert("clusterIP".into(), ip);
    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
    spec.entry("internalTrafficPolicy")
        .or_insert_with(|| json!("Cluster"));
    if new.get("status").is_none() {
        new["status"] = json!({"loadBalancer": {}});
    }
}

/// The checks of these kinds; other kinds are left alone.
pub fn validate(
    group: &str,
    kind: &str,
    old: Option<&Value>,
    new: &Value,
    causes: &mut Vec<Cause>,
) {
    match (group, kind) {
        (RBAC_GROUP, "Role") => validate_rules(new, true, causes),
        (RBAC_GROUP, "ClusterRole") => validate_rules(new, false, causes),
        (RBAC_GROUP, "RoleBinding") => validate_binding(old, new, true, causes),
        (RBAC_GROUP, "ClusterRoleBinding") => validate_binding(old, new, false, causes),
        ("", "Service") => validate_service(old, new, causes),
        ("policy", "PodDisruptionBudget") => validate_pdb(new, causes),
        ("networking.k8s.io", "NetworkPolicy") => validate_network_policy(new, causes),
        ("apps", "Deployment") => validate_deployment(new, causes),
        _ => {}
    }
}

fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn validate_rules(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in items(obj.get("rules")).iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if items(rule.get("verbs")).is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                field("verbs"),
                "Required value: verbs must contain at least one value",
            ));
        }
        let urls = items(rule.get("nonResourceURLs"));
        if !urls.is_empty() {
            let value = rule.get("nonResourceURLs").unwrap_or(&Value::Null);
            if namespaced {
                causes.push(Cause::invalid(
                    &field("nonResourceURLs"),
                    value,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !items(rule.get("apiGroups")).is_empty() || !items(rule.get("resources")).is_empty()
            {
                causes.push(Cause::invalid(
                    &field("nonResourceURLs"),
                    value,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if items(rule.get("apiGroups")).is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                field("apiGroups"),
                "Required value: resource rules must supply at least one api group",
            ));
        }
        if items(rule.get("resources")).is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                field("resources"),
                "Required value: resource rules must supply at least one resource",
            ));
        }
    }
}

fn validate_binding(old: Option<&Value>, new: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = new.get("roleRef").cloned().unwrap_or(Value::Null);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if text(&role_ref, "name").is_empty() {
        causes.push(Cause::required("roleRef.name"));
    }
    if text(&role_ref, "apiGroup") != RBAC_GROUP {
        causes.push(Cause::unsupported(
            "roleRef.apiGroup",
            role_ref.get("apiGroup").unwrap_or(&json!("")),
            &[json!(RBAC_GROUP)],
        ));
    }
    let kinds: &[Value] = if namespaced {
        &[json!("Role"), json!("ClusterRole")]
    } else {
        &[json!("ClusterRole")]
    };
    let kind = role_ref.get("kind").cloned().unwrap_or(json!(""));
    if !kinds.contains(&kind) {
        causes.push(Cause::unsupported("roleRef.kind", &kind, kinds));
    }
    if let Some(o) = old
        && o.get("roleRef") != new.get("roleRef")
    {
        causes.push(Cause::invalid(
            "roleRef",
            &role_ref,
            "cannot change roleRef",
        ));
    }
    for (i, subject) in items(new.get("subjects")).iter().enumerate() {
        let field = |f: &str| format!("subjects[{i}].{f}");
        if text(subject, "name").is_empty() {
            causes.push(Cause::required(&field("name")));
        }
        let api_group = subject.get("apiGroup").cloned().unwrap_or(json!(""));
        match text(subject, "kind").as_str() {
            "ServiceAccount" => {
                if api_group != "" {
                    causes.push(Cause::unsupported(
                        &field("apiGroup"),
                        &api_group,
                        &[json!("")],
                    ));
                }
                // A RoleBinding's ServiceAccount subject defaults to the binding's namespace.
                if !namespaced && text(subject, "namespace").is_empty() {
                    causes.push(Cause::required(&field("namespace")));
                }
            }
            "User" | "Group" => {
                if api_group != RBAC_GROUP {
                    causes.push(Cause::unsupported(
                        &field("apiGroup"),
                        &api_group,
                        &[json!(RBAC_GROUP)],
                    ));
                }
            }
            _ => causes.push(Cause::unsupported(
                &field("kind"),
                subject.get("kind").unwrap_or(&json!("")),
                &[json!("ServiceAccount"), json!("User"), json!("Group")],
            )),
        }
    }
}

/// `port` or `endPort`: an integer from 1 to 65535.
fn check_port_number(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    if !v.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
        causes.push(Cause::invalid(
            field,
            v,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// An IANA service name (a named container port): at most 15 characters, lower case
/// alphanumerics and '-', at least one letter.
fn check_port_name(field: &str, name: &str, causes: &mut Vec<Cause>) {
    let ok = name.len() <= 15
        && is_dns_label(name)
        && !name.contains("--")
        && name.bytes().any(|b| b.is_ascii_lowercase());
    if !ok {
        causes.push(Cause::invalid(
            field,
            &json!(name),
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at most 15 characters, at least one letter, and no two adjacent hyphens",
        ));
    }
}

/// A port given as a number or as the name of a container port.
fn check_int_or_name(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    match v.as_str() {
        Some(name) => check_port_name(field, name, causes),
        None => check_port_number(field, v, causes),
    }
}

fn check_protocol(field: &str, v: Option<&Value>, causes: &mut Vec<Cause>) {
    let allowed = [json!("TCP"), json!("UDP"), json!("SCTP")];
    if let Some(p) = v
        && !allowed.contains(p)
    {
        causes.push(Cause::unsupported(field, p, &allowed));
    }
}

fn validate_service(old: Option<&Value>, new: &Value, causes: &mut Vec<Cause>) {
    let ty = new
        .pointer("/spec/type")
        .cloned()
        .unwrap_or(json!("ClusterIP"));
    let types = [
        json!("ClusterIP"),
        json!("NodePort"),
        json!("LoadBalancer"),
        json!("ExternalName"),
    ];
    if !types.contains(&ty) {
        causes.push(Cause::unsupported("spec.type", &ty, &types));
    }
    let headless = new.pointer("/spec/clusterIP") == Some(&json!("None"));
    let ports = items(new.pointer("/spec/ports"));
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                causes.push(Cause::required(&field("name")));
            }
        } else if names.contains(&name) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                field("name"),
                format!("Duplicate value: {name:?}"),
            ));
        } else {
            if !is_dns_label(name) {
                causes.push(Cause::invalid(
                    &field("name"),
                    &json!(name),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ));
            }
            names.push(name);
        }
        check_port_number(
            &field("port"),
            p.get("port").unwrap_or(&Value::Null),
            causes,
        );
        if let Some(target) = p.get("targetPort") {
            check_int_or_name(&field("targetPort"), target, causes);
        }
        check_protocol(&field("protocol"), p.get("protocol"), causes);
    }
    if let Some(o) = old {
        let before = o.pointer("/spec/clusterIP");
        let after = new.pointer("/spec/clusterIP");
        if before.is_some() && before != after {
            causes.push(Cause::invalid(
                "spec.clusterIP",
                after.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

/// An integer ≥ 0 or a percentage such as "50%" (minAvailable, maxUnavailable).
fn check_int_or_percent(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    let ok = match v {
        Value::Number(n) => n.as_i64().is_some_and(|n| n >= 0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 100),
        _ => false,
    };
    if !ok {
        causes.push(Cause::invalid(
            field,
            v,
            "must be a non-negative integer or a percentage between 0% and 100%",
        ));
    }
}

/// A rolling update that may neither add a Pod nor take one away can never progress: the
/// API server refuses it (defaults are 25% each).
fn validate_deployment(new: &Value, causes: &mut Vec<Cause>) {
    let Some(rolling) = new.pointer("/spec/strategy/rollingUpdate") else {
        return;
    };
    let zero = |v: Option<&Value>| {
        v.is_some_and(|v| {
            v.as_i64() == Some(0) || v.as_str().is_some_and(|s| s == "0" || s == "0%")
        })
    };
    if zero(rolling.get("maxSurge")) && zero(rolling.get("maxUnavailable")) {
        causes.push(Cause::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            rolling.get("maxUnavailable").unwrap_or(&Value::Null),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn validate_pdb(new: &Value, causes: &mut Vec<Cause>) {
    let min = new.pointer("/spec/minAvailable");
    let max = new.pointer("/spec/maxUnavailable");
    if min.is_some() && max.is_some() {
        causes.push(Cause::invalid(
            "spec",
            new.get("spec").unwrap_or(&Value::Null),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(v) = min {
        check_int_or_percent("spec.minAvailable", v, causes);
    }
    if let Some(v) = max {
        check_int_or_percent("spec.maxUnavailable", v, causes);
    }
}

fn validate_network_policy(new: &Value, causes: &mut Vec<Cause>) {
    let types = items(new.pointer("/spec/policyTypes"));
    let allowed = [json!("Ingress"), json!("Egress")];
    for (i, t) in types.iter().enumerate() {
        if !allowed.contains(t) {
            causes.push(Cause::unsupported(
                &format!("spec.policyTypes[{i}]"),
                t,
                &allowed,
            ));
        }
    }
    if types.len() > 2 {
        causes.push(Cause::invalid(
            "spec.policyTypes",
            new.pointer("/spec/policyTypes").unwrap_or(&Value::Null),
            "may not specify more than two policyTypes",
        ));
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(new.pointer(&format!("/spec/{direction}")))
            .iter()
            .enumerate()
        {
            for (j, port) in items(rule.get("ports")).iter().enumerate() {
                let field = |f: &str| format!("spec.{direction}[{i}].ports[{j}].{f}");
                check_protocol(&field("protocol"), port.get("protocol"), causes);
                if let Some(p) = port.get("port") {
                    check_int_or_name(&field("port"), p, causes);
                }
                if let Some(end) = port.get("endPort") {
                    match port.get("port").and_then(Value::as_i64) {
                        Some(start) if end.as_i64().is_some_and(|e| e >= start) => {}
                        Some(_) => causes.push(Cause::invalid(
                            &field("endPort"),
                            end,
                            "must be greater than or equal to `port`",
                        )),
                        None => causes.push(Cause::invalid(
                            &field("endPort"),
                            end,
                            "may not be specified when `port` is non-numeric",
                        )),
                    }
                }
            }
            for (j, peer) in items(rule.get(peers)).iter().enumerate() {
                if let Some(block) = peer.get("ipBlock")
                    && block
                        .get("cidr")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(&format!(
                        "spec.{direction}[{i}].{peers}[{j}].ipBlock.cidr"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(group: &str, kind: &str, old: Option<Value>, new: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(group, kind, old.as_ref(), &new, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn role_rules_need_verbs_groups_and_resources() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            {"resources": ["pods"], "verbs": []},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ]});
        assert_eq!(
            errors(RBAC_GROUP, "Role", None, role.clone()),
            vec![
                "rules[1].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].nonResourceURLs: Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
            ]
        );
        // Non-resource URLs are fine in a ClusterRole.
        assert_eq!(errors(RBAC_GROUP, "ClusterRole", None, role).len(), 2);
    }

    #[test]
    fn bindings_check_role_ref_and_subjects() {
        let binding = json!({
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "op"},
                {"kind": "User", "name": "jane"},
                {"kind": "Robot", "name": "x"},
            ],
        });
        assert_eq!(
            errors(RBAC_GROUP, "RoleBinding", None, binding.clone()),
            vec![
                "subjects[1].apiGroup: Unsupported value: \"\": supported values: \"rbac.authorization.k8s.io\"",
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        // A ClusterRoleBinding binds only ClusterRoles, and its ServiceAccounts need a namespace.
        let errs = errors(RBAC_GROUP, "ClusterRoleBinding", None, binding.clone());
        assert!(errs[0].starts_with("roleRef.kind: Unsupported value: \"Role\""));
        assert_eq!(errs[1], "subjects[0].namespace: Required value");
        let mut changed = binding.clone();
        changed["roleRef"]["name"] = json!("other");
        assert!(
            errors(RBAC_GROUP, "RoleBinding", Some(binding), changed)
                .iter()
                .any(|e| e.starts_with("roleRef: Invalid value:")
                    && e.ends_with("cannot change roleRef"))
        );
    }

    #[test]
    fn services_get_a_stable_cluster_ip_and_checked_ports() {
        let ips = ClusterIps::default();
        let mut svc = json!({"spec": {"ports": [{"port": 9090}]}});
        defaults("", "Service", None, &mut svc, &ips);
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 9090);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        // An update that leaves the IP out keeps it; changing it is refused.
        let mut update = json!({"spec": {"ports": [{"port": 9090}]}});
        defaults("", "Service", Some(&svc), &mut update, &ips);
        assert_eq!(update["spec"]["clusterIP"], "10.96.0.10");
        let mut moved = update.clone();
        moved["spec"]["clusterIP"] = json!("10.96.9.9");
        assert_eq!(
            errors("", "Service", Some(svc), moved),
            vec!["spec.clusterIP: Invalid value: \"10.96.9.9\": field is immutable"]
        );
        let bad = json!({"spec": {"ports": [
            {"name": "metrics", "port": 0},
            {"name": "metrics", "port": 80, "targetPort": "a_b", "protocol": "HTTP"},
            {"port": 81},
        ]}});
        assert_eq!(
            errors("", "Service", None, bad),
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Duplicate value: \"metrics\"",
                "spec.ports[1].targetPort: Invalid value: \"a_b\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at most 15 characters, at least one letter, and no two adjacent hyphens",
                "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.ports[2].name: Required value",
            ]
        );
        assert_eq!(
            errors("", "Service", None, json!({"spec": {}})),
            vec!["spec.ports: Required value"]
        );
    }

    #[test]
    fn pdbs_take_one_of_min_available_and_max_unavailable() {
        assert!(
            errors(
                "policy",
                "PodDisruptionBudget",
                None,
                json!({"spec": {"minAvailable": "50%"}})
            )
            .is_empty()
        );
        assert_eq!(
            errors(
                "policy",
                "PodDisruptionBudget",
                None,
                json!({"spec": {"minAvailable": 1, "maxUnavailable": "150%"}})
            ),
            vec![
                "spec: Invalid value: {\"maxUnavailable\":\"150%\",\"minAvailable\":1}: minAvailable and maxUnavailable cannot be both set",
                "spec.maxUnavailable: Invalid value: \"150%\": must be a non-negative integer or a percentage between 0% and 100%",
            ]
        );
    }

    #[test]
    fn a_rolling_update_that_can_never_move_is_refused() {
        let strategy = |surge: Value, unavailable: Value| json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}});
        assert_eq!(
            errors("apps", "Deployment", None, strategy(json!(0), json!("0%"))),
            vec![
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
            ]
        );
        for (surge, unavailable) in [(json!(0), json!(1)), (json!("25%"), json!(0))] {
            assert!(errors("apps", "Deployment", None, strategy(surge, unavailable)).is_empty());
        }
        assert!(errors("apps", "Deployment", None, json!({"spec": {}})).is_empty());
    }

    #[test]
    fn network_policies_default_their_types_and_check_ports() {
        let ips = ClusterIps::default();
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{}]}});
        defaults("networking.k8s.io", "NetworkPolicy", None, &mut np, &ips);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let bad = json!({"spec": {"podSelector": {}, "policyTypes": ["Sideways"], "egress": [
            {"ports": [{"port": 53, "endPort": 52, "protocol": "UDP"}], "to": [{"ipBlock": {}}]},
        ]}});
        assert_eq!(
            errors("networking.k8s.io", "NetworkPolicy", None, bad),
            vec![
                "spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
                "spec.egress[0].ports[0].endPort: Invalid value: 52: must be greater than or equal to `port`",
                "spec.egress[0].to[0].ipBlock.cidr: Required value",
            ]
        );
    }
}
