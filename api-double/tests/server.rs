//! `api-double-server` over real HTTP: a watch streams each event as it happens.
#![cfg(feature = "server")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, however it ends.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let kubeconfig = dir.join(format!(
        "api-double-server-{}.kubeconfig",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&kubeconfig);
    let child = Command::new(env!("CARGO_BIN_EXE_api-double-server"))
        .args(["--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let mut server = Server {
        child,
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&kubeconfig)
            && let Some(addr) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: http://"))
        {
            server.addr = addr.to_string();
            let _ = std::fs::remove_file(&kubeconfig);
            return server;
        }
        assert!(Instant::now() < deadline, "the server wrote no kubeconfig");
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
}

/// One request on its own connection; the whole response as text.
fn request(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut stream = connect(addr);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: double\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("a response");
    out
}

/// The next chunk of a chunked body; `None` at its end.
fn chunk(reader: &mut impl BufRead) -> Option<String> {
    let mut size = String::new();
    reader
        .read_line(&mut size)
        .expect("a chunk arrives in time (the server flushes each event)");
    let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).expect("the chunk");
    (size > 0).then(|| String::from_utf8_lossy(&data[..size]).into_owned())
}

#[test]
fn a_watch_over_http_streams_each_event_as_it_happens() {
    let server = start();
    let mut watch = connect(&server.addr);
    write!(
        watch,
        "GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=2&allowWatchBookmarks=true HTTP/1.1\r\nHost: double\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(watch);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("the watch answers at once");
        if line == "\r\n" {
            break;
        }
        headers.push(line.trim().to_ascii_lowercase());
    }
    assert!(headers[0].starts_with("http/1.1 200"), "{headers:?}");
    assert!(
        headers.contains(&"transfer-encoding: chunked".to_string()),
        "{headers:?}"
    );

    // A change while the watch is open arrives well before the watch's end (2 s).
    let sent = Instant::now();
    let created = request(
        &server.addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"over-http"}}"#,
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let event = chunk(&mut reader).expect("an event");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "the event came only after {:?}",
        sent.elapsed()
    );
    let event: serde_json::Value = serde_json::from_str(event.trim_end()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "over-http");

    // Then the timeout: a bookmark, and the end of the body.
    let bookmark = chunk(&mut reader).expect("a bookmark");
    assert!(bookmark.contains(r#""type":"BOOKMARK""#), "{bookmark}");
    assert_eq!(chunk(&mut reader), None);
}
