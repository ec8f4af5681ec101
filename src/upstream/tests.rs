use super::attempt::holds_first_frame;
use super::fault::ClientFault;
use super::*;
use crate::body::BoxError;
use http::header::{HeaderMap, HeaderName, HeaderValue};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn hop_by_hop_keeps_only_te_trailers_and_the_trailer_declaration() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("te", "gzip, trailers;q=1"),
        ("trailer", "x-checksum"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAA"),
        ("x-end-to-end", "yes"),
    ]);
    strip_hop_by_hop(&mut h);
    let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
    names.sort();
    assert_eq!(names, ["te", "trailer", "x-end-to-end"]);
    assert_eq!(h["te"], "trailers");

    let mut h = headers(&[("te", "gzip")]);
    strip_hop_by_hop(&mut h);
    assert!(h.is_empty());
    // A `te` the Connection header names is still read for `trailers` first.
    let mut h = headers(&[("connection", "te"), ("te", "trailers")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h["te"], "trailers");
}

#[test]
fn client_faults_are_told_apart() {
    let framing = std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad chunk size");
    assert!(matches!(ClientFault::of(&framing), ClientFault::Framing));
    let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof");
    assert!(matches!(ClientFault::of(&eof), ClientFault::Closed));
    let limit: BoxError = Box::new(BodyLimitExceeded(10));
    assert!(matches!(
        ClientFault::of(&*limit),
        ClientFault::TooLarge(10)
    ));
    assert_eq!(ClientFault::Closed.reject().status().as_u16(), 499);
    assert_eq!(ClientFault::Framing.reject().status().as_u16(), 400);
    assert_eq!(ClientFault::TooLarge(10).reject().status().as_u16(), 413);
}

#[test]
fn event_streams_and_grpc_are_not_held() {
    for (ct, held) in [
        ("text/event-stream", false),
        ("application/grpc+proto", false),
        ("application/json", true),
    ] {
        let h = headers(&[("content-type", ct)]);
        assert_eq!(holds_first_frame(&h), held, "{ct}");
    }
    assert!(holds_first_frame(&HeaderMap::new()));
}

/// How a [`raw_backend`] treats its keep-alive connections.
#[derive(Clone, Copy, PartialEq)]
enum KeepAlive {
    /// Kept until the client closes them.
    Kept,
    /// The second request on the first connection is read, then the
    /// connection closed unanswered: a back end closing an idle connection
    /// just as a request arrives.
    CloseSecond,
    /// Closed by the back end after this much idle time.
    IdleTimeout(Duration),
}

/// A back end on loopback speaking HTTP/1.1 by hand: it counts the connections
/// it accepts and those that ended, and answers every request `200 ok` on a
/// keep-alive connection, except as `keep` says.
struct RawBackend {
    addr: std::net::SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    ended: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests read, answered or not.
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

async fn raw_backend(keep: KeepAlive) -> RawBackend {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (a, e, r) = (accepted.clone(), ended.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let conn = a.fetch_add(1, SeqCst);
            let (e, r) = (e.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut n = 0;
                'conn: loop {
                    // One request head, then its body (Content-Length only).
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let read = s.read(&mut chunk);
                        let read = match keep {
                            KeepAlive::IdleTimeout(d) if buf.is_empty() => {
                                match tokio::time::timeout(d, read).await {
                                    Ok(r) => r,
                                    Err(_) => break 'conn,
                                }
                            }
                            _ => read.await,
                        };
                        match read {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.drain(..head_end + len);
                    n += 1;
                    r.fetch_add(1, SeqCst);
                    if keep == KeepAlive::CloseSecond && conn == 0 && n == 2 {
                        break;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        break;
                    }
                }
                e.fetch_add(1, SeqCst);
            });
        }
    });
    RawBackend {
        addr,
        accepted,
        ended,
        requests,
    }
}

fn spec_for(addr: std::net::SocketAddr, http2: bool) -> UpstreamSpec {
    UpstreamSpec {
        targets: vec![(format!("http://{addr}"), 1)],
        max_fails: 0,
        fail_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        ca_file: None,
        http2,
        fail_on_connect: true,
        fail_on_5xx: false,
        health: None,
    }
}

