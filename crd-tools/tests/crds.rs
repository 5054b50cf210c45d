//! The generated CRDs are fresh, and the API server will accept them: structural schemas, valid
//! defaults, CEL rules that compile, transition rules only where `oldSelf` exists, and bounded
//! lists wherever a rule iterates (unbounded ones blow the API server's CEL cost budget).

mod common;
use common::*;
use crd_tools::validate::check_value;
use kube_cel::cel::Program;
use serde_json::Value;

#[test]
fn crds_dir_matches_the_types() {
    let stale = crd_tools::render::sync_dir(&repo_root().join("crds"), true).unwrap();
    assert!(
        stale.is_empty(),
        "crds/ is stale, run `make crds`: {stale:?}"
    );
}

#[test]
fn there_are_four_crds_with_status_and_printer_columns() {
    let crds = lvms_api::crds();
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "lvmclusters.lvm.topolvm.io",
            "lvmvolumegroups.lvm.topolvm.io",
            "lvmvolumegroupnodestatuses.lvm.topolvm.io",
            "logicalvolumes.topolvm.io"
        ]
    );
    let cluster = &crds[0].spec.versions[0];
    assert!(cluster.subresources.as_ref().unwrap().status.is_some());
    let cols = cluster.additional_printer_columns.as_ref().unwrap();
    assert!(
        cols.iter()
            .any(|c| c.name == "Status" && c.json_path == ".status.state")
    );
    let lv = &crds[3];
    assert_eq!(lv.spec.scope, "Cluster");
    let cols: Vec<_> = lv.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.json_path.as_str())
        .collect();
    for want in [
        ".spec.nodeName",
        ".spec.deviceClass",
        ".spec.size",
        ".status.volumeID",
    ] {
        assert!(cols.contains(&want), "LogicalVolume lacks column {want}");
    }
}

fn schemas() -> Vec<(String, Value)> {
    lvms_api::crds()
        .into_iter()
        .flat_map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            crd.spec.versions.into_iter().map(move |v| {
                let s = v.schema.unwrap().open_api_v3_schema.unwrap();
                (
                    format!("{name}/{}", v.name),
                    serde_json::to_value(s).unwrap(),
                )
            })
        })
        .collect()
}

/// Visits every schema node with its path and whether `oldSelf` is defined there.
fn walk(node: &Value, path: &str, correlatable: bool, f: &mut dyn FnMut(&Value, &str, bool)) {
    f(node, path, correlatable);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            walk(child, &format!("{path}.{k}"), correlatable, f);
        }
    }
    if let Some(add) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(add, &format!("{path}.*"), correlatable, f);
    }
    if let Some(items) = node.get("items") {
        let map_list = node.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
        walk(items, &format!("{path}[]"), correlatable && map_list, f);
    }
}

#[test]
fn schemas_are_structural() {
    for (crd, schema) in schemas() {
        walk(&schema, "", true, &mut |node, path, _| {
            let obj = node.as_object().unwrap();
            for banned in [
                "$ref",
                "definitions",
                "$defs",
                "$schema",
                "oneOf",
                "allOf",
                "not",
            ] {
                assert!(
                    !obj.contains_key(banned),
                    "{crd}{path}: `{banned}` is not allowed in a structural schema"
                );
            }
            let free = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            assert!(
                free || obj.get("type").is_some_and(Value::is_string),
                "{crd}{path}: every node needs one type"
            );
            assert!(
                !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
                "{crd}{path}: properties and additionalProperties are exclusive"
            );
            if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let item = &node["items"];
                let required: Vec<&str> = item["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for key in node["x-kubernetes-list-map-keys"].as_array().unwrap() {
                    let key = key.as_str().unwrap();
                    assert!(
                        required.contains(&key) || item["properties"][key].get("default").is_some(),
                        "{crd}{path}: map key {key} must be required"
                    );
                }
            }
            if let Some(d) = obj.get("default") {
                let errs = check_value(node, d, path);
                assert!(
                    errs.is_empty(),
                    "{crd}{path}: default {d} is invalid: {errs:?}"
                );
            }
        });
    }
}

