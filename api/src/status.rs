//! Status types shared by `LVMCluster.status` and `LVMVolumeGroupNodeStatus.spec`: what a node
//! reports about one volume group, and how the operator aggregates it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
