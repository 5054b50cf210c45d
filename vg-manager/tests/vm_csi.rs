//! The whole driver on real LVM in the guest, with the API doubled in-process (watches
//! included): the node agent (`run_with`: volume group, LogicalVolume controller, CSI node
//! service) and the CSI controller service, each on its own unix socket, driven by gRPC clients
//! as the sidecars and kubelet would. A user's day: provision xfs, write, unpublish, republish,
//! expand online, snapshot and restore, clone, ext4, a thick block volume; capacity follows each
//! change; everything deleted leaves no LV; an orphaned LV is collected.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api_double::ApiDouble;
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use csi::pb::node_client::NodeClient;
use lvm::{Lvm, Mode};
use serde_json::json;
use tonic::transport::Channel;
use vm_test::Disk;

mod support;

use support::{
    LVS, MIB, capability as cap, capacity, channel, create_request, eventually, provision, sockets,
};

async fn publish(node: &mut NodeClient<Channel>, id: &str, target: &Path, fs: Option<&str>) {
    node.node_publish_volume(pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(cap(fs)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("publishing {id} at {}: {e}", target.display()));
}

async fn unpublish(node: &mut NodeClient<Channel>, id: &str, target: &Path) {
    node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
    })
    .await
    .unwrap();
}

/// The total bytes of the filesystem mounted at `path`, as NodeGetVolumeStats says.
async fn fs_bytes(node: &mut NodeClient<Channel>, id: &str, path: &Path) -> i64 {
    let stats = node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: path.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stats
        .usage
        .iter()
        .find(|u| u.unit == pb::volume_usage::Unit::Bytes as i32)
        .expect("bytes usage")
        .total
}

