//! `make deploy` and `make undeploy` against a kubectl double that records every call: the
//! monitoring overlay is applied only where prometheus-operator's CRDs exist, and undeploy
//! refuses, touching nothing, while an LVMCluster exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// A kubectl that logs its arguments, one call a line. `get crd` succeeds only when the cluster
/// "has" prometheus-operator; `get lvmclusters` prints the given LVMClusters.
const FAKE_KUBECTL: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_KUBECTL_LOG"
case "$1 $2" in
  "get crd") [ "$FAKE_MONITORING" = 1 ] ;;
  "get lvmclusters.lvm.topolvm.io") [ -n "$FAKE_LVMCLUSTERS" ] && echo "$FAKE_LVMCLUSTERS"; exit 0 ;;
  *) exit 0 ;;
esac
"#;

struct Run {
    ok: bool,
    output: String,
    calls: Vec<String>,
}

fn make(target: &str, monitoring: bool, lvmclusters: &str) -> Run {
    let dir = std::env::temp_dir().join(format!(
        "lvms-make-{target}-{monitoring}-{}-{}",
        lvmclusters.len(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubectl = dir.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.join("calls");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(root())
        .arg(target)
        .env("PATH", path)
        .env("FAKE_KUBECTL_LOG", &log)
        .env("FAKE_MONITORING", if monitoring { "1" } else { "0" })
        .env("FAKE_LVMCLUSTERS", lvmclusters)
        .output()
        .expect("make runs");
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    Run {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        calls,
    }
}

fn changes(run: &Run) -> Vec<&str> {
    run.calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("apply") || c.starts_with("delete"))
        .collect()
}

#[test]
fn deploy_applies_monitoring_only_where_prometheus_operator_runs() {
    let without = make("deploy", false, "");
    assert!(without.ok, "{}", without.output);
    assert_eq!(changes(&without), ["apply --server-side -k config/default"]);
    assert!(
        without
            .output
            .contains("config/prometheus (scraping, alerts) not applied"),
        "{}",
        without.output
    );

    let with = make("deploy", true, "");
    assert!(with.ok, "{}", with.output);
    assert_eq!(
        changes(&with),
        [
            "apply --server-side -k config/default",
            "apply --server-side -k config/prometheus"
        ]
    );
}

#[test]
fn undeploy_refuses_while_an_lvmcluster_exists() {
    let refused = make("undeploy", true, "lvmcluster.lvm.topolvm.io/my-lvmcluster");
    assert!(!refused.ok, "{}", refused.output);
    assert!(changes(&refused).is_empty(), "{:?}", refused.calls);
    assert!(
        refused
            .output
            .contains("delete it and wait until it is gone"),
        "{}",
        refused.output
    );

    let done = make("undeploy", true, "");
    assert!(done.ok, "{}", done.output);
    assert_eq!(
        changes(&done),
        [
            "delete -k config/prometheus --ignore-not-found",
            "delete -k config/default --ignore-not-found"
        ]
    );
    let plain = make("undeploy", false, "");
    assert!(plain.ok, "{}", plain.output);
    assert_eq!(
        changes(&plain),
        ["delete -k config/default --ignore-not-found"]
    );
}
