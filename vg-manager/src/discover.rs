//! `vg-manager discover`: every block device of this machine with "eligible" or the reasons it
//! is not, offline, no cluster needed. The same rules the agent applies before touching a disk.

use std::collections::{BTreeMap, BTreeSet};

use lvm::eligibility::{Context, Verdict, judge};
use lvm::lsblk::BlockDevice;
use lvm::mount::MountInfo;
use lvm::{Report, Runner};
use lvms_api::names::HOST_MOUNTINFO;
use serde::Serialize;

/// The kernel's initial PID namespace (PROC_PID_INIT_INO in include/linux/proc_ns.h): a process
/// in any other one runs in a container.
const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    pub device: String,
    pub size_bytes: u64,
    /// "eligible", "in volume group", or "excluded".
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The block devices (lsblk) with their mount points as the host has them, and whether those
/// are only this container's. lsblk reads its own namespace's mount table: in the vg-manager
/// pod, a disk holding /var/lib/kubelet shows as mounted at /etc/hosts, /run/topolvm, ..., and
/// the user who reads the reason looks for that disk's owner on the host.
pub fn block_devices(runner: &dyn Runner) -> Result<(Vec<BlockDevice>, bool), lvm::Error> {
    let mut devices = lvm::lsblk::list(runner)?;
    match host_mounts() {
        Some(mounts) => {
            set_mount_points(&mut devices, &mounts);
            Ok((devices, false))
        }
        None => Ok((devices, in_container())),
    }
}

/// The host's mount table when this process can read it besides its own: the file the
/// DaemonSet mounts from the host's /proc/1/mountinfo, else PID 1's table when PID 1 is in
/// another mount namespace (a pod sharing the host's PID namespace, as `--host-namespace`
/// needs). `None` when only our own table is readable.
fn host_mounts() -> Option<Vec<MountInfo>> {
    let read = |path: &str| lvm::mount::parse(&std::fs::read_to_string(path).ok()?).ok();
    let namespace = |path: &str| std::fs::read_link(path).ok();
    read(HOST_MOUNTINFO).or_else(|| {
        let pid1 = namespace("/proc/1/ns/mnt")?;
        if Some(pid1) == namespace("/proc/self/ns/mnt") {
            return None;
        }
        read("/proc/1/mountinfo")
    })
}

/// Whether this process has a PID namespace of its own, i.e. runs in a container, where its
/// mount table (and lsblk's) is not the host's.
fn in_container() -> bool {
    std::fs::read_link("/proc/self/ns/pid").is_ok_and(|ns| ns.as_os_str() != INITIAL_PID_NAMESPACE)
}

/// Sets the mount points of every device, partitions and holders included, from `mounts`.
pub fn set_mount_points(devices: &mut [BlockDevice], mounts: &[MountInfo]) {
    for d in devices {
        d.mountpoints = lvm::mount::mount_points(mounts, d.devno(), &d.name);
        set_mount_points(&mut d.children, mounts);
    }
}

