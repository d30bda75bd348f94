//! Each verb against the sandbox: exactly the fields it should change, conflicts retried,
//! refusals that leave the object alone.

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kubectl_secretsync::cli::{Command, Output};
use kubectl_secretsync::error::Error;
use kubectl_secretsync::ops::{self, Change};
use kubectl_secretsync::{execute, report};
use secretsync_api::{RevokePolicy, SecretSync, SecretSyncSpec};
use serde_json::json;

use crate::common::{Env, FIVE_VERSIONS, sync_yaml};

const SPEC: &str = "  version: 2\n  revokedVersions: [4]\n  history: {limit: 3}";

async fn five_versions(env: &Env) -> SecretSync {
    env.create_sync(&sync_yaml("db", SPEC), Some(FIVE_VERSIONS))
        .await
}

/// The spec with the fields a verb may change put back to `before`'s values, so an
/// `assert_eq!` with `before.spec` proves nothing else moved.
fn without(mut spec: SecretSyncSpec, before: &SecretSyncSpec, fields: &[&str]) -> SecretSyncSpec {
    for f in fields {
        match *f {
            "version" => spec.version = before.version,
            "pinVersion" => spec.pin_version = before.pin_version,
            "revokedVersions" => spec.revoked_versions = before.revoked_versions.clone(),
            "revokePolicy" => spec.revoke_policy = before.revoke_policy,
            other => panic!("unknown field {other}"),
        }
    }
    spec
}

