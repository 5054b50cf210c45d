//! The plain listener over real sockets: requests split across packets, keep-alive, HEAD, a
//! client that never finishes its request, methods other than GET.

use std::sync::Arc;
use std::time::Duration;

use http_probe::{Access, Handler, Limits, Reply, serve};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One response: status, head (lower-cased), body. Reads the body by its Content-Length unless
/// the request was HEAD.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    head_only: bool,
) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("reading the response head");
        assert!(
            n == 1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    s.read_exact(&mut body).await.unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn routes() -> Handler {
    Arc::new(|path: &str| match path {
        "/healthz" => Reply::ok(),
        "/big" => Reply::text(200, "x".repeat(100_000)),
        _ => Reply::not_found(),
    })
}

async fn start(limits: Limits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, routes(), Access::Open, limits));
    addr
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

#[tokio::test]
async fn a_request_split_across_packets_is_answered() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for part in [
        &b"GET /hea"[..],
        b"lthz HTTP/1.1\r\nHo",
        b"st: x\r\n",
        b"\r\n",
    ] {
        send(&mut s, part).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (status, _, body) = read_response(&mut s, false).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for path in ["/healthz", "/big", "/nope", "/healthz"] {
        send(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        let (status, _, body) = read_response(&mut s, false).await;
        match path {
            "/healthz" => assert_eq!((status, body.as_str()), (200, "ok\n")),
            "/big" => assert_eq!((status, body.len()), (200, 100_000)),
            _ => assert_eq!(status, 404),
        }
    }
}

#[tokio::test]
async fn head_gets_the_length_and_no_body() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(&mut s, b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, head, _) = read_response(&mut s, true).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-length: 100000\r\n"), "{head}");
    // The next response on the connection starts right after the head: no body came.
    send(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _, body) = read_response(&mut s, false).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn other_methods_are_refused_with_allow() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(
        &mut s,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    let (status, head, _) = read_response(&mut s, false).await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head\r\n"), "{head}");
}

#[tokio::test]
async fn a_client_that_never_finishes_is_cut_off_and_others_are_served() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        max_connections: 2,
        ..Limits::default()
    };
    let addr = start(limits).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    send(&mut slow, b"GET /healthz HTTP/1.1\r\nHost:").await;
    // Meanwhile another client is answered.
    let mut other = TcpStream::connect(addr).await.unwrap();
    send(&mut other, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(read_response(&mut other, false).await.0, 200);
    // The slow one is closed once its time is up (hyper may answer 408 first).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow connection is still open");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Its slot is free again: with two slots, two new clients are served.
    drop(other);
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        send(
            &mut s,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let got = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s, false)).await;
        assert_eq!(got.expect("served").0, 200);
    }
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let filler = "a".repeat(20_000);
    send(
        &mut s,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
    )
    .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert!(!text.contains("ok\n"));
}
