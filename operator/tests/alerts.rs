//! The alerts of `config/prometheus/prometheus_rule.yaml`, evaluated by Prometheus's own rule
//! engine: `promtool check rules` (PromQL and templates parse) and `promtool test rules` on
//! synthetic `topolvm_*` and `lvms_raid_*` series shaped like the ones vg-manager serves. Each
//! scenario is a device class on a node; the test states which alerts it must fire, with which
//! value, which must be pending (condition met, its `for` not yet), and that no other alert fires
//! or is pending. The usage and the RAID scenarios are two promtool tests, each on its own
//! timeline. promtool comes from `hack/promtool.sh` (run by `make setup`).

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
const RAID_DEGRADED: &str = "RAIDDegraded";
const RAID_FAILED: &str = "RAIDFailed";
const RAID_SYNC_SLOW: &str = "RAIDSyncSlow";
/// LVMS's alert names: silences and routes written for LVMS keep matching.
const ALERTS: [&str; 9] = [
    VG_NEAR_FULL,
    VG_CRITICAL,
    DATA_NEAR_FULL,
    DATA_CRITICAL,
    META_NEAR_FULL,
    META_CRITICAL,
    RAID_DEGRADED,
    RAID_FAILED,
    RAID_SYNC_SLOW,
];

/// The gauges of one scenario's device class, as promtool series.
enum Series {
    /// VG size and the series of its available bytes; thin pool data and metadata percent, None
    /// for a thick class (no thin pool series).
    Usage {
        vg: (u64, &'static str),
        pool: Option<(u64, u64)>,
    },
    /// The series of `lvms_raid_health_status` and of `lvms_raid_sync_in_progress`.
    Raid {
        health: &'static str,
        sync: &'static str,
    },
}
use Series::{Raid, Usage};

struct Scenario {
    node: &'static str,
    class: &'static str,
    series: Series,
    /// (eval minute, alert, value) of every alert that must fire. The value is the usage percent
    /// the description renders; a RAID alert's annotations show none, there it is the gauge's.
    fires: &'static [(u32, &'static str, u64)],
    /// (eval minute, alert) of every alert that must be pending.
    pending: &'static [(u32, &'static str)],
}

/// One promtool test: its scenarios, and the minutes at which every alert is checked.
#[derive(Clone, Copy)]
struct Test {
    scenarios: &'static [Scenario],
    minutes: &'static [u32],
}

const TESTS: [Test; 2] = [
    Test {
        scenarios: USAGE,
        minutes: &[10, 14],
    },
    Test {
        scenarios: RAID,
        minutes: &[0, 4, 6, 29, 31, 50],
    },
];

