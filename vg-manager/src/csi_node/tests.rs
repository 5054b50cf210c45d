//! What the node service decides without root: argument checks, capabilities, lookups and
//! conditions from a report. Mounting on real LVM is in tests/vm_csi_node.rs.

use std::sync::Mutex;

use csi::pb::node_server::Node;
use csi::pb::volume_capability::access_mode::Mode as AccessMode;
use csi::pb::volume_capability::{self, MountVolume};
use csi::pb::{self, VolumeCapability};
use lvm::runner::Output;
use lvm::{Error, Lvm};
use serde_json::json;
use tonic::Code;

use super::ops::{dumpe2fs_size, xfs_info_size};
use super::*;

/// Answers `lvm fullreport` with `lvs` and refuses every other command, recording all of them.
struct Fake {
    report: String,
    calls: Mutex<Vec<String>>,
}

impl Runner for Fake {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
        self.calls.lock().unwrap().push(program.to_string());
        if program == "lvm" {
            Ok(Output {
                stdout: self.report.clone(),
                stderr: String::new(),
            })
        } else {
            Err(Error::Command {
                command: format!("{program} {}", args.join(" ")),
                code: Some(1),
                stderr: "not in unit tests".into(),
            })
        }
    }
}

fn lv(name: &str, attr: &str, pool: &str, tags: &str, data: &str, meta: &str) -> serde_json::Value {
    json!({"lv_name": name, "vg_name": "vg1", "lv_size": "1073741824", "lv_attr": attr, "lv_tags": tags,
        "pool_lv": pool, "origin": "", "data_percent": data, "metadata_percent": meta})
}

fn report(lvs: Vec<serde_json::Value>) -> String {
    json!({"report": [{"vg": [{"vg_name": "vg1", "vg_size": "2147483648", "vg_free": "0"}], "lv": lvs}]})
        .to_string()
}

fn service(lvs: Vec<serde_json::Value>) -> (Arc<Fake>, NodeService) {
    let fake = Arc::new(Fake {
        report: report(lvs),
        calls: Mutex::default(),
    });
    let reports = Arc::new(Reports::new(Lvm::new(fake.clone())));
    let svc = NodeService::new("node-a", reports, fake.clone(), Mode::Direct);
    (fake, svc)
}

fn mount_cap(mode: AccessMode) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(MountVolume::default())),
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
    })
}

fn publish(
    id: &str,
    target: &str,
    cap: Option<VolumeCapability>,
) -> Request<pb::NodePublishVolumeRequest> {
    Request::new(pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.into(),
        volume_capability: cap,
        ..Default::default()
    })
}

fn invalid(e: Status, field: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(field), "{field}: {}", e.message());
}

