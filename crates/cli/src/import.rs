//! `kubectl secretsync import`: External Secrets Operator manifests (`external-secrets.io`
//! `v1beta1` and `v1`) become ours. Field names were chosen to follow ESO's, so most of a
//! manifest carries over by name; the rest is converted by the rules below or **reported**:
//! every field of the input is either carried over or named in the report with the reason,
//! never dropped silently, and nothing is guessed.
//!
//! The conversion is pure (manifests in, manifests and a report out); the command around it
//! reads files, stdin or the cluster and prints.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// What an import produced.
#[derive(Debug, Default)]
pub struct Imported {
    /// Our manifests, in the order of their sources.
    pub objects: Vec<Value>,
    /// Fields of converted objects that were not carried over, and why.
    pub notes: Vec<Note>,
    /// Objects that could not be converted at all, and why.
    pub failed: Vec<Note>,
    /// Input documents that are not External Secrets Operator objects (left alone).
    pub ignored: Vec<String>,
}

/// One field (or object) not carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Kind namespace/name` of the input object.
    pub object: String,
    /// The field's path in the input object (`.spec.target.creationPolicy`), or empty for
    /// the whole object.
    pub field: String,
    pub why: String,
}

const GROUP: &str = "external-secrets.io/";
const OURS: &str = "secretsync.io/v1alpha1";

/// The documents of a YAML stream (`---`-separated), as `import` takes them.
pub fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    serde_yaml::Deserializer::from_str(text)
        .map(serde::Deserialize::deserialize)
        .collect()
}

/// Converts every document (a `kind: List` counts as its items).
pub fn import(docs: impl IntoIterator<Item = Value>) -> Imported {
    let mut imported = Imported::default();
    for doc in docs {
        convert_doc(doc, &mut imported);
    }
    imported
}

fn convert_doc(doc: Value, imported: &mut Imported) {
    let Value::Object(mut doc) = doc else {
        if !doc.is_null() {
            imported
                .ignored
                .push("a document that is not an object".into());
        }
        return;
    };
    let kind = str_of(doc.get("kind")).unwrap_or_default().to_owned();
    let api_version = str_of(doc.get("apiVersion")).unwrap_or_default().to_owned();
    if kind == "List" || (kind.ends_with("List") && doc.contains_key("items")) {
        if let Some(Value::Array(items)) = doc.remove("items") {
            for item in items {
                convert_doc(item, imported);
            }
        }
        return;
    }
    let object = describe(&kind, &doc);
    if !api_version.starts_with(GROUP) {
        imported.ignored.push(object);
        return;
    }
    let mut walk = Walk {
        object: object.clone(),
        notes: Vec::new(),
    };
    let converted = match kind.as_str() {
        "ExternalSecret" => walk.external_secret(doc),
        "SecretStore" | "ClusterSecretStore" => walk.store(&kind, doc),
        "ClusterExternalSecret" => walk.cluster_external_secret(doc),
        "PushSecret" | "ClusterPushSecret" => Err(
            "secretsync only brings secrets into clusters; pushing Secrets to a store has no \
             equivalent"
                .into(),
        ),
        _ => Err(format!(
            "{kind} (a generator or another ESO kind) has no equivalent in secretsync"
        )),
    };
    match converted.and_then(|value| check(&kind, value)) {
        Ok(value) => {
            imported.objects.push(value);
            imported.notes.extend(walk.notes);
        }
        Err(why) => imported.failed.push(Note {
            object,
            field: String::new(),
            why,
        }),
    }
}

/// Our own validation of what was converted: an import never prints a manifest the operator
/// would refuse.
fn check(kind: &str, value: Value) -> Result<Value, String> {
    use secretsync_api::validate::{StoreScope, validate_spec, validate_store};
    let invalid = |e: String| format!("converted, but not valid for secretsync: {e}");
    match kind {
        "ExternalSecret" => {
            let sync: secretsync_api::SecretSync =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            let name = sync.metadata.name.clone().unwrap_or_default();
            validate_spec(&sync.spec, &name).map_err(|p| invalid(p.join("; ")))?;
        }
        "ClusterExternalSecret" => {
            let css: secretsync_api::ClusterSecretSync =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            let name = css.metadata.name.clone().unwrap_or_default();
            secretsync_api::validate_cluster_sync(&css.spec, &name)
                .map_err(|p| invalid(p.join("; ")))?;
        }
        "SecretStore" => {
            let store: secretsync_api::SecretStore =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            validate_store(&store.spec, StoreScope::Namespaced)
                .map_err(|p| invalid(p.join("; ")))?;
        }
        _ => {
            let store: secretsync_api::ClusterSecretStore =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            validate_store(&store.spec.store, StoreScope::Cluster)
                .map_err(|p| invalid(p.join("; ")))?;
        }
    }
    Ok(value)
}

fn describe(kind: &str, doc: &Map<String, Value>) -> String {
    let meta = doc.get("metadata");
    let name = str_of(meta.and_then(|m| m.get("name"))).unwrap_or("<unnamed>");
    match str_of(meta.and_then(|m| m.get("namespace"))) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn str_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Why a field ESO has is not carried over, for the fields users are known to set.
fn why_not(key: &str) -> &'static str {
    match key {
        "sourceRef" | "generatorRef" => {
            "generators and other secret sources are not supported: secretsync reads stores only"
        }
        "metadataPolicy" => "reading remote metadata (tags, labels) as values is not supported",
        "conversionStrategy" => "only the Default conversion exists",
        "templateFrom" => "templates from ConfigMaps or Secrets are not supported; inline them",
        "mergePolicy" => "a version holds exactly the rendered keys (Replace)",
        "transform" => "only regexp rewrites exist",
        "retrySettings" => {
            "retries are the operator's (backoff per store); there is no per-store setting"
        }
        "caProvider" => "caBundle only: put the PEM (base64) in caBundle",
        "namespaceRegexes" => "namespaces and namespaceSelector only",
        "refreshTime" => {
            "namespaces are followed by a watch of their labels, at once: there is no polling \
             interval"
        }
        "valueMap" => "fake entries hold one value each",
        _ => "no equivalent in secretsync",
    }
}

