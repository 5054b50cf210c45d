//! Which disks may join a volume group, as a pure function with a reason for every refusal. The
//! rules are LVMS's (see the compatibility contract): a disk with anything on it is never used.

use std::collections::{BTreeMap, BTreeSet};

use crate::lsblk::BlockDevice;
use crate::report::Report;

/// The verdict on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Blank and selected: may be added to the volume group.
    Eligible,
    /// Already a physical volume of this volume group.
    InVolumeGroup,
    /// Not usable, with every reason.
    Excluded(Vec<String>),
}

/// What the rules need to know besides the devices.
#[derive(Clone, Debug, Default)]
pub struct Context<'a> {
    /// The volume group being built.
    pub vg: &'a str,
    /// Selected devices (symlinks already resolved to /dev/... names); `None` = every device.
    pub selected: Option<&'a BTreeSet<String>>,
    /// LVM's view, to tell our PVs and orphan PVs from other volume groups' PVs.
    pub report: Option<&'a Report>,
    /// Loop devices and their backing files (from `losetup --json`), to skip kubelet's own.
    pub loop_backing: Option<&'a BTreeMap<String, String>>,
    /// The devices' mount points are this container's, not the host's (whose mount table it
    /// cannot read): the reason says so, since a user looks for a disk's owner by where it is
    /// mounted, and `/etc/hosts` is no place on the host.
    pub container_mounts: bool,
}

pub const NOT_SELECTED: &str = "not in the device selector";

/// Judges every top-level device (and, for partitions, each partition) in `devices`.
pub fn judge(devices: &[BlockDevice], ctx: &Context) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    for d in devices {
        out.push((d.name.clone(), verdict(d, ctx)));
        // Partitions can be selected explicitly; judge them too (a disk with partitions is not).
        for p in d.children.iter().filter(|c| c.kind == "part") {
            if ctx.selected.is_some_and(|s| s.contains(&p.name)) {
                out.push((p.name.clone(), verdict(p, ctx)));
            }
        }
    }
    out
}

