//! From one LVMVolumeGroup and what this node has (block devices, LVM's report) to the steps
//! that build its volume group and thin pool, and the status to report. Pure: every decision is
//! tested without LVM; [`apply`] runs the steps on real LVM (proven in the VM).

use std::collections::{BTreeMap, BTreeSet};

use lvm::eligibility::{Context, NOT_SELECTED, Verdict, judge};
use lvm::lsblk::BlockDevice;
use lvm::{Lvm, Report, ThinPoolSpec};
use lvms_api::{
    ChunkSizeCalculationPolicy, DeviceDiscoveryPolicy, DeviceDiscoveryPolicyStatus, ExcludedDevice,
    LVMVolumeGroupSpec, MetadataSizeCalculationPolicy, VGStatus, VGStatusType, quantity_bytes,
};

/// The tag that marks a volume group as ours. LVMS uses the same, so its VGs are adopted on
/// migration; a VG without it is never touched.
pub const OWNER_TAG: &str = "lvms";
/// The tag of a volume group this agent created (LVMS's do not have it). With no
/// deviceDiscoveryPolicy, such a VG keeps the devices it was created with (Static); an adopted
/// one keeps growing (Dynamic), as it did under LVMS. On the VG, so the rule survives the loss of
/// every Kubernetes object.
pub const CREATED_TAG: &str = "lvms.topolvm.io/discovery-default=Static";
/// Defaults of the Static policies (LVMS's values).
pub use lvms_api::lvmcluster::{DEFAULT_CHUNK_SIZE, DEFAULT_METADATA_SIZE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreateVg {
        devices: Vec<String>,
    },
    ExtendVg {
        devices: Vec<String>,
    },
    CreateThinPool(ThinPoolSpec),
    /// Grow the thin pool back to its share of a volume group that grew.
    ExtendThinPool {
        name: String,
        size_percent: u8,
    },
    /// Grow the thin pool's metadata to a metadataSize that was raised (Static policy).
    ExtendThinPoolMetadata {
        name: String,
        size: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The status once the steps succeed (or the failure that stops them all).
    pub status: VGStatus,
}

/// What the node has.
pub struct Observed<'a> {
    pub devices: &'a [BlockDevice],
    pub report: &'a Report,
    pub loops: &'a BTreeMap<String, String>,
    /// A selector path resolved to its device node (symlinks followed); `None` if it does not exist.
    pub resolve: &'a dyn Fn(&str) -> Option<String>,
    /// The devices' mount points are the agent container's own (see [`crate::discover`]).
    pub container_mounts: bool,
    /// Why RAID volumes cannot be made on this node (no dm-raid), if so.
    pub raid_unavailable: Option<&'a str>,
}

/// The discovery policy in effect: explicit paths make it moot; otherwise the spec's, or by
/// default Static for a VG we create and Dynamic for one that exists without our creation tag.
pub fn discovery_policy(
    spec: &LVMVolumeGroupSpec,
    vg: Option<&lvm::VolumeGroup>,
) -> DeviceDiscoveryPolicyStatus {
    let explicit = spec.device_selector.as_ref().is_some_and(|s| {
        s.paths.as_ref().is_some_and(|p| !p.is_empty())
            || s.optional_paths.as_ref().is_some_and(|p| !p.is_empty())
    });
    let static_ = match (explicit, spec.device_discovery_policy) {
        (true, _) => return DeviceDiscoveryPolicyStatus::Preconfigured,
        (false, Some(p)) => p == DeviceDiscoveryPolicy::Static,
        (false, None) => vg.is_none_or(|v| v.has_tag(CREATED_TAG)),
    };
    if static_ {
        DeviceDiscoveryPolicyStatus::RuntimeStatic
    } else {
        DeviceDiscoveryPolicyStatus::RuntimeDynamic
    }
}

/// A thin pool adopted from an older install that does not zero new blocks: still Ready (it
/// works), with the reason a user needs, since its thin volumes can read what deleted ones left.
fn unzeroed_pool(name: &str, spec: &LVMVolumeGroupSpec, report: &Report) -> String {
    let Some(tp) = &spec.thin_pool_config else {
        return String::new();
    };
    match report.lv(name, &tp.name) {
        Some(pool) if pool.is_thin_pool() && !pool.zeroes_new_blocks() => format!(
            "thin pool {name}/{} does not zero new blocks (created without --zero y): a new volume can read data a deleted one left; `lvchange --zero y {name}/{}` turns zeroing on",
            tp.name, tp.name
        ),
        _ => String::new(),
    }
}

