//! The alerts of `config/prometheus/prometheus_rule.yaml`, evaluated by Prometheus's own rule
//! engine: `promtool check rules` (PromQL and templates parse) and `promtool test rules` on
//! synthetic `topolvm_*` series shaped like the ones vg-manager serves. Each scenario is a device
//! class on a node; the test states which alerts it must fire, with which value, and that no other
//! alert fires. promtool comes from `hack/promtool.sh` (run by `make setup`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn promtool() -> PathBuf {
    let candidates = [
        std::env::var_os("LVMS_PROMTOOL").map(PathBuf::from),
        Some(
            PathBuf::from(
                std::env::var_os("LVMS_TOOLS_DIR").unwrap_or_else(|| "/var/tmp/lvms-tools".into()),
            )
            .join("promtool"),
        ),
        Some(PathBuf::from("promtool")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("promtool is required to test the alerts: run hack/promtool.sh (`make setup` does)")
}

/// The rule groups in Prometheus's own file format (the PrometheusRule's spec).
fn rule_groups() -> Value {
    let text = std::fs::read_to_string(root().join("config/prometheus/prometheus_rule.yaml"))
        .expect("config/prometheus/prometheus_rule.yaml");
    let rule: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn alert_rules(groups: &Value) -> Vec<Value> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

const VG_NEAR_FULL: &str = "VolumeGroupUsageAtThresholdNearFull";
const VG_CRITICAL: &str = "VolumeGroupUsageAtThresholdCritical";
const DATA_NEAR_FULL: &str = "ThinPoolDataUsageAtThresholdNearFull";
const DATA_CRITICAL: &str = "ThinPoolDataUsageAtThresholdCritical";
const META_NEAR_FULL: &str = "ThinPoolMetaDataUsageAtThresholdNearFull";
const META_CRITICAL: &str = "ThinPoolMetaDataUsageAtThresholdCritical";
/// LVMS's alert names: silences and routes written for LVMS keep matching.
const ALERTS: [&str; 6] = [
    VG_NEAR_FULL,
    VG_CRITICAL,
    DATA_NEAR_FULL,
    DATA_CRITICAL,
    META_NEAR_FULL,
    META_CRITICAL,
];

struct Scenario {
    node: &'static str,
    class: &'static str,
    /// VG size and the promtool series of its available bytes.
    vg: (u64, &'static str),
    /// Thin pool data and metadata percent; None for a thick class (no thin pool series).
    pool: Option<(u64, u64)>,
    /// (eval minute, alert, value) of every alert that must fire.
    fires: &'static [(u32, &'static str, u64)],
}

const EVAL_MINUTES: [u32; 2] = [10, 14];

const SCENARIOS: &[Scenario] = &[
    // A thin class right after creation: the pool holds 90 % of the VG, nothing is written.
    Scenario {
        node: "a",
        class: "thin-idle",
        vg: (1000, "80x20"),
        pool: Some((10, 5)),
        fires: &[],
    },
    Scenario {
        node: "a",
        class: "thin-filling",
        vg: (1000, "80x20"),
        pool: Some((80, 80)),
        fires: &[
            (10, VG_NEAR_FULL, 92),
            (10, DATA_NEAR_FULL, 80),
            (10, META_NEAR_FULL, 80),
            (14, VG_NEAR_FULL, 92),
            (14, DATA_NEAR_FULL, 80),
            (14, META_NEAR_FULL, 80),
        ],
    },
    Scenario {
        node: "b",
        class: "thin-full",
        vg: (1000, "80x20"),
        pool: Some((90, 88)),
        fires: &[
            (10, VG_CRITICAL, 92),
            (10, DATA_CRITICAL, 90),
            (10, META_CRITICAL, 88),
            (14, VG_CRITICAL, 92),
            (14, DATA_CRITICAL, 90),
            (14, META_CRITICAL, 88),
        ],
    },
    // A small pool in a roomy VG: only the pool is full, and it can still grow.
    Scenario {
        node: "b",
        class: "thin-small-pool",
        vg: (1000, "500x20"),
        pool: Some((90, 10)),
        fires: &[(10, DATA_CRITICAL, 90), (14, DATA_CRITICAL, 90)],
    },
    Scenario {
        node: "c",
        class: "thick-ok",
        vg: (1000, "500x20"),
        pool: None,
        fires: &[],
    },
    Scenario {
        node: "c",
        class: "thick-filling",
        vg: (1000, "200x20"),
        pool: None,
        fires: &[(10, VG_NEAR_FULL, 80), (14, VG_NEAR_FULL, 80)],
    },
    // Exactly 85 % is still the warning; above it is critical.
    Scenario {
        node: "c",
        class: "thick-at-85",
        vg: (1000, "150x20"),
        pool: None,
        fires: &[(10, VG_NEAR_FULL, 85), (14, VG_NEAR_FULL, 85)],
    },
    Scenario {
        node: "c",
        class: "thick-full",
        vg: (1000, "100x20"),
        pool: None,
        fires: &[(10, VG_CRITICAL, 90), (14, VG_CRITICAL, 90)],
    },
    // Full from minute 8: pending at minute 10, firing once 5 minutes have passed.
    Scenario {
        node: "d",
        class: "thick-late",
        vg: (1000, "500x7 100x12"),
        pool: None,
        fires: &[(14, VG_CRITICAL, 90)],
    },
];

fn labels(s: &Scenario) -> String {
    format!(
        r#"{{node="{}",device_class="{}",job="vg-manager-metrics"}}"#,
        s.node, s.class
    )
}

fn input_series() -> Vec<Value> {
    let mut out = Vec::new();
    for s in SCENARIOS {
        let l = labels(s);
        out.push(json!({"series": format!("topolvm_volumegroup_size_bytes{l}"), "values": format!("{}x20", s.vg.0)}));
        out.push(
            json!({"series": format!("topolvm_volumegroup_available_bytes{l}"), "values": s.vg.1}),
        );
        if let Some((data, meta)) = s.pool {
            out.push(json!({"series": format!("topolvm_thinpool_data_percent{l}"), "values": format!("{data}x20")}));
            out.push(json!({"series": format!("topolvm_thinpool_metadata_percent{l}"), "values": format!("{meta}x20")}));
        }
    }
    out
}

/// The annotations Prometheus must render for this alert: the rule's templates with the labels
/// and value put in. Anything else in a template is left as is, and then cannot match.
fn rendered(rule: &Value, s: &Scenario, value: u64) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in rule["annotations"].as_object().unwrap() {
        let text = v
            .as_str()
            .unwrap()
            .replace("{{ $labels.device_class }}", s.class)
            .replace("{{ $labels.node }}", s.node)
            .replace("{{ $value | humanize }}", &value.to_string());
        assert!(
            !text.contains("{{"),
            "{k}: a template this test cannot render: {text}"
        );
        out.insert(k.clone(), json!(text));
    }
    Value::Object(out)
}

