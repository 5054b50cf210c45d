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
fn a_filesystem_the_kernel_made_read_only_is_told_from_a_read_only_publish() {
    // mountinfo lines as the kernel writes them: mount options, then the superblock's.
    let line = |mount: &str, fs: &str, sb: &str| {
        lvm::mount::parse(&format!(
            "36 25 253:4 / /pods/a {mount} shared:1 - {fs} /dev/mapper/vg1-v {sb}\n"
        ))
        .unwrap()
        .remove(0)
    };
    let nosys = Path::new("/nonexistent-sys");
    let problem = |m| ops::read_only_problem("uid-1", &m, nosys);
    assert_eq!(problem(line("rw,relatime", "xfs", "rw")), None, "healthy");
    let p = problem(line("rw,relatime", "ext4", "ro,errors=remount-ro")).unwrap();
    assert!(
        p.contains("volume uid-1 went read-only at /pods/a"),
        "the superblock went ro under a rw mount: {p}"
    );
    assert_eq!(
        problem(line("ro,relatime", "ext4", "ro")),
        None,
        "mounted -o ro: both ro"
    );
    assert_eq!(
        problem(line("ro,relatime", "xfs", "rw")),
        None,
        "a read-only bind over a writable mount"
    );

    // Newer kernels stop ext4's writes without a trace in the mount table; its error count in
    // sysfs says it.
    let sys = std::env::temp_dir().join(format!("lvms-sys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&sys);
    std::fs::create_dir_all(sys.join("dev/block")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/block/dm-4",
        sys.join("dev/block/253:4"),
    )
    .unwrap();
    let ext4 = sys.join("fs/ext4/dm-4");
    std::fs::create_dir_all(&ext4).unwrap();
    std::fs::write(ext4.join("errors_count"), "0\n").unwrap();
    let mounted = line("rw,relatime", "ext4", "rw,errors=remount-ro,stripe=128");
    assert_eq!(ops::read_only_problem("uid-1", &mounted, &sys), None);
    std::fs::write(ext4.join("errors_count"), "3\n").unwrap();
    std::fs::write(ext4.join("last_error_func"), "ext4_setattr\n").unwrap();
    let p = ops::read_only_problem("uid-1", &mounted, &sys).unwrap();
    assert!(
        p.contains("went read-only at /pods/a")
            && p.contains("3 error(s), the last in ext4_setattr")
            && p.contains("e2fsck"),
        "{p}"
    );
    let continuing = line("rw,relatime", "ext4", "rw,errors=continue");
    assert_eq!(
        ops::read_only_problem("uid-1", &continuing, &sys),
        None,
        "errors=continue keeps writing"
    );
    std::fs::remove_dir_all(&sys).unwrap();
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

const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
const EVENTS: &str = "apis/events.k8s.io/v1/events";

/// A node with volume `v` (vg1/v, major:minor fd:fff) as commands in the host's namespace see
/// it: the target does not exist yet, the device holds no filesystem, and mkfs fails while
/// `mkfs_fails` says so (as mkfs.xfs does for `-b size=1000`), or it holds btrfs while
/// `foreign` says so. Everything else succeeds.
struct NodeHost {
    mkfs_fails: std::sync::atomic::AtomicBool,
    foreign: std::sync::atomic::AtomicBool,
}

impl Runner for NodeHost {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, Error> {
        let ok = |stdout: &str| {
            Ok(Output {
                stdout: stdout.into(),
                stderr: String::new(),
            })
        };
        let last = args.last().map_or("", String::as_str);
        let fail = |code, stderr: &str| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            code: Some(code),
            stderr: stderr.into(),
        };
        match program {
            "lvm" => ok(&report(vec![lv("v", "-wi-a-----", "", "", "", "")])),
            "realpath" if last == "/dev/vg1/v" => ok("/dev/dm-4095\n"),
            "realpath" => Err(Error::NotFound {
                command: format!("realpath {last}"),
                stderr: "No such file or directory".into(),
            }),
            "stat" if last == "/dev/vg1/v" => ok("block special file|fd|fff\n"),
            "blkid" if self.foreign.load(std::sync::atomic::Ordering::SeqCst) => ok("btrfs\n"),
            "blkid" => Err(fail(2, "")),
            "mkfs.xfs" if self.mkfs_fails.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(fail(1, "illegal block size 1000\nUsage: mkfs.xfs ..."))
            }
            "mkdir" | "mkfs.xfs" | "mount" => ok(""),
            _ => Err(fail(1, "unexpected in this test")),
        }
    }
}

fn xfs_publish(context: &[(&str, &str)]) -> Request<pb::NodePublishVolumeRequest> {
    let mut req = publish(
        "v",
        "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pv-1/mount",
        Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(MountVolume {
                fs_type: "xfs".into(),
                ..Default::default()
            })),
            access_mode: Some(volume_capability::AccessMode {
                mode: AccessMode::SingleNodeWriter as i32,
            }),
        }),
    );
    req.get_mut().volume_context = context
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    req
}

/// Waits until the LogicalVolume cache sees `publishError` as `want` (the watch lags a write).
async fn cached(store: &kube::runtime::reflector::Store<lvms_api::LogicalVolume>, want: &str) {
    let seen = || {
        store.state().iter().any(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.volume_id == "v" && s.publish_error == want)
        })
    };
    for _ in 0..200 {
        if seen() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the cache never saw publishError {want:?}");
}

