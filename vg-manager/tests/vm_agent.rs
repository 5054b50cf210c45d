//! The node agent end to end on real LVM (in the guest) with the API side doubled in-process:
//! blank disks → VG + thin pool → Ready + capacity; idle passes touch nothing; day 2 extension;
//! overprovision ratio change; deletion refused while volumes remain, then complete; forceWipe
//! exactly once across an agent restart; recovery from a crash between steps.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use api_double::ApiDouble;
use lvm::{Exec, Lvm, Mode};
use lvms_api::LVMVolumeGroup;
use serde_json::{Value, json};
use vg_manager::agent::{Agent, WIPED_ANNOTATION};
use vm_test::Disk;

const NS: &str = "openshift-storage";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const STATUSES: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
const NODES: &str = "api/v1/nodes";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn double(vg_spec: Value) -> ApiDouble {
    let api = ApiDouble::new();
    api.seed(NODES, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}}}));
    api.seed(VGS, json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": "vg1", "namespace": NS}, "spec": vg_spec}));
    api
}

fn agent(api: &ApiDouble) -> (Agent, Arc<Exec>) {
    let runner = Arc::new(Exec::new(Mode::Direct));
    (
        Agent::new(api.client(), "node-a", NS, runner.clone()),
        runner,
    )
}

fn node_status(api: &ApiDouble) -> Value {
    api.get(STATUSES, Some(NS), "node-a")
        .expect("node status exists")["spec"]["nodeStatus"]
        .clone()
}

