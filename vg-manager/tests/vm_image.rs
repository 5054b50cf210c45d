//! The vg-manager container image on real LVM, without a container engine: the runtime stage of
//! images/vg-manager.Dockerfile built as a directory by tests/vm/image-rootfs.sh (same Debian
//! release, same packages), with this build's binary and images/lvm.conf copied in as the
//! Dockerfile's COPY lines do. In the guest, `vg-manager` runs chrooted in it — so every program
//! it runs (lvm, lsblk, mkfs.*, xfs_growfs, resize2fs, mount...) is the image's — first alone
//! (`discover`, the image's own lvm.conf), then as the DaemonSet runs it: the host's /dev, /sys,
//! /run/udev, /run/lvm, /run/lock/lvm and /etc/lvm mounted over the image's, the host's IPC
//! namespace, talking to the API double over HTTP with a kubeconfig — and `vg-manager
//! csi-controller` from the same image as UID 65532, as the topolvm-controller Deployment runs
//! it. gRPC clients stand in for the sidecars and kubelet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use api_double::ApiDouble;
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use csi::pb::node_client::NodeClient;
use serde_json::{Value, json};
use tonic::transport::Channel;
use vm_test::Disk;

mod support;

use support::{MIB, NODE, NS, capability as cap, capacity, channel, create_request, provision, sh};

/// Where the agent's CSI socket and the pods' volumes are, inside the image.
const SOCKET: &str = "/run/csi/node.sock";
const PODS: &str = "/var/lib/kubelet/pods";

fn rootfs() -> PathBuf {
    let root = PathBuf::from(
        std::env::var("LVMS_IMAGE_ROOTFS").unwrap_or_else(|_| "/var/tmp/lvms-image-rootfs".into()),
    );
    assert!(
        root.join(".lvms-image").is_file(),
        "no image root filesystem at {}: run hack/setup.sh (tests/vm/image-rootfs.sh)",
        root.display()
    );
    root
}

/// The Dockerfile's COPY lines: the agent binary and the image's lvm.conf.
fn install(root: &Path) {
    let bin = root.join("usr/bin/vg-manager");
    std::fs::copy(env!("CARGO_BIN_EXE_vg-manager"), &bin).unwrap();
    let conf = vm_test::repo_root().join("images/lvm.conf");
    std::fs::copy(conf, root.join("etc/lvm/lvm.conf")).unwrap();
}

/// Binds the host's `path` over the image's (the DaemonSet's hostPath volumes).
fn bind(root: &Path, path: &str) {
    std::fs::create_dir_all(path).unwrap();
    let inside = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(&inside).unwrap();
    // kubelet binds hostPath volumes recursively too (the guest's /lib/modules/<version> is a
    // mount of its own).
    sh(&["mount", "--rbind", path, inside.to_str().unwrap()]);
}

/// `vg-manager ARGS` in the image.
fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).arg("/usr/bin/vg-manager").args(args);
    c
}

