//! `cargo bench -p lvms-operator`: one reconcile pass with 500 nodes' statuses.
//! - `pure`: desired objects + status aggregation (the decisions, no I/O).
//! - `full`: the real reconcile function through a kube Client against the in-process API double
//!   (serialization, every request; no network latency).
//!
//! - `converge`: a new LVMCluster on 3 nodes, with every request to the API double (in process,
//!   and served over HTTP on loopback, where connections are real) delayed by
//!   8 ms (a round trip to a real API server, as measured there): the first pass, which creates
//!   every object, and the pass right after it (the one the first pass's own writes trigger).
//!   Latency dominates, so the figure counts the round trips a pass makes one after another.
//!
//! Prints the median and p90 of repeated passes, and the process's peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Recorder, Reporter};
use lvms_api::LVMCluster;
use lvms_operator::config::Config;
use lvms_operator::metrics::Metrics;
use lvms_operator::reconcile::{Context, reconcile};
use lvms_operator::resources::{Discovery, desired};
use lvms_operator::status::{Resources, aggregate};
use serde_json::json;

const NODES: usize = 500;
const NS: &str = "openshift-storage";

fn cluster_json() -> serde_json::Value {
    json!({
        "apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMCluster",
        "metadata": {"name": "lvmcluster", "namespace": NS},
        "spec": {"storage": {"deviceClasses": [
            {"name": "fast", "default": true, "deviceSelector": {"paths": ["/dev/nvme1n1"]},
             "thinPoolConfig": {"name": "thin-pool-1", "sizePercent": 90, "overprovisionRatio": 10}},
            {"name": "bulk", "fstype": "ext4", "deviceSelector": {"optionalPaths": ["/dev/sdb", "/dev/sdc"]}},
        ]}},
    })
}

fn node(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}}})
}

fn report(i: usize) -> serde_json::Value {
    let vg = |name: &str| json!({"name": name, "status": "Ready", "devices": ["/dev/sdb", "/dev/sdc"], "excluded": [{"name": "/dev/sda", "reasons": ["has children (partitions)", "has a filesystem signature (xfs)"]}]});
    json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroupNodeStatus", "metadata": {"name": format!("node-{i:03}"), "namespace": NS}, "spec": {"nodeStatus": [vg("fast"), vg("bulk")]}})
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cluster: LVMCluster = serde_json::from_value(cluster_json()).unwrap();
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| serde_json::from_value(node(i)).unwrap())
        .collect();
    let reports: Vec<lvms_api::LVMVolumeGroupNodeStatus> = (0..NODES)
        .map(|i| serde_json::from_value(report(i)).unwrap())
        .collect();
    let config = Config::default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    let mut pure = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let d = desired(&cluster, &config, &Discovery::default());
        let s = aggregate(&cluster, &nodes, &reports, &Resources::Synced, &now);
        std::hint::black_box((d, &s));
        assert!(s.ready);
        pure.push(t.elapsed());
    }
    let (p50, p90) = stats(pure);
    println!("pure pass, {NODES} nodes x 2 classes: median {p50:?}, p90 {p90:?}");

    let api = ApiDouble::new();
    for i in 0..NODES {
        api.seed("api/v1/nodes", node(i));
        api.seed(
            "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses",
            report(i),
        );
    }
    api.seed("apis/lvm.topolvm.io/v1alpha1/lvmclusters", cluster_json());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let client = api.client();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "bench".into(),
            instance: None,
        },
    );
    // Every pass writes everything, as before writes were skipped: the figure stays comparable.
    let ctx = Arc::new(
        Context::new(client, config, recorder, Arc::new(Metrics::default()))
            .with_applied_ttl(Duration::ZERO),
    );
    let mut full = Vec::new();
    for _ in 0..30 {
        let c: LVMCluster = serde_json::from_value(
            api.get(
                "apis/lvm.topolvm.io/v1alpha1/lvmclusters",
                Some(NS),
                "lvmcluster",
            )
            .unwrap(),
        )
        .unwrap();
        let t = Instant::now();
        rt.block_on(reconcile(Arc::new(c), ctx.clone())).unwrap();
        full.push(t.elapsed());
    }
    let (p50, p90) = stats(full);
    println!(
        "full reconcile through the client and API double, {NODES} nodes: median {p50:?}, p90 {p90:?}"
    );
    converge(&rt);
    println!("peak RSS of this process: {} KiB", peak_rss_kib());
}

