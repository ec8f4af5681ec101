//! HTTP/2 floods against keygate's h2c listener, written frame by frame on a raw
//! socket: rapid reset (CVE-2023-44487: HEADERS then RST_STREAM, again and
//! again) and CONTINUATION flood (CVE-2024-27316 class: a header block that
//! never ends). Each must end in the attacker's connection being closed, with
//! little reaching the back end, while other clients are still served.

mod common;
use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK block of `GET http://flood<path>` from static-table entries and literals.
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing, indexed name 4
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal without indexing, indexed name 1
    b.push(5);
    b.extend_from_slice(b"flood");
    b
}

/// A back end counting the requests it sees.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn keygate_to(backend: SocketAddr) -> Keygate {
    Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "all"
path = "/"
[services.apis.backend]
url = "http://{backend}"
"#
    ))
    .await
}

/// Read frames until the server sends GOAWAY or closes; returns whether a GOAWAY
/// came and the error code it carried.
async fn read_until_goaway(sock: &mut tokio::net::tcp::OwnedReadHalf) -> (bool, u32) {
    let mut buf = vec![];
    let mut chunk = [0u8; 16384];
    loop {
        while buf.len() >= 9 {
            let len = ((buf[0] as usize) << 16) | ((buf[1] as usize) << 8) | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                let code = u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]);
                return (true, code);
            }
            buf.drain(..9 + len);
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return (false, 0),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_flood_is_cut_off() {
    let (be, seen) = counting_backend().await;
    let kg = keygate_to(be).await;
    let sock = TcpStream::connect(kg.addr).await.expect("connect");
    let (mut rd, mut wr) = sock.into_split();
    let reader = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(20), read_until_goaway(&mut rd)).await
    });
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    wr.write_all(&out).await.expect("preface");
    const STREAMS: u32 = 20_000;
    let mut sent = 0u32;
    let block = request_block("/flood");
    let flood = async {
        for batch in 0..(STREAMS / 100) {
            let mut out = vec![];
            for i in 0..100 {
                let id = 1 + 2 * (batch * 100 + i);
                out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
            }
            if wr.write_all(&out).await.is_err() {
                break;
            }
            sent += 100;
        }
    };
    // A server that stops reading without closing would block the writes.
    let _ = tokio::time::timeout(Duration::from_secs(20), flood).await;
    let (goaway, code) = reader
        .await
        .expect("join")
        .expect("the server ends the flood within 20 s");
    assert!(
        goaway || sent < STREAMS,
        "server neither sent GOAWAY nor closed ({sent} streams written)"
    );
    if goaway {
        // ENHANCE_YOUR_CALM (0xb), or PROTOCOL_ERROR from a stricter peer.
        assert!(code == 0xb || code == 0x1, "GOAWAY code {code:#x}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reached = seen.load(Ordering::Relaxed);
    assert!(
        reached < 1_000,
        "{reached} of {STREAMS} reset streams reached the back end"
    );
    // Everyone else is still served.
    let r = get(&kg.url("/after")).await;
    assert_eq!(r.status, StatusCode::OK);
    eprintln!("rapid reset: {sent} streams written, GOAWAY {goaway} code {code:#x}, {reached} reached the back end");
}

#[tokio::test(flavor = "multi_thread")]
async fn continuation_flood_is_cut_off() {
    let (be, seen) = counting_backend().await;
    let kg = keygate_to(be).await;
    let sock = TcpStream::connect(kg.addr).await.expect("connect");
    let (mut rd, mut wr) = sock.into_split();
    let reader = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(20), read_until_goaway(&mut rd)).await
    });
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, 0, 1, &request_block("/cont")));
    wr.write_all(&out).await.expect("preface");
    // Each CONTINUATION carries one more 4 KiB header; END_HEADERS never comes.
    let mut field = vec![0x00, 0x07];
    field.extend_from_slice(b"x-flood");
    field.extend_from_slice(&[0x7f, 0x81, 0x1f]); // value length 127 + 3969 = 4096
    field.extend(std::iter::repeat_n(b'a', 4096));
    let cont = frame(CONTINUATION, 0, 1, &field);
    const LIMIT: usize = 64 << 20;
    let mut written = 0usize;
    let flood = async {
        while written < LIMIT {
            if wr.write_all(&cont).await.is_err() {
                break;
            }
            written += cont.len();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), flood).await;
    let (goaway, code) = reader
        .await
        .expect("join")
        .expect("the server ends the flood within 20 s");
    assert!(
        goaway || written < LIMIT,
        "server accepted {written} bytes of one header block"
    );
    if goaway {
        // ENHANCE_YOUR_CALM (too many CONTINUATION frames) or COMPRESSION_ERROR
        // (header block over the limit).
        assert!(code == 0xb || code == 0x9, "GOAWAY code {code:#x}");
    }
    assert_eq!(seen.load(Ordering::Relaxed), 0, "no request was made of it");
    let r = get(&kg.url("/after")).await;
    assert_eq!(r.status, StatusCode::OK);
    // `written` includes what the socket buffers took after the server stopped.
    eprintln!("continuation flood: GOAWAY {goaway} code {code:#x}; {written} bytes written (socket buffers included)");
}
