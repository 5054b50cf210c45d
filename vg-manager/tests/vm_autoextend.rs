//! Thin pool auto-extension on real LVM in the guest, with the whole agent running
//! (`run_with`, the API doubled in-process) and dmeventd off as in the pod. A pool made at 30 %
//! of a 4 GiB volume group (threshold 60 %, step 10 %, ceiling 80 %) under a 3.5 GiB thin volume;
//! dd writes random data to it at full speed with `oflag=direct`, 1408 MiB, then after a pause
//! 1472 MiB more. The pool grows in whole steps of 10 % of the VG (several at once when the fill
//! rate calls for it), every dd exits 0, dm-thin never reports the pool out of data space, every
//! byte reads back, and the pool stops at its ceiling with one warning, however many polls follow.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use lvm::{Lvm, Mode};
use serde_json::{Value, json};
use vm_test::Disk;

mod support;

use support::{NODE, NS, capacity, sh};

const EVENTS: &str = "apis/events.k8s.io/v1/events";
const STATUSES: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
/// The random data dd writes again and again, each copy at its own offset.
const CHUNK: usize = 64 << 20;
/// Copies written in the first burst and in the second.
const BURSTS: [usize; 2] = [22, 23];
const VOLUME: u64 = 3584 << 20;
const DEV: &str = "/dev/vg1/vol";

fn events(api: &ApiDouble, reason: &str) -> Vec<Value> {
    api.list(EVENTS)
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn class_status(api: &ApiDouble) -> Value {
    api.get(STATUSES, Some(NS), NODE)
        .map(|s| s["spec"]["nodeStatus"][0].clone())
        .unwrap_or(Value::Null)
}

/// Used and total data bytes of the pool, from device-mapper (no lvm lock, no report).
fn pool_fill(dm_name: &str, chunk: u64) -> Option<(u64, u64)> {
    let out = Command::new("dmsetup")
        .args(["status", dm_name])
        .output()
        .ok()?;
    // "0 <len> thin-pool <tx> <used>/<total meta> <used>/<total data> ..."
    let text = String::from_utf8_lossy(&out.stdout);
    let data = text.split_whitespace().nth(5)?;
    let (used, total) = data.split_once('/')?;
    Some((
        used.parse::<u64>().ok()? * chunk,
        total.parse::<u64>().ok()? * chunk,
    ))
}

/// Deterministic bytes that no layer below can compress or skip (xorshift64*).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v
}

