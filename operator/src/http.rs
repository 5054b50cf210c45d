//! `/healthz`, `/readyz` and `/metrics` of the operator (served by http-probe).

use std::sync::atomic::{AtomicBool, Ordering};

use http_probe::{OPENMETRICS, Reply, get_path};

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    /// Set once the controller runs (after winning leader election).
    pub ready: AtomicBool,
}

/// The response to one request line.
pub fn respond(request_line: &str, health: &Health, metrics: &Metrics) -> Reply {
    match get_path(request_line) {
        None => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
        Some("/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        Some("/readyz") if health.ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ok\n".into())
        }
        Some("/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not leading yet\n".into(),
        ),
        Some("/metrics") => ("200 OK", OPENMETRICS, metrics.render()),
        Some(_) => ("404 Not Found", "text/plain", "not found\n".into()),
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
