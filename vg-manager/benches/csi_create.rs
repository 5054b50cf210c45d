//! CreateVolume → LV ready on real LVM, against a raw `lvcreate` of the same size in the same
//! guest, then 50 concurrent CreateVolume calls (wall time and the LVM commands they cost), then
//! their deletion. The whole path is real: gRPC over a unix socket, the controller creating a
//! LogicalVolume in the (in-process) API double, the node agent's watch, lvcreate, status.
//!
//! `make bench-vm` (or `cargo bench -p vg-manager --bench csi_create`): boots a guest with one
//! 4 GiB disk. Figures go in the closing notes, never in tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use csi::pb;
use csi::pb::controller_client::ControllerClient;
use lvm::{Exec, Lvm};
use serde_json::json;
use vm_test::Disk;

#[path = "../tests/support/mod.rs"]
mod support;

const SIZE: u64 = 64 << 20;
const ROUNDS: usize = 10;
const CONCURRENT: usize = 50;

/// A block volume (no filesystem to make): the cost measured is provisioning alone.
fn request(name: String) -> pb::CreateVolumeRequest {
    support::create_request(&name, "vg1", SIZE as i64, None)
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
    support::seed(
        &api,
        &[(
            "vg1",
            json!({"default": true, "deviceSelector": {"paths": ["/dev/vda"]},
                "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 10}}),
        )],
    );
    let (node_sock, ctrl_sock) = support::sockets("bench");
    let runner = Arc::new(Exec::new(lvm::Mode::Direct));
    support::start_agent(
        &api,
        &node_sock,
        runner.clone(),
        Duration::from_secs(60),
        Duration::from_secs(300),
    );
    support::start_controller(&api, &ctrl_sock);
    let started = Instant::now();
    while support::capacity(&api, "vg1").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the volume group never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "volume group and thin pool ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ctrl = ControllerClient::new(support::channel(&ctrl_sock).await);
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
        .list(support::LVS)
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
