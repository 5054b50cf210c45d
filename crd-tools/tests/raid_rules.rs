//! The schema rules of `raidConfig` and `deviceDiscoveryPolicy` (LVMS 2026), each with one
//! refused object and an accepted neighbour, on create and on update.

mod common;
use common::*;
use serde_json::{Value, json};

const DC0: &str = "spec.storage.deviceClasses[0]";

/// A RAID default class over `paths`.
fn raid(raid_config: Value, paths: &[&str]) -> Value {
    json!({
        "name": "r",
        "default": true,
        "deviceSelector": {"paths": paths},
        "raidConfig": raid_config,
    })
}

fn create(class: Value) -> Result<Value, Vec<crd_tools::validate::FieldError>> {
    lvmcluster().create(&cluster(json!([class])))
}

fn refuse(class: Value, path: &str, needle: &str) {
    assert_refused(create(class), path, needle);
}

fn accept(class: Value) -> Value {
    assert_accepted(create(class))
}

const TWO: &[&str] = &["/dev/sdb", "/dev/sdc"];
const THREE: &[&str] = &["/dev/sdb", "/dev/sdc", "/dev/sdd"];
const FOUR: &[&str] = &["/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde"];
const FIVE: &[&str] = &["/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde", "/dev/sdf"];

#[test]
fn every_level_is_accepted_with_enough_devices() {
    accept(raid(json!({"type": "raid1"}), TWO));
    accept(raid(json!({"type": "raid4"}), THREE));
    accept(raid(
        json!({"type": "raid5", "stripes": 2, "stripeSize": "128Ki"}),
        THREE,
    ));
    accept(raid(json!({"type": "raid6"}), FIVE));
    accept(raid(json!({"type": "raid10", "mirrors": 1}), FOUR));
    refuse(
        raid(json!({"type": "raid0"}), TWO),
        &format!("{DC0}.raidConfig.type"),
        "Unsupported value",
    );
}

#[test]
fn raid_and_thin_pool_are_mutually_exclusive() {
    let both = set(
        raid(json!({"type": "raid1"}), TWO),
        "thinPoolConfig",
        json!({"name": "p", "overprovisionRatio": 1}),
    );
    refuse(
        both,
        &format!("{DC0}.raidConfig"),
        "raidConfig and thinPoolConfig are mutually exclusive",
    );
}

#[test]
fn mirrors_only_for_raid1_and_raid10() {
    refuse(
        raid(json!({"type": "raid5", "mirrors": 1}), THREE),
        &format!("{DC0}.raidConfig.mirrors"),
        "mirrors is only valid for raid1 and raid10",
    );
    accept(raid(json!({"type": "raid1", "mirrors": 2}), THREE));
}

#[test]
fn stripes_and_stripe_size_only_for_striped_levels() {
    refuse(
        raid(json!({"type": "raid1", "stripes": 2}), TWO),
        &format!("{DC0}.raidConfig.stripes"),
        "stripes is only valid for raid4, raid5, raid6, and raid10",
    );
    refuse(
        raid(json!({"type": "raid1", "stripeSize": "64Ki"}), TWO),
        &format!("{DC0}.raidConfig.stripeSize"),
        "stripeSize is only valid for raid4, raid5, raid6, and raid10",
    );
    accept(raid(
        json!({"type": "raid4", "stripes": 2, "stripeSize": "64Ki"}),
        THREE,
    ));
    refuse(
        raid(json!({"type": "raid6", "stripes": 2}), FIVE),
        &format!("{DC0}.raidConfig.stripes"),
        "raid6 needs at least 3 stripes",
    );
    refuse(
        raid(json!({"type": "raid5", "stripes": 1}), THREE),
        &format!("{DC0}.raidConfig.stripes"),
        "should be greater than or equal to 2",
    );
}

#[test]
fn stripe_size_is_a_power_of_two() {
    for good in [json!("64Ki"), json!("1Mi"), json!(131072), json!("4096")] {
        accept(raid(json!({"type": "raid5", "stripeSize": good}), THREE));
    }
    for bad in [
        json!("100Ki"),
        json!(65537),
        json!("2Ki"),
        json!("2Gi"),
        json!("0.5Ki"),
    ] {
        refuse(
            raid(json!({"type": "raid5", "stripeSize": bad}), THREE),
            &format!("{DC0}.raidConfig.stripeSize"),
            "stripeSize must be a power of 2",
        );
    }
}

