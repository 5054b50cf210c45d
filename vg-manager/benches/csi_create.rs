//! CreateVolume → LV ready on real LVM, against a raw `lvcreate` of the same size in the same
//! guest, then 50 concurrent CreateVolume calls (wall time and the LVM commands they cost), then
//! their deletion. The whole path is real: gRPC over a unix socket, the controller creating a
//! LogicalVolume in the (in-process) API double, the node agent's watch, lvcreate, status.
//!
//! `make bench-vm` (or `cargo bench -p vg-manager --bench csi_create`): boots a guest with one
//! 4 GiB disk. Figures go in the closing notes, never in tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use csi::pb::controller_client::ControllerClient;
use csi::pb::volume_capability::{AccessMode, AccessType, BlockVolume, access_mode};
use csi::pb::{self, VolumeCapability};
use lvm::{Exec, Lvm, Mode};
use serde_json::json;
use tonic::transport::Channel;
use vm_test::Disk;

const NS: &str = "openshift-storage";
const SIZE: u64 = 64 << 20;
const ROUNDS: usize = 10;
const CONCURRENT: usize = 50;

fn request(name: String) -> pb::CreateVolumeRequest {
    let t = pb::Topology {
        segments: [("topology.topolvm.io/node".to_string(), "node-a".to_string())].into(),
    };
    pb::CreateVolumeRequest {
        name,
        capacity_range: Some(pb::CapacityRange {
            required_bytes: SIZE as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: access_mode::Mode::SingleNodeWriter as i32,
            }),
        }],
        parameters: [("topolvm.io/device-class".to_string(), "vg1".to_string())].into(),
        accessibility_requirements: Some(pb::TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        ..Default::default()
    }
}

fn stats(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = v[v.len() / 2];
    println!(
        "{name:<28} median {:>7.1} ms  p90 {:>7.1} ms  min {:>7.1} ms  max {:>7.1} ms  (n={})",
        ms(median),
        ms(v[v.len() * 9 / 10]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
    median
}

/// The agent on a thread of its own with a one-thread runtime, as `vg-manager run` runs it.
fn start_agent(
    client: kube::Client,
    opts: vg_manager::run::Options,
    runner: Arc<Exec>,
) -> std::thread::JoinHandle<Result<(), String>> {
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

async fn channel(path: &Path) -> Channel {
    for _ in 0..400 {
        if let Ok(c) = csi::socket::connect(path).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no CSI controller on {}", path.display());
}

fn main() {
    let Some(_) = vm_test::bench("csi_create", &[Disk::Blank("4G")]) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let api = ApiDouble::new();
    api.seed(
        "api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );
    api.seed(
        "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups",
        json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": "vg1", "namespace": NS},
        "spec": {"default": true, "deviceSelector": {"paths": ["/dev/vda"]},
                 "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 10}}}),
    );
    let dir = std::path::PathBuf::from(format!("/run/lvms-bench-{}", std::process::id()));
    let (node_sock, ctrl_sock) = (dir.join("node.sock"), dir.join("controller.sock"));
    let runner = Arc::new(Exec::new(Mode::Direct));
    let opts = vg_manager::run::Options {
        node: "node-a".into(),
        namespace: NS.into(),
        metrics_addr: "127.0.0.1:0".into(),
        resync: Duration::from_secs(60),
        mode: Mode::Direct,
        orphan_grace: Duration::from_secs(300),
        csi_socket: Some(node_sock),
    };
    start_agent(api.client(), opts, runner.clone());
    tokio::spawn(csi::controller::serve(
        api.client(),
        NS,
        ctrl_sock.clone(),
        std::future::pending(),
    ));
    let started = Instant::now();
    while api.get("api/v1/nodes", None, "node-a").unwrap()["metadata"]["annotations"]
        ["capacity.topolvm.io/vg1"]
        .is_null()
    {
        assert!(started.elapsed() < Duration::from_secs(300), "the volume group never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "volume group and thin pool ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ctrl = ControllerClient::new(channel(&ctrl_sock).await);
    let lvm = Lvm::new(runner.clone());

    // Raw lvcreate of the same thin volume, the same way the node makes it.
    let mut raw = Vec::new();
    for i in 0..ROUNDS {
        let (l, name) = (lvm.clone(), format!("raw{i}"));
        let t = Instant::now();
        tokio::task::spawn_blocking(move || l.create_thin_lv("vg1", "pool", &name, SIZE, &[]))
            .await
            .unwrap()
            .unwrap();
        raw.push(t.elapsed());
    }
    for i in 0..ROUNDS {
        lvm.remove("vg1", &format!("raw{i}")).unwrap();
    }

    // One CreateVolume at a time: until the answer, the LV exists and its status is written.
    let mut csi_times = Vec::new();
    for i in 0..ROUNDS {
        let mut c = ctrl.clone();
        let t = Instant::now();
        c.create_volume(request(format!("seq-{i}"))).await.unwrap();
        csi_times.push(t.elapsed());
    }
    println!(
        "--- sequential, one {} MiB thin volume each ---",
        SIZE >> 20
    );
    let r = stats("raw lvcreate", raw);
    let c = stats("CreateVolume → LV ready", csi_times);
    println!(
        "ratio of medians: {:.2}× raw",
        c.as_secs_f64() / r.as_secs_f64()
    );

    // 50 at once.
    let before = runner.invocations();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let mut c = ctrl.clone();
        set.spawn(async move {
            let t = Instant::now();
            c.create_volume(request(format!("conc-{i}"))).await.unwrap();
            t.elapsed()
        });
    }
    let each: Vec<Duration> = set.join_all().await;
    let wall = t.elapsed();
    let commands = runner.invocations() - before;
    let made = lvm
        .report()
        .unwrap()
        .lvs
        .iter()
        .filter(|l| l.name.len() == 36)
        .count();
    println!("--- {CONCURRENT} concurrent CreateVolume ---");
    println!(
        "wall time {:.2} s, {commands} commands run by the node ({:.2} per volume), {made} volumes exist",
        wall.as_secs_f64(),
        commands as f64 / CONCURRENT as f64
    );
    stats("each call", each);

    // And all of them deleted at once.
    let ids: Vec<String> = api
        .list("apis/topolvm.io/v1/logicalvolumes")
        .iter()
        .filter_map(|o| o["status"]["volumeID"].as_str().map(String::from))
        .collect();
    let before = runner.invocations();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let mut c = ctrl.clone();
        set.spawn(async move {
            c.delete_volume(pb::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .unwrap();
        });
    }
    set.join_all().await;
    println!(
        "--- DeleteVolume of all {} at once: wall {:.2} s, {} commands ---",
        ids.len(),
        t.elapsed().as_secs_f64(),
        runner.invocations() - before
    );
}
