//! The write verbs. Each is a pure plan (object in, patch and message out) run by [`edit`],
//! which reads the object, plans, and writes conditioned on the resourceVersion it read,
//! re-reading and re-planning when someone else wrote in between.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use secretsync_api::labels::REASON;
use secretsync_api::naming::versioned_name;
use secretsync_api::{RevokePolicy, SecretSync, VersionState, VersionStatus, labels};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How many times a write is retried after a conflicting concurrent edit.
pub const MAX_ATTEMPTS: u32 = 8;

/// The SecretSyncs of one namespace.
#[derive(Clone)]
pub struct Syncs {
    pub api: Api<SecretSync>,
    pub namespace: String,
}

impl Syncs {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    pub async fn get(&self, name: &str) -> Result<SecretSync> {
        self.api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            })
    }
}

/// The write a plan asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Nothing to write; the message says why.
    Noop,
    /// A JSON merge patch of `spec`.
    MergeSpec(Value),
    /// A JSON merge patch of the whole object (`metadata` and `spec`).
    Merge(Value),
    /// JSON patch operations.
    Json(Vec<Value>),
}

/// What `--wait` waits for once the operator has observed the write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitFor {
    /// `status.observedGeneration` must reach this (the generation the write produced).
    pub generation: i64,
    /// `status.currentVersion` must reach this.
    pub min_current: Option<i64>,
    pub active: ActiveIs,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActiveIs {
    #[default]
    Any,
    Exactly(i64),
    Not(i64),
    /// `activeVersion == currentVersion` (not pinned any more).
    Newest,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub change: Change,
    /// What will happen, for the user (one or more lines).
    pub message: String,
    pub wait: WaitFor,
}

/// The result of a verb.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub message: String,
    /// The object as the write returned it (as read, for a no-op).
    pub object: SecretSync,
    pub changed: bool,
    /// `wait.generation` is filled in from the written object.
    pub wait: WaitFor,
    /// Writes attempted (more than one after conflicts).
    pub attempts: u32,
}