fn refused(result: Result<ops::Outcome, Error>) -> (String, String) {
    match result {
        Err(Error::Refused { message, hint }) => (message, hint),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn rotate_raises_spec_version_by_one_and_nothing_else() {
    let env = Env::start("payments").await;
    let before = five_versions(&env).await;

    let outcome = ops::rotate(&env.syncs(), "db", false, None).await.unwrap();
    assert_eq!(
        outcome.message,
        "rotating db: spec.version 2 → 3; expect db-v6"
    );
    assert!(outcome.changed);
    assert_eq!(outcome.attempts, 1);

    let after = env.get("db").await;
    assert_eq!(after.spec.version, Some(3));
    assert_eq!(
        without(after.spec.clone(), &before.spec, &["version"]),
        before.spec
    );
    assert_eq!(after.status, before.status, "the CLI never writes status");
    assert!(after.metadata.generation > before.metadata.generation);
    assert_eq!(outcome.wait.generation, after.metadata.generation.unwrap());
    assert_eq!(outcome.wait.min_current, Some(6));
}

#[tokio::test]
async fn rotate_now_also_marks_the_rotation_to_roll_out_outside_windows() {
    let env = Env::start("payments").await;
    let spec = format!(
        "{SPEC}\n  rollout: {{targets: [{{kind: Deployment, name: api}}], windows: [{{schedule: '0 9 * * 1-5', duration: 8h}}]}}"
    );
    let before = env
        .create_sync(&sync_yaml("db", &spec), Some(FIVE_VERSIONS))
        .await;

    let outcome = ops::rotate(&env.syncs(), "db", true, None).await.unwrap();
    assert_eq!(
        outcome.message,
        "rotating db: spec.version 2 → 3; expect db-v6\n--now: db-v6 rolls out without waiting for a rollout window"
    );
    let after = env.get("db").await;
    assert_eq!(after.spec.version, Some(3));
    assert_eq!(
        after
            .annotations()
            .get(secretsync_api::labels::ROLLOUT_NOW)
            .map(String::as_str),
        Some("3"),
        "the annotation names this rotation's spec.version"
    );
    assert_eq!(
        without(after.spec.clone(), &before.spec, &["version"]),
        before.spec
    );

    // Without --now the windows are mentioned (no operator runs here, so db-v6 is still
    // the next), and the annotation is left as it was.
    let outcome = ops::rotate(&env.syncs(), "db", false, None).await.unwrap();
    assert!(
        outcome
            .message
            .ends_with("note: targets move to db-v6 in the next rollout window (--now: at once)"),
        "{}",
        outcome.message
    );
    let after = env.get("db").await;
    assert_eq!(after.spec.version, Some(4));
    assert_eq!(
        after
            .annotations()
            .get(secretsync_api::labels::ROLLOUT_NOW)
            .map(String::as_str),
        Some("3")
    );
}

#[tokio::test]
async fn rotate_from_an_unset_version() {
    let env = Env::start("payments").await;
    env.create_sync(&sync_yaml("db", ""), None).await;
    let outcome = ops::rotate(&env.syncs(), "db", false, None).await.unwrap();
    assert_eq!(
        outcome.message,
        "rotating db: spec.version unset → 1; expect db-v1"
    );
    assert_eq!(env.get("db").await.spec.version, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_concurrent_edit_is_retried_on_the_fresh_object() {
    let env = Env::start("payments").await;
    five_versions(&env).await;
    let api = env.api();
    let handle = tokio::runtime::Handle::current();
    let mut calls = 0;

    // Between the CLI's read and its write, someone else raises spec.version to 10 and
    // changes an unrelated field.
    let outcome = ops::edit(&env.syncs(), "rotate", "db", None, |sync| {
        calls += 1;
        if calls == 1 {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    api.patch(
                        "db",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"version": 10, "refreshInterval": "5m"}})),
                    )
                    .await
                    .unwrap();
                })
            });
        }
        ops::plan_rotate(sync, false)
    })
    .await
    .unwrap();

    assert_eq!(outcome.attempts, 2, "the first write conflicted");
    assert_eq!(
        outcome.message,
        "rotating db: spec.version 10 → 11; expect db-v6"
    );
    let after = env.get("db").await;
    assert_eq!(
        after.spec.version,
        Some(11),
        "planned again from the fresh object"
    );
    assert_eq!(
        after.spec.refresh_interval.as_deref(),
        Some("5m"),
        "their edit is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotates_lose_no_update() {
    let env = Env::start("payments").await;
    five_versions(&env).await;
    let syncs = env.syncs();
    let (a, b, c, d) = tokio::join!(
        ops::rotate(&syncs, "db", false, None),
        ops::rotate(&syncs, "db", false, None),
        ops::rotate(&syncs, "db", false, None),
        ops::rotate(&syncs, "db", false, None),
    );
    for r in [a, b, c, d] {
        r.unwrap();
    }
    assert_eq!(env.get("db").await.spec.version, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpin_retries_when_the_json_patch_test_fails() {
    let env = Env::start("payments").await;
    env.create_sync(
        &sync_yaml("db", &format!("{SPEC}\n  pinVersion: 3")),
        Some(FIVE_VERSIONS),
    )
    .await;
    let api = env.api();
    let handle = tokio::runtime::Handle::current();
    let mut calls = 0;
    let outcome = ops::edit(&env.syncs(), "unpin", "db", None, |sync| {
        calls += 1;
        if calls == 1 {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    api.patch(
                        "db",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"refreshInterval": "5m"}})),
                    )
                    .await
                    .unwrap();
                })
            });
        }
        ops::plan_unpin(sync)
    })
    .await
    .unwrap();
    assert_eq!(outcome.attempts, 2);
    let after = env.get("db").await;
    assert_eq!(after.spec.pin_version, None);
    assert_eq!(after.spec.refresh_interval.as_deref(), Some("5m"));
}