/// 20 minutes of usage.
const USAGE: &[Scenario] = &[
    // A thin class right after creation: the pool holds 90 % of the VG, nothing is written.
    Scenario {
        node: "a",
        class: "thin-idle",
        series: Usage {
            vg: (1000, "80x20"),
            pool: Some((10, 5)),
        },
        fires: &[],
        pending: &[],
    },
    Scenario {
        node: "a",
        class: "thin-filling",
        series: Usage {
            vg: (1000, "80x20"),
            pool: Some((80, 80)),
        },
        fires: &[
            (10, VG_NEAR_FULL, 92),
            (10, DATA_NEAR_FULL, 80),
            (10, META_NEAR_FULL, 80),
            (14, VG_NEAR_FULL, 92),
            (14, DATA_NEAR_FULL, 80),
            (14, META_NEAR_FULL, 80),
        ],
        pending: &[],
    },
    Scenario {
        node: "b",
        class: "thin-full",
        series: Usage {
            vg: (1000, "80x20"),
            pool: Some((90, 88)),
        },
        fires: &[
            (10, VG_CRITICAL, 92),
            (10, DATA_CRITICAL, 90),
            (10, META_CRITICAL, 88),
            (14, VG_CRITICAL, 92),
            (14, DATA_CRITICAL, 90),
            (14, META_CRITICAL, 88),
        ],
        pending: &[],
    },
    // A small pool in a roomy VG: only the pool is full, and it can still grow.
    Scenario {
        node: "b",
        class: "thin-small-pool",
        series: Usage {
            vg: (1000, "500x20"),
            pool: Some((90, 10)),
        },
        fires: &[(10, DATA_CRITICAL, 90), (14, DATA_CRITICAL, 90)],
        pending: &[],
    },
    Scenario {
        node: "c",
        class: "thick-ok",
        series: Usage {
            vg: (1000, "500x20"),
            pool: None,
        },
        fires: &[],
        pending: &[],
    },
    Scenario {
        node: "c",
        class: "thick-filling",
        series: Usage {
            vg: (1000, "200x20"),
            pool: None,
        },
        fires: &[(10, VG_NEAR_FULL, 80), (14, VG_NEAR_FULL, 80)],
        pending: &[],
    },
    // Exactly 85 % is still the warning; above it is critical.
    Scenario {
        node: "c",
        class: "thick-at-85",
        series: Usage {
            vg: (1000, "150x20"),
            pool: None,
        },
        fires: &[(10, VG_NEAR_FULL, 85), (14, VG_NEAR_FULL, 85)],
        pending: &[],
    },
    Scenario {
        node: "c",
        class: "thick-full",
        series: Usage {
            vg: (1000, "100x20"),
            pool: None,
        },
        fires: &[(10, VG_CRITICAL, 90), (14, VG_CRITICAL, 90)],
        pending: &[],
    },
    // Full from minute 8: pending at minute 10, firing once 5 minutes have passed.
    Scenario {
        node: "d",
        class: "thick-late",
        series: Usage {
            vg: (1000, "500x7 100x12"),
            pool: None,
        },
        fires: &[(14, VG_CRITICAL, 90)],
        pending: &[(10, VG_CRITICAL)],
    },
];

/// An hour of RAID gauges. promtool's `a xN` is N+1 samples: `1x20 0x40` is 1 up to minute 20.
const RAID: &[Scenario] = &[
    Scenario {
        node: "a",
        class: "raid-healthy",
        series: Raid {
            health: "0x60",
            sync: "0x60",
        },
        fires: &[],
        pending: &[],
    },
    // Degraded from the start: pending until 5 minutes have passed, then firing.
    Scenario {
        node: "a",
        class: "raid-degraded",
        series: Raid {
            health: "1x60",
            sync: "0x60",
        },
        fires: &[
            (6, RAID_DEGRADED, 1),
            (29, RAID_DEGRADED, 1),
            (31, RAID_DEGRADED, 1),
            (50, RAID_DEGRADED, 1),
        ],
        pending: &[(0, RAID_DEGRADED), (4, RAID_DEGRADED)],
    },
    // A member gone for minutes 3 to 5 only: pending, never firing.
    Scenario {
        node: "a",
        class: "raid-blip",
        series: Raid {
            health: "0x2 1x2 0x55",
            sync: "0x60",
        },
        fires: &[],
        pending: &[(4, RAID_DEGRADED)],
    },
    // Failed from the start: firing after one minute.
    Scenario {
        node: "b",
        class: "raid-failed",
        series: Raid {
            health: "2x60",
            sync: "0x60",
        },
        fires: &[
            (4, RAID_FAILED, 2),
            (6, RAID_FAILED, 2),
            (29, RAID_FAILED, 2),
            (31, RAID_FAILED, 2),
            (50, RAID_FAILED, 2),
        ],
        pending: &[(0, RAID_FAILED)],
    },
    // Degraded, repaired at minute 21, then synchronising for 14 minutes: RAIDDegraded stops
    // firing, and a sync that short stays pending.
    Scenario {
        node: "c",
        class: "raid-repaired",
        series: Raid {
            health: "1x20 0x40",
            sync: "0x20 1x14 0x25",
        },
        fires: &[(6, RAID_DEGRADED, 1)],
        pending: &[
            (0, RAID_DEGRADED),
            (4, RAID_DEGRADED),
            (29, RAID_SYNC_SLOW),
            (31, RAID_SYNC_SLOW),
        ],
    },
    // Synchronising up to minute 40: pending for 30 minutes, firing, then resolved.
    Scenario {
        node: "c",
        class: "raid-resync-slow",
        series: Raid {
            health: "0x60",
            sync: "1x40 0x20",
        },
        fires: &[(31, RAID_SYNC_SLOW, 1)],
        pending: &[
            (0, RAID_SYNC_SLOW),
            (4, RAID_SYNC_SLOW),
            (6, RAID_SYNC_SLOW),
            (29, RAID_SYNC_SLOW),
        ],
    },
];

