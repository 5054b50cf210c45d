//! Every rule that refuses a bad new LVMCluster (or LogicalVolume), one bad object each, with the
//! field the API server would name. The good object beside each proves the rule is not a blanket no.

mod common;
use common::*;
use serde_json::{Value, json};

fn refuse(obj: Value, path: &str, needle: &str) {
    assert_refused(lvmcluster().create(&obj), path, needle);
}

const DC0: &str = "spec.storage.deviceClasses[0]";

#[test]
fn the_base_object_is_accepted_and_defaulted() {
    let out = assert_accepted(lvmcluster().create(&cluster(json!([thin("vg1")]))));
    let dc = &out["spec"]["storage"]["deviceClasses"][0];
    assert_eq!(dc["fstype"], "xfs");
    assert_eq!(dc["thinPoolConfig"]["sizePercent"], 90);
    assert_eq!(dc["thinPoolConfig"]["chunkSizeCalculationPolicy"], "Static");
    assert_eq!(
        dc["thinPoolConfig"]["metadataSizeCalculationPolicy"],
        "Host"
    );
    assert_eq!(dc["storageClassOptions"]["reclaimPolicy"], "Delete");
    assert_eq!(
        dc["storageClassOptions"]["volumeBindingMode"],
        "WaitForFirstConsumer"
    );
}

#[test]
fn storage_is_required() {
    let obj = unset(cluster(json!([])), "spec.storage");
    refuse(obj, "spec.storage", "Required value");
}

#[test]
fn at_least_one_device_class() {
    refuse(
        cluster(json!([])),
        "spec.storage.deviceClasses",
        "at least 1 items",
    );
}

#[test]
fn at_most_max_device_classes() {
    let max = lvms_api::lvmcluster::MAX_DEVICE_CLASSES;
    let classes = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"name": format!("vg{i}"), "deviceSelector": {"paths": [format!("/dev/vd{i}")]}}))
            .collect()
    };
    assert_accepted(lvmcluster().create(&cluster(classes(max))));
    refuse(
        cluster(classes(max + 1)),
        "spec.storage.deviceClasses",
        &format!("at most {max} items"),
    );
}

#[test]
fn class_name_must_be_a_dns_label() {
    let good = cluster(json!([thin("vg-1")]));
    assert_accepted(lvmcluster().create(&good));
    refuse(
        cluster(json!([thin("VG_1")])),
        &format!("{DC0}.name"),
        "should match",
    );
    refuse(
        cluster(json!([thin("-vg")])),
        &format!("{DC0}.name"),
        "should match",
    );
}

#[test]
fn class_name_at_most_245_chars() {
    assert_accepted(lvmcluster().create(&cluster(json!([thin(&"a".repeat(245))]))));
    refuse(
        cluster(json!([thin(&"a".repeat(246))])),
        &format!("{DC0}.name"),
        "longer than 245",
    );
}

#[test]
fn class_names_are_unique() {
    let a = set(thin("vg1"), "default", json!(false));
    refuse(
        cluster(json!([a, thin("vg1")])),
        "spec.storage.deviceClasses[1]",
        "Duplicate value",
    );
}

#[test]
fn at_most_one_default_class() {
    let b = set(thin("vg2"), "deviceSelector.paths", json!(["/dev/sdc"]));
    refuse(
        cluster(json!([thin("vg1"), b.clone()])),
        "spec.storage.deviceClasses",
        "at most one device class",
    );
    let b = set(b, "default", json!(false));
    assert_accepted(lvmcluster().create(&cluster(json!([thin("vg1"), b]))));
}

#[test]
fn several_classes_need_paths() {
    let bare = json!({"name": "vg2"});
    refuse(
        cluster(json!([thin("vg1"), bare])),
        "spec.storage.deviceClasses",
        "every class needs deviceSelector.paths",
    );
    let optional = json!({"name": "vg2", "deviceSelector": {"optionalPaths": ["/dev/sdc"]}});
    assert_accepted(lvmcluster().create(&cluster(json!([thin("vg1"), optional]))));
    // A single class may select every eligible disk.
    assert_accepted(lvmcluster().create(&cluster(json!([{"name": "vg1"}]))));
}

