//! The agent's loop: a pass at start, then one after any change to the LVMVolumeGroups or to this
//! node's status object, and otherwise once per resync period, so an idle node runs its three
//! read commands no more often than that (one, the LVM report, when no class discovers devices). After an LV change only the capacity annotation is
//! refreshed, from the shared report, without a command. Beside it run
//! the LogicalVolume controller, when a socket is given the CSI node service, and while a class
//! has `thinPoolConfig.autoExtend` the thin pool poller ([`poll_pools`]). Health in
//! plain HTTP, metrics over HTTPS to callers the API server authorizes (http-probe).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_probe::Reply;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::runtime::watcher;
use kube::{Api, Client};
use lvm::{Exec, Lvm, Mode};
use lvms_api::{LVMVolumeGroup, LVMVolumeGroupNodeStatus};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::autoextend;
use crate::csi_node::{self, NodeService};
use crate::lv_controller;
use crate::metrics::Metrics;
use crate::reports::Reports;

pub struct Options {
    pub node: String,
    pub namespace: String,
    /// Plain /healthz and /readyz; HTTPS /metrics for authorized callers.
    pub endpoints: http_probe::Endpoints,
    pub resync: Duration,
    pub mode: Mode,
    /// How long an LV of ours without its LogicalVolume is kept before it is removed.
    pub orphan_grace: Duration,
    /// Where to serve the CSI node service, if at all.
    pub csi_socket: Option<std::path::PathBuf>,
}

/// The health listener's routes.
pub fn health(path: &str) -> Reply {
    match path {
        "/healthz" | "/readyz" => Reply::ok(),
        _ => Reply::not_found(),
    }
}

