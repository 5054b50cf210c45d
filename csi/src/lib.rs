//! The CSI driver `topolvm.io`: the generated CSI v1 types and services ([`pb`]), the identity
//! service both halves serve, the rules both halves share (access modes, sizes), and serving or
//! dialling a unix socket. The controller service lives here too; the node service needs LVM
//! and mounts, so it lives in the node agent (`vg-manager`).

pub mod controller;
pub mod encryption;
pub mod fs_options;
pub mod identity;
pub mod io_limits;
pub mod socket;
pub mod volume;

/// The generated CSI v1 messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

pub use controller::{ControllerService, Error as ControllerError, serve as serve_controller};
pub use lvms_api::names::{CSI_DRIVER_NAME, DEVICE_CLASS_PARAMETER, TOPOLOGY_NODE_KEY};

/// StorageClass parameter (and PVC annotation, which wins) choosing a thick volume's layout:
/// `linear`, `striped` or `mirror`.
pub const LAYOUT_KEY: &str = "lvms.topolvm.io/layout";
/// PVC annotation (or StorageClass parameter) with the stripe count of a striped volume.
pub const STRIPES_KEY: &str = "lvms.topolvm.io/stripes";
/// metal-stack csi-lvm's PVC annotation for the same choice, honoured for claims moved from it.
pub const CSI_LVM_TYPE_ANNOTATION: &str = "csi-lvm.metal-stack.io/type";
/// StorageClass parameter with extra mkfs options; the same key carries them to the node in
/// the volume context.
pub const MKFS_OPTIONS_KEY: &str = "lvms.topolvm.io/mkfs-options";
/// What csi-provisioner's `--extra-create-metadata` adds to CreateVolume's parameters.
pub const PVC_NAME_PARAMETER: &str = "csi.storage.k8s.io/pvc/name";
pub const PVC_NAMESPACE_PARAMETER: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PV_NAME_PARAMETER: &str = "csi.storage.k8s.io/pv/name";
/// Volume context keys naming the volume's PVC and PV (from the extra metadata above), so the
/// node can tell the claim (an Event) why mkfs or mount failed. Volumes created before them
/// carry none.
pub const PVC_NAME_CONTEXT_KEY: &str = "lvms.topolvm.io/pvc-name";
pub const PVC_NAMESPACE_CONTEXT_KEY: &str = "lvms.topolvm.io/pvc-namespace";
/// The PV's claimRef holds the claim's UID, which `kubectl describe pvc` finds Events by.
pub const PV_NAME_CONTEXT_KEY: &str = "lvms.topolvm.io/pv-name";
