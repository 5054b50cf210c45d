//! Rules that only an update can break (CEL transition rules, `oldSelf`): immutable fields,
//! grow-only fields, classes that cannot be removed. Each refusal has an allowed update beside it.

mod common;
use common::*;
use serde_json::{Value, json};

const DC0: &str = "spec.storage.deviceClasses[0]";

fn two_classes() -> Value {
    let fast = set(
        thin("fast"),
        "deviceSelector.optionalPaths",
        json!(["/dev/sdd"]),
    );
    let bulk = json!({"name": "bulk", "fstype": "ext4", "deviceSelector": {"paths": ["/dev/sdc"]}});
    cluster(json!([fast, bulk]))
}

fn refuse_update(old: &Value, new: Value, path: &str, needle: &str) {
    assert_refused(lvmcluster().update(&new, old), path, needle);
}

fn allow_update(old: &Value, new: Value) {
    assert_accepted(lvmcluster().update(&new, old));
}

#[test]
fn an_unchanged_object_is_accepted() {
    let old = two_classes();
    allow_update(&old, old.clone());
}

#[test]
fn fstype_is_immutable() {
    let old = cluster(json!([thin("vg1")]));
    // Writing the default explicitly is no change.
    allow_update(
        &old,
        set(
            old.clone(),
            &format!("{}.fstype", "spec.storage.deviceClasses.0"),
            json!("xfs"),
        ),
    );
    refuse_update(
        &old,
        set(
            old.clone(),
            "spec.storage.deviceClasses.0.fstype",
            json!("ext4"),
        ),
        &format!("{DC0}.fstype"),
        "fstype is immutable",
    );
}

#[test]
fn node_selector_is_immutable() {
    let sel = |k: &str| json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": k, "operator": "Exists"}]}]});
    let old = cluster(json!([set(thin("vg1"), "nodeSelector", sel("a"))]));
    refuse_update(
        &old,
        set(
            old.clone(),
            "spec.storage.deviceClasses.0.nodeSelector",
            sel("b"),
        ),
        &format!("{DC0}.nodeSelector"),
        "nodeSelector is immutable",
    );
    refuse_update(
        &old,
        unset(old.clone(), "spec.storage.deviceClasses.0.nodeSelector"),
        &format!("{DC0}.nodeSelector"),
        "nodeSelector is immutable",
    );
    let bare = cluster(json!([thin("vg1")]));
    refuse_update(
        &bare,
        set(
            bare.clone(),
            "spec.storage.deviceClasses.0.nodeSelector",
            sel("a"),
        ),
        &format!("{DC0}.nodeSelector"),
        "nodeSelector is immutable",
    );
}

#[test]
fn thin_and_thick_cannot_swap() {
    let old = cluster(json!([thin("vg1")]));
    refuse_update(
        &old,
        unset(old.clone(), "spec.storage.deviceClasses.0.thinPoolConfig"),
        &format!("{DC0}.thinPoolConfig"),
        "cannot be added or removed",
    );
    let thick = unset(old.clone(), "spec.storage.deviceClasses.0.thinPoolConfig");
    refuse_update(
        &thick,
        old,
        &format!("{DC0}.thinPoolConfig"),
        "cannot be added or removed",
    );
}

#[test]
fn thin_pool_name_and_size_percent_are_immutable() {
    let old = cluster(json!([thin("vg1")]));
    let tp = "spec.storage.deviceClasses.0.thinPoolConfig";
    refuse_update(
        &old,
        set(old.clone(), &format!("{tp}.name"), json!("pool2")),
        &format!("{DC0}.thinPoolConfig.name"),
        "name is immutable",
    );
    refuse_update(
        &old,
        set(old.clone(), &format!("{tp}.sizePercent"), json!(80)),
        &format!("{DC0}.thinPoolConfig.sizePercent"),
        "sizePercent is immutable",
    );
}

#[test]
fn overprovision_ratio_may_change() {
    let old = cluster(json!([thin("vg1")]));
    allow_update(
        &old,
        set(
            old.clone(),
            "spec.storage.deviceClasses.0.thinPoolConfig.overprovisionRatio",
            json!(20),
        ),
    );
}

