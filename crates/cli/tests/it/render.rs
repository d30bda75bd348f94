//! Pure parts from YAML fixtures: the tables, ages, and what `--wait` decides.

use kubectl_secretsync::ops::{ActiveIs, WaitFor};
use kubectl_secretsync::render;
use kubectl_secretsync::wait::{Verdict, evaluate};
use secretsync_api::SecretSync;

fn sync(status: &str, extra_spec: &str) -> SecretSync {
    let yaml = format!(
        r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db, namespace: payments, generation: 7, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  storeRef: {{name: vault, kind: ClusterSecretStore}}
  version: 2
  data: [{{secretKey: password, remoteRef: {{key: app/db}}}}]
{extra_spec}
status:
{status}
"#
    );
    serde_yaml::from_str(&yaml).expect("fixture parses")
}

const READY_TWO_TARGETS: &str = r#"
  observedGeneration: 7
  currentVersion: 4
  activeVersion: 4
  activeSecretName: db-v4
  versions:
    - {version: 4, secretName: db-v4, specVersion: 2, createdAt: "2026-01-01T10:00:00Z", state: Active}
    - {version: 3, secretName: db-v3, specVersion: 1, createdAt: "2026-01-01T09:00:00Z", state: Retained}
  rollout:
    targets:
      - {kind: Deployment, name: api, version: 4, state: Complete}
      - {kind: DaemonSet, name: agent, version: 4, state: Complete}
  conditions:
    - {type: Ready, status: "True", reason: Synced, message: "db-v4 active; 2/2 targets rolled out", lastTransitionTime: "2026-01-01T10:00:00Z", observedGeneration: 7}
    - {type: RolledOut, status: "True", reason: RolloutComplete, message: "2/2", lastTransitionTime: "2026-01-01T10:00:00Z"}
    - {type: Synced, status: "True", reason: Synced, message: "db-v4 is up to date with vault", lastTransitionTime: "2026-01-01T10:00:00Z"}
"#;

fn now() -> jiff::Timestamp {
    "2026-01-01T10:05:00Z".parse().unwrap()
}

fn want(generation: i64) -> WaitFor {
    WaitFor {
        generation,
        ..Default::default()
    }
}

#[test]
fn ages_read_like_kubectl() {
    let at = |s: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().unwrap());
    let cases = [
        ("2026-01-01T10:04:15Z", "45s"),
        ("2026-01-01T09:59:30Z", "5m30s"),
        ("2026-01-01T08:30:00Z", "95m"),
        ("2026-01-01T04:55:00Z", "5h10m"),
        ("2025-12-31T00:05:00Z", "34h"),
        ("2025-12-29T06:05:00Z", "3d4h"),
        ("2025-06-01T10:05:00Z", "214d"),
        ("2026-01-01T10:06:00Z", "<invalid>"),
    ];
    for (since, expected) in cases {
        assert_eq!(render::age(&at(since), now()), expected, "since {since}");
    }
}

#[test]
fn rollout_cell_counts_targets_complete_at_the_active_version() {
    let done = sync(READY_TWO_TARGETS, "");
    assert_eq!(render::rollout_cell(&done), "2/2 Complete");

    let half = sync(
        &READY_TWO_TARGETS.replace(
            "{kind: DaemonSet, name: agent, version: 4, state: Complete}",
            "{kind: DaemonSet, name: agent, version: 3, state: Complete}",
        ),
        "",
    );
    assert_eq!(render::rollout_cell(&half), "1/2 Progressing");

    let failed = sync(
        &READY_TWO_TARGETS.replace(
            "{kind: DaemonSet, name: agent, version: 4, state: Complete}",
            "{kind: DaemonSet, name: agent, version: 4, state: Failed}",
        ),
        "",
    );
    assert_eq!(render::rollout_cell(&failed), "1/2 Failed");

    let none = sync("  currentVersion: 1", "");
    assert_eq!(render::rollout_cell(&none), "-");
}

#[test]
fn list_table_has_aligned_columns() {
    let text = render::list(&[sync(READY_TWO_TARGETS, "")], true, now());
    assert_eq!(
        text,
        "NAMESPACE   NAME   CURRENT   ACTIVE   READY   ROLLOUT        AGE\n\
         payments    db     4         db-v4    True    2/2 Complete   10h\n"
    );
}

#[test]
fn status_shows_header_conditions_versions_and_targets() {
    let s = sync(
        READY_TWO_TARGETS,
        "  pinVersion: 3\n  revokedVersions: [1, 2]\n  revokePolicy: Immediate",
    );
    let text = render::status(&s, now());
    let expected_header = "\
Name:         db
Namespace:    payments
Store:        ClusterSecretStore/vault
Spec version: 2
Pinned:       3 (db-v3); `kubectl secretsync unpin db -n payments` rolls forward
Revoked:      1, 2 (policy Immediate)
Current:      4 (db-v4)
Active:       4 (db-v4)
";
    assert!(text.starts_with(expected_header), "{text}");
    assert!(
        text.contains(
            "\nConditions:\n  \
           TYPE        STATUS   REASON            MESSAGE\n  \
           Ready       True     Synced            db-v4 active; 2/2 targets rolled out\n  \
           Synced      True     Synced            db-v4 is up to date with vault\n  \
           RolledOut   True     RolloutComplete   2/2\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\nVersions:\n  \
           VERSION   SECRET   STATE      CREATED                          SPEC VERSION\n  \
           4         db-v4    Active     2026-01-01 10:00:00Z (5m ago)    2\n  \
           3         db-v3    Retained   2026-01-01 09:00:00Z (65m ago)   1\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\nTargets:\n  \
           KIND         NAME    VERSION   STATE\n  \
           Deployment   api     4         Complete\n  \
           DaemonSet    agent   4         Complete\n"
        ),
        "{text}"
    );
}

