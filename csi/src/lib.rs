//! The CSI driver `topolvm.io`: the generated CSI v1 types and services ([`pb`]), the identity
//! service both halves serve, the rules both halves share (access modes, sizes), and serving or
//! dialling a unix socket. The controller service lives here too; the node service needs LVM
//! and mounts, so it lives in the node agent (`vg-manager`).

pub mod controller;
pub mod identity;
pub mod socket;
pub mod volume;

/// The generated CSI v1 messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

pub use controller::{ControllerService, Error as ControllerError, serve as serve_controller};
pub use lvms_api::names::{CSI_DRIVER_NAME, DEVICE_CLASS_PARAMETER, TOPOLOGY_NODE_KEY};
