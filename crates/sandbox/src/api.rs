//! Object lifecycle: create, update, patch, apply and delete with the real apiserver's
//! admission-free semantics (metadata management, status subresource rules, validation,
//! optimistic concurrency, finalizers). Used by the HTTP layer and by the in-process
//! controllers (garbage collector, simulator).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::apply::{self, Writer};
use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::{self, ListType};
use crate::patch::{self, PatchType};
use crate::resources::{Generation, Registry, ResourceDef, def_from_crd};
use crate::schema;
use crate::stats::Recorder;
use crate::store::{CommitError, Key, Obj, Precondition, Store, object_rv};
use crate::tokens::Signer;
use crate::util::{self, now_rfc3339};
use crate::validation;

/// Shared server state.
pub struct Core {
    pub store: Store,
    pub registry: Registry,
    pub stats: Recorder,
    pub faults: crate::faults::Faults,
    pub signer: Signer,
    pub cluster_ips: crate::kinds::ClusterIps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// Manager name derived from the User-Agent when `fieldManager` is absent.
    pub default_manager: String,
    pub validation: FieldValidation,
    pub force: bool,
}

impl WriteOpts {
    pub fn system(manager: &str) -> Self {
        Self {
            dry_run: false,
            field_manager: Some(manager.into()),
            default_manager: manager.into(),
            validation: FieldValidation::Ignore,
            force: false,
        }
    }

    fn manager(&self) -> &str {
        self.field_manager
            .as_deref()
            .unwrap_or(&self.default_manager)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// Identifies the object (or collection, with an empty name) a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: String,
    pub name: String,
    pub sub: String,
}

impl Target {
    pub fn key(&self) -> Key {
        Key::new(
            &self.def.group,
            &self.def.plural,
            &self.namespace,
            &self.name,
        )
    }
    fn api_version(&self) -> String {
        self.def.api_version(&self.version)
    }
}

pub struct Written {
    pub obj: Obj,
    pub warnings: Vec<String>,
    pub created: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
    Patch,
}

fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata").and_then(Value::as_object)
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn meta_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    meta(v).and_then(|m| m.get(k)).and_then(Value::as_str)
}

/// The fields recorded in `kubectl.kubernetes.io/last-applied-configuration`.
fn last_applied_fields(
    live: &Value,
    lt: &dyn Fn(&[String]) -> ListType,
    has_status: bool,
) -> Option<fields::FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get("kubectl.kubernetes.io/last-applied-configuration")?
        .as_str()?;
    let obj: Value = serde_json::from_str(text).ok()?;
    Some(fields::owned_paths(&obj, lt, has_status.then_some(false)))
}

