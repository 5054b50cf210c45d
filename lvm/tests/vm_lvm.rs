//! The LVM layer on real LVM, inside the QEMU guest (see vm-test). Each test is one boot that
//! batches many checks: every operation, idempotent repeats, error classification, the
//! eligibility matrix on real devices, and state surviving a reboot.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use lvm::container::{HostFacts, overrides};
use lvm::eligibility::{Context, Verdict, judge};
use lvm::fs::{self, Filesystem};
use lvm::{Exec, Layout, Lvm, Mode, Runner, ThinPoolSpec, lsblk};
use vm_test::Disk;

const MIB: u64 = 1024 * 1024;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[test]
fn operations_on_real_lvm() {
    let Some(g) = vm_test::guest(
        "operations_on_real_lvm",
        &[
            Disk::Blank("1G"),
            Disk::Blank("1G"),
            Disk::Blank("512M"),
            Disk::Blank("512M"),
            Disk::Blank("256M"),
        ],
    ) else {
        return;
    };
    let runner = Arc::new(Exec::new(Mode::Direct));
    let lvm = Lvm::new(runner.clone());
    let r: &dyn Runner = runner.as_ref();
    let d = &g.disks;

    assert!(lvm.report().unwrap().vgs.is_empty());

    // Volume group with an ownership tag; creating it again is "already exists".
    lvm.vgcreate("vg1", &d[0..2], "lvms-rs").unwrap();
    let rep = lvm.report().unwrap();
    assert!(rep.vg("vg1").unwrap().has_tag("lvms-rs"));
    assert_eq!(rep.pvs_of("vg1").count(), 2);
    let again = lvm.vgcreate("vg1", &d[0..2], "lvms-rs").unwrap_err();
    assert!(again.is_already_exists(), "{again}");

    // Thin pool: 90 % of the VG, static chunk size; a second create is "already exists".
    let spec = ThinPoolSpec {
        name: "pool".into(),
        size_percent: 90,
        chunk_size: Some(128 * 1024),
        metadata_size: Some(8 * MIB),
    };
    lvm.create_thin_pool("vg1", &spec).unwrap();
    let rep = lvm.report().unwrap();
    let pool = rep.lv("vg1", "pool").unwrap();
    assert!(pool.is_thin_pool());
    assert_eq!(pool.chunk_size, Some(128 * 1024));
    assert_eq!(pool.metadata_size, Some(8 * MIB));
    let vg = rep.vg("vg1").unwrap();
    assert!(
        pool.size >= vg.size * 85 / 100 && pool.size <= vg.size * 90 / 100,
        "pool {} of vg {}",
        pool.size,
        vg.size
    );
    assert!(
        lvm.create_thin_pool("vg1", &spec)
            .unwrap_err()
            .is_already_exists()
    );

    // Thin volume with a tag, twice.
    lvm.create_thin_lv(
        "vg1",
        "pool",
        "thin1",
        300 * MIB,
        &tags(&["lvms.topolvm.io/lv=pvc-1"]),
    )
    .unwrap();
    assert!(
        lvm.create_thin_lv("vg1", "pool", "thin1", 300 * MIB, &[])
            .unwrap_err()
            .is_already_exists()
    );
    let rep = lvm.report().unwrap();
    let thin = rep.lv("vg1", "thin1").unwrap();
    assert_eq!((thin.size, thin.pool.as_str()), (300 * MIB, "pool"));
    assert!(thin.has_tag("lvms.topolvm.io/lv=pvc-1") && thin.is_active());

    // Filesystem: blank, then xfs; data; online growth.
    let dev = "/dev/vg1/thin1";
    assert_eq!(fs::signature(r, dev).unwrap(), None);
    fs::mkfs(r, Filesystem::Xfs, dev).unwrap();
    assert_eq!(fs::signature(r, dev).unwrap().as_deref(), Some("xfs"));
    std::fs::create_dir_all("/mnt/t1").unwrap();
    sh(&["mount", dev, "/mnt/t1"]);
    std::fs::write("/mnt/t1/data", vec![7u8; 5 * MIB as usize]).unwrap();
    sh(&["sync"]);
    let before = fs::usage(r, "/mnt/t1").unwrap();
    assert!(
        before.used_bytes >= 5 * MIB && before.total_inodes > 0 && before.used_inodes >= 1,
        "{before:?}"
    );
    lvm.extend("vg1", "thin1", 600 * MIB).unwrap();
    lvm.extend("vg1", "thin1", 600 * MIB).unwrap(); // same size again: no error
    let shrink = lvm.extend("vg1", "thin1", 100 * MIB).unwrap_err();
    assert!(
        matches!(shrink, lvm::Error::Command { .. }),
        "shrinking is refused: {shrink}"
    );
    fs::grow(r, Filesystem::Xfs, dev, "/mnt/t1").unwrap();
    let after = fs::usage(r, "/mnt/t1").unwrap();
    assert!(
        after.total_bytes > before.total_bytes + 250 * MIB,
        "{before:?} -> {after:?}"
    );

    // Thin snapshot: active at once, same data.
    lvm.create_thin_snapshot("vg1", "thin1", "snap1", &tags(&["snapshot-of=thin1"]))
        .unwrap();
    let rep = lvm.report().unwrap();
    let snap = rep.lv("vg1", "snap1").unwrap();
    assert_eq!(snap.origin, "thin1");
    assert!(snap.is_active());
    std::fs::create_dir_all("/mnt/s1").unwrap();
    sh(&["mount", "-o", "ro,nouuid", "/dev/vg1/snap1", "/mnt/s1"]);
    assert_eq!(
        std::fs::read("/mnt/s1/data").unwrap(),
        vec![7u8; 5 * MIB as usize]
    );
    sh(&["umount", "/mnt/s1"]);
    sh(&["umount", "/mnt/t1"]);

    // ext4 on another thin volume, grown offline.
    lvm.create_thin_lv("vg1", "pool", "thin2", 64 * MIB, &[])
        .unwrap();
    fs::mkfs(r, Filesystem::Ext4, "/dev/vg1/thin2").unwrap();
    assert_eq!(
        fs::signature(r, "/dev/vg1/thin2").unwrap().as_deref(),
        Some("ext4")
    );
    lvm.extend("vg1", "thin2", 128 * MIB).unwrap();
    fs::grow(r, Filesystem::Ext4, "/dev/vg1/thin2", "").unwrap();

    // Tags and rename.
    lvm.change_tags("vg1", "thin2", &tags(&["a=1"]), &[])
        .unwrap();
    lvm.change_tags("vg1", "thin2", &tags(&["b=2"]), &tags(&["a=1"]))
        .unwrap();
    lvm.rename("vg1", "thin2", "thin3").unwrap();
    let rep = lvm.report().unwrap();
    assert_eq!(rep.lv("vg1", "thin3").unwrap().tags, ["b=2"]);
    assert!(rep.lv("vg1", "thin2").is_none());

    // Thick volumes: linear, striped over two PVs, raid1.
    lvm.vgcreate("vg2", &d[2..4], "lvms-rs").unwrap();
    lvm.create_thick_lv("vg2", "lin", 32 * MIB, Layout::Linear, &[])
        .unwrap();
    lvm.create_thick_lv(
        "vg2",
        "str",
        32 * MIB,
        Layout::Striped {
            stripes: 2,
            stripe_size: 64 * 1024,
        },
        &[],
    )
    .unwrap();
    lvm.create_thick_lv(
        "vg2",
        "mir",
        32 * MIB,
        Layout::Raid {
            level: "raid1",
            mirrors: Some(1),
            stripes: None,
            stripe_size: None,
        },
        &[],
    )
    .unwrap();
    let rep = lvm.report().unwrap();
    let seg = |n: &str| rep.lv("vg2", n).unwrap().segtype.clone();
    assert_eq!(
        (seg("lin"), seg("str"), seg("mir")),
        ("linear".into(), "striped".into(), "raid1".into())
    );
    assert!(
        rep.lv("vg2", "mir").unwrap().attr.starts_with('r'),
        "raid1 volume attr"
    );
    // The report lists the hidden sub-volumes too (a RAID volume's images tell which disks it
    // lost); they are internal, and only the volume itself is RAID.
    let hidden: Vec<&str> = rep
        .lvs_of("vg2")
        .filter(|l| l.is_internal())
        .map(|l| l.name.as_str())
        .collect();
    assert!(
        hidden.contains(&"[mir_rimage_0]") && hidden.contains(&"[mir_rmeta_1]"),
        "{hidden:?}"
    );
    assert_eq!(
        rep.lvs_of("vg2")
            .filter(|l| l.is_raid())
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["mir"]
    );

    // Growing and shrinking the volume group.
    lvm.vgextend("vg2", &d[4..5]).unwrap();
    assert_eq!(lvm.report().unwrap().pvs_of("vg2").count(), 3);
    lvm.vgreduce("vg2", &d[4]).unwrap();
    assert_eq!(lvm.report().unwrap().pvs_of("vg2").count(), 2);

    // Removal, and what "not found" looks like.
    lvm.remove("vg2", "lin").unwrap();
    assert!(lvm.remove("vg2", "lin").unwrap_err().is_not_found());
    assert!(
        lvm.extend("vg2", "lin", 64 * MIB)
            .unwrap_err()
            .is_not_found()
    );
    assert!(lvm.activate("vg9", "x").unwrap_err().is_not_found());
    let busy = lvm.vgremove("vg2").unwrap_err();
    assert!(
        !busy.is_not_found(),
        "a VG with volumes is not removed: {busy}"
    );
    for lv in ["str", "mir"] {
        lvm.remove("vg2", lv).unwrap();
    }
    lvm.vgremove("vg2").unwrap();
    assert!(lvm.vgremove("vg2").unwrap_err().is_not_found());
    lvm.pvremove(&d[2]).unwrap();
    assert!(lvm.report().unwrap().pv(&d[2]).is_none());

    pod_overrides_on_real_lvm();

    // Bad input is refused before any command runs.
    let n = runner.invocations();
    assert!(matches!(
        lvm.create_thin_lv("vg1", "pool", "../x", 4096, &[]),
        Err(lvm::Error::Invalid(_))
    ));
    assert_eq!(runner.invocations(), n);
}

