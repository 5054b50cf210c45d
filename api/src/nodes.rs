//! Which nodes a device class selects: its NodeSelector, or (unset) every node without a
//! NoSchedule taint that the LVMCluster does not tolerate. The same rules the scheduler applies to
//! the vg-manager DaemonSet, so the expected node count matches where the agent actually runs.

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSpec, Taint, Toleration,
};

/// Whether `node` matches any term of `selector` (terms are ORed, requirements ANDed).
pub fn matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        let has_any = term
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
            || term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
        // An empty term matches nothing (Kubernetes semantics).
        has_any
            && exprs.into_iter().all(|r| requirement(r, label(&r.key)))
            && fields
                .into_iter()
                .all(|r| r.key == "metadata.name" && requirement(r, Some(name)))
    })
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = t
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let value_ok = match t.operator.as_deref() {
        Some("Exists") => true,
        _ => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    };
    effect_ok && key_ok && value_ok
}

/// Whether a node without a class selector is eligible: no untolerated NoSchedule/NoExecute taint.
pub fn schedulable(node: &Node, tolerations: &[Toleration]) -> bool {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The names of the nodes a class with `selector` runs on.
pub fn selected<'a>(
    selector: Option<&NodeSelector>,
    tolerations: &[Toleration],
    nodes: &'a [Node],
) -> Vec<&'a str> {
    nodes
        .iter()
        .filter(|n| schedulable(n, tolerations) && selector.is_none_or(|s| matches(s, n)))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect()
}

/// A Node with labels and (key, effect) taints: for tests of node selection here and downstream.
#[doc(hidden)]
pub fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n.spec = Some(NodeSpec {
        taints: Some(
            taints
                .iter()
                .map(|(k, e)| Taint {
                    key: k.to_string(),
                    effect: e.to_string(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelectorTerm;

    fn sel(key: &str, op: &str, values: &[&str]) -> NodeSelector {
        NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                match_fields: None,
            }],
        }
    }

    #[test]
    fn operators() {
        let n = node("a", &[("zone", "z1"), ("disks", "4")], &[]);
        assert!(matches(&sel("zone", "In", &["z1", "z2"]), &n));
        assert!(!matches(&sel("zone", "NotIn", &["z1"]), &n));
        assert!(
            matches(&sel("rack", "NotIn", &["r1"]), &n),
            "NotIn matches a missing label"
        );
        assert!(matches(&sel("zone", "Exists", &[]), &n));
        assert!(matches(&sel("rack", "DoesNotExist", &[]), &n));
        assert!(
            matches(&sel("disks", "Gt", &["3"]), &n) && !matches(&sel("disks", "Lt", &["3"]), &n)
        );
        assert!(
            !matches(&sel("zone", "Gt", &["3"]), &n),
            "Gt on a non-number is false"
        );
    }

    #[test]
    fn match_fields_by_name_and_empty_terms() {
        let n = node("worker-1", &[], &[]);
        let by_name = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec!["worker-1".into()]),
                }]),
                match_expressions: None,
            }],
        };
        assert!(matches(&by_name, &n));
        let empty = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm::default()],
        };
        assert!(!matches(&empty, &n));
    }

    #[test]
    fn taints_exclude_unless_tolerated() {
        let nodes = [
            node("w", &[], &[]),
            node(
                "m",
                &[],
                &[("node-role.kubernetes.io/master", "NoSchedule")],
            ),
            node("p", &[], &[("x", "PreferNoSchedule")]),
        ];
        assert_eq!(selected(None, &[], &nodes), ["w", "p"]);
        let tol = Toleration {
            key: Some("node-role.kubernetes.io/master".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(selected(None, &[tol], &nodes), ["w", "m", "p"]);
        let wrong_effect = Toleration {
            key: Some("node-role.kubernetes.io/master".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        assert_eq!(selected(None, &[wrong_effect], &nodes), ["w", "p"]);
    }
}
