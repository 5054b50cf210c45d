//! StorageClass `lvms-<class>` per device class, as LVMS creates it.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use lvms_api::names::{CSI_DRIVER_NAME, DEVICE_CLASS_PARAMETER, FSTYPE_PARAMETER};
use lvms_api::raw::NO_PROVISIONER;
use lvms_api::{DeviceClass, LVMCluster, ReclaimPolicy, VolumeBindingMode};

use super::{DEVICE_CLASS_LABEL, Discovery, cluster_meta};

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

pub fn storage_classes(cluster: &LVMCluster, discovery: &Discovery) -> Vec<StorageClass> {
    cluster
        .spec
        .storage
        .device_classes
        .iter()
        .map(|c| storage_class(cluster, c, discovery))
        .collect()
}

fn storage_class(cluster: &LVMCluster, class: &DeviceClass, discovery: &Discovery) -> StorageClass {
    let opts = &class.storage_class_options;
    let mut meta = cluster_meta(cluster, &class.storage_class_name(), "topolvm-storageclass");
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(DEVICE_CLASS_LABEL.into(), class.name.clone());
    // User labels never override ours: the schema refuses the app.kubernetes.io keys, and the
    // owner labels are written last.
    for (k, v) in &opts.additional_labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // Only claim the cluster default when nobody else holds it: two defaults make the API server
    // pick one arbitrarily for every PVC without a class.
    if class.default && !discovery.foreign_default_storage_class {
        meta.annotations =
            Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into());
    }
    let mount_options = (!opts.mount_options.is_empty()).then(|| opts.mount_options.clone());
    if class.is_raw() {
        // The node creates the PVs itself: nothing provisions, a claim waits for its pod's node
        // (a PV is bound to one node), nothing expands, and a released disk is cleaned by the
        // node, not deleted, whatever reclaimPolicy the class asks for.
        return StorageClass {
            metadata: meta,
            provisioner: NO_PROVISIONER.into(),
            reclaim_policy: Some(ReclaimPolicy::Retain.as_str().into()),
            volume_binding_mode: Some(VolumeBindingMode::WaitForFirstConsumer.as_str().into()),
            allow_volume_expansion: Some(false),
            ..Default::default()
        };
    }
    let mut parameters = opts.additional_parameters.clone();
    parameters.insert(DEVICE_CLASS_PARAMETER.into(), class.name.clone());
    parameters.insert(FSTYPE_PARAMETER.into(), class.fstype.as_str().into());
    StorageClass {
        metadata: meta,
        provisioner: CSI_DRIVER_NAME.into(),
        parameters: Some(parameters),
        reclaim_policy: Some(opts.reclaim_policy.as_str().into()),
        volume_binding_mode: Some(opts.volume_binding_mode.as_str().into()),
        allow_volume_expansion: Some(true),
        mount_options,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    #[test]
    fn one_per_class_with_lvms_names_and_parameters() {
        let scs = storage_classes(&cluster(), &Discovery::default());
        let names: Vec<_> = scs
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["lvms-fast", "lvms-bulk"]);
        let fast = &scs[0];
        assert_eq!(fast.provisioner, "topolvm.io");
        assert_eq!(fast.allow_volume_expansion, Some(true));
        let p = fast.parameters.as_ref().unwrap();
        assert_eq!(p["topolvm.io/device-class"], "fast");
        assert_eq!(p["csi.storage.k8s.io/fstype"], "xfs");
        assert_eq!(fast.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            fast.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
    }

    #[test]
    fn storage_class_options_are_honoured() {
        let bulk = &storage_classes(&cluster(), &Discovery::default())[1];
        assert_eq!(bulk.reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(bulk.volume_binding_mode.as_deref(), Some("Immediate"));
        let p = bulk.parameters.as_ref().unwrap();
        assert_eq!(p["csi.storage.k8s.io/fstype"], "ext4");
        assert_eq!(p["backup.example.com/policy"], "daily");
        let l = bulk.metadata.labels.as_ref().unwrap();
        assert_eq!(l["tier"], "gold");
        assert_eq!(l["app.kubernetes.io/managed-by"], "lvms-operator");
        assert_eq!(l[DEVICE_CLASS_LABEL], "bulk");
    }

    #[test]
    fn mount_options_are_copied() {
        let mut c = cluster();
        c.spec.storage.device_classes[0]
            .storage_class_options
            .mount_options = vec!["noatime".into(), "nodiratime".into()];
        let scs = storage_classes(&c, &Discovery::default());
        assert_eq!(
            scs[0].mount_options.as_deref(),
            Some(&["noatime".to_string(), "nodiratime".to_string()][..])
        );
        assert_eq!(
            scs[1].mount_options, None,
            "none asked: the field stays unset"
        );
    }

    #[test]
    fn raw_device_classes_get_a_static_storage_class() {
        let mut c = cluster();
        let bulk = &mut c.spec.storage.device_classes[1];
        bulk.thin_pool_config = None;
        bulk.raw_devices = Some(Default::default());
        let raw = &storage_classes(&c, &Discovery::default())[1];
        assert_eq!(raw.metadata.name.as_deref(), Some("lvms-bulk"));
        assert_eq!(raw.provisioner, "kubernetes.io/no-provisioner");
        assert_eq!(
            raw.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(raw.reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(raw.allow_volume_expansion, Some(false));
        assert_eq!(
            raw.parameters, None,
            "no CSI parameters for a class nothing provisions"
        );
    }

    #[test]
    fn default_only_when_no_other_default_exists() {
        let scs = storage_classes(&cluster(), &Discovery::default());
        let is_default = |s: &StorageClass| {
            s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get(DEFAULT_CLASS_ANNOTATION).is_some_and(|v| v == "true"))
        };
        assert!(is_default(&scs[0]) && !is_default(&scs[1]));
        let taken = Discovery {
            foreign_default_storage_class: true,
            ..Default::default()
        };
        assert!(
            storage_classes(&cluster(), &taken)
                .iter()
                .all(|s| !is_default(s))
        );
    }
}
