//! The operator's own spec checks (repeating what CEL and the schema enforce, for servers
//! that run neither), as a table of YAML specs and the problem each must report.

use secretsync_api::validate::{StoreScope, check_spec_version, validate_spec, validate_store};
use secretsync_api::{SecretStoreSpec, SecretSyncSpec};

const BASE: &str = r#"
storeRef: {name: vault}
data:
  - secretKey: password
    remoteRef: {key: app/db, property: password}
"#;

fn spec(extra: &str) -> SecretSyncSpec {
    let mut value: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
    let extra: serde_yaml::Value = serde_yaml::from_str(extra).unwrap();
    if let serde_yaml::Value::Mapping(extra) = extra {
        for (k, v) in extra {
            value.as_mapping_mut().unwrap().insert(k, v);
        }
    }
    serde_yaml::from_value(value).unwrap()
}

#[test]
fn valid_specs_pass() {
    validate_spec(&spec("{}"), "db").unwrap();
    validate_spec(
        &spec("{refreshInterval: '0', history: {limit: 1}, rollout: {timeout: 30s, targets: [{kind: Deployment, name: api}], onFailure: Rollback, windows: [{schedule: '0 9 * * 1-5', duration: 8h, timeZone: Europe/Berlin}]}, pinVersion: 1, revokedVersions: [2]}"),
        "db",
    )
    .unwrap();
}

#[test]
fn each_invalid_spec_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("{refreshInterval: 1d}", "db", "spec.refreshInterval"),
        ("{refreshInterval: '-1h'}", "db", "spec.refreshInterval"),
        ("{target: {name: Bad_Name}}", "db", "spec.target.name"),
        (
            "{}",
            &"x".repeat(250),
            "metadata.name (the default target.name)",
        ),
        (
            "{data: [{secretKey: 'a b', remoteRef: {key: k}}]}",
            "db",
            "spec.data[0].secretKey",
        ),
        (
            "{data: [{secretKey: a, remoteRef: {key: k}}, {secretKey: a, remoteRef: {key: j}}]}",
            "db",
            "is listed twice",
        ),
        (
            "{data: [{secretKey: a, remoteRef: {key: ''}}]}",
            "db",
            "remoteRef.key",
        ),
        (
            "{data: []}",
            "db",
            "at least one of spec.data or spec.dataFrom",
        ),
        ("{history: {limit: 0}}", "db", "spec.history.limit"),
        ("{rollout: {timeout: soon}}", "db", "spec.rollout.timeout"),
        (
            "{rollout: {timeout: '0'}}",
            "db",
            "spec.rollout.timeout must be greater than 0",
        ),
        (
            "{rollout: {targets: [{kind: Deployment, name: a}, {kind: Deployment, name: a}]}}",
            "db",
            "Deployment a is listed twice",
        ),
        (
            "{rollout: {selector: {matchExpressions: [{key: a, operator: Like, values: [b]}]}}}",
            "db",
            "unknown operator",
        ),
        (
            "{rollout: {windows: [{schedule: '0 25 * * *', duration: 1h}]}}",
            "db",
            "spec.rollout.windows[0]: schedule \"0 25 * * *\" is not a cron schedule",
        ),
        (
            "{rollout: {windows: [{schedule: '0 9 * * *', duration: 1h, timeZone: Berlin}]}}",
            "db",
            "spec.rollout.windows[0]: timeZone \"Berlin\" is not an IANA time zone",
        ),
        ("{pinVersion: 0}", "db", "spec.pinVersion"),
        ("{revokedVersions: [0]}", "db", "spec.revokedVersions"),
        ("{version: -1}", "db", "spec.version"),
        (
            "{target: {template: {data: {'x y': '{{ a }}'}}}}",
            "db",
            "spec.target.template.data",
        ),
        (
            "{dataFrom: [{extract: {key: app/config}, find: {path: app}}]}",
            "db",
            "spec.dataFrom[0]: exactly one of extract, find, pki or dynamic",
        ),
        (
            "{dataFrom: [{rewrite: {regexp: {source: a, target: b}}}]}",
            "db",
            "spec.dataFrom[0]: exactly one of extract, find, pki or dynamic",
        ),
        (
            "{dataFrom: [{extract: {key: ''}}]}",
            "db",
            "spec.dataFrom[0].extract.key must not be empty",
        ),
        (
            "{dataFrom: [{find: {}}]}",
            "db",
            "spec.dataFrom[0].find needs at least one of name, tags or path",
        ),
        (
            "{dataFrom: [{find: {name: {regexp: '^app/('}}}]}",
            "db",
            "spec.dataFrom[0].find.name.regexp is not a valid regular expression",
        ),
        (
            "{dataFrom: [{find: {path: app}, rewrite: {regexp: {source: '(', target: x}}}]}",
            "db",
            "spec.dataFrom[0].rewrite.regexp.source is not a valid regular expression",
        ),
        (
            "{dataFrom: [{extract: {key: app/config}, rewrite: {regexp: {source: a, target: b}}}]}",
            "db",
            "spec.dataFrom[0].rewrite: rewrite applies to find only",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: app, commonName: a.example}}, {extract: {key: app/config}}]}",
            "db",
            "spec.dataFrom[].pki must be the only entry",
        ),
        (
            "{dataFrom: [{pki: {role: app, commonName: a.example}}]}",
            "db",
            "spec.dataFrom[].pki must be the only entry",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: '', commonName: a.example}}]}",
            "db",
            "spec.dataFrom[0].pki.role must not be empty",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: app, commonName: ''}}]}",
            "db",
            "spec.dataFrom[0].pki.commonName must not be empty",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: app, commonName: a, altNames: ['b,c']}}]}",
            "db",
            "spec.dataFrom[0].pki.altNames[0]",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: app, commonName: a, ttl: 1d}}]}",
            "db",
            "spec.dataFrom[0].pki.ttl",
        ),
        (
            "{data: [], dataFrom: [{pki: {role: app, commonName: a}, extract: {key: k}}]}",
            "db",
            "spec.dataFrom[0]: exactly one of extract, find, pki or dynamic",
        ),
    ];
    for (extra, name, want) in cases {
        let problems = validate_spec(&spec(extra), name).expect_err(extra);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{extra}: expected a problem mentioning {want:?}, got {problems:?}"
        );
    }
}

