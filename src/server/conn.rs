//! One accepted connection: which HTTP version it speaks, hyper's connection
//! for that version, and its graceful end when the server drains.
//!
//! hyper-util's `auto` builder finds the version by reading the first bytes
//! into a buffer it then replays to the chosen protocol, and its connection
//! future has room for both protocols. Every keep-alive connection pays for
//! that as long as it lives, so the version is found once before: on TLS from
//! the ALPN the handshake agreed, on plain TCP by peeking at the first bytes
//! (the HTTP/2 preface or not) without taking them off the socket. A client
//! whose first bytes are a strict prefix of the preface (a preface split
//! across segments) is peeked at again until it has sent enough to tell, all
//! within `header_read_timeout`: hyper-util's `auto` builder waited for the
//! rest of a preface without any timeout, so one byte held a connection open
//! for ever.

use crate::body::Body;
use crate::config::raw::RawServer;
use crate::handler::{ConnInfo, Ctx};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;

/// The client preface of HTTP/2 over cleartext with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's connection settings for each version, built once from `[server]`.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// Also bounds the wait for a plain connection's first bytes.
    first_bytes_timeout: Duration,
}

impl Builders {
    pub fn new(s: &RawServer) -> Builders {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(s.max_header_bytes.max(8192))
            // The read buffer may hold more than the head (pipelined bytes, a
            // body's start); the head itself is bounded here, so that a head
            // over the limit is a 431 however it arrives.
            .max_header_size(s.max_header_bytes)
            .max_headers(s.max_headers)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(s.max_header_bytes as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Builders {
            h1,
            h2,
            first_bytes_timeout: s.header_read_timeout,
        }
    }
}

/// What a connection needs from its listener: the pipeline, the builders and
/// the drain signal. The `_open` sender is the connection's share of the
/// drain: the listener waits until every clone is dropped.
pub struct Conn {
    pub ctx: Arc<Ctx>,
    pub builders: Arc<Builders>,
    pub stop: watch::Receiver<bool>,
    pub _open: mpsc::Sender<()>,
}

/// A plain TCP connection: HTTP/2 with prior knowledge or HTTP/1.1.
pub async fn serve_plain(stream: TcpStream, peer: SocketAddr, c: Conn) {
    let _open = c.ctx.state.metrics.conn_guard();
    let version = tokio::time::timeout(c.builders.first_bytes_timeout, first_bytes(&stream)).await;
    let info = ConnInfo { peer, tls: false };
    match version {
        Ok(Some(Version::H2)) => {
            // Boxed: hyper's HTTP/2 connection is more than twice the size of
            // its HTTP/1.1 one, and a task is as large as its largest state.
            Box::pin(serve_h2(TokioIo::new(stream), info, c)).await
        }
        Ok(Some(_)) => serve_h1(TokioIo::new(stream), info, c).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(%peer, "no request within the header read timeout"),
    }
}

/// Peeks until the first bytes tell the version (`None`: closed first). A
/// peek returns at once while bytes wait unread, so a split preface is looked
/// at again after a pause, up to the caller's timeout.
async fn first_bytes(stream: &TcpStream) -> Option<Version> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        match sniff(&first[..n]) {
            Version::Unsure => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            v => return Some(v),
        }
    }
}

/// A TLS connection: the version the handshake's ALPN agreed (none: HTTP/1.1).
pub async fn serve_tls(stream: TlsStream<TcpStream>, peer: SocketAddr, c: Conn) {
    let _open = c.ctx.state.metrics.conn_guard();
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let info = ConnInfo { peer, tls: true };
    if h2 {
        Box::pin(serve_h2(TokioIo::new(stream), info, c)).await
    } else {
        serve_h1(TokioIo::new(stream), info, c).await
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Version {
    H1,
    H2,
    /// The bytes so far are the preface's start: wait for more.
    Unsure,
}

fn sniff(first: &[u8]) -> Version {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Version::H1
    } else if n == H2_PREFACE.len() {
        Version::H2
    } else {
        Version::Unsure
    }
}

type Io<S> = TokioIo<S>;

async fn serve_h1<S>(io: Io<S>, info: ConnInfo, c: Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = c
        .builders
        .h1
        .serve_connection(io, service(c.ctx.clone(), info))
        .with_upgrades();
    finish(info.peer, until_drained(conn, c.stop).await);
}

async fn serve_h2<S>(io: Io<S>, info: ConnInfo, c: Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = c
        .builders
        .h2
        .serve_connection(io, service(c.ctx.clone(), info));
    finish(info.peer, until_drained(conn, c.stop).await);
}

fn finish<E: std::fmt::Display>(peer: SocketAddr, r: Result<(), E>) {
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;

/// The pipeline as hyper's service for one connection.
fn service(
    ctx: Arc<Ctx>,
    info: ConnInfo,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Body>,
    Error = Infallible,
    Future = Answer,
> + Clone {
    service_fn(move |mut req: hyper::Request<Incoming>| {
        let ctx = ctx.clone();
        if req.version() == hyper::Version::HTTP_2 {
            authority_to_host(&mut req);
        }
        // Boxed per request: hyper keeps room for one service future in every
        // connection, and the pipeline's future is several KiB that each idle
        // keep-alive connection would otherwise hold.
        Box::pin(async move { Ok::<_, Infallible>(ctx.handle(req, info).await) }) as Answer
    })
}

/// hyper's connections that can be asked to finish their in-flight requests
/// and close (hyper-util's graceful watcher does not take an HTTP/1.1
/// connection with upgrades).
trait Graceful: Future {
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, Body>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Run `conn`; when the server drains, let it finish what is in flight and close.
async fn until_drained<C: Graceful>(conn: C, mut stop: watch::Receiver<bool>) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().begin_shutdown();
    conn.await
}

/// HTTP/2 names the request's authority in `:authority`; the pipeline (routing,
/// `X-Forwarded-Host`, `preserve_host`) and HTTP/1.1 back ends know `Host`.
/// `:authority`, when present, wins over a `host` header (RFC 9113 §8.3.1).
fn authority_to_host<B>(req: &mut hyper::Request<B>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    let host = authority.as_str().rsplit('@').next().unwrap_or("");
    if let Ok(v) = http::HeaderValue::from_str(host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::{authority_to_host, sniff, Version, H2_PREFACE};

    #[test]
    fn the_first_bytes_pick_the_version() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Version::H1);
        assert_eq!(sniff(b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n"), Version::H1);
        assert_eq!(sniff(b"PUT"), Version::H1);
        assert_eq!(sniff(H2_PREFACE), Version::H2);
        assert_eq!(sniff(b"P"), Version::Unsure);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Version::Unsure);
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n"), Version::H1);
    }

    #[test]
    fn authority_becomes_host_and_wins_over_a_host_header() {
        let mut req = hyper::Request::get("https://api.example.com:8443/x")
            .header("host", "other.example")
            .body(())
            .expect("request");
        authority_to_host(&mut req);
        assert_eq!(req.headers()["host"], "api.example.com:8443");
        assert_eq!(req.headers().get_all("host").iter().count(), 1);

        let mut req = hyper::Request::get("http://user@h.example/x")
            .body(())
            .expect("request");
        authority_to_host(&mut req);
        assert_eq!(req.headers()["host"], "h.example");

        // No :authority (origin form): the request is left as it is.
        let mut req = hyper::Request::get("/x")
            .header("host", "kept.example")
            .body(())
            .expect("request");
        authority_to_host(&mut req);
        assert_eq!(req.headers()["host"], "kept.example");
    }
}