#[tokio::test]
async fn revoke_adds_the_version_once_and_sets_the_policy_when_asked() {
    let env = Env::start("payments").await;
    let before = five_versions(&env).await;
    let syncs = env.syncs();

    let outcome = ops::revoke(&syncs, "db", 3, false, false, None)
        .await
        .unwrap();
    assert!(
        outcome
            .message
            .starts_with("revoking version 3 of db (db-v3, Retained):")
    );
    assert!(
        outcome.message.contains("AfterRollout"),
        "{}",
        outcome.message
    );
    let after = env.get("db").await;
    assert_eq!(after.spec.revoked_versions, Some(vec![3, 4]));
    assert_eq!(after.spec.revoke_policy, None);
    assert_eq!(
        without(after.spec.clone(), &before.spec, &["revokedVersions"]),
        before.spec
    );

    // Again: nothing to write.
    let again = ops::revoke(&syncs, "db", 3, false, false, None)
        .await
        .unwrap();
    assert!(!again.changed);
    assert!(
        again.message.contains("already revoked"),
        "{}",
        again.message
    );
    assert_eq!(
        env.get("db").await.resource_version(),
        after.resource_version()
    );

    // The active, newest version, at once.
    let outcome = ops::revoke(&syncs, "db", 5, true, false, None)
        .await
        .unwrap();
    assert!(
        outcome.message.contains("newest version"),
        "{}",
        outcome.message
    );
    assert!(outcome.message.contains("db-v6"), "{}", outcome.message);
    assert!(outcome.message.contains("is active"), "{}", outcome.message);
    let after = env.get("db").await;
    assert_eq!(after.spec.revoked_versions, Some(vec![3, 4, 5]));
    assert_eq!(after.spec.revoke_policy, Some(RevokePolicy::Immediate));
    assert_eq!(outcome.wait.min_current, Some(6));
}

#[tokio::test]
async fn revoking_an_unknown_version_is_refused_unless_forced() {
    let env = Env::start("payments").await;
    let before = five_versions(&env).await;
    let syncs = env.syncs();

    let (message, hint) = refused(ops::revoke(&syncs, "db", 9, false, false, None).await);
    assert!(
        message.contains("db has no version 9: it was never made"),
        "{message}"
    );
    assert!(message.contains("5 (Active)"), "{message}");
    assert!(hint.contains("--force"), "{hint}");
    assert_eq!(
        env.get("db").await.resource_version(),
        before.resource_version()
    );

    ops::revoke(&syncs, "db", 9, false, true, None)
        .await
        .unwrap();
    assert_eq!(env.get("db").await.spec.revoked_versions, Some(vec![4, 9]));
}

#[tokio::test]
async fn revoking_the_pinned_version_is_refused() {
    let env = Env::start("payments").await;
    env.create_sync(
        &sync_yaml("db", &format!("{SPEC}\n  pinVersion: 3")),
        Some(FIVE_VERSIONS),
    )
    .await;
    let (message, hint) = refused(ops::revoke(&env.syncs(), "db", 3, false, false, None).await);
    assert!(message.contains("pinned to version 3"), "{message}");
    assert!(hint.contains("unpin db"), "{hint}");
    assert_eq!(env.get("db").await.spec.revoked_versions, Some(vec![4]));
}

#[tokio::test]
async fn rollback_pins_the_newest_retained_version_before_the_active_one() {
    let env = Env::start("payments").await;
    let before = five_versions(&env).await;
    let outcome = ops::rollback(&env.syncs(), "db", None, None).await.unwrap();
    // 4 is revoked, so 3.
    assert!(
        outcome.message.starts_with(
            "rolling back db: pinVersion → 3; rollout targets move from db-v5 to db-v3"
        ),
        "{}",
        outcome.message
    );
    let after = env.get("db").await;
    assert_eq!(after.spec.pin_version, Some(3));
    assert_eq!(
        without(after.spec.clone(), &before.spec, &["pinVersion"]),
        before.spec
    );

    // Explicitly, to the oldest one that still exists.
    ops::rollback(&env.syncs(), "db", Some(1), None)
        .await
        .unwrap();
    assert_eq!(env.get("db").await.spec.pin_version, Some(1));
    let same = ops::rollback(&env.syncs(), "db", Some(1), None)
        .await
        .unwrap();
    assert!(!same.changed);
    assert!(same.message.contains("already pinned"), "{}", same.message);
}

