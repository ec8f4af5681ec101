//! New connections to a target: TCP (with the upstream's connect timeout), TLS
//! for `https://` targets (ALPN offering only the protocol the upstream speaks),
//! then hyper's HTTP/1.1 or HTTP/2 handshake. The connection itself is driven
//! by a task on the runtime of the thread that dialled it.

use super::target::Target;
use super::MAX_RESPONSE_HEAD;
use crate::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// TCP keep-alive probes on back-end connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why no connection could be made. Nothing of a request was sent.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect: {0}")]
    Connect(#[from] io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The sending half of one connection.
pub enum Sender {
    H1(http1::SendRequest<Body>),
    /// Cloned for every request: HTTP/2 multiplexes them on one connection.
    H2(http2::SendRequest<Body>),
}

impl Sender {
    /// Sends `req`; an error that carries the request back means none of it
    /// was written.
    pub async fn try_send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        match self {
            Sender::H1(tx) => tx.try_send_request(req).await,
            Sender::H2(tx) => tx.try_send_request(req).await,
        }
    }
}

pub struct Dialer {
    tls: TlsConnector,
    connect_timeout: Duration,
    http2: bool,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Dialer {
    /// `tls`: the client settings for `https://` targets; their ALPN list is
    /// set here.
    pub fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration, http2: bool) -> Dialer {
        tls.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let mut h1 = http1::Builder::new();
        h1.max_buf_size(MAX_RESPONSE_HEAD);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_RESPONSE_HEAD as u32)
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30));
        Dialer {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            http2,
            h1,
            h2,
        }
    }

    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// A new connection to `t`, its driving task spawned on the current runtime.
    /// Boxed: the TLS and handshake states are large, and would otherwise sit
    /// in every request's future, copied as it moves, for a rare path.
    pub fn dial<'a>(
        &'a self,
        t: &'a Target,
    ) -> Pin<Box<dyn Future<Output = Result<Sender, DialError>> + Send + 'a>> {
        Box::pin(self.connect(t))
    }

    async fn connect(&self, t: &Target) -> Result<Sender, DialError> {
        let tcp = self.tcp(t).await?;
        if !t.is_https() {
            return self.handshake(tcp).await;
        }
        let name = ServerName::try_from(t.hostname.as_str())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .to_owned();
        let tls = self.tls.connect(name, tcp).await?;
        self.handshake(tls).await
    }

    /// Each address the host resolves to in turn, the connect timeout shared
    /// evenly between them (as hyper-util's connector does).
    async fn tcp(&self, t: &Target) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match t.addr {
            Some(a) => vec![a],
            None => tokio::net::lookup_host((t.hostname.as_str(), t.port))
                .await?
                .collect(),
        };
        let n = u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
        let each = self.connect_timeout / n;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
        for a in addrs {
            match tokio::time::timeout(each, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    s.set_nodelay(true)?;
                    let ka = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    socket2::SockRef::from(&s).set_tcp_keepalive(&ka)?;
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            }
        }
        Err(last)
    }

    async fn handshake<S>(&self, io: S) -> Result<Sender, DialError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if self.http2 {
            let (tx, conn) = self.h2.handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "back-end connection ended");
                }
            });
            return Ok(Sender::H2(tx));
        }
        let (tx, conn) = self.h1.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "back-end connection ended");
            }
        });
        Ok(Sender::H1(tx))
    }
}
