//! What a scrape costs on the metrics listener (`cargo bench -p http-probe`): a TLS handshake
//! plus an authorized GET, with the verdict cached (every scrape but the first of a token in a
//! minute) and uncached (TokenReview + SubjectAccessReview to the in-process API double, so the
//! figure is our side only; a real API server adds its round trips), and a plain health GET on a
//! kept-alive connection. Prints the median and p90 of each, in microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::ApiDouble;
use http_probe::auth::CacheTtl;
use http_probe::client::get;
use http_probe::tls::{Certificates, service_names};
use http_probe::{Access, Handler, Limits, Reply, serve};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 300;

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{what:<52} median {:>8.1} µs   p90 {:>8.1} µs",
        at(0.5),
        at(0.9)
    );
}

fn body() -> String {
    // About the size of a vg-manager's scrape with two device classes.
    (0..60)
        .map(|i| {
            format!("topolvm_volumegroup_size_bytes{{node=\"n\",device_class=\"c{i}\"}} 1e12\n")
        })
        .collect::<String>()
        + "# EOF\n"
}

async fn metrics_listener(
    api: &ApiDouble,
    ttl: CacheTtl,
) -> (
    std::net::SocketAddr,
    Vec<rustls_pki_types::CertificateDer<'static>>,
) {
    let certs = Certificates::new(None, &service_names("m", "ns")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = body();
    let handler: Handler = Arc::new(move |_: &str| Reply::metrics(text.clone()));
    let access = Access::Authorized {
        tls: certs.acceptor().unwrap(),
        auth: Arc::new(http_probe::auth::Authorizer::with_ttl(api.client(), ttl)),
    };
    tokio::spawn(serve(listener, handler, access, Limits::default()));
    (addr, certs.chain())
}

async fn scrapes(
    addr: std::net::SocketAddr,
    roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (status, _) = get(tcp, "m.ns.svc", roots, "/metrics", Some("prom"))
            .await
            .unwrap();
        assert_eq!(status, 200);
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = ApiDouble::new();
        api.seed(
            "apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"metadata": {"name": "r"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
        );
        api.seed(
            "apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"metadata": {"name": "r"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
                   "subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]}),
        );
        api.add_service_account_token("prom", "monitoring", "prometheus-k8s");

        let (addr, roots) = metrics_listener(&api, CacheTtl::default()).await;
        report("TLS handshake + authorized scrape, cached verdict", scrapes(addr, &roots).await);
        let never = CacheTtl { allowed: Duration::ZERO, denied: Duration::ZERO };
        let (addr, roots) = metrics_listener(&api, never).await;
        report("TLS handshake + authorized scrape, two reviews", scrapes(addr, &roots).await);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(|_: &str| Reply::ok()), Access::Open, Limits::default()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut samples = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..ROUNDS * 10 {
            let t = Instant::now();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut got = 0;
            while !buf[..got].ends_with(b"ok\n") {
                got += s.read(&mut buf[got..]).await.unwrap();
            }
            samples.push(t.elapsed());
        }
        report("plain /healthz on a kept-alive connection", samples);
    });
}
