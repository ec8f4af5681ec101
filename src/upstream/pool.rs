//! Keep-alive connections to the targets of one upstream, one set per worker.
//!
//! With `[server] runtime = "per-core"` every worker thread runs its own
//! runtime; the first time a thread sends it takes a set ([`Local`]) of its
//! own, so the connections it reuses are driven by its own runtime and its
//! checkouts never wait for another thread. With the shared runtime there is
//! one set.
//!
//! HTTP/1.1: an idle connection is checked out for one request and comes back
//! when the answer's body has been read to its end (a body dropped before its
//! end closes the connection); the most recently used is taken first, so a
//! burst's extra connections age out. HTTP/2: one connection per target and
//! set, shared by every request.
//!
//! A connection unused for `idle_timeout` is closed by a sweep. A request that
//! finds its reused connection closed by the back end is sent once more on a
//! new connection when none of it was written, or when it is idempotent and
//! has no body (the back end may have closed just as it arrived).

use super::dial::{DialError, Dialer, Sender};
use super::target::Target;
use crate::body::Body;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Idle time after which a back-end connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle HTTP/1.1 connections kept per target and set.
const MAX_IDLE: usize = 1024;

/// Sweeps an unused HTTP/2 connection stays through before it is closed: with
/// a sweep every half `idle_timeout`, it is closed after 1 to 1.5 times that.
const SWEEPS: u8 = 3;

/// A connection idle this long (or a quarter of the idle timeout, if less)
/// may have been closed by its back end's own keep-alive timeout just as a
/// request goes out on it.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    #[error(transparent)]
    Dial(DialError),
    #[error(transparent)]
    Request(hyper::Error),
}

pub struct Pool {
    locals: Box<[Arc<Local>]>,
    dialer: Dialer,
    stale_after: Duration,
    sweeper: Option<tokio::task::AbortHandle>,
}

/// One worker's connections, by target.
struct Local {
    targets: Box<[Idle]>,
}

/// The connections to one target of one set. Aligned so that two workers'
/// sets never share a cache line.
#[repr(align(64))]
struct Idle {
    /// Idle HTTP/1.1 connections, most recently used last, with the time
    /// each became idle.
    h1: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    /// The HTTP/2 connection, with the sweeps it went through unused.
    h2: Mutex<Option<(http2::SendRequest<Body>, u8)>>,
    /// Held while an HTTP/2 connection is made, so that requests arriving
    /// meanwhile wait for it rather than make their own.
    h2_dialing: tokio::sync::Mutex<()>,
}