/// Reads `name`, plans, and writes conditioned on the resourceVersion read; on a conflict
/// (409, or a failed JSON-patch `test`), reads again and re-plans. A spec change also sets
/// the `secretsync.io/reason` annotation to `reason`, or removes it, so that a reason is
/// never quoted for a later change it was not given for.
pub async fn edit<F>(
    syncs: &Syncs,
    verb: &'static str,
    name: &str,
    reason: Option<&str>,
    mut plan: F,
) -> Result<Outcome>
where
    F: FnMut(&SecretSync) -> Result<Plan>,
{
    for attempt in 1..=MAX_ATTEMPTS {
        let current = syncs.get(name).await?;
        let planned = plan(&current)?;
        let rv = current.resource_version().unwrap_or_default();
        let patch = match &planned.change {
            Change::Noop => {
                let mut wait = planned.wait;
                wait.generation = current.metadata.generation.unwrap_or(0);
                return Ok(Outcome {
                    message: planned.message,
                    object: current,
                    changed: false,
                    wait,
                    attempts: attempt,
                });
            }
            Change::MergeSpec(spec) => Patch::Merge(json!({
                "metadata": {"resourceVersion": rv, "annotations": {REASON: reason}},
                "spec": spec,
            })),
            Change::Merge(object) => {
                let mut object = object.clone();
                object["metadata"]["resourceVersion"] = json!(rv);
                object["metadata"]["annotations"][REASON] = json!(reason);
                Patch::Merge(object)
            }
            Change::Json(ops) => {
                let mut all =
                    vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
                all.extend(ops.iter().cloned());
                let ops: json_patch::Patch = serde_json::from_value(Value::Array(all))
                    .expect("the plans build well-formed JSON patch operations");
                Patch::Json(ops)
            }
        };
        match syncs.api.patch(name, &PatchParams::default(), &patch).await {
            Ok(written) => {
                let mut wait = planned.wait;
                wait.generation = written.metadata.generation.unwrap_or(0);
                return Ok(Outcome {
                    message: planned.message,
                    object: written,
                    changed: true,
                    wait,
                    attempts: attempt,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            // kube-apiserver answers a failed JSON-patch `test` with 422; it was a lost race
            // if the object changed since it was read.
            Err(kube::Error::Api(s))
                if s.code == 422
                    && matches!(patch, Patch::Json(_))
                    && syncs.get(name).await?.resource_version().as_deref()
                        != Some(rv.as_str()) =>
            {
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Error::NotFound {
                    name: name.to_owned(),
                    namespace: syncs.namespace.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        verb,
        name: name.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// `now`: the version this rotation makes rolls out even outside the rollout windows.
pub async fn rotate(syncs: &Syncs, name: &str, now: bool, reason: Option<&str>) -> Result<Outcome> {
    edit(syncs, "rotate", name, reason, |s| plan_rotate(s, now)).await
}

pub async fn revoke(
    syncs: &Syncs,
    name: &str,
    version: i64,
    immediate: bool,
    force: bool,
    reason: Option<&str>,
) -> Result<Outcome> {
    let ns = syncs.namespace.clone();
    edit(syncs, "revoke", name, reason, |s| {
        plan_revoke(s, &ns, version, immediate, force)
    })
    .await
}

pub async fn rollback(
    syncs: &Syncs,
    name: &str,
    to: Option<i64>,
    reason: Option<&str>,
) -> Result<Outcome> {
    let ns = syncs.namespace.clone();
    edit(syncs, "rollback", name, reason, |s| {
        plan_rollback(s, &ns, to)
    })
    .await
}

pub async fn unpin(syncs: &Syncs, name: &str) -> Result<Outcome> {
    edit(syncs, "unpin", name, None, plan_unpin).await
}

fn versions(sync: &SecretSync) -> &[VersionStatus] {
    sync.status
        .as_ref()
        .map(|s| s.versions.as_slice())
        .unwrap_or_default()
}

/// The Secret name of version `v`: from the status, else `<target.name>-v<N>`.
pub fn secret_name(sync: &SecretSync, v: i64) -> String {
    if let Some(known) = versions(sync).iter().find(|s| s.version == v) {
        return known.secret_name.clone();
    }
    let name = sync.name_any();
    let base = sync.spec.target_name(&name);
    versioned_name(base, v).unwrap_or_else(|_| format!("{base}-v{v}"))
}

/// The number the operator gives the next version: numbers are never reused, so one above
/// every number in the status, tombstones included.
pub fn next_version(sync: &SecretSync) -> i64 {
    let status = sync.status.as_ref();
    let highest = versions(sync)
        .iter()
        .map(|v| v.version)
        .chain(status.and_then(|s| s.current_version))
        .max()
        .unwrap_or(0);
    highest + 1
}

fn current_version(sync: &SecretSync) -> Option<i64> {
    sync.status.as_ref().and_then(|s| s.current_version)
}

fn active_version(sync: &SecretSync) -> Option<i64> {
    sync.status.as_ref().and_then(|s| s.active_version)
}

fn known_list(sync: &SecretSync) -> String {
    let list: Vec<String> = versions(sync)
        .iter()
        .map(|v| format!("{} ({:?})", v.version, v.state))
        .collect();
    if list.is_empty() {
        "none yet".into()
    } else {
        list.join(", ")
    }
}

/// Versions a rollback may pick: existing and not revoked.
fn usable(sync: &SecretSync) -> Vec<i64> {
    versions(sync)
        .iter()
        .filter(|v| matches!(v.state, VersionState::Active | VersionState::Retained))
        .filter(|v| !sync.spec.is_revoked(v.version))
        .map(|v| v.version)
        .collect()
}

pub fn plan_rotate(sync: &SecretSync, now: bool) -> Result<Plan> {
    let name = sync.name_any();
    let from = sync.spec.version;
    let to = sync.spec.spec_version() + 1;
    let next = next_version(sync);
    let from_text = from.map_or_else(|| "unset".to_owned(), |v| v.to_string());
    let mut message = format!(
        "rotating {name}: spec.version {from_text} → {to}; expect {}",
        secret_name(sync, next)
    );
    let active = match sync.spec.pin_version {
        Some(pin) => {
            message.push_str(&format!(
                "\nnote: {name} is pinned to version {pin}; targets stay on {} until \
                 `kubectl secretsync unpin {name}`",
                secret_name(sync, pin)
            ));
            ActiveIs::Exactly(pin)
        }
        None => ActiveIs::Newest,
    };
    let windows = sync
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.windows.as_ref())
        .is_some_and(|w| !w.is_empty());
    let change = if now {
        if windows {
            message.push_str(&format!(
                "\n--now: {} rolls out without waiting for a rollout window",
                secret_name(sync, next)
            ));
        }
        // The annotation names the spec.version of this rotation, so the operator honours it
        // for this rotation only.
        Change::Merge(json!({
            "metadata": {"annotations": {labels::ROLLOUT_NOW: to.to_string()}},
            "spec": {"version": to},
        }))
    } else {
        if windows {
            message.push_str(&format!(
                "\nnote: targets move to {} in the next rollout window (--now: at once)",
                secret_name(sync, next)
            ));
        }
        Change::MergeSpec(json!({"version": to}))
    };
    Ok(Plan {
        change,
        message,
        wait: WaitFor {
            generation: 0,
            min_current: Some(next),
            active,
        },
    })
}

pub fn plan_revoke(
    sync: &SecretSync,
    namespace: &str,
    version: i64,
    immediate: bool,
    force: bool,
) -> Result<Plan> {
    let name = sync.name_any();
    let spec = &sync.spec;
    let secret = secret_name(sync, version);
    let known = versions(sync).iter().find(|v| v.version == version);
    let policy_change = immediate && spec.revoke_policy() != RevokePolicy::Immediate;
    let status_hint =
        format!("`kubectl secretsync status {name} -n {namespace}` lists its versions");

    if spec.is_revoked(version) {
        let state = known.map_or_else(String::new, |v| format!(" (state {:?})", v.state));
        if policy_change {
            return Ok(Plan {
                change: Change::MergeSpec(json!({"revokePolicy": "Immediate"})),
                message: format!(
                    "version {version} of {name} is already revoked{state}; revokePolicy → \
                     Immediate: {secret} is deleted at once"
                ),
                wait: WaitFor {
                    active: ActiveIs::Not(version),
                    ..Default::default()
                },
            });
        }
        return Ok(Plan {
            change: Change::Noop,
            message: format!(
                "version {version} of {name} is already revoked{state}; nothing to do"
            ),
            wait: WaitFor {
                active: ActiveIs::Not(version),
                ..Default::default()
            },
        });
    }
    if known.is_none() && !force {
        return Err(Error::Refused {
            message: format!(
                "{name} has no version {version}: it was never made (known versions: {})",
                known_list(sync)
            ),
            hint: format!(
                "check the number with {status_hint}; if the status was lost and you are sure \
                 version {version} exists, add --force"
            ),
        });
    }
    if spec.pin_version == Some(version) {
        return Err(Error::Refused {
            message: format!(
                "{name} is pinned to version {version}; a revoked version can never be active, \
                 so it cannot be revoked while pinned"
            ),
            hint: format!(
                "move off it first: `kubectl secretsync rollback {name} --to N -n {namespace}` \
                 (another version) or `kubectl secretsync unpin {name} -n {namespace}`, then revoke"
            ),
        });
    }

    let mut revoked = spec.revoked().to_vec();
    revoked.push(version);
    revoked.sort_unstable();
    revoked.dedup();
    let mut patch = json!({"revokedVersions": revoked});
    if policy_change {
        patch["revokePolicy"] = json!("Immediate");
    }
    let policy = if immediate {
        RevokePolicy::Immediate
    } else {
        spec.revoke_policy()
    };

    let state = known.map_or_else(|| "not in status".to_owned(), |v| format!("{:?}", v.state));
    let mut lines = vec![format!(
        "revoking version {version} of {name} ({secret}, {state}):"
    )];
    let current = current_version(sync);
    let newest = current.is_none_or(|c| version >= c);
    let next = next_version(sync);
    let active = active_version(sync);
    if newest {
        lines.push(format!(
            "  - it is the newest version: the operator first makes a new version, {}",
            secret_name(sync, next)
        ));
    }
    if active == Some(version) {
        let to = if newest {
            secret_name(sync, next)
        } else {
            current.map_or_else(|| "the newest version".into(), |c| secret_name(sync, c))
        };
        lines.push(format!(
            "  - it is active: rollout targets move off it to {to}"
        ));
    }
    match (known.map(|v| v.state), policy) {
        (Some(VersionState::Deleted), _) => lines.push(format!(
            "  - {secret} is already deleted; revoking makes sure it never comes back"
        )),
        (_, RevokePolicy::Immediate) => lines.push(format!(
            "  - revokePolicy Immediate: {secret} is deleted at once, even if pods still use it"
        )),
        (_, RevokePolicy::AfterRollout) => lines.push(format!(
            "  - revokePolicy AfterRollout: {secret} is deleted once the rollout off it is \
             Complete (or Failed by timeout); add --immediate to delete it now"
        )),
    }
    lines.push("  - leases of dynamic credentials are revoked at the backend too".into());
    Ok(Plan {
        change: Change::MergeSpec(patch),
        message: lines.join("\n"),
        wait: WaitFor {
            generation: 0,
            min_current: newest.then_some(next),
            active: ActiveIs::Not(version),
        },
    })
}

pub fn plan_rollback(sync: &SecretSync, namespace: &str, to: Option<i64>) -> Result<Plan> {
    let name = sync.name_any();
    let spec = &sync.spec;
    let active = active_version(sync);
    let usable = usable(sync);
    let status_hint =
        format!("`kubectl secretsync status {name} -n {namespace}` lists its versions");
    let choices = if usable.is_empty() {
        "none".to_owned()
    } else {
        usable
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target = match to {
        Some(v) => v,
        None => {
            // The newest retained version below the active one.
            let below = active.or_else(|| current_version(sync)).unwrap_or(i64::MAX);
            let candidate = versions(sync)
                .iter()
                .filter(|v| v.version < below && v.state == VersionState::Retained)
                .find(|v| !spec.is_revoked(v.version))
                .map(|v| v.version);
            match candidate {
                Some(v) => v,
                None => {
                    return Err(Error::Refused {
                        message: format!(
                            "{name} has no retained version older than the active one ({}) to \
                             roll back to",
                            active.map_or_else(|| "none".into(), |a| secret_name(sync, a))
                        ),
                        hint: format!(
                            "{status_hint}; versions that can be pinned: {choices}; pick one \
                             with --to N"
                        ),
                    });
                }
            }
        }
    };
    let known = versions(sync).iter().find(|v| v.version == target);
    let refuse = |why: String| Error::Refused {
        message: format!("cannot roll {name} back to version {target}: {why}"),
        hint: format!("versions that can be pinned: {choices}; {status_hint}"),
    };
    if spec.is_revoked(target) || known.is_some_and(|v| v.state == VersionState::Revoked) {
        return Err(refuse(
            "it is revoked, and a revoked version can never become active again".into(),
        ));
    }
    match known {
        None => {
            return Err(refuse(format!(
                "{name} has no such version (known versions: {})",
                known_list(sync)
            )));
        }
        Some(v) if v.state == VersionState::Deleted => {
            return Err(refuse(format!(
                "its Secret {} was deleted (beyond history.limit)",
                v.secret_name
            )));
        }
        Some(_) => {}
    }
    let secret = secret_name(sync, target);
    let wait = WaitFor {
        generation: 0,
        min_current: None,
        active: ActiveIs::Exactly(target),
    };
    if spec.pin_version == Some(target) {
        return Ok(Plan {
            change: Change::Noop,
            message: format!(
                "{name} is already pinned to version {target} ({secret}); nothing to do"
            ),
            wait,
        });
    }
    let from = active.map_or_else(|| "-".into(), |a| secret_name(sync, a));
    Ok(Plan {
        change: Change::MergeSpec(json!({"pinVersion": target})),
        message: format!(
            "rolling back {name}: pinVersion → {target}; rollout targets move from {from} to \
             {secret}\nnew versions are still made while pinned; `kubectl secretsync unpin \
             {name} -n {namespace}` rolls forward"
        ),
        wait,
    })
}

pub fn plan_unpin(sync: &SecretSync) -> Result<Plan> {
    let name = sync.name_any();
    let Some(pin) = sync.spec.pin_version else {
        return Ok(Plan {
            change: Change::Noop,
            message: format!("{name} is not pinned; nothing to do"),
            wait: WaitFor {
                active: ActiveIs::Newest,
                ..Default::default()
            },
        });
    };
    let newest =
        current_version(sync).map_or_else(|| "the newest version".into(), |c| secret_name(sync, c));
    Ok(Plan {
        change: Change::Json(vec![
            json!({"op": "test", "path": "/spec/pinVersion", "value": pin}),
            json!({"op": "remove", "path": "/spec/pinVersion"}),
        ]),
        message: format!(
            "unpinning {name}: pinVersion {pin} removed; rollout targets move from {} to {newest}",
            secret_name(sync, pin)
        ),
        wait: WaitFor {
            generation: 0,
            min_current: None,
            active: ActiveIs::Newest,
        },
    })
}