#[test]
fn raid_needs_paths_or_optional_paths() {
    let bare = json!({"name": "r", "default": true, "raidConfig": {"type": "raid1"}});
    refuse(
        bare,
        &format!("{DC0}.deviceSelector"),
        "at least one of paths or optionalPaths is required when raidConfig is set",
    );
    let optional = json!({"name": "r", "deviceSelector": {"optionalPaths": TWO}, "raidConfig": {"type": "raid1"}});
    accept(optional);
}

#[test]
fn enough_devices_for_the_level() {
    let cases: [(Value, &[&str], &[&str]); 6] = [
        (json!({"type": "raid1"}), &TWO[..1], TWO),
        (json!({"type": "raid1", "mirrors": 2}), TWO, THREE),
        (json!({"type": "raid5"}), TWO, THREE),
        (json!({"type": "raid4", "stripes": 3}), THREE, FOUR),
        (json!({"type": "raid6"}), FOUR, FIVE),
        (json!({"type": "raid10"}), &FIVE[..2], FOUR),
    ];
    for (config, too_few, enough) in cases {
        refuse(
            raid(config.clone(), too_few),
            &format!("{DC0}.deviceSelector"),
            "deviceSelector lists too few devices for raidConfig",
        );
        accept(raid(config, enough));
    }
    // Optional paths count as devices that may exist: the node checks what is really there.
    let mixed = json!({"name": "r", "deviceSelector": {"paths": ["/dev/sdb"], "optionalPaths": ["/dev/sdc", "/dev/sdd"]}, "raidConfig": {"type": "raid5"}});
    accept(mixed);
}

#[test]
fn raid10_device_count_divisible_by_copies() {
    refuse(
        raid(json!({"type": "raid10"}), FIVE),
        &format!("{DC0}.deviceSelector.paths"),
        "raid10 requires a device count divisible by mirrors+1",
    );
    let six = [
        "/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde", "/dev/sdf", "/dev/sdg",
    ];
    accept(raid(json!({"type": "raid10", "mirrors": 1}), &six));
    refuse(
        raid(json!({"type": "raid10", "mirrors": 1, "stripes": 1}), &six),
        &format!("{DC0}.raidConfig.stripes"),
        "should be greater than or equal to 2",
    );
    refuse(
        raid(json!({"type": "raid10", "mirrors": 2}), &six),
        &format!("{DC0}.raidConfig.mirrors"),
        "raid10 supports only mirrors 1",
    );
}

#[test]
fn raid_config_is_immutable_and_cannot_be_added_or_removed() {
    let old = cluster(json!([raid(
        json!({"type": "raid5", "stripeSize": "64Ki"}),
        FOUR
    )]));
    assert_accepted(lvmcluster().update(&old, &old));
    for (field, value) in [
        ("type", json!("raid4")),
        ("stripes", json!(3)),
        ("stripeSize", json!("128Ki")),
    ] {
        let new = set(
            old.clone(),
            &format!("spec.storage.deviceClasses.0.raidConfig.{field}"),
            value,
        );
        assert_refused(
            lvmcluster().update(&new, &old),
            &format!("{DC0}.raidConfig"),
            "raidConfig is immutable after creation",
        );
    }
    let removed = unset(old.clone(), "spec.storage.deviceClasses.0.raidConfig");
    assert_refused(
        lvmcluster().update(&removed, &old),
        &format!("{DC0}.raidConfig"),
        "raidConfig cannot be added to or removed from an existing device class",
    );
    let thick = cluster(json!([{"name": "r", "default": true, "deviceSelector": {"paths": FOUR}}]));
    let added = set(
        thick.clone(),
        "spec.storage.deviceClasses.0.raidConfig",
        json!({"type": "raid5"}),
    );
    assert_refused(
        lvmcluster().update(&added, &thick),
        &format!("{DC0}.raidConfig"),
        "raidConfig cannot be added to or removed from an existing device class",
    );
    // Paths may still be added to a RAID class (more room for new volumes).
    let more = set(
        old.clone(),
        "spec.storage.deviceClasses.0.deviceSelector.paths",
        json!(FIVE),
    );
    assert_accepted(lvmcluster().update(&more, &old));
}

