//! ClusterSecretSync (issue 28): one template made into a SecretSync in every selected
//! namespace, as a platform team uses it. Each test names its cluster-scoped objects and its
//! selecting label after its own namespace, so tests share a real cluster.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use secretsync_api::{ClusterSecretStore, ClusterSecretSync, SecretSync};
use serde_json::{Value, json};

use crate::common::{ClusterObjects, DEADLINE, Env, create_deployment_in, secret_data};

const LABEL: &str = "css.secretsync.io/test";

struct Fanout {
    env: Env,
    objects: ClusterObjects,
    /// The ClusterSecretSync's name, which is also each SecretSync's and the Secrets' base.
    name: String,
    store: String,
}

impl Fanout {
    /// An Env with namespaces `<ns>-<suffix>` (those in `labelled` carry the test's label),
    /// a fake ClusterSecretStore holding `app/k<i>` = `{"password":"p<i>"}` for `keys` keys,
    /// and the operator.
    async fn start(ns: &str, suffixes: &[&str], labelled: &[&str], keys: usize) -> Fanout {
        Self::start_with_later(ns, suffixes, &[], labelled, keys).await
    }

    /// Like [`Fanout::start`]; the namespaces of `later` are watched, and made by the test.
    async fn start_with_later(
        ns: &str,
        suffixes: &[&str],
        later: &[&str],
        labelled: &[&str],
        keys: usize,
    ) -> Fanout {
        let owned = |l: &[&str]| -> Vec<String> { l.iter().map(|s| (*s).to_owned()).collect() };
        let (env, mut objects) = Env::with_namespaces(ns, &owned(suffixes), &owned(later)).await;
        let name = format!("{}-db", env.ns);
        let store = format!("{}-vault", env.ns);
        objects.cluster_syncs.push(name.clone());
        objects.cluster_stores.push(store.clone());
        let data: Vec<Value> = (0..keys)
            .map(|i| json!({"key": format!("app/k{i}"), "value": format!(r#"{{"password":"p{i}"}}"#), "version": "1"}))
            .collect();
        let cluster_store: ClusterSecretStore = serde_json::from_value(json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretStore",
            "metadata": {"name": store},
            "spec": {"provider": {"fake": {"data": data}}},
        }))
        .unwrap();
        Api::<ClusterSecretStore>::all(env.client.clone())
            .create(&PostParams::default(), &cluster_store)
            .await
            .unwrap();
        let fan = Fanout {
            env,
            objects,
            name,
            store,
        };
        for s in labelled {
            fan.label(s, true).await;
        }
        fan
    }

    fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.env.ns)
    }

