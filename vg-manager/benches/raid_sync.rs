//! How long a raid1 10 GiB volume takes: Ready (the LogicalVolume reconciled, the LV usable,
//! written to while it synchronises) and fully in sync (the initial resync of the second copy,
//! which dm-raid paces by `dev.raid.speed_limit_min/max`). Real LVM in a guest with two 11 GiB
//! disks; the images stay sparse (the harness maps written zeros to holes).
//!
//! `make bench-vm` (or `cargo bench -p vg-manager --bench raid_sync`). Figures go in the
//! closing notes, never in tests.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use lvm::{Exec, Lvm, Mode};
use serde_json::json;
use vg_manager::agent::Agent;
use vg_manager::logical_volume::{Action, reconcile};
use vm_test::Disk;

const NS: &str = "openshift-storage";
const SIZE: u64 = 10 << 30;

fn main() {
    let Some(_) = vm_test::bench("raid_sync", &[Disk::Blank("11G"), Disk::Blank("11G")]) else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

fn sync_percent(vg: &str, lv: &str) -> f64 {
    let out = Command::new("lvm")
        .args([
            "lvs",
            "--noheadings",
            "-o",
            "sync_percent",
            &format!("{vg}/{lv}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

async fn bench() {
    let api = ApiDouble::new();
    api.seed(
        "api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    );
    api.seed("apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups", json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": "r1", "namespace": NS},
        "spec": {"deviceSelector": {"paths": ["/dev/vda", "/dev/vdb"]}, "raidConfig": {"type": "raid1"}}}));
    let runner = Arc::new(Exec::new(Mode::Direct));
    let agent = Agent::new(api.client(), "node-a", NS, runner.clone());
    let t = Instant::now();
    agent.pass().await.unwrap();
    println!(
        "raid1 class on 2 x 11 GiB to Ready:       {:>8.2} s",
        t.elapsed().as_secs_f64()
    );

    let lv = api.seed("apis/topolvm.io/v1/logicalvolumes", json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume", "metadata": {"name": "big"},
        "spec": {"name": "big", "nodeName": "node-a", "deviceClass": "r1", "size": SIZE.to_string()}}));
    let lv = serde_json::from_value(lv).unwrap();
    let t = Instant::now();
    let action = reconcile(&api.client(), &agent.reports, "node-a", NS, &lv)
        .await
        .unwrap();
    assert!(
        matches!(action, Action::Create { raid: Some(_), .. }),
        "{action:?}"
    );
    let ready = t.elapsed();
    println!(
        "10 GiB raid1 LogicalVolume to Ready:      {:>8.2} s",
        ready.as_secs_f64()
    );
    let uid = lv.metadata.uid.clone().unwrap();
    let mut last = Instant::now();
    loop {
        let p = sync_percent("r1", &uid);
        if p >= 100.0 {
            break;
        }
        if last.elapsed() > Duration::from_secs(15) {
            println!(
                "  ... {p:.1} % in sync after {:.0} s",
                t.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let synced = t.elapsed();
    let limit = std::fs::read_to_string("/proc/sys/dev/raid/speed_limit_max").unwrap_or_default();
    println!(
        "10 GiB raid1 initial sync complete:       {:>8.2} s  ({:.0} MiB/s; dev.raid.speed_limit_max {} KiB/s)",
        synced.as_secs_f64(),
        (SIZE >> 20) as f64 / synced.as_secs_f64(),
        limit.trim()
    );
    let _ = Lvm::new(runner).remove("r1", &uid);
}
