//! The metrics listener over real TLS against the API double's TokenReview and
//! SubjectAccessReview: 401 without a token, 403 for a user without the permission, the metrics
//! for one the RBAC grants; certificates from files (reloaded) or self-signed.

use std::path::PathBuf;
use std::sync::Arc;

use api_double::ApiDouble;
use http_probe::client::get;
use http_probe::endpoints::Bound;
use http_probe::tls::{CERT_FILE, KEY_FILE};
use http_probe::{Endpoints, Handler, Reply};
use rustls_pki_types::CertificateDer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVICE: &str = "lvms-operator-metrics";
const NS: &str = "lvms";
const SERVER_NAME: &str = "lvms-operator-metrics.lvms.svc";

fn double() -> ApiDouble {
    let api = ApiDouble::new();
    api.seed(
        "apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "metrics-reader"},
               "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
    );
    api.seed(
        "apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        json!({"metadata": {"name": "metrics-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]}),
    );
    api.add_service_account_token("prometheus-token", "monitoring", "prometheus-k8s");
    api.add_service_account_token("app-token", "apps", "web");
    api
}

fn handlers() -> (Handler, Handler) {
    let health: Handler = Arc::new(|p: &str| match p {
        "/healthz" | "/readyz" => Reply::ok(),
        _ => Reply::not_found(),
    });
    let metrics: Handler = Arc::new(|p: &str| match p {
        "/metrics" => Reply::metrics("up 1\n# EOF\n".into()),
        _ => Reply::not_found(),
    });
    (health, metrics)
}

fn endpoints(cert_dir: Option<PathBuf>) -> Endpoints {
    Endpoints {
        health_addr: "127.0.0.1:0".into(),
        metrics_addr: "127.0.0.1:0".into(),
        cert_dir,
        ..Endpoints::new(SERVICE, NS)
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("http-probe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A certificate for the Service's name, written as the service-ca Secret's files.
fn write_pair(dir: &std::path::Path) -> CertificateDer<'static> {
    let pair = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).unwrap();
    let pem = |der: &[u8], label: &str| {
        let b64 = base64(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out + &format!("-----END {label}-----\n")
    };
    std::fs::write(dir.join(CERT_FILE), pem(pair.cert.der(), "CERTIFICATE")).unwrap();
    std::fs::write(
        dir.join(KEY_FILE),
        pem(&pair.signing_key.serialize_der(), "PRIVATE KEY"),
    )
    .unwrap();
    pair.cert.der().clone()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn scrape(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    get(tcp, SERVER_NAME, roots, path, token).await.unwrap()
}

/// The double and both listeners, the certificate read from `cert_dir`.
async fn started(cert_dir: Option<PathBuf>) -> (ApiDouble, Bound) {
    let api = double();
    let (health, metrics) = handlers();
    let bound = endpoints(cert_dir)
        .start(api.client(), health, metrics)
        .await
        .unwrap();
    (api, bound)
}

/// The whole answer to a plain GET.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn only_an_authorized_token_gets_the_metrics() {
    let dir = temp_dir("authz");
    let cert = write_pair(&dir);
    let (api, bound) = started(Some(dir.clone())).await;
    let addr = bound.metrics.expect("a metrics listener");
    let roots = [cert];

    assert_eq!(scrape(addr, &roots, "/metrics", None).await.0, 401);
    assert_eq!(
        scrape(addr, &roots, "/metrics", Some("forged")).await.0,
        401
    );
    assert_eq!(
        scrape(addr, &roots, "/metrics", Some("app-token")).await.0,
        403
    );
    let (status, body) = scrape(addr, &roots, "/metrics", Some("prometheus-token")).await;
    assert_eq!((status, body.as_str()), (200, "up 1\n# EOF\n"));
    // The permission is for /metrics only.
    assert_eq!(
        scrape(addr, &roots, "/healthz", Some("prometheus-token"))
            .await
            .0,
        403
    );

    // Verdicts are cached: another scrape asks the API server nothing.
    let reviews = |api: &ApiDouble| {
        api.requests()
            .iter()
            .filter(|r| r.contains("tokenreviews"))
            .count()
    };
    let before = reviews(&api);
    assert_eq!(
        scrape(addr, &roots, "/metrics", Some("prometheus-token"))
            .await
            .0,
        200
    );
    assert_eq!(reviews(&api), before);

    // The health port is plain and does not serve the metrics.
    let out = plain_get(bound.health, "/metrics").await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_mounted_files_a_self_signed_certificate_is_served() {
    let (_api, bound) = started(Some(temp_dir("none"))).await;
    let certs = bound.certificates.unwrap();
    assert_eq!(certs.source(), http_probe::tls::Source::SelfSigned);
    let roots = certs.chain();
    let (status, _) = scrape(
        bound.metrics.unwrap(),
        &roots,
        "/metrics",
        Some("prometheus-token"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_and_a_bad_one_refused() {
    let dir = temp_dir("rotate");
    let first = write_pair(&dir);
    let (_api, bound) = started(Some(dir.clone())).await;
    let certs = bound.certificates.unwrap();
    assert_eq!(certs.chain(), vec![first.clone()]);

    let second = write_pair(&dir);
    certs.reload().unwrap();
    assert_eq!(certs.chain(), vec![second.clone()]);
    // The old certificate no longer verifies the server; the new one does.
    let addr = bound.metrics.unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        get(tcp, SERVER_NAME, &[first], "/metrics", None)
            .await
            .is_err()
    );
    assert_eq!(
        scrape(addr, std::slice::from_ref(&second), "/metrics", None)
            .await
            .0,
        401
    );

    // A key that does not belong to the certificate: refused, the good pair stays.
    let other = temp_dir("rotate-other");
    write_pair(&other);
    std::fs::copy(other.join(KEY_FILE), dir.join(KEY_FILE)).unwrap();
    let err = certs.reload().unwrap_err();
    assert!(err.contains("tls.crt and tls.key"), "{err}");
    assert_eq!(certs.chain(), vec![second]);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other);
}

#[tokio::test]
async fn insecure_metrics_are_plain_on_the_health_port_only_when_asked() {
    let api = double();
    let (health, metrics) = handlers();
    let bound = Endpoints {
        insecure_metrics: true,
        ..endpoints(None)
    }
    .start(api.client(), health, metrics)
    .await
    .unwrap();
    assert!(bound.metrics.is_none());
    let out = plain_get(bound.health, "/metrics").await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("# EOF\n"),
        "{out}"
    );
}
