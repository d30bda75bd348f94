//! Real kubectl against the sandbox.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use secretsync_sandbox::Sandbox;

pub const CRD_YAML: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.io
spec:
  group: example.io
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
          status:
            type: object
            properties:
              phase: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
";

fn gadget_yaml(size: u32) -> String {
    format!(
        "apiVersion: example.io/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: {size}\n"
    )
}

pub struct Kubectl {
    bin: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(sb: &Sandbox) -> Option<Self> {
        let bin = secretsync_testkit::require_tool("kubectl")?;
        Some(Self {
            bin,
            kubeconfig: sb.kubeconfig_path().to_path_buf(),
        })
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut child = self.command(args).spawn().expect("spawn kubectl");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).await.unwrap();
        }
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes within 60s")
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and asserts success, returning stdout.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }
}

#[tokio::test]
async fn kubectl_applies_crds_and_custom_resources_client_and_server_side() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    assert!(
        k.ok(&["apply", "-f", "-"], Some(CRD_YAML))
            .await
            .contains("created")
    );
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&gadget_yaml(2)))
            .await
            .contains("gadget.example.io/g1 created")
    );
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&gadget_yaml(2)))
            .await
            .contains("unchanged")
    );
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&gadget_yaml(3)))
            .await
            .contains("configured")
    );
    let yaml = k.ok(&["get", "gd", "g1", "-o", "yaml"], None).await;
    assert!(yaml.contains("size: 3"), "{yaml}");
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    // Human-readable output uses the CRD's printer columns (server-side Table).
    let table = k.ok(&["get", "gd"], None).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "PHASE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["g1", "3", "<none>"], "{table}");
    k.ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: shown}\nstringData: {a: '1', b: '2'}\n",
        ),
    )
    .await;
    let secrets = k.ok(&["get", "secrets"], None).await;
    let header: Vec<&str> = secrets.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"], "{secrets}");
    assert!(
        secrets.lines().nth(1).unwrap().starts_with("shown"),
        "{secrets}"
    );
    assert!(
        secrets.contains("Opaque") && secrets.contains(" 2 "),
        "{secrets}"
    );
    let names = k.ok(&["get", "gd", "-o", "name"], None).await;
    assert_eq!(names.trim(), "gadget.example.io/g1");

    // Server-side validation is used (kubectl sends fieldValidation=Strict).
    let bad = k.run(&["apply", "-f", "-"], Some("apiVersion: example.io/v1\nkind: Gadget\nmetadata: {name: g2}\nspec: {size: 1, bogus: 1}\n")).await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("unknown field \"spec.bogus\""),
        "{}",
        bad.stderr
    );
    let invalid = k
        .run(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: example.io/v1\nkind: Gadget\nmetadata: {name: g3}\nspec: {size: 0}\n",
            ),
        )
        .await;
    assert!(
        invalid.stderr.contains("spec.size: Invalid value: 0"),
        "{}",
        invalid.stderr
    );

    let ssa = k
        .ok(
            &["apply", "--server-side", "-f", "-"],
            Some(
                "apiVersion: example.io/v1\nkind: Gadget\nmetadata: {name: g4}\nspec: {size: 4}\n",
            ),
        )
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    let got = k
        .ok(
            &["get", "gadget", "g4", "-o", "jsonpath={.spec.size}"],
            None,
        )
        .await;
    assert_eq!(got, "4");

    // Built-in kinds through client-side apply (strategic merge patch on update).
    let cm = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  key: {v}\n")
    };
    k.ok(&["apply", "-f", "-"], Some(&cm("one"))).await;
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&cm("two")))
            .await
            .contains("configured")
    );
    assert_eq!(
        k.ok(&["get", "cm", "app", "-o", "jsonpath={.data.key}"], None)
            .await,
        "two"
    );
    // Switching that object to server-side apply (manager `kubectl`) takes over the fields
    // client-side apply recorded, without conflicts; another manager still conflicts.
    k.ok(&["apply", "--server-side", "-f", "-"], Some(&cm("three")))
        .await;
    assert_eq!(
        k.ok(&["get", "cm", "app", "-o", "jsonpath={.data.key}"], None)
            .await,
        "three"
    );
    let other = k
        .run(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&cm("four")),
        )
        .await;
    assert!(
        !other.ok && other.stderr.contains("conflict with \"kubectl\""),
        "{}",
        other.stderr
    );

    assert!(
        k.ok(&["delete", "gd", "g1"], None)
            .await
            .contains("deleted")
    );
    let gone = k.run(&["get", "gd", "g1"], None).await;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn kubectl_patches_waits_and_watches() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    k.ok(&["apply", "-f", "-"], Some(CRD_YAML)).await;
    k.ok(&["apply", "-f", "-"], Some(&gadget_yaml(1))).await;
    k.ok(
        &[
            "patch",
            "gd",
            "g1",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"size":5}}"#,
        ],
        None,
    )
    .await;
    k.ok(
        &[
            "patch",
            "gd",
            "g1",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/size","value":6}]"#,
        ],
        None,
    )
    .await;
    assert_eq!(
        k.ok(&["get", "gd", "g1", "-o", "jsonpath={.spec.size}"], None)
            .await,
        "6"
    );

    k.ok(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sm}\ndata: {a: '1'}\n"),
    )
    .await;
    k.ok(
        &[
            "patch",
            "configmap",
            "sm",
            "--type",
            "strategic",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ],
        None,
    )
    .await;
    assert_eq!(
        k.ok(
            &["get", "cm", "sm", "-o", "jsonpath={.data.a}{.data.b}"],
            None
        )
        .await,
        "12"
    );

    // wait: start waiting, then make the condition true.
    let mut waiter = k
        .command(&["wait", "--for=condition=Ready", "gd/g1", "--timeout=30s"])
        .spawn()
        .unwrap();
    let mut jsonpath_waiter = k
        .command(&[
            "wait",
            "--for=jsonpath={.status.phase}=Done",
            "gd/g1",
            "--timeout=30s",
        ])
        .spawn()
        .unwrap();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        sb.client(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("example.io", "v1", "Gadget"),
            "gadgets",
        ),
    );
    api.patch_status("g1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Done", "conditions": [{"type": "Ready", "status": "True"}]}})))
        .await
        .unwrap();
    let st = tokio::time::timeout(Duration::from_secs(30), waiter.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "kubectl wait --for=condition=Ready");
    let st = tokio::time::timeout(Duration::from_secs(30), jsonpath_waiter.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "kubectl wait --for=jsonpath");

    // get -w shows a later change.
    let mut w = k
        .command(&[
            "get",
            "cm",
            "-w",
            "-o",
            "jsonpath={.metadata.name}={.data.a}{\"\\n\"}",
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, "sm=1");
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.patch(
        "sm",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "changed"}})),
    )
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l == "sm=changed" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen);
    w.kill().await.unwrap();
    sb.shutdown().await;
}

