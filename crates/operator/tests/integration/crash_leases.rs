//! Crash consistency of issuing (issue 25): the operator binary is SIGKILLed around the
//! moments it issues database credentials — right after OpenBao's audit log shows an issue
//! answer (with Secret creates served 100 ms late, so mostly between the issue and the
//! Secret's write), or at a random delay after a step — and restarted each time. Afterwards every lease OpenBao holds under the role
//! belongs to a live version, and PostgreSQL has a login for each of those and no other.
//!
//! CI runs seeds 1–4. `SECRETSYNC_CRASH_LEASES_SEEDS=20` runs 1–20;
//! `SECRETSYNC_CRASH_LEASES_SEED=7` replays seed 7 alone. Every seed prints its kill schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use secretsync_api::{SecretSync, labels};
use secretsync_sandbox::Sandbox;
use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::postgres::Postgres;
use serde_json::json;

use crate::common::{DEADLINE, Env, Rng, create_deployment, seeds};
use crate::process::OperatorProcess;
use crate::vault::vault_store;

/// The steps, each with the version active when it is done.
const STEPS: [(&str, i64); 4] = [
    ("first sync", 1),
    ("rotate", 2),
    ("rotate", 3),
    ("revoke", 4),
];

/// How a kill is placed.
#[derive(Debug)]
enum Kill {
    /// Once OpenBao has answered the next issue, after this many ms.
    AfterIssue(u64),
    /// This many ms after the step (or the last restart).
    After(u64),
}

/// Polls OpenBao's audit log until it has answered more than `before` issues at `path`.
async fn issued_more_than(bao: &OpenBao, path: &str, before: usize) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if bao.audited_responses(path) > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

async fn apply(env: &Env, seed: u64, step: usize) {
    let name = format!("db{seed}");
    match step {
        0 => {
            create_deployment(env, &format!("api{seed}"), &format!("{name}-v1")).await;
            env.create::<SecretSync>(&format!(
                "apiVersion: secretsync.io/v1alpha1\nkind: SecretSync\nmetadata: {{name: {name}}}\n\
                 spec:\n  storeRef: {{name: vault}}\n  dataFrom: [{{dynamic: {{path: database/creds/app{seed}}}}}]\n  \
                 rollout: {{targets: [{{kind: Deployment, name: api{seed}}}]}}\n"
            ))
            .await;
        }
        1 | 2 => {
            env.merge_sync(&name, json!({"spec": {"version": step}}))
                .await;
        }
        _ => {
            env.merge_sync(&name, json!({"spec": {"revokedVersions": [3]}}))
                .await;
        }
    }
}

/// The lease ids the versioned Secrets of `db<seed>` hold.
async fn held(env: &Env, seed: u64) -> BTreeSet<String> {
    let mut held = BTreeSet::new();
    for name in env.version_secrets(&format!("db{seed}")).await {
        let annotations = env
            .secret(&name)
            .await
            .and_then(|s: Secret| s.metadata.annotations)
            .unwrap_or_default();
        held.extend(annotations.get(labels::LEASE_ID).cloned());
    }
    held
}

/// Runs the steps for `seed`; returns the kills made and the last operator.
async fn run(
    env: &Env,
    bao: &OpenBao,
    seed: u64,
    mut operator: OperatorProcess,
) -> (usize, OperatorProcess) {
    let mut rng = Rng(seed);
    // The closing quote: app1's answers, not app10's.
    let issues = format!("database/creds/app{seed}\"");
    let mut schedule = Vec::new();
    for (step, (what, active)) in STEPS.iter().enumerate() {
        let before = bao.audited_responses(&issues);
        apply(env, seed, step).await;
        for _ in 0..rng.below(3) {
            let kill = match rng.below(3) {
                0 => Kill::After(rng.below(400)),
                _ => Kill::AfterIssue(rng.below(15)),
            };
            let ms = match kill {
                Kill::AfterIssue(ms) => {
                    if !issued_more_than(bao, &issues, before).await {
                        continue;
                    }
                    ms
                }
                Kill::After(ms) => ms,
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            operator.kill();
            schedule.push(format!("{what}:{kill:?}"));
            operator = OperatorProcess::start(
                &env.sandbox,
                &format!("crash-leases-{seed}-{}", schedule.len()),
                false,
            );
        }
        env.wait_rolled_out(&format!("db{seed}"), &format!("api{seed}"), *active)
            .await;
    }
    println!(
        "crash-leases seed {seed}: {} kills: {}",
        schedule.len(),
        schedule.join(", ")
    );
    (schedule.len(), operator)
}

#[tokio::test]
async fn sigkills_around_issuing_leave_no_lease_without_a_version() {
    let pg = Postgres::start();
    let bao = OpenBao::start().expect("OpenBao (scripts/setup.sh installs it)");
    bao.enable_database(&pg, "database");
    let env = Env::with_sandbox(
        "payments",
        Sandbox::builder().ready_delay(Duration::from_millis(50)),
    )
    .await;
    vault_store(&env, &bao, bao.root_token()).await;
    // Secret writes served 100 ms late: a kill soon after an issue falls before its Secret
    // is written (a request whose client is gone is never served).
    env.sandbox.inject(secretsync_sandbox::faults::Fault {
        verbs: vec!["create".into()],
        resource: Some("secrets".into()),
        effect: secretsync_sandbox::faults::Effect::Delay { ms: 100 },
        ..Default::default()
    });
    let mut operator = OperatorProcess::start(&env.sandbox, "crash-leases-0", false);
    let (mut kills, mut issued) = (0, 0);
    let seeds = seeds("SECRETSYNC_CRASH_LEASES", 4);
    for &seed in &seeds {
        let role = format!("app{seed}");
        bao.database_role(
            "database",
            &role,
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        );
        let (made, last) = run(&env, &bao, seed, operator).await;
        operator = last;
        kills += made;
        issued += bao.audited_responses(&format!("database/creds/{role}\""));
        // Leases left by a process killed before it wrote their Secrets are revoked by the
        // next one; OpenBao and PostgreSQL end up with exactly the versions' logins.
        let prefix = format!("database/creds/{role}/");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let held = held(&env, seed).await;
            let at_openbao: BTreeSet<String> = bao.leases(&prefix).into_iter().collect();
            if at_openbao == held {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "seed {seed} (replay: SECRETSYNC_CRASH_LEASES_SEED={seed}): OpenBao holds \
                 {} leases, the versions {}; last operator's log:\n{}",
                at_openbao.len(),
                held.len(),
                operator.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logins = pg
            .roles()
            .await
            .into_iter()
            .filter(|r| r.contains(&format!("-{role}-")))
            .count();
        assert_eq!(
            logins,
            held(&env, seed).await.len(),
            "seed {seed}: one PostgreSQL login per live version"
        );
    }
    operator.kill();
    // How often a kill fell between an issue and its Secret: the leases revoked as orphans.
    let orphans: usize = env
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("OrphanLeasesRevoked"))
        .filter_map(|e| {
            e.note
                .as_deref()?
                .strip_prefix("revoked ")?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    println!(
        "crash-leases harness: {} seeds, {kills} SIGKILLs, {issued} credentials issued, \
         {orphans} orphaned by a kill and revoked by the next process; every lease at OpenBao \
         held by a live version",
        seeds.len()
    );
}
