//! Listeners (bound once, never re-bound by a reload), TLS handshakes with the
//! SNI resolver over the live snapshot, HTTP/1.1 and HTTP/2 connections with
//! header limits and timeouts, and the graceful drain.

use crate::config::compile;
use crate::config::error::ConfigError;
use crate::config::raw::RuntimeKind;
use crate::config::source::{self, base_dir};
use crate::config::watch::Reloader;
use crate::gateway::Gateway;
use crate::handler::Ctx;
use crate::state::State;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

mod conn;

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
    let builder = Arc::new(conn::Builders::new(&raw.server));
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
/// listener per worker, each registered with that worker's runtime, all on
/// the port the probe got (port 0 resolved once).
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
    // SO_REUSEPORT would let these sockets join another process's listener on
    // the same port (a second keygate, an old one still running) and share its
    // traffic silently. A plain bind first refuses a port in use, as the
    // multi-threaded runtime does, and resolves port 0 for all the workers.
    let mut at = probe(addr)?;
    let mut out = vec![];
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

/// Bind `addr` without SO_REUSEPORT and without listening, then let go: the
/// port it got, or why not.
fn probe(addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    let make = || -> std::io::Result<SocketAddr> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        s.local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an IP socket"))
    };
    make().map_err(|source| ServeError::Bind { addr, source })
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
    builders: Arc<conn::Builders>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    // Every connection holds a clone of `open`; `all_closed` ends when the
    // last one is dropped.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
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
        let c = conn::Conn {
            ctx: ctx.clone(),
            builders: builders.clone(),
            stop: stop.clone(),
            _open: open.clone(),
        };
        // Two spawns, not one task with a match: a task is as large as its
        // largest state, and the TLS one (handshake, rustls session inline)
        // would make every plain keep-alive connection hold ~6 KiB more.
        match &tls {
            None => {
                tokio::spawn(conn::serve_plain(stream, peer, c));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await;
                    match hs {
                        Ok(Ok(s)) => conn::serve_tls(s, peer, c).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(drain, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}
