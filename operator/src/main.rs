//! lvms-operator: `lvms-operator [--namespace NS] [--leader-elect] [endpoint flags]`.
//! Out of cluster it uses KUBECONFIG; in a pod, its service account.

use std::collections::BTreeMap;
use std::process::ExitCode;

use lvms_operator::config::Config;
use lvms_operator::manifests::METRICS_SERVICE;
use lvms_operator::run::{Options, run};

const USAGE: &str = "usage: lvms-operator [--namespace NS] [--leader-elect] [--health-addr HOST:PORT] [--metrics-addr HOST:PORT] [--metrics-cert-dir DIR] [--metrics-insecure]
  --namespace         namespace of the LVMCluster and managed objects (default: $POD_NAMESPACE, else openshift-storage)
  --leader-elect      hold a Lease before reconciling (for more than one replica)
  --health-addr       plain HTTP /healthz and /readyz (default 0.0.0.0:8081)
  --metrics-addr      HTTPS /metrics for callers the API server authorizes (default 0.0.0.0:8443)
  --metrics-cert-dir  tls.crt and tls.key to serve, re-read every minute; self-signed when absent (default /etc/lvms/metrics-certs)
  --metrics-insecure  /metrics in plain HTTP on the health address, unauthorized: for a workstation only
images: RELATED_IMAGE_VG_MANAGER, _CSI_PROVISIONER, _CSI_SNAPSHOTTER, _CSI_RESIZER, _CSI_REGISTRAR, _CSI_LIVENESSPROBE, _CSI_HEALTH_MONITOR
logs: RUST_LOG (default info), LOG_FORMAT=json for JSON lines";

fn parse(args: &[String], env: &BTreeMap<String, String>) -> Result<Options, String> {
    let mut namespace = env
        .get("POD_NAMESPACE")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| lvms_api::names::DEFAULT_NAMESPACE.into());
    let mut endpoints = http_probe::Endpoints::new(METRICS_SERVICE, "");
    let mut leader_elect = false;
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
            "--namespace" => namespace = value()?,
            "--leader-elect" => leader_elect = true,
            "-h" | "--help" => return Err(String::new()),
            other if endpoints.flag(other, &mut value)? => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let identity = env
        .get("POD_NAME")
        .or_else(|| env.get("HOSTNAME"))
        .cloned()
        .unwrap_or_else(|| format!("lvms-operator-{}", std::process::id()));
    endpoints.service.1 = namespace.clone();
    Ok(Options {
        config: Config::from_env(namespace, env),
        endpoints,
        leader_elect,
        identity,
    })
}

fn init_logs(env: &BTreeMap<String, String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if env.get("LOG_FORMAT").is_some_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args, &env) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lvms-operator: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logs(&env);
    // One thread: the operator waits on the API server almost all the time, and a single-threaded
    // runtime keeps the resident set small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("finding the API server: {e}"))?;
        let client = |c: kube::Config| {
            kube::Client::try_from(c).map_err(|e| format!("connecting to the API server: {e}"))
        };
        let (writes, watches) = (client(config.clone())?, client(config)?);
        tracing::info!(namespace = %opts.config.namespace, "lvms-operator starting");
        run(writes, watches, opts).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn namespace_from_flag_env_or_default() {
        let o = parse(&[], &env(&[])).unwrap();
        assert_eq!(o.config.namespace, "openshift-storage");
        let o = parse(&[], &env(&[("POD_NAMESPACE", "lvms")])).unwrap();
        assert_eq!(o.config.namespace, "lvms");
        let o = parse(
            &["--namespace=x".into(), "--leader-elect".into()],
            &env(&[("POD_NAMESPACE", "lvms")]),
        )
        .unwrap();
        assert_eq!(o.config.namespace, "x");
        assert!(o.leader_elect);
        let o = parse(
            &["--metrics-addr".into(), "127.0.0.1:9000".into()],
            &env(&[]),
        )
        .unwrap();
        assert_eq!(o.endpoints.metrics_addr, "127.0.0.1:9000");
        assert_eq!(o.endpoints.health_addr, "0.0.0.0:8081");
        assert!(!o.endpoints.insecure_metrics);
        assert_eq!(
            o.endpoints.service,
            (
                "lvms-operator-metrics".to_string(),
                "openshift-storage".to_string()
            ),
            "the self-signed certificate names the Service in the operator's namespace"
        );
        let o = parse(
            &["--metrics-cert-dir=".into(), "--metrics-insecure".into()],
            &env(&[]),
        )
        .unwrap();
        assert_eq!(o.endpoints.cert_dir, None);
        assert!(o.endpoints.insecure_metrics);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(
            parse(&["--nope".into()], &env(&[])).err().unwrap(),
            "unknown argument --nope"
        );
        assert_eq!(
            parse(&["--namespace".into()], &env(&[])).err().unwrap(),
            "--namespace needs a value"
        );
    }
}
