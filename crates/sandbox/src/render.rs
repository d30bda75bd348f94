//! How stored objects are shown: full objects relabelled to the requested version, or
//! metadata-only `PartialObjectMetadata`.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Full,
    Metadata,
    /// A one-row `meta.k8s.io/v1` Table (kubectl's human-readable output).
    Table,
}

impl Render {
    /// From an Accept header: kube-client asks for
    /// `application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.
    pub fn from_accept(accept: &str) -> Self {
        let first = accept.split(',').next().unwrap_or("");
        if crate::table::wants_table(accept) {
            Self::Table
        } else if first.contains("as=PartialObjectMetadata") {
            Self::Metadata
        } else {
            Self::Full
        }
    }
}

pub fn render(v: &Value, def: &ResourceDef, version: &str, how: Render) -> Value {
    match how {
        Render::Full if def.is_events_v1() => crate::events::from_core(v),
        Render::Full => {
            let av = def.api_version(version);
            if v.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                v.clone()
            } else {
                // CRD versions share storage (conversion strategy None relabels).
                let mut c = v.clone();
                c["apiVersion"] = json!(av);
                c
            }
        }
        Render::Table => crate::table::table(
            def,
            version,
            &[v],
            v.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        Render::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}
