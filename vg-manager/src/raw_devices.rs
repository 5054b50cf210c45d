//! Raw-device classes on this node: which disks become PersistentVolumes, which released PVs are
//! cleaned, and the status to report. Pure, like [`crate::plan`]: every decision is tested
//! without a disk or an API server; [`clean`] and [`format`] act on a real disk (proven in the
//! guest, `tests/vm_raw_devices.rs`), the agent (`agent/raw.rs`) talks to the API server.
//!
//! The rules that keep data safe:
//! - a disk is offered only when it is blank (the same eligibility as a volume group's, and no
//!   signature at all), or when this node formatted it itself for a PV it has not created yet
//!   (`pending`, recorded before mkfs, so a crash in between does not strand the disk);
//! - a disk that has a PV is never judged again: its tenant's data is its own;
//! - only a Released PV of ours is cleaned, and only while nothing has its disk open; after the
//!   cleanup the PV is deleted, and the next plan offers the blank disk again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use lvm::Runner;
use lvm::eligibility::{Context, NOT_SELECTED, Verdict, judge};
use lvm::lsblk::BlockDevice;
use lvms_api::names::STORAGE_CLASS_PREFIX;
use lvms_api::raw::{
    CLASS_LABEL, CLEANUP_FINALIZER, DEVICE_ANNOTATION, NODE_LABEL, ZERO_BYTES, node_label_value,
    pv_name,
};
use lvms_api::{
    ExcludedDevice, LVMVolumeGroupSpec, RawCleanup, RawVolumeMode, VGStatus, VGStatusType,
};

/// Annotation on a PV whose cleanup failed: the reason, until a cleanup succeeds.
pub const CLEANUP_FAILED_ANNOTATION: &str = "lvms.topolvm.io/cleanup-failed";
/// Where udev puts the stable names of a disk, in order of preference. by-id first: it names the
/// disk itself (serial, WWN), so a disk put in the slot of a removed one is not taken for it (a
/// by-path name is the slot's: the PV of the old disk would be cleaned on the new one, or offer
/// what the new one holds). by-path for disks without an ID.
pub const STABLE_DIRS: [&str; 2] = ["/dev/disk/by-id", "/dev/disk/by-path"];

/// What the plan needs of one of this class's PVs on this node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PvView {
    pub name: String,
    /// `spec.local.path`: the disk's stable path.
    pub path: String,
    /// `status.phase`: Pending, Available, Bound, Released, Failed.
    pub phase: String,
    pub deleting: bool,
    pub claimed: bool,
    /// Made by this node: its name is the one this node gives its disk's path, the path is a
    /// stable path, and it is owned by this Node. Only such a PV's disk is ever cleaned: anyone
    /// who can label a PV must not be able to point the cleanup at a device.
    pub trusted: bool,
    pub uid: String,
    pub resource_version: String,
}

impl PvView {
    pub fn of(pv: &PersistentVolume, node: &str, node_uid: &str) -> Self {
        let path = pv
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| l.path.clone())
            .unwrap_or_default();
        let leaf = Path::new(&path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stable = STABLE_DIRS
            .iter()
            .any(|d| Path::new(&path).parent() == Some(Path::new(d)));
        let owned = pv.owner_references().iter().any(|o| {
            o.kind == "Node" && o.name == node && !node_uid.is_empty() && o.uid == node_uid
        });
        Self {
            trusted: stable && owned && pv.name_any() == pv_name(node, &leaf),
            name: pv.name_any(),
            path,
            phase: pv
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            deleting: pv.metadata.deletion_timestamp.is_some(),
            claimed: pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()),
            uid: pv.uid().unwrap_or_default(),
            resource_version: pv.resource_version().unwrap_or_default(),
        }
    }

    /// Its disk is to be cleaned: released by its claim, or being deleted while no claim holds
    /// it (a PV deleted before cleanup waits for it behind [`CLEANUP_FINALIZER`]).
    pub fn wants_cleanup(&self) -> bool {
        self.trusted && (self.phase == "Released" || (self.deleting && self.phase != "Bound"))
    }
}

/// A disk to offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPv {
    pub name: String,
    /// The kernel device (`/dev/vdb`).
    pub device: String,
    pub stable_path: String,
    pub size: u64,
    /// Make the class's filesystem first (Filesystem mode, a blank disk).
    pub format: bool,
}