fn labels(s: &Scenario) -> String {
    format!(
        r#"{{node="{}",device_class="{}",job="vg-manager-metrics"}}"#,
        s.node, s.class
    )
}

fn input_series(scenarios: &[Scenario]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in scenarios {
        let l = labels(s);
        let mut series = |metric: &str, values: String| {
            out.push(json!({"series": format!("{metric}{l}"), "values": values}));
        };
        match s.series {
            Usage { vg, pool } => {
                series("topolvm_volumegroup_size_bytes", format!("{}x20", vg.0));
                series("topolvm_volumegroup_available_bytes", vg.1.into());
                if let Some((data, meta)) = pool {
                    series("topolvm_thinpool_data_percent", format!("{data}x20"));
                    series("topolvm_thinpool_metadata_percent", format!("{meta}x20"));
                }
            }
            Raid { health, sync } => {
                series("lvms_raid_health_status", health.into());
                series("lvms_raid_sync_in_progress", sync.into());
            }
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

fn rule<'a>(rules: &'a [Value], alert: &str) -> &'a Value {
    rules
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert}"))
}

fn alert_tests(rules: &[Value], test: Test) -> Vec<Value> {
    let mut out = Vec::new();
    for &minute in test.minutes {
        for alert in ALERTS {
            let rule = rule(rules, alert);
            let expected: Vec<Value> = test
                .scenarios
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

/// At each of the test's minutes, the `ALERTS` series of exactly the pending alerts the scenarios
/// list: an alert that fires too early or not at all shows here as well as in `alert_tests`.
fn pending_tests(rules: &[Value], test: Test) -> Vec<Value> {
    let mut out = Vec::new();
    for &minute in test.minutes {
        let expected: Vec<Value> = test
            .scenarios
            .iter()
            .flat_map(|s| {
                s.pending
                    .iter()
                    .filter(|(m, _)| *m == minute)
                    .map(move |(_, alert)| {
                        json!({
                            "labels": format!(
                                r#"ALERTS{{alertname="{alert}",alertstate="pending",node="{}",device_class="{}",job="vg-manager-metrics",severity="{}"}}"#,
                                s.node,
                                s.class,
                                rule(rules, alert)["labels"]["severity"].as_str().unwrap(),
                            ),
                            "value": 1,
                        })
                    })
            })
            .collect();
        out.push(json!({
            "expr": r#"ALERTS{alertstate="pending"}"#,
            "eval_time": format!("{minute}m"),
            "exp_samples": expected,
        }));
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
    let groups = rule_groups();
    let group_names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        group_names,
        [
            "vg-alert.rules",
            "thin-pool-alert.rules",
            "raid-alert.rules"
        ]
    );
    let raid: Vec<&str> = groups["groups"][2]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(raid, [RAID_DEGRADED, RAID_FAILED, RAID_SYNC_SLOW]);

    let rules = alert_rules(&groups);
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for r in &rules {
        let (severity, duration) = match r["alert"].as_str().unwrap() {
            RAID_DEGRADED => ("critical", "5m"),
            RAID_FAILED => ("critical", "1m"),
            RAID_SYNC_SLOW => ("warning", "30m"),
            usage if usage.ends_with("Critical") => ("critical", "5m"),
            _ => ("warning", "5m"),
        };
        assert_eq!(r["labels"]["severity"], severity, "{}", r["alert"]);
        assert_eq!(r["for"], duration, "{}", r["alert"]);
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
    let found = format!("SUCCESS: {} rules found", ALERTS.len());
    assert!(checked.contains(&found), "{checked}");

    let rules = alert_rules(&groups);
    let tests: Vec<Value> = TESTS
        .into_iter()
        .map(|test| {
            json!({
                "interval": "1m",
                "input_series": input_series(test.scenarios),
                "alert_rule_test": alert_tests(&rules, test),
                "promql_expr_test": pending_tests(&rules, test),
            })
        })
        .collect();
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": tests,
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