#[test]
fn status_says_when_the_operator_is_behind() {
    let s = sync(
        &READY_TWO_TARGETS.replace("observedGeneration: 7", "observedGeneration: 6"),
        "",
    );
    let text = render::status(&s, now());
    assert!(
        text.contains(
            "the operator has not processed the latest change yet (generation 7, observed 6)"
        ),
        "{text}"
    );
}

#[test]
fn wait_is_done_when_ready_observed_and_rolled_out() {
    let s = sync(READY_TWO_TARGETS, "");
    assert_eq!(
        evaluate(&s, &want(7)),
        Verdict::Done("db is Ready; db-v4 is active; 2/2 targets rolled out".into())
    );
    assert!(
        matches!(evaluate(&s, &want(8)), Verdict::Pending(w) if w.contains("not processed generation 8"))
    );
    let rotate = WaitFor {
        generation: 7,
        min_current: Some(5),
        active: ActiveIs::Newest,
    };
    assert!(
        matches!(evaluate(&s, &rotate), Verdict::Pending(w) if w.contains("waiting for db-v5"))
    );
    let rollback = WaitFor {
        generation: 7,
        min_current: None,
        active: ActiveIs::Exactly(3),
    };
    assert!(
        matches!(evaluate(&s, &rollback), Verdict::Pending(w) if w == "active version is db-v4")
    );
    let revoke = WaitFor {
        generation: 7,
        min_current: None,
        active: ActiveIs::Not(4),
    };
    assert!(matches!(evaluate(&s, &revoke), Verdict::Pending(_)));
}

#[test]
fn wait_keeps_waiting_for_a_progressing_rollout_and_skips_missing_targets() {
    let progressing = sync(
        &READY_TWO_TARGETS.replace(
            "{kind: DaemonSet, name: agent, version: 4, state: Complete}",
            "{kind: DaemonSet, name: agent, version: 4, state: Progressing}",
        ),
        "",
    );
    assert_eq!(
        evaluate(&progressing, &want(7)),
        Verdict::Pending("rollout 1/2: DaemonSet/agent is Progressing at version 4".into())
    );
    let missing = sync(
        &READY_TWO_TARGETS.replace(
            "{kind: DaemonSet, name: agent, version: 4, state: Complete}",
            "{kind: DaemonSet, name: agent, version: 4, state: NotFound}",
        ),
        "",
    );
    assert!(
        matches!(evaluate(&missing, &want(7)), Verdict::Done(s) if s.contains("not found (skipped): DaemonSet/agent"))
    );
}

#[test]
fn wait_fails_on_a_lasting_failure_and_waits_out_a_transient_one() {
    let failing = |reason: &str, generation: i64| {
        sync(
            &READY_TWO_TARGETS
                .replace("observedGeneration: 7\n", "observedGeneration: 6\n")
                .replace(
                    r#"{type: Ready, status: "True", reason: Synced, message: "db-v4 active; 2/2 targets rolled out", lastTransitionTime: "2026-01-01T10:00:00Z", observedGeneration: 7}"#,
                    &format!(r#"{{type: Ready, status: "False", reason: {reason}, message: "app/db: no such key", lastTransitionTime: "2026-01-01T10:00:00Z", observedGeneration: {generation}}}"#),
                ),
            "",
        )
    };
    assert_eq!(
        evaluate(&failing("RemoteKeyNotFound", 7), &want(7)),
        Verdict::Failed {
            reason: "RemoteKeyNotFound".into(),
            message: "app/db: no such key".into()
        }
    );
    // A failure of an older generation is not about this change.
    assert!(matches!(
        evaluate(&failing("RemoteKeyNotFound", 6), &want(7)),
        Verdict::Pending(_)
    ));
    // The operator retries an unavailable backend; keep waiting.
    assert!(matches!(
        evaluate(&failing("ProviderUnavailable", 7), &want(7)),
        Verdict::Pending(_)
    ));
    // A revocation is Ready=False until the Pods have left the revoked version: that is
    // what `revoke --wait` waits for, not a failure (journey 4 on a real cluster).
    assert!(matches!(
        evaluate(&failing("RevokedVersionInUse", 7), &want(7)),
        Verdict::Pending(_)
    ));

    let rollout_failed = sync(
        &READY_TWO_TARGETS.replace(
            "{kind: DaemonSet, name: agent, version: 4, state: Complete}",
            "{kind: DaemonSet, name: agent, version: 4, state: Failed}",
        ),
        "",
    );
    assert!(matches!(
        evaluate(&rollout_failed, &want(7)),
        Verdict::Failed { reason, message } if reason == "RolloutFailed" && message.starts_with("DaemonSet/agent did not roll out to version 4")
    ));
}
