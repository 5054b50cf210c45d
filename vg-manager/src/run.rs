//! The agent's loop: a pass at start, then one after any change to the LVMVolumeGroups or to this
//! node's status object, and otherwise once per resync period, so an idle node runs its three
//! read commands no more often than that. Health and metrics on one port.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use lvm::{Exec, Mode};
use lvms_api::{LVMVolumeGroup, LVMVolumeGroupNodeStatus};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::metrics::Metrics;

pub struct Options {
    pub node: String,
    pub namespace: String,
    pub metrics_addr: String,
    pub resync: Duration,
    pub mode: Mode,
}

/// The reply to one request line on the health/metrics port.
pub fn respond(line: &str, metrics: &Metrics) -> http_probe::Reply {
    match http_probe::get_path(line) {
        None => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
        Some("/healthz" | "/readyz") => ("200 OK", "text/plain", "ok\n".into()),
        Some("/metrics") => ("200 OK", http_probe::OPENMETRICS, metrics.render()),
        Some(_) => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

/// Wakes `notify` on every change a watch reports (its own restarts included).
fn watch<K>(api: Api<K>, config: watcher::Config, notify: Arc<Notify>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                // A (re)list starts with Init before it has read anything; wake on what it found
                // (InitDone) and on real changes, not on every retry of a failing list.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => notify.notify_one(),
                Err(e) => {
                    warn!(%e, "watch");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
}

pub async fn run(client: Client, opts: Options) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&opts.metrics_addr)
        .await
        .map_err(|e| format!("binding {}: {e}", opts.metrics_addr))?;
    let m = metrics.clone();
    tokio::spawn(http_probe::serve(
        listener,
        Arc::new(move |line: &str| respond(line, &m)),
    ));

    let runner = Arc::new(Exec::new(opts.mode));
    let agent = Agent::new(client.clone(), &opts.node, &opts.namespace, runner.clone());
    let notify = Arc::new(Notify::new());
    watch(
        Api::<LVMVolumeGroup>::namespaced(client.clone(), &opts.namespace),
        watcher::Config::default(),
        notify.clone(),
    );
    let own = watcher::Config::default().fields(&format!("metadata.name={}", opts.node));
    watch(
        Api::<LVMVolumeGroupNodeStatus>::namespaced(client.clone(), &opts.namespace),
        own,
        notify.clone(),
    );
    info!(node = %opts.node, namespace = %opts.namespace, resync = ?opts.resync, "vg-manager running");

    let mut backoff = Duration::from_secs(2);
    let mut commands = runner.invocations();
    loop {
        let result = agent.pass().await;
        metrics.passes.inc();
        let now = runner.invocations();
        metrics.lvm_commands.inc_by(now - commands);
        commands = now;
        let wait = match result {
            Ok(out) => {
                metrics.set_usage(&opts.node, &out.usage);
                backoff = Duration::from_secs(2);
                opts.resync
            }
            Err(e) => {
                metrics.pass_errors.inc();
                warn!(error = %e, "pass failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(60));
                backoff
            }
        };
        tokio::select! {
            _ = notify.notified() => {
                // Let a burst of changes (an apply touching several objects) settle into one pass.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown() => {
                info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert_eq!(respond("GET /healthz HTTP/1.1", &m).0, "200 OK");
        assert!(
            respond("GET /metrics HTTP/1.1", &m)
                .2
                .contains("vg_manager_passes_total")
        );
        assert_eq!(respond("GET /x HTTP/1.1", &m).0, "404 Not Found");
    }
}