#[tokio::test]
async fn arguments_are_checked_before_anything_runs() {
    let (fake, svc) = service(vec![]);
    let ok = mount_cap(AccessMode::SingleNodeWriter);
    let e = svc
        .node_publish_volume(publish("", "/t", ok.clone()))
        .await
        .unwrap_err();
    invalid(e, "volume_id");
    let e = svc
        .node_publish_volume(publish("v", "", ok.clone()))
        .await
        .unwrap_err();
    invalid(e, "target_path");
    let e = svc
        .node_publish_volume(publish("v", "rel/t", ok.clone()))
        .await
        .unwrap_err();
    invalid(e, "target_path");
    let e = svc
        .node_publish_volume(publish("v", "-o/x", ok.clone()))
        .await
        .unwrap_err();
    invalid(e, "target_path");
    let e = svc
        .node_publish_volume(publish("v", "/t", None))
        .await
        .unwrap_err();
    invalid(e, "volume_capability");
    let multi = mount_cap(AccessMode::MultiNodeMultiWriter);
    let e = svc
        .node_publish_volume(publish("v", "/t", multi))
        .await
        .unwrap_err();
    invalid(e, "volume_capability.access_mode");
    let btrfs = Some(VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(MountVolume {
            fs_type: "btrfs".into(),
            ..Default::default()
        })),
        ..ok.clone().unwrap()
    });
    let e = svc
        .node_publish_volume(publish("v", "/t", btrfs))
        .await
        .unwrap_err();
    invalid(e, "volume_capability.mount.fs_type");

    let unpub = |id: &str, t: &str| {
        Request::new(pb::NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: t.into(),
        })
    };
    invalid(
        svc.node_unpublish_volume(unpub("", "/t"))
            .await
            .unwrap_err(),
        "volume_id",
    );
    invalid(
        svc.node_unpublish_volume(unpub("v", "")).await.unwrap_err(),
        "target_path",
    );

    let expand = |id: &str, p: &str| {
        Request::new(pb::NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        })
    };
    invalid(
        svc.node_expand_volume(expand("", "/p")).await.unwrap_err(),
        "volume_id",
    );
    invalid(
        svc.node_expand_volume(expand("v", "")).await.unwrap_err(),
        "volume_path",
    );
    let stats = |id: &str, p: &str| {
        Request::new(pb::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        })
    };
    invalid(
        svc.node_get_volume_stats(stats("", "/p"))
            .await
            .unwrap_err(),
        "volume_id",
    );
    invalid(
        svc.node_get_volume_stats(stats("v", "")).await.unwrap_err(),
        "volume_path",
    );
    assert!(
        fake.calls.lock().unwrap().is_empty(),
        "no command for a bad request"
    );
}

