//! The two listeners of a binary, as its command line asks for them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::auth::Authorizer;
use crate::tls::{Certificates, Source, service_names};
use crate::{Access, Handler, Limits, serve};

/// Where the service-ca (or cert-manager) Secret is mounted in the pods.
pub const CERT_DIR: &str = "/etc/lvms/metrics-certs";
pub const HEALTH_ADDR: &str = "0.0.0.0:8081";
pub const METRICS_ADDR: &str = "0.0.0.0:8443";
/// How often the mounted certificate is read again (the kubelet refreshes a Secret volume
/// within about a minute of a change).
const CERT_RELOAD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Plain `/healthz` and `/readyz`.
    pub health_addr: String,
    /// HTTPS `/metrics` for authorized callers.
    pub metrics_addr: String,
    pub cert_dir: Option<PathBuf>,
    /// `/metrics` in plain HTTP on the health address, without authorization: for a process run
    /// by hand on a workstation. The manifests never set it.
    pub insecure_metrics: bool,
    /// The metrics Service's name and namespace: the self-signed certificate's names.
    pub service: (String, String),
}

impl Endpoints {
    pub fn new(service: &str, namespace: &str) -> Self {
        Endpoints {
            health_addr: HEALTH_ADDR.into(),
            metrics_addr: METRICS_ADDR.into(),
            cert_dir: Some(CERT_DIR.into()),
            insecure_metrics: false,
            service: (service.into(), namespace.into()),
        }
    }

    /// Takes one of the flags below, with its value from `value`; false for other flags.
    pub fn flag(
        &mut self,
        flag: &str,
        mut value: impl FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--health-addr" => self.health_addr = value()?,
            "--metrics-addr" => self.metrics_addr = value()?,
            "--metrics-cert-dir" => {
                let dir = value()?;
                self.cert_dir = (!dir.is_empty()).then(|| dir.into());
            }
            "--metrics-insecure" => self.insecure_metrics = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Binds the listeners and serves them in the background; an address that cannot be bound
    /// or a certificate that cannot be made is an error.
    pub async fn start(
        &self,
        client: kube::Client,
        health: Handler,
        metrics: Handler,
    ) -> Result<Bound, String> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|e| format!("binding {addr}: {e}"))
        };
        let health_listener = bind(self.health_addr.clone()).await?;
        let local = |l: &TcpListener| l.local_addr().map_err(|e| format!("listener address: {e}"));
        let mut bound = Bound {
            health: local(&health_listener)?,
            metrics: None,
            certificates: None,
        };
        if self.insecure_metrics {
            warn!(addr = %self.health_addr, "serving /metrics without TLS or authorization (--metrics-insecure)");
            let both: Handler = Arc::new(move |path: &str| match path {
                "/metrics" => metrics(path),
                _ => health(path),
            });
            tokio::spawn(serve(
                health_listener,
                both,
                Access::Open,
                Limits::default(),
            ));
            return Ok(bound);
        }
        let metrics_listener = bind(self.metrics_addr.clone()).await?;
        bound.metrics = Some(local(&metrics_listener)?);
        let (service, namespace) = &self.service;
        let certs = Certificates::new(self.cert_dir.clone(), &service_names(service, namespace))?;
        certs.watch(CERT_RELOAD);
        let source = match certs.source() {
            Source::SelfSigned => "self-signed".to_string(),
            Source::Files(dir) => dir.display().to_string(),
        };
        info!(health = %self.health_addr, metrics = %self.metrics_addr, certificate = %source, "serving /healthz and /readyz, and /metrics over HTTPS to authorized callers");
        let access = Access::Authorized {
            tls: certs.acceptor()?,
            auth: Arc::new(Authorizer::new(client)),
        };
        tokio::spawn(serve(
            health_listener,
            health,
            Access::Open,
            Limits::default(),
        ));
        tokio::spawn(serve(metrics_listener, metrics, access, Limits::default()));
        bound.certificates = Some(certs);
        Ok(bound)
    }
}

/// What [`Endpoints::start`] listens on.
pub struct Bound {
    pub health: SocketAddr,
    /// None with `--metrics-insecure`.
    pub metrics: Option<SocketAddr>,
    pub certificates: Option<Arc<Certificates>>,
}