const LATENCY: Duration = Duration::from_millis(8);

/// A client of `api` served over HTTP on loopback with `LATENCY` per request: connections are
/// real (one per request in flight, kept alive), as with a real API server.
fn http_client(rt: &tokio::runtime::Runtime, api: &ApiDouble) -> kube::Client {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(api_double::served::serve_with_latency(
            Arc::new(api.clone()),
            listener,
            LATENCY,
        ));
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&api_double::served::kubeconfig(addr)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

/// One converge: (first pass, its requests, its writes, second pass, its requests, its writes).
fn converge_once(
    rt: &tokio::runtime::Runtime,
    over_http: bool,
) -> (Duration, usize, usize, Duration, usize, usize) {
    let api = ApiDouble::new();
    for i in 0..3 {
        api.seed("api/v1/nodes", node(i));
        api.seed(
            "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses",
            report(i),
        );
    }
    api.seed("apis/lvm.topolvm.io/v1alpha1/lvmclusters", cluster_json());
    let client = if over_http {
        http_client(rt, &api)
    } else {
        api.client_with_latency(LATENCY)
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "bench".into(),
            instance: None,
        },
    );
    // The controller's cache, as the watch keeps it (updated below before each pass).
    let (store, mut writer) = kube::runtime::reflector::store::<LVMCluster>();
    let ctx = Arc::new(
        Context::new(
            client,
            Config::default(),
            recorder,
            Arc::new(Metrics::default()),
        )
        .with_cluster_store(store),
    );
    let latest = || -> LVMCluster {
        serde_json::from_value(
            api.get(
                "apis/lvm.topolvm.io/v1alpha1/lvmclusters",
                Some(NS),
                "lvmcluster",
            )
            .unwrap(),
        )
        .unwrap()
    };
    let writes = |from: usize| {
        api.requests()[from..]
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .count()
    };
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(latest()));
    let t = Instant::now();
    rt.block_on(reconcile(Arc::new(latest()), ctx.clone()))
        .unwrap();
    let first = t.elapsed();
    for (resource, name) in [
        ("apis/apps/v1/daemonsets", "vg-manager"),
        ("apis/apps/v1/deployments", "topolvm-controller"),
        ("apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups", "fast"),
    ] {
        assert!(
            api.get(resource, Some(NS), name).is_some(),
            "{name} created"
        );
    }
    assert!(
        api.get("apis/storage.k8s.io/v1/csidrivers", None, "topolvm.io")
            .is_some()
    );
    assert!(
        api.get("apis/storage.k8s.io/v1/storageclasses", None, "lvms-fast")
            .is_some()
    );
    let n1 = api.requests().len();
    let w1 = writes(0);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(latest()));
    let t = Instant::now();
    rt.block_on(reconcile(Arc::new(latest()), ctx.clone()))
        .unwrap();
    let second = t.elapsed();
    (first, n1, w1, second, api.requests().len() - n1, writes(n1))
}

fn converge(rt: &tokio::runtime::Runtime) {
    for (over_http, how) in [(false, "in process"), (true, "over HTTP on loopback")] {
        let runs: Vec<_> = (0..7).map(|_| converge_once(rt, over_http)).collect();
        let (p50, p90) = stats(runs.iter().map(|r| r.0).collect());
        let (q50, q90) = stats(runs.iter().map(|r| r.3).collect());
        let r = &runs[0];
        println!(
            "converge {how}, 3 nodes, {LATENCY:?} per request: first pass median {p50:?} (p90 {p90:?}), {} requests, {} writes",
            r.1, r.2
        );
        println!(
            "  the pass right after it: median {q50:?} (p90 {q90:?}), {} requests, {} writes",
            r.4, r.5
        );
    }
}