#[test]
fn fstype_is_xfs_or_ext4() {
    assert_accepted(lvmcluster().create(&cluster(json!([set(
        thin("vg1"),
        "fstype",
        json!("ext4")
    )]))));
    refuse(
        cluster(json!([set(thin("vg1"), "fstype", json!("btrfs"))])),
        &format!("{DC0}.fstype"),
        "Unsupported value: \"btrfs\"",
    );
}

#[test]
fn paths_are_absolute() {
    let obj = cluster(json!([set(
        thin("vg1"),
        "deviceSelector.paths",
        json!(["dev/sdb"])
    )]));
    refuse(
        obj,
        &format!("{DC0}.deviceSelector.paths[0]"),
        "should match",
    );
    let obj = cluster(json!([set(
        thin("vg1"),
        "deviceSelector.optionalPaths",
        json!(["sdc"])
    )]));
    refuse(
        obj,
        &format!("{DC0}.deviceSelector.optionalPaths[0]"),
        "should match",
    );
}

#[test]
fn paths_are_unique_within_a_list() {
    let obj = cluster(json!([set(
        thin("vg1"),
        "deviceSelector.paths",
        json!(["/dev/sdb", "/dev/sdb"])
    )]));
    refuse(
        obj,
        &format!("{DC0}.deviceSelector.paths[1]"),
        "Duplicate value",
    );
}

#[test]
fn a_path_is_not_both_required_and_optional() {
    let obj = cluster(json!([set(
        thin("vg1"),
        "deviceSelector.optionalPaths",
        json!(["/dev/sdc", "/dev/sdb"])
    )]));
    refuse(
        obj,
        &format!("{DC0}.deviceSelector.optionalPaths"),
        "both in paths and in optionalPaths",
    );
    let obj = cluster(json!([set(
        thin("vg1"),
        "deviceSelector.optionalPaths",
        json!(["/dev/sdc"])
    )]));
    assert_accepted(lvmcluster().create(&obj));
}

#[test]
fn at_most_64_paths() {
    let paths: Vec<String> = (0..65).map(|i| format!("/dev/disk{i}")).collect();
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "deviceSelector.paths",
            json!(paths)
        )])),
        &format!("{DC0}.deviceSelector.paths"),
        "at most 64 items",
    );
}

#[test]
fn thin_pool_needs_name_and_ratio() {
    refuse(
        cluster(json!([unset(thin("vg1"), "thinPoolConfig.name")])),
        &format!("{DC0}.thinPoolConfig.name"),
        "Required value",
    );
    refuse(
        cluster(json!([unset(
            thin("vg1"),
            "thinPoolConfig.overprovisionRatio"
        )])),
        &format!("{DC0}.thinPoolConfig.overprovisionRatio"),
        "Required value",
    );
}

#[test]
fn thin_pool_name_is_an_lv_name() {
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.name",
            json!("-pool")
        )])),
        &format!("{DC0}.thinPoolConfig.name"),
        "should match",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.name",
            json!("my pool")
        )])),
        &format!("{DC0}.thinPoolConfig.name"),
        "should match",
    );
}

#[test]
fn size_percent_between_10_and_100() {
    for ok in [10, 100] {
        assert_accepted(lvmcluster().create(&cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.sizePercent",
            json!(ok)
        )]))));
    }
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.sizePercent",
            json!(9)
        )])),
        &format!("{DC0}.thinPoolConfig.sizePercent"),
        "greater than or equal to 10",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.sizePercent",
            json!(101)
        )])),
        &format!("{DC0}.thinPoolConfig.sizePercent"),
        "less than or equal to 100",
    );
}

#[test]
fn overprovision_ratio_between_1_and_100() {
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.overprovisionRatio",
            json!(0)
        )])),
        &format!("{DC0}.thinPoolConfig.overprovisionRatio"),
        "greater than or equal to 1",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.overprovisionRatio",
            json!(101)
        )])),
        &format!("{DC0}.thinPoolConfig.overprovisionRatio"),
        "less than or equal to 100",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.overprovisionRatio",
            json!("10")
        )])),
        &format!("{DC0}.thinPoolConfig.overprovisionRatio"),
        "must be of type integer",
    );
}

#[test]
fn policies_are_enums() {
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSizeCalculationPolicy",
            json!("Auto")
        )])),
        &format!("{DC0}.thinPoolConfig.chunkSizeCalculationPolicy"),
        "Unsupported value",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.metadataSizeCalculationPolicy",
            json!("static")
        )])),
        &format!("{DC0}.thinPoolConfig.metadataSizeCalculationPolicy"),
        "Unsupported value",
    );
}

