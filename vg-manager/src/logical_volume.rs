//! The node side of a LogicalVolume (TopoLVM's contract): create the LV on this node (thin,
//! thick, or a thin snapshot/clone of `spec.source`), grow it when `spec.size` grows, remove it
//! behind the `topolvm.io/logicalvolume` finalizer, and report `status.volumeID` (the LV name,
//! which is the object's UID), `currentSize`, or a gRPC code and message. Idempotent: the LV is
//! found by name on every call, so a crash between steps is finished by the next call.
//!
//! A plain thick class's volume may have its own layout (`spec.layout`: striped or mirror, from
//! its PVC); [`layout`] decides whether this node's volume group can make it.

pub mod layout;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::agent::set_finalizers;
use crate::reports::Reports;
use layout::Shape;
use lvm::mount::MountInfo;
use lvm::{Layout, Lvm, Report};
use lvms_api::logical_volume::LayoutType;
use lvms_api::names::LOGICAL_VOLUME_FINALIZER;
use lvms_api::{
    LVMVolumeGroup, LogicalVolume, RAIDType, RaidLayout, VolumeCleanup, VolumeHealth,
    quantity_bytes,
};
use serde_json::{Value, json};

/// gRPC codes written to `status.code` (the CSI controller returns them as they are).
pub mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const NOT_FOUND: u32 = 5;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
}

/// Tag on every LV we create, naming its LogicalVolume: an LV with the tag and no object is
/// garbage left by a crash; an LV without it is never ours to touch.
pub fn owner_tag(lv: &LogicalVolume) -> String {
    format!("{OWNER_TAG_PREFIX}{}", lv.name_any())
}

pub const OWNER_TAG_PREFIX: &str = "lvms.topolvm.io/logicalvolume=";

/// What the node must do for one LogicalVolume, decided from the object and one LVM report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not this node's, or being deleted without our finalizer: nothing.
    None,
    Create {
        thin_pool: Option<String>,
        size: u64,
        /// RAID classes, or a mirror asked for by `spec.layout`: the layout of the new volume.
        raid: Option<RaidLayout>,
        /// Striped over this many physical volumes (`spec.layout` striped).
        stripes: Option<u32>,
    },
    Snapshot {
        origin: String,
    },
    Extend {
        size: u64,
    },
    /// Remove the volume; a thick one's data is cleared first (`clear`), so the extents reach
    /// the next volume blank. A crash between the two repeats both.
    Remove {
        clear: Option<lvm::Clear>,
    },
    /// Converged: report the size.
    Report {
        size: u64,
    },
    /// Cannot proceed: report this code and message.
    Fail {
        code: u32,
        message: String,
    },
}

/// How a volume's data is cleared before it is removed: a thick volume's as its class says
/// (zero by default); a thin volume's never (its pool zeroes blocks on first use), nor one that
/// is gone already.
fn clear_on_remove(
    existing: Option<&lvm::LogicalVolume>,
    class: Option<&LVMVolumeGroup>,
) -> Option<lvm::Clear> {
    let l = existing?;
    if l.is_thin_volume() || !l.is_active() {
        return None;
    }
    match class
        .and_then(|c| c.spec.volume_cleanup)
        .unwrap_or_default()
    {
        VolumeCleanup::Zero => Some(lvm::Clear::Zero),
        VolumeCleanup::Discard => Some(lvm::Clear::Discard),
        VolumeCleanup::None => None,
    }
}

/// Bytes to allocate for `spec.size`: rounded up to 512 (LVM rounds further up to extents).
fn wanted_size(lv: &LogicalVolume) -> Option<u64> {
    let b = quantity_bytes(&lv.spec.size.0)?;
    Some(b.div_ceil(512) * 512).filter(|s| *s > 0)
}

