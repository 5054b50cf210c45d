//! `/readyz` means able to reconcile: the operator, run as its binary runs it against the API
//! double, answers 503 until its LVMCluster cache has synced (the watch client here answers
//! every request 700 ms late), then 200; and the controller does reconcile (its finalizer lands
//! on the LVMCluster), so waiting for readiness takes nothing from it.

use std::time::{Duration, Instant};

use api_double::ApiDouble;
use lvms_operator::config::Config;
use lvms_operator::run::{Options, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn readyz(port: u16) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.ok()?;
    out.get(9..12).map(String::from)
}

#[tokio::test(flavor = "current_thread")]
async fn ready_once_the_cache_has_synced() {
    let api = ApiDouble::new();
    const CLUSTERS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmclusters";
    api.seed(
        CLUSTERS,
        serde_json::json!({
            "apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMCluster",
            "metadata": {"name": "c", "namespace": "openshift-storage"},
            "spec": {"storage": {"deviceClasses": [{"name": "fast", "default": true,
                "thinPoolConfig": {"name": "tp", "sizePercent": 90, "overprovisionRatio": 10}}]}},
        }),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = Options {
        config: Config::default(),
        endpoints: http_probe::Endpoints {
            health_addr: format!("127.0.0.1:{port}"),
            metrics_addr: "127.0.0.1:0".into(),
            cert_dir: None,
            ..http_probe::Endpoints::new("lvms-operator-metrics", "openshift-storage")
        },
        leader_elect: false,
        identity: "test".into(),
    };
    let lag = Duration::from_millis(700);
    let started = Instant::now();
    let operator = tokio::spawn(run(api.client(), api.client_with_latency(lag), opts));
    let mut seen = Vec::new();
    let became_ready = loop {
        let status = readyz(port).await;
        if status.as_deref() == Some("200") {
            break started.elapsed();
        }
        seen.push(status);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never ready: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        seen.contains(&Some("503".to_string())),
        "not ready while the cache fills: {seen:?}"
    );
    assert!(
        became_ready >= lag,
        "ready after {became_ready:?}, before the list answered"
    );
    let finalized = || {
        api.get(CLUSTERS, Some("openshift-storage"), "c").unwrap()["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    };
    while !finalized() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the controller never reconciled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    operator.abort();
}
