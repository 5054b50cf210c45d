//! The cost estimator against what a real kube-apiserver (v1.32.13) said: every record of
//! `fixtures/apiserver-1.32.13/` (see its README), verdict by verdict and factor by factor, and the
//! LVMCluster CRD the server refused at 9f76bf3.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crd_tools::cost::{self, Report};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apiserver-1.32.13")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The probe CRD of the records around one `spec` schema.
fn probe(spec: &Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "probes.cel.example.com"},
        "spec": {
            "group": "cel.example.com",
            "scope": "Namespaced",
            "names": {"plural": "probes", "singular": "probe", "kind": "Probe", "listKind": "ProbeList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
            }],
        },
    })
}

/// The server's message, split into its error lines (the records write newlines as ` | `).
fn lines(message: &str) -> Vec<String> {
    let body = message
        .split_once(" is invalid: ")
        .map_or(message, |(_, b)| b);
    match body.strip_prefix("| * ") {
        Some(list) => list.split(" | * ").map(str::to_string).collect(),
        None => vec![body.to_string()],
    }
}

const CONTRIBUTED: &str = "Forbidden: contributed to estimated rule cost total";

/// The records cut messages at 1500 characters: the last line of such a message is a prefix.
const RECORDED_MAX: usize = 1500;

fn agree(case: &str, at: &str, spec: &Value, accepted: bool, message: &str) {
    let crd = probe(spec);
    let reports = cost::check_crd(&crd).unwrap();
    let ours = cost::server_message("probes.cel.example.com", &reports);
    let costs = describe(&reports);
    assert_eq!(
        ours.is_none(),
        accepted,
        "{case} {at}: the server {} it, we {}:\n{}\n{costs}",
        if accepted { "accepted" } else { "refused" },
        if ours.is_none() {
            "accept it"
        } else {
            "refuse it"
        },
        ours.as_deref().unwrap_or("")
    );
    if accepted || message.is_empty() {
        return;
    }
    let ours: Vec<String> = reports.iter().flat_map(|r| r.errors.clone()).collect();
    let mut theirs = lines(message);
    let truncated = message.len() >= RECORDED_MAX;
    if truncated {
        let cut = theirs.pop().unwrap();
        assert!(
            ours.iter().any(|o| o.starts_with(&cut)),
            "{case} {at}: the cut line {cut:?} starts none of ours:\n{ours:#?}"
        );
    }
    let our_set: BTreeSet<&String> = ours.iter().collect();
    let expensive: BTreeSet<String> = reports
        .iter()
        .flat_map(|r| &r.rules)
        .filter(|r| r.total >= cost::SCHEMA_LIMIT / 100)
        .map(|r| r.path.clone())
        .collect();
    for line in &theirs {
        if line.contains(CONTRIBUTED) {
            // Which of several equally costly rules the server names depends on Go's map order.
            let path = line.split(": ").next().unwrap();
            assert!(
                expensive.contains(path),
                "{case} {at}: the server names {path} as a contributor; we rate it below 1 % of the limit\n{costs}"
            );
        } else {
            assert!(
                our_set.contains(line),
                "{case} {at}: the server said\n  {line}\nwe said\n{ours:#?}\n{costs}"
            );
        }
    }
    if !truncated {
        let count = |v: &[String], contributed: bool| {
            v.iter()
                .filter(|l| l.contains(CONTRIBUTED) == contributed)
                .count()
        };
        assert_eq!(
            (count(&theirs, false), count(&theirs, true)),
            (count(&ours, false), count(&ours, true)),
            "{case} {at}: the server said\n{theirs:#?}\nwe said\n{ours:#?}"
        );
    }
}

fn describe(reports: &[Report]) -> String {
    reports
        .iter()
        .flat_map(|r| &r.rules)
        .map(|r| format!("  {} × {} = {}  {}", r.cost, r.cardinality, r.total, r.rule))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one refusal in the records that comes without a message (see the test below).
const UNEXPLAINED: (&str, u64) = ("list32.item.string.quantity2", 385025);

#[test]
fn every_record_of_the_real_server_is_matched() {
    let mut points = 0;
    for line in fixture("cel-cost.jsonl").lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let case = r["case"].as_str().unwrap();
        let unbounded = &r["unbounded"];
        agree(
            case,
            "unbounded",
            &unbounded["spec_schema"],
            unbounded["accepted"].as_bool().unwrap(),
            unbounded["message"].as_str().unwrap(),
        );
        points += 1;
        if let Some(n) = r["largest_bound_accepted"].as_u64() {
            agree(
                case,
                &format!("bound {n}"),
                &r["spec_schema_at_largest_accepted"],
                true,
                "",
            );
            points += 1;
        }
        if let Some(n) = r["smallest_bound_refused"].as_u64() {
            let message = r["message_at_smallest_refused"].as_str().unwrap();
            if (case, n) == UNEXPLAINED {
                assert!(message.is_empty());
            } else {
                agree(
                    case,
                    &format!("bound {n}"),
                    &r["spec_schema_at_smallest_refused"],
                    false,
                    message,
                );
                points += 1;
            }
        }
        for p in r["more_refused_points"].as_array().unwrap() {
            let n = p["bound"].as_u64().unwrap();
            agree(
                case,
                &format!("bound {n}"),
                &p["spec_schema"],
                p["accepted"].as_bool().unwrap(),
                p["message"].as_str().unwrap(),
            );
            points += 1;
        }
    }
    assert!(points >= 80, "only {points} points checked");
}

/// At maxLength 385025 the record says "refused" with no message at all, while the same record's
/// three messaged points (770050 → 2.0x, 3080200 → 7.9x, 4194304 → 10.7x and a total of
/// 1.073745x) pin the cost to 64 × (⌈0.4 × maxLength⌉ + 4): 9 856 896 at 385025, below the limit,
/// with the flip at 390615/390616. A refusal without a message is not a cost verdict; this test
/// states what the calibrated estimator says there so the gap stays visible until re-measured.
#[test]
fn the_messageless_refusal_is_not_a_cost_refusal() {
    let record: Value = fixture("cel-cost.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["case"] == UNEXPLAINED.0)
        .unwrap();
    let at = |n: u64| {
        let mut spec = record["spec_schema_at_smallest_refused"].clone();
        spec["properties"]["l"]["items"]["properties"]["f"]["maxLength"] = json!(n);
        cost::check_crd(&probe(&spec)).unwrap()
    };
    let rule_total = |r: &[Report]| r[0].rules[0].total;
    assert_eq!(rule_total(&at(UNEXPLAINED.1)), 9_856_896);
    assert!(at(390_615)[0].accepted());
    assert!(!at(390_616)[0].accepted());
}

/// The LVMCluster CRD at 9f76bf3 draws exactly the server's complaint.
#[test]
fn the_lvmcluster_crd_at_9f76bf3_is_refused_as_the_server_refused_it() {
    let crd: Value = serde_yaml::from_str(&fixture("lvmclusters-at-9f76bf3.yaml")).unwrap();
    let reports = cost::check_crd(&crd).unwrap();
    let ours: BTreeSet<String> = reports.iter().flat_map(|r| r.errors.clone()).collect();
    let said = fixture("lvmclusters-at-9f76bf3.txt");
    let theirs: BTreeSet<String> = said
        .lines()
        .filter_map(|l| l.strip_prefix("* "))
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), 9, "the record lists nine errors");
    assert_eq!(ours, theirs, "\n{}", describe(&reports));
}
