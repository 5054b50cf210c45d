//! Serving gRPC on a unix socket (what kubelet and the sidecars dial) and dialling one (tests,
//! tools). A socket file left by a previous run is removed first: a crashed plugin must be able
//! to come back on the same path.

use std::io;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};

/// Binds `path` (creating its directory, replacing a stale socket but never another kind of file).
pub fn bind(path: &Path) -> io::Result<UnixListenerStream> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(UnixListenerStream::new(UnixListener::bind(path)?))
}

/// Accepts `unix:///path`, `unix:/path` or a plain path, as the sidecars' `--csi-address` does.
pub fn socket_path(address: &str) -> PathBuf {
    let p = address
        .strip_prefix("unix://")
        .or_else(|| address.strip_prefix("unix:"))
        .unwrap_or(address);
    PathBuf::from(p)
}

/// A channel to the gRPC server on the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API and ignored: every connection goes to the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            socket_path("unix:///run/topolvm/csi-topolvm.sock"),
            PathBuf::from("/run/topolvm/csi-topolvm.sock")
        );
        assert_eq!(socket_path("/tmp/x.sock"), PathBuf::from("/tmp/x.sock"));
        assert_eq!(socket_path("unix:/tmp/y"), PathBuf::from("/tmp/y"));
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_but_not_a_file() {
        let dir = std::env::temp_dir().join(format!("csi-socket-test-{}", std::process::id()));
        let sock = dir.join("a/b.sock");
        drop(bind(&sock).unwrap());
        assert!(
            sock.exists(),
            "the socket file stays after the listener is dropped"
        );
        drop(bind(&sock).expect("a stale socket is replaced"));
        let file = dir.join("plain");
        std::fs::write(&file, "data").unwrap();
        assert_eq!(
            bind(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
