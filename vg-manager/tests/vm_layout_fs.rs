//! Per-volume layouts and filesystem options on real LVM in the guest, through the whole driver
//! (`vg-manager run` and the CSI controller over their sockets, the API doubled in-process): a
//! PVC's layout annotation makes a striped or raid1 LV with the right stripe count, a mirror on a
//! one-PV volume group is refused with the reason (as the RPC's answer and an Event on the PVC),
//! and a StorageClass's mkfs options and mount options reach mkfs.xfs and mount.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use csi::pb::node_client::NodeClient;
use csi::pb::volume_capability::AccessType;
use lvm::Mode;
use serde_json::{Value, json};
use tonic::Code;
use vm_test::Disk;

mod support;

use support::{LVS, MIB, capacity, channel, create_request, eventually, provision, sh, sockets};

const PVCS: &str = "api/v1/persistentvolumeclaims";

fn seed_claim(api: &ApiDouble, name: &str, annotations: Value) {
    api.seed(
        PVCS,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "app", "annotations": annotations}}),
    );
}

/// What csi-provisioner sends (with `--extra-create-metadata`) for PVC `app/<claim>`.
fn for_claim(
    name: &str,
    class: &str,
    bytes: i64,
    fs: Option<&str>,
    claim: &str,
) -> pb::CreateVolumeRequest {
    let mut req = create_request(name, class, bytes, fs);
    req.parameters
        .insert(csi::PVC_NAME_PARAMETER.into(), claim.into());
    req.parameters
        .insert(csi::PVC_NAMESPACE_PARAMETER.into(), "app".into());
    req
}

