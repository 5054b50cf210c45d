//! Names shared with LVMS and TopoLVM. Changing any of them breaks existing clusters.

/// CSI driver name, LogicalVolume API group and StorageClass provisioner.
pub const CSI_DRIVER_NAME: &str = "topolvm.io";
/// Topology key of the per-node segment.
pub const TOPOLOGY_NODE_KEY: &str = "topology.topolvm.io/node";
/// StorageClass parameter that names the device class.
pub const DEVICE_CLASS_PARAMETER: &str = "topolvm.io/device-class";
/// StorageClass parameter that names the filesystem type.
pub const FSTYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";
/// Node annotation prefix of free capacity per device class, in bytes.
pub const CAPACITY_ANNOTATION_PREFIX: &str = "capacity.topolvm.io/";
/// StorageClass and VolumeSnapshotClass name prefix.
pub const STORAGE_CLASS_PREFIX: &str = "lvms-";
/// Finalizer on the LVMCluster.
pub const LVMCLUSTER_FINALIZER: &str = "lvmcluster.topolvm.io";
/// Per-node finalizer prefix on LVMVolumeGroups.
pub const NODE_CLEANUP_FINALIZER_PREFIX: &str = "cleanup.vgmanager.node.topolvm.io/";
/// Finalizer on LogicalVolumes.
pub const LOGICAL_VOLUME_FINALIZER: &str = "topolvm.io/logicalvolume";
/// Name of the vg-manager DaemonSet.
pub const VG_MANAGER_NAME: &str = "vg-manager";
/// The Service over the vg-manager pods' metrics port (also the name in their self-signed
/// certificate).
pub const VG_MANAGER_METRICS_SERVICE: &str = "vg-manager-metrics";
/// Default namespace of the operator and everything it manages.
pub const DEFAULT_NAMESPACE: &str = "openshift-storage";
/// Where the vg-manager DaemonSet mounts the host's mount table (the host's /proc/1/mountinfo,
/// read-only) and vg-manager reads it: its own /proc shows its container's mounts.
pub const HOST_MOUNTINFO: &str = "/host/proc/1/mountinfo";

/// The per-node cleanup finalizer vg-manager puts on an LVMVolumeGroup.
pub fn node_cleanup_finalizer(node: &str) -> String {
    format!("{NODE_CLEANUP_FINALIZER_PREFIX}{node}")
}

/// The Node annotation that carries a device class's free capacity.
pub fn capacity_annotation(device_class: &str) -> String {
    format!("{CAPACITY_ANNOTATION_PREFIX}{device_class}")
}