fn alert_tests(rules: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for minute in EVAL_MINUTES {
        for alert in ALERTS {
            let rule = rules
                .iter()
                .find(|r| r["alert"] == alert)
                .unwrap_or_else(|| panic!("no alert {alert}"));
            let expected: Vec<Value> = SCENARIOS
                .iter()
                .flat_map(|s| {
                    s.fires
                        .iter()
                        .filter(|(m, a, _)| *m == minute && *a == alert)
                        .map(move |(_, _, value)| {
                            json!({
                                "exp_labels": {
                                    "node": s.node,
                                    "device_class": s.class,
                                    "job": "vg-manager-metrics",
                                    "severity": rule["labels"]["severity"],
                                },
                                "exp_annotations": rendered(rule, s, *value),
                            })
                        })
                })
                .collect();
            out.push(json!({
                "eval_time": format!("{minute}m"),
                "alertname": alert,
                "exp_alerts": expected,
            }));
        }
    }
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn alerts_are_lvms_names_with_severity_and_duration() {
    let rules = alert_rules(&rule_groups());
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for r in &rules {
        let critical = r["alert"].as_str().unwrap().ends_with("Critical");
        assert_eq!(
            r["labels"]["severity"],
            if critical { "critical" } else { "warning" }
        );
        assert_eq!(r["for"], "5m");
        for a in ["summary", "description", "message"] {
            assert!(r["annotations"][a].is_string(), "{}: {a}", r["alert"]);
        }
    }
}

#[test]
fn prometheus_evaluates_the_alerts_as_intended() {
    let promtool = promtool();
    let dir = std::env::temp_dir().join(format!("lvms-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let groups = rule_groups();
    let rules_file = dir.join("rules.yaml");
    std::fs::write(&rules_file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let checked = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules_file));
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");

    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(),
            "alert_rule_test": alert_tests(&alert_rules(&groups)),
        }],
    });
    let tests_file = dir.join("tests.yaml");
    std::fs::write(&tests_file, serde_yaml::to_string(&tests).unwrap()).unwrap();
    let tested = run(Command::new(&promtool)
        .current_dir(&dir)
        .arg("test")
        .arg("rules")
        .arg("tests.yaml"));
    assert!(tested.contains("SUCCESS"), "{tested}");
    std::fs::remove_dir_all(&dir).ok();
}