/// Equal apart from `metadata.resourceVersion` and `metadata.managedFields[*].time`.
fn same_ignoring_managed_times(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let (Some(am), Some(bm)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    if am.len() != bm.len()
        || am
            .iter()
            .any(|(k, v)| k != "metadata" && bm.get(k) != Some(v))
    {
        return false;
    }
    let (Some(ameta), Some(bmeta)) = (meta(a), meta(b)) else {
        return false;
    };
    // The stored object carries its resourceVersion; the candidate does not yet.
    let skip = |k: &String| k == "managedFields" || k == "resourceVersion";
    let differs = |x: &Map<String, Value>, y: &Map<String, Value>| {
        x.iter().any(|(k, v)| !skip(k) && y.get(k) != Some(v))
    };
    if differs(ameta, bmeta) || differs(bmeta, ameta) {
        return false;
    }
    let entries = |m: &Map<String, Value>| -> Vec<Value> {
        m.get("managedFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let mut e = e.clone();
                        if let Some(o) = e.as_object_mut() {
                            o.remove("time");
                        }
                        e
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    entries(ameta) == entries(bmeta)
}

pub fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn commit_err(t: &Target, e: CommitError) -> ApiError {
    let d = &t.def;
    match e {
        CommitError::Exists => ApiError::already_exists(&d.group, &d.plural, &t.name),
        CommitError::NotFound => ApiError::not_found(&d.group, &d.plural, &t.name),
        CommitError::Stale => ApiError::conflict(&d.group, &d.plural, &t.name),
    }
}

/// The list type used for server-side apply and strategic merge of this resource.
pub fn list_type_for(def: &ResourceDef, version: &str) -> impl Fn(&[String]) -> ListType {
    let schema = def.crd_version(version).and_then(|v| v.schema.clone());
    move |path: &[String]| match &schema {
        Some(s) => fields::schema_list_type(s, path),
        None => fields::builtin_list_type(path),
    }
}

impl Core {
    pub fn get(&self, t: &Target) -> ApiResult<Obj> {
        self.store
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, &t.name))
    }

    fn check_namespace(&self, t: &Target) -> ApiResult<()> {
        if !t.def.namespaced {
            return Ok(());
        }
        if t.namespace.is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource",
            ));
        }
        match self
            .store
            .get(&Key::new("", "namespaces", "", &t.namespace))
        {
            None => Err(ApiError::namespace_not_found(&t.namespace)),
            Some(_) => Ok(()),
        }
    }

    fn check_namespace_not_terminating(&self, t: &Target) -> ApiResult<()> {
        if !t.def.namespaced {
            return Ok(());
        }
        if let Some(ns) = self
            .store
            .get(&Key::new("", "namespaces", "", &t.namespace))
            && ns.pointer("/metadata/deletionTimestamp").is_some()
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                    crate::error::qualified(&t.def.group, &t.def.plural),
                    t.name,
                    t.namespace
                ),
            ));
        }
        Ok(())
    }

    /// POST to a collection.
    pub fn create(
        &self,
        t: &Target,
        body: Value,
        raw: Option<&[u8]>,
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        if let Some(core) = self.events_core_target(t) {
            return self.create(&core, crate::events::to_core(&body), None, opts);
        }
        self.check_namespace(t)?;
        let mut t = t.clone();
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        check_kind(&t, &body)?;
        let name = meta_str(&body, "name").unwrap_or_default().to_string();
        let generate = meta_str(&body, "generateName")
            .unwrap_or_default()
            .to_string();
        let generated = name.is_empty() && !generate.is_empty();
        for _attempt in 0..8 {
            let mut b = body.clone();
            if generated {
                meta_mut(&mut b).insert(
                    "name".into(),
                    json!(format!("{generate}{}", util::random_suffix(5))),
                );
            }
            t.name = meta_str(&b, "name").unwrap_or_default().to_string();
            self.check_namespace_not_terminating(&t)?;
            let (obj, warnings) = self.prepare(&t, None, b, raw, opts, Mode::Create)?;
            if opts.dry_run {
                return Ok(Written {
                    obj: Arc::new(obj),
                    warnings,
                    created: true,
                });
            }
            match self.store.put(&t.key(), Precondition::Absent, obj) {
                Ok(o) => {
                    self.after_write(&t, &o);
                    return Ok(Written {
                        obj: o,
                        warnings,
                        created: true,
                    });
                }
                Err(CommitError::Exists) if generated => continue,
                Err(e) => return Err(commit_err(&t, e)),
            }
        }
        Err(ApiError::new(
            500,
            "AlreadyExists",
            "could not generate a unique name",
        ))
    }

    /// PUT to an object (or its `/status`).
    pub fn update(
        &self,
        t: &Target,
        body: Value,
        raw: Option<&[u8]>,
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        if let Some(core) = self.events_core_target(t) {
            return self.update(&core, crate::events::to_core(&body), None, opts);
        }
        let wanted_rv = check_body(t, &body)?;
        loop {
            let Some(old) = self.store.get(&t.key()) else {
                // Like the real strategies, only Leases and Events allow create-on-update.
                let upsert = t.sub.is_empty()
                    && matches!(
                        (t.def.group.as_str(), t.def.plural.as_str()),
                        ("coordination.k8s.io", "leases")
                            | ("", "events")
                            | ("events.k8s.io", "events")
                    );
                if upsert && wanted_rv.is_none() {
                    return self.create(t, body, raw, opts);
                }
                return Err(ApiError::not_found(&t.def.group, &t.def.plural, &t.name));
            };
            if let Some(w) = wanted_rv
                && w != object_rv(&old)
            {
                return Err(ApiError::conflict(&t.def.group, &t.def.plural, &t.name));
            }
            let (obj, warnings) =
                self.prepare(t, Some(&old), body.clone(), raw, opts, Mode::Update)?;
            match self.commit_update(t, &old, obj, opts.dry_run) {
                Ok(o) => {
                    return Ok(Written {
                        obj: o,
                        warnings,
                        created: false,
                    });
                }
                Err(CommitError::Stale) if wanted_rv.is_none() => continue,
                Err(e) => return Err(commit_err(t, e)),
            }
        }
    }

    /// PATCH of any type, including server-side apply.
    pub fn patch(
        &self,
        t: &Target,
        ptype: PatchType,
        body: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        if ptype == PatchType::Strategic && t.def.is_crd() {
            return Err(ApiError::unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let parsed: Option<Value> = match ptype {
            PatchType::Json => None,
            PatchType::Apply => Some(
                serde_yaml::from_slice::<Value>(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            ),
            _ => Some(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            ),
        };
        let events_core = self.events_core_target(t);
        if ptype == PatchType::Apply {
            if events_core.is_some() {
                return Err(ApiError::unsupported_media(
                    "server-side apply of events.k8s.io/v1 Events is not supported by the sandbox; use core/v1 Events",
                ));
            }
            if opts.field_manager.as_deref().unwrap_or("").is_empty() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            return self.apply(t, parsed.unwrap_or(Value::Null), body, opts);
        }
        let wanted_rv = parsed
            .as_ref()
            .and_then(|p| p.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .map(|s| s.parse::<u64>().unwrap_or(u64::MAX));
        // events.k8s.io/v1 patches apply to that view, then store the core form.
        let t = events_core.as_ref().unwrap_or(t);
        loop {
            let old = self.get(t)?;
            let mut doc = if events_core.is_some() {
                crate::events::from_core(&old)
            } else {
                (*old).clone()
            };
            match ptype {
                PatchType::Merge => {
                    patch::merge_patch(&mut doc, parsed.as_ref().unwrap_or(&Value::Null))
                }
                PatchType::Strategic => {
                    patch::strategic_merge(&mut doc, parsed.as_ref().unwrap_or(&Value::Null))
                }
                PatchType::Json => patch::json_patch(&mut doc, body)?,
                PatchType::Apply => unreachable!("handled above"),
            }
            if events_core.is_some() {
                doc = crate::events::to_core(&doc);
            }
            if let Some(w) = wanted_rv
                && w != object_rv(&old)
            {
                return Err(ApiError::conflict(&t.def.group, &t.def.plural, &t.name));
            }
            // The patched document carries the stored RV; compare-and-swap on it.
            let (obj, warnings) = self.prepare(t, Some(&old), doc, None, opts, Mode::Patch)?;
            match self.commit_update(t, &old, obj, opts.dry_run) {
                Ok(o) => {
                    return Ok(Written {
                        obj: o,
                        warnings,
                        created: false,
                    });
                }
                Err(CommitError::Stale) if wanted_rv.is_none() => continue,
                Err(e) => return Err(commit_err(t, e)),
            }
        }
    }

    fn apply(
        &self,
        t: &Target,
        applied: Value,
        raw: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        let wanted_rv = check_body(t, &applied)?;
        let lt = list_type_for(&t.def, &t.version);
        let now = now_rfc3339();
        let api_version = t.api_version();
        let w = Writer {
            manager: opts.manager(),
            api_version: &api_version,
            subresource: &t.sub,
            has_status: t.def.status_subresource,
            now: &now,
            list_type: &lt,
            allowed_conflicts: None,
        };
        // Unknown fields are judged on the applied configuration itself.
        let raw_json = if raw.first() == Some(&b'{') {
            Some(raw)
        } else {
            None
        };
        loop {
            let live = self.store.get(&t.key());
            if let Some(want) = wanted_rv
                && live.as_ref().is_none_or(|l| object_rv(l) != want)
            {
                return match live {
                    None => Err(ApiError::not_found(&t.def.group, &t.def.plural, &t.name)),
                    Some(_) => Err(ApiError::conflict(&t.def.group, &t.def.plural, &t.name)),
                };
            }
            match live {
                None => {
                    if t.sub == "status" {
                        return Err(ApiError::not_found(&t.def.group, &t.def.plural, &t.name));
                    }
                    let merged = apply::apply(&w, None, &applied, opts.force)
                        .map_err(|c| self.apply_conflict(t, &c))?;
                    let mut o = opts.clone();
                    // The apply entry is already recorded; don't add an Update entry too.
                    o.field_manager = Some(opts.manager().to_string());
                    self.check_namespace(t)?;
                    self.check_namespace_not_terminating(t)?;
                    let (obj, warnings) = self.prepare_applied(t, None, merged, raw_json, &o)?;
                    if opts.dry_run {
                        return Ok(Written {
                            obj: Arc::new(obj),
                            warnings,
                            created: true,
                        });
                    }
                    match self.store.put(&t.key(), Precondition::Absent, obj) {
                        Ok(ob) => {
                            self.after_write(t, &ob);
                            return Ok(Written {
                                obj: ob,
                                warnings,
                                created: true,
                            });
                        }
                        Err(CommitError::Exists) => continue,
                        Err(e) => return Err(commit_err(t, e)),
                    }
                }
                Some(live) => {
                    let upgrade = (opts.manager() == "kubectl")
                        .then(|| last_applied_fields(&live, &lt, t.def.status_subresource))
                        .flatten();
                    let w = Writer {
                        allowed_conflicts: upgrade.as_ref(),
                        ..w
                    };
                    let merged = apply::apply(&w, Some(&live), &applied, opts.force)
                        .map_err(|c| self.apply_conflict(t, &c))?;
                    let (obj, warnings) =
                        self.prepare_applied(t, Some(&live), merged, raw_json, opts)?;
                    match self.commit_update(t, &live, obj, opts.dry_run) {
                        Ok(o) => {
                            return Ok(Written {
                                obj: o,
                                warnings,
                                created: false,
                            });
                        }
                        Err(CommitError::Stale) if wanted_rv.is_none() => continue,
                        Err(e) => return Err(commit_err(t, e)),
                    }
                }
            }
        }
    }

    fn apply_conflict(&self, t: &Target, c: &[apply::Conflict]) -> ApiError {
        let mut e = ApiError::new(409, "Conflict", apply::conflict_message(c));
        e.details = Some(json!({
            "name": t.name,
            "group": t.def.group,
            "kind": t.def.plural,
            "causes": c.iter().map(|c| json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                "field": c.path,
            })).collect::<Vec<_>>(),
        }));
        e
    }

    /// `prepare` for an apply result: managedFields are already set by the apply logic.
    fn prepare_applied(
        &self,
        t: &Target,
        old: Option<&Value>,
        merged: Value,
        raw: Option<&[u8]>,
        opts: &WriteOpts,
    ) -> ApiResult<(Value, Vec<String>)> {
        let managed = merged.pointer("/metadata/managedFields").cloned();
        let mode = if old.is_some() {
            Mode::Patch
        } else {
            Mode::Create
        };
        let mut o = opts.clone();
        o.field_manager = Some(String::new());
        let (mut obj, w) = self.prepare_inner(t, old, merged, raw, &o, mode, false)?;
        let m = meta_mut(&mut obj);
        match managed {
            Some(mf) => m.insert("managedFields".into(), mf),
            None => m.remove("managedFields"),
        };
        Ok((obj, w))
    }

    fn commit_update(
        &self,
        t: &Target,
        old: &Obj,
        obj: Value,
        dry_run: bool,
    ) -> Result<Obj, CommitError> {
        if dry_run {
            return Ok(Arc::new(obj));
        }
        // An object being deleted goes away once its last finalizer is removed.
        let gone =
            obj.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&obj).is_empty();
        if gone && t.def.plural != "namespaces" {
            let o = self
                .store
                .put(&t.key(), Precondition::Rv(object_rv(old)), obj)?;
            let _ = self.store.delete(&t.key(), Some(object_rv(&o)));
            self.after_delete(t, &o);
            return Ok(o);
        }
        if same_ignoring_managed_times(old, &obj) {
            // No-op updates (including re-applies that only refresh managedFields
            // timestamps) keep the resourceVersion and emit no event, like the real server.
            return Ok(old.clone());
        }
        let o = self
            .store
            .put(&t.key(), Precondition::Rv(object_rv(old)), obj)?;
        self.after_write(t, &o);
        Ok(o)
    }

    fn prepare(
        &self,
        t: &Target,
        old: Option<&Value>,
        new: Value,
        raw: Option<&[u8]>,
        opts: &WriteOpts,
        mode: Mode,
    ) -> ApiResult<(Value, Vec<String>)> {
        self.prepare_inner(t, old, new, raw, opts, mode, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_inner(
        &self,
        t: &Target,
        old: Option<&Value>,
        mut new: Value,
        raw: Option<&[u8]>,
        opts: &WriteOpts,
        mode: Mode,
        track: bool,
    ) -> ApiResult<(Value, Vec<String>)> {
        let def = &t.def;
        let api_version = t.api_version();
        // apiVersion / kind must match the endpoint.
        if let Some(k) = new.get("kind").and_then(Value::as_str)
            && k != def.kind
            && !k.is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version})",
                new.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        if let Some(av) = new.get("apiVersion").and_then(Value::as_str)
            && av != api_version
            && !av.is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
        new["apiVersion"] = json!(api_version);
        new["kind"] = json!(def.kind);
        {
            let m = meta_mut(&mut new);
            if def.namespaced {
                if let Some(ns) = m.get("namespace").and_then(Value::as_str)
                    && !ns.is_empty()
                    && ns != t.namespace
                {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                m.insert("namespace".into(), json!(t.namespace));
            } else {
                m.remove("namespace");
            }
            m.insert("name".into(), json!(t.name));
        }

        // Unknown and duplicate fields.
        let mut warnings = Vec::new();
        let mut unknown = Vec::new();
        if let Some(raw) = raw
            && opts.validation != FieldValidation::Ignore
        {
            for d in validation::duplicate_fields(raw) {
                unknown.push(format!("duplicate field \"{d}\""));
            }
        }
        let mut invalid: Vec<Cause> = Vec::new();
        if let Some(cv) = def.crd_version(&t.version) {
            if let Some(s) = &cv.schema {
                let out = schema::process(s, &mut new);
                unknown.extend(out.pruned.iter().map(|p| format!("unknown field \"{p}\"")));
                invalid.extend(out.errors);
            }
        } else {
            let paths =
                validation::unknown_builtin_fields(&def.group, &def.kind, &new).map_err(|e| {
                    ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: {e}",
                        def.kind, t.version, def.kind
                    ))
                })?;
            validation::prune_paths(&mut new, &paths);
            unknown.extend(paths.iter().map(|p| format!("unknown field \"{p}\"")));
        }
        // Stored objects are always pruned, so unknown fields in a patch result come from
        // the patch itself.
        if !unknown.is_empty() {
            match opts.validation {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        def.kind,
                        t.version,
                        def.kind,
                        unknown.join(", ")
                    )));
                }
                FieldValidation::Warn => warnings.extend(unknown),
                FieldValidation::Ignore => {}
            }
        }

        // Status subresource rules.
        if def.status_subresource {
            if t.sub == "status" {
                let Some(o) = old else {
                    return Err(ApiError::not_found(&def.group, &def.plural, &t.name));
                };
                let status = new.get("status").cloned();
                let managed = new.pointer("/metadata/managedFields").cloned();
                new = o.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if let Some(mf) = managed {
                    meta_mut(&mut new).insert("managedFields".into(), mf);
                }
            } else {
                match old.and_then(|o| o.get("status")) {
                    Some(s) if mode != Mode::Create => new["status"] = s.clone(),
                    _ => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }

        self.kind_defaults(t, old, &mut new, mode)?;

        // System metadata.
        let now = now_rfc3339();
        {
            let m = meta_mut(&mut new);
            m.remove("resourceVersion");
            m.remove("selfLink");
            match old {
                None => {
                    m.remove("deletionTimestamp");
                    m.remove("deletionGracePeriodSeconds");
                    m.insert("uid".into(), json!(util::new_uid()));
                    m.insert("creationTimestamp".into(), json!(now));
                    if def.generation != Generation::None {
                        m.insert("generation".into(), json!(1));
                    } else {
                        m.remove("generation");
                    }
                }
                Some(o) => {
                    let om = meta(o).cloned().unwrap_or_default();
                    for k in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                        "generation",
                        "generateName",
                    ] {
                        match om.get(k) {
                            Some(v) => m.insert(k.into(), v.clone()),
                            None => m.remove(k),
                        };
                    }
                }
            }
        }
        if let Some(o) = old {
            let changed = match def.generation {
                Generation::None => false,
                Generation::Spec => o.get("spec") != new.get("spec"),
                Generation::NonMetadata => {
                    let strip = |v: &Value| {
                        let mut c = v.as_object().cloned().unwrap_or_default();
                        c.remove("metadata");
                        c
                    };
                    strip(o) != strip(&new)
                }
            };
            if changed {
                let g = o
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }

        // CEL rules judge the object as it would be stored (after the status rules and
        // defaulting), with the stored object as `oldSelf` for transition rules.
        if invalid.is_empty()
            && let Some(s) = def.crd_version(&t.version).and_then(|v| v.schema.as_ref())
        {
            invalid.extend(schema::cel_errors(s, &new, old));
        }
        self.validate(t, old, &new, &mut invalid);
        if !invalid.is_empty() {
            return Err(ApiError::invalid(&def.group, &def.kind, &t.name, invalid));
        }

        if track {
            let lt = list_type_for(def, &t.version);
            let w = Writer {
                manager: opts.manager(),
                api_version: &api_version,
                subresource: &t.sub,
                has_status: def.status_subresource,
                now: &now,
                list_type: &lt,
                allowed_conflicts: None,
            };
            apply::record_update(&w, old, &mut new);
        }
        Ok((new, warnings))
    }

    /// Defaulting the real API server does for the kinds the operator touches.
    fn kind_defaults(
        &self,
        t: &Target,
        old: Option<&Value>,
        new: &mut Value,
        mode: Mode,
    ) -> ApiResult<()> {
        let def = &t.def;
        match (def.group.as_str(), def.kind.as_str()) {
            ("", "Secret") => {
                if let Some(sd) = new.as_object_mut().and_then(|m| m.remove("stringData"))
                    && let Some(sd) = sd.as_object()
                {
                    use base64::Engine;
                    if !new.get("data").is_some_and(Value::is_object) {
                        new["data"] = json!({});
                    }
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        new["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                    }
                }
                if new.get("type").is_none() {
                    new["type"] = json!("Opaque");
                }
            }
            ("", "Namespace") => {
                let terminating =
                    old.is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
                new["status"] =
                    json!({"phase": if terminating { "Terminating" } else { "Active" }});
                if let Some(o) = old
                    && let Some(s) = o.get("status")
                    && terminating
                {
                    new["status"] = s.clone();
                }
                if new.pointer("/spec/finalizers").is_none() {
                    new["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                let name = t.name.clone();
                let m = meta_mut(new);
                if !m.get("labels").is_some_and(Value::is_object) {
                    m.insert("labels".into(), json!({}));
                }
                m["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            ("", "Pod") if mode == Mode::Create && new.get("status").is_none() => {
                new["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
                if new.pointer("/spec/replicas").is_none()
                    && new.get("spec").is_some_and(Value::is_object)
                {
                    new["spec"]["replicas"] = json!(1);
                }
                if def.kind == "Deployment" && new.get("spec").is_some_and(Value::is_object) {
                    let s = &mut new["spec"];
                    if s.get("strategy").is_none() {
                        s["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
                    }
                    if s.get("revisionHistoryLimit").is_none() {
                        s["revisionHistoryLimit"] = json!(10);
                    }
                    if s.get("progressDeadlineSeconds").is_none() {
                        s["progressDeadlineSeconds"] = json!(600);
                    }
                }
                if def.kind == "StatefulSet" && new.get("spec").is_some_and(Value::is_object) {
                    let s = &mut new["spec"];
                    if s.get("podManagementPolicy").is_none() {
                        s["podManagementPolicy"] = json!("OrderedReady");
                    }
                    if s.get("updateStrategy").is_none() {
                        s["updateStrategy"] =
                            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
                    }
                }
            }
            ("apps", "DaemonSet")
                if new.get("spec").is_some_and(Value::is_object)
                    && new.pointer("/spec/updateStrategy").is_none() =>
            {
                new["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let names = new.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let mut accepted = names.clone();
                if accepted.get("singular").is_none()
                    && let Some(k) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["singular"] = json!(k.to_ascii_lowercase());
                }
                if accepted.get("listKind").is_none()
                    && let Some(k) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["listKind"] = json!(format!("{k}List"));
                }
                let now = now_rfc3339();
                let stored: Vec<Value> = new
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                            .filter_map(|v| v.get("name").cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                if new.pointer("/spec/conversion").is_none()
                    && new.get("spec").is_some_and(Value::is_object)
                {
                    new["spec"]["conversion"] = json!({"strategy": "None"});
                }
                new["status"] = json!({
                    "acceptedNames": accepted,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                    "storedVersions": stored,
                });
            }
            (group, kind) => crate::kinds::defaults(group, kind, old, new, &self.cluster_ips),
        }
        Ok(())
    }

    fn validate(&self, t: &Target, old: Option<&Value>, new: &Value, causes: &mut Vec<Cause>) {
        let def = &t.def;
        let name = &t.name;
        crate::objmeta::validate_meta(new, causes);
        if def.group.is_empty() && matches!(def.kind.as_str(), "Secret" | "ConfigMap") {
            crate::objmeta::validate_data(&def.kind, new, causes);
        }
        let workload = matches!(
            (def.group.as_str(), def.kind.as_str()),
            (
                "apps",
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            ) | ("", "Pod")
        );
        // Status-only writes cannot make a stored spec invalid.
        if workload && t.sub.is_empty() {
            crate::objmeta::validate_workload(&def.kind, old, new, causes);
        }
        if name.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        } else {
            let ok = if def.plural == "namespaces" {
                util::is_dns_label(name)
            } else {
                util::is_dns_subdomain(name) || def.plural == "events"
            };
            if !ok {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &json!(name),
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ));
            }
        }
        if let Some(o) = old {
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                let before = finalizers(o);
                let added: Vec<String> = finalizers(new)
                    .into_iter()
                    .filter(|f| !before.contains(f))
                    .collect();
                if !added.is_empty() {
                    causes.push(Cause::forbidden(
                        "metadata.finalizers",
                        &format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                    ));
                }
            }
            if matches!(def.kind.as_str(), "Secret" | "ConfigMap")
                && def.group.is_empty()
                && o.get("immutable").and_then(Value::as_bool) == Some(true)
            {
                let msg = "field is immutable when `immutable` is set";
                let field = "data";
                if o.get(field) != new.get(field) || o.get("binaryData") != new.get("binaryData") {
                    causes.push(Cause::forbidden(field, msg));
                }
                if new.get("immutable").and_then(Value::as_bool) != Some(true) {
                    causes.push(Cause::forbidden("immutable", msg));
                }
            }
            if def.kind == "Secret" && def.group.is_empty() && o.get("type") != new.get("type") {
                causes.push(Cause::invalid(
                    "type",
                    new.get("type").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        crate::kinds::validate(&def.group, &def.kind, old, new, causes);
        if def.kind == "CustomResourceDefinition" {
            let group = new
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = new
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if plural.is_empty() {
                causes.push(Cause::required("spec.names.plural"));
            }
            if new
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                causes.push(Cause::required("spec.names.kind"));
            }
            if format!("{plural}.{group}") != *name {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &json!(name),
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            if new
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.versions"));
            }
            if !causes.is_empty() {
                return;
            }
            if def_from_crd(new).is_none() {
                causes.push(Cause::invalid(
                    "spec",
                    &json!("..."),
                    "malformed CustomResourceDefinition",
                ));
            }
            // Another CRD may not already serve the same group/plural.
            if old.is_none()
                && let Some(existing) = self.registry.by_plural(group, plural)
                && !existing.is_crd()
            {
                causes.push(Cause::invalid(
                    "spec.names.plural",
                    &json!(plural),
                    "conflicts with a built-in resource",
                ));
            }
        }
    }

    /// Side effects of a committed create/update.
    fn after_write(&self, t: &Target, obj: &Value) {
        if t.def.kind == "CustomResourceDefinition"
            && t.def.group == "apiextensions.k8s.io"
            && let Some(d) = def_from_crd(obj)
        {
            self.registry.register(d);
        }
    }

    /// Side effects of a final deletion.
    pub fn after_delete(&self, t: &Target, obj: &Value) {
        if t.def.kind == "CustomResourceDefinition"
            && t.def.group == "apiextensions.k8s.io"
            && let Some(d) = def_from_crd(obj)
        {
            self.registry.unregister(&d.group, &d.plural);
            for k in self.store.keys_of_resource(&d.group, &d.plural) {
                let _ = self.store.delete(&k, None);
            }
        }
    }

    /// DELETE of one object.
    pub fn delete(&self, t: &Target, opts: &DeleteOpts) -> ApiResult<Obj> {
        loop {
            let cur = self.get(t)?;
            if let Some(uid) = &opts.uid
                && meta_str(&cur, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::conflict_msg(
                    &t.def.group,
                    &t.def.plural,
                    &t.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&cur, "uid").unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &opts.resource_version
                && meta_str(&cur, "resourceVersion") != Some(rv.as_str())
            {
                return Err(ApiError::conflict_msg(
                    &t.def.group,
                    &t.def.plural,
                    &t.name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&cur, "resourceVersion").unwrap_or_default()
                    ),
                ));
            }
            if opts.dry_run {
                return Ok(cur);
            }
            let policy = opts.propagation.unwrap_or(Propagation::Background);
            let mut fins = finalizers(&cur);
            let is_ns = t.def.plural == "namespaces" && t.def.group.is_empty();
            if policy == Propagation::Orphan {
                self.orphan_dependents(&cur);
            }
            if policy == Propagation::Foreground
                && !fins.iter().any(|f| f == "foregroundDeletion")
                && !self
                    .store
                    .dependents(meta_str(&cur, "uid").unwrap_or_default())
                    .is_empty()
            {
                fins.push("foregroundDeletion".into());
            }
            if fins.is_empty() && !is_ns {
                match self.store.delete(&t.key(), Some(object_rv(&cur))) {
                    Ok(o) => {
                        self.after_delete(t, &o);
                        return Ok(o);
                    }
                    Err(CommitError::Stale) => continue,
                    Err(e) => return Err(commit_err(t, e)),
                }
            }
            if cur.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&cur) == fins {
                return Ok(cur);
            }
            let mut next = (*cur).clone();
            {
                let m = meta_mut(&mut next);
                if !m.contains_key("deletionTimestamp") {
                    m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if !fins.is_empty() {
                    m.insert("finalizers".into(), json!(fins));
                }
            }
            if is_ns {
                next["status"] = json!({"phase": "Terminating"});
            }
            match self
                .store
                .put(&t.key(), Precondition::Rv(object_rv(&cur)), next)
            {
                Ok(o) => return Ok(o),
                Err(CommitError::Stale) => continue,
                Err(e) => return Err(commit_err(t, e)),
            }
        }
    }

    /// Removes ownerReferences pointing at `owner` from its dependents.
    pub fn orphan_dependents(&self, owner: &Value) {
        let uid = meta_str(owner, "uid").unwrap_or_default().to_string();
        for k in self.store.dependents(&uid) {
            while let Some(dep) = self.store.get(&k) {
                let mut next = (*dep).clone();
                if let Some(refs) = next
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                    if refs.is_empty()
                        && let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        m.remove("ownerReferences");
                    }
                }
                match self.store.put(&k, Precondition::Rv(object_rv(&dep)), next) {
                    Err(CommitError::Stale) => continue,
                    _ => break,
                }
            }
        }
    }

    /// The `autoscaling/v1` Scale view of a workload.
    fn scale_view(&self, obj: &Value) -> Value {
        let selector = obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
            "status": {
                "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                "selector": selector,
            },
        })
    }

    /// GET, PUT or PATCH of the `scale` subresource: only `spec.replicas` is written.
    pub fn scale(
        &self,
        t: &Target,
        verb: &str,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let main = Target {
            sub: String::new(),
            ..t.clone()
        };
        loop {
            let cur = self.get(&main)?;
            let view = self.scale_view(&cur);
            let wanted = match verb {
                "get" => return Ok(view),
                "update" => serde_json::from_slice::<Value>(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))?,
                _ => {
                    let mut doc = view.clone();
                    match PatchType::from_content_type(content_type) {
                        Some(PatchType::Merge) => patch::merge_patch(
                            &mut doc,
                            &serde_json::from_slice(body)
                                .map_err(|e| ApiError::bad_request(e.to_string()))?,
                        ),
                        Some(PatchType::Strategic) => patch::strategic_merge(
                            &mut doc,
                            &serde_json::from_slice(body)
                                .map_err(|e| ApiError::bad_request(e.to_string()))?,
                        ),
                        Some(PatchType::Json) => patch::json_patch(&mut doc, body)?,
                        _ => {
                            return Err(ApiError::unsupported_media(
                                "unsupported patch type for scale",
                            ));
                        }
                    }
                    doc
                }
            };
            let rv = wanted
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && verb == "update")
                .map(|s| s.parse::<u64>().unwrap_or(u64::MAX));
            if rv.is_some_and(|rv| rv != object_rv(&cur)) {
                return Err(ApiError::conflict(&t.def.group, &t.def.plural, &t.name));
            }
            let Some(replicas) = wanted
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .filter(|r| *r >= 0)
            else {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    &t.name,
                    vec![Cause::invalid(
                        "spec.replicas",
                        wanted.pointer("/spec/replicas").unwrap_or(&Value::Null),
                        "must be greater than or equal to 0",
                    )],
                ));
            };
            let mut next = (*cur).clone();
            next["spec"]["replicas"] = json!(replicas);
            let (obj, _) = self.prepare(&main, Some(&cur), next, None, opts, Mode::Update)?;
            match self.commit_update(&main, &cur, obj, opts.dry_run) {
                Ok(o) => return Ok(self.scale_view(&o)),
                Err(CommitError::Stale) if rv.is_none() => continue,
                Err(e) => return Err(commit_err(t, e)),
            }
        }
    }

    /// The core/v1 Events target behind an events.k8s.io/v1 request.
    fn events_core_target(&self, t: &Target) -> Option<Target> {
        if !t.def.is_events_v1() {
            return None;
        }
        Some(Target {
            def: self.registry.by_plural("", "events")?,
            version: "v1".into(),
            ..t.clone()
        })
    }

    /// A target for an object identified by store key (used by in-process controllers).
    pub fn target_for(&self, key: &Key) -> Option<Target> {
        let def = self.registry.by_plural(&key.group, &key.resource)?;
        Some(Target {
            version: def.preferred_version().to_string(),
            def,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            sub: String::new(),
        })
    }
}

/// A custom resource's body must name its kind, as the real server's decoder for them
/// demands (it has no Go type to take the kind from); a built-in kind's comes from the URL.
fn check_kind(t: &Target, body: &Value) -> ApiResult<()> {
    if t.def.is_crd()
        && body
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    Ok(())
}

/// Checks a PUT or apply body against its URL and returns the resourceVersion it demands,
/// if any (an unparsable one can never match, like the real server's).
fn check_body(t: &Target, body: &Value) -> ApiResult<Option<u64>> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    check_kind(t, body)?;
    let body_name = meta_str(body, "name").unwrap_or_default();
    if !body_name.is_empty() && body_name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    Ok(meta_str(body, "resourceVersion")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap_or(u64::MAX)))
}