    async fn label(&self, suffix: &str, on: bool) {
        let value = if on { json!(self.env.ns) } else { Value::Null };
        Api::<Namespace>::all(self.env.client.clone())
            .patch(
                &self.ns(suffix),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {LABEL: value}}})),
            )
            .await
            .unwrap();
    }

    fn manifest(&self, data: Value, extra: Value) -> Value {
        let mut css = json!({
            "apiVersion": "secretsync.io/v1alpha1", "kind": "ClusterSecretSync",
            "metadata": {"name": self.name},
            "spec": {
                "namespaceSelector": {"matchLabels": {LABEL: self.env.ns}},
                "template": {
                    "metadata": {"labels": {"team": "platform"}},
                    "spec": {
                        "storeRef": {"name": self.store, "kind": "ClusterSecretStore"},
                        "refreshInterval": "1h",
                        "data": data,
                    },
                },
            },
        });
        if let (Some(spec), Some(extra)) = (css["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        css
    }

    async fn create(&self, manifest: Value) -> kube::Result<ClusterSecretSync> {
        let css: ClusterSecretSync = serde_json::from_value(manifest).unwrap();
        self.api().create(&PostParams::default(), &css).await
    }

    fn api(&self) -> Api<ClusterSecretSync> {
        Api::all(self.env.client.clone())
    }

    /// Waits until the Secret `<name>-v<version>` in namespace `<ns>-<suffix>` holds `key` = `value`.
    async fn wait_secret(&self, suffix: &str, version: i64, key: &str, value: &str) {
        let secret = format!("{}-v{version}", self.name);
        let what = format!("{secret} with {key}");
        self.env
            .wait_in::<Secret, _>(&self.ns(suffix), &secret, &what, |s| {
                let data = secret_data(s?);
                (data.get(key)?.as_slice() == value.as_bytes()).then_some(())
            })
            .await;
    }

    /// Waits until `name` is gone from `<ns>-<suffix>`. Garbage collection included: on a
    /// real control plane just started, kube-controller-manager's garbage collector follows
    /// a CRD installed moments ago only after its next discovery resync (up to 30 s), so the
    /// deadline is twice the usual.
    async fn wait_gc<K>(&self, suffix: &str, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.env
            .wait_gone_in::<K>(&self.ns(suffix), name, DEADLINE * 2)
            .await;
    }

    /// Waits until the ClusterSecretSync's status satisfies `check`.
    async fn wait_status<T>(
        &self,
        what: &str,
        check: impl Fn(&ClusterSecretSync) -> Option<T>,
    ) -> T {
        self.wait_status_within(DEADLINE, what, check).await
    }

    /// Like [`Fanout::wait_status`], up to `within` from now.
    async fn wait_status_within<T>(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&ClusterSecretSync) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let css = self.api().get_opt(&self.name).await.ok().flatten();
            if let Some(found) = css.as_ref().and_then(&check) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {:#?}",
                css.and_then(|c| c.status)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (selected, synced, failed) and the Ready reason, in a status of the current spec.
    async fn wait_counts(
        &self,
        selected: u32,
        synced: u32,
        failed: u32,
        reason: &str,
    ) -> ClusterSecretSync {
        let what =
            format!("{selected} selected, {synced} synced, {failed} failed, Ready reason {reason}");
        self.wait_status(&what, |css| {
            let status = css.status.as_ref()?;
            let c = status.namespaces?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            ((c.selected, c.synced, c.failed) == (selected, synced, failed)
                && ready.reason == reason
                && status.observed_generation == css.metadata.generation)
                .then(|| css.clone())
        })
        .await
    }
}

fn password_item(key: &str) -> Value {
    json!([{"secretKey": key, "remoteRef": {"key": "app/k0", "property": "password"}}])
}

/// The platform team's day: a ClusterSecretSync over the labelled namespaces; a namespace
/// gains the label, another loses it; the template is edited; the ClusterSecretSync deleted.
#[tokio::test]
async fn a_cluster_secret_sync_follows_namespace_labels_and_template_edits() {
    let fan =
        Fanout::start_with_later("css-labels", &["a", "b", "c"], &["d"], &["a", "b"], 1).await;
    fan.create(fan.manifest(password_item("password"), json!({})))
        .await
        .expect("the ClusterSecretSync is accepted");

    for ns in ["a", "b"] {
        fan.wait_secret(ns, 1, "password", "p0").await;
        let sync: SecretSync = Api::namespaced(fan.env.client.clone(), &fan.ns(ns))
            .get(&fan.name)
            .await
            .unwrap();
        assert_eq!(sync.labels()["secretsync.io/cluster-sync"], fan.name);
        assert_eq!(sync.labels()["team"], "platform", "the template's labels");
        let owner = &sync.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ClusterSecretSync", Some(true))
        );
    }
    let css = fan.wait_counts(2, 2, 0, "Synced").await;
    assert_eq!(
        css.status.unwrap().conditions[0].message,
        "2 of 2 namespaces synced"
    );
    let unselected: Option<SecretSync> = Api::namespaced(fan.env.client.clone(), &fan.ns("c"))
        .get_opt(&fan.name)
        .await
        .unwrap();
    assert!(unselected.is_none(), "an unlabelled namespace gets nothing");

    // A namespace gains the label: its SecretSync and Secret follow within seconds.
    let labelled_at = Instant::now();
    fan.label("c", true).await;
    fan.wait_secret("c", 1, "password", "p0").await;
    eprintln!(
        "labelled namespace synced after {:?}",
        labelled_at.elapsed()
    );
    fan.wait_counts(3, 3, 0, "Synced").await;

    // A namespace created with the label: the same.
    let created: Namespace = serde_json::from_value(
        json!({"metadata": {"name": fan.ns("d"), "labels": {LABEL: fan.env.ns}}}),
    )
    .unwrap();
    Api::<Namespace>::all(fan.env.client.clone())
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    fan.wait_secret("d", 1, "password", "p0").await;
    fan.wait_counts(4, 4, 0, "Synced").await;
    fan.label("d", false).await;
    fan.wait_gc::<SecretSync>("d", &fan.name).await;

    // A namespace loses it: its SecretSync goes, and (deletionPolicy Delete) its Secret.
    fan.label("a", false).await;
    fan.wait_gc::<SecretSync>("a", &fan.name).await;
    fan.wait_gc::<Secret>("a", &format!("{}-v1", fan.name))
        .await;
    fan.wait_counts(2, 2, 0, "Synced").await;

    // A template edit reaches every selected namespace: a new version with the new key.
    fan.api()
        .patch(
            &fan.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"data": password_item("db-password")}}}}),
            ),
        )
        .await
        .unwrap();
    for ns in ["b", "c"] {
        fan.wait_secret(ns, 2, "db-password", "p0").await;
    }
    fan.wait_counts(2, 2, 0, "Synced").await;

    // Deleting the ClusterSecretSync removes what it made.
    fan.api()
        .delete(&fan.name, &Default::default())
        .await
        .unwrap();
    for ns in ["b", "c"] {
        fan.wait_gc::<SecretSync>(ns, &fan.name).await;
    }
}

