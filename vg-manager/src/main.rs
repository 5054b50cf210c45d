//! vg-manager: the node agent.
//!
//! `vg-manager discover [--json] [--vg NAME] [PATH...]` works today, offline, on any Linux
//! machine. The agent loop (`run`) and the CSI services (`csi-controller`) are built in issues
//! #5 and #6; until then those subcommands say so and fail.

use std::collections::BTreeSet;
use std::process::ExitCode;

use lvm::{Exec, Lvm, Mode, Runner};

use vg_manager::discover;

const USAGE: &str = "usage: vg-manager discover [--json] [--vg NAME] [--host-namespace] [PATH...]
  discover          list every block device with \"eligible\" or the reasons it is not
    --json          machine-readable output
    --vg NAME       judge for this volume group (its own PVs show as \"in volume group\")
    --host-namespace  run lsblk/lvm inside the host's namespaces (nsenter; in a pod)
    PATH...         only these devices are selected (symlinks such as /dev/disk/by-id/* allowed)";

fn discover(args: &[String]) -> Result<String, String> {
    let (mut json, mut vg, mut mode, mut paths) = (false, String::new(), Mode::Direct, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--vg" => vg = it.next().cloned().ok_or("--vg needs a name")?,
            "--host-namespace" => mode = Mode::HostNamespace,
            p if p.starts_with('/') => paths.push(p.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let runner = std::sync::Arc::new(Exec::new(mode));
    let devices = lvm::lsblk::list(runner.as_ref()).map_err(|e| e.to_string())?;
    // Without lvm2 (or its daemonless metadata) the rules still run; PVs are then unknown.
    let report = Lvm::new(runner.clone()).report().unwrap_or_else(|e| {
        eprintln!("vg-manager: no LVM report ({e}); judging without it");
        Default::default()
    });
    let selected: Option<BTreeSet<String>> = (!paths.is_empty()).then(|| {
        paths
            .iter()
            .map(|p| {
                std::fs::canonicalize(p)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| p.clone())
            })
            .collect()
    });
    let loops = discover::loop_backing(runner.as_ref() as &dyn Runner);
    let entries = discover::entries(&devices, &report, &vg, selected.as_ref(), &loops);
    Ok(if json {
        serde_json::to_string_pretty(&entries).expect("serializes") + "\n"
    } else {
        discover::render(&entries)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("discover") => match discover(&args[1..]) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vg-manager discover: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(cmd @ ("run" | "csi-controller")) => {
            eprintln!("vg-manager {cmd}: not built yet (issues #5 and #6)");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