#[test]
fn a_pki_source_alone_is_valid_and_defaults_to_a_tls_secret() {
    let pki = spec(
        "{data: [], dataFrom: [{pki: {role: app, commonName: api.example.internal, altNames: [api], ipSans: [127.0.0.1], ttl: 30s}}]}",
    );
    validate_spec(&pki, "db").unwrap();
    assert_eq!(pki.secret_type(), "kubernetes.io/tls");
    assert!(pki.holds_leases());
    let issue = pki.pki().unwrap();
    assert_eq!(issue.mount(), "pki");
    assert_eq!(issue.ttl(), Some(std::time::Duration::from_secs(30)));
    assert!(!spec("{}").holds_leases());
    assert_eq!(spec("{}").secret_type(), "Opaque");
}

#[test]
fn a_dynamic_source_issues_and_holds_leases_unless_it_is_a_static_role() {
    let creds = spec("{data: [], dataFrom: [{dynamic: {path: /database/creds/app}}]}");
    validate_spec(&creds, "db").unwrap();
    let dynamic = creds.dynamic().unwrap();
    assert_eq!(dynamic.path(), "database/creds/app");
    assert_eq!(dynamic.renewal_percent(), 67);
    assert!(creds.issues_credentials() && creds.holds_leases());
    assert_eq!(creds.secret_type(), "Opaque");

    let static_role = spec("{data: [], dataFrom: [{dynamic: {path: database/static-creds/app}}]}");
    validate_spec(&static_role, "db").unwrap();
    assert!(static_role.dynamic().unwrap().is_static_role());
    assert!(!static_role.issues_credentials() && !static_role.holds_leases());
    assert!(static_role.reads_key("database/static-creds/app"));
    // said outright, whatever the path
    let told = spec("{data: [], dataFrom: [{dynamic: {path: ldap/creds/app, staticRole: true}}]}");
    assert!(told.dynamic().unwrap().is_static_role());

    let cases = [
        (
            "{dataFrom: [{dynamic: {path: database/creds/app}}]}",
            "dynamic must be the only entry",
        ),
        (
            "{data: [], dataFrom: [{dynamic: {path: 'database//app'}}]}",
            "without empty",
        ),
        (
            "{data: [], dataFrom: [{dynamic: {path: v1/database/creds/app}}]}",
            "starts with v1/",
        ),
        (
            "{data: [], dataFrom: [{dynamic: {path: aws/sts/app, parameters: {ttl: 1h}}}]}",
            "only with method: POST",
        ),
        (
            "{data: [], dataFrom: [{dynamic: {path: database/creds/app, renewalPercent: 95}}]}",
            "between 1 and 90",
        ),
    ];
    for (yaml, want) in cases {
        let problems = validate_spec(&spec(yaml), "db").expect_err(yaml);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{yaml}: expected {want:?}, got {problems:?}"
        );
    }
    let post = spec(
        "{data: [], dataFrom: [{dynamic: {path: aws/sts/app, method: POST, parameters: {ttl: 1h}}}]}",
    );
    validate_spec(&post, "db").unwrap();
}

