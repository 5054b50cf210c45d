//! LVM settings for running the image's lvm2 inside a pod against the host's devices.
//!
//! The vg-manager DaemonSet shares the host's /dev, /run/udev, /run/lvm, /run/lock/lvm (VG locks,
//! so host and pod commands exclude each other), /etc/lvm (the host's lvm.conf and devices file
//! are honoured) and IPC namespace (the SysV semaphores with which libdevmapper waits for udev).
//! What cannot be shared is overridden on every `lvm` command with `--config`, which wins over
//! whatever lvm.conf the host has:
//!   - dmeventd: the host's is unreachable (its fifos are in /run, not /run/lvm), and with
//!     monitoring on, lvm would start a dmeventd of its own inside the pod. vg-manager reports
//!     thin pool usage itself (the topolvm_thinpool_* metrics and alerts);
//!   - udev, when the host has no lvm.conf: then lvm2 is not installed on the host, so neither
//!     are the device-mapper udev rules that complete libdevmapper's udev cookie. A udevd without
//!     them never completes it and every activating command would hang; libdevmapper creates the
//!     /dev nodes itself instead, and lvm scans /dev rather than asking udev for the device list.
//!     With the host's lvm2 present, its udevd creates the nodes and symlinks and lvm waits for
//!     it (a pod creating them too would race the host's udevd, which can drop the symlinks).

use std::path::Path;

/// What the decision depends on, read off the node (see [`HostFacts::read`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `/etc/lvm/lvm.conf` exists (the host's /etc/lvm is mounted over the image's).
    pub host_lvm_conf: bool,
}

impl HostFacts {
    /// Reads the facts under `root` (`/` in the pod).
    pub fn read(root: &Path) -> Self {
        Self {
            host_lvm_conf: root.join("etc/lvm/lvm.conf").is_file(),
        }
    }
}

/// The `--config` string for every `lvm` command the agent runs in its own namespaces.
pub fn overrides(facts: HostFacts) -> String {
    let mut activation = vec!["monitoring=0"];
    let mut devices = vec![];
    if !facts.host_lvm_conf {
        activation.extend(["udev_sync=0", "udev_rules=0"]);
        devices.push("obtain_device_list_from_udev=0");
    }
    let mut out = format!("activation{{{}}}", activation.join(" "));
    if !devices.is_empty() {
        out.push_str(&format!(" devices{{{}}}", devices.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_hosts_lvm2_only_monitoring_is_turned_off() {
        let s = overrides(HostFacts {
            host_lvm_conf: true,
        });
        assert_eq!(s, "activation{monitoring=0}");
    }

    #[test]
    fn without_the_hosts_lvm2_udev_is_left_out_entirely() {
        let s = overrides(HostFacts {
            host_lvm_conf: false,
        });
        assert_eq!(
            s,
            "activation{monitoring=0 udev_sync=0 udev_rules=0} devices{obtain_device_list_from_udev=0}"
        );
    }

    #[test]
    fn facts_come_from_the_mounted_etc_lvm() {
        let dir = std::env::temp_dir().join(format!("lvm-facts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc/lvm")).unwrap();
        assert!(!HostFacts::read(&dir).host_lvm_conf, "an empty /etc/lvm");
        std::fs::write(dir.join("etc/lvm/lvm.conf"), "").unwrap();
        assert!(HostFacts::read(&dir).host_lvm_conf);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
