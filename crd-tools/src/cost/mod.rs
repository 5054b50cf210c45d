//! What kube-apiserver checks of a CRD's CEL rules when the CRD is created or updated, offline:
//! each rule must compile against its schema node, transition rules (`oldSelf`) must sit where an
//! old value can be correlated, and the estimated cost must fit two budgets:
//!
//! - per rule: its worst-case cost per evaluation times the largest number of times it can run
//!   (the product of the `maxItems`/`maxProperties` above it, or, under an unbounded list or map,
//!   as many copies of the node as fit in one request) must not exceed [`RULE_LIMIT`];
//! - per schema: the sum of those over every rule must not exceed [`SCHEMA_LIMIT`].
//!
//! The verdicts and messages follow `apiextensions/validation/validation.go` of Kubernetes 1.32;
//! `tests/apiserver_calibration.rs` holds them against records measured on a real API server.

mod checker;
pub mod decl;

use std::rc::Rc;

use serde_json::Value;

pub use checker::{Checked, check};
use decl::{Decl, decl_type, max_cardinality};

/// `StaticEstimatedCostLimit`: the most one rule may cost, cardinality included.
pub const RULE_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: the most all rules of one schema may cost together.
pub const SCHEMA_LIMIT: u64 = 100_000_000;
/// Rules below 1 % of the schema limit are never named as contributors to an excess.
const CONTRIBUTOR_FLOOR: u64 = SCHEMA_LIMIT / 100;

/// One rule (or messageExpression) and its estimate.
#[derive(Debug, Clone)]
pub struct RuleCost {
    /// The server's field path, e.g. `spec.validation.openAPIV3Schema.properties[spec]...rule`.
    pub path: String,
    pub rule: String,
    /// Worst-case cost of one evaluation.
    pub cost: u64,
    /// How many times it may run, and whether a bound (rather than the request size) says so.
    pub cardinality: u64,
    pub bounded: bool,
    /// `cost × cardinality`: what the server compares with [`RULE_LIMIT`].
    pub total: u64,
}

/// The verdict on one schema of a CRD.
#[derive(Debug, Clone)]
pub struct Report {
    /// `<plural>.<group>`, and the version when the versions' schemas differ.
    pub crd: String,
    pub schema_path: String,
    pub rules: Vec<RuleCost>,
    /// The sum the server compares with [`SCHEMA_LIMIT`].
    pub total: u64,
    /// The server's error lines (`<path>: Forbidden: ...`), in its order; empty when accepted.
    pub errors: Vec<String>,
}