/// Converts one object, collecting notes for what it leaves behind.
struct Walk {
    object: String,
    notes: Vec<Note>,
}

type Obj = Map<String, Value>;

impl Walk {
    fn note(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.notes.push(Note {
            object: self.object.clone(),
            field: field.into(),
            why: why.into(),
        });
    }

    /// Reports every field left in `map` (all others were taken).
    fn rest(&mut self, path: &str, map: Obj) {
        for (key, _) in map {
            let why = why_not(&key);
            self.note(format!("{path}.{key}"), why);
        }
    }

    /// Moves `keys` that are present from `from` to `to`, unchanged.
    fn copy(from: &mut Obj, to: &mut Obj, keys: &[&str]) {
        for key in keys {
            if let Some(value) = from.remove(*key) {
                to.insert((*key).to_owned(), value);
            }
        }
    }

    fn object_at(&mut self, map: &mut Obj, key: &str, path: &str) -> Result<Option<Obj>, String> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(format!("{path}.{key} is not an object")),
        }
    }

    fn metadata(&mut self, doc: &mut Obj, cluster_scoped: bool) -> Result<Value, String> {
        let mut meta = self.object_at(doc, "metadata", "")?.unwrap_or_default();
        let mut out = Obj::new();
        let name = meta.remove("name");
        if str_of(name.as_ref()).is_none_or(str::is_empty) {
            return Err("metadata.name is missing".into());
        }
        out.insert("name".into(), name.unwrap_or_default());
        if !cluster_scoped {
            Self::copy(&mut meta, &mut out, &["namespace"]);
        }
        Self::copy(&mut meta, &mut out, &["labels"]);
        if let Some(Value::Object(mut annotations)) = meta.remove("annotations") {
            // Written by kubectl apply about the old object; meaningless for the new one.
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            if !annotations.is_empty() {
                out.insert("annotations".into(), Value::Object(annotations));
            }
        }
        // What the API server sets on the object read back (`--from-cluster`).
        for server_set in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "finalizers",
            "ownerReferences",
            "namespace",
        ] {
            meta.remove(server_set);
        }
        self.rest(".metadata", meta);
        Ok(Value::Object(out))
    }

    fn external_secret(&mut self, mut doc: Obj) -> Result<Value, String> {
        let metadata = self.metadata(&mut doc, false)?;
        let mut spec = self.object_at(&mut doc, "spec", "")?.unwrap_or_default();
        let mut out = Obj::new();
        let Some(mut store_ref) = self.object_at(&mut spec, "secretStoreRef", ".spec")? else {
            return Err(
                "no spec.secretStoreRef (generators only, or a fragment): nothing for \
                 secretsync to read from"
                    .into(),
            );
        };
        let mut ours = Obj::new();
        Self::copy(&mut store_ref, &mut ours, &["name", "kind"]);
        self.rest(".spec.secretStoreRef", store_ref);
        out.insert("storeRef".into(), Value::Object(ours));
        if let Some(interval) = spec.remove("refreshInterval") {
            match str_of(Some(&interval)).map(go_duration) {
                Some(Some(interval)) => {
                    out.insert("refreshInterval".into(), json!(interval));
                }
                _ => self.note(
                    ".spec.refreshInterval",
                    format!("{interval} is not a duration secretsync reads (e.g. 1h, 30m, 15s)"),
                ),
            }
        }
        Self::copy(&mut spec, &mut out, &["refreshPolicy"]);
        if let Some(target) = self.object_at(&mut spec, "target", ".spec")? {
            self.target(target, &mut out)?;
        }
        self.entries(&mut spec, "data", &mut out, Self::data_item)?;
        self.entries(&mut spec, "dataFrom", &mut out, Self::data_from)?;
        if !out.contains_key("data") && !out.contains_key("dataFrom") {
            return Err("nothing to read: no data or dataFrom entry could be carried over".into());
        }
        self.rest(".spec", spec);
        Ok(json!({
            "apiVersion": OURS,
            "kind": "SecretSync",
            "metadata": metadata,
            "spec": out,
        }))
    }

    /// A ClusterExternalSecret becomes a ClusterSecretSync: `externalSecretSpec` its template
    /// (converted as an ExternalSecret's spec, its notes under `.spec.externalSecretSpec`),
    /// `externalSecretMetadata` the template's metadata, the namespace selection as is. Named
    /// `externalSecretName` when set: its SecretSyncs (and their Secrets) take its name, as
    /// ESO's ExternalSecrets did.
    fn cluster_external_secret(&mut self, mut doc: Obj) -> Result<Value, String> {
        let metadata = self.metadata(&mut doc, true)?;
        let mut spec = self.object_at(&mut doc, "spec", "")?.unwrap_or_default();
        let mut metadata = metadata;
        if let Some(name) = spec.remove("externalSecretName").filter(|n| !n.is_null()) {
            if metadata["name"] != name {
                self.note(
                    ".metadata.name",
                    format!(
                        "the ClusterSecretSync is named {name} (externalSecretName): the \
                         SecretSyncs it makes take its name"
                    ),
                );
            }
            metadata["name"] = name;
        }
        let mut out = Obj::new();
        let mut selectors: Vec<Value> = Vec::new();
        if let Some(one) = spec.remove("namespaceSelector").filter(|v| !v.is_null()) {
            selectors.push(one);
        }
        if let Some(many) = spec.remove("namespaceSelectors") {
            selectors.extend(as_array(many, ".spec.namespaceSelectors")?);
        }
        match selectors.len() {
            0 => {}
            1 => {
                out.insert("namespaceSelector".into(), selectors.remove(0));
            }
            n => {
                return Err(format!(
                    "{n} namespace selectors (any of them selects): a ClusterSecretSync has \
                     one namespaceSelector (and a namespaces list); combine them into one \
                     selector, or split this into {n} ClusterSecretSyncs of different names"
                ));
            }
        }
        Self::copy(&mut spec, &mut out, &["namespaces"]);
        let mut template = Obj::new();
        if let Some(mut meta) = self.object_at(&mut spec, "externalSecretMetadata", ".spec")? {
            let mut ours = Obj::new();
            Self::copy(&mut meta, &mut ours, &["labels", "annotations"]);
            self.rest(".spec.externalSecretMetadata", meta);
            if !ours.is_empty() {
                template.insert("metadata".into(), Value::Object(ours));
            }
        }
        let Some(inner) = self.object_at(&mut spec, "externalSecretSpec", ".spec")? else {
            return Err("no spec.externalSecretSpec: nothing to make in each namespace".into());
        };
        let kind = inner
            .get("secretStoreRef")
            .and_then(|r| r.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or("SecretStore");
        if kind != "ClusterSecretStore" {
            return Err(format!(
                "its externalSecretSpec reads a {kind}, one per namespace: a ClusterSecretSync \
                 reads only ClusterSecretStores. Make the store a ClusterSecretStore (its \
                 conditions limit the namespaces), or import each namespace's ExternalSecret"
            ));
        }
        let first_note = self.notes.len();
        let converted = self.external_secret(Obj::from_iter([
            ("metadata".to_owned(), json!({"name": metadata["name"]})),
            ("spec".to_owned(), Value::Object(inner)),
        ]))?;
        for note in &mut self.notes[first_note..] {
            if let Some(rest) = note.field.strip_prefix(".spec") {
                note.field = format!(".spec.externalSecretSpec{rest}");
            }
        }
        template.insert("spec".into(), converted["spec"].clone());
        out.insert("template".into(), Value::Object(template));
        self.rest(".spec", spec);
        Ok(json!({
            "apiVersion": OURS,
            "kind": "ClusterSecretSync",
            "metadata": metadata,
            "spec": out,
        }))
    }

    /// Converts each item of the list `spec.<key>` with `convert` into `out.<key>`; an item
    /// `convert` cannot carry over is left out (and reported by it).
    fn entries(
        &mut self,
        spec: &mut Obj,
        key: &str,
        out: &mut Obj,
        convert: fn(&mut Self, Value, &str) -> Result<Option<Value>, String>,
    ) -> Result<(), String> {
        let Some(list) = spec.remove(key) else {
            return Ok(());
        };
        let mut ours = Vec::new();
        for (i, item) in as_array(list, &format!(".spec.{key}"))?
            .into_iter()
            .enumerate()
        {
            if let Some(item) = convert(self, item, &format!(".spec.{key}[{i}]"))? {
                ours.push(item);
            }
        }
        if !ours.is_empty() {
            out.insert(key.to_owned(), Value::Array(ours));
        }
        Ok(())
    }

    fn target(&mut self, mut target: Obj, out: &mut Obj) -> Result<(), String> {
        let mut ours = Obj::new();
        Self::copy(&mut target, &mut ours, &["name"]);
        match str_of(target.remove("creationPolicy").as_ref()) {
            None | Some("Owner") => {}
            Some("Orphan") => {
                out.insert("deletionPolicy".into(), json!("Retain"));
            }
            Some(other) => self.note(
                ".spec.target.creationPolicy",
                format!(
                    "{other}: secretsync writes its own immutable versions (<name>-v<N>); it never \
                     merges into an existing Secret nor skips writing"
                ),
            ),
        }
        match str_of(target.remove("deletionPolicy").as_ref()) {
            // ESO's default, and what secretsync does: a remote key gone keeps the versions.
            None | Some("Retain") => {}
            Some(other) => self.note(
                ".spec.target.deletionPolicy",
                format!(
                    "{other}: when remote keys are deleted secretsync keeps the active version \
                     and reports RemoteKeyNotFound rather than delete a Secret in use"
                ),
            ),
        }
        // Every version is immutable already.
        target.remove("immutable");
        if let Some(mut template) = self.object_at(&mut target, "template", ".spec.target")? {
            Self::copy(&mut template, &mut ours, &["type"]);
            if let Some(mut metadata) =
                self.object_at(&mut template, "metadata", ".spec.target.template")?
            {
                Self::copy(&mut metadata, &mut ours, &["labels", "annotations"]);
                self.rest(".spec.target.template.metadata", metadata);
            }
            match str_of(template.remove("engineVersion").as_ref()) {
                None | Some("v2") => {}
                Some(other) => self.note(
                    ".spec.target.template.engineVersion",
                    format!("{other}: only v2 templates are converted"),
                ),
            }
            if str_of(template.get("mergePolicy")) == Some("Replace") {
                template.remove("mergePolicy");
            }
            if let Some(data) = self.object_at(&mut template, "data", ".spec.target.template")? {
                let mut rendered = Obj::new();
                for (key, value) in data {
                    let converted = str_of(Some(&value)).and_then(go_template);
                    match converted {
                        Some(t) => {
                            rendered.insert(key, json!(t));
                        }
                        None => self.note(
                            format!(".spec.target.template.data.{key}"),
                            "only templates of plain {{ .key }} references are converted \
                             (secretsync templates are Jinja: {{ key }}); rewrite this one by hand",
                        ),
                    }
                }
                if !rendered.is_empty() {
                    ours.insert("template".into(), json!({"data": rendered}));
                }
            }
            self.rest(".spec.target.template", template);
        }
        self.rest(".spec.target", target);
        if !ours.is_empty() {
            out.insert("target".into(), Value::Object(ours));
        }
        Ok(())
    }

    /// `remoteRef` fields secretsync has; the rest reported under `path`.
    fn remote_ref(&mut self, mut remote: Obj, path: &str, property: bool) -> Obj {
        let mut ours = Obj::new();
        Self::copy(&mut remote, &mut ours, &["key", "version"]);
        if property {
            Self::copy(&mut remote, &mut ours, &["property"]);
        }
        match str_of(remote.get("decodingStrategy")) {
            Some("None") => {
                remote.remove("decodingStrategy");
            }
            Some("Base64" | "Base64URL" | "Auto") => {
                Self::copy(&mut remote, &mut ours, &["decodingStrategy"]);
            }
            _ => {}
        }
        if str_of(remote.get("conversionStrategy")) == Some("Default") {
            remote.remove("conversionStrategy");
        }
        if str_of(remote.get("metadataPolicy")) == Some("None") {
            remote.remove("metadataPolicy");
        }
        self.rest(path, remote);
        ours
    }

    /// An entry that reads from a generator or another source (`sourceRef`): reported, with
    /// what else it held.
    fn not_carried_over(&mut self, path: &str, item: Obj) {
        self.rest(path, item);
        self.note(
            path,
            "reads from a generator or another source: not carried over",
        );
    }

    fn data_item(&mut self, item: Value, path: &str) -> Result<Option<Value>, String> {
        let Value::Object(mut item) = item else {
            return Err(format!("{path} is not an object"));
        };
        let Some(remote) = self.object_at(&mut item, "remoteRef", path)? else {
            self.rest(path, item);
            self.note(path, "no remoteRef: not carried over");
            return Ok(None);
        };
        if item.contains_key("sourceRef") {
            self.not_carried_over(path, item);
            return Ok(None);
        }
        let mut ours = Obj::new();
        Self::copy(&mut item, &mut ours, &["secretKey"]);
        let remote = self.remote_ref(remote, &format!("{path}.remoteRef"), true);
        ours.insert("remoteRef".into(), Value::Object(remote));
        self.rest(path, item);
        Ok(Some(Value::Object(ours)))
    }

    fn data_from(&mut self, item: Value, path: &str) -> Result<Option<Value>, String> {
        let Value::Object(mut item) = item else {
            return Err(format!("{path} is not an object"));
        };
        if item.contains_key("sourceRef") {
            self.not_carried_over(path, item);
            return Ok(None);
        }
        let mut ours = Obj::new();
        if let Some(extract) = self.object_at(&mut item, "extract", path)? {
            let remote = self.remote_ref(extract, &format!("{path}.extract"), false);
            ours.insert("extract".into(), Value::Object(remote));
        } else if let Some(mut find) = self.object_at(&mut item, "find", path)? {
            let mut ourfind = Obj::new();
            Self::copy(&mut find, &mut ourfind, &["name", "tags", "path"]);
            if ourfind.is_empty() {
                self.rest(&format!("{path}.find"), find);
                self.rest(path, item);
                self.note(
                    path,
                    "find without name, tags or path (every secret the store can read) is not \
                     supported: name what to read",
                );
                return Ok(None);
            }
            if str_of(find.get("conversionStrategy")) == Some("Default") {
                find.remove("conversionStrategy");
            }
            if str_of(find.get("decodingStrategy")) == Some("None") {
                find.remove("decodingStrategy");
            }
            self.rest(&format!("{path}.find"), find);
            ours.insert("find".into(), Value::Object(ourfind));
            if let Some(rewrite) = item.remove("rewrite") {
                let rules = as_array(rewrite, &format!("{path}.rewrite"))?;
                let mut rules = rules.into_iter();
                match (rules.next(), rules.len()) {
                    (None, _) => {}
                    (Some(Value::Object(mut rule)), 0) if rule.contains_key("regexp") => {
                        let regexp = rule.remove("regexp").unwrap_or_default();
                        ours.insert("rewrite".into(), json!({"regexp": regexp}));
                        self.rest(&format!("{path}.rewrite[0]"), rule);
                    }
                    _ => self.note(
                        format!("{path}.rewrite"),
                        "only one regexp rewrite per entry is supported; keys keep their \
                         remote names",
                    ),
                }
            }
        } else {
            self.rest(path, item);
            self.note(path, "neither extract nor find: not carried over");
            return Ok(None);
        }
        self.rest(path, item);
        Ok(Some(Value::Object(ours)))
    }

    fn store(&mut self, kind: &str, mut doc: Obj) -> Result<Value, String> {
        let metadata = self.metadata(&mut doc, kind == "ClusterSecretStore")?;
        let mut spec = self.object_at(&mut doc, "spec", "")?.unwrap_or_default();
        let mut out = Obj::new();
        let mut provider = self
            .object_at(&mut spec, "provider", ".spec")?
            .unwrap_or_default();
        let names: Vec<String> = provider.keys().cloned().collect();
        let [name] = names.as_slice() else {
            return Err("spec.provider must name exactly one provider".into());
        };
        let Some(Value::Object(config)) = provider.remove(name) else {
            return Err(format!("spec.provider.{name} is not an object"));
        };
        let path = format!(".spec.provider.{name}");
        let converted = match name.as_str() {
            "vault" => self.vault(config, &path)?,
            "aws" => self.aws(config, &path)?,
            "gcpsm" => self.gcpsm(config, &path)?,
            "azurekv" => self.azurekv(config, &path)?,
            "fake" => self.fake(config, &path)?,
            other => {
                return Err(format!(
                    "provider {other} is not supported (secretsync has vault, aws, gcpsm, \
                     azurekv and fake)"
                ));
            }
        };
        out.insert("provider".into(), json!({ name.clone(): converted }));
        if let Some(interval) = spec.remove("refreshInterval") {
            // ESO counts a store's check interval in seconds.
            match interval.as_u64() {
                Some(0) => {}
                Some(seconds) => {
                    out.insert("refreshInterval".into(), json!(format!("{seconds}s")));
                }
                None => self.note(".spec.refreshInterval", "not a number of seconds"),
            }
        }
        if kind == "ClusterSecretStore"
            && let Some(conditions) = spec.remove("conditions")
        {
            let mut ours = Vec::new();
            for (i, condition) in as_array(conditions, ".spec.conditions")?
                .into_iter()
                .enumerate()
            {
                let Value::Object(mut condition) = condition else {
                    continue;
                };
                let mut one = Obj::new();
                Self::copy(
                    &mut condition,
                    &mut one,
                    &["namespaces", "namespaceSelector"],
                );
                self.rest(&format!(".spec.conditions[{i}]"), condition);
                if !one.is_empty() {
                    ours.push(Value::Object(one));
                }
            }
            if !ours.is_empty() {
                out.insert("conditions".into(), Value::Array(ours));
            }
        }
        // The controller class selects which ESO installation serves a store.
        spec.remove("controller");
        self.rest(".spec", spec);
        Ok(json!({
            "apiVersion": OURS,
            "kind": kind,
            "metadata": metadata,
            "spec": out,
        }))
    }

    fn vault(&mut self, mut config: Obj, path: &str) -> Result<Value, String> {
        let mut ours = Obj::new();
        Self::copy(
            &mut config,
            &mut ours,
            &["server", "path", "version", "namespace", "caBundle"],
        );
        let Some(mut auth) = self.object_at(&mut config, "auth", path)? else {
            return Err(
                "vault without auth: secretsync needs one of tokenSecretRef, appRole, kubernetes"
                    .into(),
            );
        };
        let mut ours_auth = Obj::new();
        Self::copy(&mut auth, &mut ours_auth, &["tokenSecretRef"]);
        if let Some(mut app_role) = self.object_at(&mut auth, "appRole", &format!("{path}.auth"))? {
            let mut one = Obj::new();
            Self::copy(&mut app_role, &mut one, &["path", "roleId", "secretRef"]);
            self.rest(&format!("{path}.auth.appRole"), app_role);
            ours_auth.insert("appRole".into(), Value::Object(one));
        }
        if let Some(mut kubernetes) =
            self.object_at(&mut auth, "kubernetes", &format!("{path}.auth"))?
        {
            if !kubernetes.contains_key("serviceAccountRef") {
                return Err(
                    "vault kubernetes auth without serviceAccountRef: ESO then logs in with its \
                     own ServiceAccount (or a token Secret); secretsync requests a token for the \
                     ServiceAccount the store names, so name it"
                        .into(),
                );
            }
            let mut one = Obj::new();
            Self::copy(
                &mut kubernetes,
                &mut one,
                &["mountPath", "role", "serviceAccountRef"],
            );
            if let Some(Value::Object(sa)) = one.get_mut("serviceAccountRef")
                && let Some(audiences) = sa.remove("audiences")
            {
                one.insert("audiences".into(), audiences);
            }
            self.rest(&format!("{path}.auth.kubernetes"), kubernetes);
            ours_auth.insert("kubernetes".into(), Value::Object(one));
        }
        if ours_auth.is_empty() {
            let methods: Vec<String> = auth.keys().cloned().collect();
            return Err(format!(
                "vault auth {} is not supported (secretsync has tokenSecretRef, appRole and \
                 kubernetes)",
                methods.join(", ")
            ));
        }
        self.rest(&format!("{path}.auth"), auth);
        ours.insert("auth".into(), Value::Object(ours_auth));
        self.rest(path, config);
        Ok(Value::Object(ours))
    }

    fn aws(&mut self, mut config: Obj, path: &str) -> Result<Value, String> {
        match str_of(config.remove("service").as_ref()) {
            Some("SecretsManager") => {}
            other => {
                return Err(format!(
                    "aws service {} is not supported (secretsync reads AWS Secrets Manager)",
                    other.unwrap_or("<none>")
                ));
            }
        }
        let mut ours = Obj::new();
        Self::copy(&mut config, &mut ours, &["region", "role"]);
        if let Some(mut auth) = self.object_at(&mut config, "auth", path)? {
            if let Some(mut secret_ref) =
                self.object_at(&mut auth, "secretRef", &format!("{path}.auth"))?
            {
                // ESO spells it `accessKeyIDSecretRef`.
                let mut one = Obj::new();
                if let Some(id) = secret_ref.remove("accessKeyIDSecretRef") {
                    one.insert("accessKeyIdSecretRef".into(), id);
                }
                Self::copy(&mut secret_ref, &mut one, &["secretAccessKeySecretRef"]);
                self.rest(&format!("{path}.auth.secretRef"), secret_ref);
                ours.insert("auth".into(), json!({"secretRef": one}));
            }
            self.rest(&format!("{path}.auth"), auth);
        }
        self.rest(path, config);
        Ok(Value::Object(ours))
    }

    fn gcpsm(&mut self, mut config: Obj, path: &str) -> Result<Value, String> {
        let mut ours = Obj::new();
        Self::copy(&mut config, &mut ours, &["projectID"]);
        if let Some(mut auth) = self.object_at(&mut config, "auth", path)? {
            let Some(mut secret_ref) =
                self.object_at(&mut auth, "secretRef", &format!("{path}.auth"))?
            else {
                let methods: Vec<String> = auth.keys().cloned().collect();
                return Err(format!(
                    "gcpsm auth {} is not supported (secretsync has secretRef, or the \
                     operator's own credentials when auth is omitted)",
                    methods.join(", ")
                ));
            };
            let mut one = Obj::new();
            Self::copy(&mut secret_ref, &mut one, &["secretAccessKeySecretRef"]);
            self.rest(&format!("{path}.auth.secretRef"), secret_ref);
            self.rest(&format!("{path}.auth"), auth);
            ours.insert("auth".into(), json!({"secretRef": one}));
        }
        self.rest(path, config);
        Ok(Value::Object(ours))
    }

    fn azurekv(&mut self, mut config: Obj, path: &str) -> Result<Value, String> {
        let mut ours = Obj::new();
        Self::copy(
            &mut config,
            &mut ours,
            &[
                "vaultUrl",
                "tenantId",
                "authType",
                "serviceAccountRef",
                "identityId",
            ],
        );
        if let Some(mut secret_ref) = self.object_at(&mut config, "authSecretRef", path)? {
            let mut one = Obj::new();
            Self::copy(&mut secret_ref, &mut one, &["clientId", "clientSecret"]);
            self.rest(&format!("{path}.authSecretRef"), secret_ref);
            ours.insert("authSecretRef".into(), Value::Object(one));
        }
        if str_of(config.get("environmentType")) == Some("PublicCloud") {
            config.remove("environmentType");
        }
        self.rest(path, config);
        Ok(Value::Object(ours))
    }

    fn fake(&mut self, mut config: Obj, path: &str) -> Result<Value, String> {
        let mut entries = Vec::new();
        let data = config.remove("data").unwrap_or_else(|| json!([]));
        for (i, entry) in as_array(data, &format!("{path}.data"))?
            .into_iter()
            .enumerate()
        {
            let Value::Object(mut entry) = entry else {
                continue;
            };
            let mut one = Obj::new();
            Self::copy(&mut entry, &mut one, &["key", "value", "version"]);
            self.rest(&format!("{path}.data[{i}]"), entry);
            if one.contains_key("value") {
                entries.push(Value::Object(one));
            }
        }
        self.rest(path, config);
        Ok(json!({"data": entries}))
    }
}

