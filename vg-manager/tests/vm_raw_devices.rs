//! Raw-device classes end to end on real disks in the guest, the API side doubled in-process:
//! four disks, two classes (Block with discard cleanup, Filesystem xfs with zero cleanup), one
//! disk carrying data. The PVs appear with local-pv-provisioner's names, the disks' sizes and
//! this node's affinity; a claimed, written and released disk reads back blank and is offered
//! again; a disk in use is not cleaned (Event, reason, error gauge) until it is free; a disk
//! formatted before a crash is offered without being formatted again; the disk with data is
//! never touched; deleting the classes waits for claims, then removes the PVs.
//!
//! The double has no PV controller: binding and release are written as kube-controller-manager
//! writes them (`spec.claimRef`, `status.phase`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use api_double::ApiDouble;
use lvm::{Exec, Mode};
use serde_json::{Value, json};
use vg_manager::agent::{Agent, FORMATTED_ANNOTATION};
use vm_test::Disk;

mod support;
use support::sh;

const NS: &str = "openshift-storage";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const STATUSES: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
const NODES: &str = "api/v1/nodes";
const PVS: &str = "api/v1/persistentvolumes";
const EVENTS: &str = "apis/events.k8s.io/v1/events";
const MIB: usize = 1 << 20;

fn read(dev: &str, bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

fn write(dev: &str, byte: u8, bytes: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all(&vec![byte; bytes]).unwrap();
    f.sync_all().unwrap();
}

fn pvs(api: &ApiDouble) -> Vec<Value> {
    api.list(PVS)
}

fn pv_of(api: &ApiDouble, dev: &str) -> Value {
    pvs(api)
        .into_iter()
        .find(|p| {
            std::fs::canonicalize(p["spec"]["local"]["path"].as_str().unwrap())
                .is_ok_and(|t| t == Path::new(dev))
        })
        .unwrap_or_else(|| panic!("no PV of {dev}: {:?}", pvs(api)))
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap().to_string()
}

/// What kube-controller-manager does when a claim binds, or is deleted (Retain).
fn bind(api: &ApiDouble, pv: &str) {
    api.patch(PVS, None, pv, json!({"spec": {"claimRef": {"namespace": "db", "name": "data-0", "uid": "c-1"}}, "status": {"phase": "Bound"}}));
}
fn release(api: &ApiDouble, pv: &str) {
    api.patch(PVS, None, pv, json!({"status": {"phase": "Released"}}));
}

fn class_status(api: &ApiDouble, class: &str) -> Value {
    let st = api.get(STATUSES, Some(NS), "node-a").expect("node status");
    st["spec"]["nodeStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == class)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "current_thread")]
async fn raw_devices_offered_cleaned_and_never_a_disk_with_data() {
    let disks = [
        Disk::Blank("256M"),
        Disk::Blank("256M"),
        Disk::Blank("320M"),
        Disk::Blank("256M"),
    ];
    let Some(g) = vm_test::guest(
        "raw_devices_offered_cleaned_and_never_a_disk_with_data",
        &disks,
    ) else {
        return;
    };
    let [block0, block1, fs0, data] = [&g.disks[0], &g.disks[1], &g.disks[2], &g.disks[3]];
    // The disk with data: a filesystem with a file on it.
    sh(&["mkfs.ext4", "-q", "-L", "precious", data]);
    let data_before = read(data, 8 * MIB);
    sh(&["udevadm", "settle"]);

    let api = ApiDouble::new();
    api.seed(NODES, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a.example"}}}));
    let id = |i: u32| format!("/dev/disk/by-id/virtio-lvmsvm{i}");
    api.seed(VGS, json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": "disks", "namespace": NS},
        "spec": {"deviceSelector": {"paths": [id(0), id(1)]}, "rawDevices": {"volumeMode": "Block", "cleanup": "discard"}}}));
    api.seed(VGS, json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": "fsdisks", "namespace": NS},
        "spec": {"deviceSelector": {"paths": [id(2), id(3)]}, "rawDevices": {"volumeMode": "Filesystem", "cleanup": "zero"}, "fstype": "xfs"}}));
    let node_uid = api.get(NODES, None, "node-a").unwrap()["metadata"]["uid"].clone();
    let runner = Arc::new(Exec::new(Mode::Direct));
    let agent = Agent::new(api.client(), "node-a", NS, runner.clone());

    // First pass: three PVs (the disk with data is not one of them).
    let t = Instant::now();
    let out = agent.pass().await.unwrap();
    println!(
        "FIGURE first pass, 3 disks offered (one formatted xfs): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(pvs(&api).len(), 3, "{:#?}", pvs(&api));
    for (dev, class, size, mode) in [
        (block0, "disks", 256u64 << 20, "Block"),
        (block1, "disks", 256 << 20, "Block"),
        (fs0, "fsdisks", 320 << 20, "Filesystem"),
    ] {
        let pv = pv_of(&api, dev);
        let path = pv["spec"]["local"]["path"].as_str().unwrap();
        assert!(
            path.starts_with("/dev/disk/by-id/"),
            "a stable path: {path}"
        );
        let leaf = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert_eq!(name(&pv), lvms_api::raw::pv_name("node-a", leaf));
        assert!(name(&pv).starts_with("local-node-a-"));
        assert!(
            name(&pv)
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'),
            "{}",
            name(&pv)
        );
        assert_eq!(pv["spec"]["capacity"]["storage"], size.to_string());
        assert_eq!(pv["spec"]["volumeMode"], mode);
        assert_eq!(pv["spec"]["storageClassName"], format!("lvms-{class}"));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["metadata"]["ownerReferences"][0]["uid"], node_uid);
        assert_eq!(
            pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!(["node-a.example"])
        );
    }
    // The Filesystem disk was formatted (once: the record of it is cleared with the PV made).
    assert_eq!(
        sh(&["blkid", "-p", "-o", "value", "-s", "TYPE", fs0]).trim(),
        "xfs"
    );
    assert_eq!(pv_of(&api, fs0)["spec"]["local"]["fsType"], "xfs");
    let ann = api.get(STATUSES, Some(NS), "node-a").unwrap()["metadata"]["annotations"]
        [FORMATTED_ANNOTATION]
        .clone();
    assert_eq!(ann, json!("{}"), "nothing pending");
    let fs_status = class_status(&api, "fsdisks");
    assert_eq!(fs_status["status"], "Degraded", "{fs_status}");
    let excluded = fs_status["excluded"].to_string();
    assert!(
        excluded.contains(data.as_str()) && excluded.contains("has a filesystem signature (ext4)"),
        "{excluded}"
    );
    assert_eq!(class_status(&api, "disks")["status"], "Ready");
    assert_eq!(out.raw.unwrap().available, 3);
    assert_eq!(out.raw.unwrap().errors, 0);

    // The next pass only updates what the first could not know (class `disks` was judged before
    // `fsdisks` formatted vdc, which it lists as not selected); then an idle pass changes nothing.
    agent.pass().await.unwrap();
    let before = api.requests().len();
    agent.pass().await.unwrap();
    let writes: Vec<_> = api.requests()[before..]
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "an idle pass writes nothing: {writes:?}");

    // A tenant claims the Block disk and the Filesystem disk, writes, and goes.
    let (pv_b, pv_f) = (name(&pv_of(&api, block0)), name(&pv_of(&api, fs0)));
    bind(&api, &pv_b);
    bind(&api, &pv_f);
    write(block0, 0xab, 150 * MIB);
    let mnt = "/mnt/raw-fs";
    std::fs::create_dir_all(mnt).unwrap();
    sh(&["mount", fs0, mnt]);
    std::fs::write(
        format!("{mnt}/tenant-secret"),
        b"the previous tenant's data",
    )
    .unwrap();
    agent.pass().await.unwrap();
    assert!(
        api.get(PVS, None, &pv_f).is_some(),
        "a bound PV is left alone while mounted"
    );
    sh(&["umount", mnt]);
    release(&api, &pv_b);
    release(&api, &pv_f);
    let t = Instant::now();
    let out = agent.pass().await.unwrap();
    println!(
        "FIGURE release → cleaned and offered again, one 256 MiB Block disk (discard) and one 320 MiB xfs disk (zero 100 MiB, mkfs): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Cleaned, deleted and offered again in the same pass: same names, new objects, Available.
    let again_b = pv_of(&api, block0);
    let again_f = pv_of(&api, fs0);
    assert_eq!(name(&again_b), pv_b);
    assert_eq!(name(&again_f), pv_f);
    assert!(
        again_b["spec"]["claimRef"].is_null() && again_b["status"]["phase"].is_null(),
        "a new PV: {again_b}"
    );
    assert_eq!(out.raw.unwrap().available, 3);
    assert!(
        read(block0, 100 * MIB).iter().all(|b| *b == 0),
        "the first 100 MiB read back zero"
    );
    // The Filesystem disk is a fresh xfs: the tenant's file is gone.
    sh(&["mount", fs0, mnt]);
    let leftover = Path::new(mnt).join("tenant-secret").exists();
    sh(&["umount", mnt]);
    assert!(!leftover, "the previous tenant's file survived the cleanup");
    let notes: Vec<String> = api
        .list(EVENTS)
        .iter()
        .map(|e| format!("{} {}", e["reason"], e["note"]))
        .collect();
    println!("FIGURE cleanup events: {notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Cleaned") && n.contains(block0.as_str())),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("zeroed the first 100 MiB of") && n.contains(fs0.as_str())),
        "{notes:?}"
    );

    // A released disk still open (mounted) is not cleaned: Released, reason, Event, error gauge.
    let pv_1 = name(&pv_of(&api, block1));
    bind(&api, &pv_1);
    sh(&["mkfs.ext4", "-q", "-F", block1]);
    sh(&["mount", block1, mnt]);
    release(&api, &pv_1);
    let out = agent.pass().await.unwrap();
    let stuck = api.get(PVS, None, &pv_1).unwrap();
    assert_eq!(stuck["status"]["phase"], "Released", "never reused dirty");
    let why = stuck["metadata"]["annotations"]["lvms.topolvm.io/cleanup-failed"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("still mounted at /mnt/raw-fs"), "{stuck}");
    assert_eq!(out.raw.unwrap().errors, 1);
    assert!(
        api.list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "CleanupFailed")
    );
    assert_eq!(class_status(&api, "disks")["status"], "Degraded");
    sh(&["umount", mnt]);
    let out = agent.pass().await.unwrap();
    assert_eq!(out.raw.unwrap().errors, 0, "cleaned once free");
    assert!(pv_of(&api, block1)["status"]["phase"].is_null());
    assert_eq!(
        sh(&["wipefs", "--no-act", "--noheadings", block1]).trim(),
        "",
        "no signature left"
    );

    // An admin deletes the Filesystem PV by hand after a tenant wrote to it: the cleanup
    // finalizer holds the PV until the disk is cleaned, then it is offered again, blank.
    let claimed_uid = pv_of(&api, fs0)["metadata"]["uid"].clone();
    sh(&["mount", fs0, mnt]);
    std::fs::write(format!("{mnt}/kept"), b"x").unwrap();
    sh(&["umount", mnt]);
    kubectl_delete_pv(&api, &pv_f).await;
    assert!(
        api.get(PVS, None, &pv_f).unwrap()["metadata"]["deletionTimestamp"].is_string(),
        "held by the cleanup finalizer"
    );
    agent.pass().await.unwrap();
    let again = pv_of(&api, fs0);
    assert_eq!(name(&again), pv_f);
    assert_ne!(again["metadata"]["uid"], claimed_uid, "a new PV");
    sh(&["mount", fs0, mnt]);
    let kept = Path::new(mnt).join("kept").exists();
    sh(&["umount", mnt]);
    assert!(!kept, "the deleted PV's data reached the next one");

    // A PV gone without its cleanup (its finalizer removed, as the operator does for a Node
    // deleted for good): the disk has our xfs, but nothing says it holds no tenant data, so it
    // is not offered again...
    let uuid = sh(&["blkid", "-p", "-o", "value", "-s", "UUID", fs0]);
    api.patch(PVS, None, &pv_f, json!({"metadata": {"finalizers": null}}));
    kubectl_delete_pv(&api, &pv_f).await;
    agent.pass().await.unwrap();
    assert!(
        pvs(&api).iter().all(|p| name(p) != pv_f),
        "not offered again"
    );
    assert!(
        class_status(&api, "fsdisks")["excluded"]
            .to_string()
            .contains(fs0.as_str())
    );
    // ...unless this node recorded that it formatted it for a PV it had not made yet (a crash
    // between mkfs and the PV): then it is offered as it is, not formatted again.
    let stable = pv_of_path_for(fs0);
    api.patch(STATUSES, Some(NS), "node-a", json!({"metadata": {"annotations": {FORMATTED_ANNOTATION: json!({"fsdisks": [stable]}).to_string()}}}));
    agent.pass().await.unwrap();
    assert_eq!(name(&pv_of(&api, fs0)), pv_f);
    assert_eq!(
        sh(&["blkid", "-p", "-o", "value", "-s", "UUID", fs0]),
        uuid,
        "not formatted again"
    );

    // The disk with data was never touched.
    assert_eq!(
        read(data, 8 * MIB),
        data_before,
        "the disk with data changed"
    );
    assert!(sh(&["blkid", "-p", data]).contains("precious"));

    // Deleting a class waits for its claims; then its PVs go (cleaned first, behind their
    // finalizer) and this node lets it go.
    let pv_b = name(&pv_of(&api, block0));
    bind(&api, &pv_b);
    let vgs: kube::Api<lvms_api::LVMVolumeGroup> = kube::Api::namespaced(api.client(), NS);
    for class in ["disks", "fsdisks"] {
        vgs.delete(class, &Default::default()).await.unwrap();
    }
    agent.pass().await.unwrap();
    agent.pass().await.unwrap();
    let st = class_status(&api, "disks");
    assert_eq!(st["status"], "Failed");
    assert!(st["reason"].as_str().unwrap().contains(&pv_b), "{st}");
    assert!(
        api.get(VGS, Some(NS), "disks").is_some(),
        "held by this node's finalizer"
    );
    assert!(
        api.get(VGS, Some(NS), "fsdisks").is_none(),
        "the unclaimed class is gone"
    );
    assert!(
        pvs(&api)
            .iter()
            .all(|p| p["metadata"]["labels"]["lvms.topolvm.io/raw-device-class"] != "fsdisks")
    );
    release(&api, &pv_b);
    agent.pass().await.unwrap();
    assert!(pvs(&api).is_empty(), "{:?}", pvs(&api));
    assert!(api.get(VGS, Some(NS), "disks").is_none());
    assert!(read(block0, 100 * MIB).iter().all(|b| *b == 0));
}

/// An admin's `kubectl delete pv` (the double deletes at once: no pv-protection finalizer here).
async fn kubectl_delete_pv(api: &ApiDouble, pv: &str) {
    let pvs: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> = kube::Api::all(api.client());
    pvs.delete(pv, &Default::default()).await.unwrap();
}

/// The stable link the agent chose for `dev` (the first by name, as in `stable_paths`).
fn pv_of_path_for(dev: &str) -> String {
    vg_manager::raw_devices::stable_paths()
        .get(dev)
        .cloned()
        .unwrap_or_else(|| panic!("no stable path for {dev}"))
}
