//! Volume health on real LVM in the guest, as the external-health-monitor controller and kubelet
//! see it: the whole driver runs (the agent with its LogicalVolume controller and CSI node
//! service, and the CSI controller service) against the API double, and each fault is made the
//! way it happens on a node: an LV removed behind the driver's back, an ext4 filesystem the
//! kernel remounts read-only after an error (`errors=remount-ro`), a thin pool written full.
//! ControllerGetVolume and ListVolumes must turn abnormal with a message naming the fault, the
//! node's NodeGetVolumeStats too where it applies, and normal again once the fault is gone.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use csi::pb::node_client::NodeClient;
use csi::pb::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
use serde_json::json;
use tonic::transport::Channel;
use vm_test::Disk;

mod support;

use support::{MIB, capacity, channel, create_request, eventually, provision, sh};

/// Polls the async `f` every 200 ms until it gives a value, for at most `secs` seconds.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The controller's condition of volume `id` (ControllerGetVolume).
async fn get_condition(ctrl: &mut ControllerClient<Channel>, id: &str) -> pb::VolumeCondition {
    ctrl.controller_get_volume(pb::ControllerGetVolumeRequest {
        volume_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("ControllerGetVolume {id}: {e}"))
    .into_inner()
    .status
    .and_then(|s| s.volume_condition)
    .expect("a condition: VOLUME_CONDITION is advertised")
}

/// The condition ListVolumes gives volume `id`.
async fn listed_condition(ctrl: &mut ControllerClient<Channel>, id: &str) -> pb::VolumeCondition {
    let list = ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    list.entries
        .into_iter()
        .find(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == id))
        .unwrap_or_else(|| panic!("{id} is not listed"))
        .status
        .and_then(|s| s.volume_condition)
        .expect("a condition in every entry")
}

/// Waits until the controller reports `id` abnormal (wanted = true) or normal, and returns the
/// condition with how long it took.
async fn controller_says(
    ctrl: &mut ControllerClient<Channel>,
    id: &str,
    abnormal: bool,
) -> (pb::VolumeCondition, Duration) {
    let t = Instant::now();
    let c = until(&format!("{id} abnormal = {abnormal}"), 60, || {
        let mut ctrl = ctrl.clone();
        async move {
            let c = get_condition(&mut ctrl, id).await;
            (c.abnormal == abnormal).then_some(c)
        }
    })
    .await;
    (c, t.elapsed())
}

async fn stats(node: &mut NodeClient<Channel>, id: &str, path: &Path) -> pb::VolumeCondition {
    node.node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.to_string_lossy().into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("NodeGetVolumeStats {id}: {e}"))
    .into_inner()
    .volume_condition
    .expect("the node reports a condition")
}

async fn publish(
    node: &mut NodeClient<Channel>,
    id: &str,
    target: &Path,
    fs: &str,
    flags: &[&str],
) {
    node.node_publish_volume(pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(pb::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode {
                mode: access_mode::Mode::SingleNodeWriter as i32,
            }),
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("publishing {id}: {e}"));
}

async fn unpublish(node: &mut NodeClient<Channel>, id: &str, target: &Path) {
    node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
    })
    .await
    .unwrap();
}

async fn delete(ctrl: &mut ControllerClient<Channel>, id: &str) {
    ctrl.delete_volume(pb::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("DeleteVolume {id}: {e}"));
}

