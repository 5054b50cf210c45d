//! Shared helpers of the CRD tests.
#![allow(dead_code)]

use std::path::PathBuf;

use crd_tools::validate::{FieldError, SchemaValidator};
use serde_json::{Value, json};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn lvmcluster() -> SchemaValidator {
    SchemaValidator::new(&lvms_api::crd("lvmclusters.lvm.topolvm.io"), "v1alpha1")
}

/// An LVMCluster with the given device classes.
pub fn cluster(classes: Value) -> Value {
    json!({
        "apiVersion": "lvm.topolvm.io/v1alpha1",
        "kind": "LVMCluster",
        "metadata": {"name": "lvmcluster", "namespace": "openshift-storage"},
        "spec": {"storage": {"deviceClasses": classes}},
    })
}

/// A valid thin default class.
pub fn thin(name: &str) -> Value {
    json!({
        "name": name,
        "default": true,
        "deviceSelector": {"paths": ["/dev/sdb"]},
        "thinPoolConfig": {"name": "thin-pool-1", "overprovisionRatio": 10},
    })
}

/// Sets `value` at a dotted path (numbers index lists), creating objects on the way.
pub fn set(mut obj: Value, path: &str, value: Value) -> Value {
    let mut cur = &mut obj;
    for part in path.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[part],
        };
    }
    *cur = value;
    obj
}

/// Removes the key at a dotted path.
pub fn unset(mut obj: Value, path: &str) -> Value {
    let (parent, key) = path.rsplit_once('.').unwrap();
    let mut cur = &mut obj;
    for part in parent.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[part],
        };
    }
    cur.as_object_mut().unwrap().remove(key);
    obj
}

/// Asserts that `result` is a refusal with an error at `path` whose message contains `needle`.
pub fn assert_refused(result: Result<Value, Vec<FieldError>>, path: &str, needle: &str) {
    let errors = match result {
        Ok(v) => panic!("expected a refusal at {path} ({needle}), the object was accepted: {v}"),
        Err(e) => e,
    };
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "expected an error at {path} containing {needle:?}; got:\n{}",
        errors
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

pub fn assert_accepted(result: Result<Value, Vec<FieldError>>) -> Value {
    match result {
        Ok(v) => v,
        Err(e) => panic!(
            "expected acceptance, got:\n{}",
            e.iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}