/// Our LVs (by owner tag) on the node, from LVM itself.
fn ours(lvm: &Lvm) -> Vec<String> {
    lvm.report()
        .unwrap()
        .lvs
        .into_iter()
        .filter(|l| {
            l.tags
                .iter()
                .any(|t| t.starts_with("lvms.topolvm.io/logicalvolume="))
        })
        .map(|l| l.full_name())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_end_to_end_on_real_lvm() {
    let Some(_) = vm_test::guest(
        "csi_end_to_end_on_real_lvm",
        &[Disk::Blank("2G"), Disk::Blank("1G")],
    ) else {
        return;
    };
    let api = ApiDouble::new();
    support::seed(
        &api,
        &[
            (
                "vg1",
                json!({"default": true, "deviceSelector": {"paths": ["/dev/vda"]},
                    "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 10}}),
            ),
            ("vg2", json!({"deviceSelector": {"paths": ["/dev/vdb"]}})),
        ],
    );
    let (node_sock, ctrl_sock) = sockets("csi-e2e");
    let dir = node_sock.parent().unwrap().to_path_buf();
    // The runner `vg-manager run` builds: lvm with the pod overrides (lvm::container).
    let runner = Arc::new(vg_manager::run::exec(Mode::Direct));
    assert!(runner.lvm_config().is_some());
    // A short resync and grace, so the orphan below is collected within the test.
    let agent = support::start_agent(
        &api,
        &node_sock,
        runner.clone(),
        Duration::from_secs(2),
        Duration::from_secs(1),
    );
    let controller = support::start_controller(&api, &ctrl_sock);
    let pool_capacity = eventually("the thin pool's capacity annotation", 180, || {
        capacity(&api, "vg1")
    })
    .await;
    eventually("the thick class's capacity", 60, || capacity(&api, "vg2")).await;
    let mut ctrl = ControllerClient::new(channel(&ctrl_sock).await);
    let mut node = NodeClient::new(channel(&node_sock).await);
    let lvm = Lvm::new(runner.clone());

    // Provision xfs on the default class (no class parameter), write, unpublish, republish.
    let mut req = create_request("pvc-xfs", "vg1", 300 * MIB, Some("xfs"));
    req.parameters.clear();
    let v = provision(&mut ctrl, req).await;
    let lv = lvm
        .report()
        .unwrap()
        .lv("vg1", &v.volume_id)
        .cloned()
        .expect("the LV exists");
    assert_eq!(
        v.capacity_bytes as u64, lv.size,
        "the size returned is the LV's"
    );
    assert_eq!(lv.size, 300 << 20);
    assert_eq!(
        v.accessible_topology[0].segments["topology.topolvm.io/node"],
        "node-a"
    );
    let a = dir.join("pods/a");
    publish(&mut node, &v.volume_id, &a, Some("xfs")).await;
    std::fs::write(a.join("data"), "hello from lvms-rs").unwrap();
    unpublish(&mut node, &v.volume_id, &a).await;
    assert!(!a.exists(), "unpublish removes the target");
    let b = dir.join("pods/b");
    publish(&mut node, &v.volume_id, &b, Some("xfs")).await;
    assert_eq!(
        std::fs::read_to_string(b.join("data")).unwrap(),
        "hello from lvms-rs"
    );

    // Capacity follows the change without waiting for a resync: ratio × pool − promised.
    eventually("capacity to drop by the volume", 10, || {
        (capacity(&api, "vg1")? == pool_capacity - (300 << 20)).then_some(())
    })
    .await;

    // Expand online: the controller grows the LV, the node grows the mounted filesystem.
    let before = fs_bytes(&mut node, &v.volume_id, &b).await;
    let e = ctrl
        .controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 600 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(cap(Some("xfs"))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(e.node_expansion_required);
    assert_eq!(e.capacity_bytes, 600 * MIB);
    node.node_expand_volume(pb::NodeExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        volume_path: b.to_string_lossy().into(),
        volume_capability: Some(cap(Some("xfs"))),
        ..Default::default()
    })
    .await
    .unwrap();
    let stats = node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: v.volume_id.clone(),
            volume_path: b.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = fs_bytes(&mut node, &v.volume_id, &b).await;
    assert!(
        after - before >= 290 * MIB,
        "the mounted filesystem grew by the 300 MiB: {before} → {after}"
    );
    assert!(
        stats
            .usage
            .iter()
            .any(|u| u.unit == pb::volume_usage::Unit::Inodes as i32 && u.total > 0)
    );
    assert!(!stats.volume_condition.unwrap_or_default().abnormal);

    // Snapshot, then restore it into a new volume: the same data, mounted beside the origin.
    let s = ctrl
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: v.volume_id.clone(),
            name: "snap-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s.ready_to_use);
    std::fs::write(b.join("data"), "changed after the snapshot").unwrap();
    let mut req = create_request("pvc-restore", "vg1", 600 * MIB, Some("xfs"));
    req.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(
            pb::volume_content_source::SnapshotSource {
                snapshot_id: s.snapshot_id.clone(),
            },
        )),
    });
    let restored = provision(&mut ctrl, req).await;
    let c = dir.join("pods/c");
    publish(&mut node, &restored.volume_id, &c, Some("xfs")).await;
    assert_eq!(
        std::fs::read_to_string(c.join("data")).unwrap(),
        "hello from lvms-rs"
    );

    // Clone the live volume: today's data.
    let mut req = create_request("pvc-clone", "vg1", 600 * MIB, Some("xfs"));
    req.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: v.volume_id.clone(),
            },
        )),
    });
    // xfs keeps recent writes in its log until a sync: flush them so the clone sees them.
    std::process::Command::new("sync").status().unwrap();
    let clone = provision(&mut ctrl, req).await;
    let d = dir.join("pods/d");
    publish(&mut node, &clone.volume_id, &d, Some("xfs")).await;
    assert_eq!(
        std::fs::read_to_string(d.join("data")).unwrap(),
        "changed after the snapshot"
    );

    // ext4 on the thin class.
    let x = provision(
        &mut ctrl,
        create_request("pvc-ext4", "vg1", 64 * MIB, Some("ext4")),
    )
    .await;
    let f = dir.join("pods/f");
    publish(&mut node, &x.volume_id, &f, Some("ext4")).await;
    std::fs::write(f.join("data"), "ext4").unwrap();

    // A block volume on the thick class: bytes written through the target are on the LV.
    let blk = provision(
        &mut ctrl,
        create_request("pvc-block", "vg2", 16 * MIB, None),
    )
    .await;
    let g = dir.join("pods/g");
    publish(&mut node, &blk.volume_id, &g, None).await;
    {
        use std::io::{Read, Seek, Write};
        let mut t = std::fs::OpenOptions::new().write(true).open(&g).unwrap();
        t.write_all(b"raw block bytes").unwrap();
        t.sync_all().unwrap();
        let mut dev = std::fs::File::open(format!("/dev/vg2/{}", blk.volume_id)).unwrap();
        dev.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut buf = [0u8; 15];
        dev.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"raw block bytes");
    }
    let thick_snap = ctrl
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: blk.volume_id.clone(),
            name: "snap-thick".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        thick_snap.code(),
        tonic::Code::InvalidArgument,
        "{thick_snap:?}"
    );

    // Tear everything down: no LV of ours is left, no LogicalVolume either.
    for (id, target) in [
        (&v.volume_id, &b),
        (&restored.volume_id, &c),
        (&clone.volume_id, &d),
        (&x.volume_id, &f),
        (&blk.volume_id, &g),
    ] {
        unpublish(&mut node, id, target).await;
    }
    ctrl.delete_snapshot(pb::DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    for id in [
        &v.volume_id,
        &restored.volume_id,
        &clone.volume_id,
        &x.volume_id,
        &blk.volume_id,
    ] {
        ctrl.delete_volume(pb::DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(ours(&lvm), Vec::<String>::new());
    assert!(api.list(LVS).is_empty());
    eventually("capacity back to the whole pool", 10, || {
        (capacity(&api, "vg1")? == pool_capacity).then_some(())
    })
    .await;

    // An LV of ours without its LogicalVolume (a crash between steps) is collected.
    lvm.create_thin_lv(
        "vg1",
        "pool",
        "ghost",
        8 << 20,
        &["lvms.topolvm.io/logicalvolume=gone".into()],
    )
    .unwrap();
    eventually("the orphan to be removed", 60, || {
        lvm.report()
            .unwrap()
            .lv("vg1", "ghost")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        !agent.is_finished() && !controller.is_finished(),
        "both services still run"
    );
}