#[tokio::test]
async fn rollback_refuses_revoked_deleted_and_unknown_versions() {
    let env = Env::start("payments").await;
    let before = five_versions(&env).await;
    let syncs = env.syncs();

    let (message, hint) = refused(ops::rollback(&syncs, "db", Some(4), None).await);
    assert!(
        message.contains("cannot roll db back to version 4: it is revoked"),
        "{message}"
    );
    assert!(
        hint.contains("versions that can be pinned: 5, 3, 1"),
        "{hint}"
    );

    let (message, _) = refused(ops::rollback(&syncs, "db", Some(2), None).await);
    assert!(
        message.contains("its Secret db-v2 was deleted"),
        "{message}"
    );

    let (message, _) = refused(ops::rollback(&syncs, "db", Some(9), None).await);
    assert!(message.contains("db has no such version"), "{message}");

    let after = env.get("db").await;
    assert_eq!(after.spec.pin_version, None);
    assert_eq!(after.resource_version(), before.resource_version());
}

#[tokio::test]
async fn rollback_without_an_older_retained_version_is_refused() {
    let env = Env::start("payments").await;
    env.create_sync(
        &sync_yaml("db", ""),
        Some(
            r#"
currentVersion: 1
activeVersion: 1
versions: [{version: 1, secretName: db-v1, state: Active}]
"#,
        ),
    )
    .await;
    let (message, hint) = refused(ops::rollback(&env.syncs(), "db", None, None).await);
    assert!(
        message.contains("no retained version older than the active one (db-v1)"),
        "{message}"
    );
    assert!(hint.contains("--to N"), "{hint}");
}

#[tokio::test]
async fn unpin_removes_pin_version_and_is_a_no_op_when_not_pinned() {
    let env = Env::start("payments").await;
    let before = env
        .create_sync(
            &sync_yaml("db", &format!("{SPEC}\n  pinVersion: 3")),
            Some(FIVE_VERSIONS),
        )
        .await;
    let outcome = ops::unpin(&env.syncs(), "db").await.unwrap();
    assert!(matches!(
        ops::plan_unpin(&before).unwrap().change,
        Change::Json(_)
    ));
    assert_eq!(
        outcome.message,
        "unpinning db: pinVersion 3 removed; rollout targets move from db-v3 to db-v5"
    );
    let after = env.get("db").await;
    assert_eq!(after.spec.pin_version, None);
    assert_eq!(
        without(after.spec.clone(), &before.spec, &["pinVersion"]),
        before.spec
    );

    let again = ops::unpin(&env.syncs(), "db").await.unwrap();
    assert!(!again.changed);
    assert_eq!(again.message, "db is not pinned; nothing to do");
}

#[tokio::test]
async fn a_missing_sync_says_where_it_looked_and_what_to_run() {
    let env = Env::start("payments").await;
    let err = ops::rotate(&env.syncs(), "nope", false, None)
        .await
        .unwrap_err();
    let mut text = Vec::new();
    report(&mut text, &err, "payments");
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("error: SecretSync \"nope\" not found in namespace \"payments\""),
        "{text}"
    );
    assert!(
        text.contains("hint: `kubectl secretsync list -n payments`"),
        "{text}"
    );
}

