//! Listeners (bound once, never re-bound by a reload), TLS handshakes with the
//! SNI resolver over the live snapshot, HTTP/1.1 and HTTP/2 connections with
//! header limits and timeouts, and the graceful drain.

use crate::body::Body;
use crate::config::compile;
use crate::config::error::ConfigError;
use crate::config::raw::{RawServer, RuntimeKind};
use crate::config::source::{self, base_dir};
use crate::config::watch::Reloader;
use crate::gateway::Gateway;
use crate::handler::{ConnInfo, Ctx};
use crate::state::State;
use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("state store: {0}")]
    State(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A running keygate: its bound addresses and a handle to stop it.
pub struct Running {
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub live: Arc<ArcSwap<Gateway>>,
    pub state: Arc<State>,
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    drain: Duration,
    counters_task: JoinHandle<()>,
    /// Per-core worker threads: each runs until its sender is dropped.
    workers: Vec<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the drain timeout),
    /// then return.
    pub async fn shutdown(self) {
        self.state.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(self.drain + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed with requests still in flight");
        }
        // Counters last, so that the drained requests are counted too.
        let limits = self.state.limits.clone();
        match tokio::task::spawn_blocking(move || limits.shutdown()).await {
            Ok(Ok(n)) => tracing::info!(rows = n, "counters flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "final counter flush failed"),
            Err(e) => tracing::error!(error = %e, "final counter flush failed to run"),
        }
        let _ = self.counters_task.await;
        // The drained requests' spans, before the process exits.
        if let Some(t) = self.live.load().tracing.clone() {
            let _ = tokio::task::spawn_blocking(move || t.flush()).await;
        }
        for (stop, thread) in self.workers {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Resolve when asked to stop from inside (not used by signals).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Load `path`, bind every listener and start serving.
pub async fn start(path: &Path) -> Result<Running, ServeError> {
    let path = path.to_path_buf();
    let (raw, hash) = source::read_file(&path).map_err(ServeError::Config)?;
    // Before the per-core workers are spawned: `workers` is bounded.
    let bounds = crate::config::bounds::check(&raw);
    if !bounds.is_empty() {
        return Err(ServeError::Config(bounds));
    }
    let base = base_dir(&path);
    let state_dir = base.join(&raw.server.state_dir);
    let limits = crate::policy::limits::LimitState::open(&state_dir)
        .map_err(|e| ServeError::State(format!("{}: {e}", state_dir.display())))?;
    let per_core = raw.server.runtime == RuntimeKind::PerCore;
    let mut workers = vec![];
    let mut handles = vec![];
    if per_core {
        let n = match raw.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for i in 0..n {
            let (handle, worker) = spawn_worker(i)
                .map_err(|e| ServeError::State(format!("cannot start worker thread: {e}")))?;
            handles.push(handle);
            workers.push(worker);
        }
    }
    let mut state = State::new(&base, raw.auth.replay_capacity, limits.clone());
    state.body_budget = crate::budget::BodyBudget::new(raw.server.max_buffered_bytes);
    state.upstream_workers = workers.len().max(1);
    let gw = compile::compile(&raw, hash, &state).map_err(ServeError::Config)?;
    state.start_cluster(raw.cluster.as_ref())?;
    let state = Arc::new(state);
    state.note_version(&gw.version);
    let live = Arc::new(ArcSwap::from_pointee(gw));
    let counters_task = limits.spawn_background();
    let reloader = Arc::new(Reloader::new(path.clone(), live.clone(), state.clone()));
    let ctx = Arc::new(Ctx {
        live: live.clone(),
        state: state.clone(),
    });
    let (tx, rx) = watch::channel(false);
    let builder = Arc::new(conn_builder(&raw.server));
    let drain = raw.server.shutdown_timeout;
    let mut tasks = vec![];

    let mut http = vec![];
    for addr in compile::listen_addrs(&raw.server).map_err(ServeError::Config)? {
        let (local, listeners) = bind_all(addr, &handles)?;
        http.push(local);
        for (l, h) in listeners {
            tasks.push(spawn_on(
                h.as_ref(),
                accept_loop(l, None, ctx.clone(), builder.clone(), rx.clone(), drain),
            ));
        }
    }
    let mut https = vec![];
    if let Some(tls) = &raw.server.tls {
        let cfg = tls_config(live.clone()).map_err(ServeError::Tls)?;
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        for a in &tls.listen {
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| ServeError::Tls(format!("bad listen address {a:?}")))?;
            let (local, listeners) = bind_all(addr, &handles)?;
            https.push(local);
            for (l, h) in listeners {
                tasks.push(spawn_on(
                    h.as_ref(),
                    accept_loop(
                        l,
                        Some(acceptor.clone()),
                        ctx.clone(),
                        builder.clone(),
                        rx.clone(),
                        drain,
                    ),
                ));
            }
        }
    }
    let admin = match &raw.server.admin {
        Some(a) => {
            let addr: SocketAddr = a.parse().map_err(|_| {
                ServeError::Config(vec![ConfigError {
                    location: "server.admin".into(),
                    message: format!("{a:?} is not an address:port"),
                }])
            })?;
            let l = bind(addr, false)?;
            let local = l
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            tasks.push(tokio::spawn(crate::admin::serve(
                l,
                reloader.clone(),
                rx.clone(),
            )));
            Some(local)
        }
        None => None,
    };
    if raw.server.watch {
        crate::config::watch::spawn_file_watch(reloader.clone(), rx.clone());
    }
    crate::config::watch::spawn_sighup(reloader.clone(), rx.clone());
    Ok(Running {
        http,
        https,
        admin,
        live,
        state,
        reloader,
        shutdown: tx,
        tasks,
        drain,
        counters_task,
        workers,
    })
}

type Worker = (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
);

/// A thread with its own single-threaded runtime, serving until the returned
/// sender is dropped.
fn spawn_worker(i: usize) -> std::io::Result<(tokio::runtime::Handle, Worker)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("keygate-w{i}"))
        .spawn(move || {
            rt.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, (stop, thread)))
}

fn spawn_on<F>(h: Option<&tokio::runtime::Handle>, f: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match h {
        Some(h) => h.spawn(f),
        None => tokio::spawn(f),
    }
}

type Bound = (TcpListener, Option<tokio::runtime::Handle>);

/// One listener on the current runtime, or (per-core) one SO_REUSEPORT
/// listener per worker, each registered with that worker's runtime. A port 0
/// is resolved by the first bind so that all workers share it.
fn bind_all(
    addr: SocketAddr,
    handles: &[tokio::runtime::Handle],
) -> Result<(SocketAddr, Vec<Bound>), ServeError> {
    if handles.is_empty() {
        let l = bind(addr, false)?;
        let local = l
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        return Ok((local, vec![(l, None)]));
    }
    let mut out = vec![];
    let mut at = addr;
    for h in handles {
        let _in = h.enter();
        let l = bind(at, true)?;
        at = l
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        out.push((l, Some(h.clone())));
    }
    Ok((at, out))
}

/// rustls resolver over the live snapshot's certificates. No SNI and no
/// default: no certificate, so the handshake is refused.
#[derive(Debug)]
struct SniResolver {
    live: Arc<ArcSwap<Gateway>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.live.load().certs.resolve(hello.server_name())
    }
}

