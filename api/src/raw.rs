//! Raw-device classes: every matching disk of a node becomes one static local PersistentVolume
//! (as cybozu's local-pv-provisioner does) instead of joining a volume group. A workload that
//! wants a whole disk (a database, Ceph-style software, a benchmark) claims one through the
//! class's StorageClass `lvms-<class>`, whose provisioner is `kubernetes.io/no-provisioner`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// StorageClass provisioner of a raw-device class: the PVs exist before the claims.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Bytes zeroed at the start of a released disk (`cleanup: zero`).
pub const ZERO_BYTES: u64 = 100 << 20;
/// Labels on every PV of a raw class: the node and class it belongs to, so each node lists its
/// own PVs with one selector.
pub const NODE_LABEL: &str = "lvms.topolvm.io/node";
pub const CLASS_LABEL: &str = "lvms.topolvm.io/raw-device-class";
/// Finalizer the node puts on each PV it creates: a PV deleted before its disk was cleaned
/// (`kubectl delete pv`, the garbage collector after a Node re-registered with a new UID) stays
/// until the node has cleaned the disk, so no tenant's data reaches the next PV of that disk.
/// The operator releases it for a Node that is gone for good (node loss).
pub const CLEANUP_FINALIZER: &str = "lvms.topolvm.io/raw-cleanup";
/// Annotation on such a PV: the kernel device it was made from when created (diagnostics; the
/// PV's `local.path` is the stable path).
pub const DEVICE_ANNOTATION: &str = "lvms.topolvm.io/device";

/// `rawDevices` of a device class, in place of `thinPoolConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RawDevicesConfig {
    /// `Block`: the PV is the raw disk. `Filesystem`: the node formats a blank disk with the
    /// class's `fstype` before it offers it, and kubelet mounts it.
    #[serde(default)]
    pub volume_mode: RawVolumeMode,
    /// How a released disk is cleaned before it is offered again: `zero` writes zeros over its
    /// first 100 MiB (and erases every signature), `discard` discards it whole (where the device
    /// cannot discard, it is zeroed instead).
    #[serde(default)]
    pub cleanup: RawCleanup,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RawVolumeMode {
    #[default]
    Block,
    Filesystem,
}

impl RawVolumeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "Block",
            Self::Filesystem => "Filesystem",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawCleanup {
    #[default]
    Zero,
    Discard,
}

impl RawCleanup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Discard => "discard",
        }
    }
}

/// FNV-1a of `s`: stable across releases and platforms (std's hasher is neither), so a name
/// shortened with it is the same at every pass.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The PV name of a disk: `local-<node>-<device>`, every character outside `[a-z0-9.-]` turned
/// into `-` (the naming of local-pv-provisioner, so its users' dashboards and scripts still
/// match). `device` is the last component of the disk's stable path. A name longer than a DNS
/// subdomain allows is cut and given a hash of the whole, so two long names never collide.
pub fn pv_name(node: &str, device: &str) -> String {
    let raw = format!("local-{node}-{device}");
    let name: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() <= 253 {
        return name;
    }
    format!("{}-{:016x}", &name[..236], fnv1a(&raw))
}

/// The [`NODE_LABEL`] value of a node: its name, or for a name longer than a label value may be
/// (63), its first 46 characters and a hash of the whole.
pub fn node_label_value(node: &str) -> String {
    if node.len() <= 63 {
        return node.to_string();
    }
    let head = node[..46].trim_end_matches(['-', '.']);
    format!("{head}-{:016x}", fnv1a(node))
}

/// The rules of a device class with `rawDevices`.
pub fn device_class_rules() -> Vec<Value> {
    vec![
        json!({
            "rule": "!has(self.rawDevices) || (!has(self.thinPoolConfig) && !has(self.raidConfig))",
            "message": "rawDevices cannot be combined with thinPoolConfig or raidConfig: its disks are whole volumes",
            "fieldPath": ".rawDevices",
        }),
        json!({
            "rule": "!has(self.rawDevices) || !has(self.volumeCleanup)",
            "message": "volumeCleanup is for volume groups: a rawDevices class sets rawDevices.cleanup",
            "fieldPath": ".volumeCleanup",
        }),
        // A static PV is mounted with its own mountOptions, never its StorageClass's: options
        // there would be silently ignored.
        json!({
            "rule": "!has(self.rawDevices) || !has(self.storageClassOptions) || !has(self.storageClassOptions.mountOptions)",
            "message": "storageClassOptions.mountOptions cannot be set on a rawDevices class: its PersistentVolumes are static",
            "fieldPath": ".storageClassOptions.mountOptions",
        }),
        json!({
            "rule": "has(self.rawDevices) == has(oldSelf.rawDevices) && (!has(self.rawDevices) || self.rawDevices == oldSelf.rawDevices)",
            "message": "rawDevices is immutable and cannot be added or removed",
            "fieldPath": ".rawDevices",
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_names_follow_local_pv_provisioner() {
        assert_eq!(
            pv_name("worker-1", "pci-0000:00:04.0"),
            "local-worker-1-pci-0000-00-04.0"
        );
        assert_eq!(
            pv_name("Node_A", "virtio-Disk#1"),
            "local-node-a-virtio-disk-1"
        );
        let long = pv_name(&"n".repeat(200), &"d".repeat(100));
        assert_eq!(long.len(), 253);
        assert_ne!(long, pv_name(&"n".repeat(200), &"d".repeat(101)));
    }

    #[test]
    fn node_label_values_fit_a_label() {
        assert_eq!(node_label_value("worker-1"), "worker-1");
        let long = format!("{}.example.com", "a".repeat(70));
        let v = node_label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(
            v,
            node_label_value(&format!("{}.example.org", "a".repeat(70)))
        );
    }
}
