//! Dynamic secrets with leases (issue 14): `dataFrom.pki` versions are certificates issued by
//! a real OpenBao PKI engine with `generate_lease=true`. Checked at OpenBao itself: which
//! leases it still holds and which certificates it has revoked.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use secretsync_api::{SecretSync, TargetState, VersionStatus, labels};
use secretsync_testkit::leak::LeakScan;
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::pki::inspect_certificate;
use serde_json::json;

use crate::common::{DEADLINE, Env, logs};
use crate::vault::vault_store;

const ROLE_LEASES: &str = "pki/issue/app/";

/// A SecretSync `tls` issuing from role `app` of the `pki` mount.
fn pki_sync(extra: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: tls}}
spec:
  storeRef: {{name: vault}}
  dataFrom:
    - pki:
        role: app
        commonName: api.example.internal
        altNames: [www.example.internal]
        ipSans: [127.0.0.1]
        ttl: 1h
{extra}
"#
    )
}

/// OpenBao with a PKI role `app` for `example.internal`, and an env with a store for it.
async fn start(sandbox: secretsync_sandbox::SandboxBuilder) -> Option<(OpenBao, Env)> {
    let bao = OpenBao::start()?;
    bao.enable_pki("pki", "app", "example.internal");
    let env = Env::start_with("payments", sandbox).await;
    vault_store(&env, &bao, bao.root_token()).await;
    Some((bao, env))
}

fn annotation(secret: &Secret, key: &str) -> String {
    secret.metadata.annotations.as_ref().unwrap()[key].clone()
}

/// The status entry of version `v`.
fn version(sync: &SecretSync, v: i64) -> VersionStatus {
    sync.status
        .as_ref()
        .unwrap()
        .versions
        .iter()
        .find(|s| s.version == v)
        .unwrap_or_else(|| panic!("no version {v} in {:?}", sync.status))
        .clone()
}

/// OpenBao's serial `0e:61:…` as openssl prints it, `0E61…`.
fn openssl_serial(serial: &str) -> String {
    serial.replace(':', "").to_uppercase()
}

/// Waits for an event of `reason` whose note contains each of `parts`.
async fn wait_event_note(env: &Env, reason: &str, parts: &[&str]) {
    env.wait_events(&[reason], |e, reason| {
        e.reason.as_deref() == Some(reason)
            && e.note
                .as_deref()
                .is_some_and(|n| parts.iter().all(|p| n.contains(p)))
    })
    .await;
}