fn as_array(value: Value, path: &str) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        _ => Err(format!("{path} is not a list")),
    }
}

/// A Go duration (`1h`, `1h0m0s`, `90s`, `0`) in the form secretsync reads; `None` for what
/// it does not (fractions, `us`).
fn go_duration(text: &str) -> Option<String> {
    if text == "0" {
        return Some(text.into());
    }
    let mut rest = text;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| after.starts_with(u))?;
        parts.push((number.parse::<u64>().ok()?, unit));
        rest = &after[unit.len()..];
    }
    // `1h0m0s` is what ESO's API returns for `1h`; the zero parts say nothing.
    let kept: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    Some(if kept.is_empty() {
        "0".into()
    } else {
        kept.concat()
    })
}

/// A Go template made only of text and `{{ .key }}` references, in Jinja (`{{ key }}`);
/// `None` when it uses anything else (functions, pipes, conditions).
fn go_template(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let inner = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let key = inner.strip_prefix('.')?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        out.push_str("{{ ");
        out.push_str(key);
        out.push_str(" }}");
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// `--from-cluster`: the ExternalSecrets and SecretStores of `namespace` (or of every
/// namespace) and every ClusterExternalSecret and ClusterSecretStore, at the newest ESO API version the cluster serves.
pub async fn from_cluster(
    client: &kube::Client,
    namespace: &str,
    all_namespaces: bool,
) -> Result<Vec<Value>, kube::Error> {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams};
    use kube::discovery::{Discovery, Scope};
    let discovery = Discovery::new(client.clone())
        .filter(&["external-secrets.io"])
        .run()
        .await?;
    let mut docs = Vec::new();
    for kind in [
        "ExternalSecret",
        "ClusterExternalSecret",
        "SecretStore",
        "ClusterSecretStore",
    ] {
        let Some(group) = discovery.get("external-secrets.io") else {
            break;
        };
        let Some((resource, capabilities)) = group
            .versioned_resources(group.preferred_version_or_latest())
            .into_iter()
            .find(|(r, _)| r.kind == kind)
        else {
            continue;
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced if all_namespaces => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        };
        let resource: &ApiResource = &resource;
        for mut object in api.list(&ListParams::default()).await?.items {
            object.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            if let Value::Object(mut value) = serde_json::to_value(&object).unwrap_or_default() {
                value.remove("status");
                docs.push(Value::Object(value));
            }
        }
    }
    Ok(docs)
}