#[test]
fn data_from_find_and_extract_are_valid() {
    validate_spec(
        &spec(
            r#"{dataFrom: [
                {extract: {key: app/config}},
                {find: {name: {regexp: "^app/payments/"}, tags: {team: payments}},
                 rewrite: {regexp: {source: "^app/payments/(.*)", target: "$1"}}},
                {find: {path: app/payments}}]}"#,
        ),
        "db",
    )
    .unwrap();
}

#[test]
fn rewrite_replaces_every_match_with_capture_groups() {
    let rewrite = secretsync_api::RewriteRegexp {
        source: "^app/payments/(.*)".into(),
        target: "$1".into(),
    };
    assert_eq!(rewrite.apply("app/payments/db").unwrap(), "db");
    assert_eq!(rewrite.apply("other/db").unwrap(), "other/db");
    let slashes = secretsync_api::RewriteRegexp {
        source: "/".into(),
        target: "_".into(),
    };
    assert_eq!(slashes.apply("a/b/c").unwrap(), "a_b_c");
    let bad = secretsync_api::RewriteRegexp {
        source: "(".into(),
        target: "x".into(),
    };
    assert!(bad.apply("a").is_err());
}

#[test]
fn all_problems_are_reported_at_once() {
    let problems = validate_spec(
        &spec("{refreshInterval: x, history: {limit: 0}, pinVersion: 0}"),
        "db",
    )
    .unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn decreasing_spec_version_is_rejected() {
    assert!(check_spec_version(3, 3).is_ok());
    assert!(check_spec_version(4, 3).is_ok());
    let err = check_spec_version(2, 3).unwrap_err();
    assert!(err.contains("decreased to 2"), "{err}");
    assert!(err.contains("pinVersion"), "{err}");
}

/// YAML → JSON value → type: serde_yaml alone would expect `!vault` tags for enums.
fn store(yaml: &str) -> SecretStoreSpec {
    let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    serde_json::from_value(value).unwrap()
}

#[test]
fn store_references_follow_the_scope() {
    let namespaced_ref = "provider: {vault: {server: 'http://v:8200', auth: {tokenSecretRef: {name: t, key: token}}}}";
    validate_store(&store(namespaced_ref), StoreScope::Namespaced).unwrap();
    let problems = validate_store(&store(namespaced_ref), StoreScope::Cluster).unwrap_err();
    assert!(
        problems[0].contains("tokenSecretRef.namespace is required"),
        "{problems:?}"
    );

    let cluster_ref = "provider: {aws: {region: eu-west-1, auth: {secretRef: {accessKeyIdSecretRef: {name: a, key: id, namespace: ops}, secretAccessKeySecretRef: {name: a, key: s, namespace: ops}}}}}";
    validate_store(&store(cluster_ref), StoreScope::Cluster).unwrap();
    let problems = validate_store(&store(cluster_ref), StoreScope::Namespaced).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("not allowed in a SecretStore"));

    let sa = "provider: {vault: {server: 'https://v', auth: {kubernetes: {role: r, serviceAccountRef: {name: app, namespace: x}}}}}";
    assert!(validate_store(&store(sa), StoreScope::Namespaced).is_err());

    let conditions = "{provider: {fake: {data: []}}, conditions: [{namespaces: [a]}]}";
    let problems = validate_store(&store(conditions), StoreScope::Namespaced).unwrap_err();
    assert!(problems[0].contains("only allowed on a ClusterSecretStore"));
    validate_store(&store(conditions), StoreScope::Cluster).unwrap();

    let bad_server =
        "provider: {vault: {server: 'vault:8200', auth: {tokenSecretRef: {name: t, key: token}}}}";
    let problems = validate_store(&store(bad_server), StoreScope::Namespaced).unwrap_err();
    assert!(problems[0].contains("must start with http"));
}

