//! Slow and idle clients cannot hold connections or requests forever.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(extra_server: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{extra_server}\n\
         [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"m\"\npath = \"/m\"\n\
         [services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n"
    )
}

/// Reads until the peer closes; returns what was read and when it closed.
async fn read_to_close(
    s: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(start.elapsed()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_are_cut_off() {
    let kg = Keygate::start(&config("header_read_timeout = \"1s\"")).await;
    let mut s = tokio::net::TcpStream::connect(kg.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /m HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(closed.is_some(), "connection still open after 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_is_closed() {
    let kg = Keygate::start(&config("header_read_timeout = \"1s\"")).await;
    let mut s = tokio::net::TcpStream::connect(kg.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /m HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // hyper's header-read timer also runs while a keep-alive connection waits
    // for its next request.
    assert!(closed.is_some(), "idle connection still open after 5 s");
}

/// A body the gateway must read whole (here for a `tc1` form signature) that
/// trickles in too slowly gets 408, and the connection is let go.
#[tokio::test(flavor = "multi_thread")]
async fn slow_body_of_a_buffering_scheme_gets_408() {
    let toml = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nbody_read_timeout = \"1s\"\n\
         [auth]\ncloud_error_status = \"http\"\n\
         [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"v1\"\npath = \"/v1\"\nmethods = [\"POST\"]\nauth = \"tc1\"\n\
         [services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n";
    let kg = Keygate::start(toml).await;
    let mut s = tokio::net::TcpStream::connect(kg.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /v1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nAction=Des",
    )
    .await
    .expect("write");
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeout"), "{text}");
    let after = closed.expect("connection closed after the 408");
    assert!(after >= Duration::from_millis(900), "{after:?}");
}

/// The HTTP version of a plain connection is found from its first bytes; a
/// client whose first segment is short (one byte of a request line, half of the
/// HTTP/2 preface) still gets the right protocol.
#[tokio::test(flavor = "multi_thread")]
async fn first_bytes_trickling_in_pick_the_right_protocol() {
    let kg = Keygate::start(&config("header_read_timeout = \"3s\"")).await;

    // HTTP/1.1, one byte first.
    let mut s = tokio::net::TcpStream::connect(kg.addr)
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(b"G").await.expect("write");
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.write_all(b"ET /m HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let (text, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");

    // HTTP/2 with prior knowledge, the preface in two segments: the server's
    // first frame is its SETTINGS (type 4), not an HTTP/1.1 400.
    for split in [1, 16, 23] {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut s = tokio::net::TcpStream::connect(kg.addr)
            .await
            .expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(&preface[..split]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(&preface[split..]).await.expect("write");
        // An empty SETTINGS frame of our own.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .expect("write");
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
            .await
            .expect("an answer in time")
            .expect("a frame header");
        assert_eq!(head[3], 4, "split at {split}: first frame {head:?}");
    }

    // The whole preface in one segment, through a real HTTP/2 client.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let r = client
        .get(kg.url("/m").parse().expect("uri"))
        .await
        .expect("h2 request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
}

/// A connection that sends nothing is let go after the header read timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed() {
    let kg = Keygate::start(&config("header_read_timeout = \"1s\"")).await;
    let mut s = tokio::net::TcpStream::connect(kg.addr)
        .await
        .expect("connect");
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.is_empty(), "{text}");
    assert!(closed.is_some(), "silent connection still open after 5 s");
}

/// A client that sends the start of the HTTP/2 preface (or one byte of it) and
/// nothing more is let go after the header read timeout too: the version is
/// not known yet, and waiting for it is bounded like reading a head.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_h2_preface_is_cut_off() {
    let kg = Keygate::start(&config("header_read_timeout = \"1s\"")).await;
    for first in [&b"P"[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = tokio::net::TcpStream::connect(kg.addr)
            .await
            .expect("connect");
        s.write_all(first).await.expect("write");
        let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "{:?}: connection still open after 5 s",
            String::from_utf8_lossy(first)
        );
    }
}
