//! Property tests of everything that parses what users type: durations, names, Secret keys
//! and whole specs. Whatever the input, the answer is a value or a clear error, never a
//! panic, and what is accepted means what it says.

use std::time::Duration;

use proptest::prelude::*;
use secretsync_api::SecretSyncSpec;
use secretsync_api::duration::parse_duration;
use secretsync_api::keys::validate_secret_key;
use secretsync_api::naming::{MAX_NAME_LEN, parse_versioned_name, versioned_name};
use secretsync_api::validate::validate_spec;
use serde_json::{Value, json};

proptest! {
    #[test]
    fn any_text_is_a_duration_or_an_error(input in "\\PC{0,16}|[0-9hmsu.µ-]{0,12}") {
        let _ = parse_duration(&input);
    }

    #[test]
    fn durations_mean_their_units(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(parse_duration(&text).unwrap(), expected);
    }

    #[test]
    fn versioned_names_are_valid_and_parse_back(base in "\\PC{0,20}|[a-z0-9][a-z0-9.-]{0,250}", version in any::<i64>()) {
        match versioned_name(&base, version) {
            Ok(name) => {
                prop_assert!(name.len() <= MAX_NAME_LEN);
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
                prop_assert_eq!(parse_versioned_name(&base, &name), Some(version));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn only_exact_versions_parse(base in "[a-z]{1,6}", suffix in "\\PC{0,8}") {
        let name = format!("{base}-v{suffix}");
        if let Some(v) = parse_versioned_name(&base, &name) {
            prop_assert_eq!(versioned_name(&base, v).unwrap(), name);
        }
    }

    #[test]
    fn accepted_secret_keys_are_what_the_api_server_accepts(key in "\\PC{0,12}|[-._a-zA-Z0-9]{0,300}") {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        prop_assert_eq!(validate_secret_key(&key).is_ok(), valid, "{:?}", key);
    }

    /// Any JSON that deserializes as a spec validates or fails with problems; none panics.
    #[test]
    fn any_spec_validates_or_lists_its_problems(spec in any_spec(), name in "[a-z0-9-]{0,70}") {
        if let Ok(spec) = serde_json::from_value::<SecretSyncSpec>(spec)
            && let Err(problems) = validate_spec(&spec, &name)
        {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.iter().all(|p| !p.is_empty()));
        }
    }
}

/// Strings that are good, bad and odd in the places a spec takes them.
fn text() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(json!("")),
        Just(json!("db")),
        Just(json!("1h")),
        Just(json!("0")),
        Just(json!("-1s")),
        Just(json!("app/db")),
        Just(json!("^(.*)$")),
        Just(json!("(")),
        Just(json!("$1")),
        Just(json!("bad key")),
        "\\PC{0,10}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
}

fn any_spec() -> impl Strategy<Value = Value> {
    let remote_ref = (text(), text(), text()).prop_map(
        |(key, property, version)| json!({"key": key, "property": property, "version": version}),
    );
    let data = proptest::collection::vec(
        (text(), remote_ref.clone()).prop_map(|(k, r)| json!({"secretKey": k, "remoteRef": r})),
        0..3,
    );
    let data_from = proptest::collection::vec(
        prop_oneof![
            text().prop_map(|k| json!({"extract": {"key": k}})),
            (text(), text(), text()).prop_map(|(n, p, t)| json!({
                "find": {"name": {"regexp": n}, "path": p},
                "rewrite": {"regexp": {"source": n, "target": t}},
            })),
        ],
        0..3,
    );
    let rollout =
        (text(), text(), text(), any::<bool>()).prop_map(|(kind, name, timeout, rollback)| {
            json!({
                "targets": [{"kind": kind, "name": name}],
                "timeout": timeout,
                "onFailure": if rollback { "Rollback" } else { "Hold" },
            })
        });
    (
        data,
        data_from,
        (text(), text(), text()),
        (
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec(any::<i64>(), 0..3),
        ),
        rollout,
        proptest::collection::btree_map("[a-z]{1,5}", "\\PC{0,40}", 0..3),
    )
        .prop_map(
            |(
                data,
                data_from,
                (store, target, interval),
                (version, pin, revoked),
                rollout,
                template,
            )| {
                json!({
                    "storeRef": {"name": store},
                    "version": version,
                    "refreshInterval": interval,
                    "data": data,
                    "dataFrom": data_from,
                    "target": {"name": target, "template": {"data": template}},
                    "history": {"limit": version % 50},
                    "pinVersion": pin,
                    "revokedVersions": revoked,
                    "rollout": rollout,
                })
            },
        )
}