/// The `--config` the agent adds in a pod (lvm::container), on real lvm with a udevd running:
/// every setting in effect, and volumes activated both ways: waiting for udevd (the host has
/// lvm2, so its udevd has the device-mapper rules) and creating /dev nodes without it.
fn pod_overrides_on_real_lvm() {
    for (host_lvm_conf, name) in [(true, "pod1"), (false, "pod2")] {
        let config = overrides(HostFacts { host_lvm_conf });
        let exec = Arc::new(Exec::new(Mode::Direct).with_lvm_config(config.clone()));
        let shown = exec
            .run(
                "lvm",
                &tags(&[
                    "lvmconfig",
                    "--type",
                    "full",
                    "activation/monitoring",
                    "activation/udev_sync",
                    "activation/udev_rules",
                    "devices/obtain_device_list_from_udev",
                ]),
            )
            .unwrap()
            .stdout;
        let on = |key: &str| shown.contains(&format!("{key}=1"));
        assert!(!on("monitoring"), "{config}: {shown}");
        // Debian's lvm.conf syncs with udev; the overrides turn that off only without it.
        for key in ["udev_sync", "udev_rules"] {
            assert_eq!(on(key), host_lvm_conf, "{config}: {shown}");
        }
        if !host_lvm_conf {
            assert!(!on("obtain_device_list_from_udev"), "{config}: {shown}");
        }

        let lvm = Lvm::new(exec.clone());
        lvm.create_thin_lv("vg1", "pool", name, 16 * MIB, &[])
            .unwrap();
        assert!(lvm.report().unwrap().lv("vg1", name).unwrap().is_active());
        let dev = format!("/dev/vg1/{name}");
        assert!(
            std::fs::canonicalize(&dev).is_ok(),
            "{config}: {dev} was not created"
        );
        if host_lvm_conf {
            // lvcreate returned after udevd had processed the device: its database knows it.
            let props = sh(&["udevadm", "info", "--query=property", &dev]);
            assert!(props.contains(&format!("DM_NAME=vg1-{name}")), "{props}");
        }
        fs::mkfs(exec.as_ref(), Filesystem::Ext4, &dev).unwrap();
        lvm.remove("vg1", name).unwrap();
        assert!(
            std::fs::symlink_metadata(&dev).is_err(),
            "{dev} left behind"
        );
    }
}

