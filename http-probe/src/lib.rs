//! Serves GET requests with a handler from the request line to (status line, content type, body):
//! enough for health and metrics endpoints, without a web framework that would double the binary
//! and its memory for three routes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Reply = (&'static str, &'static str, String);
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// The path of a GET request line, or `None` for any other method.
pub fn get_path(request_line: &str) -> Option<&str> {
    let mut parts = request_line.split_whitespace();
    (parts.next() == Some("GET"))
        .then(|| parts.next().unwrap_or("").split('?').next().unwrap_or(""))
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) = handler(text.lines().next().unwrap_or(""));
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// The OpenMetrics text of a registry shared behind a mutex (a poisoned lock still renders).
pub fn render_metrics(
    registry: &std::sync::Mutex<prometheus_client::registry::Registry>,
) -> String {
    let mut out = String::new();
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_get_requests_only() {
        assert_eq!(get_path("GET /metrics?x=1 HTTP/1.1"), Some("/metrics"));
        assert_eq!(get_path("POST /metrics HTTP/1.1"), None);
        assert_eq!(get_path(""), None);
    }

    #[test]
    fn serves_over_tcp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(
                listener,
                Arc::new(|line: &str| {
                    (
                        "200 OK",
                        "text/plain",
                        format!("saw {}\n", get_path(line).unwrap_or("-")),
                    )
                }),
            ));
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(
                out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("saw /healthz\n"),
                "{out}"
            );
        });
    }
}
