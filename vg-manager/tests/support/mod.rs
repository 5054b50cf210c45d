//! Shared by the driver's guest test (tests/vm_csi.rs) and the CSI benchmark
//! (benches/csi_create.rs): the two halves of the driver started as in production, and CSI
//! requests as the sidecars send them.
// Each user takes what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api_double::ApiDouble;
use csi::pb::controller_client::ControllerClient;
use csi::pb::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode};
use csi::pb::{self, VolumeCapability};
use lvm::{Exec, Mode};
use serde_json::{Value, json};
use tonic::transport::Channel;

pub const NS: &str = "openshift-storage";
pub const NODE: &str = "node-a";
pub const NODES: &str = "api/v1/nodes";
pub const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
pub const MIB: i64 = 1 << 20;

/// Runs `args[0] args[1..]` to success; its standard output.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms until it gives a value, for at most `secs` seconds.
pub async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CreateVolume, which must succeed; the volume it returns.
pub async fn provision(
    ctrl: &mut ControllerClient<Channel>,
    req: pb::CreateVolumeRequest,
) -> pb::Volume {
    let name = req.name.clone();
    ctrl.create_volume(req)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
        .into_inner()
        .volume
        .expect("a volume in the answer")
}

/// Node `node-a` and one LVMVolumeGroup per `(name, spec)`.
pub fn seed(api: &ApiDouble, classes: &[(&str, Value)]) {
    api.seed(
        NODES,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    );
    for (name, spec) in classes {
        api.seed(
            "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups",
            json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        );
    }
}

/// The free bytes `node-a` advertises for `class`.
pub fn capacity(api: &ApiDouble, class: &str) -> Option<u64> {
    api.get(NODES, None, NODE)?["metadata"]["annotations"][format!("capacity.topolvm.io/{class}")]
        .as_str()?
        .parse()
        .ok()
}

/// Sockets of the node and controller services, under a fresh directory in /run.
pub fn sockets(name: &str) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(format!("/run/lvms-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (dir.join("node.sock"), dir.join("controller.sock"))
}

/// `vg-manager run` for node-a with the CSI node service on `socket`, on a thread of its own
/// with a one-thread runtime, as the binary runs it.
pub fn start_agent(
    api: &ApiDouble,
    socket: &Path,
    runner: Arc<Exec>,
    resync: Duration,
    orphan_grace: Duration,
) -> std::thread::JoinHandle<Result<(), String>> {
    let opts = vg_manager::run::Options {
        node: NODE.into(),
        namespace: NS.into(),
        endpoints: http_probe::Endpoints {
            health_addr: "127.0.0.1:0".into(),
            metrics_addr: "127.0.0.1:0".into(),
            cert_dir: None,
            ..http_probe::Endpoints::new("vg-manager-metrics", NS)
        },
        resync,
        mode: Mode::Direct,
        orphan_grace,
        csi_socket: Some(socket.to_path_buf()),
    };
    let client = api.client();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(vg_manager::run::run_with(
                client,
                opts,
                runner,
                std::future::pending(),
            ))
    })
}

/// `vg-manager csi-controller` on `socket`.
pub fn start_controller(
    api: &ApiDouble,
    socket: &Path,
) -> tokio::task::JoinHandle<Result<(), csi::ControllerError>> {
    // Owned: the server outlives this call.
    let socket: PathBuf = socket.into();
    tokio::spawn(csi::controller::serve(
        api.client(),
        NS,
        socket,
        std::future::pending(),
    ))
}

/// A channel to the gRPC server on `path`, once it listens.
pub async fn channel(path: &Path) -> Channel {
    for _ in 0..400 {
        if path.exists()
            && let Ok(c) = csi::socket::connect(path).await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no CSI server on {}", path.display());
}

/// Single-node writer; a filesystem of this type, or a block device.
pub fn capability(fs: Option<&str>) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(match fs {
            Some(fs) => AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            }),
            None => AccessType::Block(BlockVolume {}),
        }),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// What csi-provisioner sends for a PVC scheduled to node-a on StorageClass `lvms-<class>`.
pub fn create_request(
    name: &str,
    class: &str,
    bytes: i64,
    fs: Option<&str>,
) -> pb::CreateVolumeRequest {
    let t = pb::Topology {
        segments: [("topology.topolvm.io/node".to_string(), NODE.to_string())].into(),
    };
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability(fs)],
        parameters: [("topolvm.io/device-class".to_string(), class.to_string())].into(),
        accessibility_requirements: Some(pb::TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        ..Default::default()
    }
}