/// The selector's `paths` and `optionalPaths`, and the required ones that do not resolve.
pub fn selector_paths<'a>(
    spec: &'a LVMVolumeGroupSpec,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> (Vec<&'a String>, Vec<&'a String>, Vec<&'a str>) {
    let sel = spec.device_selector.as_ref();
    let list = |l: Option<&'a Vec<String>>| l.into_iter().flatten().collect::<Vec<_>>();
    let required = list(sel.and_then(|s| s.paths.as_ref()));
    let optional = list(sel.and_then(|s| s.optional_paths.as_ref()));
    let missing = required
        .iter()
        .filter(|p| resolve(p).is_none())
        .map(|p| p.as_str())
        .collect();
    (required, optional, missing)
}

fn failed(name: &str, reason: String, excluded: Vec<ExcludedDevice>) -> Plan {
    Plan {
        steps: vec![],
        status: VGStatus {
            name: name.into(),
            status: VGStatusType::Failed,
            reason,
            excluded,
            ..Default::default()
        },
    }
}

pub fn plan(name: &str, spec: &LVMVolumeGroupSpec, node: &Observed) -> Plan {
    let vg = node.report.vg(name);
    let policy = discovery_policy(spec, vg);
    let mut p = plan_devices(name, spec, node, policy);
    p.status.device_discovery_policy = Some(policy);
    // RAID health whenever the VG exists, also when the class failed for another reason: the
    // gauges and alerts must not go quiet then. A failure already reported is not overridden.
    if spec.raid_config.is_some() {
        p.status.raid_status = crate::raid_health::status(node.report, name);
        let verdict = p
            .status
            .raid_status
            .as_ref()
            .and_then(|r| crate::raid_health::verdict(name, r));
        if let Some((status, reason)) = verdict
            && p.status.status != VGStatusType::Failed
        {
            p.status.status = status;
            p.status.reason = reason;
        }
    }
    p
}

