//! CSIDriver `topolvm.io`: no attach step, pod info on mount (for ephemeral-aware node code and
//! logs), storage capacity tracking (the scheduler places pods by free space), persistent only.

use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use lvms_api::LVMCluster;
use lvms_api::names::CSI_DRIVER_NAME;

use super::cluster_meta;

pub fn csi_driver(cluster: &LVMCluster) -> CSIDriver {
    CSIDriver {
        metadata: cluster_meta(cluster, CSI_DRIVER_NAME, "topolvm-csi-driver"),
        spec: CSIDriverSpec {
            attach_required: Some(false),
            pod_info_on_mount: Some(true),
            storage_capacity: Some(true),
            volume_lifecycle_modes: Some(vec!["Persistent".into()]),
            fs_group_policy: Some("File".into()),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    #[test]
    fn topolvm_driver_without_attach_with_capacity() {
        let d = csi_driver(&cluster());
        assert_eq!(d.metadata.name.as_deref(), Some("topolvm.io"));
        assert!(
            d.metadata.owner_references.is_none(),
            "cluster-scoped objects cannot have a namespaced owner"
        );
        assert_eq!(d.spec.attach_required, Some(false));
        assert_eq!(d.spec.pod_info_on_mount, Some(true));
        assert_eq!(d.spec.storage_capacity, Some(true));
        assert_eq!(
            d.spec.volume_lifecycle_modes.as_deref(),
            Some(&["Persistent".to_string()][..])
        );
    }
}