/// Waits for `f` to answer; on timeout, fails with `what` and the agent's log.
async fn eventually<T>(
    what: &str,
    secs: u64,
    (log, api): (&Path, &ApiDouble),
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            let ps = sh(&["ps", "-eo", "pid,etimes,args"]);
            let status = node_status(api);
            panic!(
                "timed out waiting for {what}; the agent said:\n{said}\nprocesses:\n{ps}\nnode status: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves `api` over HTTP on loopback and writes its kubeconfig into the image at /kubeconfig.
async fn serve_api(api: &ApiDouble, root: &Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    std::fs::write(
        root.join("kubeconfig"),
        api_double::served::kubeconfig(addr),
    )
    .unwrap();
    tokio::spawn(api_double::served::serve(Arc::new(api.clone()), listener));
}

/// `vg-manager run` in the image, as the DaemonSet's container runs it; output to `log`.
fn start_agent(root: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    chroot(
        root,
        &[
            "run",
            &format!("--csi-socket={SOCKET}"),
            "--health-addr=127.0.0.1:0",
            "--metrics-addr=127.0.0.1:0",
            "--resync=5",
        ],
    )
    .env("KUBECONFIG", "/kubeconfig")
    .env("NODE_NAME", NODE)
    .env("POD_NAMESPACE", NS)
    .env("RUST_LOG", "info")
    .stdout(Stdio::from(out.try_clone().unwrap()))
    .stderr(Stdio::from(out))
    .spawn()
    .unwrap()
}

fn node_status(api: &ApiDouble) -> Option<Value> {
    api.get(
        "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses",
        Some(NS),
        NODE,
    )
}

/// Publishes volume `id` at the pod path `target` (as the agent in the image sees it).
async fn publish(node: &mut NodeClient<Channel>, id: &str, target: &str, fs: &str) {
    node.node_publish_volume(pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.into(),
        volume_capability: Some(cap(Some(fs))),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("publishing {id} at {target}: {e}"));
}

/// Expands `id` to `bytes`: the controller grows the LV, the node the mounted filesystem.
async fn expand(
    ctrl: &mut ControllerClient<Channel>,
    node: &mut NodeClient<Channel>,
    id: &str,
    target: &str,
    fs: &str,
    bytes: i64,
) {
    ctrl.controller_expand_volume(pb::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capability: Some(cap(Some(fs))),
        ..Default::default()
    })
    .await
    .unwrap();
    node.node_expand_volume(pb::NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: target.into(),
        volume_capability: Some(cap(Some(fs))),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("expanding {id}: {e}"));
}

/// Total bytes of the filesystem mounted at `path` (a guest path), by the guest's df.
fn fs_bytes(path: &Path) -> u64 {
    let out = sh(&["df", "-P", "-B1", path.to_str().unwrap()]);
    out.lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn agent_runs_from_the_image() {
    let Some(g) = vm_test::guest(
        "agent_runs_from_the_image",
        &[Disk::Blank("1G"), Disk::Blank("256M")],
    ) else {
        return;
    };
    let root = rootfs();
    install(&root);
    sh(&[
        "mount",
        "-t",
        "proc",
        "proc",
        root.join("proc").to_str().unwrap(),
    ]);
    bind(&root, "/dev");
    bind(&root, "/sys");

    // The image alone, with its own lvm.conf: discover judges both disks with its lsblk and lvm.
    let out = chroot(&root, &["discover", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "discover in the image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for disk in &g.disks {
        let v = verdicts
            .iter()
            .find(|v| v["device"] == disk.as_str())
            .unwrap_or_else(|| panic!("{disk} not judged: {verdicts:?}"));
        assert_eq!(v["verdict"], "eligible", "{v}");
    }

    // As the DaemonSet runs it: the host's LVM state, locks, udev and configuration.
    for path in [
        "/run/udev",
        "/run/lvm",
        "/run/lock/lvm",
        "/etc/lvm",
        "/lib/modules",
    ] {
        bind(&root, path);
    }
    std::fs::create_dir_all(root.join("run/csi")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = ApiDouble::new();
        support::seed(
            &api,
            &[(
                "vg1",
                json!({"default": true, "deviceSelector": {"paths": [g.disks[0]]},
                    "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 10}}),
            )],
        );
        serve_api(&api, &root).await;
        let log = root.join("agent.log");
        let mut agent = start_agent(&root, &log);
        // The topolvm-controller Deployment's container: the same image as UID 65532, with
        // its socket in an emptyDir (here a directory that user owns).
        let ctrl_dir = root.join("run/csi-controller");
        std::fs::create_dir_all(&ctrl_dir).unwrap();
        sh(&["chown", "65532:65532", ctrl_dir.to_str().unwrap()]);
        let ctrl_log = root.join("controller.log");
        let mut controller = Command::new("chroot")
            .args(["--userspec=65532:65532", root.to_str().unwrap()])
            .args([
                "/usr/bin/vg-manager",
                "csi-controller",
                "--csi-socket=/run/csi-controller/csi.sock",
            ])
            .env("KUBECONFIG", "/kubeconfig")
            .env("POD_NAMESPACE", NS)
            .stdout(Stdio::from(std::fs::File::create(&ctrl_log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(root.join("controller.err")).unwrap()))
            .spawn()
            .unwrap();
        let ctrl_sock = ctrl_dir.join("csi.sock");

        let free = eventually("the thin pool's capacity annotation", 60, (&log, &api), || {
            if let Ok(Some(status)) = agent.try_wait() {
                panic!(
                    "the agent exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            capacity(&api, "vg1")
        })
        .await;
        let status = node_status(&api).expect("the node's status");
        assert_eq!(status["spec"]["nodeStatus"][0]["status"], "Ready", "{status}");
        // The host's lvm (the guest's) sees what the image's lvm made: a tagged VG and its pool.
        let lvs = sh(&["lvs", "--noheadings", "-o", "lv_name,segtype", "vg1"]);
        assert!(lvs.contains("pool") && lvs.contains("thin-pool"), "{lvs}");
        // The agent decided its LVM settings from the host's /etc/lvm (lvm2 present: only
        // dmeventd monitoring is turned off), and said so.
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(
            said.contains("LVM settings overridden") && said.contains("activation{monitoring=0}"),
            "{said}"
        );
        assert!(!said.contains("udev_sync=0"), "{said}");

        let mut ctrl = ControllerClient::new(channel(&ctrl_sock).await);
        let mut node = NodeClient::new(channel(&root.join(SOCKET.trim_start_matches('/'))).await);
        let guest_path = |p: &str| root.join(p.trim_start_matches('/'));

        // xfs and ext4 volumes: formatted, mounted, written and grown online by the image's tools.
        for (name, fs, grow_by) in [("pvc-xfs", "xfs", 300), ("pvc-ext4", "ext4", 64)] {
            let id = provision(&mut ctrl, create_request(name, "vg1", 300 * MIB, Some(fs)))
                .await
                .volume_id;
            let target = format!("{PODS}/{name}/mount");
            publish(&mut node, &id, &target, fs).await;
            let mounted = guest_path(&target);
            std::fs::write(mounted.join("data"), format!("written to {fs}")).unwrap();
            let blkid = sh(&["blkid", "-o", "value", "-s", "TYPE", &format!("/dev/vg1/{id}")]);
            assert_eq!(blkid.trim(), fs);
            let before = fs_bytes(&mounted);
            expand(&mut ctrl, &mut node, &id, &target, fs, (300 + grow_by) * MIB).await;
            let after = fs_bytes(&mounted);
            assert!(
                after >= before + (grow_by as u64 - 10) * MIB as u64,
                "{fs} grew from {before} to {after}"
            );
            node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.clone(),
            })
            .await
            .unwrap();
            assert!(!mounted.exists(), "unpublish removes the target");
            publish(&mut node, &id, &target, fs).await;
            assert_eq!(
                std::fs::read_to_string(mounted.join("data")).unwrap(),
                format!("written to {fs}")
            );
            node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target,
            })
            .await
            .unwrap();
            ctrl.delete_volume(pb::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            let lvs = sh(&["lvs", "--noheadings", "-o", "lv_name", "vg1"]);
            assert!(!lvs.contains(&id), "{id} left behind: {lvs}");
        }
        eventually("capacity back to the whole pool", 30, (&log, &api), || {
            (capacity(&api, "vg1")? == free).then_some(())
        })
        .await;

        for (what, child) in [("agent", &mut agent), ("controller", &mut controller)] {
            sh(&["kill", "-TERM", &child.id().to_string()]);
            let status = child.wait().unwrap();
            assert!(status.success(), "the {what} stops cleanly on SIGTERM: {status}");
        }
    });
}
