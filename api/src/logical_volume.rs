//! `LogicalVolume` (topolvm.io/v1, cluster-scoped): the CSI controller's request for one LV on one
//! node, fulfilled by that node's agent. Kept identical to TopoLVM so existing PVs keep working.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::quantity_schema;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "topolvm.io",
    version = "v1",
    kind = "LogicalVolume",
    doc = "LogicalVolume is one logical volume on one node, requested by the CSI controller.",
    plural = "logicalvolumes",
    singular = "logicalvolume",
    shortname = "lv",
    status = "LogicalVolumeStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"DeviceClass","type":"string","jsonPath":".spec.deviceClass"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".spec.size"}"#,
    printcolumn = r#"{"name":"VolumeID","type":"string","jsonPath":".status.volumeID"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct LogicalVolumeSpec {
    /// Name of the volume (the CSI request name, which CSI keeps to 128 bytes); immutable. The
    /// bound keeps the immutability rule cheap for the API server's CEL budget.
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "name is immutable"}]))]
    pub name: String,
    /// Node that holds the LV (a node name: a DNS subdomain); immutable.
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "nodeName is immutable"}]))]
    pub node_name: String,
    /// Requested size; may only grow.
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// Device class (volume group) of the LV; immutable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_class: String,
    /// TopoLVM's lvcreate option class (kept for compatibility; unused by lvms-rs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lvcreate_option_class: String,
    /// Volume ID of the source LV for a snapshot or clone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `ro` for a snapshot, `rw` for a clone (only with `source`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_type: String,
    /// lvms-rs: how a thick volume is laid out over the volume group's physical volumes (from
    /// the PVC's `lvms.topolvm.io/layout` annotation or the StorageClass); absent = linear.
    /// Unknown to TopoLVM, which ignores it; immutable, as an LV keeps the layout it was made
    /// with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "layout is immutable"}]))]
    pub layout: Option<VolumeLayout>,
}

/// The layout of a thick logical volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeLayout {
    #[serde(rename = "type")]
    pub layout_type: LayoutType,
    /// Striped only: over how many physical volumes; absent = every PV of the volume group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 128))]
    pub stripes: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LayoutType {
    /// One PV after another (lvm2's default).
    Linear,
    /// Data striped over several PVs (`lvcreate --stripes`): throughput, no redundancy.
    Striped,
    /// raid1 with one extra copy on another PV (`lvcreate --type raid1 --mirrors 1`).
    Mirror,
}

impl LayoutType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Striped => "striped",
            Self::Mirror => "mirror",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "linear" => Some(Self::Linear),
            "striped" => Some(Self::Striped),
            "mirror" => Some(Self::Mirror),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogicalVolumeStatus {
    /// The LV's name in the volume group, which is the CSI volume ID.
    #[serde(default, rename = "volumeID", skip_serializing_if = "String::is_empty")]
    pub volume_id: String,
    /// gRPC status code of the last failure (0 = OK).
    #[serde(default)]
    pub code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub current_size: Option<Quantity>,
    /// lvms-rs: the last mkfs or mount failure of NodePublishVolume on the node, in the words of
    /// the command that failed; cleared by the next successful publish. Written by the node
    /// service only: `code` and `message` stay the agent's (a non-zero code fails the create).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub publish_error: String,
    /// lvms-rs: the volume's health as its node last saw it (the LV is there, its thin pool has
    /// room, no filesystem of it went read-only), checked on every pass of the node's agent. The
    /// CSI controller answers ListVolumes and ControllerGetVolume from it, so the
    /// external-health-monitor controller can put an Event on the claim. Absent until the node
    /// has checked (and on TopoLVM's nodes, which never do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<VolumeHealth>,
}

/// A volume's condition as its node sees it (CSI's `VolumeCondition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeHealth {
    /// True when something stops or threatens the volume's I/O.
    #[serde(default)]
    pub abnormal: bool,
    /// What is wrong, in words naming the LV, pool or mount; empty when healthy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