#[tokio::test]
async fn list_and_status_show_the_rows() {
    let env = Env::start("payments").await;
    five_versions(&env).await;
    env.create_sync(&sync_yaml("cache", "  pinVersion: 1"), Some(
        r#"
currentVersion: 2
activeVersion: 1
activeSecretName: cache-v1
versions:
  - {version: 2, secretName: cache-v2, state: Retained}
  - {version: 1, secretName: cache-v1, state: Active}
rollout:
  targets:
    - {kind: Deployment, name: web, version: 1, state: Complete}
    - {kind: StatefulSet, name: worker, version: 2, state: Progressing}
conditions:
  - {type: Ready, status: "False", reason: ProviderUnavailable, message: "vault: connection refused", lastTransitionTime: "2026-01-01T10:00:00Z"}
"#,
    ))
    .await;

    let run = |command: Command| {
        let client = env.client.clone();
        async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            execute(client, "payments", command, &mut out, &mut err)
                .await
                .unwrap();
            (
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            )
        }
    };

    let (list, _) = run(Command::List {
        all_namespaces: false,
        output: Output::Table,
    })
    .await;
    let lines: Vec<Vec<&str>> = list
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "CURRENT", "ACTIVE", "READY", "ROLLOUT", "AGE"],
        "{list}"
    );
    assert_eq!(
        lines[1][..5],
        [
            "cache",
            "2",
            "cache-v1 (pinned)",
            "False (ProviderUnavailable)",
            "1/2 Progressing"
        ],
        "{list}"
    );
    assert_eq!(
        lines[2][..5],
        ["db", "5", "db-v5", "True", "1/1 Complete"],
        "{list}"
    );

    let (all, _) = run(Command::List {
        all_namespaces: true,
        output: Output::Table,
    })
    .await;
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(
        all.lines().any(|l| l.starts_with("payments    db ")),
        "{all}"
    );

    let (status, _) = run(Command::Status {
        name: "db".into(),
        output: Output::Table,
        wait: kubectl_secretsync::cli::WaitArgs {
            wait: false,
            timeout: None,
        },
    })
    .await;
    assert!(
        status.contains("Store:        SecretStore/vault"),
        "{status}"
    );
    assert!(
        status.contains("Revoked:      4 (policy AfterRollout)"),
        "{status}"
    );
    let row = |needle: &str| {
        status
            .lines()
            .find(|l| l.trim_start().starts_with(needle))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no row {needle:?} in\n{status}"))
    };
    assert_eq!(row("5 ")[..3], ["5", "db-v5", "Active"]);
    assert_eq!(row("4 ")[..3], ["4", "db-v4", "Revoked"]);
    assert_eq!(row("2 ")[..3], ["2", "db-v2", "Deleted"]);
    assert_eq!(*row("5 ").last().unwrap(), "2", "spec version column");
    assert_eq!(row("Deployment"), ["Deployment", "api", "5", "Complete"]);
    assert_eq!(row("Ready"), ["Ready", "True", "Synced", "db-v5", "active"]);
}

