//! The operator's metrics endpoint, started as `run` starts it, against the API double holding
//! the shipped Prometheus RBAC (`config/prometheus`): Prometheus's service account gets the
//! metrics over TLS, an account without the binding 403, no token 401.

use std::sync::Arc;

use api_double::ApiDouble;
use http_probe::client::get;
use lvms_operator::http::{Health, health, metrics};
use lvms_operator::metrics::Metrics;
use serde_json::Value;

fn shipped(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/prometheus")
        .join(file);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn prometheus_gets_the_metrics_and_nobody_else() {
    let api = ApiDouble::new();
    api.seed(
        "apis/rbac.authorization.k8s.io/v1/clusterroles",
        shipped("metrics_reader_cluster_role.yaml"),
    );
    api.seed(
        "apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        shipped("metrics_reader_binding.yaml"),
    );
    for (token, ns) in [
        ("openshift", "openshift-monitoring"),
        ("kube-prometheus", "monitoring"),
    ] {
        api.add_service_account_token(token, ns, "prometheus-k8s");
    }
    // An account that can read everything in its namespace, but not the metrics URL.
    api.add_service_account_token("app", "openshift-storage", "lvms-operator");

    let (h, m) = (Arc::new(Health::default()), Arc::new(Metrics::default()));
    m.observe("lvmcluster", std::time::Duration::from_millis(3), None);
    let endpoints = http_probe::Endpoints {
        health_addr: "127.0.0.1:0".into(),
        metrics_addr: "127.0.0.1:0".into(),
        cert_dir: None,
        ..http_probe::Endpoints::new(
            lvms_operator::manifests::METRICS_SERVICE,
            "openshift-storage",
        )
    };
    let bound = endpoints
        .start(
            api.client(),
            Arc::new(move |p: &str| health(p, &h)),
            Arc::new(move |p: &str| metrics(p, &m)),
        )
        .await
        .unwrap();
    let roots = bound.certificates.as_ref().unwrap().chain();
    let server = "lvms-operator-metrics.openshift-storage.svc";
    let scrape = |token: Option<&'static str>| {
        let roots = roots.clone();
        let addr = bound.metrics.unwrap();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            get(tcp, server, &roots, "/metrics", token).await.unwrap()
        }
    };
    assert_eq!(scrape(None).await.0, 401);
    assert_eq!(scrape(Some("app")).await.0, 403);
    for token in ["openshift", "kube-prometheus"] {
        let (status, body) = scrape(Some(token)).await;
        assert_eq!(status, 200, "{token}");
        assert!(body.contains("lvms_operator_reconciles_total"), "{body}");
    }
}
