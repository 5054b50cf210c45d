//! vg-manager: the node agent.
//!
//! `vg-manager run`: the node agent (NODE_NAME, POD_NAMESPACE; in cluster or with KUBECONFIG).
//! `vg-manager discover [--json] [--vg NAME] [PATH...]`: offline, on any Linux machine.
//! The CSI services (`csi-controller`, and the node service inside `run`) come with issue #6.

use std::collections::BTreeSet;
use std::process::ExitCode;

use lvm::{Exec, Lvm, Mode, Runner};

use vg_manager::discover;

const USAGE: &str = "usage: vg-manager run [--metrics-addr HOST:PORT] [--resync SECONDS] [--host-namespace] [--csi-socket PATH]
       vg-manager discover [--json] [--vg NAME] [--host-namespace] [PATH...]
  run               the node agent: volume groups and thin pools of the LVMVolumeGroups that select
                    this node ($NODE_NAME), status in LVMVolumeGroupNodeStatus, capacity annotations
    --metrics-addr  /healthz and /metrics (default 0.0.0.0:8080)
    --resync        seconds between passes when nothing changes (default 60)
    --csi-socket    where the CSI node service will listen (issue #6; accepted, not served yet)
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

fn run(args: &[String]) -> Result<(), String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let node = env("NODE_NAME")
        .ok_or("NODE_NAME must name this node (the DaemonSet sets it from spec.nodeName)")?;
    let namespace =
        env("POD_NAMESPACE").unwrap_or_else(|| lvms_api::names::DEFAULT_NAMESPACE.into());
    let (mut metrics_addr, mut resync, mut mode) =
        ("0.0.0.0:8080".to_string(), 60u64, Mode::Direct);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--metrics-addr" => metrics_addr = value()?,
            "--resync" => {
                resync = value()?
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| "--resync takes seconds".to_string())?
            }
            "--host-namespace" => mode = Mode::HostNamespace,
            "--csi-socket" => drop(value()?),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if env("LOG_FORMAT").is_some_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    // One thread: the agent waits on LVM commands (run on the blocking pool) and the API server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("connecting to the API server: {e}"))?;
        let opts = vg_manager::run::Options {
            node,
            namespace,
            metrics_addr,
            resync: std::time::Duration::from_secs(resync.max(1)),
            mode,
        };
        vg_manager::run::run(client, opts).await
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
        Some("run") => match run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vg-manager run: {e}");
                ExitCode::FAILURE
            }
        },
        Some("csi-controller") => {
            eprintln!("vg-manager csi-controller: not built yet (issue #6)");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
