//! The lvms-rs API: LVMS-compatible custom resources and the names shared with LVMS and TopoLVM.
//!
//! Every binary uses these types; `crdgen` turns them into `crds/`.

pub mod logical_volume;
pub mod lvmcluster;
pub mod names;
pub mod nodes;
pub mod raid;
pub mod raw;
pub mod schema;
pub mod status;
pub mod validate;
pub mod volume_group;

pub use logical_volume::{LogicalVolume, LogicalVolumeSpec, LogicalVolumeStatus, VolumeHealth};
pub use lvmcluster::{
    ChunkSizeCalculationPolicy, DeviceClass, DeviceFilesystemType, DeviceSelector, LVMCluster,
    LVMClusterSpec, LVMClusterStatus, MetadataSizeCalculationPolicy, ReclaimPolicy, Storage,
    StorageClassOptions, ThinPoolAutoExtend, ThinPoolConfig, VolumeBindingMode, VolumeCleanup,
    quantity_bytes,
};
pub use raid::{
    DeviceDiscoveryPolicy, DeviceDiscoveryPolicyStatus, RAIDConfig, RAIDType, RaidLayout,
};
pub use raw::{RawCleanup, RawDevicesConfig, RawVolumeMode};
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
    let mut crds = vec![
        LVMCluster::crd(),
        LVMVolumeGroup::crd(),
        LVMVolumeGroupNodeStatus::crd(),
        LogicalVolume::crd(),
    ];
    crds.iter_mut().for_each(spec_not_nullable);
    crds
}

/// The CRD named `name` (`lvmclusters.lvm.topolvm.io`), as in `crds/`.
pub fn crd(name: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

/// The generator marks every optional field `nullable`. The API server keeps a null there and
/// skips the field's rules, so `raidConfig: null` would remove an immutable config past its
/// rules (and read back as unset). Without `nullable` it drops the null before validation: the
/// field is unset, and the rules on its parent (cannot be removed) see that.
fn spec_not_nullable(crd: &mut CustomResourceDefinition) {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("nullable");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            let mut v = serde_json::to_value(&*spec).expect("schema serializes");
            strip(&mut v);
            *spec = serde_json::from_value(v).expect("schema deserializes");
        }
    }
}