#[test]
fn chunk_size_is_immutable() {
    let old = cluster(json!([set(
        thin("vg1"),
        "thinPoolConfig.chunkSize",
        json!("128Ki")
    )]));
    let tp = "spec.storage.deviceClasses.0.thinPoolConfig";
    // The same size written another way is no change.
    allow_update(
        &old,
        set(old.clone(), &format!("{tp}.chunkSize"), json!(131072)),
    );
    refuse_update(
        &old,
        set(old.clone(), &format!("{tp}.chunkSize"), json!("256Ki")),
        &format!("{DC0}.thinPoolConfig.chunkSize"),
        "chunk size of an existing thin pool cannot change",
    );
    // Unset is the default 128Ki: the same size again.
    allow_update(&old, unset(old.clone(), &format!("{tp}.chunkSize")));
    let big = set(old.clone(), &format!("{tp}.chunkSize"), json!("256Ki"));
    refuse_update(
        &big,
        unset(big.clone(), &format!("{tp}.chunkSize")),
        &format!("{DC0}.thinPoolConfig.chunkSize"),
        "cannot change",
    );
    refuse_update(
        &big,
        set(big.clone(), &format!("{tp}.chunkSize"), json!(131072)),
        &format!("{DC0}.thinPoolConfig.chunkSize"),
        "cannot change",
    );
    refuse_update(
        &old,
        set(
            old.clone(),
            &format!("{tp}.chunkSizeCalculationPolicy"),
            json!("Host"),
        ),
        &format!("{DC0}.thinPoolConfig.chunkSize"),
        "cannot change",
    );
}

#[test]
fn metadata_size_may_only_grow() {
    let tpc = json!({"name": "p", "overprovisionRatio": 10, "metadataSizeCalculationPolicy": "Static", "metadataSize": "1Gi"});
    let old = cluster(json!([set(thin("vg1"), "thinPoolConfig", tpc)]));
    let ms = "spec.storage.deviceClasses.0.thinPoolConfig.metadataSize";
    allow_update(&old, set(old.clone(), ms, json!("2Gi")));
    allow_update(&old, set(old.clone(), ms, json!(2147483648u64)));
    allow_update(&old, set(old.clone(), ms, json!(1073741824)));
    for smaller in [json!("512Mi"), json!(1073741823), json!("1073741823")] {
        refuse_update(
            &old,
            set(old.clone(), ms, smaller),
            &format!("{DC0}.thinPoolConfig.metadataSize"),
            "can only grow",
        );
    }
    // Unset is the default 1Gi: dropping a larger size shrinks the metadata too.
    let big = set(old.clone(), ms, json!("4Gi"));
    refuse_update(
        &big,
        unset(big.clone(), ms),
        &format!("{DC0}.thinPoolConfig.metadataSize"),
        "can only grow",
    );
    let default = unset(old.clone(), ms);
    allow_update(&default, old.clone());
    refuse_update(
        &default,
        set(default.clone(), ms, json!("512Mi")),
        &format!("{DC0}.thinPoolConfig.metadataSize"),
        "can only grow",
    );
    // Under Host, lvm2 sized the metadata; the first Static size is not held to a default.
    let host = set(
        unset(old.clone(), ms),
        "spec.storage.deviceClasses.0.thinPoolConfig.metadataSizeCalculationPolicy",
        json!("Host"),
    );
    allow_update(&host, set(old.clone(), ms, json!("512Mi")));
}

#[test]
fn metadata_policy_only_from_host_to_static() {
    let old = cluster(json!([thin("vg1")]));
    let pol = "spec.storage.deviceClasses.0.thinPoolConfig.metadataSizeCalculationPolicy";
    let stat = set(old.clone(), pol, json!("Static"));
    allow_update(&old, stat.clone());
    refuse_update(
        &stat,
        set(stat.clone(), pol, json!("Host")),
        &format!("{DC0}.thinPoolConfig.metadataSizeCalculationPolicy"),
        "only change from Host to Static",
    );
}

#[test]
fn paths_may_be_added_not_removed() {
    let old = two_classes();
    let paths = "spec.storage.deviceClasses.1.deviceSelector.paths";
    allow_update(
        &old,
        set(old.clone(), paths, json!(["/dev/sdc", "/dev/sde"])),
    );
    refuse_update(
        &old,
        set(old.clone(), paths, json!(["/dev/sde"])),
        "spec.storage.deviceClasses[1].deviceSelector.paths",
        "cannot be removed",
    );
    let opt = "spec.storage.deviceClasses.0.deviceSelector.optionalPaths";
    allow_update(&old, set(old.clone(), opt, json!(["/dev/sdd", "/dev/sdf"])));
    refuse_update(
        &old,
        set(old.clone(), opt, json!(["/dev/sdf"])),
        &format!("{DC0}.deviceSelector.optionalPaths"),
        "cannot be removed",
    );
}

