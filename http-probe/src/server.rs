//! Accepting connections and answering requests, plain or TLS with authorization.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::auth::{Authorizer, Verdict};
use crate::{Handler, Reply};

/// Bounds on what one client can hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to send a request's head, counted from when the server starts waiting for it (so it
    /// also ends an idle keep-alive connection): a client that trickles bytes is cut off.
    pub header_timeout: Duration,
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Age at which a connection is closed after its current request.
    pub lifetime: Duration,
    /// Connections served at once; more wait in the listen backlog. Prometheus needs one or two,
    /// the kubelet one per probe.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(300),
            max_connections: 64,
        }
    }
}

/// Who may be answered on a listener.
#[derive(Clone)]
pub enum Access {
    /// Anyone, in plain HTTP: health endpoints only.
    Open,
    /// TLS, and a bearer token the API server authorizes for the request's path.
    Authorized {
        tls: TlsAcceptor,
        auth: Arc<Authorizer>,
    },
}

/// Serves `handler` on `listener` for ever.
pub async fn serve(listener: TcpListener, handler: Handler, access: Access, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                debug!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (handler, access, limits) = (handler.clone(), access.clone(), limits.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match access {
                Access::Open => connection(stream, handler, None, &limits).await,
                Access::Authorized { tls, auth } => {
                    match tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, handler, Some(auth), &limits).await,
                        Ok(Err(e)) => debug!(error = %e, "TLS handshake"),
                        Err(_) => debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<IO>(io: IO, handler: Handler, auth: Option<Arc<Authorizer>>, limits: &Limits)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (handler, auth) = (handler.clone(), auth.clone());
        async move { Ok::<_, Infallible>(answer(req, &handler, auth.as_deref()).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The smallest buffer hyper allows: a request head beyond it gets 431.
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(limits.lifetime) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: &Handler,
    auth: Option<&Authorizer>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = response(Reply::text(405, "only GET and HEAD\n"));
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let path = req.uri().path();
    if let Some(auth) = auth {
        // HEAD is a GET without the body: one permission for both, as RBAC has no `head` verb
        // that a ClusterRole for metrics would name.
        match auth
            .check(req.headers().get(AUTHORIZATION), path, "get")
            .await
        {
            Verdict::Allowed => {}
            Verdict::Unauthenticated => {
                let mut res = response(Reply::text(401, "Unauthorized\n"));
                res.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return res;
            }
            Verdict::Forbidden => return response(Reply::text(403, "Forbidden\n")),
            Verdict::Unavailable => {
                return response(Reply::text(
                    503,
                    "cannot check the token with the API server\n",
                ));
            }
        }
    }
    // hyper sends no body in answer to HEAD, and keeps the Content-Length of the GET.
    response(handler(path))
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(reply.body)));
    *res.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    res
}
