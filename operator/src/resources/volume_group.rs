//! One LVMVolumeGroup per device class, named after it, with the class's spec copied.

use lvms_api::{LVMCluster, LVMVolumeGroup, LVMVolumeGroupSpec};

use super::owned_meta;
use crate::config::Config;

pub fn volume_groups(cluster: &LVMCluster, config: &Config) -> Vec<LVMVolumeGroup> {
    cluster
        .spec
        .storage
        .device_classes
        .iter()
        .map(|class| LVMVolumeGroup {
            metadata: owned_meta(cluster, config, &class.name, "vg-manager"),
            spec: LVMVolumeGroupSpec::from(class),
            status: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    #[test]
    fn one_per_class_with_the_class_spec_and_an_owner() {
        let c = cluster();
        let vgs = volume_groups(&c, &Config::default());
        assert_eq!(vgs.len(), 2);
        assert_eq!(vgs[0].metadata.name.as_deref(), Some("fast"));
        assert_eq!(
            vgs[0].metadata.namespace.as_deref(),
            Some("openshift-storage")
        );
        assert!(vgs[0].spec.default && vgs[0].spec.thin_pool_config.is_some());
        assert_eq!(
            vgs[1].spec.device_selector,
            c.spec.storage.device_classes[1].device_selector
        );
        assert_eq!(
            vgs[0].spec.thin_pool_config.as_ref().unwrap().auto_extend,
            None,
            "no autoExtend in the class, none on the node (LVMS's fixed pool)"
        );
        let owner = &vgs[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("LVMCluster", "lvmcluster", Some(true))
        );
    }

    #[test]
    fn the_thin_pools_auto_extend_policy_reaches_the_nodes() {
        let mut c = cluster();
        let policy = lvms_api::ThinPoolAutoExtend {
            threshold_percent: 80,
            step_percent: 5,
            max_size_percent: 95,
        };
        c.spec.storage.device_classes[0]
            .thin_pool_config
            .as_mut()
            .unwrap()
            .auto_extend = Some(policy);
        let vgs = volume_groups(&c, &Config::default());
        let tp = vgs[0].spec.thin_pool_config.as_ref().unwrap();
        assert_eq!(tp.auto_extend, Some(policy));
        let json = serde_json::to_value(&vgs[0].spec).unwrap();
        assert_eq!(
            json["thinPoolConfig"]["autoExtend"],
            serde_json::json!({"thresholdPercent": 80, "stepPercent": 5, "maxSizePercent": 95})
        );
    }
}