/// `lvs -o segtype,stripes` of `vg/lv`: (segment type, stripe count).
fn segments(vg: &str, lv: &str) -> (String, String) {
    let out = sh(&[
        "lvm",
        "lvs",
        "--noheadings",
        "-o",
        "segtype,stripes",
        &format!("{vg}/{lv}"),
    ]);
    let mut w = out.split_whitespace();
    (w.next().unwrap().into(), w.next().unwrap().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_and_filesystem_options_on_real_lvm() {
    let Some(_) = vm_test::guest(
        "layouts_and_filesystem_options_on_real_lvm",
        &[
            Disk::Blank("1G"),
            Disk::Blank("1G"),
            Disk::Blank("1G"),
            Disk::Blank("1G"),
        ],
    ) else {
        return;
    };
    let api = ApiDouble::new();
    support::seed(
        &api,
        &[
            (
                "wide",
                json!({"deviceSelector": {"paths": ["/dev/vda", "/dev/vdb", "/dev/vdc"]}}),
            ),
            ("one", json!({"deviceSelector": {"paths": ["/dev/vdd"]}})),
        ],
    );
    let (node_sock, ctrl_sock) = sockets("layout-fs");
    let dir = node_sock.parent().unwrap().to_path_buf();
    let runner = Arc::new(vg_manager::run::exec(Mode::Direct));
    let _agent = support::start_agent(
        &api,
        &node_sock,
        runner,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let _controller = support::start_controller(&api, &ctrl_sock);
    eventually("the wide class's capacity", 180, || capacity(&api, "wide")).await;
    eventually("the one-disk class's capacity", 60, || {
        capacity(&api, "one")
    })
    .await;
    let mut ctrl = ControllerClient::new(channel(&ctrl_sock).await);
    let mut node = NodeClient::new(channel(&node_sock).await);

    // Layouts from the PVC's annotations, on three PVs.
    seed_claim(&api, "all", json!({"lvms.topolvm.io/layout": "striped"}));
    seed_claim(
        &api,
        "two",
        json!({"lvms.topolvm.io/layout": "striped", "lvms.topolvm.io/stripes": "2"}),
    );
    seed_claim(
        &api,
        "copy",
        json!({"csi-lvm.metal-stack.io/type": "mirror"}),
    );
    let cases = [
        ("pvc-all", "all", "striped", "3"),
        ("pvc-two", "two", "striped", "2"),
        // lvm2 reports a raid1 volume's two images as its "stripes".
        ("pvc-copy", "copy", "raid1", "2"),
    ];
    for (name, claim, segtype, stripes) in cases {
        let t = Instant::now();
        let v = provision(&mut ctrl, for_claim(name, "wide", 96 * MIB, None, claim)).await;
        println!(
            "{name}: {segtype} volume made in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(
            segments("wide", &v.volume_id),
            (segtype.to_string(), stripes.to_string()),
            "{name}"
        );
        assert_eq!(v.capacity_bytes, 96 * MIB);
    }

    // A mirror on one PV: refused by the node with the reason, told to the PVC too.
    seed_claim(&api, "lonely", json!({"lvms.topolvm.io/layout": "mirror"}));
    let e = ctrl
        .create_volume(for_claim("pvc-lonely", "one", 96 * MIB, None, "lonely"))
        .await
        .expect_err("a mirror needs two PVs");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert_eq!(
        e.message(),
        "the mirror layout needs 2 physical volumes (one per copy); volume group one on node node-a has 1"
    );
    let events: Vec<Value> = api
        .list("api/v1/events")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == "lonely")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["message"], e.message());
    assert_eq!(
        sh(&["lvm", "lvs", "--noheadings", "-o", "lv_name", "one"]).trim(),
        "",
        "nothing was made"
    );

    // xfs made with the class's mkfs options and mounted with its mount options.
    seed_claim(&api, "fs", json!({}));
    let mut req = for_claim("pvc-fs", "one", 320 * MIB, Some("xfs"), "fs");
    req.parameters.insert(
        csi::MKFS_OPTIONS_KEY.into(),
        "-i size=512 -m reflink=1".into(),
    );
    if let Some(AccessType::Mount(m)) = &mut req.volume_capabilities[0].access_type {
        m.mount_flags = vec!["noatime".into()];
    }
    let cap = req.volume_capabilities[0].clone();
    let v = provision(&mut ctrl, req).await;
    assert_eq!(
        v.volume_context[csi::MKFS_OPTIONS_KEY],
        "-i size=512 -m reflink=1"
    );
    let target = dir.join("pods/fs");
    let publish = |ctx: &std::collections::HashMap<String, String>, t: &std::path::Path| {
        pb::NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: t.to_string_lossy().into(),
            volume_capability: Some(cap.clone()),
            // As kubelet sends it: the PV's volumeAttributes, which the provisioner copied
            // from CreateVolume's answer.
            volume_context: ctx.clone(),
            ..Default::default()
        }
    };
    node.node_publish_volume(publish(&v.volume_context, &target))
        .await
        .unwrap();
    let info = sh(&["xfs_info", &target.to_string_lossy()]);
    assert!(info.contains("isize=512"), "{info}");
    assert!(info.contains("reflink=1"), "{info}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .expect("the target is mounted");
    let options = line.split(' ').nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "noatime"),
        "mount options {options}"
    );
    println!("xfs_info: {}", info.lines().next().unwrap_or_default());
    println!("mountinfo: {line}");

    // mkfs refusing a value the allow-list lets through: its own words reach the caller
    // (kubelet shows them in the pod's FailedMount event), with the class's options named, and
    // the LogicalVolume and the claim (whose UID the node reads from the PV's claimRef).
    api.seed(
        PVCS,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "badblock", "namespace": "app", "uid": "uid-badblock"}}),
    );
    api.seed(
        "api/v1/persistentvolumes",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-badblock"},
            "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "namespace": "app",
                "name": "badblock", "uid": "uid-badblock"}}}),
    );
    let mut req = for_claim("pvc-badblock", "one", 320 * MIB, Some("xfs"), "badblock");
    req.parameters
        .insert(csi::MKFS_OPTIONS_KEY.into(), "-b size=1000".into());
    req.parameters
        .insert(csi::PV_NAME_PARAMETER.into(), "pv-badblock".into());
    let bad = provision(&mut ctrl, req).await;
    let e = node
        .node_publish_volume(pb::NodePublishVolumeRequest {
            volume_id: bad.volume_id.clone(),
            ..publish(&bad.volume_context, &dir.join("pods/bad"))
        })
        .await
        .expect_err("mkfs.xfs refuses a block size of 1000");
    assert_eq!(e.code(), Code::Internal);
    assert!(
        e.message()
            .contains("with the StorageClass's lvms.topolvm.io/mkfs-options \"-b size=1000\""),
        "{}",
        e.message()
    );
    println!("mkfs failure as kubelet sees it: {}", e.message());
    let lv_of = |id: &str| {
        api.list(LVS)
            .into_iter()
            .find(|o| o["status"]["volumeID"] == id)
            .expect("the volume's LogicalVolume")
    };
    let status = &lv_of(&bad.volume_id)["status"];
    // The gRPC error's words, cut to 1 KiB (mkfs.xfs appends its whole usage text).
    let recorded = status["publishError"].as_str().unwrap();
    let reason = "Invalid value 1000 for -b size option";
    assert!(
        recorded.len() <= 1024 && e.message().starts_with(recorded.trim_end_matches("...")),
        "{status}"
    );
    assert!(recorded.contains(reason), "{recorded}");
    assert_eq!(status["code"], 0, "the create did not fail: {status}");
    let events: Vec<Value> = api
        .list("apis/events.k8s.io/v1/events")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == "badblock")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "FailedMkfs");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["regarding"]["uid"], "uid-badblock");
    assert!(
        events[0]["note"].as_str().unwrap().starts_with(&format!(
            "volume {} on node node-a: making xfs",
            bad.volume_id
        )),
        "{}",
        events[0]
    );
    assert!(events[0]["note"].as_str().unwrap().contains(reason));
    println!("on the PVC: {}: {}", events[0]["reason"], events[0]["note"]);

    // The next successful publish clears it (here the options are left out, as if the volume
    // had been made with a class that works).
    let mut fixed = bad.volume_context.clone();
    fixed.remove(csi::MKFS_OPTIONS_KEY);
    node.node_publish_volume(pb::NodePublishVolumeRequest {
        volume_id: bad.volume_id.clone(),
        ..publish(&fixed, &dir.join("pods/bad"))
    })
    .await
    .unwrap();
    let status = &lv_of(&bad.volume_id)["status"];
    assert!(status.get("publishError").is_none(), "{status}");
    assert_eq!(status["code"], 0);
}
