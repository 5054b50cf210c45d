//! The health of a RAID class's volume group on this node, from one LVM report: which members
//! (physical volumes) are missing, and for every RAID volume its sync progress and lvm2's
//! health status. A volume that lost more images than its level tolerates has lost its data
//! (Failed); one running on fewer images, or out of sync with itself, is Degraded.

use lvm::Report;
use lvms_api::{RAIDHealthStatus, RAIDLVHealth, RAIDStatus, VGStatus, VGStatusType};

/// Whether a volume of this segment type with `images` images survives losing the images
/// numbered `lost`. raid10 (lvm2's is 2-way, "near" layout) keeps each stripe on images 2k and
/// 2k+1: it survives any losses that leave one image of every pair.
fn survives(segtype: &str, images: u32, lost: &[u32]) -> bool {
    let n = lost.len() as u32;
    if segtype == "raid1" {
        n < images
    } else if segtype == "raid10" {
        !lost.iter().any(|i| i % 2 == 0 && lost.contains(&(i + 1)))
    } else if segtype.starts_with("raid6") {
        n <= 2
    } else {
        n <= 1
    }
}

/// The image number of a sub-volume `[<lv>_rimage_<n>]`.
fn image_number(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
}

/// `None` when the VG does not exist (nothing to report yet).
pub fn status(report: &Report, vg: &str) -> Option<RAIDStatus> {
    let v = report.vg(vg)?;
    let lvs: Vec<_> = report.lvs_of(vg).collect();
    let mut any_failed = false;
    let mut any_degraded = v.missing_pv_count > 0;
    let mut lv_health = Vec::new();
    for lv in lvs.iter().filter(|l| l.is_raid()) {
        // Sub-volumes are listed as `[<lv>_rimage_<n>]`; those on a missing PV are partial.
        let prefix = format!("[{}_rimage_", lv.name);
        let images: Vec<_> = lvs
            .iter()
            .filter_map(|l| Some((image_number(&l.name, &prefix)?, *l)))
            .collect();
        let lost: Vec<u32> = images
            .iter()
            .filter(|(_, i)| i.is_partial())
            .map(|(n, _)| *n)
            .collect();
        let sync = lv.sync_percent.unwrap_or(100.0).clamp(0.0, 100.0);
        let health = lv.health_status.trim().to_string();
        if !survives(&lv.segtype, images.len() as u32, &lost) {
            any_failed = true;
        } else if !health.is_empty() || !lost.is_empty() || lv.is_partial() {
            any_degraded = true;
        }
        lv_health.push(RAIDLVHealth {
            name: lv.name.clone(),
            raid_type: lv.segtype.clone(),
            // Floor: 100 only once the volume is entirely in sync.
            sync_percent: sync.floor() as i32,
            health_status: health,
        });
    }
    let min_sync_percent = lv_health.iter().map(|h| h.sync_percent).min();
    Some(RAIDStatus {
        status: if any_failed {
            RAIDHealthStatus::Failed
        } else if any_degraded {
            RAIDHealthStatus::Degraded
        } else {
            RAIDHealthStatus::Healthy
        },
        member_count: v.pv_count as i32,
        degraded_member_count: v.missing_pv_count as i32,
        min_sync_percent,
        lv_health,
    })
}

/// The VG of a RAID class is not on this node (no member found). If this node reported RAID
/// health for it before, the VG existed and every member is lost: `status` becomes Failed with
/// the last known volumes, so the health gauge says 2 instead of vanishing. Without an earlier
/// report (a class not built yet) nothing changes. The earlier report is the only memory, so a
/// status object deleted meanwhile forgets it.
pub fn vanished(vg: &str, previous: Option<&VGStatus>, status: &mut VGStatus) {
    let Some(before) = previous.and_then(|p| p.raid_status.as_ref()) else {
        return;
    };
    let members = before.member_count;
    status.raid_status = Some(RAIDStatus {
        status: RAIDHealthStatus::Failed,
        member_count: members,
        degraded_member_count: members,
        min_sync_percent: None,
        lv_health: before
            .lv_health
            .iter()
            .map(|h| RAIDLVHealth {
                health_status: "missing".into(),
                ..h.clone()
            })
            .collect(),
    });
    let why = format!(
        "RAID volume group {vg} is gone from this node: none of its {members} physical volumes is present, and the data of its volumes is unavailable until the disks return"
    );
    status.status = VGStatusType::Failed;
    status.reason = if status.reason.is_empty() || status.reason.starts_with(&why) {
        why
    } else if status.reason.contains(&why) {
        status.reason.clone()
    } else {
        format!("{why} ({})", status.reason)
    };
}