impl Default for Idle {
    fn default() -> Self {
        Idle {
            h1: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_dialing: tokio::sync::Mutex::new(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Numbers the threads that send, in the order they first do.
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
}

/// The set of the calling thread among `n`.
pub fn local_index(n: usize) -> usize {
    THREAD.with(|t| *t) % n.max(1)
}

/// An HTTP/1.1 connection out for one request: back to its set when the
/// answer has been read, closed when dropped.
pub struct Lease {
    tx: http1::SendRequest<Body>,
    local: Arc<Local>,
    target: usize,
}

impl Lease {
    /// The answer was read to its end: the connection may serve another request.
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        if let Some(idle) = self.local.targets.get(self.target) {
            let mut list = lock(&idle.h1);
            if list.len() < MAX_IDLE {
                list.push((self.tx, Instant::now()));
            }
        }
    }
}

impl Pool {
    /// `sets`: how many workers send through the pool (one set each).
    pub fn new(dialer: Dialer, targets: usize, sets: usize, idle_timeout: Duration) -> Pool {
        let locals: Box<[Arc<Local>]> = (0..sets.max(1))
            .map(|_| {
                Arc::new(Local {
                    targets: (0..targets).map(|_| Idle::default()).collect(),
                })
            })
            .collect();
        let weak: Vec<Weak<Local>> = locals.iter().map(Arc::downgrade).collect();
        let sweeper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(sweep(weak, idle_timeout)).abort_handle());
        Pool {
            locals,
            dialer,
            stale_after: STALE_AFTER.min(idle_timeout / 4),
            sweeper,
        }
    }

    pub fn sets(&self) -> usize {
        self.locals.len()
    }

    /// Sends `req` to target `t` (index `ti`) through set `set`; `now` is about
    /// now. The lease, for HTTP/1.1, goes back with the answer's body read to
    /// its end.
    pub async fn send(
        &self,
        set: usize,
        ti: usize,
        t: &Target,
        req: Request<Body>,
        now: Instant,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        let local = &self.locals[set % self.locals.len()];
        let idle = local.targets.get(ti).ok_or_else(|| {
            SendError::Dial(DialError::Connect(std::io::Error::other("no such target")))
        })?;
        let (mut sender, reused, idle_since) = match self.checkout(idle) {
            Some((s, since)) => (s, true, since),
            None => (
                // Boxed: a dial (TCP, TLS, handshake) is rare and its future
                // large; the reused connection's path stays small.
                Box::pin(self.dial(idle, t))
                    .await
                    .map_err(SendError::Dial)?,
                false,
                None,
            ),
        };
        // An idempotent body-less request on a connection idle long enough for
        // its back end to have timed it out may go again if it was closed
        // under it. Copied only then: a header map per request is not free.
        let copy = match idle_since {
            Some(since)
                if is_idempotent(req.method())
                    && req_is_empty(&req)
                    && now.saturating_duration_since(since) >= self.stale_after =>
            {
                Some(copy(&req))
            }
            _ => None,
        };
        let mut err = match sender.try_send(req).await {
            Ok(resp) => return Ok((resp, lease(sender, local, ti))),
            Err(e) => e,
        };
        let again = match err.take_message() {
            Some(req) => Some(req),
            None => copy.filter(|_| is_stale(err.error())),
        };
        match again {
            Some(req) if reused => {
                tracing::debug!(error = %err.error(), "reused back-end connection was closed; sending on a new one");
                if let Sender::H2(_) = sender {
                    lock(&idle.h2).take();
                }
                Box::pin(self.resend(local, ti, t, req)).await
            }
            _ => Err(SendError::Request(err.into_error())),
        }
    }

    /// The one further try of a request whose reused connection was closed.
    async fn resend(
        &self,
        local: &Arc<Local>,
        ti: usize,
        t: &Target,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        let idle = local.targets.get(ti).ok_or_else(|| {
            SendError::Dial(DialError::Connect(std::io::Error::other("no such target")))
        })?;
        let mut sender = self.dial(idle, t).await.map_err(SendError::Dial)?;
        match sender.try_send(req).await {
            Ok(resp) => Ok((resp, lease(sender, local, ti))),
            Err(e) => Err(SendError::Request(e.into_error())),
        }
    }

    /// A live idle connection, if there is one, and since when an HTTP/1.1
    /// one was idle.
    fn checkout(&self, idle: &Idle) -> Option<(Sender, Option<Instant>)> {
        if self.dialer.is_http2() {
            let mut h2 = lock(&idle.h2);
            let (tx, sweeps) = h2.as_mut()?;
            if tx.is_closed() {
                *h2 = None;
                return None;
            }
            *sweeps = 0;
            return Some((Sender::H2(tx.clone()), None));
        }
        let mut list = lock(&idle.h1);
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let tx = &list[i].0;
            if tx.is_closed() {
                list.remove(i);
            } else if tx.is_ready() {
                let (tx, since) = list.remove(i);
                return Some((Sender::H1(tx), Some(since)));
            }
            // Not ready yet: still finishing its last exchange; left for later.
        }
        None
    }

    async fn dial(&self, idle: &Idle, t: &Target) -> Result<Sender, DialError> {
        if !self.dialer.is_http2() {
            return self.dialer.dial(t).await;
        }
        let _dialing = idle.h2_dialing.lock().await;
        if let Some((s, _)) = self.checkout(idle) {
            return Ok(s);
        }
        let s = self.dialer.dial(t).await?;
        if let Sender::H2(tx) = &s {
            *lock(&idle.h2) = Some((tx.clone(), 0));
        }
        Ok(s)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(s) = &self.sweeper {
            s.abort();
        }
    }
}

fn lease(sender: Sender, local: &Arc<Local>, target: usize) -> Option<Lease> {
    match sender {
        Sender::H1(tx) => Some(Lease {
            tx,
            local: local.clone(),
            target,
        }),
        Sender::H2(_) => None,
    }
}

/// Closes connections idle for `timeout`, and forgets closed ones.
async fn sweep(locals: Vec<Weak<Local>>, timeout: Duration) {
    let every = (timeout / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        for local in &locals {
            let Some(local) = local.upgrade() else {
                return;
            };
            for idle in local.targets.iter() {
                let now = Instant::now();
                lock(&idle.h1).retain(|(tx, since)| {
                    now.saturating_duration_since(*since) < timeout && !tx.is_closed()
                });
                let mut h2 = lock(&idle.h2);
                if let Some((tx, sweeps)) = h2.as_mut() {
                    *sweeps += 1;
                    if *sweeps >= SWEEPS || tx.is_closed() {
                        *h2 = None;
                    }
                }
            }
        }
    }
}

pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn req_is_empty(req: &Request<Body>) -> bool {
    http_body::Body::is_end_stream(req.body())
}

/// A body-less request like `req`, to send again.
fn copy(req: &Request<Body>) -> Request<Body> {
    let mut c = Request::new(crate::body::empty());
    *c.method_mut() = req.method().clone();
    *c.uri_mut() = req.uri().clone();
    *c.version_mut() = req.version();
    *c.headers_mut() = req.headers().clone();
    c
}

/// Did the connection end before any answer, as a back end closing an idle
/// connection does?
fn is_stale(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        cur = err.source();
    }
    false
}