#[test]
fn chunk_size_only_with_static_policy() {
    let tp = "thinPoolConfig";
    let host = set(
        set(
            thin("vg1"),
            &format!("{tp}.chunkSizeCalculationPolicy"),
            json!("Host"),
        ),
        &format!("{tp}.chunkSize"),
        json!("128Ki"),
    );
    refuse(
        cluster(json!([host])),
        &format!("{DC0}.thinPoolConfig.chunkSize"),
        "only be set when chunkSizeCalculationPolicy is Static",
    );
    // Static is the default policy, so a bare chunkSize is fine.
    assert_accepted(lvmcluster().create(&cluster(json!([set(
        thin("vg1"),
        "thinPoolConfig.chunkSize",
        json!("128Ki")
    )]))));
}

#[test]
fn chunk_size_between_64ki_and_1gi() {
    let at = format!("{DC0}.thinPoolConfig.chunkSize");
    // Quantity strings in any notation, and plain integers, as LVMS accepts them.
    for ok in [
        json!("64Ki"),
        json!("1Gi"),
        json!(65536),
        json!(1073741824),
        json!("131072"),
        json!("0.5Mi"),
        json!("1048576k"),
    ] {
        assert_accepted(lvmcluster().create(&cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSize",
            ok
        )]))));
    }
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSize",
            json!("32Ki")
        )])),
        &at,
        "between 64Ki and 1Gi",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSize",
            json!("2Gi")
        )])),
        &at,
        "between 64Ki and 1Gi",
    );
    // The refusal as the README shows it: the field, the node's type, the rule's message.
    let errors = lvmcluster()
        .create(&cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSize",
            json!("32Ki")
        )])))
        .unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "spec.storage.deviceClasses[0].thinPoolConfig.chunkSize: Invalid value: \"object\": chunkSize must be between 64Ki and 1Gi"
        ]
    );
    for too_far in [
        json!(65535),
        json!(1073741825),
        json!("65535"),
        json!("1.5Gi"),
    ] {
        refuse(
            cluster(json!([set(
                thin("vg1"),
                "thinPoolConfig.chunkSize",
                too_far
            )])),
            &at,
            "between 64Ki and 1Gi",
        );
    }
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "thinPoolConfig.chunkSize",
            json!("lots")
        )])),
        &at,
        "should match",
    );
}

#[test]
fn metadata_size_only_with_static_policy() {
    // Host is the default metadata policy.
    let obj = cluster(json!([set(
        thin("vg1"),
        "thinPoolConfig.metadataSize",
        json!("1Gi")
    )]));
    refuse(
        obj,
        &format!("{DC0}.thinPoolConfig.metadataSize"),
        "only be set when metadataSizeCalculationPolicy is Static",
    );
}

#[test]
fn metadata_size_between_2mi_and_16gi() {
    let stat = set(
        thin("vg1"),
        "thinPoolConfig.metadataSizeCalculationPolicy",
        json!("Static"),
    );
    assert_accepted(lvmcluster().create(&cluster(json!([set(
        stat.clone(),
        "thinPoolConfig.metadataSize",
        json!("16Gi")
    )]))));
    let at = format!("{DC0}.thinPoolConfig.metadataSize");
    refuse(
        cluster(json!([set(
            stat.clone(),
            "thinPoolConfig.metadataSize",
            json!("1Mi")
        )])),
        &at,
        "between 2Mi and 16Gi",
    );
    refuse(
        cluster(json!([set(
            stat.clone(),
            "thinPoolConfig.metadataSize",
            json!("17Gi")
        )])),
        &at,
        "between 2Mi and 16Gi",
    );
    for ok in [
        json!("2Mi"),
        json!(2097152),
        json!(17179869184u64),
        json!("1.5Gi"),
    ] {
        assert_accepted(lvmcluster().create(&cluster(json!([set(
            stat.clone(),
            "thinPoolConfig.metadataSize",
            ok
        )]))));
    }
    for too_far in [json!(2097151), json!(17179869185u64), json!("16.5Gi")] {
        refuse(
            cluster(json!([set(
                stat.clone(),
                "thinPoolConfig.metadataSize",
                too_far
            )])),
            &at,
            "between 2Mi and 16Gi",
        );
    }
}

