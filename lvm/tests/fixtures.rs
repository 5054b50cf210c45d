//! The parsers on outputs recorded from real lvm2 and lsblk in the VM (tests/vm/record-fixtures.sh),
//! and the eligibility rules on the recorded devices.

use std::collections::{BTreeMap, BTreeSet};

use lvm::eligibility::{Context, NOT_SELECTED, Verdict, judge};
use lvm::{lsblk, report};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn empty_report() {
    let r = report::parse(&fixture("report-empty.json")).unwrap();
    assert!(r.vgs.is_empty() && r.pvs.is_empty() && r.lvs.is_empty());
}

#[test]
fn orphan_pv() {
    let r = report::parse(&fixture("report-orphan-pv.json")).unwrap();
    assert!(r.vgs.is_empty());
    let pv = r.pv("/dev/vdc").unwrap();
    assert_eq!(
        (pv.vg_name.as_str(), pv.size, pv.free),
        ("", 536870912, 536870912)
    );
}

#[test]
fn empty_vg_with_tag() {
    let r = report::parse(&fixture("report-empty-vg.json")).unwrap();
    let vg = r.vg("vg1").unwrap();
    assert!(vg.has_tag("lvms-rs"));
    assert_eq!((vg.pv_count, vg.lv_count, vg.extent_size), (2, 0, 4194304));
    assert_eq!(vg.size, vg.free);
    assert_eq!(r.pvs_of("vg1").count(), 2);
    assert_eq!(
        r.pv("/dev/vdc").unwrap().vg_name,
        "",
        "the orphan is listed in its own section"
    );
}

#[test]
fn thin_pool_with_volumes_and_snapshot() {
    let r = report::parse(&fixture("report-thin.json")).unwrap();
    let pool = r.lv("vg1", "pool").unwrap();
    assert!(pool.is_thin_pool() && pool.is_active());
    assert_eq!(pool.segtype, "thin-pool");
    assert_eq!(pool.chunk_size, Some(65536));
    assert_eq!(pool.metadata_size, Some(4194304));
    assert!(pool.data_percent.unwrap() > 0.0 && pool.metadata_percent.unwrap() > 0.0);
    let thin = r.lv("vg1", "thin1").unwrap();
    assert!(thin.is_thin_volume() && !thin.is_internal());
    assert_eq!(
        (thin.pool.as_str(), thin.size, thin.chunk_size),
        ("pool", 314572800, None)
    );
    assert!(thin.has_tag("lvms.topolvm.io/lv=pvc-1"));
    let snap = r.lv("vg1", "snap1").unwrap();
    assert_eq!(snap.origin, "thin1");
    assert!(snap.is_active(), "created with --setactivationskip n");
    assert_eq!(r.lvs_of("vg1").filter(|l| l.is_thin_volume()).count(), 3);
    assert_eq!(r.lv("vg1", "thin2").unwrap().data_percent, Some(0.0));
}

#[test]
fn thin_and_thick_volume_groups() {
    let r = report::parse(&fixture("report-thin-and-thick.json")).unwrap();
    assert_eq!(
        r.vgs.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["vg1", "vg2"]
    );
    let thick = r.lv("vg2", "thick1").unwrap();
    assert_eq!((thick.segtype.as_str(), thick.size), ("linear", 67108864));
    assert!(!thick.is_thin_volume() && !thick.is_thin_pool());
    assert_eq!(thick.dm_path, "/dev/mapper/vg2-thick1");
    assert!(!r.vg("vg2").unwrap().has_tag("lvms-rs"));
}

#[test]
fn missing_pv() {
    let r = report::parse(&fixture("report-missing-pv.json")).unwrap();
    assert_eq!(r.vg("vgm").unwrap().missing_pv_count, 1);
    let missing: Vec<_> = r.pvs.iter().filter(|p| p.missing).collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].name, "[unknown]");
    let lv = r.lv("vgm", "lv1").unwrap();
    assert!(!lv.is_active());
}

#[test]
fn lsblk_tree() {
    let devs = lsblk::parse(&fixture("lsblk.json")).unwrap();
    let names: Vec<_> = devs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"
        ]
    );
    let vda = &devs[0];
    assert_eq!(
        (
            vda.kind.as_str(),
            vda.size,
            vda.fstype.as_str(),
            vda.serial.as_str()
        ),
        ("disk", 1073741824, "LVM2_member", "lvmsvm0")
    );
    assert!(
        vda.walk()
            .iter()
            .any(|d| d.name == "/dev/mapper/vg1-thin1" && d.fstype == "xfs")
    );
    assert_eq!(devs[3].children[0].partlabel, "BIOS boot");
    assert!(devs[5].ro);
    assert!(
        devs.iter().all(|d| d.mountpoints.is_empty()),
        "[null] mountpoints mean none"
    );
}

#[test]
fn eligibility_on_recorded_devices() {
    let devs = lsblk::parse(&fixture("lsblk.json")).unwrap();
    let r = report::parse(&fixture("report-thin-and-thick.json")).unwrap();
    let loops = BTreeMap::new();
    let ctx = Context {
        vg: "vg1",
        selected: None,
        report: Some(&r),
        loop_backing: Some(&loops),
        container_mounts: false,
    };
    let v: BTreeMap<String, Verdict> = judge(&devs, &ctx).into_iter().collect();
    assert_eq!(v["/dev/vda"], Verdict::InVolumeGroup);
    assert_eq!(v["/dev/vdb"], Verdict::InVolumeGroup);
    let reasons = |d: &str| match &v[d] {
        Verdict::Excluded(r) => r.join("; "),
        other => panic!("{d}: {other:?}"),
    };
    assert!(
        reasons("/dev/vdc").contains("physical volume of another volume group (vg2)"),
        "{}",
        reasons("/dev/vdc")
    );
    assert!(reasons("/dev/vdd").contains("has children (partitions)"));
    assert!(reasons("/dev/vde").contains("has a filesystem signature (ext4)"));
    assert!(reasons("/dev/vdf").contains("read-only"));

    // With an explicit selector: unselected devices say so; a selected BIOS partition is refused.
    let selected: BTreeSet<String> = ["/dev/vdd1".to_string(), "/dev/vdd2".to_string()].into();
    let ctx = Context {
        vg: "vg3",
        selected: Some(&selected),
        report: Some(&r),
        loop_backing: None,
        container_mounts: false,
    };
    let v: BTreeMap<String, Verdict> = judge(&devs, &ctx).into_iter().collect();
    assert!(matches!(&v["/dev/vdf"], Verdict::Excluded(r) if r[0] == NOT_SELECTED));
    assert_eq!(v["/dev/vdd2"], Verdict::Eligible);
    assert!(
        matches!(&v["/dev/vdd1"], Verdict::Excluded(r) if r.iter().any(|x| x.contains("bios"))),
        "{:?}",
        v["/dev/vdd1"]
    );
    // vg1's disks are another VG's PVs from vg3's point of view.
    assert!(
        matches!(&v["/dev/vda"], Verdict::Excluded(r) if r.iter().any(|x| x.contains("another volume group (vg1)")))
    );
}
