//! The operator's routes: `/healthz` and `/readyz` on the plain health listener, `/metrics` on
//! the authorized HTTPS one (both served by http-probe).

use std::sync::atomic::{AtomicBool, Ordering};

use http_probe::Reply;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    /// Set once the controller runs (after winning leader election).
    pub ready: AtomicBool,
}

pub fn health(path: &str, health: &Health) -> Reply {
    match path {
        "/healthz" => Reply::ok(),
        "/readyz" if health.ready.load(Ordering::Relaxed) => Reply::ok(),
        "/readyz" => Reply::text(503, "not leading yet\n"),
        _ => Reply::not_found(),
    }
}

pub fn metrics(path: &str, metrics: &Metrics) -> Reply {
    match path {
        "/metrics" => Reply::metrics(metrics.render()),
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let (h, m) = (Health::default(), Metrics::default());
        assert_eq!(health("/healthz", &h).status, 200);
        assert_eq!(health("/readyz", &h).status, 503);
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(health("/readyz", &h).status, 200);
        assert_eq!(
            health("/metrics", &h).status,
            404,
            "never on the plain port"
        );
        assert!(metrics("/metrics", &m).body.contains("# EOF"));
        assert_eq!(metrics("/healthz", &m).status, 404);
    }
}
