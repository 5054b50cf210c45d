//! The volume group planner and its steps on real LVM in the guest: blank disks become a tagged
//! VG and thin pool, a second plan is empty, a new disk extends the VG, a raised metadataSize
//! grows the pool's metadata, a disk with data is never touched, and a foreign VG of the same
//! name is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use lvm::{Exec, Lvm, Mode, lsblk};
use lvms_api::{
    DeviceSelector, LVMVolumeGroupSpec, MetadataSizeCalculationPolicy, ThinPoolConfig, VGStatusType,
};
use vg_manager::plan::{OWNER_TAG, Observed, Plan, Step, apply, plan};
use vm_test::Disk;

fn spec(paths: &[&str]) -> LVMVolumeGroupSpec {
    LVMVolumeGroupSpec {
        device_selector: Some(DeviceSelector {
            paths: Some(paths.iter().map(|p| p.to_string()).collect()),
            ..Default::default()
        }),
        thin_pool_config: Some(ThinPoolConfig {
            name: "thin-pool-1".into(),
            size_percent: 90,
            overprovision_ratio: 10,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn observe(runner: &Exec, lvm: &Lvm, name: &str, spec: &LVMVolumeGroupSpec) -> Plan {
    let devices = lsblk::list(runner).unwrap();
    let report = lvm.report().unwrap();
    let loops = BTreeMap::new();
    let resolve = |p: &str| {
        std::fs::canonicalize(p)
            .ok()
            .map(|c| c.to_string_lossy().into_owned())
    };
    plan(
        name,
        spec,
        &Observed {
            devices: &devices,
            report: &report,
            loops: &loops,
            resolve: &resolve,
            container_mounts: false,
            raid_unavailable: None,
        },
    )
}

#[test]
fn planner_builds_extends_and_refuses_on_real_lvm() {
    let disks = [
        Disk::Blank("1G"),
        Disk::Blank("1G"),
        Disk::Blank("512M"),
        Disk::Blank("512M"),
        Disk::Blank("512M"),
    ];
    let Some(_) = vm_test::guest("planner_builds_extends_and_refuses_on_real_lvm", &disks) else {
        return;
    };
    let runner = Arc::new(Exec::new(Mode::Direct));
    let lvm = Lvm::new(runner.clone());
    assert!(
        Command::new("mkfs.xfs")
            .args(["-q", "-f", "/dev/vdc"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("udevadm")
            .arg("settle")
            .status()
            .unwrap()
            .success()
    );

    // Two blank disks by by-id symlink: VG + thin pool, Ready with both devices.
    let two = spec(&[
        "/dev/disk/by-id/virtio-lvmsvm0",
        "/dev/disk/by-id/virtio-lvmsvm1",
    ]);
    let p = observe(&runner, &lvm, "vg1", &two);
    assert_eq!(p.steps.len(), 2, "{p:?}");
    apply(&lvm, "vg1", &p.steps).unwrap();
    let r = lvm.report().unwrap();
    assert!(r.vg("vg1").unwrap().has_tag(OWNER_TAG));
    let pool = r.lv("vg1", "thin-pool-1").unwrap();
    assert!(pool.is_thin_pool());
    assert_eq!(pool.chunk_size, Some(128 * 1024), "Static policy default");
    let vg = r.vg("vg1").unwrap();
    assert!(
        pool.size >= vg.size * 85 / 100,
        "pool {} of {}",
        pool.size,
        vg.size
    );

    // Converged: the next plan is empty and Ready with both devices.
    let p = observe(&runner, &lvm, "vg1", &two);
    assert_eq!(p.steps, []);
    assert_eq!(p.status.status, VGStatusType::Ready);
    assert_eq!(p.status.devices, ["/dev/vda", "/dev/vdb"]);

    // Day 2: a third path extends the VG.
    let three = spec(&[
        "/dev/disk/by-id/virtio-lvmsvm0",
        "/dev/disk/by-id/virtio-lvmsvm1",
        "/dev/vdd",
    ]);
    let p = observe(&runner, &lvm, "vg1", &three);
    assert_eq!(
        p.steps[0],
        Step::ExtendVg {
            devices: vec!["/dev/vdd".into()]
        }
    );
    assert!(
        matches!(
            p.steps[1],
            Step::ExtendThinPool {
                size_percent: 90,
                ..
            }
        ),
        "{p:?}"
    );
    apply(&lvm, "vg1", &p.steps).unwrap();
    let r = lvm.report().unwrap();
    assert_eq!(r.pvs_of("vg1").count(), 3);
    let (pool, vg) = (r.lv("vg1", "thin-pool-1").unwrap(), r.vg("vg1").unwrap());
    assert!(
        pool.size >= vg.size * 88 / 100,
        "the pool grew with the VG: {} of {}",
        pool.size,
        vg.size
    );
    assert_eq!(
        observe(&runner, &lvm, "vg1", &three).steps,
        [],
        "and then nothing is left to do"
    );

    // A raised metadataSize (Static policy) grows the metadata of the pool that exists.
    let before = r.lv("vg1", "thin-pool-1").unwrap().metadata_size.unwrap();
    let mut bigger = three.clone();
    let tp = bigger.thin_pool_config.as_mut().unwrap();
    tp.metadata_size_calculation_policy = MetadataSizeCalculationPolicy::Static;
    tp.metadata_size = Some(Quantity("64Mi".into()));
    assert!(before < 64 << 20, "lvm2 chose {before} bytes of metadata");
    let p = observe(&runner, &lvm, "vg1", &bigger);
    assert_eq!(
        p.steps,
        [Step::ExtendThinPoolMetadata {
            name: "thin-pool-1".into(),
            size: 64 << 20
        }]
    );
    apply(&lvm, "vg1", &p.steps).unwrap();
    let after = lvm
        .report()
        .unwrap()
        .lv("vg1", "thin-pool-1")
        .unwrap()
        .metadata_size
        .unwrap();
    assert!(after >= 64 << 20, "metadata {before} -> {after} bytes");
    assert_eq!(observe(&runner, &lvm, "vg1", &bigger).steps, []);
    apply(
        &lvm,
        "vg1",
        &[Step::ExtendThinPoolMetadata {
            name: "thin-pool-1".into(),
            size: 64 << 20,
        }],
    )
    .expect("growing to the size it has is success");

    // A required disk with a filesystem: Failed, and the xfs is still there.
    let p = observe(&runner, &lvm, "vg2", &spec(&["/dev/vdc"]));
    assert_eq!(p.status.status, VGStatusType::Failed);
    assert!(
        p.status.reason.contains("has a filesystem signature (xfs)"),
        "{}",
        p.status.reason
    );
    assert!(p.steps.is_empty());
    let blkid = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", "/dev/vdc"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "xfs");

    // Someone else's VG with our class name is not adopted.
    lvm.vgcreate("vg3", &["/dev/vde".into()], "not-ours")
        .unwrap();
    let p = observe(&runner, &lvm, "vg3", &spec(&["/dev/vde"]));
    assert!(
        p.status.reason.contains("was not created by LVMS"),
        "{}",
        p.status.reason
    );
    let set: BTreeSet<_> = lvm
        .report()
        .unwrap()
        .lvs_of("vg3")
        .map(|l| l.name.clone())
        .collect();
    assert!(set.is_empty(), "nothing was created in the foreign VG");
}
