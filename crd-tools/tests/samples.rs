//! Every sample in config/samples parses into the Rust types and passes the CRD schema and rules.

mod common;
use common::*;

#[test]
fn every_sample_is_valid() {
    let dir = repo_root().join("config/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cluster: lvms_api::LVMCluster =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !cluster.spec.storage.device_classes.is_empty(),
            "{}",
            path.display()
        );
        let json: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let defaulted = lvmcluster()
            .create(&json)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        // What the API server stores (defaults applied) reads back into the same typed value:
        // the Rust defaults and the schema defaults agree.
        let stored: lvms_api::LVMCluster = serde_json::from_value(defaulted).unwrap();
        assert_eq!(
            stored.spec,
            cluster.spec,
            "{}: schema and Rust defaults differ",
            path.display()
        );
        seen += 1;
    }
    assert!(
        seen >= 7,
        "expected the seven documented samples, found {seen}"
    );
}

#[test]
fn samples_cover_the_documented_shapes() {
    let load = |f: &str| -> lvms_api::LVMCluster {
        serde_yaml::from_str(
            &std::fs::read_to_string(repo_root().join("config/samples").join(f)).unwrap(),
        )
        .unwrap()
    };
    let thin = load("lvm_v1alpha1_lvmcluster.yaml");
    assert!(
        thin.spec.storage.device_classes[0].is_thin()
            && thin.spec.storage.device_classes[0].default
    );
    let thick = load("lvm_v1alpha1_lvmcluster_thick.yaml");
    assert!(!thick.spec.storage.device_classes[0].is_thin());
    let two = load("lvm_v1alpha1_lvmcluster_two_classes.yaml");
    let sel = |i: usize| {
        two.spec.storage.device_classes[i]
            .device_selector
            .clone()
            .unwrap()
    };
    assert!(sel(0).paths.is_some() && sel(1).optional_paths.is_some());
    let wipe = load("lvm_v1alpha1_lvmcluster_force_wipe.yaml");
    assert!(wipe.spec.storage.device_classes[0].force_wipe());
    let sco = load("lvm_v1alpha1_lvmcluster_storageclass_options.yaml");
    let o = &sco.spec.storage.device_classes[0].storage_class_options;
    assert_eq!(o.reclaim_policy, lvms_api::ReclaimPolicy::Retain);
    assert!(!o.additional_labels.is_empty() && !o.additional_parameters.is_empty());
    let raid = load("lvm_v1alpha1_lvmcluster_raid.yaml");
    let levels: Vec<_> = raid
        .spec
        .storage
        .device_classes
        .iter()
        .map(|c| c.raid_config.as_ref().unwrap().raid_type)
        .collect();
    assert_eq!(
        levels,
        [lvms_api::RAIDType::Raid1, lvms_api::RAIDType::Raid5]
    );
    let dynamic = load("lvm_v1alpha1_lvmcluster_dynamic_discovery.yaml");
    assert_eq!(
        dynamic.spec.storage.device_classes[0].device_discovery_policy,
        Some(lvms_api::DeviceDiscoveryPolicy::Dynamic)
    );
}
