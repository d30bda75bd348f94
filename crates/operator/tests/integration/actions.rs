//! The user-actions harness: seeded random sequences of what on-call engineers and their
//! tools do to our Secrets, SecretSyncs and workloads — label and annotation edits, Secret
//! deletes and disowns, `target.name` renames, `rollout undo`, pins, revocations, scaling to
//! zero, delete-and-reapply with `Retain` — interleaved with backend changes and rotations.
//! After every step the operator must settle, and then:
//!
//! - the Deployment references the active Secret, and that Secret exists;
//! - `RolledOut=True` (the operator says it is rolled out) only when it does, once the
//!   operator has seen the last edit of the Deployment;
//! - the Deployment never stepped back: while the operator settles after an action other than
//!   a pin or a `rollout undo`, it never references a version older than the one active
//!   before the action, not even for a moment;
//! - `currentVersion` never decreased, and no version number was used for two Secrets (across
//!   a delete-and-reapply: for two Secrets the old or new object still has);
//! - no Secret the operator owned was lost by `Retain`;
//! - the active Secret holds the backend's value, unless pinned;
//! - a `rollout undo` the operator puts back is said so: a `RolloutReverted` event names what
//!   it found and who set it back.
//!
//! CI runs seeds 1–4. `SECRETSYNC_ACTION_SEEDS=50` runs 1–50; `SECRETSYNC_ACTION_SEED=17`
//! replays seed 17 alone. Every seed prints its steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use secretsync_api::SecretSync;
use serde_json::json;

use crate::common::{DEADLINE, Env, Rng, create_deployment, rollout_undo, secret_data, seeds};

#[derive(Clone, Debug)]
enum Action {
    BackendChange,
    Rotate,
    DeleteActiveSecret,
    Disown(String),
    RemoveLabel(String, &'static str),
    OverwriteVersionLabel(String, i64),
    RaiseSpecVersionAnnotation(String),
    RenameTarget(String),
    RolloutUndo(String),
    Scale(i32),
    Pin(i64),
    Unpin,
    Revoke(i64),
    DeleteAndReapply,
}

/// What the harness knows of the world it drives.
struct World {
    password: u32,
    spec_version: i64,
    base: String,
    pin: Option<i64>,
    revoked: Vec<i64>,
    history_limit: i64,
    replicas: i32,
}

impl World {
    fn manifest(&self) -> String {
        let pin = self
            .pin
            .map(|p| format!("  pinVersion: {p}\n"))
            .unwrap_or_default();
        format!(
            r#"
apiVersion: secretsync.io/v1alpha1
kind: SecretSync
metadata: {{name: db}}
spec:
  storeRef: {{name: fake}}
  version: {spec_version}
  refreshInterval: 1s
  data: [{{secretKey: password, remoteRef: {{key: app/db, property: password}}}}]
  target: {{name: {base}}}
  history: {{limit: {limit}}}
  deletionPolicy: Retain
  revokedVersions: {revoked:?}
  rollout: {{targets: [{{kind: Deployment, name: app}}]}}
{pin}"#,
            spec_version = self.spec_version,
            base = self.base,
            limit = self.history_limit,
            revoked = self.revoked,
        )
    }
}

/// What the harness saw of the operator's versions, across steps.
#[derive(Default)]
struct Seen {
    highest_current: i64,
    /// No template may reference a version below this while the operator settles (the
    /// active version before an action that must not move workloads back).
    floor: Option<i64>,
    /// version number → the UIDs of the Secrets that carried it.
    uids: BTreeMap<i64, BTreeSet<String>>,
}

async fn set_password(env: &Env, n: u32) {
    env.set_fake_data(
        "fake",
        &[(
            "app/db",
            &format!(r#"{{"password":"p{n}"}}"#),
            &n.to_string(),
        )],
    )
    .await;
}

/// The Secrets named like versions (`<base>-v<N>`) with their number, owned or not.
async fn versioned_secrets(env: &Env) -> Vec<(i64, Secret)> {
    let list = env
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|s| {
            let n = s.name_any().rsplit_once("-v")?.1.parse().ok()?;
            Some((n, s))
        })
        .collect()
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

async fn template_refs(env: &Env) -> Vec<String> {
    let d = env.api::<Deployment>().get("app").await.unwrap();
    let spec = d.spec.unwrap().template.spec.unwrap();
    spec.containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| Some(e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone()))
        .collect()
}

/// Picks the next action from what is possible now.
async fn choose(env: &Env, rng: &mut Rng, world: &World) -> Action {
    let sync = env.api::<SecretSync>().get("db").await.unwrap();
    let uid = sync.uid().unwrap();
    let status = sync.status.unwrap_or_default();
    let secrets = versioned_secrets(env).await;
    let ours: Vec<(i64, String)> = secrets
        .iter()
        .filter(|(_, s)| owned_by(s, &uid))
        .map(|(n, s)| (*n, s.name_any()))
        .collect();
    let live: Vec<i64> = ours
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !world.revoked.contains(n))
        .collect();
    let active = status.active_version;
    loop {
        let action = match rng.below(14) {
            0 | 1 => Action::BackendChange,
            2 => Action::Rotate,
            3 if world.pin.is_none() => Action::DeleteActiveSecret,
            4 => match rng.pick(&ours) {
                Some((_, name)) => Action::Disown(name.clone()),
                None => continue,
            },
            5 => match rng.pick(&ours) {
                Some((_, name)) => Action::RemoveLabel(
                    name.clone(),
                    rng.pick(&[
                        "secretsync.io/sync",
                        "app.kubernetes.io/managed-by",
                        "secretsync.io/version",
                    ])
                    .unwrap(),
                ),
                None => continue,
            },
            6 => match rng.pick(&ours) {
                Some((_, name)) => {
                    Action::OverwriteVersionLabel(name.clone(), 50 + rng.below(50) as i64)
                }
                None => continue,
            },
            7 => match rng.pick(&ours) {
                Some((_, name)) => Action::RaiseSpecVersionAnnotation(name.clone()),
                None => continue,
            },
            8 => Action::RenameTarget(format!("{}x", world.base)),
            9 => match rng.pick(
                &ours
                    .iter()
                    .filter(|(n, _)| Some(*n) != active)
                    .collect::<Vec<_>>(),
            ) {
                Some((_, name)) => Action::RolloutUndo(name.clone()),
                None => continue,
            },
            10 => Action::Scale(if world.replicas == 0 { 2 } else { 0 }),
            11 if world.pin.is_some() => Action::Unpin,
            11 => match rng.pick(&live) {
                Some(&v) => Action::Pin(v),
                None => continue,
            },
            12 => match rng.pick(
                &live
                    .iter()
                    .filter(|&&v| Some(v) != world.pin)
                    .copied()
                    .collect::<Vec<_>>(),
            ) {
                Some(&v) => Action::Revoke(v),
                None => continue,
            },
            13 => Action::DeleteAndReapply,
            _ => continue,
        };
        return action;
    }
}

