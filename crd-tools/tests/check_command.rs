//! `crd-tools check`: the command a user runs on any CRD YAML, and what `make test` runs on crds/.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crd-tools"))
        .arg("check")
        .args(files)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn our_crds_pass_and_each_rule_is_listed_with_its_share() {
    let files: Vec<PathBuf> = std::fs::read_dir(root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert_eq!(files.len(), 4);
    let out = check(&files);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for name in [
        "lvmclusters.lvm.topolvm.io",
        "lvmvolumegroups.lvm.topolvm.io",
        "lvmvolumegroupnodestatuses.lvm.topolvm.io",
        "logicalvolumes.topolvm.io",
    ] {
        assert!(
            stdout.contains(&format!("verdict: {name} would be accepted")),
            "{stdout}"
        );
    }
    // A thin pool rule, its estimate over the 12 device classes, and its share of the rule limit.
    let line = stdout
        .lines()
        .find(|l| l.contains(".spec.storage.deviceClasses[*].thinPoolConfig [4]"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(" 12 ") && line.contains("7,550,052") && line.contains("75.5%"),
        "{line}"
    );
    assert!(
        stdout.contains("of the schema limit 100,000,000"),
        "{stdout}"
    );
}

#[test]
fn the_crd_the_server_refused_is_refused_in_its_words() {
    let fixture =
        root().join("crd-tools/tests/fixtures/apiserver-1.32.13/lvmclusters-at-9f76bf3.yaml");
    let out = check(&[fixture]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(
        "The CustomResourceDefinition \"lvmclusters.lvm.topolvm.io\" is invalid: \n* spec.validation.openAPIV3Schema.properties[spec].properties[storage].properties[deviceClasses].items.properties[thinPoolConfig].properties[chunkSize].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 4.0x"
    ), "{stderr}");
    assert!(stderr.contains("spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1.6x"), "{stderr}");
    assert!(text(&out.stdout).contains("would be REFUSED"));
}

#[test]
fn bad_input_is_exit_2_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("crd-tools-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_crd = dir.join("pod.yaml");
    std::fs::write(&not_crd, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap();
    let out = check(std::slice::from_ref(&not_crd));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no CustomResourceDefinition"),
        "{}",
        text(&out.stderr)
    );
    let out = check(&[dir.join("missing.yaml")]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_crd-tools"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("usage: crd-tools check FILE..."));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rule that does not type-check is refused, as the server refuses it at CRD creation.
#[test]
fn a_rule_that_names_no_field_is_refused() {
    let dir = std::env::temp_dir().join(format!("crd-tools-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: probes.cel.example.com}
spec:
  group: cel.example.com
  scope: Namespaced
  names: {plural: probes, singular: probe, kind: Probe}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
            x-kubernetes-validations:
            - rule: self.sise > 0
"#,
    )
    .unwrap();
    let out = check(std::slice::from_ref(&file));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.sise > 0\": compilation failed: ERROR: <input>: undefined field 'sise'"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