/// A released PV to clean and delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleanup {
    pub pv: String,
    pub device: String,
    pub size: u64,
    /// Where the disk (or a partition of it) is mounted, and what holds it (device-mapper,
    /// md, loop): a cleanup then would pull it from under its user.
    pub mounted: Vec<String>,
    pub holders: Vec<String>,
    pub uid: String,
    pub resource_version: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawPlan {
    pub create: Vec<NewPv>,
    pub clean: Vec<Cleanup>,
    pub status: VGStatus,
}

/// What the node has, for one raw-device class.
pub struct Inputs<'a> {
    pub node: &'a str,
    pub class: &'a str,
    pub spec: &'a LVMVolumeGroupSpec,
    pub devices: &'a [BlockDevice],
    /// Kernel device → its stable path (see [`stable_paths`]).
    pub stable: &'a BTreeMap<String, String>,
    pub pvs: &'a [PvView],
    /// Devices of this node's PVs of other raw classes → "PersistentVolume X of class Y".
    pub others: &'a BTreeMap<String, String>,
    /// Stable paths this node formatted for a PV not yet created.
    pub pending: &'a BTreeSet<String>,
    pub resolve: &'a dyn Fn(&str) -> Option<String>,
    pub loops: &'a BTreeMap<String, String>,
    pub container_mounts: bool,
}

fn find<'a>(devices: &'a [BlockDevice], name: &str) -> Option<&'a BlockDevice> {
    devices
        .iter()
        .flat_map(|d| d.walk())
        .find(|d| d.name == name)
}

pub fn plan(i: &Inputs) -> RawPlan {
    let mut out = RawPlan::default();
    let mode = i.spec.raw_devices.as_ref().map(|r| r.volume_mode);
    let fstype = i.spec.fstype.unwrap_or_default().as_str();
    let mut problems: Vec<String> = Vec::new();

    // The PVs first: their disks are taken, whatever is on them.
    let mut taken = BTreeSet::new();
    for pv in i.pvs {
        let dev = (i.resolve)(&pv.path);
        match &dev {
            Some(d) => {
                taken.insert(d.clone());
                out.status.devices.push(d.clone());
            }
            None => problems.push(format!(
                "the disk {} of PersistentVolume {} is missing",
                pv.path, pv.name
            )),
        }
        if !pv.wants_cleanup() {
            continue;
        }
        let Some(d) = dev else { continue };
        // Cleaned only as the device the last scan saw: its size, its mounts, its holders.
        let Some(found) = find(i.devices, &d) else {
            problems.push(format!(
                "the disk {d} of PersistentVolume {} is not in the device scan: not cleaned",
                pv.name
            ));
            continue;
        };
        out.clean.push(Cleanup {
            pv: pv.name.clone(),
            size: found.size,
            mounted: found
                .walk()
                .into_iter()
                .flat_map(|b| b.mountpoints.iter().cloned())
                .collect(),
            holders: found
                .children
                .iter()
                .filter(|c| c.kind != "part")
                .map(|c| c.name.clone())
                .collect(),
            device: d,
            uid: pv.uid.clone(),
            resource_version: pv.resource_version.clone(),
        });
    }

    // The selector, resolved as for a volume group.
    let (required, optional, missing) = crate::plan::selector_paths(i.spec, i.resolve);
    if !missing.is_empty() {
        problems.push(format!(
            "required device paths do not exist on this node: {}",
            missing.join(", ")
        ));
    }
    let selected: Option<BTreeSet<String>> =
        (!required.is_empty() || !optional.is_empty()).then(|| {
            required
                .iter()
                .chain(optional.iter())
                .filter_map(|p| (i.resolve)(p))
                .collect()
        });
    let ctx = Context {
        vg: "",
        selected: selected.as_ref(),
        report: None,
        loop_backing: Some(i.loops),
        container_mounts: i.container_mounts,
    };
    let ours_formatted = format!("has a filesystem signature ({fstype})");
    for (dev, verdict) in judge(i.devices, &ctx) {
        if taken.contains(&dev) {
            continue;
        }
        // Another raw class's PV on this node (two classes can name one disk by two paths).
        if let Some(owner) = i.others.get(&dev) {
            if selected.as_ref().is_some_and(|s| s.contains(&dev)) {
                problems.push(format!("{dev} is already offered as {owner}"));
            }
            out.status.excluded.push(ExcludedDevice {
                name: dev,
                reasons: vec![format!("offered as {owner}")],
            });
            continue;
        }
        let stable = i.stable.get(&dev);
        let pending = stable.is_some_and(|s| i.pending.contains(s));
        let d = find(i.devices, &dev);
        let reasons = match verdict {
            // A whole disk must be blank: eligibility lets an orphan LVM PV through, a raw
            // volume does not.
            Verdict::Eligible | Verdict::InVolumeGroup => match d.map(|d| d.fstype.as_str()) {
                Some("") | None => vec![],
                Some(sig) => vec![format!("has a signature ({sig})")],
            },
            Verdict::Excluded(r) => r,
        };
        // Formatted by this node for a PV it has not created yet (a crash in between): offer it
        // without formatting again. Anything else on the disk still excludes it.
        let formatted_by_us = pending
            && mode == Some(RawVolumeMode::Filesystem)
            && reasons.len() == 1
            && reasons[0] == ours_formatted;
        if !reasons.is_empty() && !formatted_by_us {
            if required
                .iter()
                .any(|p| (i.resolve)(p).as_deref() == Some(dev.as_str()))
            {
                problems.push(format!(
                    "required device {dev} cannot be used: {}",
                    reasons.join("; ")
                ));
            }
            out.status
                .excluded
                .push(ExcludedDevice { name: dev, reasons });
            continue;
        }
        let Some(stable) = stable else {
            let why = format!(
                "has no stable path under {}: its kernel name may change at the next boot",
                STABLE_DIRS.join(" or ")
            );
            problems.push(format!("{dev} {why}"));
            out.status.excluded.push(ExcludedDevice {
                name: dev,
                reasons: vec![why],
            });
            continue;
        };
        let device = Path::new(stable)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| dev.trim_start_matches("/dev/").to_string());
        out.status.devices.push(dev.clone());
        out.create.push(NewPv {
            name: pv_name(i.node, &device),
            device: dev,
            stable_path: stable.clone(),
            size: d.map_or(0, |d| d.size),
            format: mode == Some(RawVolumeMode::Filesystem) && !formatted_by_us,
        });
    }
    // Unselected devices are listed only when a selector exists, as for a volume group.
    out.status
        .excluded
        .retain(|e| !(e.reasons.len() == 1 && e.reasons[0] == NOT_SELECTED) || selected.is_some());
    out.status.devices.sort();
    out.status.devices.dedup();
    out.status.name = i.class.to_string();
    (out.status.status, out.status.reason) = if out.status.devices.is_empty() {
        problems.insert(
            0,
            "no available devices: every device on this node was excluded (see excluded)".into(),
        );
        (VGStatusType::Failed, problems.join("; "))
    } else if problems.is_empty() {
        (VGStatusType::Ready, String::new())
    } else {
        (VGStatusType::Degraded, problems.join("; "))
    };
    out
}