async fn patch_secret(env: &Env, name: &str, patch: Patch<serde_json::Value>) {
    // The Secret may be gone already (pruned meanwhile): that is the operator's right.
    let _ = env
        .api::<Secret>()
        .patch(name, &PatchParams::default(), &patch)
        .await;
}

async fn act(env: &Env, world: &mut World, seen: &mut Seen, action: &Action) {
    match action {
        Action::BackendChange => {
            world.password += 1;
            set_password(env, world.password).await;
        }
        Action::Rotate => {
            world.spec_version += 1;
            env.merge_sync("db", json!({"spec": {"version": world.spec_version}}))
                .await;
        }
        Action::DeleteActiveSecret => {
            let status = env.status("db").await;
            if let Some(name) = status.active_secret_name {
                let _ = env
                    .api::<Secret>()
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        }
        Action::Disown(name) => {
            patch_secret(
                env,
                name,
                Patch::Json(
                    serde_json::from_value(
                        json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
                    )
                    .unwrap(),
                ),
            )
            .await;
        }
        Action::RemoveLabel(name, key) => {
            patch_secret(
                env,
                name,
                Patch::Merge(json!({"metadata": {"labels": {*key: null}}})),
            )
            .await;
        }
        Action::OverwriteVersionLabel(name, n) => {
            patch_secret(
                env,
                name,
                Patch::Merge(
                    json!({"metadata": {"labels": {"secretsync.io/version": n.to_string()}}}),
                ),
            )
            .await;
        }
        Action::RaiseSpecVersionAnnotation(name) => {
            patch_secret(
                env,
                name,
                Patch::Merge(
                    json!({"metadata": {"annotations": {"secretsync.io/spec-version": "99"}}}),
                ),
            )
            .await;
        }
        Action::RenameTarget(base) => {
            world.base = base.clone();
            env.merge_sync("db", json!({"spec": {"target": {"name": base}}}))
                .await;
        }
        Action::RolloutUndo(name) => rollout_undo(env, "app", name).await,
        Action::Scale(n) => {
            world.replicas = *n;
            env.api::<Deployment>()
                .patch(
                    "app",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
                .unwrap();
        }
        Action::Pin(v) => {
            world.pin = Some(*v);
            env.merge_sync("db", json!({"spec": {"pinVersion": v}}))
                .await;
        }
        Action::Unpin => {
            world.pin = None;
            env.merge_sync("db", json!({"spec": {"pinVersion": null}}))
                .await;
        }
        Action::Revoke(v) => {
            world.revoked.push(*v);
            env.merge_sync("db", json!({"spec": {"revokedVersions": world.revoked}}))
                .await;
        }
        Action::DeleteAndReapply => {
            let uid = env
                .api::<SecretSync>()
                .get("db")
                .await
                .unwrap()
                .uid()
                .unwrap();
            let owned_before: BTreeSet<String> = versioned_secrets(env)
                .await
                .into_iter()
                .filter(|(_, s)| owned_by(s, &uid))
                .map(|(_, s)| s.name_any())
                .collect();
            env.api::<SecretSync>()
                .delete("db", &DeleteParams::default())
                .await
                .unwrap();
            env.wait_for_absent::<SecretSync>("db").await;
            // Retain: every Secret the operator owned is still there.
            let names: BTreeSet<String> = versioned_secrets(env)
                .await
                .into_iter()
                .map(|(_, s)| s.name_any())
                .collect();
            let lost: Vec<&String> = owned_before.difference(&names).collect();
            assert!(lost.is_empty(), "Retain lost {lost:?}");
            // A new object: what the old one made and deleted is history it does not have
            // (numbering continues after the Secrets that exist); the rest stays checked.
            let existing: BTreeMap<i64, String> = versioned_secrets(env)
                .await
                .into_iter()
                .map(|(n, s)| (n, s.uid().unwrap()))
                .collect();
            seen.uids
                .retain(|n, uids| existing.get(n).is_some_and(|uid| uids.contains(uid)));
            // Its versions start from what it adopts: the retained ones.
            seen.highest_current = owned_before
                .iter()
                .filter_map(|n| n.rsplit_once("-v")?.1.parse().ok())
                .max()
                .unwrap_or(0);
            // The manifest from Git: the incident's pin is not in it (a pin of a version the
            // new object does not own is refused, `PinnedVersionUnavailable`).
            world.pin = None;
            env.create::<SecretSync>(&world.manifest()).await;
        }
    }
}

/// Each `RolloutReverted` event's uid with how often it was seen (the recorder folds repeats
/// of one event into its series).
async fn reverted_events(env: &Env) -> BTreeMap<String, (i32, String)> {
    env.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutReverted"))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (e.uid().unwrap(), (count, e.note.unwrap_or_default()))
        })
        .collect()
}

