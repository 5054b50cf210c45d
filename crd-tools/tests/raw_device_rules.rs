//! The schema of `rawDevices` (whole disks as static PVs) and `storageClassOptions.mountOptions`:
//! defaults, allowed values, the rules against thin pools and RAID, and immutability.

mod common;
use common::*;
use serde_json::{Value, json};

const DC0: &str = "spec.storage.deviceClasses[0]";

fn raw(raw_devices: Value) -> Value {
    json!({
        "name": "disks",
        "default": true,
        "deviceSelector": {"paths": ["/dev/sdb", "/dev/sdc"]},
        "rawDevices": raw_devices,
    })
}

#[test]
fn defaults_are_block_and_zero() {
    let out = assert_accepted(lvmcluster().create(&cluster(json!([raw(json!({}))]))));
    let rd = &out["spec"]["storage"]["deviceClasses"][0]["rawDevices"];
    assert_eq!(rd["volumeMode"], "Block");
    assert_eq!(rd["cleanup"], "zero");
    assert_accepted(lvmcluster().create(&cluster(json!([raw(
        json!({"volumeMode": "Filesystem", "cleanup": "discard"})
    )]))));
    assert_refused(
        lvmcluster().create(&cluster(json!([raw(json!({"volumeMode": "Raw"}))]))),
        &format!("{DC0}.rawDevices.volumeMode"),
        "Unsupported value",
    );
    assert_refused(
        lvmcluster().create(&cluster(json!([raw(json!({"cleanup": "shred"}))]))),
        &format!("{DC0}.rawDevices.cleanup"),
        "Unsupported value",
    );
}

#[test]
fn raw_devices_exclude_thin_pools_and_raid() {
    for (field, value) in [
        (
            "thinPoolConfig",
            json!({"name": "p", "overprovisionRatio": 1}),
        ),
        ("raidConfig", json!({"type": "raid1"})),
    ] {
        let class = set(raw(json!({})), field, value);
        assert_refused(
            lvmcluster().create(&cluster(json!([class]))),
            &format!("{DC0}.rawDevices"),
            "rawDevices cannot be combined with thinPoolConfig or raidConfig",
        );
    }
}

#[test]
fn raw_devices_are_immutable_and_cannot_be_added_or_removed() {
    let old = cluster(json!([raw(json!({"volumeMode": "Block"}))]));
    assert_accepted(lvmcluster().update(&old, &old));
    let changed = set(
        old.clone(),
        "spec.storage.deviceClasses.0.rawDevices.volumeMode",
        json!("Filesystem"),
    );
    let removed = unset(old.clone(), "spec.storage.deviceClasses.0.rawDevices");
    let thick = cluster(
        json!([{"name": "disks", "default": true, "deviceSelector": {"paths": ["/dev/sdb", "/dev/sdc"]}}]),
    );
    for (new, old) in [(&changed, &old), (&removed, &old), (&old, &thick)] {
        assert_refused(
            lvmcluster().update(new, old),
            &format!("{DC0}.rawDevices"),
            "rawDevices is immutable and cannot be added or removed",
        );
    }
}

#[test]
fn raw_classes_refuse_mount_options_their_static_pvs_would_ignore() {
    let class = set(
        raw(json!({"volumeMode": "Filesystem"})),
        "storageClassOptions",
        json!({"mountOptions": ["noatime"]}),
    );
    assert_refused(
        lvmcluster().create(&cluster(json!([class]))),
        &format!("{DC0}.storageClassOptions.mountOptions"),
        "cannot be set on a rawDevices class",
    );
}

#[test]
fn mount_options_are_bounded() {
    let with = |opts: Value| {
        cluster(json!([set(
            thin("t"),
            "storageClassOptions",
            json!({"mountOptions": opts})
        )]))
    };
    assert_accepted(lvmcluster().create(&with(json!(["noatime", "nodiratime"]))));
    let many: Vec<String> = (0..17).map(|i| format!("opt{i}")).collect();
    assert_refused(
        lvmcluster().create(&with(json!(many))),
        &format!("{DC0}.storageClassOptions.mountOptions"),
        "must have at most 16 items",
    );
    assert_refused(
        lvmcluster().create(&with(json!(["x".repeat(257)]))),
        &format!("{DC0}.storageClassOptions.mountOptions[0]"),
        "may not be longer than 256",
    );
}

#[test]
fn volume_cleanup_is_for_volume_groups() {
    let thick = json!({"name": "t", "default": true, "deviceSelector": {"paths": ["/dev/sdb"]}});
    for how in ["zero", "discard", "none"] {
        assert_accepted(lvmcluster().create(&cluster(json!([set(
            thick.clone(),
            "volumeCleanup",
            json!(how)
        )]))));
    }
    assert_refused(
        lvmcluster().create(&cluster(json!([set(
            thick,
            "volumeCleanup",
            json!("shred")
        )]))),
        &format!("{DC0}.volumeCleanup"),
        "Unsupported value",
    );
    assert_refused(
        lvmcluster().create(&cluster(json!([set(
            raw(json!({})),
            "volumeCleanup",
            json!("zero")
        )]))),
        &format!("{DC0}.volumeCleanup"),
        "a rawDevices class sets rawDevices.cleanup",
    );
}