/// A SecretSync of the same name that a team made themselves is never overwritten: the
/// ClusterSecretSync reports it by namespace, and says so on that SecretSync too.
#[tokio::test]
async fn a_foreign_secretsync_of_the_same_name_is_untouched_and_reported() {
    let fan = Fanout::start("css-foreign", &["a", "b"], &["a", "b"], 1).await;
    let theirs: SecretSync = serde_json::from_value(json!({
        "apiVersion": "secretsync.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": fan.name},
        "spec": {
            "storeRef": {"name": fan.store, "kind": "ClusterSecretStore"},
            "data": password_item("theirs"),
        },
    }))
    .unwrap();
    let team_api: Api<SecretSync> = Api::namespaced(fan.env.client.clone(), &fan.ns("a"));
    team_api
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    fan.wait_secret("a", 1, "theirs", "p0").await;

    fan.create(fan.manifest(password_item("password"), json!({})))
        .await
        .unwrap();
    fan.wait_secret("b", 1, "password", "p0").await;
    let css = fan.wait_counts(2, 1, 1, "NamespacesFailed").await;
    let status = css.status.unwrap();
    assert_eq!(status.failures.len(), 1);
    assert_eq!(status.failures[0].namespace, fan.ns("a"));
    assert_eq!(status.failures[0].reason, "SecretSyncNotOwned");
    assert!(
        status.conditions[0]
            .message
            .contains("1 of 2 namespaces failed"),
        "{:?}",
        status.conditions[0].message
    );

    let after = team_api.get(&fan.name).await.unwrap();
    assert_eq!(after.spec, theirs.spec, "their spec is untouched");
    assert!(after.owner_references().is_empty(), "and not taken over");
    assert!(!after.labels().contains_key("secretsync.io/cluster-sync"));
    // Said on their SecretSync, in the team's namespace.
    fan.env
        .wait_events_in(&fan.ns("a"), &["SecretSyncNotOwned"], |e, reason| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(fan.name.as_str())
        })
        .await;
    // Its own Secret is its own.
    fan.wait_secret("a", 1, "theirs", "p0").await;
}

