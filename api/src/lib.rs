//! The lvms-rs API: LVMS-compatible custom resources and the names shared with LVMS and TopoLVM.
//!
//! Every binary uses these types; `crdgen` turns them into `crds/`.

pub mod logical_volume;
pub mod lvmcluster;
pub mod names;
pub mod nodes;
pub mod raid;
pub mod schema;
pub mod status;
pub mod validate;
pub mod volume_group;

pub use logical_volume::{LogicalVolume, LogicalVolumeSpec, LogicalVolumeStatus};
pub use lvmcluster::{
    ChunkSizeCalculationPolicy, DeviceClass, DeviceFilesystemType, DeviceSelector, LVMCluster,
    LVMClusterSpec, LVMClusterStatus, MetadataSizeCalculationPolicy, ReclaimPolicy, Storage,
    StorageClassOptions, ThinPoolConfig, VolumeBindingMode, quantity_bytes,
};
pub use raid::{
    DeviceDiscoveryPolicy, DeviceDiscoveryPolicyStatus, RAIDConfig, RAIDType, RaidLayout,
};
pub use status::{
    DeviceClassStatus, ExcludedDevice, LVMStateType, NodeStatus, RAIDHealthStatus, RAIDLVHealth,
    RAIDStatus, VGStatus, VGStatusType,
};
pub use volume_group::{
    LVMVolumeGroup, LVMVolumeGroupNodeStatus, LVMVolumeGroupNodeStatusSpec, LVMVolumeGroupSpec,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of the API, in a stable order: the contents of `crds/`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        LVMCluster::crd(),
        LVMVolumeGroup::crd(),
        LVMVolumeGroupNodeStatus::crd(),
        LogicalVolume::crd(),
    ]
}
