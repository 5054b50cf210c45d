//! `LVMVolumeGroup` (one per device class, written by the operator) and
//! `LVMVolumeGroupNodeStatus` (one per node, written by that node's vg-manager).

use k8s_openapi::api::core::v1::NodeSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lvmcluster::{
    DeviceClass, DeviceFilesystemType, DeviceSelector, ThinPoolConfig, VolumeCleanup,
};
use crate::raid::{DeviceDiscoveryPolicy, RAIDConfig};
use crate::raw::RawDevicesConfig;
use crate::schema::node_selector_schema;
use crate::status::VGStatus;

/// What every selected node must build for one device class. The operator copies it from the
/// LVMCluster; vg-manager acts on it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lvm.topolvm.io",
    version = "v1alpha1",
    kind = "LVMVolumeGroup",
    doc = "LVMVolumeGroup is one device class as every selected node must build it (managed by the operator).",
    plural = "lvmvolumegroups",
    singular = "lvmvolumegroup",
    shortname = "lvmvg",
    namespaced,
    status = "LVMVolumeGroupStatus",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.raidConfig) && has(self.thinPoolConfig))",
    "message": "raidConfig and thinPoolConfig are mutually exclusive",
    "fieldPath": ".raidConfig",
}]))]
pub struct LVMVolumeGroupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<DeviceSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "node_selector_schema")]
    pub node_selector: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_pool_config: Option<ThinPoolConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_config: Option<RAIDConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_discovery_policy: Option<DeviceDiscoveryPolicy>,
    /// A raw-device class: the node offers each matching disk as a PersistentVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_devices: Option<RawDevicesConfig>,
    /// How a deleted thick volume's data is cleared (unset: zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_cleanup: Option<VolumeCleanup>,
    /// The class's filesystem; raw-device classes in Filesystem mode format their disks with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<DeviceFilesystemType>,
    #[serde(default)]
    pub default: bool,
}

/// LVMS keeps per-node state in LVMVolumeGroupNodeStatus; this status is kept for API parity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LVMVolumeGroupStatus {}

impl From<&DeviceClass> for LVMVolumeGroupSpec {
    fn from(class: &DeviceClass) -> Self {
        Self {
            device_selector: class.device_selector.clone(),
            node_selector: class.node_selector.clone(),
            thin_pool_config: class.thin_pool_config.clone(),
            raid_config: class.raid_config.clone(),
            device_discovery_policy: class.device_discovery_policy,
            raw_devices: class.raw_devices.clone(),
            volume_cleanup: class.volume_cleanup,
            fstype: class.raw_devices.as_ref().map(|_| class.fstype),
            default: class.default,
        }
    }
}

/// A node's report on all its volume groups. Named after the node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lvm.topolvm.io",
    version = "v1alpha1",
    kind = "LVMVolumeGroupNodeStatus",
    doc = "LVMVolumeGroupNodeStatus is one node's report on its volume groups (written by vg-manager).",
    plural = "lvmvolumegroupnodestatuses",
    singular = "lvmvolumegroupnodestatus",
    shortname = "lvmvgns",
    namespaced,
    status = "LVMVolumeGroupNodeStatusStatus",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct LVMVolumeGroupNodeStatusSpec {
    /// One entry per device class selected for the node.
    #[serde(default, rename = "nodeStatus", skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub lvm_vg_status: Vec<VGStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LVMVolumeGroupNodeStatusStatus {}
