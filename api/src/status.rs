//! Status types shared by `LVMCluster.status` and `LVMVolumeGroupNodeStatus.spec`: what a node
//! reports about one volume group, and how the operator aggregates it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::raid::DeviceDiscoveryPolicyStatus;

/// Overall state of an LVMCluster (printer column STATUS).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LVMStateType {
    Progressing,
    Ready,
    Failed,
    Degraded,
    Unknown,
}

/// State of one volume group on one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VGStatusType {
    #[default]
    Progressing,
    Ready,
    Failed,
    Degraded,
}

/// A node's report about one device class's volume group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VGStatus {
    /// The device class (and volume group) name.
    pub name: String,
    #[serde(default)]
    pub status: VGStatusType,
    /// Why the volume group is not Ready, in words a user can act on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Devices that are physical volumes of the volume group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Devices seen and not used, each with every reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ExcludedDevice>,
    /// The device discovery policy in effect on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_discovery_policy: Option<DeviceDiscoveryPolicyStatus>,
    /// RAID classes only: the health of the volume group's RAID volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_status: Option<RAIDStatus>,
}

/// Health of a RAID class on one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RAIDHealthStatus {
    /// Every member present, every volume with full redundancy.
    #[default]
    Healthy,
    /// A member is missing or a volume runs without full redundancy: data is still there.
    Degraded,
    /// A volume lost more members than its level tolerates: its data is unavailable.
    Failed,
}

/// `VGStatus.raidStatus`: from lvm2's `lv_health_status`, `sync_percent` and `raid_sync_action`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RAIDStatus {
    pub status: RAIDHealthStatus,
    /// Physical volumes of the volume group.
    pub member_count: i32,
    /// Physical volumes of the volume group that are missing.
    pub degraded_member_count: i32,
    /// The least synchronised RAID volume, in percent (unset without RAID volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sync_percent: Option<i32>,
    /// One entry per RAID volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lv_health: Vec<RAIDLVHealth>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RAIDLVHealth {
    /// The logical volume (named after its LogicalVolume's UID).
    pub name: String,
    /// lvm2's segment type: raid1, raid4, raid5_ls, raid6_zr, raid10...
    pub raid_type: String,
    /// Percent of the volume in sync (100 when not resynchronising).
    pub sync_percent: i32,
    /// lvm2's lv_health_status: empty when healthy, else `partial`, `refresh needed`,
    /// `mismatches exist`...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_status: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ExcludedDevice {
    /// Device path, e.g. /dev/sdb.
    pub name: String,
    pub reasons: Vec<String>,
}

/// `LVMCluster.status.deviceClassStatuses[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceClassStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<NodeStatus>,
}

/// One node's VGStatus, flattened beside the node name as LVMS does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NodeStatus {
    pub node: String,
    #[serde(flatten)]
    pub status: VGStatus,
}
