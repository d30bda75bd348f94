//! Writing and removing versioned Secrets (guarantees 1 and 9).

use super::*;

/// Creates `<base>-v<next>`, moving past numbers already taken. A name taken by this
/// SecretSync with the same content is a version made just before a crash: it is adopted.
pub(super) async fn create_version(
    sync: &SecretSync,
    ctx: &Context,
    base: &str,
    mut next: i64,
    content: &Content,
) -> Result<VersionMeta> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    loop {
        let name =
            versioned_name(base, next).map_err(|e| Error::InvalidSpec(vec![e.to_string()]))?;
        let secret = version_secret(sync, &name, next, content);
        match with_timeout(ctx, api.create(&params, &secret)).await? {
            Ok(created) => {
                ctx.metrics.version_created();
                ctx.written.record(&uid, next);
                // The response carries the data; keep only the metadata.
                let meta = created.metadata.into_request_partial::<Secret>();
                ctx.index.apply(&meta);
                return VersionMeta::from_secret(&meta.metadata)
                    .map(|(_, m)| m)
                    .ok_or_else(|| {
                        Error::InvalidSpec(vec!["created Secret lost its labels".into()])
                    });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let taken = api.get_metadata_opt(&name).await?;
                let owner = taken
                    .as_ref()
                    .and_then(|m| VersionMeta::from_secret(&m.metadata));
                match owner {
                    Some((owner_uid, meta)) if owner_uid == uid => {
                        ctx.written.record(&uid, next);
                        if let Some(m) = &taken {
                            ctx.index.apply(m);
                        }
                        if meta.content_hash.as_deref() == Some(content.hash.as_str())
                            && meta.spec_version == sync.spec.spec_version()
                        {
                            return Ok(meta);
                        }
                        next += 1;
                    }
                    _ if taken.is_none() => continue, // deleted meanwhile: try the name again
                    _ => {
                        return Err(Error::TargetConflict(format!(
                            "Secret {namespace}/{name} already exists and is not owned by this SecretSync; \
                             delete it or choose another spec.target.name"
                        )));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletion: `Delete` removes every versioned Secret; `Retain` drops our ownerReferences
/// so the garbage collector leaves them.
pub(super) async fn cleanup(sync: Arc<SecretSync>, ctx: &Context) -> Result<Action> {
    let namespace = sync.namespace().unwrap_or_default();
    let uid = sync.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = api
        .list_metadata(&ListParams::default().labels(&labels::sync_selector(&sync.name_any())))
        .await?;
    let owned = listed.items.into_iter().filter(|s| {
        s.owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    });
    let policy = sync.spec.deletion_policy();
    for secret in owned {
        let name = secret.name_any();
        match policy {
            DeletionPolicy::Delete => {
                match with_timeout(ctx, api.delete(&name, &DeleteParams::default())).await? {
                    Ok(_) => info!(secret = %name, "deleted with its SecretSync"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            DeletionPolicy::Retain => {
                let remaining: Vec<_> = secret
                    .owner_references()
                    .iter()
                    .filter(|o| o.uid != uid)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {
                    "ownerReferences": remaining,
                    "resourceVersion": secret.resource_version(),
                }});
                with_timeout(
                    ctx,
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)),
                )
                .await??;
                info!(secret = %name, "retained after its SecretSync was deleted");
            }
        }
    }
    ctx.written.forget(&uid);
    ctx.record_success(&uid);
    Ok(Action::await_change())
}