/// The verdict on one device.
pub fn verdict(d: &BlockDevice, ctx: &Context) -> Verdict {
    let pv = ctx
        .report
        .and_then(|r| r.pv(&d.name).or_else(|| r.pv(&format!("/dev/{}", d.kname))));
    if let Some(pv) = pv
        && pv.vg_name == ctx.vg
        && !ctx.vg.is_empty()
    {
        return Verdict::InVolumeGroup;
    }
    let mut reasons = Vec::new();
    if ctx.selected.is_some_and(|s| !s.contains(&d.name)) {
        reasons.push(NOT_SELECTED.to_string());
    }
    if d.ro {
        reasons.push("read-only".into());
    }
    if d.state.eq_ignore_ascii_case("suspended") {
        reasons.push("suspended".into());
    }
    let label = d.partlabel.to_ascii_lowercase();
    for word in ["bios", "boot", "reserved"] {
        if label.contains(word) {
            reasons.push(format!(
                "partition label {:?} marks a {word} partition",
                d.partlabel
            ));
            break;
        }
    }
    match (d.fstype.as_str(), pv) {
        ("", _) => {}
        ("LVM2_member", Some(pv)) if pv.vg_name.is_empty() && pv.free > 0 => {} // orphan PV with room
        ("LVM2_member", Some(pv)) if !pv.vg_name.is_empty() => reasons.push(format!(
            "physical volume of another volume group ({})",
            pv.vg_name
        )),
        ("LVM2_member", _) => {
            reasons.push("has an LVM2_member signature that is not a usable physical volume".into())
        }
        (fs, _) => reasons.push(format!("has a filesystem signature ({fs})")),
    }
    // A partition table without partitions is still someone's layout (and lvm2 refuses it).
    if !d.pttype.is_empty() && d.children.is_empty() {
        reasons.push(format!("has a partition table ({})", d.pttype));
    }
    if !d.children.is_empty() {
        let kinds: BTreeSet<&str> = d
            .children
            .iter()
            .map(|c| {
                if c.kind == "part" {
                    "partitions"
                } else {
                    "holders"
                }
            })
            .collect();
        reasons.push(format!(
            "has children ({})",
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if matches!(d.kind.as_str(), "rom" | "lvm") {
        reasons.push(format!("device type {} is not usable", d.kind));
    }
    if !d.mountpoints.is_empty() {
        let view = if ctx.container_mounts {
            " (inside the vg-manager container; the host's mount table is not readable)"
        } else {
            ""
        };
        reasons.push(format!("mounted at {}{view}", d.mountpoints.join(", ")));
    }
    if d.kind == "loop"
        && let Some(file) = ctx.loop_backing.and_then(|l| l.get(&d.name))
        && file.contains("/plugins/kubernetes.io/")
    {
        reasons.push(format!(
            "loop device backing a kubelet plugin file ({file})"
        ));
    }
    if d.size == 0 {
        reasons.push("has no size (empty or disconnected)".into());
    }
    if reasons.is_empty() {
        Verdict::Eligible
    } else {
        Verdict::Excluded(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            kname: name.into(),
            kind: "disk".into(),
            size: 1 << 30,
            ..Default::default()
        }
    }

    fn reasons(d: &BlockDevice, ctx: &Context) -> Vec<String> {
        match verdict(d, ctx) {
            Verdict::Excluded(r) => r,
            other => panic!("{} should be excluded: {other:?}", d.name),
        }
    }

    #[test]
    fn blank_disk_is_eligible_and_every_reason_is_listed() {
        let ctx = Context::default();
        assert_eq!(verdict(&disk("/dev/sdb"), &ctx), Verdict::Eligible);
        let mut bad = disk("/dev/sdc");
        bad.ro = true;
        bad.fstype = "xfs".into();
        bad.mountpoints = vec!["/var".into()];
        let r = reasons(&bad, &ctx);
        assert_eq!(r.len(), 3, "{r:?}");
    }

    #[test]
    fn mount_points_name_their_view_only_when_it_is_not_the_hosts() {
        let mut d = disk("/dev/sdb");
        d.mountpoints = vec!["/var/lib/kubelet".into(), "/var/lib/containerd".into()];
        assert_eq!(
            reasons(&d, &Context::default()),
            ["mounted at /var/lib/kubelet, /var/lib/containerd"]
        );
        d.mountpoints = vec!["/etc/hosts".into(), "/run/topolvm".into()];
        let ctx = Context {
            container_mounts: true,
            ..Default::default()
        };
        assert_eq!(
            reasons(&d, &ctx),
            [
                "mounted at /etc/hosts, /run/topolvm (inside the vg-manager container; the host's mount table is not readable)"
            ]
        );
    }

    #[test]
    fn suspended_rom_lvm_and_empty_devices() {
        let ctx = Context::default();
        let mut d = disk("/dev/dm-3");
        d.state = "suspended".into();
        assert!(reasons(&d, &ctx).contains(&"suspended".to_string()));
        let mut d = disk("/dev/sr0");
        d.kind = "rom".into();
        assert!(reasons(&d, &ctx)[0].contains("rom"));
        let mut d = disk("/dev/mapper/vg-lv");
        d.kind = "lvm".into();
        assert!(reasons(&d, &ctx)[0].contains("lvm"));
        let mut d = disk("/dev/sdz");
        d.size = 0;
        assert!(reasons(&d, &ctx)[0].contains("no size"));
    }

    #[test]
    fn reserved_partition_labels() {
        for label in ["BIOS boot", "EFI boot", "Microsoft reserved"] {
            let mut p = disk("/dev/sdb1");
            p.kind = "part".into();
            p.partlabel = label.into();
            assert!(
                reasons(&p, &Context::default())[0].contains("partition label"),
                "{label}"
            );
        }
    }

    #[test]
    fn kubelet_loop_devices_are_skipped() {
        let mut l = disk("/dev/loop3");
        l.kind = "loop".into();
        let backing: BTreeMap<String, String> = [(
            "/dev/loop3".to_string(),
            "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/pvc/dev/x".to_string(),
        )]
        .into();
        let ctx = Context {
            loop_backing: Some(&backing),
            ..Default::default()
        };
        assert!(reasons(&l, &ctx)[0].contains("kubelet plugin"));
        let other: BTreeMap<String, String> =
            [("/dev/loop3".to_string(), "/srv/disk.img".to_string())].into();
        assert_eq!(
            verdict(
                &l,
                &Context {
                    loop_backing: Some(&other),
                    ..Default::default()
                }
            ),
            Verdict::Eligible
        );
    }

    #[test]
    fn lvm_signature_without_a_known_pv_is_refused() {
        let mut d = disk("/dev/sdb");
        d.fstype = "LVM2_member".into();
        assert!(reasons(&d, &Context::default())[0].contains("LVM2_member"));
        // A full orphan PV cannot take data either.
        let report = Report {
            pvs: vec![crate::report::PhysicalVolume {
                name: "/dev/sdb".into(),
                free: 0,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(
            reasons(
                &d,
                &Context {
                    report: Some(&report),
                    ..Default::default()
                }
            )[0]
            .contains("LVM2_member")
        );
    }
}
