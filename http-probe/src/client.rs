//! A minimal HTTPS GET with a bearer token, for the tests of the metrics listener and the e2e
//! suite's scrape: the certificate is verified against the roots given, for `server_name`.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// GET `path` over `stream` (a TCP connection, a port-forward) with TLS, the server's
/// certificate verified against `roots` for `server_name`; answers status and body. The
/// connection is closed after the one request.
pub async fn get<S>(
    stream: S,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut store = RootCertStore::empty();
    for cert in roots {
        store
            .add(cert.clone())
            .map_err(|e| format!("root certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(store)
    .with_no_client_auth();
    get_with(stream, Arc::new(config), server_name, path, token).await
}

/// [`get`] with a TLS client configuration of the caller's (its own verifier).
pub async fn get_with<S>(
    stream: S,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A server that closes without close_notify still gave its whole answer.
    if let Err(e) = tls.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(format!("reading the answer: {e}"));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no response head")?;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((status, body.to_string()))
}