/// Waits for a `RolloutReverted` event naming `found` and who set it back (the undo's field
/// manager, `kubectl-rollout`), new since `before`.
async fn wait_reverted_said(env: &Env, before: &BTreeMap<String, (i32, String)>, found: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let said = format!("Deployment app was set back to {found} by kubectl-rollout;");
    loop {
        let now = reverted_events(env).await;
        let new = now.iter().any(|(uid, (count, note))| {
            note.contains(&said) && before.get(uid).is_none_or(|(was, _)| count > was)
        });
        if new {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator put back a `rollout undo` to {found} without a RolloutReverted event; have {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the operator has settled on the current spec, then checks the invariants.
async fn settle_and_check(env: &Env, world: &World, seen: &mut Seen) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let problem = check(env, world, seen).await;
        let Some(problem) = problem else { return };
        if tokio::time::Instant::now() > deadline {
            panic!("did not settle: {problem}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `None` once settled and every invariant holds; else what is not (yet) right. Invariants
/// that must hold at every instant (never a step back, no number reused) panic at once.
async fn check(env: &Env, world: &World, seen: &mut Seen) -> Option<String> {
    if let Some(floor) = seen.floor {
        for name in &template_refs(env).await {
            let n: Option<i64> = name.rsplit_once("-v").and_then(|(_, n)| n.parse().ok());
            assert!(
                n.is_none_or(|n| n >= floor),
                "the Deployment stepped back to {name} from version {floor}"
            );
        }
    }
    let sync = env.api::<SecretSync>().get("db").await.unwrap();
    let status = sync.status.clone().unwrap_or_default();
    let secrets = versioned_secrets(env).await;
    for (n, s) in &secrets {
        let uids = seen.uids.entry(*n).or_default();
        uids.insert(s.uid().unwrap());
        assert!(
            uids.len() == 1,
            "version number {n} used for two Secrets: {uids:?}"
        );
    }
    // A SecretSync just re-created has no status yet.
    let Some(current) = status.current_version else {
        return Some("no status yet".into());
    };
    assert!(
        current >= seen.highest_current,
        "currentVersion went back from {} to {current}",
        seen.highest_current
    );
    seen.highest_current = current;

    // The Deployment and the status are read at two instants: compared only when the
    // status did not change in between.
    let refs = template_refs(env).await;
    let again = env.api::<SecretSync>().get("db").await.unwrap();
    if again.resource_version() != sync.resource_version() {
        return Some("the status changed while reading".into());
    }
    if status.observed_generation != sync.metadata.generation {
        return Some(format!(
            "observedGeneration {:?}",
            status.observed_generation
        ));
    }
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let ready = condition("Ready")?;
    if ready.status != "True" {
        return Some(format!("Ready=False {}: {}", ready.reason, ready.message));
    }
    let active = status.active_secret_name.clone()?;
    let rolled_out = condition("RolledOut").is_some_and(|c| c.status == "True");
    if rolled_out && refs != [active.clone()] {
        // The status is a snapshot: a user's edit of the Deployment (`rollout undo`) reaches
        // the operator one watch event later. Settled means it has caught up; one that never
        // does fails at the deadline with this message.
        return Some(format!(
            "RolledOut=True but the Deployment references {refs:?}, not {active}"
        ));
    }
    if !rolled_out {
        return Some(format!("RolledOut not True; template {refs:?}"));
    }
    let Some((_, secret)) = secrets.iter().find(|(_, s)| s.name_any() == active) else {
        return Some(format!("active {active} does not exist"));
    };
    if world.pin.is_none() {
        let password = secret_data(secret)["password"].clone();
        let want = format!("p{}", world.password);
        if password != want.as_bytes() {
            return Some(format!(
                "{active} holds an older value than the backend's {want}"
            ));
        }
    }
    None
}

async fn run(seed: u64) {
    let env = Env::start("payments").await;
    let mut rng = Rng(seed);
    let mut world = World {
        password: 1,
        spec_version: 0,
        base: "db".into(),
        pin: None,
        revoked: Vec::new(),
        history_limit: 1 + rng.below(3) as i64,
        replicas: 2,
    };
    env.fake_store("fake", &[]).await;
    set_password(&env, 1).await;
    create_deployment(&env, "app", "db-v1").await;
    env.create::<SecretSync>(&world.manifest()).await;
    let mut seen = Seen::default();
    settle_and_check(&env, &world, &mut seen).await;
    let steps = 10;
    for step in 0..steps {
        let action = choose(&env, &mut rng, &world).await;
        println!("seed {seed} step {step}: {action:?}");
        let reverted_before = reverted_events(&env).await;
        // Pins and `rollout undo` move workloads back on purpose; nothing else may.
        seen.floor = match action {
            Action::Pin(_) | Action::RolloutUndo(_) => None,
            _ if world.pin.is_some() => None,
            _ => env.status("db").await.active_version,
        };
        act(&env, &mut world, &mut seen, &action).await;
        let settled = tokio::time::timeout(
            DEADLINE + Duration::from_secs(5),
            settle_and_check(&env, &world, &mut seen),
        )
        .await;
        assert!(
            settled.is_ok(),
            "seed {seed} step {step} ({action:?}): timed out"
        );
        if let Action::RolloutUndo(found) = &action {
            wait_reverted_said(&env, &reverted_before, found).await;
        }
    }
}

#[tokio::test]
async fn random_user_actions_never_cause_an_outage_a_step_back_or_a_loss() {
    for seed in seeds("SECRETSYNC_ACTION", 4) {
        let outcome = tokio::spawn(run(seed)).await;
        if let Err(panic) = outcome {
            panic!("seed {seed} failed (replay: SECRETSYNC_ACTION_SEED={seed}): {panic}");
        }
    }
}