/// The metrics listener's routes.
pub fn metrics(path: &str, metrics: &Metrics) -> Reply {
    match path {
        "/metrics" => Reply::metrics(metrics.render()),
        _ => Reply::not_found(),
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

/// Wakes `notify` when this node's status object is changed or deleted by someone else. The
/// agent's own writes come back by this watch too; passing on them would make every status
/// change (a RAID volume's sync percent) start the next pass at once, in a loop.
fn watch_own_status(
    api: Api<LVMVolumeGroupNodeStatus>,
    config: watcher::Config,
    agent: Arc<Agent>,
    notify: Arc<Notify>,
) {
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::Apply(s)) if agent.is_own_status(&s.spec) => {}
                Ok(_) => notify.notify_one(),
                Err(e) => {
                    warn!(%e, "watch");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
}

/// Thin pool auto-extension: while a class has `autoExtend`, one `lvs` of its pools every
/// [`autoextend::POLL`] (every [`autoextend::POLL_BUSY`] while a pool's use moves), apart from
/// the resync: dmeventd does not run in the pod, and a pool filling at disk speed cannot wait a
/// minute. An extension wakes `capacity` (the annotation and gauges grow with the pool); a
/// warning raised or cleared wakes `pass` (the class's status says it). Without such a class it
/// sleeps until a pass finds one, and runs no command.
fn poll_pools(agent: Arc<Agent>, capacity: Arc<Notify>, pass: Arc<Notify>) {
    tokio::spawn(async move {
        // A failing read is logged when it starts failing or fails otherwise, not every poll.
        let mut failing: Option<String> = None;
        let mut busy = false;
        loop {
            agent.pools_to_watch().await;
            tokio::time::sleep(autoextend::next_poll(busy)).await;
            busy = false;
            match agent.poll_pools().await {
                Ok(p) => {
                    busy = p.busy;
                    if failing.take().is_some() {
                        info!("thin pools readable again");
                    }
                    if p.extended > 0 {
                        capacity.notify_one();
                    }
                    if p.warnings_changed {
                        pass.notify_one();
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if failing.as_ref() != Some(&e) {
                        warn!(error = %e, "polling thin pools for autoExtend");
                        failing = Some(e);
                    }
                }
            }
        }
    });
}

/// The command runner for `mode`. In the agent's own namespaces (the image's lvm2 in a pod)
/// every `lvm` command gets the overrides of [`lvm::container`], decided from this node's /etc/lvm.
pub fn exec(mode: Mode) -> Exec {
    match mode {
        Mode::Direct => Exec::new(mode).with_lvm_config(lvm::container::overrides(
            lvm::container::HostFacts::read(std::path::Path::new("/")),
        )),
        Mode::HostNamespace => Exec::new(mode),
    }
}

/// The agent until SIGTERM or Ctrl-C.
pub async fn run(client: Client, opts: Options) -> Result<(), String> {
    let runner = Arc::new(exec(opts.mode));
    if let Some(config) = runner.lvm_config() {
        info!(
            lvm_config = config,
            "LVM settings overridden for the pod (lvm --config)"
        );
    }
    run_with(client, opts, runner, shutdown()).await
}

/// The agent with a given command runner (tests and benchmarks count its commands), until
/// `stop` completes.
pub async fn run_with(
    client: Client,
    opts: Options,
    runner: Arc<Exec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    opts.endpoints
        .start(
            client.clone(),
            Arc::new(health),
            Arc::new(move |path: &str| self::metrics(path, &m)),
        )
        .await?;

    let reports = Arc::new(Reports::new(Lvm::new(runner.clone())));
    let agent = Arc::new(Agent::with_reports(
        client.clone(),
        &opts.node,
        &opts.namespace,
        runner.clone(),
        reports.clone(),
    ));
    let notify = Arc::new(Notify::new());
    let capacity = Arc::new(Notify::new());
    let volumes = lv_controller::start(lv_controller::Context {
        client: client.clone(),
        reports: reports.clone(),
        node: opts.node.clone(),
        namespace: opts.namespace.clone(),
        changed: capacity.clone(),
    });
    let mut garbage = lv_controller::Garbage::default();
    // The CSI node service lives as long as the agent; if it cannot serve, the agent stops too
    // (kubelet would otherwise see a registered driver that never answers).
    let mut csi = opts.csi_socket.clone().map(|socket| {
        // The LogicalVolume cache lets a healthy publish check for a failure to clear without
        // a request.
        let node = NodeService::new(
            opts.node.clone(),
            reports.clone(),
            runner.clone(),
            opts.mode,
        )
        .with_kube(csi_node::Kube::new(
            client.clone(),
            volumes.clone(),
            &opts.node,
        ));
        tokio::spawn(async move { csi_node::serve(node, &socket, std::future::pending()).await })
    });
    watch(
        Api::<LVMVolumeGroup>::namespaced(client.clone(), &opts.namespace),
        watcher::Config::default(),
        notify.clone(),
    );
    // This node's raw-device PVs: a released one is cleaned at once (and by the periodic pass,
    // should this event be missed).
    watch(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default().labels(&format!("{}={}", lvms_api::raw::NODE_LABEL, opts.node)),
        notify.clone(),
    );
    let own = watcher::Config::default().fields(&format!("metadata.name={}", opts.node));
    watch_own_status(
        Api::<LVMVolumeGroupNodeStatus>::namespaced(client.clone(), &opts.namespace),
        own,
        agent.clone(),
        notify.clone(),
    );
    poll_pools(agent.clone(), capacity.clone(), notify.clone());
    info!(node = %opts.node, namespace = %opts.namespace, resync = ?opts.resync, "vg-manager running");

    let mut stop = std::pin::pin!(stop);
    let mut backoff = Duration::from_secs(2);
    let mut commands = runner.invocations();
    // Disks are scanned on a change and at start; a periodic pass scans only where a class
    // discovers devices (RuntimeDynamic) or is not built yet, and otherwise reads LVM alone
    // (RAID health, capacity).
    let mut scan = true;
    let mut periodic_scan;
    loop {
        let result = agent.pass_with(scan).await;
        metrics.passes.inc();
        let now = runner.invocations();
        metrics.lvm_commands.inc_by(now - commands);
        commands = now;
        let wait = match result {
            Ok(out) => {
                metrics.set_usage(&opts.node, &out.usage);
                metrics.set_raid(&opts.node, &out.statuses);
                metrics.set_raw(&opts.node, out.raw);
                periodic_scan = out.rescan;
                backoff = Duration::from_secs(2);
                match lv_controller::collect(&reports, &volumes, &mut garbage, opts.orphan_grace)
                    .await
                {
                    Ok(removed) => {
                        metrics.orphans_removed.inc_by(removed.len() as u64);
                    }
                    Err(e) => warn!(error = %e, "collecting orphaned logical volumes"),
                }
                // The pass has just read LVM: the volumes' health costs no command.
                if let Err(e) =
                    lv_controller::check_health(&client, &reports, &volumes, &opts.node, opts.mode)
                        .await
                {
                    warn!(error = %e, "checking the health of the volumes");
                }
                opts.resync
            }
            Err(e) => {
                metrics.pass_errors.inc();
                warn!(error = %e, "pass failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(60));
                periodic_scan = true;
                backoff
            }
        };
        let next_pass = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = notify.notified() => {
                    // Let a burst of changes (an apply touching several objects) settle into one
                    // pass.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    scan = true;
                    break;
                }
                _ = tokio::time::sleep_until(next_pass) => {
                    scan = periodic_scan;
                    break;
                }
                _ = capacity.notified() => {
                    // A burst of volume changes (fifty CreateVolume calls) makes one update.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match agent.refresh_capacity().await {
                        Ok(usage) => metrics.set_usage(&opts.node, &usage),
                        Err(e) => warn!(error = %e, "refreshing capacity"),
                    }
                }
                r = async {
                    match csi.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                } => {
                    return Err(match r {
                        Ok(Ok(())) => "the CSI node service stopped".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("the CSI node service failed: {e}"),
                    });
                }
                _ = &mut stop => {
                    info!("shutting down");
                    return Ok(());
                }
            }
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown() {
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
        assert_eq!(health("/healthz"), Reply::ok());
        assert_eq!(health("/metrics").status, 404, "never on the plain port");
        assert!(
            metrics("/metrics", &m)
                .body
                .contains("vg_manager_passes_total")
        );
        assert_eq!(metrics("/x", &m).status, 404);
    }
}
