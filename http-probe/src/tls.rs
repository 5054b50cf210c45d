//! The metrics listener's certificate: `tls.crt`/`tls.key` from a directory when they are there
//! (on OpenShift the service-ca operator writes them into the Secret the metrics Service's
//! `service.beta.openshift.io/serving-cert-secret-name` annotation names; elsewhere cert-manager
//! can write the same Secret), otherwise a self-signed certificate made at start.
//!
//! The files are read again periodically: service-ca rotates its certificates, and a Secret that
//! appears after the pod started (service-ca is quick, but not before the first pod) is picked up
//! without a restart. A pair that does not parse, or whose key does not match, is reported and
//! the certificate in use stays.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Where the certificate in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    SelfSigned,
    Files(PathBuf),
}

#[derive(Debug)]
pub struct Certificates {
    dir: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Source, Arc<CertifiedKey>)>,
    /// The bytes of the pair loaded last (in use or refused), so an unchanged pair is not parsed
    /// and an unchanged bad pair not reported again.
    seen: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl Certificates {
    /// A self-signed certificate for `names`, replaced at once by the pair in `dir` if there is
    /// a good one.
    pub fn new(dir: Option<PathBuf>, names: &[String]) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| format!("making a self-signed certificate: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let own = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider)
            .map_err(|e| format!("the self-signed certificate: {e}"))?;
        let certs = Arc::new(Certificates {
            dir,
            provider,
            current: RwLock::new((Source::SelfSigned, Arc::new(own))),
            seen: Mutex::new(None),
        });
        if let Err(e) = certs.reload() {
            warn!(error = %e, "serving certificate refused; serving a self-signed one");
        }
        Ok(certs)
    }

    /// The certificate chain served now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .cert
            .clone()
    }

    pub fn source(&self) -> Source {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Reads the pair in the directory again; switches to it when it changed and is good.
    /// Missing files change nothing.
    pub fn reload(&self) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let (Ok(cert), Ok(key)) = (
            std::fs::read(dir.join(CERT_FILE)),
            std::fs::read(dir.join(KEY_FILE)),
        ) else {
            return Ok(());
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.as_ref() == Some(&(cert.clone(), key.clone())) {
                return Ok(());
            }
            *seen = Some((cert.clone(), key.clone()));
        }
        let pair =
            parse(&cert, &key, &self.provider).map_err(|e| format!("{}: {e}", dir.display()))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            (Source::Files(dir.clone()), Arc::new(pair));
        info!(dir = %dir.display(), "serving certificate loaded");
        Ok(())
    }

    /// Reloads every `period` for as long as the process runs.
    pub fn watch(self: &Arc<Self>, period: Duration) {
        if self.dir.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = me.reload() {
                    warn!(error = %e, "serving certificate refused; keeping the one in use");
                }
            }
        });
    }

    /// A TLS acceptor that always serves the certificate in use (HTTP/1.1 only).
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }
}

fn parse(cert: &[u8], key: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{CERT_FILE}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{CERT_FILE} holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("{KEY_FILE}: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{CERT_FILE} and {KEY_FILE}: {e}"))
}

/// The names a self-signed certificate carries: the Service's DNS names and localhost.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".into(),
    ]
}
