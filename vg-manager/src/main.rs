//! vg-manager: the node agent.
//!
//! `vg-manager run`: the node agent and the CSI node service (NODE_NAME, POD_NAMESPACE; in
//! cluster or with KUBECONFIG).
//! `vg-manager csi-controller`: the CSI controller service (POD_NAMESPACE; in cluster or with
//! KUBECONFIG).
//! `vg-manager discover [--json] [--vg NAME] [PATH...]`: offline, on any Linux machine.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use lvm::{Lvm, Mode, Runner};

use vg_manager::discover;

const USAGE: &str = "usage: vg-manager run [--health-addr HOST:PORT] [--metrics-addr HOST:PORT] [--metrics-cert-dir DIR] [--metrics-insecure] [--resync SECONDS] [--host-namespace] [--csi-socket PATH] [--node-name NAME] [--orphan-grace SECONDS]
       vg-manager csi-controller --csi-socket PATH [--namespace NS]
       vg-manager discover [--json] [--vg NAME] [--host-namespace] [PATH...]
  run               the node agent: volume groups and thin pools of the LVMVolumeGroups that select
                    this node ($NODE_NAME), status in LVMVolumeGroupNodeStatus, capacity annotations,
                    the LogicalVolumes of this node
    --health-addr   plain HTTP /healthz and /readyz (default 0.0.0.0:8081)
    --metrics-addr  HTTPS /metrics for callers the API server authorizes (default 0.0.0.0:8443)
    --metrics-cert-dir  tls.crt and tls.key to serve, re-read every minute; self-signed when
                    absent (default /etc/lvms/metrics-certs)
    --metrics-insecure  /metrics in plain HTTP on the health address, unauthorized: for a
                    workstation only
    --resync        seconds between passes when nothing changes (default 60)
    --csi-socket    serve the CSI node and identity services on this unix socket
    --node-name     this node (default $NODE_NAME)
    --orphan-grace  seconds an LV of ours without its LogicalVolume is kept (default 300)
  csi-controller    the CSI controller and identity services on a unix socket; LogicalVolumes
                    for the device classes (LVMVolumeGroups) of --namespace (default $POD_NAMESPACE,
                    else openshift-storage)
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
    let runner = std::sync::Arc::new(vg_manager::run::exec(mode));
    let (devices, container_mounts) =
        discover::block_devices(runner.as_ref()).map_err(|e| e.to_string())?;
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
    let entries = discover::entries(
        &devices,
        &report,
        &vg,
        selected.as_ref(),
        &loops,
        container_mounts,
    );
    Ok(if json {
        serde_json::to_string_pretty(&entries).expect("serializes") + "\n"
    } else {
        discover::render(&entries)
    })
}

/// Parses `--flag value`, `--flag=value` and bare `--switch`es (named in `switches`).
fn flags(
    args: &[String],
    valued: &[&str],
    switches: &[&str],
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if switches.contains(&flag) && inline.is_none() {
            out.insert(flag.to_string(), String::new());
        } else if valued.contains(&flag) {
            let v = inline
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))?;
            out.insert(flag.to_string(), v);
        } else {
            return Err(format!("unknown argument {a}\n{USAGE}"));
        }
    }
    Ok(out)
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn seconds(flags: &BTreeMap<String, String>, flag: &str, default: u64) -> Result<Duration, String> {
    flags
        .get(flag)
        .map_or(Ok(default), |v| {
            v.trim_end_matches('s')
                .parse()
                .map_err(|_| format!("{flag} takes seconds, not {v:?}"))
        })
        .map(Duration::from_secs)
}

fn init_logging() {
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
}

/// One thread: both services wait on LVM commands (run on the blocking pool) and the API server.
fn block_on<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f)
}

async fn client() -> Result<kube::Client, String> {
    kube::Client::try_default()
        .await
        .map_err(|e| format!("connecting to the API server: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let f = flags(
        args,
        &[
            "--health-addr",
            "--metrics-addr",
            "--metrics-cert-dir",
            "--resync",
            "--csi-socket",
            "--orphan-grace",
            "--node-name",
        ],
        &["--host-namespace", "--metrics-insecure"],
    )?;
    let node = f.get("--node-name").cloned().or_else(|| env("NODE_NAME")).ok_or(
        "NODE_NAME (or --node-name) must name this node (the DaemonSet sets it from spec.nodeName)",
    )?;
    let namespace =
        env("POD_NAMESPACE").unwrap_or_else(|| lvms_api::names::DEFAULT_NAMESPACE.into());
    let mut endpoints =
        http_probe::Endpoints::new(lvms_api::names::VG_MANAGER_METRICS_SERVICE, &namespace);
    for (flag, value) in &f {
        endpoints.flag(flag, || Ok(value.clone()))?;
    }
    let opts = vg_manager::run::Options {
        node,
        namespace,
        endpoints,
        resync: seconds(&f, "--resync", 60)?.max(Duration::from_secs(1)),
        mode: if f.contains_key("--host-namespace") {
            Mode::HostNamespace
        } else {
            Mode::Direct
        },
        orphan_grace: seconds(&f, "--orphan-grace", 300)?,
        csi_socket: f.get("--csi-socket").map(|p| csi::socket::socket_path(p)),
    };
    init_logging();
    block_on(async { vg_manager::run::run(client().await?, opts).await })
}

fn csi_controller(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--csi-socket", "--namespace"], &[])?;
    let socket = f
        .get("--csi-socket")
        .map(|p| csi::socket::socket_path(p))
        .ok_or("--csi-socket is required")?;
    let namespace = f
        .get("--namespace")
        .cloned()
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| lvms_api::names::DEFAULT_NAMESPACE.into());
    init_logging();
    block_on(async {
        csi::controller::serve(
            client().await?,
            namespace,
            socket,
            vg_manager::run::shutdown(),
        )
        .await
        .map_err(|e| e.to_string())
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
        Some("csi-controller") => match csi_controller(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vg-manager csi-controller: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_both_forms_and_refuse_strangers() {
        let f = flags(
            &args(&[
                "--csi-socket=/run/a.sock",
                "--resync",
                "30s",
                "--host-namespace",
            ]),
            &["--csi-socket", "--resync"],
            &["--host-namespace"],
        )
        .unwrap();
        assert_eq!(f["--csi-socket"], "/run/a.sock");
        assert!(f.contains_key("--host-namespace"));
        assert_eq!(
            seconds(&f, "--resync", 60).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            seconds(&f, "--orphan-grace", 300).unwrap(),
            Duration::from_secs(300)
        );
        assert!(
            flags(&args(&["--resync"]), &["--resync"], &[])
                .unwrap_err()
                .contains("--resync needs a value")
        );
        assert!(
            flags(&args(&["--nope"]), &["--resync"], &[])
                .unwrap_err()
                .contains("unknown argument --nope")
        );
        let f = flags(&args(&["--resync=soon"]), &["--resync"], &[]).unwrap();
        assert!(
            seconds(&f, "--resync", 60)
                .unwrap_err()
                .contains("--resync takes seconds")
        );
    }
}