/// `lvs -o FIELD vg1/LV`, trimmed.
fn lvs(lv: &str, field: &str) -> String {
    sh(&[
        "lvs",
        "--noheadings",
        "--nosuffix",
        "--units",
        "m",
        "-o",
        field,
        lv,
    ])
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_health_on_real_lvm() {
    let Some(_) = vm_test::guest("volume_health_on_real_lvm", &[Disk::Blank("1G")]) else {
        return;
    };
    let api = ApiDouble::new();
    // Half the disk for the pool, so it can be grown back out of a full state; a 2 s resync:
    // the health check runs after every pass.
    let support::Driver {
        dir,
        node_sock,
        ctrl_sock,
        agent,
        controller,
    } = support::start_thin_driver(&api, "health", 50, Duration::from_secs(300));
    eventually("the thin pool's capacity annotation", 180, || {
        capacity(&api, "vg1")
    })
    .await;
    let mut ctrl = ControllerClient::new(channel(&ctrl_sock).await);
    let mut node = NodeClient::new(channel(&node_sock).await);

    // ---- an LV removed behind the driver's back ----------------------------------------
    let gone = provision(&mut ctrl, create_request("pvc-gone", "vg1", 32 * MIB, None)).await;
    let (c, _) = controller_says(&mut ctrl, &gone.volume_id, false).await;
    assert!(c.message.is_empty(), "{c:?}");
    sh(&["lvremove", "-f", &format!("vg1/{}", gone.volume_id)]);
    let (c, took) = controller_says(&mut ctrl, &gone.volume_id, true).await;
    eprintln!("health: LV removed -> ControllerGetVolume abnormal in {took:?}");
    assert!(
        c.message
            .contains(&format!("logical volume vg1/{} is missing", gone.volume_id)),
        "{c:?}"
    );
    assert_eq!(
        listed_condition(&mut ctrl, &gone.volume_id).await,
        c,
        "ListVolumes agrees"
    );
    // The claim can still be deleted.
    delete(&mut ctrl, &gone.volume_id).await;
    let e = ctrl
        .controller_get_volume(pb::ControllerGetVolumeRequest {
            volume_id: gone.volume_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // ---- ext4 remounted read-only by the kernel after an error --------------------------
    let ro = provision(
        &mut ctrl,
        create_request("pvc-ro", "vg1", 64 * MIB, Some("ext4")),
    )
    .await;
    let target = dir.join("pods/ro");
    publish(
        &mut node,
        &ro.volume_id,
        &target,
        "ext4",
        &["errors=remount-ro"],
    )
    .await;
    std::fs::write(target.join("data"), "before").unwrap();
    assert!(!stats(&mut node, &ro.volume_id, &target).await.abnormal);
    controller_says(&mut ctrl, &ro.volume_id, false).await;
    // The error ext4 reports for a corrupted block, raised through its test hook.
    let dm = sh(&["realpath", &format!("/dev/vg1/{}", ro.volume_id)]);
    let dm = dm.trim().trim_start_matches("/dev/");
    std::fs::write(
        format!("/sys/fs/ext4/{dm}/trigger_fs_error"),
        "lvms-rs health test",
    )
    .unwrap();
    let err = std::fs::write(target.join("data"), "after").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    let c = stats(&mut node, &ro.volume_id, &target).await;
    assert!(
        c.abnormal && c.message.contains("went read-only"),
        "NodeGetVolumeStats: {c:?}"
    );
    let (c, took) = controller_says(&mut ctrl, &ro.volume_id, true).await;
    eprintln!("health: ext4 read-only -> ControllerGetVolume abnormal in {took:?}");
    assert!(
        c.message.contains(&format!(
            "volume {} went read-only at {}",
            ro.volume_id,
            target.display()
        )),
        "{c:?}"
    );
    assert_eq!(listed_condition(&mut ctrl, &ro.volume_id).await, c);
    // Unpublished, nothing of it is read-only any more.
    unpublish(&mut node, &ro.volume_id, &target).await;
    let (_, took) = controller_says(&mut ctrl, &ro.volume_id, false).await;
    eprintln!("health: unpublished -> normal again in {took:?}");
    delete(&mut ctrl, &ro.volume_id).await;

    // ---- a thin pool written full -------------------------------------------------------
    let pool_mib: f64 = lvs("vg1/pool", "lv_size").parse().unwrap();
    let fill = provision(
        &mut ctrl,
        create_request("pvc-fill", "vg1", 1024 * MIB, None),
    )
    .await;
    let fs = provision(
        &mut ctrl,
        create_request("pvc-fs", "vg1", 300 * MIB, Some("xfs")),
    )
    .await;
    let fs_target = dir.join("pods/fs");
    publish(&mut node, &fs.volume_id, &fs_target, "xfs", &[]).await;
    controller_says(&mut ctrl, &fill.volume_id, false).await;
    // Writes past the end fail at once instead of queueing for a minute.
    sh(&["lvchange", "--errorwhenfull", "y", "vg1/pool"]);
    let t = Instant::now();
    let out = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of=/dev/vg1/{}", fill.volume_id),
            "bs=1M",
            &format!("count={}", pool_mib as u64 + 64),
            "oflag=direct",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the pool cannot hold it all");
    eprintln!("health: pool filled in {:?}", t.elapsed());
    assert_eq!(lvs("vg1/pool", "data_percent"), "100.00");
    let (c, took) = controller_says(&mut ctrl, &fill.volume_id, true).await;
    eprintln!("health: pool full -> ControllerGetVolume abnormal in {took:?}");
    assert!(
        c.message
            .contains("thin pool vg1/pool is out of data space"),
        "{c:?}"
    );
    // Every volume of the pool is affected: the filesystem too, on both sides.
    let (c, _) = controller_says(&mut ctrl, &fs.volume_id, true).await;
    assert!(c.message.contains("thin pool vg1/pool"), "{c:?}");
    assert_eq!(listed_condition(&mut ctrl, &fs.volume_id).await, c);
    let n = stats(&mut node, &fs.volume_id, &fs_target).await;
    assert!(
        n.abnormal && n.message.contains("thin pool vg1/pool"),
        "NodeGetVolumeStats: {n:?}"
    );
    // The admin grows the pool: normal again.
    sh(&["lvextend", "-L", "+256m", "vg1/pool"]);
    let (_, took) = controller_says(&mut ctrl, &fs.volume_id, false).await;
    eprintln!("health: pool grown -> normal again in {took:?}");
    assert!(!stats(&mut node, &fs.volume_id, &fs_target).await.abnormal);
    // What the node recorded is the healthy state, without the old fault's words.
    let recorded = api
        .list(support::LVS)
        .into_iter()
        .find(|o| o["status"]["volumeID"] == fs.volume_id.as_str())
        .unwrap();
    assert_eq!(recorded["status"]["health"], json!({"abnormal": false}));
    // And it is written once: passes that find nothing new write nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = api
        .list(support::LVS)
        .into_iter()
        .find(|o| o["status"]["volumeID"] == fs.volume_id.as_str())
        .unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], recorded["metadata"]["resourceVersion"],
        "two passes later, the object is unchanged"
    );

    unpublish(&mut node, &fs.volume_id, &fs_target).await;
    delete(&mut ctrl, &fs.volume_id).await;
    delete(&mut ctrl, &fill.volume_id).await;
    assert!(
        !agent.is_finished() && !controller.is_finished(),
        "both services still run"
    );
}
