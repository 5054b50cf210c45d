//! `crd-tools check FILE...`: would kube-apiserver accept these CRDs? Reads any CRD YAML (one or
//! more documents per file, other kinds skipped), prints each CEL rule's estimated cost against the
//! per-rule and the whole-schema limit, then the server's verdict. Exit status 0 when the server
//! would accept every CRD, 1 (with the server's messages) when it would refuse one, 2 on bad input.

use std::process::ExitCode;

use crd_tools::cost::{self, RULE_LIMIT, Report, SCHEMA_LIMIT};
use serde::Deserialize;
use serde_json::Value;

const USAGE: &str = "usage: crd-tools check FILE...\n\
  Estimates the cost of every x-kubernetes-validations rule of the CRDs in FILE as kube-apiserver\n\
  (1.32) does when the CRD is written, and prints the server's verdict: exit 0 if it would accept\n\
  every CRD, 1 if it would refuse one (with its messages), 2 on unreadable input.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, files)) if cmd == "check" && !files.is_empty() => check(files),
        Some((cmd, _)) if cmd == "-h" || cmd == "--help" || cmd == "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(files: &[String]) -> ExitCode {
    let mut refused = false;
    for file in files {
        let crds = match read(file) {
            Ok(crds) => crds,
            Err(e) => {
                eprintln!("crd-tools: {file}: {e}");
                return ExitCode::from(2);
            }
        };
        if crds.is_empty() {
            eprintln!("crd-tools: {file}: no CustomResourceDefinition in it");
            return ExitCode::from(2);
        }
        for crd in crds {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let reports = match cost::check_crd(&crd) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("crd-tools: {file}: {e}");
                    return ExitCode::from(2);
                }
            };
            for r in &reports {
                print_report(r);
            }
            match cost::server_message(&name, &reports) {
                None => println!("verdict: {name} would be accepted\n"),
                Some(message) => {
                    refused = true;
                    println!("verdict: {name} would be REFUSED\n");
                    eprintln!("{file}: {message}\n");
                }
            }
        }
    }
    if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Every CustomResourceDefinition document of a YAML (or JSON) file.
fn read(file: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut crds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        if value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
            crds.push(value);
        }
    }
    Ok(crds)
}

fn print_report(r: &Report) {
    println!("{}: {} CEL rules", r.crd, r.rules.len());
    if !r.rules.is_empty() {
        println!(
            "  {:>13} {:>9} {:>13} {:>7}  rule",
            "cost/run", "runs", "estimated", "of rule limit"
        );
    }
    for rule in &r.rules {
        let runs = if rule.bounded {
            format!("{}", rule.cardinality)
        } else {
            format!("{}*", rule.cardinality)
        };
        println!(
            "  {:>13} {:>9} {:>13} {:>12.1}%  {}: {}",
            thousands(rule.cost),
            runs,
            thousands(rule.total),
            percent(rule.total, RULE_LIMIT),
            short_path(&rule.path, &r.schema_path),
            rule.rule
        );
    }
    if r.rules.iter().any(|x| !x.bounded) {
        println!("  * no maxItems/maxProperties above it: as many copies as fit in one request");
    }
    println!(
        "  total {} = {:.1}% of the schema limit {} (rule limit {})",
        thousands(r.total),
        percent(r.total, SCHEMA_LIMIT),
        thousands(SCHEMA_LIMIT),
        thousands(RULE_LIMIT)
    );
}

fn percent(x: u64, of: u64) -> f64 {
    x as f64 * 100.0 / of as f64
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `spec.validation.openAPIV3Schema.properties[spec].properties[l].items.x-kubernetes-validations[0].rule`
/// → `.spec.l[*] [0]`: the object path a user writes, and the rule's index.
fn short_path(path: &str, base: &str) -> String {
    let rest = path.strip_prefix(base).unwrap_or(path);
    let (node, rule) = rest
        .rsplit_once(".x-kubernetes-validations")
        .unwrap_or((rest, ""));
    let mut out = String::new();
    for part in node.split('.').filter(|p| !p.is_empty()) {
        if let Some(name) = part
            .strip_prefix("properties[")
            .and_then(|p| p.strip_suffix(']'))
        {
            out.push('.');
            out.push_str(name);
        } else if part == "items" {
            out.push_str("[*]");
        } else if part == "additionalProperties" {
            out.push_str("[key]");
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    let index = rule.split('.').next().unwrap_or("");
    let kind = if rule.ends_with("messageExpression") {
        " messageExpression"
    } else {
        ""
    };
    format!("{out} {index}{kind}")
}
