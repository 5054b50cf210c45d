//! Runs a `#[test]` inside a throw-away QEMU guest with real device-mapper and LVM.
//!
//! ```ignore
//! #[test]
//! fn thin_pool_on_two_disks() {
//!     let Some(_guest) = vm_test::guest("thin_pool_on_two_disks", &[Disk::Blank("1G"), Disk::Blank("1G")]) else { return };
//!     // From here on we are root in the guest; the disks are /dev/vda and /dev/vdb.
//! }
//! ```
//!
//! On the host, [`guest`] boots a VM (tests/vm/run-in-vm.sh) that runs this same test binary
//! filtered to this one test, waits, asserts that it passed, and returns `None`. Inside the guest
//! (`LVMS_IN_VM=1`) it returns `Some`. One boot costs about 5 s, so each test should batch many
//! checks. `LVMS_VM_TESTS=skip` skips these tests (for quick local loops: `make test-unit`);
//! otherwise a missing QEMU or kernel fails the test, so CI can never silently skip real LVM.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A disk attached to the guest, in order: /dev/vda, /dev/vdb, ... (serials lvmsvm0, ...).
#[derive(Clone, Debug)]
pub enum Disk {
    /// A new blank disk of this size ("1G", "512M").
    Blank(&'static str),
    /// A new blank disk the guest sees read-only.
    ReadOnly(&'static str),
    /// An existing raw image file; what the guest writes persists (restart tests).
    Image(PathBuf),
}

/// Handed to the test body when it runs in the guest.
pub struct Guest {
    /// /dev/vda, /dev/vdb, ... in the order the disks were given.
    pub disks: Vec<String>,
}

pub const IN_VM: &str = "LVMS_IN_VM";

/// The repository root (the harness lives in tests/vm/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory for disk images, under target/ (kept out of the system temp dirs).
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = repo_root()
        .join("target")
        .join("vm-scratch")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Creates a raw image file of `size` bytes on the host (sparse).
pub fn image(path: &Path, size: u64) {
    let f = std::fs::File::create(path).expect("image file");
    f.set_len(size).expect("image size");
}

/// Runs `test` (this test's name, as `cargo test` knows it) inside a guest with `disks`.
/// Returns `Some` in the guest, `None` on the host after the guest run passed.
pub fn guest(test: &str, disks: &[Disk]) -> Option<Guest> {
    guest_phases(test, disks, 1).map(|(g, _)| g)
}

/// Like [`guest`], but boots `phases` guests one after the other (phase 1, 2, ...) on the same
/// disks: for restart tests, give [`Disk::Image`]s so what phase 1 wrote is there in phase 2.
/// In the guest, returns the phase being run.
pub fn guest_phases(test: &str, disks: &[Disk], phases: u32) -> Option<(Guest, u32)> {
    let stages: Vec<&[Disk]> = (0..phases).map(|_| disks).collect();
    guest_stages(test, &stages)
}

/// Like [`guest_phases`], with the disks of each phase given apart: phase `n` boots with
/// `stages[n - 1]`. For a disk pulled between phases (leave it out) or a new one put in.
pub fn guest_stages(test: &str, stages: &[&[Disk]]) -> Option<(Guest, u32)> {
    if std::env::var_os(IN_VM).is_some() {
        let phase = std::env::var("LVMS_VM_PHASE")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let count = stages.get(phase as usize - 1).map_or(0, |d| d.len());
        let disks = (0..count)
            .map(|i| format!("/dev/vd{}", (b'a' + i as u8) as char))
            .collect();
        return Some((Guest { disks }, phase));
    }
    if std::env::var("LVMS_VM_TESTS").is_ok_and(|v| v == "skip") {
        eprintln!("{test}: skipped (LVMS_VM_TESTS=skip): real-LVM tests run in `make test`");
        return None;
    }
    for (phase, disks) in (1..).zip(stages) {
        let out = boot(
            test,
            disks,
            phase,
            &[test, "--exact", "--nocapture", "--test-threads=1"],
        );
        // A filter that matched nothing also exits 0: make sure the test really ran.
        assert!(
            out.contains("1 passed"),
            "{test}: the guest ran no test (is the name right?)"
        );
    }
    None
}

/// For a benchmark binary (`harness = false`): on the host, boots a guest with `disks` that runs
/// this same binary, prints what it printed and returns `None`; in the guest returns `Some`.
/// `LVMS_VM_TESTS=skip` skips it as it skips the tests.
pub fn bench(name: &str, disks: &[Disk]) -> Option<Guest> {
    if std::env::var_os(IN_VM).is_some() {
        return guest(name, disks);
    }
    if std::env::var("LVMS_VM_TESTS").is_ok_and(|v| v == "skip") {
        eprintln!("{name}: skipped (LVMS_VM_TESTS=skip)");
        return None;
    }
    boot(name, disks, 1, &["--bench"]);
    None
}

/// Boots one guest running this executable with `args`; panics unless it exits 0. Returns what
/// the guest printed on standard output.
fn boot(test: &str, disks: &[Disk], phase: u32, args: &[&str]) -> String {
    let script = repo_root().join("tests/vm/run-in-vm.sh");
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).args([
        "-e",
        &format!("{IN_VM}=1"),
        "-e",
        &format!("LVMS_VM_PHASE={phase}"),
        "-e",
        "RUST_BACKTRACE=1",
        "-c",
        "1",
        "-m",
        "768M",
    ]);
    // The project's own settings (LVMS_IMAGE_ROOTFS, ...) reach the test in the guest too.
    for (key, value) in std::env::vars() {
        if key.starts_with("LVMS_") && key != IN_VM && key != "LVMS_VM_PHASE" {
            cmd.args(["-e", &format!("{key}={value}")]);
        }
    }
    for d in disks {
        match d {
            Disk::Blank(size) => cmd.args(["-d", size]),
            Disk::ReadOnly(size) => cmd.args(["-d", &format!("{size}:ro")]),
            Disk::Image(path) => cmd.args(["-D", &path.to_string_lossy()]),
        };
    }
    cmd.arg("--").arg(&exe).args(args);
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{test}: could not start the VM harness {}: {e}",
            script.display()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "--- {test} (phase {phase}): guest output ({:.1} s) ---\n{stdout}{stderr}--- end of guest output ---",
        started.elapsed().as_secs_f64()
    );
    match out.status.code() {
        Some(0) => stdout.into_owned(),
        Some(125) => panic!(
            "{test}: the VM failed to boot or timed out; run tests/vm/setup.sh (see output above)"
        ),
        code => panic!("{test}: failed in the guest (exit {code:?}); see output above"),
    }
}