fn plan_devices(
    name: &str,
    spec: &LVMVolumeGroupSpec,
    node: &Observed,
    policy: DeviceDiscoveryPolicyStatus,
) -> Plan {
    let vg = node.report.vg(name);
    if let (Some(_), Some(why)) = (&spec.raid_config, node.raid_unavailable) {
        return failed(name, why.to_string(), vec![]);
    }
    if let Some(vg) = vg
        && !vg.has_tag(OWNER_TAG)
    {
        let reason = format!(
            "volume group {name} already exists on this node and was not created by LVMS (no @{OWNER_TAG} tag): it is left alone"
        );
        return failed(name, reason, vec![]);
    }

    // Which devices the selector names, resolved; missing required ones fail the class.
    let (required, optional, missing) = selector_paths(spec, node.resolve);
    // A required path of a volume group that misses a member is that member (a pulled disk): the
    // class is degraded, not failed, and its remaining devices stay in use.
    let member_missing = vg.is_some_and(|v| v.missing_pv_count > 0);
    if !missing.is_empty() && !member_missing {
        return failed(
            name,
            format!(
                "required device paths do not exist on this node: {}",
                missing.join(", ")
            ),
            vec![],
        );
    }
    let optional_found: Vec<String> = optional.iter().filter_map(|p| (node.resolve)(p)).collect();
    if required.is_empty() && !optional.is_empty() && optional_found.is_empty() {
        let list: Vec<&str> = optional.iter().map(|p| p.as_str()).collect();
        return failed(
            name,
            format!(
                "none of the optionalPaths exists on this node: {}",
                list.join(", ")
            ),
            vec![],
        );
    }
    let required_devs: BTreeMap<String, &str> = required
        .iter()
        .filter_map(|p| Some(((node.resolve)(p)?, p.as_str())))
        .collect();
    let selected: Option<BTreeSet<String>> =
        (!required.is_empty() || !optional.is_empty()).then(|| {
            required_devs
                .keys()
                .cloned()
                .chain(optional_found)
                .collect()
        });

    let ctx = Context {
        vg: name,
        selected: selected.as_ref(),
        report: Some(node.report),
        loop_backing: Some(node.loops),
        container_mounts: node.container_mounts,
    };
    let verdicts = judge(node.devices, &ctx);
    let mut eligible = Vec::new();
    let mut in_vg: Vec<String> = node
        .report
        .pvs_of(name)
        .map(|p| p.name.clone())
        .filter(|n| !n.starts_with('['))
        .collect();
    let mut excluded = Vec::new();
    for (dev, v) in verdicts {
        match v {
            Verdict::Eligible => eligible.push(dev),
            Verdict::InVolumeGroup => {
                if !in_vg.contains(&dev) {
                    in_vg.push(dev)
                }
            }
            Verdict::Excluded(reasons) => {
                if let Some(path) = required_devs.get(&dev) {
                    let shown = if *path == dev {
                        dev.clone()
                    } else {
                        format!("{path} ({dev})")
                    };
                    let reason = format!(
                        "required device {shown} cannot be used: {}",
                        reasons.join("; ")
                    );
                    return failed(name, reason, vec![ExcludedDevice { name: dev, reasons }]);
                }
                excluded.push(ExcludedDevice { name: dev, reasons });
            }
        }
    }
    // Unselected devices are listed only when a selector exists; with none, everything is seen.
    excluded
        .retain(|e| !(e.reasons.len() == 1 && e.reasons[0] == NOT_SELECTED) || selected.is_some());
    // Static discovery: the VG keeps the devices it was created with.
    if vg.is_some() && policy == DeviceDiscoveryPolicyStatus::RuntimeStatic {
        for dev in eligible.drain(..) {
            excluded.push(ExcludedDevice {
                reasons: vec![format!(
                    "{dev} was not part of {name} at creation (static device discovery enabled)"
                )],
                name: dev,
            });
        }
        excluded.sort_by(|a, b| a.name.cmp(&b.name));
    }
    // A RAID level needs enough members: the VG's (missing ones too: they are being replaced,
    // not gone from the layout) and the devices about to join.
    if let Some(raid) = &spec.raid_config {
        let members = vg.map_or(0, |v| v.pv_count as u32);
        match vg {
            // A new VG: the devices found must make the level.
            None => {
                if let Some(why) = raid.check_devices(eligible.len() as u32) {
                    return failed(name, why, excluded);
                }
            }
            // An existing one keeps working; newcomers join only as many as keep the level
            // valid (raid10: in pairs), the others wait with the reason.
            Some(_) => {
                let fits = (0..=eligible.len())
                    .rev()
                    .find(|n| raid.check_devices(members + *n as u32).is_none())
                    .unwrap_or(0);
                if fits < eligible.len() {
                    let why = raid
                        .check_devices(members + eligible.len() as u32)
                        .unwrap_or_default();
                    for dev in eligible.drain(fits..) {
                        excluded.push(ExcludedDevice {
                            name: dev,
                            reasons: vec![format!("cannot join the RAID volume group now: {why}")],
                        });
                    }
                }
            }
        }
    }

    let mut steps = Vec::new();
    match vg {
        None if eligible.is_empty() => {
            return failed(
                name,
                "no available devices: every device on this node was excluded (see excluded)"
                    .into(),
                excluded,
            );
        }
        None => steps.push(Step::CreateVg {
            devices: eligible.clone(),
        }),
        Some(_) if !eligible.is_empty() => steps.push(Step::ExtendVg {
            devices: eligible.clone(),
        }),
        Some(_) => {}
    }
    if let Some(tp) = &spec.thin_pool_config {
        match node.report.lv(name, &tp.name) {
            Some(lv) if !lv.is_thin_pool() => {
                return failed(
                    name,
                    format!(
                        "logical volume {name}/{} exists and is not a thin pool",
                        tp.name
                    ),
                    excluded,
                );
            }
            Some(lv) => {
                // The VG grew (day 2): the pool follows, to its percentage of the new size. A
                // 1 % tolerance absorbs extent rounding, so a converged pool plans nothing.
                let vg_size = vg.map(|v| v.size).unwrap_or(0)
                    + eligible
                        .iter()
                        .filter_map(|d| {
                            node.devices
                                .iter()
                                .flat_map(|b| b.walk())
                                .find(|b| &b.name == d)
                        })
                        .map(|b| b.size)
                        .sum::<u64>();
                let target = vg_size / 100 * tp.size_percent.clamp(1, 100) as u64;
                if lv.size + vg_size / 100 < target {
                    steps.push(Step::ExtendThinPool {
                        name: tp.name.clone(),
                        size_percent: tp.size_percent.clamp(1, 100) as u8,
                    });
                }
                // metadataSize may only grow (a CRD rule); a raised one is applied to the pool
                // that exists. lvm2 rounds up to whole extents, so a converged pool is at least
                // as large and plans nothing.
                if let (Some(want), Some(have)) =
                    (thin_pool_spec(tp).metadata_size, lv.metadata_size)
                    && have < want
                {
                    steps.push(Step::ExtendThinPoolMetadata {
                        name: tp.name.clone(),
                        size: want,
                    });
                }
            }
            None => steps.push(Step::CreateThinPool(thin_pool_spec(tp))),
        }
    }
    let mut devices = in_vg;
    devices.extend(eligible);
    devices.sort();
    let missing_pvs = vg.map(|v| v.missing_pv_count).unwrap_or(0);
    let (status, reason) = if missing_pvs > 0 {
        (
            VGStatusType::Degraded,
            format!("volume group {name} is missing {missing_pvs} physical volume(s)"),
        )
    } else {
        (VGStatusType::Ready, unzeroed_pool(name, spec, node.report))
    };
    Plan {
        steps,
        status: VGStatus {
            name: name.into(),
            status,
            reason,
            devices,
            excluded,
            ..Default::default()
        },
    }
}