#[test]
fn cel_rules_compile_and_point_at_real_fields() {
    let mut rules = 0;
    for (crd, schema) in schemas() {
        walk(&schema, "", true, &mut |node, path, correlatable| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                Program::compile(text).unwrap_or_else(|e| panic!("{crd}{path}: `{text}`: {e}"));
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{crd}{path}: `{text}` has no message"
                );
                if text.contains("oldSelf") {
                    assert!(
                        correlatable,
                        "{crd}{path}: `{text}` uses oldSelf where the API server cannot correlate an old value"
                    );
                }
                if let Some(fp) = rule.get("fieldPath").and_then(Value::as_str) {
                    let mut at = node;
                    for part in fp.trim_start_matches('.').split('.') {
                        at = &at["properties"][part];
                        assert!(at.is_object(), "{crd}{path}: fieldPath {fp} does not exist");
                    }
                }
            }
        });
    }
    assert!(
        rules >= 20,
        "expected the full rule set, found {rules} rules"
    );
}

#[test]
fn lists_that_rules_iterate_are_bounded() {
    let macros = [
        ".all(",
        ".exists(",
        ".exists_one(",
        ".filter(",
        ".map(",
        " in self.",
    ];
    for (crd, schema) in schemas() {
        walk(&schema, "", true, &mut |node, path, _| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = rule["rule"].as_str().unwrap();
                if !macros.iter().any(|m| text.contains(m)) {
                    continue;
                }
                // Every list the rule can reach by name (or `self` itself) must be bounded, and so
                // must the strings in it: comparison cost grows with their length.
                walk(node, path, true, &mut |n, p, _| {
                    let name = p.rsplit('.').next().unwrap_or("").trim_end_matches("[]");
                    let named = n.get("type").and_then(Value::as_str) == Some("array")
                        && (p == path || text.contains(&format!(".{name}")));
                    if named {
                        assert!(
                            n.get("maxItems").is_some(),
                            "{crd}{p}: `{text}` iterates a list without maxItems"
                        );
                        let item = &n["items"];
                        if item["type"] == "string" {
                            assert!(
                                item.get("maxLength").is_some(),
                                "{crd}{p}: strings compared by `{text}` lack maxLength"
                            );
                        }
                    }
                });
            }
        });
    }
}

/// What the API server checks when the CRDs are applied: every rule type-checks against its
/// schema node and fits the CEL cost budgets, estimated as kube-apiserver 1.32 estimates them
/// (calibrated in apiserver_calibration.rs). Failing here names the rule's path and factor in the
/// server's words.
#[test]
fn the_api_server_would_accept_every_crd() {
    for crd in lvms_api::crds() {
        let value = serde_json::to_value(&crd).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let reports = crd_tools::cost::check_crd(&value).unwrap();
        if let Some(message) = crd_tools::cost::server_message(&name, &reports) {
            panic!("kube-apiserver would refuse a generated CRD:\n{message}");
        }
    }
}

/// Room for the fields still to come: no rule above four fifths of the per-rule limit, and no CRD
/// above a third of the whole-schema limit, so one more quantity field cannot tip either over.
#[test]
fn the_cel_budget_has_headroom() {
    use crd_tools::cost::{RULE_LIMIT, SCHEMA_LIMIT};
    for crd in lvms_api::crds() {
        let value = serde_json::to_value(&crd).unwrap();
        for report in crd_tools::cost::check_crd(&value).unwrap() {
            assert!(
                report.total <= SCHEMA_LIMIT / 3,
                "{}: the rules cost {} of {SCHEMA_LIMIT}",
                report.crd,
                report.total
            );
            for rule in &report.rules {
                assert!(
                    rule.total <= RULE_LIMIT / 5 * 4,
                    "{}: {} costs {} of {RULE_LIMIT}: {}",
                    report.crd,
                    rule.path,
                    rule.total,
                    rule.rule
                );
            }
        }
    }
}