/// The double with LogicalVolume `pvc-1` (volume `v`) and PV `pv-1` bound to claim app/data,
/// a running LogicalVolume cache, and the node service recording to it.
async fn recording_node() -> (
    api_double::ApiDouble,
    kube::runtime::reflector::Store<lvms_api::LogicalVolume>,
    Arc<NodeHost>,
    NodeService,
) {
    use futures::StreamExt;
    let api = api_double::ApiDouble::new();
    api.seed(
        LVS,
        json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": "pvc-1"},
            "spec": {"name": "pvc-1", "nodeName": "node-a", "size": "1Gi"},
            "status": {"volumeID": "v", "code": 0, "currentSize": "1Gi"}}),
    );
    api.seed(
        "api/v1/persistentvolumes",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"},
            "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "namespace": "app", "name": "data", "uid": "uid-claim"}}}),
    );
    let client = api.client();
    let (store, writer) = kube::runtime::reflector::store();
    let watch = kube::runtime::watcher(
        kube::Api::<lvms_api::LogicalVolume>::all(client.clone()),
        Default::default(),
    );
    tokio::spawn(kube::runtime::reflector(writer, watch).for_each(|_| async {}));
    store.wait_until_ready().await.unwrap();
    let node = Arc::new(NodeHost {
        mkfs_fails: true.into(),
        foreign: false.into(),
    });
    let reports = Arc::new(Reports::new(Lvm::new(node.clone())));
    let svc = NodeService::new("node-a", reports, node.clone(), Mode::HostNamespace)
        .with_kube(Kube::new(client, store.clone(), "node-a"));
    (api, store, node, svc)
}

const CLAIM_CONTEXT: [(&str, &str); 4] = [
    ("lvms.topolvm.io/pvc-name", "data"),
    ("lvms.topolvm.io/pvc-namespace", "app"),
    ("lvms.topolvm.io/pv-name", "pv-1"),
    ("lvms.topolvm.io/mkfs-options", "-b size=1000"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mkfs_is_told_to_the_logical_volume_and_the_claim_until_a_publish_succeeds() {
    let (api, store, node, svc) = recording_node().await;
    let e = svc
        .node_publish_volume(xfs_publish(&CLAIM_CONTEXT))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "the gRPC answer is as before");
    assert!(
        e.message().contains("making xfs on /dev/vg1/v with the StorageClass's lvms.topolvm.io/mkfs-options \"-b size=1000\"")
            && e.message().contains("illegal block size 1000"),
        "{}",
        e.message()
    );
    let lv = api.get(LVS, None, "pvc-1").unwrap();
    assert_eq!(
        lv["status"]["publishError"],
        e.message(),
        "the node's words"
    );
    assert_eq!(
        (&lv["status"]["code"], &lv["status"]["currentSize"]),
        (&json!(0), &json!("1Gi")),
        "the agent's fields stay: a non-zero code would fail the create"
    );
    let events = api.list(EVENTS);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "FailedMkfs");
    assert_eq!(ev["metadata"]["namespace"], "app");
    assert_eq!(
        ev["regarding"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "app", "name": "data", "uid": "uid-claim"}),
        "kubectl describe pvc finds it by the claim's UID, from the PV's claimRef"
    );
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with("volume v on node node-a: ") && note.contains("illegal block size 1000"),
        "{note}"
    );

    // Fixed (here: mkfs accepts it now); the next publish clears the field, and only it, even
    // before the cache has seen the failure.
    node.mkfs_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    svc.node_publish_volume(xfs_publish(&CLAIM_CONTEXT))
        .await
        .unwrap();
    let lv = api.get(LVS, None, "pvc-1").unwrap();
    assert!(lv["status"].get("publishError").is_none(), "{lv}");
    assert_eq!(lv["status"]["currentSize"], "1Gi");
    assert_eq!(api.list(EVENTS).len(), 1, "success makes no Event");

    // A healthy publish asks nothing of the API server.
    cached(&store, "").await;
    let before = api.requests().len();
    svc.node_publish_volume(xfs_publish(&CLAIM_CONTEXT))
        .await
        .unwrap();
    let after = api.requests();
    assert_eq!(after.len(), before, "{:?}", &after[before..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_made_before_the_claim_keys_records_on_its_logical_volume_only() {
    let (api, _store, _node, svc) = recording_node().await;
    let old = [("lvms.topolvm.io/mkfs-options", "-b size=1000")];
    let e = svc
        .node_publish_volume(xfs_publish(&old))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    let lv = api.get(LVS, None, "pvc-1").unwrap();
    assert_eq!(lv["status"]["publishError"], e.message());
    assert!(api.list(EVENTS).is_empty(), "no claim to tell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_other_than_mkfs_and_mount_are_not_recorded() {
    let (api, _store, node, svc) = recording_node().await;
    // Argument errors (the controller refuses these at CreateVolume) stay the RPC's answer ...
    let mut bad = CLAIM_CONTEXT;
    bad[3].1 = "-f";
    let e = svc
        .node_publish_volume(xfs_publish(&bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // ... and so does data this driver will not touch: nothing mkfs or mount said.
    node.foreign
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = svc
        .node_publish_volume(xfs_publish(&CLAIM_CONTEXT))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let requests = api.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("GET")),
        "nothing written: {requests:?}"
    );
    assert!(api.list(EVENTS).is_empty());
}