/// Kernel device → stable path, from the links in `dirs` (each `(link, target)`, the target
/// already resolved): the first directory that has one wins, and within it the first name, so the
/// choice (and with it the PV name) is the same at every pass.
pub fn pick_stable(dirs: &[Vec<(String, String)>]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for links in dirs {
        let mut links = links.clone();
        links.sort();
        for (link, target) in links {
            out.entry(target).or_insert(link);
        }
    }
    out
}

/// [`pick_stable`] over the node's [`STABLE_DIRS`].
pub fn stable_paths() -> BTreeMap<String, String> {
    let dirs: Vec<Vec<(String, String)>> = STABLE_DIRS
        .iter()
        .map(|dir| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let link = e.path();
                    let target = std::fs::canonicalize(&link).ok()?;
                    Some((
                        link.to_string_lossy().into_owned(),
                        target.to_string_lossy().into_owned(),
                    ))
                })
                .collect()
        })
        .collect();
    pick_stable(&dirs)
}

/// The PersistentVolume of a disk: the disk's stable path, its whole size, this node only,
/// Retain (the node cleans a released disk itself), owned by the Node so it goes with it.
pub fn persistent_volume(
    node: &Node,
    class: &str,
    spec: &LVMVolumeGroupSpec,
    new: &NewPv,
) -> PersistentVolume {
    let mode = spec
        .raw_devices
        .as_ref()
        .map(|r| r.volume_mode)
        .unwrap_or_default();
    let node_name = node.name_any();
    // Scheduling matches labels, and a node's hostname label can differ from its name.
    let hostname = node
        .labels()
        .get("kubernetes.io/hostname")
        .cloned()
        .unwrap_or_else(|| node_name.clone());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            labels: Some(
                [
                    (NODE_LABEL.to_string(), node_label_value(&node_name)),
                    (CLASS_LABEL.to_string(), class.to_string()),
                ]
                .into(),
            ),
            annotations: Some([(DEVICE_ANNOTATION.to_string(), new.device.clone())].into()),
            finalizers: Some(vec![CLEANUP_FINALIZER.to_string()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node_name,
                uid: node.uid().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_string(), Quantity(new.size.to_string()))].into()),
            volume_mode: Some(mode.as_str().into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(format!("{STORAGE_CLASS_PREFIX}{class}")),
            local: Some(LocalVolumeSource {
                path: new.stable_path.clone(),
                fs_type: (mode == RawVolumeMode::Filesystem)
                    .then(|| spec.fstype.unwrap_or_default().as_str().to_string()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![hostname]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `O_EXCL` of Linux on x86_64 and aarch64 (asm-generic), the platforms the images are built for.
const O_EXCL: i32 = 0o200;

/// Writes zeros over the first `bytes` of `device` and flushes them to the disk.
fn zero(device: &str, bytes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_EXCL on a block device: refused (EBUSY) while the kernel has it mounted or claimed, a
    // last check the scan cannot race.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_EXCL)
        .open(device)?;
    let buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Cleans a released disk as the class asks: discard it whole where the device can, else zero
/// its first 100 MiB; then erase every signature left (a backup GPT at the end of the disk, a
/// RAID superblock), so the disk is blank for the next tenant. Returns what was done.
pub fn clean(runner: &dyn Runner, c: &Cleanup, how: RawCleanup) -> Result<String, String> {
    if !c.mounted.is_empty() {
        return Err(format!(
            "{} is still mounted at {}: not cleaned while in use",
            c.device,
            c.mounted.join(", ")
        ));
    }
    if !c.holders.is_empty() {
        return Err(format!(
            "{} is held by {}: not cleaned while in use",
            c.device,
            c.holders.join(", ")
        ));
    }
    let bytes = ZERO_BYTES.min(c.size);
    if bytes == 0 {
        return Err(format!("{} reports no size: not cleaned", c.device));
    }
    // Discarded blocks need not read back as zeros: the start is zeroed either way.
    let discarded = how == RawCleanup::Discard && lvm::dm::can_discard(&c.device);
    if discarded {
        runner
            .run("blkdiscard", std::slice::from_ref(&c.device))
            .map_err(|e| format!("discarding {}: {e}", c.device))?;
    }
    zero(&c.device, bytes).map_err(|e| format!("zeroing {}: {e}", c.device))?;
    let done = match (how, discarded) {
        (RawCleanup::Discard, true) => format!(
            "discarded {} and zeroed its first {} MiB",
            c.device,
            bytes >> 20
        ),
        (RawCleanup::Discard, false) => format!(
            "zeroed the first {} MiB of {} (the device cannot discard)",
            bytes >> 20,
            c.device
        ),
        (RawCleanup::Zero, _) => format!("zeroed the first {} MiB of {}", bytes >> 20, c.device),
    };
    runner
        .run("wipefs", &["--all".into(), c.device.clone()])
        .map_err(|e| format!("erasing the signatures of {}: {e}", c.device))?;
    // lsblk reads signatures from the udev database: let it see the blank disk.
    let _ = runner.run("udevadm", &["settle".into(), "--timeout=30".into()]);
    Ok(done)
}

/// Makes the class's filesystem on a blank disk, after a fresh probe that it is still blank
/// (lsblk's view comes from udev and can lag).
pub fn format(runner: &dyn Runner, device: &str, fstype: &str) -> Result<(), String> {
    let fs =
        lvm::fs::Filesystem::parse(fstype).ok_or_else(|| format!("unknown fstype {fstype}"))?;
    // wipefs lists every signature (partition tables too), not only a filesystem's type.
    match runner.run(
        "wipefs",
        &["--no-act".into(), "--noheadings".into(), device.into()],
    ) {
        Ok(o) if o.stdout.trim().is_empty() => {}
        Ok(o) => {
            return Err(format!(
                "{device} is not blank ({}): not formatted",
                o.stdout.trim()
            ));
        }
        Err(e) => return Err(format!("probing {device}: {e}")),
    }
    lvm::fs::mkfs(runner, fs, device).map_err(|e| format!("making {fstype} on {device}: {e}"))?;
    let _ = runner.run("udevadm", &["settle".into(), "--timeout=30".into()]);
    Ok(())
}

#[cfg(test)]
mod tests;