#[test]
fn force_wipe_is_immutable() {
    let old = cluster(json!([thin("vg1")]));
    let fw = "spec.storage.deviceClasses.0.deviceSelector.forceWipeDevicesAndDestroyAllData";
    // Writing the implied false is no change; turning wiping on later is.
    allow_update(&old, set(old.clone(), fw, json!(false)));
    refuse_update(
        &old,
        set(old.clone(), fw, json!(true)),
        &format!("{DC0}.deviceSelector.forceWipeDevicesAndDestroyAllData"),
        "is immutable",
    );
    let wiping = set(old.clone(), fw, json!(true));
    refuse_update(
        &wiping,
        old,
        &format!("{DC0}.deviceSelector.forceWipeDevicesAndDestroyAllData"),
        "is immutable",
    );
}

#[test]
fn storage_class_options_reclaim_binding_and_parameters_are_immutable() {
    let old = cluster(json!([set(
        thin("vg1"),
        "storageClassOptions",
        json!({"additionalParameters": {"a": "1"}})
    )]));
    let sco = "spec.storage.deviceClasses.0.storageClassOptions";
    let at = format!("{DC0}.storageClassOptions");
    refuse_update(
        &old,
        set(
            old.clone(),
            &format!("{sco}.reclaimPolicy"),
            json!("Retain"),
        ),
        &format!("{at}.reclaimPolicy"),
        "reclaimPolicy is immutable",
    );
    refuse_update(
        &old,
        set(
            old.clone(),
            &format!("{sco}.volumeBindingMode"),
            json!("Immediate"),
        ),
        &format!("{at}.volumeBindingMode"),
        "volumeBindingMode is immutable",
    );
    refuse_update(
        &old,
        set(
            old.clone(),
            &format!("{sco}.additionalParameters"),
            json!({"a": "2"}),
        ),
        &format!("{at}.additionalParameters"),
        "additionalParameters is immutable",
    );
    allow_update(
        &old,
        set(
            old.clone(),
            &format!("{sco}.additionalLabels"),
            json!({"tier": "gold"}),
        ),
    );
}

#[test]
fn the_default_class_cannot_be_removed() {
    let old = two_classes();
    let only_bulk = set(
        old.clone(),
        "spec.storage.deviceClasses",
        json!([old["spec"]["storage"]["deviceClasses"][1].clone()]),
    );
    refuse_update(
        &old,
        only_bulk,
        "spec.storage.deviceClasses",
        "default device class cannot be removed",
    );
    let only_fast = set(
        old.clone(),
        "spec.storage.deviceClasses",
        json!([old["spec"]["storage"]["deviceClasses"][0].clone()]),
    );
    allow_update(&old, only_fast);
}

#[test]
fn the_last_class_cannot_be_removed() {
    let old = cluster(json!([set(thin("vg1"), "default", json!(false))]));
    assert_refused(
        lvmcluster().update(&cluster(json!([])), &old),
        "spec.storage.deviceClasses",
        "at least 1 items",
    );
}

#[test]
fn classes_are_matched_by_name_not_position() {
    // Reordering the list is no change: rules compare each class with the old class of its name.
    let old = two_classes();
    let classes = old["spec"]["storage"]["deviceClasses"].as_array().unwrap();
    let swapped = set(
        old.clone(),
        "spec.storage.deviceClasses",
        json!([classes[1].clone(), classes[0].clone()]),
    );
    allow_update(&old, swapped.clone());
    // And a changed class is caught at its new position.
    let changed = set(
        swapped,
        "spec.storage.deviceClasses.1.fstype",
        json!("ext4"),
    );
    refuse_update(
        &old,
        changed,
        "spec.storage.deviceClasses[1].fstype",
        "fstype is immutable",
    );
}

#[test]
fn a_new_class_is_not_held_to_transition_rules() {
    let old = cluster(json!([thin("vg1")]));
    let extra = json!({"name": "vg2", "fstype": "ext4", "deviceSelector": {"paths": ["/dev/sdz"]}});
    let classes = json!([old["spec"]["storage"]["deviceClasses"][0].clone(), extra]);
    allow_update(
        &old,
        set(old.clone(), "spec.storage.deviceClasses", classes),
    );
}