#[test]
fn auto_extend_is_off_unset_defaulted_when_empty_and_bounded() {
    let base = assert_accepted(lvmcluster().create(&cluster(json!([thin("vg1")]))));
    assert!(
        base["spec"]["storage"]["deviceClasses"][0]["thinPoolConfig"]["autoExtend"].is_null(),
        "unset stays unset (off, as in LVMS)"
    );
    let on = assert_accepted(lvmcluster().create(&cluster(json!([set(
        thin("vg1"),
        "thinPoolConfig.autoExtend",
        json!({})
    )]))));
    assert_eq!(
        on["spec"]["storage"]["deviceClasses"][0]["thinPoolConfig"]["autoExtend"],
        json!({"thresholdPercent": 70, "stepPercent": 10, "maxSizePercent": 100})
    );
    let ae = |field: &str, v: i64| {
        cluster(json!([set(
            set(thin("vg1"), "thinPoolConfig.sizePercent", json!(10)),
            &format!("thinPoolConfig.autoExtend.{field}"),
            json!(v)
        )]))
    };
    let at = |field: &str| format!("{DC0}.thinPoolConfig.autoExtend.{field}");
    for (field, min, max) in [
        ("thresholdPercent", 50, 95),
        ("stepPercent", 1, 50),
        ("maxSizePercent", 11, 100),
    ] {
        assert_accepted(lvmcluster().create(&ae(field, min)));
        assert_accepted(lvmcluster().create(&ae(field, max)));
        refuse(
            ae(field, min - 1),
            &at(field),
            &format!("greater than or equal to {min}"),
        );
        refuse(
            ae(field, max + 1),
            &at(field),
            &format!("less than or equal to {max}"),
        );
    }
}

#[test]
fn auto_extend_ceiling_above_the_pools_size() {
    let class = |size: i64, max: i64| {
        cluster(json!([set(
            set(thin("vg1"), "thinPoolConfig.sizePercent", json!(size)),
            "thinPoolConfig.autoExtend",
            json!({"maxSizePercent": max})
        )]))
    };
    assert_accepted(lvmcluster().create(&class(60, 61)));
    let at = format!("{DC0}.thinPoolConfig.autoExtend.maxSizePercent");
    let needle = "autoExtend.maxSizePercent must be greater than sizePercent";
    refuse(class(60, 60), &at, needle);
    refuse(class(80, 50), &at, needle);
    // sizePercent 90 by default and maxSizePercent 100 by default: `autoExtend: {}` is valid
    // (above), and with sizePercent 100 there is nowhere to grow.
    let full = cluster(json!([set(
        set(thin("vg1"), "thinPoolConfig.sizePercent", json!(100)),
        "thinPoolConfig.autoExtend",
        json!({})
    )]));
    refuse(full, &at, needle);
}

#[test]
fn storage_class_options_are_enums() {
    let sco = format!("{DC0}.storageClassOptions");
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "storageClassOptions",
            json!({"reclaimPolicy": "Recycle"})
        )])),
        &format!("{sco}.reclaimPolicy"),
        "Unsupported value",
    );
    refuse(
        cluster(json!([set(
            thin("vg1"),
            "storageClassOptions",
            json!({"volumeBindingMode": "Later"})
        )])),
        &format!("{sco}.volumeBindingMode"),
        "Unsupported value",
    );
}

#[test]
fn additional_parameters_cannot_override_reserved_keys() {
    let at = format!("{DC0}.storageClassOptions.additionalParameters");
    for key in ["topolvm.io/device-class", "csi.storage.k8s.io/fstype"] {
        let obj = cluster(json!([set(
            thin("vg1"),
            "storageClassOptions",
            json!({"additionalParameters": {key: "x"}})
        )]));
        refuse(
            obj,
            &at,
            "cannot set topolvm.io/device-class or csi.storage.k8s.io/fstype",
        );
    }
}

#[test]
fn additional_parameters_and_labels_at_most_16() {
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for field in ["additionalParameters", "additionalLabels"] {
        let obj = cluster(json!([set(
            thin("vg1"),
            "storageClassOptions",
            json!({field: many.clone()})
        )]));
        refuse(
            obj,
            &format!("{DC0}.storageClassOptions.{field}"),
            "at most 16",
        );
    }
}