/// The TLS listeners' config: certificates by SNI, ALPN h2 and http/1.1.
fn tls_config(live: Arc<ArcSwap<Gateway>>) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { live }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn conn_builder(s: &RawServer) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        .max_headers(s.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, ServeError> {
    let make = || -> std::io::Result<TcpListener> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    make().map_err(|source| ServeError::Bind { addr, source })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        // Two spawns, not one task with a match: a task is as large as its
        // largest state, and the TLS one (handshake, rustls session inline)
        // would make every plain keep-alive connection hold ~6 KiB more.
        match tls {
            None => {
                tokio::spawn(async move {
                    serve_conn(stream, peer, false, ctx, &builder, watcher).await
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await;
                    match hs {
                        Ok(Ok(s)) => serve_conn(s, peer, true, ctx, &builder, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}

async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    ctx: Arc<Ctx>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _open = ctx.state.metrics.conn_guard();
    let info = ConnInfo { peer, tls };
    let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
        let ctx = ctx.clone();
        if req.version() == hyper::Version::HTTP_2 {
            authority_to_host(&mut req);
        }
        // Boxed per request: hyper keeps room for one service future in every
        // connection, and the pipeline's future is several KiB that each idle
        // keep-alive connection would otherwise hold.
        Box::pin(
            async move { Ok::<hyper::Response<Body>, Infallible>(ctx.handle(req, info).await) },
        )
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
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
    use super::authority_to_host;

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
