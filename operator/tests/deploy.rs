//! `make deploy` and `make undeploy` against a kubectl double that records every call: the
//! monitoring overlay is applied only where prometheus-operator's CRDs exist, and undeploy
//! refuses, touching nothing, while an LVMCluster exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// A kubectl that logs its arguments, one call a line, and keeps what `apply -f -` is given.
/// `kustomize` is the real kubectl's; `get crd` succeeds only when the cluster "has"
/// prometheus-operator; `get lvmclusters` prints the given LVMClusters.
const FAKE_KUBECTL: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_KUBECTL_LOG"
case "$1 $2" in
  "kustomize "*) exec "$REAL_KUBECTL" "$@" ;;
  "get crd") [ "$FAKE_MONITORING" = 1 ] ;;
  "get lvmclusters.lvm.topolvm.io") [ -n "$FAKE_LVMCLUSTERS" ] && echo "$FAKE_LVMCLUSTERS"; exit 0 ;;
  "apply --server-side")
    if [ "$3" = "-f" ]; then cat >> "$FAKE_APPLIED"; fi ;;
  *) exit 0 ;;
esac
"#;

/// The kubectl on PATH, which ships kustomize.
fn real_kubectl() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl with kustomize is required to test make deploy")
}

struct Run {
    ok: bool,
    output: String,
    calls: Vec<String>,
    /// The documents `kubectl apply -f -` was given.
    applied: Vec<Value>,
}

fn make(target: &str, monitoring: bool, lvmclusters: &str) -> Run {
    make_with(target, monitoring, lvmclusters, &[])
}

fn make_with(target: &str, monitoring: bool, lvmclusters: &str, vars: &[&str]) -> Run {
    // Tests run in parallel: one directory per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lvms-make-{target}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubectl = dir.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.join("calls");
    let applied = dir.join("applied");
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
        .args(vars)
        .env("PATH", path)
        .env("REAL_KUBECTL", real_kubectl())
        .env("FAKE_APPLIED", &applied)
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
    let applied = std::fs::read_to_string(&applied).unwrap_or_default();
    let applied = serde_yaml::Deserializer::from_str(&applied)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|d: &Value| !d.is_null())
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
        applied,
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
    assert_eq!(changes(&without), ["apply --server-side -f -"]);
    let kinds: Vec<&str> = without
        .applied
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
    ] {
        assert!(
            kinds.contains(&kind),
            "config/default is applied: {kinds:?}"
        );
    }
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
            "apply --server-side -f -",
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

fn operator_container(run: &Run) -> Value {
    let deployments: Vec<&Value> = run
        .applied
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "{}", run.output);
    deployments[0]["spec"]["template"]["spec"]["containers"][0].clone()
}

fn env_value(container: &Value, name: &str) -> String {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{name} not set"))
        .to_string()
}

/// `make deploy IMG_OPERATOR=... IMG_VG_MANAGER=...` installs the images one built (`make
/// images`): the operator's own, and the vg-manager image it deploys on the nodes.
#[test]
fn deploy_installs_the_images_it_is_given() {
    let mk = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let var = |name: &str| {
        mk.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} := ")))
            .unwrap_or_else(|| panic!("Makefile sets {name}"))
            .to_string()
    };
    // What the Makefile replaces is what the generator writes.
    assert_eq!(
        var("MANIFEST_IMG_OPERATOR"),
        lvms_operator::manifests::operator_image()
    );
    let vg_manager_default = lvms_operator::config::IMAGE_VARS
        .iter()
        .find(|(v, _)| *v == "RELATED_IMAGE_VG_MANAGER")
        .unwrap()
        .1;
    assert_eq!(var("MANIFEST_IMG_VG_MANAGER"), vg_manager_default);

    let defaults = make("deploy", false, "");
    assert!(defaults.ok, "{}", defaults.output);
    let c = operator_container(&defaults);
    assert_eq!(c["image"], var("MANIFEST_IMG_OPERATOR"));
    assert_eq!(
        env_value(&c, "RELATED_IMAGE_VG_MANAGER"),
        vg_manager_default
    );

    let own = make_with(
        "deploy",
        false,
        "",
        &[
            "IMG_OPERATOR=registry.example:5000/me/lvms-operator:dev",
            "IMG_VG_MANAGER=registry.example:5000/me/vg-manager@sha256:0123abcd",
        ],
    );
    assert!(own.ok, "{}", own.output);
    let c = operator_container(&own);
    assert_eq!(c["image"], "registry.example:5000/me/lvms-operator:dev");
    assert_eq!(
        env_value(&c, "RELATED_IMAGE_VG_MANAGER"),
        "registry.example:5000/me/vg-manager@sha256:0123abcd"
    );
    assert_eq!(own.applied.len(), defaults.applied.len());
    let text = serde_json::to_string(&own.applied).unwrap();
    assert!(!text.contains("ghcr.io/lvms-rs/lvms-operator"), "{text}");
    assert!(!text.contains("ghcr.io/lvms-rs/vg-manager"), "{text}");
}