/// A namespaced SecretStore cannot be reached from a cluster-wide object: the API server
/// refuses the ClusterSecretSync, saying why.
#[tokio::test]
async fn a_namespaced_store_in_the_template_is_refused_with_the_reason() {
    let fan = Fanout::start("css-refused", &["a"], &["a"], 1).await;
    let mut manifest = fan.manifest(password_item("password"), json!({}));
    manifest["spec"]["template"]["spec"]["storeRef"] = json!({"name": "vault"});
    let refused = fan.create(manifest).await.expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("must be ClusterSecretStore"),
        "the reason names the rule: {message}"
    );
    let made: Option<SecretSync> = Api::namespaced(fan.env.client.clone(), &fan.ns("a"))
        .get_opt(&fan.name)
        .await
        .unwrap();
    assert!(made.is_none());
}

/// A namespace that loses the label while a Deployment there still uses the version keeps
/// its SecretSync (and Secret) until nothing references it.
#[tokio::test]
async fn an_unselected_namespace_keeps_a_version_in_use_until_released() {
    let fan = Fanout::start("css-inuse", &["a"], &["a"], 1).await;
    fan.create(fan.manifest(password_item("password"), json!({})))
        .await
        .unwrap();
    fan.wait_secret("a", 1, "password", "p0").await;
    let secret = format!("{}-v1", fan.name);
    create_deployment_in(&fan.env, &fan.ns("a"), "api", &secret).await;

    fan.label("a", false).await;
    let held = fan
        .wait_status("the removal held", |css| {
            let status = css.status.as_ref()?;
            status.removing.first().cloned()
        })
        .await;
    assert_eq!(held.namespace, fan.ns("a"));
    assert_eq!(held.reason, "VersionsInUse");
    assert!(
        held.message.contains(&secret) && held.message.contains("Deployment/api"),
        "{}",
        held.message
    );
    let syncs: Api<SecretSync> = Api::namespaced(fan.env.client.clone(), &fan.ns("a"));
    let secrets: Api<Secret> = Api::namespaced(fan.env.client.clone(), &fan.ns("a"));
    assert!(
        syncs.get_opt(&fan.name).await.unwrap().is_some(),
        "the SecretSync is kept"
    );
    assert!(
        secrets.get_opt(&secret).await.unwrap().is_some(),
        "the Secret in use stays"
    );

    // The workload goes: the SecretSync and its Secret follow.
    Api::<Deployment>::namespaced(fan.env.client.clone(), &fan.ns("a"))
        .delete("api", &Default::default())
        .await
        .unwrap();
    fan.wait_gc::<SecretSync>("a", &fan.name).await;
    fan.wait_gc::<Secret>("a", &secret).await;
    fan.wait_status("nothing being removed", |css| {
        let status = css.status.as_ref()?;
        (status.removing.is_empty() && status.namespaces?.removing == 0).then_some(())
    })
    .await;
}