/// `--rollout-from-reloader` with `--from-cluster`: the Deployments, StatefulSets and
/// DaemonSets of `namespace` (or of every namespace), for their Reloader annotations.
pub async fn workloads_from_cluster(
    client: &kube::Client,
    namespace: &str,
    all_namespaces: bool,
) -> Result<Vec<Value>, kube::Error> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    async fn list<K>(client: &kube::Client, ns: Option<&str>) -> Result<Vec<Value>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: kube::Api<K> = match ns {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        };
        let items = api.list(&Default::default()).await?.items;
        Ok(items
            .iter()
            .filter_map(|w| {
                let mut value = serde_json::to_value(w).ok()?;
                value["apiVersion"] = json!(K::api_version(&()));
                value["kind"] = json!(K::kind(&()));
                Some(value)
            })
            .collect())
    }
    let ns = (!all_namespaces).then_some(namespace);
    let mut docs = list::<Deployment>(client, ns).await?;
    docs.extend(list::<StatefulSet>(client, ns).await?);
    docs.extend(list::<DaemonSet>(client, ns).await?);
    Ok(docs)
}

/// The report, one line per note, grouped by object.
pub fn report(imported: &Imported) -> String {
    let mut by_object: BTreeMap<&str, Vec<&Note>> = BTreeMap::new();
    for note in &imported.notes {
        by_object.entry(&note.object).or_default().push(note);
    }
    let mut out = format!(
        "converted {} object(s); {} field(s) not carried over; {} object(s) not converted; {} \
         document(s) ignored (not External Secrets Operator objects)\n",
        imported.objects.len(),
        imported.notes.len(),
        imported.failed.len(),
        imported.ignored.len()
    );
    for (object, notes) in by_object {
        out.push_str(&format!("{object}:\n"));
        for note in notes {
            out.push_str(&format!("  {}: {}\n", note.field, note.why));
        }
    }
    for failed in &imported.failed {
        out.push_str(&format!(
            "{}: not converted: {}\n",
            failed.object, failed.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Vec<Value> {
        documents(text).unwrap()
    }

    #[test]
    fn an_external_secret_becomes_a_secret_sync_and_what_has_no_equivalent_is_reported() {
        let imported = import(yaml(
            r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db
  namespace: payments
  uid: 1234
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}", team: payments}
spec:
  refreshInterval: 1h0m0s
  refreshPolicy: OnChange
  secretStoreRef: {name: vault, kind: ClusterSecretStore}
  target:
    name: db-credentials
    creationPolicy: Orphan
    deletionPolicy: Delete
    template:
      type: kubernetes.io/basic-auth
      metadata: {labels: {app: api}}
      data:
        dsn: "postgres://{{ .user }}:{{ .password }}@db/app"
        upper: "{{ .password | upper }}"
  data:
    - secretKey: password
      remoteRef: {key: app/db, property: password, decodingStrategy: Base64, conversionStrategy: Default}
    - secretKey: tags
      remoteRef: {key: app/db, metadataPolicy: Fetch}
  dataFrom:
    - find: {name: {regexp: "^app/"}}
      rewrite: [{regexp: {source: "app/(.*)", target: "$1"}}]
    - sourceRef: {generatorRef: {kind: Password, name: pw}}
"#,
        ));
        assert!(imported.failed.is_empty(), "{:?}", imported.failed);
        let expected = json!({
            "apiVersion": "secretsync.io/v1alpha1",
            "kind": "SecretSync",
            "metadata": {"name": "db", "namespace": "payments", "annotations": {"team": "payments"}},
            "spec": {
                "storeRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "refreshInterval": "1h",
                "refreshPolicy": "OnChange",
                "deletionPolicy": "Retain",
                "target": {
                    "name": "db-credentials",
                    "type": "kubernetes.io/basic-auth",
                    "labels": {"app": "api"},
                    "template": {"data": {"dsn": "postgres://{{ user }}:{{ password }}@db/app"}},
                },
                "data": [
                    {"secretKey": "password", "remoteRef": {"key": "app/db", "property": "password", "decodingStrategy": "Base64"}},
                    {"secretKey": "tags", "remoteRef": {"key": "app/db"}},
                ],
                "dataFrom": [
                    {"find": {"name": {"regexp": "^app/"}}, "rewrite": {"regexp": {"source": "app/(.*)", "target": "$1"}}},
                ],
            },
        });
        assert_eq!(imported.objects, [expected]);
        let fields: Vec<&str> = imported.notes.iter().map(|n| n.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                ".spec.target.deletionPolicy",
                ".spec.target.template.data.upper",
                ".spec.data[1].remoteRef.metadataPolicy",
                ".spec.dataFrom[1].sourceRef",
                ".spec.dataFrom[1]",
            ]
        );
        // The result is a valid SecretSync.
        let sync: secretsync_api::SecretSync =
            serde_json::from_value(imported.objects[0].clone()).unwrap();
        secretsync_api::validate::validate_spec(&sync.spec, "db").unwrap();
    }

    #[test]
    fn a_cluster_external_secret_becomes_a_cluster_secret_sync() {
        let imported = import(yaml(
            r#"
apiVersion: external-secrets.io/v1
kind: ClusterExternalSecret
metadata: {name: registry}
spec:
  externalSecretName: registry-creds
  externalSecretMetadata: {labels: {team: platform}, annotations: {owner: ops}}
  namespaceSelectors:
    - matchLabels: {registry-access: "true"}
  namespaces: [ci]
  refreshTime: 1m
  externalSecretSpec:
    refreshInterval: 1h
    secretStoreRef: {name: vault, kind: ClusterSecretStore}
    target: {creationPolicy: Merge}
    data:
      - secretKey: .dockerconfigjson
        remoteRef: {key: platform/registry, property: dockerconfigjson}
"#,
        ));
        assert!(imported.failed.is_empty(), "{:?}", imported.failed);
        let expected = json!({
            "apiVersion": "secretsync.io/v1alpha1",
            "kind": "ClusterSecretSync",
            "metadata": {"name": "registry-creds"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"registry-access": "true"}},
                "namespaces": ["ci"],
                "template": {
                    "metadata": {"labels": {"team": "platform"}, "annotations": {"owner": "ops"}},
                    "spec": {
                        "storeRef": {"name": "vault", "kind": "ClusterSecretStore"},
                        "refreshInterval": "1h",
                        "data": [{"secretKey": ".dockerconfigjson", "remoteRef": {"key": "platform/registry", "property": "dockerconfigjson"}}],
                    },
                },
            },
        });
        assert_eq!(imported.objects, [expected]);
        let fields: Vec<&str> = imported.notes.iter().map(|n| n.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                ".metadata.name",
                ".spec.externalSecretSpec.target.creationPolicy",
                ".spec.refreshTime",
            ],
            "{:?}",
            imported.notes
        );
    }

    #[test]
    fn a_cluster_external_secret_that_cannot_be_one_cluster_secret_sync_is_refused_with_why() {
        let cases = [
            (
                "namespaceSelectors: [{matchLabels: {a: b}}, {matchLabels: {c: d}}]\n  externalSecretSpec: {secretStoreRef: {name: v, kind: ClusterSecretStore}, data: [{secretKey: k, remoteRef: {key: x}}]}",
                "2 namespace selectors",
            ),
            (
                "namespaces: [a]\n  externalSecretSpec: {secretStoreRef: {name: v}, data: [{secretKey: k, remoteRef: {key: x}}]}",
                "reads only ClusterSecretStores",
            ),
            ("namespaces: [a]", "no spec.externalSecretSpec"),
        ];
        for (spec, why) in cases {
            let imported = import(yaml(&format!(
                "apiVersion: external-secrets.io/v1beta1\nkind: ClusterExternalSecret\nmetadata: {{name: x}}\nspec:\n  {spec}\n"
            )));
            assert!(imported.objects.is_empty(), "{spec}");
            assert!(
                imported.failed[0].why.contains(why),
                "{spec}: {:?}",
                imported.failed
            );
        }
    }

    #[test]
    fn stores_carry_over_by_name_and_unsupported_providers_are_not_converted() {
        let imported = import(yaml(
            r#"
apiVersion: v1
kind: List
items:
  - apiVersion: external-secrets.io/v1beta1
    kind: ClusterSecretStore
    metadata: {name: aws}
    spec:
      refreshInterval: 60
      provider:
        aws:
          service: SecretsManager
          region: eu-west-1
          auth:
            secretRef:
              accessKeyIDSecretRef: {name: awssm, key: id, namespace: ops}
              secretAccessKeySecretRef: {name: awssm, key: secret, namespace: ops}
      conditions: [{namespaces: [payments], namespaceRegexes: ["^team-"]}]
  - apiVersion: external-secrets.io/v1
    kind: SecretStore
    metadata: {name: params, namespace: payments}
    spec: {provider: {aws: {service: ParameterStore, region: eu-west-1}}}
  - apiVersion: external-secrets.io/v1
    kind: SecretStore
    metadata: {name: op, namespace: payments}
    spec: {provider: {onepassword: {connectHost: "http://op"}}}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: other}
"#,
        ));
        assert_eq!(
            imported.objects,
            [json!({
                "apiVersion": "secretsync.io/v1alpha1",
                "kind": "ClusterSecretStore",
                "metadata": {"name": "aws"},
                "spec": {
                    "provider": {"aws": {"region": "eu-west-1", "auth": {"secretRef": {
                        "accessKeyIdSecretRef": {"name": "awssm", "key": "id", "namespace": "ops"},
                        "secretAccessKeySecretRef": {"name": "awssm", "key": "secret", "namespace": "ops"},
                    }}}},
                    "refreshInterval": "60s",
                    "conditions": [{"namespaces": ["payments"]}],
                },
            })]
        );
        assert_eq!(imported.notes.len(), 1);
        assert_eq!(
            imported.notes[0].field,
            ".spec.conditions[0].namespaceRegexes"
        );
        let failed: Vec<&str> = imported.failed.iter().map(|n| n.object.as_str()).collect();
        assert_eq!(
            failed,
            ["SecretStore payments/params", "SecretStore payments/op"]
        );
        assert!(imported.failed[1].why.contains("onepassword"));
        assert_eq!(imported.ignored, ["ConfigMap other"]);
        let store: secretsync_api::ClusterSecretStore =
            serde_json::from_value(imported.objects[0].clone()).unwrap();
        secretsync_api::validate::validate_store(
            &store.spec.store,
            secretsync_api::validate::StoreScope::Cluster,
        )
        .unwrap();
    }

    #[test]
    fn durations_and_templates_convert_only_when_nothing_is_guessed() {
        assert_eq!(go_duration("1h0m0s").as_deref(), Some("1h"));
        assert_eq!(go_duration("1h30m").as_deref(), Some("1h30m"));
        assert_eq!(go_duration("0s").as_deref(), Some("0"));
        assert_eq!(go_duration("1.5h"), None);
        assert_eq!(
            go_template("{{ .a }}-{{.b}}").as_deref(),
            Some("{{ a }}-{{ b }}")
        );
        assert_eq!(go_template("{{ .a | b64dec }}"), None);
        assert_eq!(go_template("{{ if .a }}x{{ end }}"), None);
    }
}
