//! The double over plain HTTP on loopback (feature `server`), so a real binary can run against it
//! out of cluster: the `api-double-server` binary, and guest tests that run vg-manager as its
//! container image would. Watches stream their events as they happen (each event line is flushed
//! as one HTTP chunk).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::{ApiDouble, ResponseBody};

/// A kubeconfig for the double serving on `addr` (no credentials: the double has no auth).
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\nusers:\n- name: nobody\n  user: {{}}\ncurrent-context: double\n"
    )
}

async fn handle(
    api: Arc<ApiDouble>,
    req: Request<Incoming>,
    latency: Duration,
) -> Result<Response<ResponseBody>, Infallible> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // hyper writes each frame of the body (one event line for a watch) as a chunk and flushes
    // whenever the body has nothing more ready.
    Ok(api
        .handle(Request::from_parts(
            parts,
            kube::client::Body::from(bytes.to_vec()),
        ))
        .await)
}

/// Serves `api` on `listener`, one task per connection, forever.
pub async fn serve(api: Arc<ApiDouble>, listener: tokio::net::TcpListener) {
    serve_with_latency(api, listener, Duration::ZERO).await
}

/// [`serve`], every request answered `latency` late, as a real API server's round trip
/// (benchmarks of how many round trips a client makes in a row, connections included).
pub async fn serve_with_latency(
    api: Arc<ApiDouble>,
    listener: tokio::net::TcpListener,
    latency: Duration,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(api.clone(), req, latency));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
