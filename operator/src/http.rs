//! `/healthz`, `/readyz` and `/metrics` on one port: a few lines of HTTP/1.1 instead of a web
//! framework, which would double the binary and its memory for three GET routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    /// Set once the controller runs (after winning leader election).
    pub ready: AtomicBool,
}

/// The response to one request line: (status line, content type, body).
pub fn respond(
    request_line: &str,
    health: &Health,
    metrics: &Metrics,
) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return ("405 Method Not Allowed", "text/plain", "only GET\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ok\n".into())
        }
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not leading yet\n".into(),
        ),
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) =
                respond(text.lines().next().unwrap_or(""), &health, &metrics);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let (h, m) = (Health::default(), Metrics::default());
        assert_eq!(respond("GET /healthz HTTP/1.1", &h, &m).0, "200 OK");
        assert_eq!(
            respond("GET /readyz HTTP/1.1", &h, &m).0,
            "503 Service Unavailable"
        );
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond("GET /readyz HTTP/1.1", &h, &m).0, "200 OK");
        assert!(respond("GET /metrics HTTP/1.1", &h, &m).2.contains("# EOF"));
        assert_eq!(
            respond("POST /healthz HTTP/1.1", &h, &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("GET /nope HTTP/1.1", &h, &m).0, "404 Not Found");
    }
}
