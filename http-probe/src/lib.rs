//! The HTTP endpoints of the operator and of the node agent, on two listeners:
//!
//! - `/healthz` and `/readyz`, plain HTTP: the kubelet's probes carry no credentials and reveal
//!   nothing but "ok";
//! - `/metrics` over HTTPS, answered only to callers the API server authenticates (TokenReview)
//!   and authorizes for `get` on the `/metrics` non-resource URL (SubjectAccessReview), as
//!   controller-runtime's secure metrics server does. See [`auth`] and [`tls`].
//!
//! Both run on hyper's HTTP/1.1 server (already in the binaries through kube and tonic), which
//! handles requests split across packets, keep-alive and HEAD; [`Limits`] bound slow clients.

use std::sync::Arc;

pub mod auth;
pub mod client;
pub mod endpoints;
mod server;
pub mod tls;

pub use endpoints::Endpoints;
pub use server::{Access, Limits, serve};

/// What a route answers: status, content type and body. HEAD gets the same without the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn ok() -> Self {
        Self::text(200, "ok\n")
    }

    pub fn not_found() -> Self {
        Self::text(404, "not found\n")
    }

    pub fn metrics(body: String) -> Self {
        Reply {
            status: 200,
            content_type: OPENMETRICS,
            body,
        }
    }
}

/// A route table: the reply to a GET (or HEAD) of a path.
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