/// dd of /dev/shm/random to copies `from..from + count` of the volume, each of which must
/// exit 0; the seconds of each.
fn write_copies(from: usize, count: usize) -> Vec<f64> {
    (from..from + count)
        .map(|i| {
            let c = Instant::now();
            let out = Command::new("dd")
                .args([
                    "if=/dev/shm/random",
                    &format!("of={DEV}"),
                    "bs=4M",
                    &format!("seek={}", i * CHUNK / (4 << 20)),
                    "oflag=direct",
                    "conv=notrunc,fsync",
                    "status=none",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "dd of copy {i} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            c.elapsed().as_secs_f64()
        })
        .collect()
}

// The double's clients need a runtime; the test itself waits and runs dd on a blocking thread
// (block_in_place), the agent on a thread of its own as the binary runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_pool_grows_in_steps_writes_never_fail_and_stops_at_the_ceiling() {
    let Some(_) = vm_test::guest(
        "thin_pool_grows_in_steps_writes_never_fail_and_stops_at_the_ceiling",
        &[Disk::Blank("4G")],
    ) else {
        return;
    };
    // The agent's log (its decisions and extensions) in the guest's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("vg_manager=info"))
        .try_init();
    let api = ApiDouble::new();
    support::seed(
        &api,
        &[(
            "vg1",
            json!({"default": true, "deviceSelector": {"paths": ["/dev/vda"]},
                "thinPoolConfig": {"name": "pool", "sizePercent": 30, "overprovisionRatio": 10,
                    "autoExtend": {"thresholdPercent": 60, "stepPercent": 10, "maxSizePercent": 80}}}),
        )],
    );
    // The runner `vg-manager run` builds: the pod's overrides, dmeventd monitoring off. The
    // resync is a minute: the pools are watched on a timer of their own, not by passes.
    let runner = Arc::new(vg_manager::run::exec(Mode::Direct));
    assert!(
        runner
            .lvm_config()
            .is_some_and(|c| c.contains("monitoring=0")),
        "{:?}",
        runner.lvm_config()
    );
    // No CSI socket: the pool is filled directly, not through a volume of the driver.
    support::spawn_agent(
        &api,
        support::agent_options(None, Duration::from_secs(60), Duration::from_secs(3600)),
        runner.clone(),
    );
    tokio::task::block_in_place(|| written_past_the_threshold(&api, runner));
}

fn wait(what: &str, secs: u64, f: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn written_past_the_threshold(api: &ApiDouble, runner: Arc<lvm::Exec>) {
    let lvm = Lvm::new(runner);
    wait("the thin pool", 120, &mut || {
        lvm.report()
            .is_ok_and(|r| r.lv("vg1", "pool").is_some_and(|l| l.is_thin_pool()))
    });
    let r = lvm.report().unwrap();
    let vg = r.vg("vg1").unwrap().clone();
    let pool = r.lv("vg1", "pool").unwrap().clone();
    let e = vg.extent_size;
    let extents = vg.size / e;
    let (start, step, ceiling) = (pool.size, extents * 10 / 100 * e, extents * 80 / 100 * e);
    println!(
        "FIGURE VG {} MiB; pool {} MiB (30 %), step {} MiB (10 %), ceiling {} MiB (80 %), metadata {} MiB",
        vg.size >> 20,
        start >> 20,
        step >> 20,
        ceiling >> 20,
        pool.metadata_size.unwrap_or(0) >> 20
    );
    let written = (BURSTS[0] + BURSTS[1]) * CHUNK;
    assert!(
        start < ceiling && (written as u64) < ceiling && VOLUME > ceiling,
        "the data fits under the ceiling, not in the pool as made; the volume is larger still"
    );

    lvm.create_thin_lv("vg1", "pool", "vol", VOLUME, &[])
        .unwrap();
    wait("the volume's device node", 30, &mut || {
        std::path::Path::new(DEV).exists()
    });
    let chunk_size = lvm
        .report()
        .unwrap()
        .lv("vg1", "pool")
        .unwrap()
        .chunk_size
        .unwrap();
    // What dm-thin logs when a pool runs out of data space, counted before and after.
    let out_of_space = || {
        let k = sh(&["dmesg"]);
        k.matches("out-of-data-space").count() + k.matches("no free data space").count()
    };
    let full_before = out_of_space();

    // The pool's fill as device-mapper sees it, every 100 ms, while dd writes.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some((used, total)) = pool_fill("vg1-pool-tpool", chunk_size) {
                    samples.push((t0.elapsed().as_secs_f64(), used, total));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };

    let data = random_bytes(CHUNK);
    std::fs::write("/dev/shm/random", &data).unwrap();
    let t = Instant::now();
    let first = write_copies(0, BURSTS[0]);
    let first_secs = t.elapsed().as_secs_f64();
    let after_first = wait_still(&lvm);
    println!(
        "FIGURE burst 1: dd wrote {} MiB in {first_secs:.1} s ({:.0} MiB/s; each 64 MiB dd {:.2}–{:.2} s), every dd exit 0; the pool is now {} MiB",
        BURSTS[0] * 64,
        (BURSTS[0] * 64) as f64 / first_secs,
        min(&first),
        max(&first),
        after_first >> 20
    );
    assert!(after_first > start, "the first burst grew the pool");
    assert!(
        after_first < ceiling,
        "not to the ceiling yet: {after_first}"
    );
    let t2 = Instant::now();
    let second = write_copies(BURSTS[0], BURSTS[1]);
    let second_secs = t2.elapsed().as_secs_f64();
    println!(
        "FIGURE burst 2: dd wrote {} MiB in {second_secs:.1} s ({:.0} MiB/s; each 64 MiB dd {:.2}–{:.2} s), every dd exit 0",
        BURSTS[1] * 64,
        (BURSTS[1] * 64) as f64 / second_secs,
        min(&second),
        max(&second)
    );

    // The pool ends at its ceiling, with one warning: Event, status reason.
    wait("the ceiling warning", 60, &mut || {
        !events(api, "ThinPoolAtMaxSize").is_empty()
    });
    let warned_after = t2.elapsed().as_secs_f64();
    // More polls pass (several 2 s periods): still one warning.
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    // The pool's growth as device-mapper saw it: when it crossed the threshold at each size, when
    // the next size appeared, and how full it was just before.
    let mut crossed: Option<f64> = None;
    let mut fullest: f64 = 0.0;
    let mut sizes = vec![start];
    for w in samples.windows(2) {
        let (at, used, total) = w[0];
        let percent = used as f64 * 100.0 / total as f64;
        fullest = fullest.max(percent);
        if percent >= 60.0 && crossed.is_none() {
            crossed = Some(at);
        }
        if w[1].2 != total {
            let latency = crossed.map(|c| w[1].0 - c).unwrap_or(f64::NAN);
            println!(
                "FIGURE at {:.1} s the pool became {} MiB: {latency:.1} s after it crossed 60 % at {} MiB, {percent:.1} % full just before",
                w[1].0,
                w[1].2 >> 20,
                total >> 20
            );
            sizes.push(w[1].2);
            crossed = None;
        }
    }
    println!(
        "FIGURE fullest the pool ever was: {fullest:.1} % (of its size then); ceiling warning {warned_after:.1} s after burst 2 began"
    );

    let r = lvm.report().unwrap();
    let grown = r.lv("vg1", "pool").unwrap();
    assert_eq!(grown.size, ceiling, "stopped at 80 % of the VG, not above");
    assert_eq!(grown.uuid, pool.uuid, "the same pool, extended");
    assert_eq!(sizes.last(), Some(&ceiling), "{sizes:?}");
    // Whole steps each time, but the last one, cut at the ceiling.
    for w in sizes.windows(2) {
        assert!(
            (w[1] - w[0]) % step == 0 || w[1] == ceiling,
            "{sizes:?} (step {step})"
        );
    }
    let extended = events(api, "ThinPoolExtended");
    for ev in &extended {
        println!("event {}: {}", ev["reason"], ev["note"]);
    }
    assert_eq!(
        extended.len(),
        sizes.len() - 1,
        "one Event per extension: {extended:?}"
    );
    assert!(extended.len() >= 2, "in steps, not at once: {extended:?}");
    assert!(
        extended.iter().all(|e| e["type"] == "Normal"
            && e["regarding"]["kind"] == "LVMVolumeGroup"
            && e["regarding"]["name"] == "vg1"),
        "{extended:?}"
    );
    let warned = events(api, "ThinPoolAtMaxSize");
    assert_eq!(warned.len(), 1, "warned once, not every poll: {warned:?}");
    assert_eq!(warned[0]["type"], "Warning");
    let note = warned[0]["note"].as_str().unwrap();
    println!("event {}: {note}", warned[0]["reason"]);
    assert!(
        note.contains("thin pool vg1/pool data")
            && note.contains("at its ceiling, maxSizePercent 80"),
        "{note}"
    );
    wait("the warning in the class's status", 30, &mut || {
        class_status(api)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("at its ceiling"))
    });
    assert_eq!(class_status(api)["status"], "Ready", "it still serves");
    // Capacity follows the pool: ratio × its size − what is promised.
    wait("capacity of the grown pool", 30, &mut || {
        capacity(api, "vg1") == Some(grown.size * 10 - VOLUME)
    });

    // The pool never ran out of space: dm-thin logs it when it does (and then queues writes
    // until the pool grows).
    assert_eq!(out_of_space(), full_before, "{}", sh(&["dmesg"]));
    assert!(fullest < 100.0, "the pool filled: {fullest:.1} %");

    // Every byte written reads back.
    let _ = Command::new("sh")
        .args(["-c", "echo 3 > /proc/sys/vm/drop_caches"])
        .status();
    let mut f = std::fs::File::open(DEV).unwrap();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..BURSTS[0] + BURSTS[1] {
        f.seek(SeekFrom::Start((i * CHUNK) as u64)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(buf == data, "copy {i} reads back different");
    }
    let used = r.lv("vg1", "pool").unwrap().data_percent.unwrap();
    println!(
        "FIGURE end: pool {} MiB at {used:.1} % ({} ThinPoolExtended events, 1 ThinPoolAtMaxSize)",
        grown.size >> 20,
        extended.len()
    );

    // What one look of the poller costs: the `lvs` of the pool it runs every 2 s (0.5 s while
    // the pool fills).
    let pools = [("vg1".to_string(), "pool".to_string())];
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(lvm.pool_usage(&pools).unwrap().len(), 1);
    }
    let lvs_ms = t.elapsed().as_secs_f64() * 100.0;
    // Beside it, for scale: the full report a pass reads, and device-mapper's own status.
    let t = Instant::now();
    for _ in 0..10 {
        lvm.report().unwrap();
    }
    let report_ms = t.elapsed().as_secs_f64() * 100.0;
    let t = Instant::now();
    for _ in 0..10 {
        pool_fill("vg1-pool-tpool", chunk_size).unwrap();
    }
    let dm_ms = t.elapsed().as_secs_f64() * 100.0;
    println!(
        "FIGURE one poll (lvs of the pool): {lvs_ms:.0} ms; lvm fullreport {report_ms:.0} ms; dmsetup status {dm_ms:.0} ms (TCG guest)"
    );
    let _ = std::io::stdout().flush();
}

/// The pool's size once it has not changed for 4 s (the poller has seen the last write).
fn wait_still(lvm: &Lvm) -> u64 {
    let size = || lvm.report().unwrap().lv("vg1", "pool").unwrap().size;
    let mut last = size();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < Duration::from_secs(4) {
        assert!(Instant::now() < deadline, "the pool never settled");
        std::thread::sleep(Duration::from_millis(500));
        let now = size();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MAX, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(0.0, f64::max)
}