/// What the live devices and LVM say about every selected disk, for volume group vg1.
fn verdicts(runner: &Exec, lvm: &Lvm, selected: &BTreeSet<String>) -> BTreeMap<String, Verdict> {
    let devices = lsblk::list(runner).unwrap();
    let report = lvm.report().unwrap();
    let ctx = Context {
        vg: "vg1",
        selected: Some(selected),
        report: Some(&report),
        loop_backing: None,
        container_mounts: false,
    };
    judge(&devices, &ctx).into_iter().collect()
}

#[test]
fn eligibility_on_real_devices() {
    let disks = [
        Disk::Blank("256M"),
        Disk::Blank("320M"),
        Disk::Blank("256M"),
        Disk::ReadOnly("256M"),
        Disk::Blank("256M"),
        Disk::Blank("256M"),
        Disk::Blank("256M"),
    ];
    let Some(g) = vm_test::guest("eligibility_on_real_devices", &disks) else {
        return;
    };
    let runner = Arc::new(Exec::new(Mode::Direct));
    let lvm = Lvm::new(runner.clone());
    let d = &g.disks;
    // vda blank, vdb xfs, vdc partitioned, vdd read-only, vde PV of another VG, vdf orphan PV,
    // vdg ext4 and mounted.
    sh(&["mkfs.xfs", "-q", &d[1]]);
    let mut sf = Command::new("sfdisk")
        .args(["-q", &d[2]])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nsize=64M, name=data\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    lvm.vgcreate("other", &d[4..5], "someone-else").unwrap();
    lvm.pvcreate(&d[5]).unwrap();
    sh(&["mkfs.ext4", "-q", &d[6]]);
    std::fs::create_dir_all("/mnt/m").unwrap();
    sh(&["mount", &d[6], "/mnt/m"]);
    sh(&["udevadm", "settle"]);
    let signatures_before: Vec<Option<String>> = d
        .iter()
        .map(|x| fs::signature(runner.as_ref(), x).unwrap())
        .collect();

    // Select every disk by its /dev/disk/by-id symlink, as users write them.
    let selected: BTreeSet<String> = (0..d.len())
        .map(|i| {
            std::fs::canonicalize(format!("/dev/disk/by-id/virtio-lvmsvm{i}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        selected.contains("/dev/vda"),
        "by-id symlinks resolve to the device: {selected:?}"
    );
    let v = verdicts(&runner, &lvm, &selected);
    let why = |dev: &str| match &v[dev] {
        Verdict::Excluded(r) => r.join("; "),
        other => panic!("{dev} should be excluded, is {other:?}"),
    };
    assert_eq!(v["/dev/vda"], Verdict::Eligible);
    assert!(
        why("/dev/vdb").contains("filesystem signature (xfs)"),
        "{}",
        why("/dev/vdb")
    );
    assert!(
        why("/dev/vdc").contains("has children (partitions)"),
        "{}",
        why("/dev/vdc")
    );
    assert!(why("/dev/vdd").contains("read-only"), "{}", why("/dev/vdd"));
    assert!(
        why("/dev/vde").contains("another volume group (other)"),
        "{}",
        why("/dev/vde")
    );
    assert_eq!(
        v["/dev/vdf"],
        Verdict::Eligible,
        "an orphan PV with free space can be used"
    );
    assert!(
        why("/dev/vdg").contains("mounted at /mnt/m") && why("/dev/vdg").contains("ext4"),
        "{}",
        why("/dev/vdg")
    );

    // Judging changed nothing; pvcreate itself refuses a disk with a filesystem.
    let signatures_after: Vec<Option<String>> = d
        .iter()
        .map(|x| fs::signature(runner.as_ref(), x).unwrap())
        .collect();
    assert_eq!(signatures_before, signatures_after);
    assert!(
        lvm.pvcreate(&d[1]).is_err(),
        "pvcreate without --force must not destroy the xfs"
    );
    assert_eq!(
        fs::signature(runner.as_ref(), &d[1]).unwrap().as_deref(),
        Some("xfs")
    );

    // Using the eligible ones works, and afterwards they are "in the volume group".
    lvm.vgcreate("vg1", &["/dev/vda".into(), "/dev/vdf".into()], "lvms-rs")
        .unwrap();
    let v = verdicts(&runner, &lvm, &selected);
    assert_eq!(
        (&v["/dev/vda"], &v["/dev/vdf"]),
        (&Verdict::InVolumeGroup, &Verdict::InVolumeGroup)
    );
}

#[test]
fn volumes_survive_a_reboot() {
    let dir = vm_test::scratch_dir("reboot");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    if std::env::var_os(vm_test::IN_VM).is_none() {
        vm_test::image(&a, 512 * MIB);
        vm_test::image(&b, 512 * MIB);
    }
    let Some((_, phase)) = vm_test::guest_phases(
        "volumes_survive_a_reboot",
        &[Disk::Image(a.clone()), Disk::Image(b.clone())],
        2,
    ) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let runner = Arc::new(Exec::new(Mode::Direct));
    let lvm = Lvm::new(runner.clone());
    if phase == 1 {
        lvm.vgcreate("vgp", &["/dev/vda".into(), "/dev/vdb".into()], "lvms-rs")
            .unwrap();
        lvm.create_thin_pool(
            "vgp",
            &ThinPoolSpec {
                name: "pool".into(),
                size_percent: 80,
                chunk_size: None,
                metadata_size: None,
            },
        )
        .unwrap();
        lvm.create_thin_lv("vgp", "pool", "keep", 64 * MIB, &tags(&["id=42"]))
            .unwrap();
        fs::mkfs(runner.as_ref(), Filesystem::Ext4, "/dev/vgp/keep").unwrap();
        std::fs::create_dir_all("/mnt/k").unwrap();
        sh(&["mount", "/dev/vgp/keep", "/mnt/k"]);
        std::fs::write("/mnt/k/file", b"survives").unwrap();
        sh(&["umount", "/mnt/k"]);
    } else {
        // After a reboot nothing is active until asked; the report still knows everything.
        let rep = lvm.report().unwrap();
        assert!(rep.vg("vgp").unwrap().has_tag("lvms-rs"));
        assert!(rep.lv("vgp", "keep").unwrap().has_tag("id=42"));
        lvm.activate_vg("vgp").unwrap();
        assert!(lvm.report().unwrap().lv("vgp", "keep").unwrap().is_active());
        std::fs::create_dir_all("/mnt/k").unwrap();
        sh(&["mount", "/dev/vgp/keep", "/mnt/k"]);
        assert_eq!(std::fs::read("/mnt/k/file").unwrap(), b"survives");
    }
}