#[tokio::test]
async fn list_and_status_print_the_objects_as_json_and_yaml() {
    let env = Env::start("payments").await;
    five_versions(&env).await;
    env.create_sync(&sync_yaml("cache", ""), None).await;
    let run = |command: Command| {
        let client = env.client.clone();
        async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            execute(client, "payments", command, &mut out, &mut err)
                .await
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    let no_wait = || kubectl_secretsync::cli::WaitArgs {
        wait: false,
        timeout: None,
    };

    let list: serde_json::Value = serde_json::from_str(
        &run(Command::List {
            all_namespaces: false,
            output: Output::Json,
        })
        .await,
    )
    .expect("list -o json is JSON");
    assert_eq!(list["kind"], "List");
    let items: Vec<SecretSync> = serde_json::from_value(list["items"].clone()).unwrap();
    let names: Vec<String> = items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["cache", "db"]);
    assert_eq!(
        items[1].status.as_ref().and_then(|s| s.active_version),
        Some(5)
    );

    let status: SecretSync = serde_json::from_str(
        &run(Command::Status {
            name: "db".into(),
            output: Output::Json,
            wait: no_wait(),
        })
        .await,
    )
    .expect("status -o json is a SecretSync");
    assert_eq!(status.spec.revoked_versions, Some(vec![4]));
    assert_eq!(status.status.unwrap().versions.len(), 5);

    let yaml: SecretSync = serde_yaml::from_str(
        &run(Command::Status {
            name: "db".into(),
            output: Output::Yaml,
            wait: no_wait(),
        })
        .await,
    )
    .expect("status -o yaml is a SecretSync");
    assert_eq!(yaml.spec.version, Some(2));
    let listed: serde_json::Value = serde_yaml::from_str(
        &run(Command::List {
            all_namespaces: true,
            output: Output::Yaml,
        })
        .await,
    )
    .unwrap();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_exit_code() {
    use kubectl_secretsync::error::*;
    let env = Env::start("payments").await;
    five_versions(&env).await;
    let wait_for = |ms: u64| kubectl_secretsync::cli::WaitArgs {
        wait: true,
        timeout: Some(std::time::Duration::from_millis(ms)),
    };
    let run = |command: Command| {
        let client = env.client.clone();
        async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            execute(client, "payments", command, &mut out, &mut err)
                .await
                .unwrap_err()
        }
    };

    let missing = ops::rotate(&env.syncs(), "nope", false, None)
        .await
        .unwrap_err();
    assert_eq!(missing.exit_code(), EXIT_NOT_FOUND);

    // Someone else writes between every read and write: the verb gives up.
    let api = env.api();
    let conflict = ops::edit(&env.syncs(), "rotate", "db", None, |sync| {
        let bump = json!({"metadata": {"annotations": {"touched": sync.resource_version()}}});
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                api.patch("db", &PatchParams::default(), &Patch::Merge(bump))
                    .await
                    .unwrap();
            })
        });
        ops::plan_rotate(sync, false)
    })
    .await
    .unwrap_err();
    assert!(matches!(conflict, Error::Conflict { .. }), "{conflict}");
    assert_eq!(conflict.exit_code(), EXIT_CONFLICT);

    // The sandbox authorizes everything, so the API's 403 is built here.
    let forbidden = Error::Api(kube::Error::Api(Box::new(
        kube::core::Status::failure("secretsyncs.secretsync.io \"db\" is forbidden", "Forbidden")
            .with_code(403),
    )));
    assert_eq!(forbidden.exit_code(), EXIT_FORBIDDEN);

    // No operator runs here: a rotation is never observed, so --wait times out.
    let timeout = run(Command::Rotate {
        name: "db".into(),
        now: false,
        reason: kubectl_secretsync::cli::ReasonArg { reason: None },
        wait: wait_for(300),
    })
    .await;
    assert!(matches!(timeout, Error::WaitTimeout { .. }), "{timeout}");
    assert_eq!(timeout.exit_code(), EXIT_TIMEOUT);

    // A target that failed at the active version is a failed rollout.
    env.api()
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": 99,
                "rollout": {"targets": [
                    {"kind": "Deployment", "name": "api", "version": 5, "state": "Failed"}
                ]},
            }})),
        )
        .await
        .unwrap();
    let failed = run(Command::Status {
        name: "db".into(),
        output: Output::Table,
        wait: wait_for(10_000),
    })
    .await;
    assert_eq!(failed.exit_code(), EXIT_ROLLOUT_FAILED, "{failed}");

    // A sync that cannot make a version (its store is gone) is not a failed rollout.
    env.api()
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": 99,
                "rollout": {"targets": []},
                "conditions": [{
                    "type": "Ready", "status": "False", "reason": "StoreNotFound",
                    "message": "SecretStore \"vault\" not found", "observedGeneration": 99,
                    "lastTransitionTime": "2026-12-06T00:00:00Z",
                }],
            }})),
        )
        .await
        .unwrap();
    let sync_failed = run(Command::Status {
        name: "db".into(),
        output: Output::Table,
        wait: wait_for(10_000),
    })
    .await;
    assert!(
        sync_failed.to_string().contains("StoreNotFound"),
        "{sync_failed}"
    );
    assert_eq!(sync_failed.exit_code(), EXIT_SYNC_FAILED, "{sync_failed}");

    let codes = [
        0,
        EXIT_FAILED,
        EXIT_USAGE,
        EXIT_NOT_FOUND,
        EXIT_CONFLICT,
        EXIT_FORBIDDEN,
        EXIT_TIMEOUT,
        EXIT_ROLLOUT_FAILED,
        EXIT_SYNC_FAILED,
    ];
    let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len());
    for code in codes {
        assert!(EXIT_CODES_HELP.contains(&format!("  {code}  ")), "{code}");
    }
}
