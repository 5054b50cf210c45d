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
    spawn_agent(
        api,
        agent_options(Some(socket), resync, orphan_grace),
        runner,
    )
}

/// The options `vg-manager run` gets for node-a, on loopback ports, with the CSI node service
/// on `socket` if given.
pub fn agent_options(
    socket: Option<&Path>,
    resync: Duration,
    orphan_grace: Duration,
) -> vg_manager::run::Options {
    vg_manager::run::Options {
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
        csi_socket: socket.map(Path::to_path_buf),
    }
}

/// The agent with `opts`, as [`start_agent`] runs it.
pub fn spawn_agent(
    api: &ApiDouble,
    opts: vg_manager::run::Options,
    runner: Arc<Exec>,
) -> std::thread::JoinHandle<Result<(), String>> {
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

/// Both halves of the driver, as [`start_thin_driver`] starts them.
pub struct Driver {
    /// The sockets' directory.
    pub dir: PathBuf,
    pub node_sock: PathBuf,
    pub ctrl_sock: PathBuf,
    pub agent: std::thread::JoinHandle<Result<(), String>>,
    pub controller: tokio::task::JoinHandle<Result<(), csi::ControllerError>>,
}

/// Both halves of the driver on one thin class `vg1` of /dev/vda (pool `pool` at
/// `size_percent`), the agent passing every 2 s.
pub fn start_thin_driver(
    api: &ApiDouble,
    name: &str,
    size_percent: u32,
    orphan_grace: Duration,
) -> Driver {
    seed(
        api,
        &[(
            "vg1",
            json!({"default": true, "deviceSelector": {"paths": ["/dev/vda"]},
                "thinPoolConfig": {"name": "pool", "sizePercent": size_percent, "overprovisionRatio": 10}}),
        )],
    );
    let (node_sock, ctrl_sock) = sockets(name);
    let dir = node_sock.parent().unwrap().to_path_buf();
    let runner = Arc::new(vg_manager::run::exec(Mode::Direct));
    let agent = start_agent(
        api,
        &node_sock,
        runner,
        Duration::from_secs(2),
        orphan_grace,
    );
    let controller = start_controller(api, &ctrl_sock);
    Driver {
        dir,
        node_sock,
        ctrl_sock,
        agent,
        controller,
    }
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