pub fn thin_pool_spec(tp: &lvms_api::ThinPoolConfig) -> ThinPoolSpec {
    let q = |v: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, default: u64| {
        v.as_ref()
            .and_then(|q| quantity_bytes(&q.0))
            .unwrap_or(default)
    };
    ThinPoolSpec {
        name: tp.name.clone(),
        size_percent: tp.size_percent.clamp(1, 100) as u8,
        chunk_size: match tp.chunk_size_calculation_policy {
            ChunkSizeCalculationPolicy::Static => Some(q(&tp.chunk_size, DEFAULT_CHUNK_SIZE)),
            ChunkSizeCalculationPolicy::Host => None,
        },
        metadata_size: match tp.metadata_size_calculation_policy {
            MetadataSizeCalculationPolicy::Static => {
                Some(q(&tp.metadata_size, DEFAULT_METADATA_SIZE))
            }
            MetadataSizeCalculationPolicy::Host => None,
        },
    }
}

/// Runs the steps in order; the first failure stops and is returned with the step that failed.
pub fn apply(lvm: &Lvm, name: &str, steps: &[Step]) -> Result<(), String> {
    for step in steps {
        let result = match step {
            Step::CreateVg { devices } => {
                for d in devices {
                    // An orphan PV is already initialised; anything else gets pvcreate (which
                    // refuses a device with a signature: the last guard against data loss).
                    match lvm.pvcreate(d) {
                        Ok(()) => {}
                        Err(e) if e.is_already_exists() => {}
                        Err(e) => return Err(format!("pvcreate {d}: {e}")),
                    }
                }
                lvm.vgcreate_tagged(name, devices, &[OWNER_TAG, CREATED_TAG])
            }
            Step::ExtendVg { devices } => lvm.vgextend(name, devices),
            Step::CreateThinPool(spec) => lvm.create_thin_pool(name, spec),
            Step::ExtendThinPool {
                name: pool,
                size_percent,
            } => lvm.extend_to_percent(name, pool, *size_percent),
            Step::ExtendThinPoolMetadata { name: pool, size } => {
                lvm.extend_pool_metadata(name, pool, *size)
            }
        };
        result.map_err(|e| format!("{step:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvm::report::{LogicalVolume, PhysicalVolume, VolumeGroup};
    use lvms_api::{DeviceSelector, ThinPoolConfig};

    fn disk(name: &str, fstype: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            kname: name.into(),
            kind: "disk".into(),
            size: 1 << 30,
            fstype: fstype.into(),
            ..Default::default()
        }
    }

    fn thin_spec(paths: Option<Vec<&str>>, optional: Option<Vec<&str>>) -> LVMVolumeGroupSpec {
        let list = |v: Option<Vec<&str>>| v.map(|v| v.into_iter().map(String::from).collect());
        LVMVolumeGroupSpec {
            device_selector: (paths.is_some() || optional.is_some()).then(|| DeviceSelector {
                paths: list(paths),
                optional_paths: list(optional),
                ..Default::default()
            }),
            thin_pool_config: Some(ThinPoolConfig {
                name: "pool".into(),
                size_percent: 90,
                overprovision_ratio: 10,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(spec: &LVMVolumeGroupSpec, devices: &[BlockDevice], report: &Report) -> Plan {
        let loops = BTreeMap::new();
        let names: BTreeSet<String> = devices.iter().map(|d| d.name.clone()).collect();
        let resolve = move |p: &str| {
            let p = p.replace("/dev/disk/by-id/virtio-", "/dev/");
            names.contains(&p).then_some(p)
        };
        plan(
            "vg1",
            spec,
            &Observed {
                devices,
                report,
                loops: &loops,
                resolve: &resolve,
                container_mounts: false,
                raid_unavailable: None,
            },
        )
    }

    #[test]
    fn blank_disks_become_a_tagged_vg_and_a_static_thin_pool() {
        let devices = [
            disk("/dev/sdb", ""),
            disk("/dev/sdc", ""),
            disk("/dev/sda", "ext4"),
        ];
        let p = run(&thin_spec(None, None), &devices, &Report::default());
        assert_eq!(
            p.steps[0],
            Step::CreateVg {
                devices: vec!["/dev/sdb".into(), "/dev/sdc".into()]
            }
        );
        assert_eq!(
            p.steps[1],
            Step::CreateThinPool(ThinPoolSpec {
                name: "pool".into(),
                size_percent: 90,
                chunk_size: Some(DEFAULT_CHUNK_SIZE),
                metadata_size: None
            })
        );
        assert_eq!(p.status.status, VGStatusType::Ready);
        assert_eq!(p.status.devices, ["/dev/sdb", "/dev/sdc"]);
        assert_eq!(
            p.status.excluded,
            [ExcludedDevice {
                name: "/dev/sda".into(),
                reasons: vec!["has a filesystem signature (ext4)".into()]
            }]
        );
    }

    #[test]
    fn missing_required_path_fails_with_the_path() {
        let p = run(
            &thin_spec(Some(vec!["/dev/sdb", "/dev/nvme9n1"]), None),
            &[disk("/dev/sdb", "")],
            &Report::default(),
        );
        assert!(p.steps.is_empty());
        assert_eq!(p.status.status, VGStatusType::Failed);
        assert_eq!(
            p.status.reason,
            "required device paths do not exist on this node: /dev/nvme9n1"
        );
    }

    #[test]
    fn a_required_disk_with_data_fails_and_is_not_touched() {
        let p = run(
            &thin_spec(Some(vec!["/dev/disk/by-id/virtio-sdb"]), None),
            &[disk("/dev/sdb", "xfs")],
            &Report::default(),
        );
        assert!(p.steps.is_empty());
        assert!(p.status.reason.contains("required device /dev/disk/by-id/virtio-sdb (/dev/sdb) cannot be used: has a filesystem signature (xfs)"), "{}", p.status.reason);
    }

    #[test]
    fn optional_paths_need_at_least_one() {
        let p = run(
            &thin_spec(None, Some(vec!["/dev/sdx", "/dev/sdy"])),
            &[disk("/dev/sdb", "")],
            &Report::default(),
        );
        assert_eq!(
            p.status.reason,
            "none of the optionalPaths exists on this node: /dev/sdx, /dev/sdy"
        );
        let p = run(
            &thin_spec(None, Some(vec!["/dev/sdx", "/dev/sdb"])),
            &[disk("/dev/sdb", ""), disk("/dev/sdc", "")],
            &Report::default(),
        );
        assert_eq!(
            p.steps[0],
            Step::CreateVg {
                devices: vec!["/dev/sdb".into()]
            }
        );
        assert_eq!(p.status.excluded[0].reasons, [NOT_SELECTED]);
    }

    #[test]
    fn nothing_usable_fails_with_every_reason() {
        let p = run(
            &thin_spec(None, None),
            &[disk("/dev/sdb", "xfs")],
            &Report::default(),
        );
        assert_eq!(p.status.status, VGStatusType::Failed);
        assert!(p.status.reason.starts_with("no available devices"));
        assert_eq!(p.status.excluded.len(), 1);
    }

    fn report_with_vg(tags: &[&str], pool: bool) -> Report {
        Report {
            vgs: vec![VolumeGroup {
                name: "vg1".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }],
            pvs: vec![PhysicalVolume {
                name: "/dev/sdb".into(),
                vg_name: "vg1".into(),
                ..Default::default()
            }],
            lvs: if pool {
                vec![LogicalVolume {
                    name: "pool".into(),
                    vg_name: "vg1".into(),
                    attr: "twi-aotz--".into(),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn an_adopted_pool_that_does_not_zero_is_reported() {
        let devices = [disk("/dev/sdb", "LVM2_member")];
        let mut r = report_with_vg(&[OWNER_TAG], true);
        let spec = thin_spec(Some(vec!["/dev/sdb"]), None);
        assert_eq!(
            run(&spec, &devices, &r).status.reason,
            "",
            "ours zeroes (attr z)"
        );
        r.lvs[0].attr = "twi-aot---".into();
        let p = run(&spec, &devices, &r);
        assert_eq!(
            p.status.status,
            VGStatusType::Ready,
            "it works: reported, not failed"
        );
        assert!(
            p.status.reason.contains("does not zero new blocks"),
            "{}",
            p.status.reason
        );
        assert!(
            p.status.reason.contains("lvchange --zero y vg1/pool"),
            "{}",
            p.status.reason
        );
    }

    #[test]
    fn converged_state_plans_nothing_and_a_new_disk_extends() {
        let devices = [disk("/dev/sdb", "LVM2_member"), disk("/dev/sdc", "")];
        let r = report_with_vg(&[OWNER_TAG], true);
        let p = run(&thin_spec(Some(vec!["/dev/sdb"]), None), &devices, &r);
        assert_eq!(p.steps, []);
        assert_eq!(p.status.devices, ["/dev/sdb"]);
        let p = run(
            &thin_spec(Some(vec!["/dev/sdb", "/dev/sdc"]), None),
            &devices,
            &r,
        );
        assert_eq!(
            p.steps[0],
            Step::ExtendVg {
                devices: vec!["/dev/sdc".into()]
            }
        );
        assert_eq!(
            p.steps[1],
            Step::ExtendThinPool {
                name: "pool".into(),
                size_percent: 90
            },
            "the pool follows the VG"
        );
        assert_eq!(p.status.devices, ["/dev/sdb", "/dev/sdc"]);
    }

    #[test]
    fn a_foreign_vg_of_the_same_name_is_not_adopted() {
        let p = run(
            &thin_spec(None, None),
            &[disk("/dev/sdc", "")],
            &report_with_vg(&["someone"], false),
        );
        assert!(p.steps.is_empty());
        assert!(
            p.status.reason.contains("was not created by LVMS"),
            "{}",
            p.status.reason
        );
    }

    #[test]
    fn missing_pvs_degrade() {
        let mut r = report_with_vg(&[OWNER_TAG], true);
        r.vgs[0].missing_pv_count = 1;
        let p = run(
            &thin_spec(None, None),
            &[disk("/dev/sdb", "LVM2_member")],
            &r,
        );
        assert_eq!(p.status.status, VGStatusType::Degraded);
    }

    #[test]
    fn a_raised_metadata_size_grows_the_pools_metadata() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let devices = [disk("/dev/sdb", "LVM2_member")];
        let mut r = report_with_vg(&[OWNER_TAG], true);
        r.lvs[0].metadata_size = Some(1 << 30);
        let with = |policy, size: Option<&str>| {
            let mut spec = thin_spec(None, None);
            let tp = spec.thin_pool_config.as_mut().unwrap();
            tp.metadata_size_calculation_policy = policy;
            tp.metadata_size = size.map(|s| Quantity(s.into()));
            spec
        };
        let static_ = MetadataSizeCalculationPolicy::Static;
        assert_eq!(run(&with(static_, Some("1Gi")), &devices, &r).steps, []);
        assert_eq!(
            run(&with(static_, None), &devices, &r).steps,
            [],
            "the default (1Gi) is what the pool has"
        );
        assert_eq!(
            run(&with(static_, Some("2Gi")), &devices, &r).steps,
            [Step::ExtendThinPoolMetadata {
                name: "pool".into(),
                size: 2 << 30
            }]
        );
        assert_eq!(
            run(&with(static_, Some("512Mi")), &devices, &r).steps,
            [],
            "never shrinks"
        );
        assert_eq!(
            run(
                &with(MetadataSizeCalculationPolicy::Host, Some("2Gi")),
                &devices,
                &r
            )
            .steps,
            [],
            "the Host policy leaves the size to lvm2"
        );
    }

    #[test]
    fn pool_sizes_follow_the_policies() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut tp = ThinPoolConfig {
            name: "p".into(),
            size_percent: 80,
            overprovision_ratio: 1,
            ..Default::default()
        };
        tp.chunk_size = Some(Quantity("256Ki".into()));
        tp.metadata_size_calculation_policy = MetadataSizeCalculationPolicy::Static;
        let s = thin_pool_spec(&tp);
        assert_eq!(
            (s.size_percent, s.chunk_size, s.metadata_size),
            (80, Some(262144), Some(DEFAULT_METADATA_SIZE))
        );
        tp.chunk_size_calculation_policy = ChunkSizeCalculationPolicy::Host;
        assert_eq!(thin_pool_spec(&tp).chunk_size, None);
    }

    #[test]
    fn discovery_policy_by_spec_paths_and_creation() {
        let created = VolumeGroup {
            name: "vg1".into(),
            tags: vec![OWNER_TAG.into(), CREATED_TAG.into()],
            ..Default::default()
        };
        let adopted = VolumeGroup {
            tags: vec![OWNER_TAG.into()],
            ..created.clone()
        };
        let mut spec = thin_spec(None, None);
        use DeviceDiscoveryPolicyStatus::*;
        assert_eq!(discovery_policy(&spec, None), RuntimeStatic, "new VG");
        assert_eq!(discovery_policy(&spec, Some(&created)), RuntimeStatic);
        assert_eq!(
            discovery_policy(&spec, Some(&adopted)),
            RuntimeDynamic,
            "LVMS's VG keeps growing"
        );
        spec.device_discovery_policy = Some(DeviceDiscoveryPolicy::Dynamic);
        assert_eq!(discovery_policy(&spec, Some(&created)), RuntimeDynamic);
        spec.device_discovery_policy = Some(DeviceDiscoveryPolicy::Static);
        assert_eq!(discovery_policy(&spec, Some(&adopted)), RuntimeStatic);
        let paths = LVMVolumeGroupSpec {
            device_discovery_policy: Some(DeviceDiscoveryPolicy::Dynamic),
            ..thin_spec(Some(vec!["/dev/sdb"]), None)
        };
        assert_eq!(discovery_policy(&paths, None), Preconfigured);
    }

    #[test]
    fn static_discovery_keeps_new_disks_out_and_dynamic_takes_them() {
        let devices = [disk("/dev/sdb", "LVM2_member"), disk("/dev/sdc", "")];
        let mut r = report_with_vg(&[OWNER_TAG, CREATED_TAG], true);
        r.vgs[0].pv_count = 1;
        let p = run(&thin_spec(None, None), &devices, &r);
        assert_eq!(p.steps, [], "nothing joins");
        assert_eq!(
            p.status.excluded,
            [ExcludedDevice {
                name: "/dev/sdc".into(),
                reasons: vec![
                    "/dev/sdc was not part of vg1 at creation (static device discovery enabled)"
                        .into()
                ]
            }]
        );
        assert_eq!(
            p.status.device_discovery_policy,
            Some(DeviceDiscoveryPolicyStatus::RuntimeStatic)
        );
        assert_eq!(p.status.status, VGStatusType::Ready);
        let dynamic = LVMVolumeGroupSpec {
            device_discovery_policy: Some(DeviceDiscoveryPolicy::Dynamic),
            ..thin_spec(None, None)
        };
        let p = run(&dynamic, &devices, &r);
        assert_eq!(
            p.steps[0],
            Step::ExtendVg {
                devices: vec!["/dev/sdc".into()]
            }
        );
        assert!(p.status.excluded.is_empty());
        // A new VG under Static takes every device eligible at creation.
        let p = run(
            &thin_spec(None, None),
            &[disk("/dev/sdb", ""), disk("/dev/sdc", "")],
            &Report::default(),
        );
        assert_eq!(
            p.steps[0],
            Step::CreateVg {
                devices: vec!["/dev/sdb".into(), "/dev/sdc".into()]
            }
        );
    }

    fn raid_spec(paths: Vec<&str>, t: lvms_api::RAIDType) -> LVMVolumeGroupSpec {
        LVMVolumeGroupSpec {
            raid_config: Some(lvms_api::RAIDConfig {
                raid_type: t,
                mirrors: None,
                stripes: None,
                stripe_size: None,
            }),
            thin_pool_config: None,
            ..thin_spec(Some(paths), None)
        }
    }

    #[test]
    fn raid_needs_enough_devices_and_dm_raid() {
        use lvms_api::RAIDType::Raid5;
        let devices = [
            disk("/dev/sdb", ""),
            disk("/dev/sdc", ""),
            disk("/dev/sdd", ""),
        ];
        let p = run(
            &raid_spec(vec!["/dev/sdb", "/dev/sdc", "/dev/sdd"], Raid5),
            &devices,
            &Report::default(),
        );
        assert_eq!(
            p.steps,
            [Step::CreateVg {
                devices: vec!["/dev/sdb".into(), "/dev/sdc".into(), "/dev/sdd".into()]
            }],
            "a thick VG, no pool"
        );
        // Two of three optional paths present: too few for raid5, nothing is created.
        let spec = LVMVolumeGroupSpec {
            device_selector: Some(DeviceSelector {
                optional_paths: Some(vec![
                    "/dev/sdb".into(),
                    "/dev/sdc".into(),
                    "/dev/sdx".into(),
                ]),
                ..Default::default()
            }),
            ..raid_spec(vec![], Raid5)
        };
        let p = run(&spec, &devices, &Report::default());
        assert!(p.steps.is_empty());
        assert_eq!(p.status.status, VGStatusType::Failed);
        assert_eq!(p.status.reason, "raid5 requires at least 3 devices, got 2");

        let loops = BTreeMap::new();
        let resolve = |p: &str| Some(p.to_string());
        let p = plan(
            "vg1",
            &raid_spec(vec!["/dev/sdb", "/dev/sdc", "/dev/sdd"], Raid5),
            &Observed {
                devices: &devices,
                report: &Report::default(),
                loops: &loops,
                resolve: &resolve,
                container_mounts: false,
                raid_unavailable: Some("the dm-raid kernel module is not available on this node"),
            },
        );
        assert!(p.steps.is_empty());
        assert_eq!(
            (p.status.status, p.status.reason.as_str()),
            (
                VGStatusType::Failed,
                "the dm-raid kernel module is not available on this node"
            )
        );
    }

    #[test]
    fn a_degraded_raid_volume_degrades_the_class_with_its_name() {
        use lvms_api::RAIDType::Raid1;
        let devices = [disk("/dev/sdb", "LVM2_member")];
        let mut r = report_with_vg(&[OWNER_TAG], false);
        r.vgs[0].pv_count = 2;
        r.vgs[0].missing_pv_count = 1;
        r.lvs = vec![
            LogicalVolume {
                name: "uid-1".into(),
                vg_name: "vg1".into(),
                attr: "rwi-a-r-p-".into(),
                segtype: "raid1".into(),
                health_status: "partial".into(),
                sync_percent: Some(100.0),
                ..Default::default()
            },
            LogicalVolume {
                name: "[uid-1_rimage_0]".into(),
                vg_name: "vg1".into(),
                attr: "iwi-aor---".into(),
                ..Default::default()
            },
            LogicalVolume {
                name: "[uid-1_rimage_1]".into(),
                vg_name: "vg1".into(),
                attr: "iwi-aor-p-".into(),
                health_status: "partial".into(),
                ..Default::default()
            },
        ];
        let p = run(&raid_spec(vec!["/dev/sdb"], Raid1), &devices, &r);
        assert_eq!(p.steps, []);
        assert_eq!(p.status.status, VGStatusType::Degraded);
        assert!(p.status.reason.contains("uid-1"), "{}", p.status.reason);
        let raid = p.status.raid_status.unwrap();
        assert_eq!((raid.member_count, raid.degraded_member_count), (2, 1));
        assert_eq!(raid.lv_health[0].health_status, "partial");
    }

    #[test]
    fn raid10_takes_newcomers_in_pairs_and_keeps_working() {
        use lvms_api::RAIDType::Raid10;
        let members = ["/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde"];
        let mut r = report_with_vg(&[OWNER_TAG], false);
        r.vgs[0].pv_count = 4;
        r.pvs = members
            .iter()
            .map(|m| PhysicalVolume {
                name: m.to_string(),
                vg_name: "vg1".into(),
                ..Default::default()
            })
            .collect();
        let mut devices: Vec<BlockDevice> =
            members.iter().map(|m| disk(m, "LVM2_member")).collect();
        devices.push(disk("/dev/sdf", ""));
        let spec = LVMVolumeGroupSpec {
            device_selector: Some(DeviceSelector {
                optional_paths: Some(
                    [
                        "/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde", "/dev/sdf", "/dev/sdg",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                ..Default::default()
            }),
            ..raid_spec(vec![], Raid10)
        };
        let p = run(&spec, &devices, &r);
        assert_eq!(p.steps, [], "a fifth disk would leave raid10 odd");
        assert_eq!(p.status.status, VGStatusType::Ready, "{}", p.status.reason);
        assert_eq!(p.status.excluded[0].name, "/dev/sdf");
        assert!(
            p.status.excluded[0].reasons[0].contains("divisible by 2, got 5"),
            "{:?}",
            p.status.excluded
        );
        devices.push(disk("/dev/sdg", ""));
        let p = run(&spec, &devices, &r);
        assert_eq!(
            p.steps,
            [Step::ExtendVg {
                devices: vec!["/dev/sdf".into(), "/dev/sdg".into()]
            }],
            "a pair joins"
        );
    }
}
