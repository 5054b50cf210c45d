//! Wiring: the controller with its watches, leader election, the HTTP endpoints and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{self, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use lvms_api::{LVMCluster, LVMVolumeGroup, LVMVolumeGroupNodeStatus};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::http::Health;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

pub struct Options {
    pub config: Config,
    pub endpoints: http_probe::Endpoints,
    pub leader_elect: bool,
    pub identity: String,
}

/// `client` makes the reconciler's requests; `watch_client` holds the watches. kube's client
/// speaks HTTP/1.1 only, where a watch keeps its connection for as long as it runs: with one
/// client, a write after the watches started waited for a new TLS connection (44 ms seen on a
/// real API server); with two, the writer's pool keeps its own connections warm.
pub async fn run(client: Client, watch_client: Client, opts: Options) -> anyhow_free::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let (h, m) = (health.clone(), metrics.clone());
    opts.endpoints
        .start(
            client.clone(),
            Arc::new(move |path: &str| crate::http::health(path, &h)),
            Arc::new(move |path: &str| crate::http::metrics(path, &m)),
        )
        .await?;

    let ns = opts.config.namespace.clone();
    if opts.leader_elect {
        let elector = LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &ns),
            "lvms-operator",
            &opts.identity,
            Duration::from_secs(15),
        );
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(%e, "leader election"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown_signal() => return Ok(()),
            }
        }
        info!(identity = %opts.identity, "became the leader");
        // Renew at a third of the lease; a replica that cannot renew must stop reconciling
        // before another one takes over, so it exits and lets Kubernetes restart it.
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(elector.lease_duration / 3).await;
                match elector.try_acquire_or_renew().await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => {
                        error!("leadership lost to another replica; exiting");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        warn!(%e, "renewing the lease");
                        if last_ok.elapsed() > elector.lease_duration * 2 / 3 {
                            error!("could not renew the lease in time; exiting");
                            std::process::exit(1);
                        }
                    }
                }
            }
        });
    }

    let reporter = Reporter {
        controller: "lvms-operator".into(),
        instance: Some(opts.identity.clone()),
    };
    let wc = watch_client;
    let clusters: Api<LVMCluster> = Api::namespaced(wc.clone(), &ns);
    let controller = Controller::new(clusters, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(1));
    let store = controller.store();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            opts.config,
            Recorder::new(client.clone(), reporter),
            metrics,
        )
        .with_cluster_store(store.clone()),
    );
    // Ready means able to reconcile: leading (above) and the LVMCluster cache filled, so a
    // pass sees what exists instead of an empty list.
    let (ready_store, h) = (store.clone(), health.clone());
    tokio::spawn(async move {
        // Polled again and again: the store's readiness is a oneshot channel that wakes only
        // the last of its waiters, and the controller waits on it too.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), ready_store.wait_until_ready())
                .await
            {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
        h.ready.store(true, Ordering::Relaxed);
        info!("LVMCluster cache synced: ready");
    });
    controller
        .owns_stream(observed(
            &ctx,
            Api::<LVMVolumeGroup>::namespaced(wc.clone(), &ns),
        ))
        .owns_stream(observed(
            &ctx,
            Api::<DaemonSet>::namespaced(wc.clone(), &ns),
        ))
        .owns_stream(observed(
            &ctx,
            Api::<Deployment>::namespaced(wc.clone(), &ns),
        ))
        // A node report changes the status of every LVMCluster (there is one).
        .watches(
            Api::<LVMVolumeGroupNodeStatus>::namespaced(wc.clone(), &ns),
            watcher::Config::default(),
            move |_| {
                store
                    .state()
                    .iter()
                    .map(|c| ObjectRef::from(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // A deleted Node: release what it held (node_loss); the sweep also runs on every pass.
        .reconcile_all_on(crate::node_loss::node_deletions(wc.clone()))
        .graceful_shutdown_on(shutdown_signal())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                // A trigger (an owned object's deletion) for an LVMCluster that has just left the
                // cache: nothing to reconcile, and no reason to warn whoever deleted it.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "reconcile: the LVMCluster is gone")
                }
                Err(e) => warn!(error = %e, "reconcile"),
            }
        })
        .await;
    info!("shut down");
    Ok(())
}

/// The watch of an owned kind, as `Controller::owns` makes it, with every event shown to the
/// applied-objects cache first: an object someone else changed or deleted is written again.
fn observed<K>(
    ctx: &Arc<Context>,
    api: Api<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let ctx = ctx.clone();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .inspect_ok(move |event| ctx.applied.observe(event))
        .touched_objects()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Errors at start-up are reported as text: there is nothing to match on.
pub mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
}
