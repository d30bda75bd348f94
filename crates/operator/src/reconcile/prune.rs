//! Letting go of versions: history beyond the limit and revoked ones (guarantees 4 and 5).

use super::*;

#[derive(Default)]
pub(super) struct Pruned {
    pub(super) events: Vec<Event>,
    pub(super) requeue: Option<Duration>,
}

/// Deletes versions nobody needs: beyond `history.limit` (oldest first) once the rollout is
/// Complete and nothing in the namespace references them; revoked ones at once
/// (`Immediate`) or once the rollout ended (`AfterRollout`), warning about what still uses
/// them.
pub(super) async fn prune(
    sync: &SecretSync,
    ctx: &Context,
    base: &str,
    existing: &mut BTreeMap<i64, VersionMeta>,
    active: Option<i64>,
    rollout: &RolloutState,
) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    let spec = &sync.spec;
    let rollout_complete = matches!(rollout, RolloutState::Complete(_) | RolloutState::NoTargets);
    let rollout_ended = rollout_complete || matches!(rollout, RolloutState::Failed(_));

    // Kept: the active version and the newest non-revoked ones, `history.limit` in all.
    let limit = spec.history_limit() as usize;
    let mut kept: BTreeSet<i64> = active.into_iter().collect();
    for v in existing.keys().rev().filter(|v| !spec.is_revoked(**v)) {
        if kept.len() >= limit {
            break;
        }
        kept.insert(*v);
    }
    let revoked: Vec<i64> = existing
        .keys()
        .copied()
        .filter(|v| spec.is_revoked(*v) && Some(*v) != active)
        .collect();
    let surplus: Vec<i64> = existing
        .keys()
        .copied()
        .filter(|v| !kept.contains(v) && !spec.is_revoked(*v))
        .collect();
    let revoke_now = match spec.revoke_policy() {
        RevokePolicy::Immediate => revoked.clone(),
        RevokePolicy::AfterRollout if rollout_ended => revoked.clone(),
        RevokePolicy::AfterRollout => Vec::new(),
    };
    if revoke_now.is_empty() && (surplus.is_empty() || !rollout_complete) {
        return Ok(pruned);
    }

    let namespace = sync.namespace().unwrap_or_default();
    let used = references(&ctx.client, &ctx.workloads, &namespace, base).await?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    for v in revoke_now {
        let meta = existing[&v].clone();
        if let Some(users) = used.get(&v) {
            pruned.events.push(Event {
                type_: EventType::Warning,
                reason: event::REVOKED_STILL_REFERENCED.into(),
                note: Some(crate::status::truncate(
                    format!("revoked {} is still referenced by {}; those Pods will fail to start until they move off it", meta.secret_name, users.join(", ")),
                    1024,
                )),
                action: "Revoke".into(),
                secondary: Some(secret_ref(sync, &meta.secret_name)),
            });
        }
        delete_version(&api, ctx, &namespace, &meta).await?;
        info!(secret = %meta.secret_name, "revoked version deleted");
        pruned.events.push(Event {
            type_: EventType::Normal,
            reason: event::VERSION_REVOKED.into(),
            note: Some(format!("deleted revoked {}", meta.secret_name)),
            action: "Revoke".into(),
            secondary: Some(secret_ref(sync, &meta.secret_name)),
        });
        existing.remove(&v);
    }
    if rollout_complete {
        for v in surplus {
            if used.contains_key(&v) {
                // A Pod or template still needs it. Nothing wakes us when a Pod goes away
                // (Pods are not watched, to keep memory flat), so look again soon.
                pruned.requeue = Some(Duration::from_secs(10));
                continue;
            }
            let meta = existing[&v].clone();
            delete_version(&api, ctx, &namespace, &meta).await?;
            info!(secret = %meta.secret_name, "old version deleted");
            pruned.events.push(Event {
                type_: EventType::Normal,
                reason: event::VERSION_DELETED.into(),
                note: Some(format!(
                    "deleted {} (beyond history.limit {limit})",
                    meta.secret_name
                )),
                action: "Prune".into(),
                secondary: Some(secret_ref(sync, &meta.secret_name)),
            });
            existing.remove(&v);
        }
    }
    Ok(pruned)
}

async fn delete_version(
    api: &Api<Secret>,
    ctx: &Context,
    namespace: &str,
    meta: &VersionMeta,
) -> Result<()> {
    match with_timeout(ctx, api.delete(&meta.secret_name, &DeleteParams::default())).await? {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    // Forget it now: the watch may lag, and the next pass must not see it as present.
    ctx.index.forget(namespace, &meta.secret_name);
    Ok(())
}