#[test]
fn additional_labels_cannot_set_managed_labels() {
    for key in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/component",
    ] {
        let obj = cluster(json!([set(
            thin("vg1"),
            "storageClassOptions",
            json!({"additionalLabels": {key: "x"}})
        )]));
        refuse(
            obj,
            &format!("{DC0}.storageClassOptions.additionalLabels"),
            "cannot set app.kubernetes.io/name",
        );
    }
    let ok = cluster(json!([set(
        thin("vg1"),
        "storageClassOptions",
        json!({"additionalLabels": {"app.kubernetes.io/instance": "x"}})
    )]));
    assert_accepted(lvmcluster().create(&ok));
}

#[test]
fn node_selector_is_bounded_and_typed() {
    let terms: Vec<Value> = (0..17).map(|_| json!({"matchExpressions": []})).collect();
    let obj = cluster(json!([set(
        thin("vg1"),
        "nodeSelector",
        json!({"nodeSelectorTerms": terms})
    )]));
    refuse(
        obj,
        &format!("{DC0}.nodeSelector.nodeSelectorTerms"),
        "at most 16 items",
    );
    let obj = cluster(json!([set(thin("vg1"), "nodeSelector", json!({}))]));
    refuse(
        obj,
        &format!("{DC0}.nodeSelector.nodeSelectorTerms"),
        "Required value",
    );
}

#[test]
fn unknown_fields_are_refused() {
    let obj = cluster(json!([set(thin("vg1"), "thinpool", json!({"name": "x"}))]));
    refuse(
        obj,
        &format!("{DC0}.thinpool"),
        "field not declared in schema",
    );
}

mod logical_volume {
    use super::*;
    use crd_tools::validate::SchemaValidator;

    fn lv(size: Value) -> Value {
        json!({
            "apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": "pvc-1"},
            "spec": {"name": "pvc-1", "nodeName": "node-a", "deviceClass": "vg1", "size": size},
        })
    }

    #[test]
    fn size_is_a_quantity() {
        let v = SchemaValidator::new(&lvms_api::crd("logicalvolumes.topolvm.io"), "v1");
        assert_accepted(v.create(&lv(json!("1Gi"))));
        assert_accepted(v.create(&lv(json!(1073741824))));
        assert_refused(v.create(&lv(json!("1 GB"))), "spec.size", "should match");
        assert_refused(
            v.create(&unset(lv(json!("1Gi")), "spec.nodeName")),
            "spec.nodeName",
            "Required value",
        );
    }

    #[test]
    fn name_and_node_are_immutable() {
        let v = SchemaValidator::new(&lvms_api::crd("logicalvolumes.topolvm.io"), "v1");
        let old = lv(json!("1Gi"));
        assert_accepted(v.update(&set(old.clone(), "spec.size", json!("2Gi")), &old));
        assert_refused(
            v.update(&set(old.clone(), "spec.nodeName", json!("node-b")), &old),
            "spec.nodeName",
            "nodeName is immutable",
        );
        assert_refused(
            v.update(&set(old.clone(), "spec.name", json!("pvc-2")), &old),
            "spec.name",
            "name is immutable",
        );
    }
}

#[test]
fn encryption_is_luks2_or_none_and_needs_the_key_secret() {
    let with = |params: Value| {
        cluster(json!([set(
            thin("vg1"),
            "storageClassOptions.additionalParameters",
            params
        )]))
    };
    let path = format!("{DC0}.storageClassOptions.additionalParameters");
    refuse(
        with(json!({"lvms.topolvm.io/encryption": "luks2"})),
        &path,
        "luks2 needs csi.storage.k8s.io/node-publish-secret-name",
    );
    refuse(
        with(json!({
            "lvms.topolvm.io/encryption": "luks2",
            "csi.storage.k8s.io/node-publish-secret-name": "${pvc.name}-key",
        })),
        &path,
        "must be luks2 or none",
    );
    refuse(
        with(json!({
            "lvms.topolvm.io/encryption": "aes",
            "csi.storage.k8s.io/node-publish-secret-name": "k",
            "csi.storage.k8s.io/node-publish-secret-namespace": "ns",
        })),
        &path,
        "must be luks2 or none",
    );
    assert_accepted(lvmcluster().create(&with(json!({
        "lvms.topolvm.io/encryption": "luks2",
        "csi.storage.k8s.io/node-publish-secret-name": "${pvc.name}-key",
        "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
    }))));
    assert_accepted(lvmcluster().create(&with(json!({"lvms.topolvm.io/encryption": "none"}))));
}