fn capacity(api: &ApiDouble) -> Option<u64> {
    api.get(NODES, None, "node-a").unwrap()["metadata"]["annotations"]["capacity.topolvm.io/vg1"]
        .as_str()
        .map(|s| s.parse().unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn agent_builds_reports_extends_and_tears_down() {
    let disks = [Disk::Blank("2G"), Disk::Blank("2G"), Disk::Blank("1G")];
    let Some(_) = vm_test::guest("agent_builds_reports_extends_and_tears_down", &disks) else {
        return;
    };
    let api = double(json!({
        "deviceSelector": {"paths": ["/dev/disk/by-id/virtio-lvmsvm0", "/dev/disk/by-id/virtio-lvmsvm1"]},
        "thinPoolConfig": {"name": "thin-pool-1", "sizePercent": 90, "overprovisionRatio": 10},
        "default": true,
    }));
    let (agent, runner) = agent(&api);
    let lvm = Lvm::new(runner.clone());

    // New LVMVolumeGroup → Ready on two 2 GiB disks.
    let t = Instant::now();
    let out = agent.pass().await.unwrap();
    println!(
        "FIGURE new LVMVolumeGroup to Ready on two 2 GiB disks: {:.2} s (one pass, TCG guest)",
        t.elapsed().as_secs_f64()
    );
    assert!(out.changed);
    let st = node_status(&api);
    assert_eq!(st[0]["name"], "vg1");
    assert_eq!(st[0]["status"], "Ready", "{st}");
    assert_eq!(st[0]["devices"], json!(["/dev/vda", "/dev/vdb"]));
    let vg = api.get(VGS, Some(NS), "vg1").unwrap();
    assert_eq!(
        vg["metadata"]["finalizers"],
        json!(["cleanup.vgmanager.node.topolvm.io/node-a"])
    );
    let r = lvm.report().unwrap();
    let pool = r.lv("vg1", "thin-pool-1").unwrap();
    assert_eq!(
        capacity(&api),
        Some(pool.size * 10),
        "thin capacity = ratio × pool − promised (nothing yet)"
    );

    // Idle: nothing changes, and a pass costs one lsblk, one lvm report and one losetup.
    let before = runner.invocations();
    let out = agent.pass().await.unwrap();
    assert!(!out.changed);
    assert_eq!(runner.invocations() - before, 3, "commands per idle pass");
    let requests = api.requests().len();
    agent.pass().await.unwrap();
    let writes = api.requests()[requests..]
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .count();
    assert_eq!(writes, 0, "an idle pass writes nothing to the API server");

    // A volume promised out of the pool lowers capacity.
    lvm.create_thin_lv("vg1", "thin-pool-1", "pvc-1", 1 << 30, &[])
        .unwrap();
    agent.pass().await.unwrap();
    assert_eq!(capacity(&api), Some(pool.size * 10 - (1 << 30)));

    // Day 2: a third disk extends the VG and the pool; the ratio changes without recreating.
    api.patch(VGS, Some(NS), "vg1", json!({"spec": {"deviceSelector": {"paths": ["/dev/disk/by-id/virtio-lvmsvm0", "/dev/disk/by-id/virtio-lvmsvm1", "/dev/vdc"]}, "thinPoolConfig": {"overprovisionRatio": 20}}}));
    agent.pass().await.unwrap();
    assert_eq!(
        node_status(&api)[0]["devices"],
        json!(["/dev/vda", "/dev/vdb", "/dev/vdc"])
    );
    let r = lvm.report().unwrap();
    let grown = r.lv("vg1", "thin-pool-1").unwrap();
    assert!(grown.size > pool.size, "pool follows the VG");
    assert_eq!(grown.uuid, pool.uuid, "same pool, not recreated");
    assert_eq!(capacity(&api), Some(grown.size * 20 - (1 << 30)));

    // Deletion while a volume remains: refused with its name, nothing removed.
    let vgs: kube::Api<LVMVolumeGroup> = kube::Api::namespaced(api.client(), NS);
    vgs.delete("vg1", &Default::default()).await.unwrap();
    agent.pass().await.unwrap();
    let st = node_status(&api);
    assert_eq!(st[0]["status"], "Failed");
    assert!(
        st[0]["reason"]
            .as_str()
            .unwrap()
            .contains("still has logical volumes (pvc-1)"),
        "{st}"
    );
    assert!(lvm.report().unwrap().vg("vg1").is_some());
    assert!(
        api.get(VGS, Some(NS), "vg1").is_some(),
        "the finalizer holds the object"
    );

    // The volume goes: VG, pool and PV labels go, the finalizer is released, capacity removed.
    lvm.remove("vg1", "pvc-1").unwrap();
    agent.pass().await.unwrap();
    let r = lvm.report().unwrap();
    assert!(r.vg("vg1").is_none() && r.pvs.is_empty(), "{r:?}");
    assert!(
        api.get(VGS, Some(NS), "vg1").is_none(),
        "finalizer released, object gone"
    );
    assert!(node_status(&api).as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(capacity(&api), None);
}

#[tokio::test(flavor = "current_thread")]
async fn force_wipe_once_and_crash_recovery() {
    let disks = [Disk::Blank("1G"), Disk::Blank("1G")];
    let Some(_) = vm_test::guest("force_wipe_once_and_crash_recovery", &disks) else {
        return;
    };
    sh(&["mkfs.xfs", "-q", "-f", "/dev/vda"]);
    sh(&["udevadm", "settle"]);
    let api = double(json!({
        "deviceSelector": {"paths": ["/dev/vda"], "forceWipeDevicesAndDestroyAllData": true},
        "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 1},
    }));
    let (first, runner) = agent(&api);
    let lvm = Lvm::new(runner.clone());
    first.pass().await.unwrap();
    assert_eq!(
        node_status(&api)[0]["status"],
        "Ready",
        "{}",
        node_status(&api)
    );
    let recorded = api.get(STATUSES, Some(NS), "node-a").unwrap()["metadata"]["annotations"]
        [WIPED_ANNOTATION]
        .clone();
    assert_eq!(recorded, json!(r#"{"vg1":["/dev/vda"]}"#));

    // The disk leaves the VG and gets a filesystem again; a restarted agent must not wipe twice.
    lvm.remove("vg1", "pool").unwrap();
    lvm.vgremove("vg1").unwrap();
    lvm.pvremove("/dev/vda").unwrap();
    sh(&["mkfs.xfs", "-q", "-f", "/dev/vda"]);
    sh(&["udevadm", "settle"]);
    let (restarted, _) = agent(&api);
    restarted.pass().await.unwrap();
    let st = node_status(&api);
    assert_eq!(st[0]["status"], "Failed");
    assert!(
        st[0]["reason"]
            .as_str()
            .unwrap()
            .contains("has a filesystem signature (xfs)"),
        "{st}"
    );
    let blkid = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", "/dev/vda"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&blkid.stdout).trim(),
        "xfs",
        "wiped exactly once"
    );

    // Crash recovery: a VG created by a previous run without its pool (killed between steps),
    // on the other disk, is finished by the next pass.
    api.patch(VGS, Some(NS), "vg1", json!({"spec": {"deviceSelector": {"paths": ["/dev/vdb"], "forceWipeDevicesAndDestroyAllData": null}}}));
    lvm.vgcreate("vg1", &["/dev/vdb".into()], "lvms").unwrap();
    restarted.pass().await.unwrap();
    assert_eq!(
        node_status(&api)[0]["status"],
        "Ready",
        "{}",
        node_status(&api)
    );
    assert!(
        lvm.report()
            .unwrap()
            .lv("vg1", "pool")
            .unwrap()
            .is_thin_pool()
    );

    // Killed mid-teardown (pool removed, VG left): the next pass finishes the removal.
    let vgs: kube::Api<LVMVolumeGroup> = kube::Api::namespaced(api.client(), NS);
    vgs.delete("vg1", &Default::default()).await.unwrap();
    lvm.remove("vg1", "pool").unwrap();
    restarted.pass().await.unwrap();
    assert!(lvm.report().unwrap().vg("vg1").is_none());
    assert!(api.get(VGS, Some(NS), "vg1").is_none());

    // Killed right after pvcreate (an orphan PV, no VG yet): the next pass builds on it.
    lvm.pvcreate("/dev/vdb").unwrap();
    api.seed(VGS, json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": "vg1", "namespace": NS},
        "spec": {"deviceSelector": {"paths": ["/dev/vdb"]}, "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 1}}}));
    restarted.pass().await.unwrap();
    assert_eq!(
        node_status(&api)[0]["status"],
        "Ready",
        "{}",
        node_status(&api)
    );
    assert_eq!(node_status(&api)[0]["devices"], json!(["/dev/vdb"]));
}