impl Report {
    pub fn accepted(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The API server's answer to a write of a CRD with these reports, as kubectl prints it.
pub fn server_message(crd_name: &str, reports: &[Report]) -> Option<String> {
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    match errors.as_slice() {
        [] => None,
        [one] => Some(format!(
            "The CustomResourceDefinition \"{crd_name}\" is invalid: {one}"
        )),
        many => Some(format!(
            "The CustomResourceDefinition \"{crd_name}\" is invalid: \n{}",
            many.iter()
                .map(|e| format!("* {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// `getCostErrorMessage`: the factor by which `cost` exceeds `limit`, printed as the server does.
pub fn cost_message(what: &str, cost: u64, limit: u64) -> String {
    format!(
        "{what} exceeds budget by factor of {} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)",
        factor_text(cost, limit)
    )
}

/// The factor as the server prints it: six decimals below 1.5, one up to 100, then a phrase.
pub fn factor_text(cost: u64, limit: u64) -> String {
    let f = cost as f64 / limit as f64;
    if f > 100.0 {
        "more than 100x".into()
    } else if f < 1.5 {
        format!("{f:.6}x")
    } else {
        format!("{f:.1}x")
    }
}

/// Checks every served schema of a CRD (a `CustomResourceDefinition` object as JSON).
pub fn check_crd(crd: &Value) -> Result<Vec<Report>, String> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("the CRD has no metadata.name")?;
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{name}: no spec.versions"))?;
    let schemas: Vec<(&str, &Value)> = versions
        .iter()
        .filter_map(|v| {
            let s = v.pointer("/schema/openAPIV3Schema")?;
            Some((v.get("name").and_then(Value::as_str).unwrap_or("?"), s))
        })
        .collect();
    // The server's internal form keeps one top-level schema when all versions share it.
    let shared = schemas.windows(2).all(|w| w[0].1 == w[1].1);
    let checked = if shared {
        &schemas[..schemas.len().min(1)]
    } else {
        &schemas[..]
    };
    let mut reports = Vec::new();
    for (i, (version, schema)) in checked.iter().enumerate() {
        let (label, base) = if shared {
            (
                name.to_string(),
                "spec.validation.openAPIV3Schema".to_string(),
            )
        } else {
            (
                format!("{name} ({version})"),
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
            )
        };
        reports.push(check_schema(&label, &base, schema));
    }
    Ok(reports)
}

/// Checks one `openAPIV3Schema`, whose errors are reported under `base`.
pub fn check_schema(label: &str, base: &str, schema: &Value) -> Report {
    let mut walk = Walk {
        rules: Vec::new(),
        errors: Vec::new(),
        total: 0,
        most_expensive: Vec::new(),
    };
    walk.node(schema, base, Some(1), None, true);
    let mut errors = walk.errors;
    if walk.total > SCHEMA_LIMIT {
        for (path, _) in &walk.most_expensive {
            errors.push(format!(
                "{path}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"
            ));
        }
        errors.push(format!(
            "{base}: Forbidden: {}",
            cost_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                walk.total,
                SCHEMA_LIMIT
            )
        ));
    }
    Report {
        crd: label.to_string(),
        schema_path: base.to_string(),
        rules: walk.rules,
        total: walk.total,
        errors,
    }
}

struct Walk {
    rules: Vec<RuleCost>,
    errors: Vec<String>,
    total: u64,
    /// The four costliest rules of at least 1 % of the schema limit, costliest first.
    most_expensive: Vec<(String, u64)>,
}

/// How many children one value of `schema` can have (`extractMaxElements`): a list's maxItems, a
/// map's maxProperties, one for an object's properties; `None` when unbounded.
fn max_children(schema: &Value) -> Option<u64> {
    let bound = |k: &str| {
        schema
            .get(k)
            .and_then(Value::as_i64)
            .map(|v| v.max(0) as u64)
    };
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if schema.get("additionalProperties").is_some() => bound("maxProperties"),
        Some("array") => bound("maxItems"),
        _ => Some(1),
    }
}

fn times(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_mul(b?))
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Walk {
    /// `cardinality`: how often a value here can occur (`None`: under an unbounded list or map).
    /// `uncorrelatable`: the highest list above that is not a map list (oldSelf is undefined).
    fn node(
        &mut self,
        schema: &Value,
        path: &str,
        cardinality: Option<u64>,
        uncorrelatable: Option<&str>,
        root: bool,
    ) {
        let below = times(cardinality, max_children(schema));
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let mut names: Vec<&String> = props.keys().collect();
            names.sort();
            for name in names {
                let child = format!("{path}.properties[{name}]");
                self.node(&props[name], &child, below, uncorrelatable, false);
            }
        }
        if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            let child = format!("{path}.additionalProperties");
            self.node(add, &child, below, uncorrelatable, false);
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            let map_list =
                schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            let forbid = uncorrelatable.or(if map_list { None } else { Some(path) });
            self.node(items, &format!("{path}.items"), below, forbid, false);
        }
        let rules = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if rules.is_empty() {
            return;
        }
        let embedded = schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
        let Some(decl) = decl_type(schema, root || embedded) else {
            self.errors.push(format!(
                "{path}.x-kubernetes-validations: Internal error: rule declared on schema that does not support validation rules"
            ));
            return;
        };
        for (i, rule) in rules.iter().enumerate() {
            self.rule(
                &decl,
                rule,
                &format!("{path}.x-kubernetes-validations[{i}]"),
                cardinality,
                uncorrelatable,
            );
        }
    }

    fn rule(
        &mut self,
        decl: &Rc<Decl>,
        rule: &Value,
        at: &str,
        cardinality: Option<u64>,
        uncorrelatable: Option<&str>,
    ) {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        if text.trim().is_empty() {
            self.errors
                .push(format!("{at}.rule: Required value: rule is not specified"));
            return;
        }
        let (count, bounded) = match cardinality {
            Some(c) => (c, true),
            None => (max_cardinality(decl.min_size), false),
        };
        let checked = check(text, decl);
        let cost = checked.as_ref().map_or(0, |c| c.max_cost);
        let total = if cost == 0 {
            0
        } else {
            cost.saturating_mul(count)
        };
        let rule_path = format!("{at}.rule");
        if total > RULE_LIMIT {
            self.errors.push(format!(
                "{rule_path}: Forbidden: {}",
                cost_message("estimated rule cost", total, RULE_LIMIT)
            ));
        }
        self.observe(&rule_path, total);
        self.rules.push(RuleCost {
            path: rule_path.clone(),
            rule: text.to_string(),
            cost,
            cardinality: count,
            bounded,
            total,
        });
        match &checked {
            Err(e) => self.invalid(&rule_path, text, e),
            Ok(c) if !c.is_bool => {
                self.invalid(&rule_path, text, "cel expression must evaluate to a bool")
            }
            Ok(_) => {}
        }
        if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str) {
            self.message_expression(decl, expr, at, count);
        }
        let uses_old_self = checked.as_ref().is_ok_and(|c| c.uses_old_self);
        if uses_old_self {
            if let Some(list) = uncorrelatable {
                let why = format!(
                    "oldSelf cannot be used on the uncorrelatable portion of the schema within {list}"
                );
                self.invalid(&rule_path, text, &why);
            }
        } else if let Some(opt) = rule.get("optionalOldSelf").and_then(Value::as_bool) {
            self.errors.push(format!(
                "{at}.optionalOldSelf: Invalid value: {opt}: may not be set if oldSelf is not used in rule"
            ));
        }
    }

    fn message_expression(&mut self, decl: &Rc<Decl>, expr: &str, at: &str, count: u64) {
        let path = format!("{at}.messageExpression");
        match check(expr, decl) {
            Err(e) => self.invalid(&path, expr, &e),
            Ok(c) if !c.is_string => self.invalid(&path, expr, "must evaluate to a string"),
            Ok(c) => {
                let total = if c.max_cost == 0 {
                    0
                } else {
                    c.max_cost.saturating_mul(count)
                };
                if total > RULE_LIMIT {
                    self.errors.push(format!(
                        "{path}: Forbidden: {}",
                        cost_message("estimated messageExpression cost", total, RULE_LIMIT)
                    ));
                }
                self.observe(&path, total);
            }
        }
    }

    /// `field.Invalid(path, text, why)` as the server words it.
    fn invalid(&mut self, path: &str, text: &str, why: &str) {
        self.errors
            .push(format!("{path}: Invalid value: {}: {why}", quoted(text)));
    }

    /// `TotalCost.ObserveExpressionCost`.
    fn observe(&mut self, path: &str, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < CONTRIBUTOR_FLOOR {
            return;
        }
        let top = &mut self.most_expensive;
        if top.len() < 4 {
            top.push((path.to_string(), cost));
        } else if cost > top[3].1 {
            top[3] = (path.to_string(), cost);
        } else {
            return;
        }
        top.sort_by_key(|r| std::cmp::Reverse(r.1));
    }
}