#[test]
fn azure_stores_need_what_their_auth_type_uses() {
    let check = |yaml: &str| validate_store(&store(yaml), StoreScope::Namespaced);
    let sp = "provider: {azurekv: {vaultUrl: 'https://kv.vault.azure.net', tenantId: t, authSecretRef: {clientId: {name: sp, key: id}, clientSecret: {name: sp, key: secret}}}}";
    check(sp).unwrap();
    // Workload Identity is the default without credentials; the operator's own or a
    // ServiceAccount's.
    check("provider: {azurekv: {vaultUrl: 'https://kv.vault.azure.net'}}").unwrap();
    check("provider: {azurekv: {vaultUrl: 'https://kv.vault.azure.net', serviceAccountRef: {name: app}}}").unwrap();
    check("provider: {azurekv: {vaultUrl: 'https://kv.vault.azure.net', authType: ManagedIdentity, identityId: c}}").unwrap();

    for (yaml, problem) in [
        (
            "provider: {azurekv: {vaultUrl: 'http://kv.vault.azure.net'}}",
            "vaultUrl \"http://kv.vault.azure.net\" must start with https://",
        ),
        (
            "provider: {azurekv: {vaultUrl: 'https://kv', authType: ServicePrincipal, tenantId: t}}",
            "clientId and .clientSecret are required",
        ),
        (
            "provider: {azurekv: {vaultUrl: 'https://kv', authSecretRef: {clientId: {name: sp, key: id}, clientSecret: {name: sp, key: s}}}}",
            "tenantId is required",
        ),
        (
            "provider: {azurekv: {vaultUrl: 'https://kv', identityId: c}}",
            "identityId is only used by authType ManagedIdentity",
        ),
        (
            "provider: {azurekv: {vaultUrl: 'https://kv', authType: ManagedIdentity, serviceAccountRef: {name: app}}}",
            "not used by authType ManagedIdentity",
        ),
        (
            "provider: {azurekv: {vaultUrl: 'https://kv', authType: WorkloadIdentity, authSecretRef: {clientSecret: {name: sp, key: s}}}}",
            "clientSecret is not used by authType WorkloadIdentity",
        ),
    ] {
        let problems = check(yaml).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains(problem)),
            "{yaml}: {problems:?}"
        );
    }
    let problems = validate_store(&store(sp), StoreScope::Cluster).unwrap_err();
    assert_eq!(
        problems.len(),
        2,
        "both refs need a namespace: {problems:?}"
    );
}

#[test]
fn gcp_stores_need_a_project_id_and_an_http_endpoint() {
    let good = "provider: {gcpsm: {projectID: my-project-42, endpoint: 'https://secretmanager.europe-west1.rep.googleapis.com'}}";
    validate_store(&store(good), StoreScope::Namespaced).unwrap();
    for project in ["123456789012", "example.com:my-project"] {
        let spec = format!("provider: {{gcpsm: {{projectID: '{project}'}}}}");
        validate_store(&store(&spec), StoreScope::Namespaced).unwrap();
    }
    for project in [
        "My-Project",
        "proj",
        "my-project-",
        "1project",
        "my_project",
        ":my-project",
    ] {
        let spec = format!("provider: {{gcpsm: {{projectID: '{project}'}}}}");
        let problems = validate_store(&store(&spec), StoreScope::Namespaced).unwrap_err();
        assert!(problems[0].contains("projectID"), "{project}: {problems:?}");
    }
    let bad_endpoint = "provider: {gcpsm: {projectID: my-project, endpoint: 'secretmanager:443'}}";
    let problems = validate_store(&store(bad_endpoint), StoreScope::Namespaced).unwrap_err();
    assert!(problems[0].contains("must start with http"), "{problems:?}");

    let key = "{name: gcp, key: key.json}";
    let namespaced = format!(
        "provider: {{gcpsm: {{projectID: my-project, auth: {{secretRef: {{secretAccessKeySecretRef: {key}}}}}}}}}"
    );
    validate_store(&store(&namespaced), StoreScope::Namespaced).unwrap();
    let problems = validate_store(&store(&namespaced), StoreScope::Cluster).unwrap_err();
    assert!(
        problems[0].contains("secretAccessKeySecretRef.namespace is required"),
        "{problems:?}"
    );
}

#[test]
fn cluster_store_conditions_admit_namespaces() {
    let spec = store(
        "{provider: {fake: {data: []}}, conditions: [{namespaces: [payments]}, {namespaceSelector: {matchLabels: {secrets: allowed}}}]}",
    );
    let conditions = spec.conditions.unwrap();
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let admitted = |ns: &str, l: &std::collections::BTreeMap<String, String>| {
        conditions.iter().any(|c| c.admits(ns, l))
    };
    assert!(admitted("payments", &labels(&[])));
    assert!(admitted("orders", &labels(&[("secrets", "allowed")])));
    assert!(!admitted("orders", &labels(&[("secrets", "denied")])));
}