#[tokio::test]
async fn kubectl_imperative_creates_send_protobuf_that_the_sandbox_decodes() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };
    k.ok(
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=user=admin",
            "--from-literal=pass=s3cret",
        ],
        None,
    )
    .await;
    assert_eq!(
        k.ok(
            &["get", "secret", "s1", "-o", "jsonpath={.data.user}"],
            None
        )
        .await,
        "YWRtaW4="
    );
    k.ok(&["create", "configmap", "c1", "--from-literal=k=v"], None)
        .await;
    assert_eq!(
        k.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.k}"], None)
            .await,
        "v"
    );
    k.ok(&["create", "namespace", "team-a"], None).await;
    k.ok(&["create", "serviceaccount", "bot", "-n", "team-a"], None)
        .await;
    let token = k
        .ok(
            &[
                "create",
                "token",
                "bot",
                "-n",
                "team-a",
                "--audience=openbao",
            ],
            None,
        )
        .await;
    let api: Api<k8s_openapi::api::authentication::v1::TokenReview> = Api::all(sb.client());
    let review: k8s_openapi::api::authentication::v1::TokenReview =
        serde_json::from_value(json!({"spec": {"token": token.trim(), "audiences": ["openbao"]}}))
            .unwrap();
    let r = api
        .create(&Default::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        r.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:team-a:bot")
    );
    // No authorization: every access review allows.
    assert_eq!(
        k.ok(
            &["auth", "can-i", "delete", "secrets", "-n", "kube-system"],
            None
        )
        .await
        .trim(),
        "yes"
    );
    sb.shutdown().await;
}

