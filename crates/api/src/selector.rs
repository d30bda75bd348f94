//! Label selectors: matching in memory, and rendering for the API server's `labelSelector`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether a namespace is picked by name (`names`) or, through its `labels`, by `selector`:
/// how a store's `conditions` entry and a ClusterSecretSync pick namespaces. Neither set
/// picks none.
pub fn picks_namespace(
    names: Option<&[String]>,
    selector: Option<&LabelSelector>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    names.is_some_and(|names| names.iter().any(|n| n == namespace))
        || selector.is_some_and(|selector| matches(selector, labels))
}

/// Whether `labels` satisfy `selector` (matchLabels AND every matchExpression), with the
/// API server's semantics. An unknown operator matches nothing, so a typo never widens a
/// selector.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|expr| {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// The selector in the API server's query syntax (`a=b,c in (d,e),!f`).
pub fn to_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            "DoesNotExist" => format!("!{}", expr.key),
            other => format!("{} {other} ({values})", expr.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "payments")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["api", "worker"]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(
            &selector,
            &labels(&[("team", "payments"), ("tier", "api")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("team", "payments"), ("tier", "db")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("team", "payments"), ("tier", "api"), ("legacy", "1")])
        ));
        assert!(!matches(&selector, &labels(&[("tier", "api")])));
        assert_eq!(
            to_query(&selector),
            "team=payments,tier in (api,worker),!legacy"
        );
    }

    #[test]
    fn empty_selector_matches_everything_and_unknown_operator_nothing() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        let bogus = LabelSelector {
            match_expressions: Some(vec![expr("a", "Like", &["b"])]),
            ..Default::default()
        };
        assert!(!matches(&bogus, &labels(&[("a", "b")])));
    }

    #[test]
    fn not_in_matches_absent_key() {
        let selector = LabelSelector {
            match_expressions: Some(vec![expr("env", "NotIn", &["prod"])]),
            ..Default::default()
        };
        assert!(matches(&selector, &labels(&[])));
        assert!(matches(&selector, &labels(&[("env", "dev")])));
        assert!(!matches(&selector, &labels(&[("env", "prod")])));
        assert_eq!(to_query(&selector), "env notin (prod)");
    }
}