pub fn decide(
    lv: &LogicalVolume,
    node: &str,
    class: Option<&LVMVolumeGroup>,
    report: &Report,
) -> Action {
    if lv.spec.node_name != node {
        return Action::None;
    }
    let vg = lv.spec.device_class.as_str();
    let name = lv.uid().unwrap_or_default();
    let existing = report.lv(vg, &name);
    if lv.metadata.deletion_timestamp.is_some() {
        return if has_finalizer(lv) {
            Action::Remove {
                clear: clear_on_remove(existing, class),
            }
        } else {
            Action::None
        };
    }
    let Some(size) = wanted_size(lv) else {
        return Action::Fail {
            code: code::INVALID_ARGUMENT,
            message: format!("spec.size {:?} is not a byte count", lv.spec.size.0),
        };
    };
    match existing {
        Some(l) if l.size >= size => Action::Report { size: l.size },
        Some(_) => Action::Extend { size },
        None if !lv.status.as_ref().is_none_or(|s| s.volume_id.is_empty()) => Action::Fail {
            code: code::NOT_FOUND,
            message: format!("logical volume {vg}/{name} has vanished from the node"),
        },
        None => {
            let Some(class) = class else {
                return Action::Fail {
                    code: code::NOT_FOUND,
                    message: format!("device class {vg} does not exist"),
                };
            };
            if report.vg(vg).is_none() {
                return Action::Fail {
                    code: code::NOT_FOUND,
                    message: format!("volume group {vg} is not ready on node {node}"),
                };
            }
            if !lv.spec.source.is_empty() {
                if class.spec.raid_config.is_some() {
                    return Action::Fail {
                        code: code::INVALID_ARGUMENT,
                        message: format!(
                            "device class {vg} is a RAID class: snapshots and clones need a thin class"
                        ),
                    };
                }
                if class.spec.thin_pool_config.is_none() {
                    return Action::Fail {
                        code: code::INVALID_ARGUMENT,
                        message: format!(
                            "device class {vg} is thick: snapshots and clones need a thin class"
                        ),
                    };
                }
                if report.lv(vg, &lv.spec.source).is_none() {
                    return Action::Fail {
                        code: code::NOT_FOUND,
                        message: format!("source volume {} not found in {vg}", lv.spec.source),
                    };
                }
                return Action::Snapshot {
                    origin: lv.spec.source.clone(),
                };
            }
            // Thin pools take any virtual size: the overprovision ratio is ours to enforce, here
            // as well as in the controller, since two controllers' decisions can race.
            let missing = report.vg(vg).map_or(0, |v| v.missing_pv_count);
            if missing > 0 {
                return Action::Fail {
                    code: code::RESOURCE_EXHAUSTED,
                    message: format!(
                        "volume group {vg} on node {node} is missing {missing} physical volume(s): lvm2 makes no new volume in it until it is repaired"
                    ),
                };
            }
            if let Some(l) = lv
                .spec
                .layout
                .filter(|l| l.layout_type != LayoutType::Linear)
                && (class.spec.thin_pool_config.is_some() || class.spec.raid_config.is_some())
            {
                // The controller refuses this; an object written by hand gets the same answer.
                return Action::Fail {
                    code: code::INVALID_ARGUMENT,
                    message: format!(
                        "spec.layout {}: device class {vg} is {}, and only plain thick classes take a per-volume layout",
                        l.layout_type.as_str(),
                        if class.spec.thin_pool_config.is_some() {
                            "thin"
                        } else {
                            "a RAID class"
                        }
                    ),
                };
            }
            let shape = match layout::shape(lv.spec.layout.as_ref(), report, vg, node, size) {
                Ok(s) => s,
                Err((code, message)) => return Action::Fail { code, message },
            };
            if shape != Shape::Linear {
                // The layout's own check counted the room on each physical volume it needs.
                return Action::Create {
                    thin_pool: None,
                    size,
                    raid: match shape {
                        Shape::Mirror(m) => Some(m),
                        _ => None,
                    },
                    stripes: match shape {
                        Shape::Striped(n) => Some(n),
                        _ => None,
                    },
                };
            }
            let available = crate::capacity::usage(report, vg, &class.spec)
                .map(|u| u.available())
                .unwrap_or(0);
            if size > available {
                return Action::Fail {
                    code: code::RESOURCE_EXHAUSTED,
                    message: format!(
                        "{size} bytes requested, {available} available in device class {vg} on node {node}"
                    ),
                };
            }
            Action::Create {
                thin_pool: class.spec.thin_pool_config.as_ref().map(|t| t.name.clone()),
                size,
                raid: class
                    .spec
                    .raid_config
                    .as_ref()
                    .map(|r| crate::capacity::raid_layout(report, vg, r)),
                stripes: None,
            }
        }
    }
}