/// `kubectl get -o json` of one object, parsed.
async fn get_json(k: &Kubectl, what: &[&str]) -> serde_json::Value {
    let args = [&["get"], what, &["-o", "json"]].concat();
    serde_json::from_str(&k.ok(&args, None).await).unwrap()
}

#[tokio::test]
async fn kubectl_imperative_creates_of_every_kind_kubectl_sends_as_protobuf() {
    let sb = Sandbox::start().await.unwrap();
    let Some(k) = Kubectl::new(&sb) else { return };

    k.ok(
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "--port=8080",
        ],
        None,
    )
    .await;
    let d = get_json(&k, &["deployment", "web"]).await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&c["name"], &c["image"], &c["ports"]),
        (
            &json!("nginx"),
            &json!("nginx"),
            &json!([{"containerPort": 8080}])
        )
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert!(
        d["metadata"]
            .get("creationTimestamp")
            .is_some_and(|t| t.is_string())
    );

    k.ok(
        &[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi there",
        ],
        None,
    )
    .await;
    let j = get_json(&k, &["job", "once"]).await;
    let c = &j["spec"]["template"]["spec"];
    assert_eq!(c["containers"][0]["command"], json!(["echo", "hi there"]));
    assert_eq!(c["restartPolicy"], "Never");

    k.ok(
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=secrets,deployments.apps",
        ],
        None,
    )
    .await;
    let r = get_json(&k, &["role", "reader"]).await;
    assert_eq!(
        r["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}
        ])
    );

    k.ok(
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    )
    .await;
    let s = get_json(&k, &["service", "web"]).await;
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96."))
    );

    k.ok(
        &[
            "create",
            "ingress",
            "web",
            "--class=nginx",
            "--rule=example.com/api*=web:http,tls=web-tls",
        ],
        None,
    )
    .await;
    let i = get_json(&k, &["ingress", "web"]).await;
    assert_eq!(i["spec"]["ingressClassName"], "nginx");
    let rule = &i["spec"]["rules"][0];
    assert_eq!(rule["host"], "example.com");
    assert_eq!(
        rule["http"]["paths"][0],
        json!({"path": "/api", "pathType": "Prefix",
               "backend": {"service": {"name": "web", "port": {"name": "http"}}}})
    );
    assert_eq!(
        i["spec"]["tls"],
        json!([{"hosts": ["example.com"], "secretName": "web-tls"}])
    );

    k.ok(
        &[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=50%",
        ],
        None,
    )
    .await;
    let p = get_json(&k, &["pdb", "web"]).await;
    assert_eq!(p["spec"]["minAvailable"], "50%");
    assert_eq!(
        p["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );

    k.ok(
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=on-call first",
            "--preemption-policy=Never",
        ],
        None,
    )
    .await;
    let pc = get_json(&k, &["priorityclass", "high"]).await;
    assert_eq!(
        (&pc["value"], &pc["description"], &pc["preemptionPolicy"]),
        (&json!(1000), &json!("on-call first"), &json!("Never"))
    );
    // A zero the user chose stays; Go's always-written zero fields do not appear.
    k.ok(
        &[
            "create",
            "deployment",
            "idle",
            "--image=nginx",
            "--replicas=0",
        ],
        None,
    )
    .await;
    let idle = get_json(&k, &["deployment", "idle"]).await;
    assert_eq!(idle["spec"]["replicas"], 0);
    sb.shutdown().await;
}