/// 50 namespaces × 5 keys from one ClusterSecretStore: the SecretSyncs of every namespace
/// share the store's reads, so making the 50 first versions costs 5 backend reads, and so
/// does each refresh window, not 250.
#[tokio::test]
async fn fifty_namespaces_over_five_keys_cost_five_reads_per_refresh_window() {
    const NAMESPACES: usize = 50;
    const KEYS: usize = 5;
    const INTERVAL_S: u64 = 4;
    let suffixes: Vec<String> = (0..NAMESPACES).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = suffixes.iter().map(String::as_str).collect();
    let fan = Fanout::start("css-reads", &refs, &refs, KEYS).await;
    let data: Vec<Value> = (0..KEYS)
        .map(|i| json!({"secretKey": format!("k{i}"), "remoteRef": {"key": format!("app/k{i}"), "property": "password"}}))
        .collect();
    // refreshInterval 1h: a value read serves the others for 30 min (half the interval, at
    // most a minute), far longer than making 50 SecretSyncs takes even on a loaded machine.
    fan.create(fan.manifest(json!(data), json!({})))
        .await
        .unwrap();
    let all_synced = |css: &ClusterSecretSync| {
        let status = css.status.as_ref()?;
        let counts = status.namespaces?;
        (counts.synced == NAMESPACES as u32
            && status.observed_generation == css.metadata.generation)
            .then_some(())
    };
    // Four times the usual deadline: 50 namespaces.
    fan.wait_status_within(DEADLINE * 4, "all 50 synced", all_synced)
        .await;
    let first = fan.env.operator().backend_reads();
    eprintln!("{NAMESPACES} namespaces × {KEYS} keys: first versions with {first} backend reads");
    assert_eq!(
        first, KEYS as u64,
        "the 50 first versions read each key once"
    );

    // Now a refresh every 4 s (values shared for 2 s), and three windows measured.
    fan.api()
        .patch(
            &fan.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"refreshInterval": format!("{INTERVAL_S}s")}}}})),
        )
        .await
        .unwrap();
    fan.wait_status_within(DEADLINE * 4, "the edit synced in all 50", all_synced)
        .await;
    let before = fan.env.operator().backend_reads();
    // An observation window of three refresh intervals (a measurement, not a wait for a state).
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL_S)).await;
    let reads = fan.env.operator().backend_reads() - before;
    eprintln!(
        "{NAMESPACES} namespaces × {KEYS} keys, {}s: {reads} backend reads",
        3 * INTERVAL_S
    );
    assert!(reads >= KEYS as u64, "they did refresh ({reads} reads)");
    assert!(
        reads <= (KEYS * 4) as u64,
        "{reads} reads for {KEYS} keys over 3 windows: at most one per key per window (and one window's edge)"
    );
    for s in ["n0", "n49"] {
        fan.wait_secret(s, 1, "k4", "p4").await;
    }
}

/// Sharding: an operator watching only some namespaces makes SecretSyncs only there, and
/// leaves alone (not a status write) a ClusterSecretSync that selects none of them.
#[tokio::test]
async fn an_operator_watching_some_namespaces_makes_secretsyncs_only_there() {
    let mut fan = Fanout::start("css-shard", &["a", "b"], &[], 1).await;
    let (a, b) = (fan.ns("a"), fan.ns("b"));
    fan.env.stop_operator().await;
    let config = secretsync_operator::Config {
        hash_key: secretsync_operator::hash_key::KeySecret {
            namespace: a.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = fan.env.client.clone();
    fan.env.operator = Some(crate::common::Operator::start_in(
        client,
        vec![a.clone()],
        config,
    ));
    let both = fan.name.clone();
    let elsewhere = format!("{}-elsewhere", fan.env.ns);
    fan.objects.cluster_syncs.push(elsewhere.clone());
    // Picked by name only.
    let by_name = |name: &str, namespaces: &[&String]| {
        let mut manifest =
            fan.manifest(password_item("password"), json!({"namespaces": namespaces}));
        manifest["metadata"]["name"] = json!(name);
        manifest["spec"]
            .as_object_mut()
            .unwrap()
            .remove("namespaceSelector");
        manifest
    };
    fan.create(by_name(&elsewhere, &[&b])).await.unwrap();
    fan.create(by_name(&both, &[&a, &b])).await.unwrap();
    fan.wait_secret("a", 1, "password", "p0").await;
    // Its status counts what this operator sees: only `a`.
    fan.wait_status("1 selected and synced", |css| {
        let counts = css.status.as_ref()?.namespaces?;
        ((counts.selected, counts.synced) == (1, 1)).then_some(())
    })
    .await;
    let in_b: Api<SecretSync> = Api::namespaced(fan.env.client.clone(), &b);
    assert!(
        in_b.get_opt(&both).await.unwrap().is_none(),
        "nothing outside its namespaces"
    );
    assert!(in_b.get_opt(&elsewhere).await.unwrap().is_none());
    assert!(
        fan.api().get(&elsewhere).await.unwrap().status.is_none(),
        "another shard's ClusterSecretSync is not written to"
    );
}