/// One request through `u`: its status and body.
async fn call(u: &Upstream, method: http::Method, body: &'static str) -> (u16, String) {
    use http_body_util::BodyExt;
    let retry = RetryPolicy {
        retries: 0,
        ..RetryPolicy::default()
    };
    let o = SendOptions {
        timeout: Duration::from_secs(5),
        preserve_host: false,
        retry: &retry,
        metrics: None,
    };
    let b = if body.is_empty() {
        crate::body::empty()
    } else {
        crate::body::full(body)
    };
    let mut req = Request::new(b);
    *req.method_mut() = method;
    *req.uri_mut() = http::Uri::from_static("/x");
    match u.send(req, &o).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
        Err(r) => (r.status().as_u16(), String::new()),
    }
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = raw_backend(KeepAlive::Kept).await;
    let u = Upstream::new(&spec_for(b.addr, false), Path::new("."), None, 1).expect("upstream");
    for _ in 0..5 {
        assert_eq!(call(&u, http::Method::GET, "").await, (200, "ok".into()));
    }
    assert_eq!(
        call(&u, http::Method::POST, "body").await,
        (200, "ok".into())
    );
    assert_eq!(b.requests.load(SeqCst), 6);
    assert_eq!(b.accepted.load(SeqCst), 1, "one keep-alive connection");
    assert_eq!(b.ended.load(SeqCst), 0);
    // Dropping the upstream closes its connections.
    drop(u);
    eventually("the connection is closed with its upstream", || {
        b.ended.load(SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn idle_connections_expire() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = raw_backend(KeepAlive::Kept).await;
    let idle = Duration::from_millis(200);
    let spec = spec_for(b.addr, false);
    let u = Upstream::with_idle_timeout(&spec, Path::new("."), None, 1, idle).expect("upstream");
    assert_eq!(call(&u, http::Method::GET, "").await.0, 200);
    // Still open well within the idle time.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.ended.load(SeqCst), 0);
    eventually("the idle connection is closed", || {
        b.ended.load(SeqCst) == 1
    })
    .await;
    assert_eq!(call(&u, http::Method::GET, "").await.0, 200);
    assert_eq!(b.accepted.load(SeqCst), 2, "a new connection after expiry");
}

#[tokio::test]
async fn a_connection_the_back_end_closed_while_idle_is_not_reused() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = raw_backend(KeepAlive::IdleTimeout(Duration::from_millis(50))).await;
    let u = Upstream::new(&spec_for(b.addr, false), Path::new("."), None, 1).expect("upstream");
    for round in 1..=3 {
        assert_eq!(call(&u, http::Method::GET, "").await, (200, "ok".into()));
        eventually("the back end closed its idle connection", || {
            b.ended.load(SeqCst) == round
        })
        .await;
        // Time for keygate's side to see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.accepted.load(SeqCst), 3);
    assert_eq!(
        b.requests.load(SeqCst),
        3,
        "no request was sent on a closed connection"
    );
}

#[tokio::test]
async fn a_stale_keep_alive_connection_is_retried_once_for_idempotent_requests() {
    use std::sync::atomic::Ordering::SeqCst;
    // Idle for a quarter of this, a connection may have been timed out by its
    // back end: only then is a request copied to go again.
    let idle = Duration::from_millis(400);
    let stale = Duration::from_millis(150);
    let b = raw_backend(KeepAlive::CloseSecond).await;
    let spec = spec_for(b.addr, false);
    let u = Upstream::with_idle_timeout(&spec, Path::new("."), None, 1, idle).expect("upstream");
    assert_eq!(call(&u, http::Method::GET, "").await, (200, "ok".into()));
    tokio::time::sleep(stale).await;
    // The back end reads the second request on that connection and closes it:
    // the GET goes again, once, on a new connection.
    assert_eq!(call(&u, http::Method::GET, "").await, (200, "ok".into()));
    assert_eq!(b.accepted.load(SeqCst), 2);
    assert_eq!(b.requests.load(SeqCst), 3);

    // A POST is not sent twice.
    let b = raw_backend(KeepAlive::CloseSecond).await;
    let spec = spec_for(b.addr, false);
    let u = Upstream::with_idle_timeout(&spec, Path::new("."), None, 1, idle).expect("upstream");
    assert_eq!(call(&u, http::Method::POST, "one").await.0, 200);
    tokio::time::sleep(stale).await;
    assert_eq!(call(&u, http::Method::POST, "two").await.0, 502);
    assert_eq!(b.requests.load(SeqCst), 2);
    assert_eq!(b.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn http2_back_ends_get_one_multiplexed_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    // Slow enough that the requests overlap.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(crate::body::full("ok")))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    let u = Upstream::new(&spec_for(addr, true), Path::new("."), None, 1).expect("upstream");
    let calls = (0..8).map(|_| call(&u, http::Method::GET, ""));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r, (200, "ok".into()));
    }
    assert_eq!(call(&u, http::Method::GET, "").await.0, 200);
    assert_eq!(accepted.load(SeqCst), 1, "one connection for all requests");
}

/// An `https://` target named by host name: resolved, verified against the
/// upstream's `ca_file`, `http/1.1` offered by ALPN, and its connection kept.
#[tokio::test]
async fn tls_targets_are_verified_and_their_connections_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("be.pem"), ck.cert.pem()).expect("write");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server cert");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let conns = Arc::new(AtomicUsize::new(0));
    let alpn = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, a) = (conns.clone(), alpn.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let (acceptor, c, a) = (acceptor.clone(), c.clone(), a.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                c.fetch_add(1, SeqCst);
                if let Ok(mut a) = a.lock() {
                    a.push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                }
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let text = format!("{:?} {}", req.version(), req.uri());
                        Ok::<_, std::convert::Infallible>(http::Response::new(crate::body::full(
                            text,
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let spec = UpstreamSpec {
        targets: vec![(format!("https://localhost:{port}"), 1)],
        ca_file: Some("be.pem".into()),
        ..spec_for("127.0.0.1:1".parse().expect("addr"), false)
    };
    let u = Upstream::new(&spec, dir.path(), None, 1).expect("upstream");
    for _ in 0..3 {
        assert_eq!(
            call(&u, http::Method::GET, "").await,
            (200, "HTTP/1.1 /x".into())
        );
    }
    assert_eq!(conns.load(SeqCst), 1, "one TLS connection, kept alive");
    let offered = alpn.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(offered, vec![Some(b"http/1.1".to_vec())]);

    // Without the CA the certificate is not trusted: no connection, a 502.
    let spec = UpstreamSpec {
        ca_file: None,
        ..spec
    };
    let u = Upstream::new(&spec, dir.path(), None, 1).expect("upstream");
    assert_eq!(call(&u, http::Method::GET, "").await.0, 502);
}