/// Loop devices and their backing files, from `losetup --json` (none when it is unavailable).
pub fn loop_backing(runner: &dyn Runner) -> BTreeMap<String, String> {
    let Ok(out) = runner.run(
        "losetup",
        &[
            "--json".into(),
            "--list".into(),
            "--output".into(),
            "NAME,BACK-FILE".into(),
        ],
    ) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["loopdevices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_string(),
                d["back-file"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Judges `devices` for volume group `vg` (empty: none yet), restricted to `selected` if given;
/// `container_mounts` as [`block_devices`] says.
pub fn entries(
    devices: &[BlockDevice],
    report: &Report,
    vg: &str,
    selected: Option<&BTreeSet<String>>,
    loops: &BTreeMap<String, String>,
    container_mounts: bool,
) -> Vec<Entry> {
    let ctx = Context {
        vg,
        selected,
        report: Some(report),
        loop_backing: Some(loops),
        container_mounts,
    };
    let sizes: BTreeMap<&str, u64> = devices
        .iter()
        .flat_map(|d| d.walk())
        .map(|d| (d.name.as_str(), d.size))
        .collect();
    judge(devices, &ctx)
        .into_iter()
        .map(|(device, v)| {
            let size_bytes = sizes.get(device.as_str()).copied().unwrap_or(0);
            let (verdict, reasons) = match v {
                Verdict::Eligible => ("eligible", vec![]),
                Verdict::InVolumeGroup => ("in volume group", vec![]),
                Verdict::Excluded(r) => ("excluded", r),
            };
            Entry {
                device,
                size_bytes,
                verdict,
                reasons,
            }
        })
        .collect()
}

/// The human form: one line per device.
pub fn render(entries: &[Entry]) -> String {
    let width = entries
        .iter()
        .map(|e| e.device.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("{:width$}  {:>10}  VERDICT\n", "DEVICE", "SIZE");
    for e in entries {
        let size = format!("{:.1}GiB", e.size_bytes as f64 / (1u64 << 30) as f64);
        let verdict = if e.reasons.is_empty() {
            e.verdict.to_string()
        } else {
            format!("{}: {}", e.verdict, e.reasons.join("; "))
        };
        out.push_str(&format!("{:width$}  {:>10}  {verdict}\n", e.device, size));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, fstype: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            kname: name.into(),
            kind: "disk".into(),
            size: 2 << 30,
            fstype: fstype.into(),
            ..Default::default()
        }
    }

    /// The verdicts on `devices` with no VG, selector or loop devices around them.
    fn verdicts(devices: &[BlockDevice]) -> Vec<Entry> {
        entries(
            devices,
            &Report::default(),
            "",
            None,
            &BTreeMap::new(),
            false,
        )
    }

    #[test]
    fn renders_verdicts_with_reasons() {
        let devices = [dev("/dev/sdb", ""), dev("/dev/sdc", "xfs")];
        let e = verdicts(&devices);
        assert_eq!(e[0].verdict, "eligible");
        assert_eq!(e[1].reasons, ["has a filesystem signature (xfs)"]);
        let text = render(&e);
        assert!(text.contains("/dev/sdb      2.0GiB  eligible"), "{text}");
        assert!(
            text.contains("excluded: has a filesystem signature (xfs)"),
            "{text}"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json[1]["reasons"][0], "has a filesystem signature (xfs)");
        assert!(json[0].get("reasons").is_none());
    }

    #[test]
    fn a_disk_in_use_is_reported_where_the_host_mounts_it() {
        // lsblk in the vg-manager pod: the data disk holding /var/lib/kubelet, as the pod sees
        // it (its /etc/hosts, termination log and hostPath volumes come from that disk).
        let mut data = dev("/dev/sdb", "ext4");
        data.maj_min = "8:16".into();
        data.mountpoints = ["/etc/hosts", "/dev/termination-log", "/run/topolvm"]
            .map(String::from)
            .to_vec();
        let mut blank = dev("/dev/sdc", "");
        blank.maj_min = "8:32".into();
        let mut devices = [data, blank];
        let host = lvm::mount::parse(
            "29 1 8:3 / / rw,relatime shared:1 - xfs /dev/sda3 rw\n\
             88 29 8:16 / /var/lib/kubelet rw,relatime shared:45 - ext4 /dev/sdb rw\n\
             89 29 8:16 /containerd /var/lib/containerd rw,relatime shared:45 - ext4 /dev/sdb rw\n\
             412 88 8:16 /pods/0c7e/volume-subpaths/conf/app/0 /var/lib/kubelet/pods/0c7e/volume-subpaths/conf/app/0 rw shared:45 - ext4 /dev/sdb rw\n",
        )
        .unwrap();
        set_mount_points(&mut devices, &host);
        let e = verdicts(&devices);
        assert_eq!(
            e[0].reasons,
            [
                "has a filesystem signature (ext4)",
                "mounted at /var/lib/kubelet, /var/lib/containerd"
            ]
        );
        assert_eq!(e[1].verdict, "eligible");
    }
}