#[tokio::test]
async fn unknown_volumes_and_missing_paths() {
    let (fake, svc) = service(vec![
        lv("pool", "twi-aotz--", "", "", "10.00", "5.00"),
        lv("small", "Vwi-a-tz--", "pool", "", "1.00", ""),
    ]);
    let e = svc
        .node_publish_volume(publish(
            "nope",
            "/t",
            mount_cap(AccessMode::SingleNodeWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("volume_id nope") && e.message().contains("node-a"),
        "{}",
        e.message()
    );
    // A thin pool is not a volume, whatever it is called.
    let e = svc
        .node_publish_volume(publish(
            "pool",
            "/t",
            mount_cap(AccessMode::SingleNodeWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = svc
        .node_expand_volume(Request::new(pb::NodeExpandVolumeRequest {
            volume_id: "small".into(),
            volume_path: "/p".into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().contains("capacity_range.required_bytes"),
        "{}",
        e.message()
    );
    let e = svc
        .node_expand_volume(Request::new(pb::NodeExpandVolumeRequest {
            volume_id: "nope".into(),
            volume_path: "/p".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Stats: an unknown volume is NotFound even at a path that exists; a known one is NotFound
    // at a path that does not.
    let stats = |id: &str, p: &str| {
        Request::new(pb::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        })
    };
    let dir = std::env::temp_dir();
    let e = svc
        .node_get_volume_stats(stats("nope", &dir.to_string_lossy()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("volume_id nope"), "{}", e.message());
    let e = svc
        .node_get_volume_stats(stats("small", "/nonexistent/volume/path"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("does not exist"), "{}", e.message());
    // Unpublishing what is not there is done.
    svc.node_unpublish_volume(Request::new(pb::NodeUnpublishVolumeRequest {
        volume_id: "nope".into(),
        target_path: "/nonexistent/target".into(),
    }))
    .await
    .unwrap();
    assert!(
        fake.calls.lock().unwrap().iter().all(|c| c == "lvm"),
        "only reports were read: {:?}",
        fake.calls.lock().unwrap()
    );
}

/// What csi-sanity v5 sends in its Node specs "NodeGetVolumeStats should fail when volume is
/// not found", "... should fail when volume does not exist on the specified path" (a volume
/// that exists) and "NodeExpandVolume should fail when volume is not found": NOT_FOUND every
/// time, though "some/path" is not even absolute.
#[tokio::test]
async fn csi_sanity_missing_volumes_and_paths_are_not_found() {
    let (fake, svc) = service(vec![
        lv("pool", "twi-aotz--", "", "", "10.00", "5.00"),
        lv("small", "Vwi-a-tz--", "pool", "", "1.00", ""),
    ]);
    let stats = |id: &str| {
        Request::new(pb::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: "some/path".into(),
            ..Default::default()
        })
    };
    let expand = |id: &str| {
        Request::new(pb::NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: "some/path".into(),
            ..Default::default()
        })
    };
    let not_found = |e: Status, what: &str| {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains(what), "{what}: {}", e.message());
    };
    not_found(
        svc.node_get_volume_stats(stats("id")).await.unwrap_err(),
        "volume_id id",
    );
    not_found(
        svc.node_get_volume_stats(stats("small")).await.unwrap_err(),
        "\"some/path\"",
    );
    not_found(
        svc.node_expand_volume(expand("id")).await.unwrap_err(),
        "volume_id id",
    );
    not_found(
        svc.node_expand_volume(expand("small")).await.unwrap_err(),
        "\"some/path\"",
    );
    assert!(
        fake.calls.lock().unwrap().iter().all(|c| c == "lvm"),
        "a relative path reaches no command: {:?}",
        fake.calls.lock().unwrap()
    );
}

#[tokio::test]
async fn info_and_capabilities() {
    let (_, svc) = service(vec![]);
    let info = svc
        .node_get_info(Request::new(pb::NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-a");
    assert_eq!(info.max_volumes_per_node, 0);
    assert_eq!(
        info.accessible_topology.unwrap().segments,
        [("topology.topolvm.io/node".to_string(), "node-a".to_string())].into()
    );
    let caps = svc
        .node_get_capabilities(Request::new(pb::NodeGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let types: Vec<rpc::Type> = caps.iter().filter_map(capability_type).collect();
    assert_eq!(
        types,
        [
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
            rpc::Type::VolumeCondition,
            rpc::Type::SingleNodeMultiWriter
        ]
    );
    assert!(
        !types.contains(&rpc::Type::StageUnstageVolume),
        "publish mounts directly"
    );
}

#[test]
fn one_operation_per_volume_at_a_time() {
    let (_, svc) = service(vec![]);
    let held = svc.begin("v1").unwrap();
    assert_eq!(svc.begin("v1").err().unwrap().code(), Code::Aborted);
    let other = svc.begin("v2").unwrap();
    drop(held);
    drop(svc.begin("v1").unwrap());
    drop(other);
}

#[test]
fn picks_the_tagged_volume() {
    let r = lvm::report::parse(&report(vec![
        lv("v", "Vwi-a-tz--", "pool", "", "1.00", ""),
        json!({"lv_name": "v", "vg_name": "vg2", "lv_size": "4194304", "lv_attr": "Vwi-a-tz--",
            "lv_tags": "lvms.topolvm.io/logicalvolume=pvc-1", "pool_lv": "pool"}),
        lv("old", "-wi-a-----", "", "", "", ""),
    ]))
    .unwrap();
    assert_eq!(pick(&r, "v").unwrap().vg_name, "vg2");
    assert_eq!(
        pick(&r, "old").unwrap().vg_name,
        "vg1",
        "untagged (made by TopoLVM) is fine"
    );
    assert!(pick(&r, "x").is_none());
}

#[test]
fn conditions_of_volume_and_pool() {
    let at = |pool_attr: &str, data: &str, meta: &str, vol_attr: &str| {
        let r = lvm::report::parse(&report(vec![
            lv("pool", pool_attr, "", "", data, meta),
            lv("v", vol_attr, "pool", "", "50.00", ""),
        ]))
        .unwrap();
        let v = r.lv("vg1", "v").unwrap().clone();
        condition(&r, &v)
    };
    assert_eq!(at("twi-aotz--", "40.00", "10.00", "Vwi-aotz--"), None);
    let full = at("twi-aotzD-", "100.00", "10.00", "Vwi-aotz--").unwrap();
    assert!(
        full.contains("vg1/pool is out of data space (100.00% used)"),
        "{full}"
    );
    assert!(!full.contains("; "), "one message for one problem: {full}");
    let meta = at("twi-aotzM-", "10.00", "100.00", "Vwi-aotz--").unwrap();
    assert!(
        meta.contains("metadata space") && meta.contains("read-only metadata"),
        "{meta}"
    );
    assert!(
        at("twi-aotzF-", "", "", "Vwi-aotz--")
            .unwrap()
            .contains("has failed")
    );
    assert!(
        at("twi-aotz--", "1.00", "1.00", "Vwi-aotzp-")
            .unwrap()
            .contains("partial")
    );
    // A thick volume has no pool to fill.
    let r = lvm::report::parse(&report(vec![lv("t", "-wi-ao----", "", "", "", "")])).unwrap();
    assert_eq!(condition(&r, r.lv("vg1", "t").unwrap()), None);
}

#[test]
fn filesystem_sizes_from_their_tools() {
    let xfs = "meta-data=/dev/mapper/vg1-v   isize=512    agcount=4, agsize=65536 blks\n         =                       sectsz=512   attr=2, projid32bit=1\ndata     =                       bsize=4096   blocks=262144, imaxpct=25\n         =                       sunit=0      swidth=0 blks\nnaming   =version 2              bsize=4096   ascii-ci=0, ftype=1\nlog      =internal log           bsize=4096   blocks=16384, version=2\n";
    assert_eq!(xfs_info_size(xfs), Some(1 << 30));
    assert_eq!(xfs_info_size("nothing"), None);
    let ext4 = "Filesystem volume name:   <none>\nInode count:              65536\nBlock count:              262144\nReserved block count:     13107\nBlock size:               4096\n";
    assert_eq!(dumpe2fs_size(ext4), Some(1 << 30));
    assert_eq!(dumpe2fs_size("Block count: x\nBlock size: 4096\n"), None);
}

#[tokio::test]
async fn filesystem_options_are_checked_again_before_anything_runs() {
    let (fake, svc) = service(vec![]);
    let cap = |flags: &[&str]| {
        Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(MountVolume {
                fs_type: "xfs".into(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })),
            access_mode: Some(volume_capability::AccessMode {
                mode: AccessMode::SingleNodeWriter as i32,
            }),
        })
    };
    // A PV edited after provisioning: a privilege-widening mount option.
    let e = svc
        .node_publish_volume(publish("v", "/t", cap(&["noatime", "suid"])))
        .await
        .unwrap_err();
    invalid(
        e,
        "volume_capability.mount.mount_flags (mountOptions): xfs mount option \"suid\": widens privilege",
    );
    // ... or volume attributes with an option off the allow-list.
    let mut req = publish("v", "/t", cap(&["noatime"]));
    req.get_mut().volume_context = [(
        csi::MKFS_OPTIONS_KEY.to_string(),
        "-i size=512 -f".to_string(),
    )]
    .into();
    let e = svc.node_publish_volume(req).await.unwrap_err();
    invalid(
        e,
        "volume_context[lvms.topolvm.io/mkfs-options]: mkfs.xfs option \"-f\"",
    );
    assert!(fake.calls.lock().unwrap().is_empty(), "nothing ran");
    // Checked options pass on to the volume lookup (which finds nothing here).
    let mut req = publish("v", "/t", cap(&["noatime"]));
    req.get_mut().volume_context =
        [(csi::MKFS_OPTIONS_KEY.to_string(), "-i size=512".to_string())].into();
    assert_eq!(
        svc.node_publish_volume(req).await.unwrap_err().code(),
        Code::NotFound
    );
}
