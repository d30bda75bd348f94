//! core/v1 and events.k8s.io/v1 Events are two views of one stored object, as in the real
//! API server: events.k8s.io/v1 requests are converted to and from the stored core form.

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field)
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(v: &Value, api_version: &str, to_new: bool) -> Value {
    let Some(m) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, val) in m {
        let renamed = RENAMES
            .iter()
            .find(|(core, new)| if to_new { core == k } else { new == k })
            .map(|(core, new)| if to_new { *new } else { *core })
            .unwrap_or(k.as_str());
        out.insert(renamed.to_string(), val.clone());
    }
    if out.contains_key("apiVersion") || to_new {
        out.insert("apiVersion".into(), Value::String(api_version.into()));
    }
    Value::Object(out)
}

/// The stored (core/v1) form of an events.k8s.io/v1 Event.
pub fn to_core(v: &Value) -> Value {
    rename(v, "v1", false)
}

/// The events.k8s.io/v1 view of a stored Event.
pub fn from_core(v: &Value) -> Value {
    rename(v, "events.k8s.io/v1", true)
}

/// Field selector paths of the events.k8s.io/v1 view, in stored terms.
pub fn core_field_path(path: &str) -> String {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    match RENAMES.iter().find(|(_, new)| *new == head) {
        Some((core, _)) if rest.is_empty() => core.to_string(),
        Some((core, _)) => format!("{core}.{rest}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_round_trip() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"name": "x"}, "note": "hi", "reportingController": "c", "reason": "R"});
        let core = to_core(&new);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "x");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(from_core(&core), new);
        assert_eq!(core_field_path("regarding.name"), "involvedObject.name");
        assert_eq!(core_field_path("reason"), "reason");
    }
}