/// A volume is (re)synchronising: `lvms_raid_sync_in_progress`.
pub fn syncing(status: &RAIDStatus) -> bool {
    status.min_sync_percent.is_some_and(|p| p < 100)
}

/// What the RAID health makes of the class's status: Failed or Degraded with the volumes named,
/// or `None` when it changes nothing.
pub fn verdict(vg: &str, status: &RAIDStatus) -> Option<(VGStatusType, String)> {
    let unhealthy: Vec<&str> = status
        .lv_health
        .iter()
        .filter(|h| !h.health_status.is_empty())
        .map(|h| h.name.as_str())
        .collect();
    let names = if unhealthy.is_empty() {
        "none yet".to_string()
    } else {
        unhealthy.join(", ")
    };
    let missing = status.degraded_member_count;
    match status.status {
        RAIDHealthStatus::Healthy => None,
        RAIDHealthStatus::Failed => Some((
            VGStatusType::Failed,
            format!(
                "RAID volume group {vg} lost more members than its RAID level tolerates ({missing} of {} physical volumes missing); the data of the affected volumes is unavailable until the disks return. Volumes: {}",
                status.member_count, names
            ),
        )),
        // A member is gone: replace it.
        RAIDHealthStatus::Degraded if missing > 0 => Some((
            VGStatusType::Degraded,
            format!(
                "RAID volume group {vg} is degraded ({missing} of {} physical volumes missing); volumes without full redundancy: {}. Replace the disk: add it to the volume group, run `lvconvert --repair {vg}/<volume>` for each, then `vgreduce --removemissing {vg}`",
                status.member_count, names
            ),
        )),
        // Every member is there, a volume is not using all of them (a disk came back) or its
        // copies disagree.
        RAIDHealthStatus::Degraded => Some((
            VGStatusType::Degraded,
            format!(
                "RAID volumes of {vg} need attention although every physical volume is present: {}. `refresh needed`: run `lvchange --refresh {vg}/<volume>` to take a returned disk back; `mismatches exist`: run `lvchange --syncaction repair {vg}/<volume>`",
                status
                    .lv_health
                    .iter()
                    .filter(|h| !h.health_status.is_empty())
                    .map(|h| format!("{} ({})", h.name, h.health_status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvm::report::{LogicalVolume, VolumeGroup};

    fn lv(name: &str, segtype: &str, attr: &str, health: &str, sync: Option<f64>) -> LogicalVolume {
        LogicalVolume {
            name: name.into(),
            vg_name: "r1".into(),
            segtype: segtype.into(),
            attr: attr.into(),
            health_status: health.into(),
            sync_percent: sync,
            ..Default::default()
        }
    }

    /// A raid1 volume `a` with two images, the second one `lost` if asked, syncing at `sync`.
    fn report(missing: u64, lost: &[bool], sync: f64) -> Report {
        let partial = lost.iter().any(|l| *l);
        let mut lvs = vec![lv(
            "a",
            "raid1",
            if partial { "rwi-a-r-p-" } else { "rwi-a-r---" },
            if partial { "partial" } else { "" },
            Some(sync),
        )];
        for (i, l) in lost.iter().enumerate() {
            lvs.push(lv(
                &format!("[a_rimage_{i}]"),
                "linear",
                if *l { "iwi-aor-p-" } else { "iwi-aor---" },
                if *l { "partial" } else { "" },
                None,
            ));
        }
        lvs.push(lv("plain", "linear", "-wi-a-----", "", None));
        Report {
            vgs: vec![VolumeGroup {
                name: "r1".into(),
                pv_count: 2,
                missing_pv_count: missing,
                ..Default::default()
            }],
            lvs,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_syncing_degraded_failed() {
        let s = status(&report(0, &[false, false], 100.0), "r1").unwrap();
        assert_eq!(s.status, RAIDHealthStatus::Healthy);
        assert_eq!((s.member_count, s.degraded_member_count), (2, 0));
        assert_eq!(s.lv_health.len(), 1, "only RAID volumes, no sub-volumes");
        assert_eq!(s.lv_health[0].raid_type, "raid1");
        assert_eq!(verdict("r1", &s), None);
        assert!(!syncing(&s));

        let s = status(&report(0, &[false, false], 42.7), "r1").unwrap();
        assert_eq!(
            (s.status, s.min_sync_percent),
            (RAIDHealthStatus::Healthy, Some(42))
        );
        assert!(syncing(&s), "an initial sync is progress, not damage");

        let s = status(&report(1, &[false, true], 100.0), "r1").unwrap();
        assert_eq!(s.status, RAIDHealthStatus::Degraded);
        assert_eq!(s.degraded_member_count, 1);
        assert_eq!(s.lv_health[0].health_status, "partial");
        let (st, why) = verdict("r1", &s).unwrap();
        assert_eq!(st, VGStatusType::Degraded);
        assert!(
            why.contains("volumes without full redundancy: a.")
                && why.contains("lvconvert --repair r1/<volume>"),
            "{why}"
        );

        let s = status(&report(2, &[true, true], 100.0), "r1").unwrap();
        assert_eq!(s.status, RAIDHealthStatus::Failed, "both copies gone");
        assert_eq!(verdict("r1", &s).unwrap().0, VGStatusType::Failed);
    }

    #[test]
    fn a_missing_member_degrades_even_without_volumes() {
        let mut r = report(1, &[], 100.0);
        r.lvs.retain(|l| l.name == "plain");
        let s = status(&r, "r1").unwrap();
        assert_eq!(
            (s.status, s.min_sync_percent),
            (RAIDHealthStatus::Degraded, None)
        );
        assert!(verdict("r1", &s).unwrap().1.contains("none yet"));
        assert!(status(&r, "nope").is_none());
    }

    #[test]
    fn levels_survive_what_their_redundancy_allows() {
        assert!(survives("raid1", 3, &[0, 2]) && !survives("raid1", 3, &[0, 1, 2]));
        assert!(survives("raid5", 4, &[3]) && !survives("raid5", 4, &[1, 3]));
        assert!(survives("raid6", 5, &[0, 4]) && !survives("raid6", 5, &[0, 2, 4]));
        // raid10: one image of every mirror pair (0-1, 2-3) must remain.
        assert!(survives("raid10", 4, &[0, 3]), "one of each pair lost");
        assert!(!survives("raid10", 4, &[2, 3]), "a whole pair lost");
        assert_eq!(image_number("[lv_rimage_12]", "[lv_rimage_"), Some(12));
        assert_eq!(image_number("[lv_rmeta_1]", "[lv_rimage_"), None);
    }

    #[test]
    fn a_vg_gone_whole_is_failed_only_if_it_was_reported_before() {
        let reported = VGStatus {
            name: "r1".into(),
            raid_status: status(&report(0, &[false, false], 100.0), "r1"),
            ..Default::default()
        };
        let not_found = || VGStatus {
            name: "r1".into(),
            status: VGStatusType::Failed,
            reason: "required device paths do not exist on this node: /dev/vda, /dev/vdb".into(),
            ..Default::default()
        };
        let mut st = not_found();
        vanished("r1", Some(&reported), &mut st);
        let raid = st.raid_status.clone().unwrap();
        assert_eq!(raid.status, RAIDHealthStatus::Failed);
        assert_eq!((raid.member_count, raid.degraded_member_count), (2, 2));
        assert_eq!(raid.lv_health[0].health_status, "missing");
        assert!(
            st.reason
                .starts_with("RAID volume group r1 is gone from this node")
                && st.reason.ends_with(
                    "(required device paths do not exist on this node: /dev/vda, /dev/vdb)"
                ),
            "{}",
            st.reason
        );
        // The next pass carries it on from its own report, without piling up reasons.
        let mut again = not_found();
        vanished("r1", Some(&st), &mut again);
        assert_eq!(again.reason, st.reason);
        assert_eq!(again.raid_status, st.raid_status);
        // A class never built has nothing to lose.
        let mut new = not_found();
        vanished("r1", Some(&not_found()), &mut new);
        assert_eq!((new.raid_status, new.reason), (None, not_found().reason));
    }

    #[test]
    fn a_returned_disk_is_refreshed_not_replaced() {
        let mut r = report(0, &[false, false], 100.0);
        r.lvs[0].health_status = "refresh needed".into();
        let s = status(&r, "r1").unwrap();
        assert_eq!(s.status, RAIDHealthStatus::Degraded);
        let (_, why) = verdict("r1", &s).unwrap();
        assert!(
            why.contains("a (refresh needed)") && why.contains("lvchange --refresh r1/"),
            "{why}"
        );
        assert!(!why.contains("vgreduce"), "{why}");
    }
}