#[tokio::test]
async fn a_pki_version_is_a_leased_tls_certificate_and_refreshes_issue_nothing() {
    let Some((bao, env)) = start(secretsync_sandbox::Sandbox::builder()).await else {
        return;
    };
    env.create::<SecretSync>(&pki_sync("  refreshInterval: 1s"))
        .await;
    let synced = env.wait_version("tls", 1).await;

    let v1 = env.secret("tls-v1").await.unwrap();
    assert_eq!(v1.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = v1.data.clone().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let key_pem = String::from_utf8(data["tls.key"].0.clone()).unwrap();
    assert!(key_pem.contains("PRIVATE KEY-----"), "a PEM private key");
    let Some(cert) = inspect_certificate(std::str::from_utf8(&data["tls.crt"].0).unwrap()) else {
        return;
    };
    assert_eq!(cert.subject, "CN=api.example.internal");
    for san in [
        "DNS:api.example.internal",
        "DNS:www.example.internal",
        "IP Address:127.0.0.1",
    ] {
        assert!(cert.subject_alt_names.contains(san), "{cert:?}");
    }

    // The status shows the lease's expiry and the serial; the lease id stays on the Secret.
    let status = version(&synced, 1);
    let lease = status.lease.clone().expect("status.versions[0].lease");
    let expires_in = lease.expires_at.0.duration_since(jiff::Timestamp::now());
    assert!(
        expires_in.as_secs() > 3500 && expires_in.as_secs() <= 3600,
        "{lease:?}"
    );
    assert!(!lease.renewable, "PKI leases are not renewable");
    let serial = status.serial.clone().expect("status.versions[0].serial");
    assert_eq!(openssl_serial(&serial), cert.serial);
    assert_eq!(annotation(&v1, labels::CERTIFICATE_SERIAL), serial);
    let lease_id = annotation(&v1, labels::LEASE_ID);
    assert_eq!(bao.leases(ROLE_LEASES), vec![lease_id.clone()]);

    // Refreshes re-issue nothing: three refresh windows and as many passes later, still one
    // version and one certificate issued at OpenBao.
    let since = env.operator().reconciles();
    let start = tokio::time::Instant::now();
    let deadline = start + DEADLINE;
    while env.operator().reconciles() < since + 3 || start.elapsed() < Duration::from_millis(3500) {
        assert!(tokio::time::Instant::now() < deadline, "no passes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.version_secrets("tls").await, ["tls-v1"]);
    assert_eq!(bao.audited_responses("pki/issue/"), 1);
    assert_eq!(bao.leases(ROLE_LEASES), vec![lease_id.clone()]);

    // The private key (each of its lines) and the lease id show nowhere.
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .collect();
    assert!(!key_lines.is_empty());
    let mut canaries: Vec<String> = key_lines.iter().map(|l| l.to_string()).collect();
    canaries.push(lease_id.clone());
    let mut scan = LeakScan::new(canaries);
    let logs = logs().contents();
    assert!(logs.contains("version created"), "logs were captured");
    scan.items("operator debug log lines", logs.lines());
    scan.cluster(&env.client).await;
    eprintln!("{}", scan.assert_clean());
}

#[tokio::test]
async fn revoking_a_version_and_deleting_the_sync_revoke_their_certificates_at_openbao() {
    let Some((bao, env)) = start(secretsync_sandbox::Sandbox::builder()).await else {
        return;
    };
    env.create::<SecretSync>(&pki_sync("")).await;
    env.wait_version("tls", 1).await;
    let v1 = env.secret("tls-v1").await.unwrap();
    let (v1_lease, v1_serial) = (
        annotation(&v1, labels::LEASE_ID),
        annotation(&v1, labels::CERTIFICATE_SERIAL),
    );
    assert_eq!(bao.certificate_revoked_at("pki", &v1_serial), None);

    // Revoking the newest version makes v2 first, then revokes v1's lease: OpenBao shows
    // the certificate revoked and the lease gone.
    env.merge_sync(
        "tls",
        json!({"spec": {"revokedVersions": [1], "revokePolicy": "Immediate"}}),
    )
    .await;
    env.wait_version("tls", 2).await;
    env.wait_for_absent::<Secret>("tls-v1").await;
    let v2 = env.secret("tls-v2").await.unwrap();
    let (v2_lease, v2_serial) = (
        annotation(&v2, labels::LEASE_ID),
        annotation(&v2, labels::CERTIFICATE_SERIAL),
    );
    assert_ne!(v1_serial, v2_serial);
    assert!(bao.certificate_revoked_at("pki", &v1_serial).is_some());
    assert_eq!(bao.certificate_revoked_at("pki", &v2_serial), None);
    assert_eq!(bao.leases(ROLE_LEASES), vec![v2_lease.clone()]);
    assert!(!bao.leases(ROLE_LEASES).contains(&v1_lease));
    wait_event_note(
        &env,
        "VersionRevoked",
        &["deleted revoked tls-v1 and revoked its lease"],
    )
    .await;

    // Deleting the SecretSync (deletionPolicy Delete) revokes every remaining lease.
    env.api::<SecretSync>()
        .delete("tls", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("tls").await;
    assert!(env.version_secrets("tls").await.is_empty());
    assert!(bao.certificate_revoked_at("pki", &v2_serial).is_some());
    assert_eq!(bao.leases(ROLE_LEASES), Vec::<String>::new());
    eprintln!("leases: 2 issued, 2 revoked at OpenBao (tls-v1 by revocation, tls-v2 by deletion)");
}

#[tokio::test]
async fn deleting_with_retain_revokes_nothing() {
    let Some((bao, env)) = start(secretsync_sandbox::Sandbox::builder()).await else {
        return;
    };
    env.create::<SecretSync>(&pki_sync("  deletionPolicy: Retain"))
        .await;
    env.wait_version("tls", 1).await;
    let v1 = env.secret("tls-v1").await.unwrap();
    let (lease, serial) = (
        annotation(&v1, labels::LEASE_ID),
        annotation(&v1, labels::CERTIFICATE_SERIAL),
    );
    env.api::<SecretSync>()
        .delete("tls", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for_absent::<SecretSync>("tls").await;
    assert!(env.secret("tls-v1").await.is_some(), "retained");
    assert_eq!(bao.leases(ROLE_LEASES), [lease]);
    assert_eq!(bao.certificate_revoked_at("pki", &serial), None);
}

/// OpenBao down when a version is revoked: a Warning, the Secret (and its lease id) kept,
/// and the revocation retried until it succeeds.
#[tokio::test]
async fn a_lease_that_cannot_be_revoked_keeps_its_secret_until_it_is() {
    let Some((mut bao, env)) = start(secretsync_sandbox::Sandbox::builder()).await else {
        return;
    };
    env.create::<SecretSync>(&pki_sync("")).await;
    env.wait_version("tls", 1).await;
    env.merge_sync("tls", json!({"spec": {"version": 1}})).await;
    env.wait_version("tls", 2).await;

    bao.stop();
    env.merge_sync(
        "tls",
        json!({"spec": {"revokedVersions": [1], "revokePolicy": "Immediate"}}),
    )
    .await;
    env.wait_event_reasons(&["LeaseRevokeFailed"]).await;
    let (_, message) = env.wait_condition("tls", "Ready", "True").await;
    assert!(
        message.contains("could not revoke the lease of tls-v1"),
        "{message}"
    );
    assert!(env.secret("tls-v1").await.is_some(), "kept until revoked");

    // Back (empty: a dev server keeps nothing), the retry finds the lease gone, which counts
    // as revoked, and the Secret goes.
    bao.start_again();
    env.wait_for_absent::<Secret>("tls-v1").await;
}

#[tokio::test]
async fn a_store_that_cannot_issue_is_invalid_spec() {
    let env = Env::start("payments").await;
    env.fake_store("vault", &[("app/db", r#"{"password":"x"}"#, "1")])
        .await;
    env.create::<SecretSync>(&pki_sync("")).await;
    let message = env.wait_failure("tls", "Ready", "InvalidSpec").await;
    assert!(
        message.contains("only a Vault/OpenBao store issues certificates"),
        "{message}"
    );
    assert!(env.version_secrets("tls").await.is_empty());
}

/// Targets left on a version whose lease expired (here pinned to it): Ready=False with
/// `LeaseExpired`, saying what to do.
#[tokio::test]
async fn targets_on_an_expired_lease_are_not_ready() {
    let Some((_bao, env)) = start(secretsync_sandbox::Sandbox::builder()).await else {
        return;
    };
    env.create::<SecretSync>(&pki_sync("").replace("ttl: 1h", "ttl: 6s"))
        .await;
    env.wait_version("tls", 1).await;
    env.merge_sync("tls", json!({"spec": {"pinVersion": 1}}))
        .await;
    let message = env.wait_failure("tls", "Ready", "LeaseExpired").await;
    assert!(
        message.contains("the lease of tls-v1, which the targets use, expired"),
        "{message}"
    );
    assert!(message.contains("raise spec.version"), "{message}");
}

/// Lease-aware rotation (vault issue 22297): with a 30 s certificate and a Deployment whose
/// rollout takes seconds, v2 is made ahead of v1's expiry, early enough that the rollout to
/// it completes before v1 expires; v3 is made ahead of v2's expiry by the rollout duration
/// observed (× 2 + 5 s), more than the floor of a third of the lease.
#[tokio::test]
async fn the_next_version_rolls_out_before_the_old_lease_expires() {
    let Some((bao, env)) =
        start(secretsync_sandbox::Sandbox::builder().ready_delay(Duration::from_secs(4))).await
    else {
        return;
    };
    env.create::<SecretSync>(
        &pki_sync("  rollout: {targets: [{kind: Deployment, name: api}]}")
            .replace("ttl: 1h", "ttl: 30s"),
    )
    .await;
    let synced = env.wait_version("tls", 1).await;
    let v1_expiry = version(&synced, 1).lease.unwrap().expires_at.0;
    create_tls_deployment(&env, "api", "tls-v1").await;

    let synced = env.wait_version("tls", 2).await;
    let v2_created = env
        .secret("tls-v2")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    assert!(v2_created < v1_expiry, "v2 made before v1 expires");
    wait_event_note(
        &env,
        "VersionCreated",
        &[
            "created tls-v2",
            "rotating before the lease of tls-v1 expires at",
        ],
    )
    .await;
    drop(synced);

    // The rollout to v2 completes, and before v1's lease runs out.
    let rollout = env
        .wait_for::<SecretSync, _>("tls", "the rollout to tls-v2 complete", |s| {
            let rollout = s.status.as_ref()?.rollout.clone()?;
            let complete = rollout.version == Some(2)
                && rollout
                    .targets
                    .iter()
                    .all(|t| t.state == TargetState::Complete);
            complete.then_some(rollout)
        })
        .await;
    let completed = jiff::Timestamp::now();
    assert!(
        completed < v1_expiry,
        "rollout complete at {completed}, after v1 expired at {v1_expiry}"
    );
    let took = rollout
        .last_duration
        .clone()
        .expect("rollout duration recorded");
    let took = secretsync_api::duration::parse_duration(&took).unwrap();
    assert!(
        took >= Duration::from_secs(4),
        "the simulated rollout is slow: {took:?}"
    );
    let deployment = env.api::<Deployment>().get("api").await.unwrap();
    let volumes = serde_json::to_value(&deployment.spec.unwrap().template).unwrap();
    assert_eq!(
        volumes["spec"]["volumes"][0]["secret"]["secretName"],
        "tls-v2"
    );
    // v1 is no longer referenced; its lease goes with its Secret (history limit 3 keeps it).
    assert_eq!(bao.leases(ROLE_LEASES).len(), 2);
    eprintln!(
        "lease-aware rotation: v2 made {:.1}s before v1's lease expired; the rollout took \
         {:.1}s and completed {:.1}s before the expiry",
        v1_expiry.duration_since(v2_created).as_secs_f64(),
        took.as_secs_f64(),
        v1_expiry.duration_since(completed).as_secs_f64(),
    );

    // The next rotation plans for the rollouts seen: 2 × the longest + 5 s ahead of v2's
    // expiry, which is more than the 10 s floor (a third of 30 s).
    let synced = env.wait_version("tls", 3).await;
    let v2_expiry = version(&synced, 2).lease.unwrap().expires_at.0;
    let v3_created = env
        .secret("tls-v3")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    // Planned from the rollouts seen when v2's completed (v3's own may have finished since).
    let longest = rollout.longest_duration.expect("longest rollout recorded");
    let longest = secretsync_api::duration::parse_duration(&longest).unwrap();
    let lead = longest * 2 + Duration::from_secs(5);
    let early = Duration::try_from(v2_expiry.duration_since(v3_created)).unwrap();
    // creationTimestamp has whole seconds: v3 was made up to 1 s after it says. Never
    // earlier than planned; on a loaded machine the timer's reconcile may start late.
    assert!(
        early <= lead + Duration::from_secs(1) && early + Duration::from_secs(3) >= lead,
        "v3 made {early:?} before v2's expiry, not the lead {lead:?}"
    );
    assert!(
        early > Duration::from_secs(11),
        "more than the floor: {early:?}"
    );
    eprintln!(
        "lease-aware rotation: with a longest rollout of {:.1}s, v3 made {:.1}s before v2's \
         lease expired",
        longest.as_secs_f64(),
        early.as_secs_f64()
    );
}

/// Deployment `name` (two replicas) mounting `secret` as a volume, as a TLS server would.
async fn create_tls_deployment(env: &Env, name: &str, secret: &str) {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": name, "image": "app:1",
                        "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                    }],
                    "volumes": [{"name": "tls", "secret": {"secretName": secret}}],
                },
            },
        },
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
}