/// The health of `lv` as this node sees it, from one LVM report and the node's mount table:
/// the LV must exist, its thin pool must have room (and the LV all its physical volumes:
/// [`crate::csi_node::condition`], what NodeGetVolumeStats says too), and no filesystem of it
/// may have gone read-only under a writable mount ([`crate::csi_node::read_only_problem`], with
/// sysfs at `sys`). `devno` gives a device path's major:minor, for a mount whose source names
/// the device otherwise. None when there is nothing to check:
/// another node's volume, one being deleted, or one the node has not made yet.
pub fn health(
    lv: &LogicalVolume,
    node: &str,
    report: &Report,
    mounts: &[MountInfo],
    sys: &std::path::Path,
    devno: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Option<VolumeHealth> {
    let made = lv.status.as_ref().is_some_and(|s| !s.volume_id.is_empty());
    if lv.spec.node_name != node || lv.metadata.deletion_timestamp.is_some() || !made {
        return None;
    }
    let vg = lv.spec.device_class.as_str();
    let name = lv.uid().unwrap_or_default();
    let Some(l) = report.lv(vg, &name) else {
        return Some(VolumeHealth {
            abnormal: true,
            message: format!(
                "logical volume {vg}/{name} is missing from node {node}: removed outside the driver, or its volume group is gone; its data cannot be reached"
            ),
        });
    };
    let mut problems: Vec<String> = crate::csi_node::condition(report, l).into_iter().collect();
    // The devices a filesystem of the volume is mounted from: the LV itself, or its decrypted
    // mapping. mount(8) records the /dev/mapper name; the numbers catch any other spelling.
    let mapping = lvm::crypt::mapper_path(&lvm::crypt::mapping_name(&name));
    let paths = [l.dm_path.clone(), format!("/dev/{vg}/{name}"), mapping];
    let numbers: Vec<(u32, u32)> = paths
        .iter()
        .filter(|p| !p.is_empty())
        .filter_map(|p| devno(p))
        .collect();
    let ours = |m: &&MountInfo| {
        paths.iter().any(|p| !p.is_empty() && *p == m.source)
            || numbers.contains(&(m.major, m.minor))
    };
    if let Some(p) = mounts
        .iter()
        .filter(ours)
        .find_map(|m| crate::csi_node::read_only_problem(&name, m, sys))
    {
        problems.push(p);
    }
    Some(VolumeHealth {
        abnormal: !problems.is_empty(),
        message: problems.join("; "),
    })
}

/// Runs `action` on LVM; a failure becomes a status code and message.
pub fn execute(lvm: &Lvm, lv: &LogicalVolume, action: &Action) -> Result<(), (u32, String)> {
    let vg = lv.spec.device_class.as_str();
    let name = lv.uid().unwrap_or_default();
    let tags = [owner_tag(lv)];
    let result = match action {
        Action::Create {
            thin_pool: Some(pool),
            size,
            ..
        } => lvm.create_thin_lv(vg, pool, &name, *size, &tags),
        Action::Create {
            thin_pool: None,
            size,
            raid,
            stripes,
        } => lvm.create_thick_lv(vg, &name, *size, lvm_layout(raid.as_ref(), *stripes), &tags),
        Action::Snapshot { origin } => lvm.create_thin_snapshot(vg, origin, &name, &tags),
        Action::Extend { size } => lvm.extend(vg, &name, *size),
        Action::Remove { clear } => {
            // A LUKS2 volume's mapping holds the LV open; kubelet closes it with the last
            // unpublish, so one left here is unmounted (a forced detach). Closing fails while
            // anything still uses it, and the removal is retried.
            let mapping = lvm::crypt::mapping_name(&name);
            if std::path::Path::new(&lvm::crypt::mapper_path(&mapping)).exists()
                && let Err(e) = lvm::crypt::close(lvm.runner(), &mapping)
            {
                return Err((
                    code::INTERNAL,
                    format!("closing the volume's decrypted mapping {mapping} before removal: {e}"),
                ));
            }
            if let Some(how) = clear {
                match lvm.clear(vg, &name, *how) {
                    Ok(done) => {
                        tracing::info!(volume = %name, done, "volume data cleared before removal")
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        return Err((
                            code::INTERNAL,
                            format!("clearing the volume's data before removal: {e}"),
                        ));
                    }
                }
            }
            match lvm.remove(vg, &name) {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            }
        }
        _ => Ok(()),
    };
    result.map_err(|e| {
        let text = e.to_string();
        let code = if text.contains("Insufficient free space") || text.contains("insufficient") {
            code::RESOURCE_EXHAUSTED
        } else if e.is_already_exists() {
            // Created by an earlier, interrupted call: the next decide() sees it and reports it.
            code::OK
        } else {
            code::INTERNAL
        };
        (code, text)
    })
}

/// The lvm2 layout of a new thick volume: linear, striped, or a RAID level (the class's, or a
/// mirror the volume asked for).
fn lvm_layout(raid: Option<&RaidLayout>, stripes: Option<u32>) -> Layout {
    let Some(r) = raid else {
        return match stripes {
            Some(n) => Layout::Striped {
                stripes: n,
                stripe_size: layout::STRIPE_SIZE,
            },
            None => Layout::Linear,
        };
    };
    Layout::Raid {
        level: r.raid_type.as_str(),
        mirrors: (r.mirrors > 0).then_some(r.mirrors),
        stripes: (r.raid_type != RAIDType::Raid1).then_some(r.stripes),
        stripe_size: r.stripe_size,
    }
}

/// Records in `report` what a successful `action` did to LVM, so the next decision needs no
/// new report: LVM allocates whole extents, so sizes round up to the VG's extent size. Returns
/// false when it cannot tell (the caller then reads LVM again).
pub fn record(report: &mut Report, lv: &LogicalVolume, action: &Action) -> bool {
    let vg_name = lv.spec.device_class.as_str();
    let name = lv.uid().unwrap_or_default();
    let Some(extent) = report.vg(vg_name).map(|v| v.extent_size).filter(|e| *e > 0) else {
        return false;
    };
    let round = |b: u64| b.div_ceil(extent) * extent;
    // Thick volumes take their extents from the VG; thin ones from their pool.
    let take_from_vg = |report: &mut Report, bytes: i128| {
        if let Some(v) = report.vgs.iter_mut().find(|v| v.name == vg_name) {
            v.free = (v.free as i128 - bytes).max(0) as u64;
        }
    };
    // A RAID volume takes extents from several PVs, which the capacity of its class is computed
    // from: read LVM again rather than guess how lvm2 placed them.
    let raid = |report: &Report| report.lv(vg_name, &name).is_some_and(|l| l.is_raid());
    match action {
        // Striped and RAID volumes take extents from several PVs: read LVM again.
        Action::Create { raid: Some(_), .. }
        | Action::Create {
            stripes: Some(_), ..
        } => false,
        Action::Extend { .. } | Action::Remove { .. } if raid(report) => false,
        Action::Create {
            thin_pool, size, ..
        } => {
            let size = round(*size);
            if thin_pool.is_none() {
                take_from_vg(report, size as i128);
            }
            report.lvs.push(lvm::LogicalVolume {
                name,
                vg_name: vg_name.into(),
                size,
                attr: if thin_pool.is_some() {
                    "Vwi-a-tz--"
                } else {
                    "-wi-a-----"
                }
                .into(),
                tags: vec![owner_tag(lv)],
                pool: thin_pool.clone().unwrap_or_default(),
                active: "active".into(),
                ..Default::default()
            });
            true
        }
        Action::Snapshot { origin } => {
            let Some(o) = report.lv(vg_name, origin).cloned() else {
                return false;
            };
            report.lvs.push(lvm::LogicalVolume {
                name,
                vg_name: vg_name.into(),
                size: o.size,
                attr: "Vwi-a-tz--".into(),
                tags: vec![owner_tag(lv)],
                pool: o.pool,
                origin: origin.clone(),
                active: "active".into(),
                ..Default::default()
            });
            true
        }
        Action::Extend { size } => {
            let Some(l) = report
                .lvs
                .iter_mut()
                .find(|l| l.vg_name == vg_name && l.name == name)
            else {
                return false;
            };
            let (old, new, thin) = (l.size, round(*size), l.is_thin_volume());
            l.size = new;
            if !thin {
                take_from_vg(report, new as i128 - old as i128);
            }
            true
        }
        Action::Remove { .. } => {
            let Some(i) = report
                .lvs
                .iter()
                .position(|l| l.vg_name == vg_name && l.name == name)
            else {
                return true;
            };
            let l = report.lvs.remove(i);
            if !l.is_thin_volume() {
                take_from_vg(report, -(l.size as i128));
            }
            true
        }
        Action::None | Action::Report { .. } | Action::Fail { .. } => true,
    }
}

fn has_finalizer(lv: &LogicalVolume) -> bool {
    lv.finalizers()
        .iter()
        .any(|f| f == LOGICAL_VOLUME_FINALIZER)
}

/// One LogicalVolume, end to end against the API: decide, act, decide again on what the act
/// left (a restored snapshot may still need to grow), then write status or release the
/// finalizer. Changes hold the node's change lock, so every capacity decision sees the changes
/// before it. Returns the first action taken (`Report` when there was nothing to do).
pub async fn reconcile(
    client: &Client,
    reports: &Reports,
    node: &str,
    namespace: &str,
    lv: &LogicalVolume,
) -> Result<Action, String> {
    if lv.spec.node_name != node {
        return Ok(Action::None);
    }
    let api: Api<LogicalVolume> = Api::all(client.clone());
    let vgs: Api<LVMVolumeGroup> = Api::namespaced(client.clone(), namespace);
    let class = vgs
        .get_opt(&lv.spec.device_class)
        .await
        .map_err(|e| format!("reading device class: {e}"))?;
    let name = lv.name_any();
    let mut first = None;
    let mut finalized = has_finalizer(lv);
    let _changes = reports.changes().await;
    // Create or snapshot, then possibly extend, then report: three rounds at most.
    for _ in 0..4 {
        let report = reports.current().await.map_err(|e| e.to_string())?;
        let action = decide(lv, node, class.as_ref(), &report);
        first.get_or_insert_with(|| action.clone());
        let status = match &action {
            Action::None => return Ok(first.unwrap_or(action)),
            Action::Report { size } => {
                json!({"volumeID": lv.uid(), "code": code::OK, "message": null, "currentSize": size.to_string()})
            }
            Action::Fail { code, message } => json!({"code": code, "message": message}),
            _ => {
                if !matches!(action, Action::Remove { .. }) && !finalized {
                    let mut f = lv.finalizers().to_vec();
                    f.push(LOGICAL_VOLUME_FINALIZER.into());
                    set_finalizers(&api, lv, &f, "adding the finalizer")
                        .await
                        .map_err(|e| e.to_string())?;
                    finalized = true;
                }
                let (l, a, obj) = (reports.lvm().clone(), action.clone(), lv.clone());
                let outcome = tokio::task::spawn_blocking(move || execute(&l, &obj, &a))
                    .await
                    .map_err(|e| e.to_string())?;
                match outcome {
                    Ok(()) => {
                        reports.record(|r| record(r, lv, &action)).await;
                    }
                    Err((c, message)) => {
                        // LVM may have done part of it: read it again next time.
                        reports.invalidate().await;
                        if matches!(action, Action::Remove { .. }) {
                            return Err(format!("removing the logical volume: {message}"));
                        }
                        if c != code::OK {
                            let status = json!({"code": c, "message": message});
                            write_status(&api, &name, status).await?;
                            return Ok(first.unwrap_or(action));
                        }
                    }
                }
                if matches!(action, Action::Remove { .. }) {
                    let f: Vec<String> = lv
                        .finalizers()
                        .iter()
                        .filter(|f| *f != LOGICAL_VOLUME_FINALIZER)
                        .cloned()
                        .collect();
                    set_finalizers(&api, lv, &f, "releasing the finalizer")
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(first.unwrap_or(action));
                }
                continue;
            }
        };
        // Idle resyncs must not write: compare with what the object already says.
        let current = lv.status.clone().unwrap_or_default();
        let unchanged = match &action {
            Action::Report { size } => {
                current.volume_id == lv.uid().unwrap_or_default()
                    && current.code == code::OK
                    && current.message.is_empty()
                    && current.current_size.as_ref().map(|q| q.0.as_str())
                        == Some(size.to_string().as_str())
            }
            Action::Fail { code, message } => current.code == *code && current.message == *message,
            _ => false,
        };
        if !unchanged {
            write_status(&api, &name, status).await?;
        }
        return Ok(first.unwrap_or(action));
    }
    Err("the logical volume did not converge in three changes".into())
}

async fn write_status(api: &Api<LogicalVolume>, name: &str, status: Value) -> Result<(), String> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map(drop)
    .map_err(|e| format!("writing status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use lvm::report::{LogicalVolume as Lv, VolumeGroup};
    use lvms_api::{LVMVolumeGroupSpec, LogicalVolumeSpec, LogicalVolumeStatus, ThinPoolConfig};

    fn lv(size: &str, source: &str) -> LogicalVolume {
        let mut l = LogicalVolume::new(
            "pvc-1",
            LogicalVolumeSpec {
                name: "pvc-1".into(),
                node_name: "node-a".into(),
                size: Quantity(size.into()),
                device_class: "vg1".into(),
                source: source.into(),
                ..Default::default()
            },
        );
        l.metadata.uid = Some("uid-1".into());
        l
    }

    fn class(thin: bool) -> LVMVolumeGroup {
        LVMVolumeGroup::new(
            "vg1",
            LVMVolumeGroupSpec {
                thin_pool_config: thin.then(|| ThinPoolConfig {
                    name: "pool".into(),
                    size_percent: 90,
                    overprovision_ratio: 5,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn report(lvs: &[(&str, u64)]) -> Report {
        Report {
            vgs: vec![VolumeGroup {
                name: "vg1".into(),
                size: 20 << 30,
                free: 10 << 30,
                ..Default::default()
            }],
            lvs: std::iter::once(Lv {
                name: "pool".into(),
                vg_name: "vg1".into(),
                attr: "twi-aotz--".into(),
                size: 4 << 30,
                ..Default::default()
            })
            .chain(lvs.iter().map(|(n, s)| Lv {
                name: n.to_string(),
                vg_name: "vg1".into(),
                attr: "Vwi-a-tz--".into(),
                pool: "pool".into(),
                size: *s,
                ..Default::default()
            }))
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn health_names_what_is_wrong() {
        let no_devno = |_: &str| None;
        // The read-only signs themselves are tested in csi_node's tests.
        let nosys = std::path::Path::new("/nonexistent-sys");
        let mut made = lv("1Gi", "");
        made.status = Some(LogicalVolumeStatus {
            volume_id: "uid-1".into(),
            ..Default::default()
        });
        let mut r = report(&[("uid-1", 1 << 30)]);
        r.lvs[1].dm_path = "/dev/mapper/vg1-uid--1".into();
        let ok = health(&made, "node-a", &r, &[], nosys, &no_devno).unwrap();
        assert_eq!(ok, VolumeHealth::default(), "checked and healthy");
        assert_eq!(
            health(&made, "node-b", &r, &[], nosys, &no_devno),
            None,
            "not ours"
        );
        assert_eq!(
            health(&lv("1Gi", ""), "node-a", &r, &[], nosys, &no_devno),
            None,
            "not made yet"
        );

        let gone = health(&made, "node-a", &report(&[]), &[], nosys, &no_devno).unwrap();
        assert!(gone.abnormal);
        assert!(
            gone.message
                .contains("logical volume vg1/uid-1 is missing from node node-a"),
            "{}",
            gone.message
        );

        let mut full = r.clone();
        full.lvs[0].data_percent = Some(100.0);
        let h = health(&made, "node-a", &full, &[], nosys, &no_devno).unwrap();
        assert!(
            h.abnormal
                && h.message
                    .contains("thin pool vg1/pool is out of data space"),
            "{}",
            h.message
        );

        // The kernel made the filesystem read-only under the pod's writable mount.
        let mount = |source: &str, dev: &str, opts: &str, sb: &str| {
            lvm::mount::parse(&format!(
                "36 25 {dev} / /pods/a {opts} - ext4 {source} {sb},errors=remount-ro\n"
            ))
            .unwrap()
        };
        let failed = mount("/dev/mapper/vg1-uid--1", "253:3", "rw,relatime", "ro");
        let h = health(&made, "node-a", &r, &failed, nosys, &no_devno).unwrap();
        assert!(
            h.abnormal && h.message.contains("went read-only at /pods/a"),
            "{}",
            h.message
        );
        let published_ro = mount("/dev/mapper/vg1-uid--1", "253:3", "ro,relatime", "ro");
        assert!(
            !health(&made, "node-a", &r, &published_ro, nosys, &no_devno)
                .unwrap()
                .abnormal
        );
        let other = mount("/dev/mapper/vg1-other", "253:9", "rw,relatime", "ro");
        assert!(
            !health(&made, "node-a", &r, &other, nosys, &no_devno)
                .unwrap()
                .abnormal,
            "another volume's filesystem"
        );
        // A source spelled otherwise (a decrypted mapping seen by its dm name) is matched by
        // its device numbers.
        let by_number = mount("/dev/dm-7", "253:7", "rw", "ro");
        let devno = |p: &str| p.starts_with("/dev/mapper/lvms-crypt-").then_some((253, 7));
        assert!(
            health(&made, "node-a", &r, &by_number, nosys, &devno)
                .unwrap()
                .abnormal
        );
        // Both problems at once, in one message.
        let h = health(&made, "node-a", &full, &failed, nosys, &no_devno).unwrap();
        assert!(h.message.contains("; "), "{}", h.message);

        let mut deleting = made.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(
            health(&deleting, "node-a", &report(&[]), &[], nosys, &no_devno),
            None
        );
    }

    #[test]
    fn create_thin_or_thick_with_rounded_size() {
        let a = decide(&lv("1000", ""), "node-a", Some(&class(true)), &report(&[]));
        assert_eq!(
            a,
            Action::Create {
                thin_pool: Some("pool".into()),
                size: 1024,
                raid: None,
                stripes: None,
            }
        );
        let a = decide(&lv("1Gi", ""), "node-a", Some(&class(false)), &report(&[]));
        assert_eq!(
            a,
            Action::Create {
                thin_pool: None,
                size: 1 << 30,
                raid: None,
                stripes: None,
            }
        );
        assert_eq!(
            decide(&lv("1Gi", ""), "node-b", Some(&class(true)), &report(&[])),
            Action::None,
            "another node's volume"
        );
    }

    #[test]
    fn converge_extend_and_vanished() {
        assert_eq!(
            decide(
                &lv("1Gi", ""),
                "node-a",
                Some(&class(true)),
                &report(&[("uid-1", 1 << 30)])
            ),
            Action::Report { size: 1 << 30 }
        );
        assert_eq!(
            decide(
                &lv("2Gi", ""),
                "node-a",
                Some(&class(true)),
                &report(&[("uid-1", 1 << 30)])
            ),
            Action::Extend { size: 2 << 30 }
        );
        let mut gone = lv("1Gi", "");
        gone.status = Some(LogicalVolumeStatus {
            volume_id: "uid-1".into(),
            ..Default::default()
        });
        assert!(matches!(
            decide(&gone, "node-a", Some(&class(true)), &report(&[])),
            Action::Fail {
                code: code::NOT_FOUND,
                ..
            }
        ));
    }

    #[test]
    fn snapshots_need_a_thin_class_and_a_source() {
        assert_eq!(
            decide(
                &lv("1Gi", "src"),
                "node-a",
                Some(&class(true)),
                &report(&[("src", 1 << 30)])
            ),
            Action::Snapshot {
                origin: "src".into()
            }
        );
        assert!(matches!(
            decide(
                &lv("1Gi", "src"),
                "node-a",
                Some(&class(false)),
                &report(&[("src", 1)])
            ),
            Action::Fail {
                code: code::INVALID_ARGUMENT,
                ..
            }
        ));
        assert!(matches!(
            decide(
                &lv("1Gi", "nope"),
                "node-a",
                Some(&class(true)),
                &report(&[])
            ),
            Action::Fail {
                code: code::NOT_FOUND,
                ..
            }
        ));
        assert!(matches!(
            decide(&lv("lots", ""), "node-a", Some(&class(true)), &report(&[])),
            Action::Fail {
                code: code::INVALID_ARGUMENT,
                ..
            }
        ));
    }

    #[test]
    fn no_more_than_the_ratio_allows() {
        // Pool 4 GiB × ratio 5 = 20 GiB, 3 GiB already promised.
        let r = report(&[("other", 3 << 30)]);
        assert!(matches!(
            decide(&lv("17Gi", ""), "node-a", Some(&class(true)), &r),
            Action::Create { .. }
        ));
        assert!(matches!(
            decide(&lv("18Gi", ""), "node-a", Some(&class(true)), &r),
            Action::Fail {
                code: code::RESOURCE_EXHAUSTED,
                ..
            }
        ));
        assert!(
            matches!(
                decide(&lv("11Gi", ""), "node-a", Some(&class(false)), &r),
                Action::Fail {
                    code: code::RESOURCE_EXHAUSTED,
                    ..
                }
            ),
            "thick: VG free"
        );
    }

    #[test]
    fn our_changes_are_recorded_in_whole_extents() {
        let mut r = report(&[("src", 1 << 30)]);
        r.vgs[0].extent_size = 4 << 20;
        let thick = lv("1000", "");
        let create = Action::Create {
            thin_pool: None,
            size: 1024,
            raid: None,
            stripes: None,
        };
        assert!(record(&mut r, &thick, &create));
        let made = r.lv("vg1", "uid-1").unwrap().clone();
        assert_eq!(made.size, 4 << 20, "rounded up to one extent");
        assert!(!made.is_thin_volume());
        assert!(made.has_tag("lvms.topolvm.io/logicalvolume=pvc-1"));
        assert_eq!(
            r.vgs[0].free,
            (10 << 30) - (4 << 20),
            "thick takes VG space"
        );
        assert!(record(&mut r, &thick, &Action::Extend { size: 9 << 20 }));
        assert_eq!(r.lv("vg1", "uid-1").unwrap().size, 12 << 20);
        assert_eq!(r.vgs[0].free, (10 << 30) - (12 << 20));
        assert!(record(&mut r, &thick, &Action::Remove { clear: None }));
        assert!(r.lv("vg1", "uid-1").is_none());
        assert_eq!(r.vgs[0].free, 10 << 30, "and gives it back");

        // A thin snapshot has its origin's size and pool; the VG's free space is the pool's.
        let snap = lv("1Gi", "src");
        assert!(record(
            &mut r,
            &snap,
            &Action::Snapshot {
                origin: "src".into()
            }
        ));
        let s = r.lv("vg1", "uid-1").unwrap();
        assert_eq!(
            (s.size, s.pool.as_str(), s.origin.as_str()),
            (1 << 30, "pool", "src")
        );
        assert_eq!(r.vgs[0].free, 10 << 30);
        assert!(
            !record(
                &mut r,
                &lv("1Gi", "gone"),
                &Action::Snapshot {
                    origin: "gone".into()
                }
            ),
            "an unknown origin cannot be recorded: read LVM again"
        );
        r.vgs[0].extent_size = 0;
        assert!(!record(&mut r, &thick, &create), "no extent size, no guess");
    }

    #[test]
    fn a_volume_layout_is_decided_on_the_node_s_physical_volumes() {
        use lvm::report::PhysicalVolume;
        use lvms_api::logical_volume::VolumeLayout;
        let with = |t: LayoutType, stripes: Option<i32>| {
            let mut l = lv("1Gi", "");
            l.spec.layout = Some(VolumeLayout {
                layout_type: t,
                stripes,
            });
            l
        };
        let mut r = report(&[]);
        r.vgs[0].extent_size = 4 << 20;
        let pv = |n: &str| PhysicalVolume {
            name: n.into(),
            vg_name: "vg1".into(),
            free: 5 << 30,
            ..Default::default()
        };
        r.pvs = vec![pv("/dev/vda")];
        let thick = class(false);
        match decide(&with(LayoutType::Mirror, None), "node-a", Some(&thick), &r) {
            Action::Fail { code, message } => {
                assert_eq!(code, code::INVALID_ARGUMENT);
                assert!(message.contains("needs 2 physical volumes"), "{message}");
            }
            a => panic!("{a:?}"),
        }
        r.pvs.push(pv("/dev/vdb"));
        assert_eq!(
            decide(&with(LayoutType::Mirror, None), "node-a", Some(&thick), &r),
            Action::Create {
                thin_pool: None,
                size: 1 << 30,
                raid: Some(layout::MIRROR),
                stripes: None,
            }
        );
        assert_eq!(
            decide(&with(LayoutType::Striped, None), "node-a", Some(&thick), &r),
            Action::Create {
                thin_pool: None,
                size: 1 << 30,
                raid: None,
                stripes: Some(2),
            }
        );
        assert_eq!(
            lvm_layout(None, Some(2)),
            Layout::Striped {
                stripes: 2,
                stripe_size: 64 << 10
            }
        );
        assert!(matches!(
            lvm_layout(Some(&layout::MIRROR), None),
            Layout::Raid {
                level: "raid1",
                mirrors: Some(1),
                stripes: None,
                ..
            }
        ));
        assert_eq!(
            decide(&with(LayoutType::Linear, None), "node-a", Some(&thick), &r),
            decide(&lv("1Gi", ""), "node-a", Some(&thick), &r),
            "linear is the default"
        );
        match decide(
            &with(LayoutType::Striped, None),
            "node-a",
            Some(&class(true)),
            &r,
        ) {
            Action::Fail { code, message } => {
                assert_eq!(code, code::INVALID_ARGUMENT);
                assert!(message.contains("device class vg1 is thin"), "{message}");
            }
            a => panic!("{a:?}"),
        }
        // Several PVs take the extents: the next decision reads LVM again.
        let create = decide(&with(LayoutType::Striped, None), "node-a", Some(&thick), &r);
        assert!(!record(
            &mut r.clone(),
            &with(LayoutType::Striped, None),
            &create
        ));
    }

    #[test]
    fn deletion_only_with_our_finalizer() {
        let mut d = lv("1Gi", "");
        d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(
            decide(&d, "node-a", Some(&class(true)), &report(&[])),
            Action::None
        );
        d.metadata.finalizers = Some(vec![LOGICAL_VOLUME_FINALIZER.into()]);
        assert_eq!(
            decide(&d, "node-a", Some(&class(true)), &report(&[("uid-1", 1)])),
            Action::Remove { clear: None },
            "a thin volume: the pool zeroes blocks on first use"
        );
    }

    #[test]
    fn a_thick_volume_is_cleared_as_its_class_says_before_removal() {
        let mut d = lv("1Gi", "");
        d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        d.metadata.finalizers = Some(vec![LOGICAL_VOLUME_FINALIZER.into()]);
        let mut r = report(&[]);
        r.lvs.push(Lv {
            name: "uid-1".into(),
            vg_name: "vg1".into(),
            attr: "-wi-a-----".into(),
            size: 1 << 30,
            ..Default::default()
        });
        let mut thick = class(false);
        let remove = |c: &LVMVolumeGroup, r: &Report| decide(&d, "node-a", Some(c), r);
        assert_eq!(
            remove(&thick, &r),
            Action::Remove {
                clear: Some(lvm::Clear::Zero)
            },
            "zero by default"
        );
        for (cleanup, clear) in [
            (VolumeCleanup::Discard, Some(lvm::Clear::Discard)),
            (VolumeCleanup::None, None),
        ] {
            thick.spec.volume_cleanup = Some(cleanup);
            assert_eq!(remove(&thick, &r), Action::Remove { clear });
        }
        // Gone already (a repeated removal), or inactive (no device to clear): nothing to clear.
        thick.spec.volume_cleanup = None;
        assert_eq!(remove(&thick, &report(&[])), Action::Remove { clear: None });
        r.lvs[1].attr = "-wi-------".into();
        assert_eq!(remove(&thick, &r), Action::Remove { clear: None });
    }
}