#[test]
fn discovery_policy_is_static_or_dynamic_and_may_change() {
    let class = |policy: &str| {
        json!({"name": "vg1", "default": true, "deviceDiscoveryPolicy": policy,
               "thinPoolConfig": {"name": "p", "overprovisionRatio": 1}})
    };
    let old = cluster(json!([class("Static")]));
    assert_accepted(lvmcluster().create(&old));
    assert_accepted(lvmcluster().update(&cluster(json!([class("Dynamic")])), &old));
    let unset_policy = unset(
        old.clone(),
        "spec.storage.deviceClasses.0.deviceDiscoveryPolicy",
    );
    assert_accepted(lvmcluster().update(&unset_policy, &old));
    assert_refused(
        lvmcluster().create(&cluster(json!([class("Sometimes")]))),
        &format!("{DC0}.deviceDiscoveryPolicy"),
        "Unsupported value",
    );
}

#[test]
fn the_volume_group_crd_keeps_raid_and_thin_apart() {
    let vg = crd_tools::validate::SchemaValidator::new(
        &lvms_api::crd("lvmvolumegroups.lvm.topolvm.io"),
        "v1alpha1",
    );
    let obj = |spec: Value| {
        json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
               "metadata": {"name": "r", "namespace": "openshift-storage"}, "spec": spec})
    };
    assert_accepted(vg.create(&obj(json!({"raidConfig": {"type": "raid1"}}))));
    assert_refused(
        vg.create(&obj(json!({"raidConfig": {"type": "raid1"}, "thinPoolConfig": {"name": "p", "overprovisionRatio": 1}}))),
        "spec.raidConfig",
        "raidConfig and thinPoolConfig are mutually exclusive",
    );
    assert_refused(
        vg.create(&obj(
            json!({"raidConfig": {"type": "raid1", "stripeSize": "64Ki"}}),
        )),
        "spec.raidConfig.stripeSize",
        "stripeSize is only valid",
    );
}

#[test]
fn a_null_is_the_field_unset_and_cannot_slip_past_the_rules() {
    // The API server drops a null that the schema does not allow before validating: writing
    // `raidConfig: null` is removing it, which the class's rules refuse.
    let old = cluster(json!([raid(json!({"type": "raid1", "mirrors": 1}), TWO)]));
    let nulled = set(
        old.clone(),
        "spec.storage.deviceClasses.0.raidConfig",
        Value::Null,
    );
    assert_refused(
        lvmcluster().update(&nulled, &old),
        &format!("{DC0}.raidConfig"),
        "raidConfig cannot be added to or removed from an existing device class",
    );
    let mirrors = set(
        old.clone(),
        "spec.storage.deviceClasses.0.raidConfig.mirrors",
        Value::Null,
    );
    assert_refused(
        lvmcluster().update(&mirrors, &old),
        &format!("{DC0}.raidConfig"),
        "raidConfig is immutable after creation",
    );
    let thin = cluster(json!([thin("vg1")]));
    let nulled = set(
        thin.clone(),
        "spec.storage.deviceClasses.0.thinPoolConfig",
        Value::Null,
    );
    assert_refused(
        lvmcluster().update(&nulled, &thin),
        &format!("{DC0}.thinPoolConfig"),
        "thinPoolConfig cannot be added or removed",
    );
    // On create a null optional field is simply unset.
    let created = accept(set(
        raid(json!({"type": "raid1"}), TWO),
        "deviceDiscoveryPolicy",
        Value::Null,
    ));
    assert!(
        created["spec"]["storage"]["deviceClasses"][0]
            .get("deviceDiscoveryPolicy")
            .is_none()
    );
    // A null where the schema has a default gets the default (fstype: xfs).
    let created = accept(set(
        raid(json!({"type": "raid1"}), TWO),
        "fstype",
        Value::Null,
    ));
    assert_eq!(
        created["spec"]["storage"]["deviceClasses"][0]["fstype"],
        "xfs"
    );
}
