//! Upstreams: keep-alive connections to one or several targets, the tries of a
//! request over them, and the header hygiene of forwarding (hop-by-hop removal,
//! upgrades).
//!
//! A back end is spoken to in HTTP/1.1, or in HTTP/2 with `http2 = true` (prior
//! knowledge for `http://`, ALPN `h2` for `https://`), whatever the client spoke.
//! A failure is blamed on the target (and counts toward its ejection) only when
//! the back end failed: a client that aborts or garbles its request body is a
//! client fault (400 or 499), never a 502.
//!
//! A request that could not reach its target is tried again on another one
//! (`retries`, `retry_on`): always after a failed connection (nothing was sent),
//! and, opt-in, after a 502/503/504 answer or a timeout for idempotent methods.
//! A try never repeats a request body a back end has started to read: the body
//! waits in a [`replay::Replay`] slot that the first poll empties.
//!
//! | file | owns |
//! |---|---|
//! | `spec.rs` | what identifies an upstream; retry and `fail_on` policies |
//! | `target.rs` | one target: address, TLS name, request URIs |
//! | `dial.rs` | new connections: TCP, TLS with ALPN, hyper's handshake |
//! | `pool.rs` | keep-alive connections per worker, reuse, idle expiry |
//! | `attempt.rs` | one try on one target and what its outcome says |
//! | `answer.rs` | the answer's body, releasing its connection at the end |
//! | `replay.rs` | the request body across tries |
//! | `fault.rs` | client faults told apart from the back end's |
//! | `probe.rs` | active health checks |
//! | `hop.rs`, `abandon.rs` | hop-by-hop headers; the 499 of a client gone |

mod abandon;
mod answer;
mod attempt;
mod dial;
mod fault;
mod hop;
mod pool;
mod probe;
mod replay;
mod spec;
mod target;
pub mod tls;

pub use abandon::AbandonGuard;
pub use fault::{BodyLimitExceeded, ClientBodyError};
pub use hop::{strip_hop_by_hop, upgrade_protocol};
pub use pool::IDLE_TIMEOUT;
pub use spec::{compile_fail_on, RetryPolicy, UpstreamSpec, MAX_RETRIES};
pub use target::Target;

use crate::balance::Balancer;
use crate::body::Body;
use crate::metrics::{Metrics, RouteMetrics};
use crate::reject::Reject;
use attempt::Try;
use http::{Request, Response};
use pool::Pool;
use probe::Prober;
use replay::Replay;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest response head (status line and headers) accepted from a back end;
/// a larger one is a 502, as nginx's "upstream sent too big header".
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

pub struct Upstream {
    balancer: Arc<Balancer<Target>>,
    pool: Pool,
    http2: bool,
    fail_on_connect: bool,
    fail_on_5xx: bool,
    /// The health-check task, stopped when the upstream is dropped.
    _prober: Option<Prober>,
}

/// How one request is sent: the API's timeouts, host handling and retries.
pub struct SendOptions<'a> {
    pub timeout: Duration,
    pub preserve_host: bool,
    pub retry: &'a RetryPolicy,
    /// The route's metrics, for `keygate_upstream_retries_total`.
    pub metrics: Option<&'a RouteMetrics>,
}

impl Upstream {
    /// `metrics`: the process's metrics and the label the health gauge uses.
    /// `workers`: how many threads with a runtime of their own send through
    /// it (`[server] runtime = "per-core"`), each getting connections of its
    /// own; 1 for the shared runtime.
    pub fn new(
        spec: &UpstreamSpec,
        base: &Path,
        metrics: Option<(Arc<Metrics>, String)>,
        workers: usize,
    ) -> Result<Upstream, String> {
        Upstream::with_idle_timeout(spec, base, metrics, workers, IDLE_TIMEOUT)
    }

    /// As [`Upstream::new`], closing connections idle for `idle`.
    pub fn with_idle_timeout(
        spec: &UpstreamSpec,
        base: &Path,
        metrics: Option<(Arc<Metrics>, String)>,
        workers: usize,
        idle: Duration,
    ) -> Result<Upstream, String> {
        let mut targets = Vec::with_capacity(spec.targets.len());
        for (url, weight) in &spec.targets {
            targets.push((target::parse_target(url)?, (*weight).max(1)));
        }
        if targets.is_empty() {
            return Err("no target URL".into());
        }
        let n = targets.len();
        let tls = tls::client_tls(spec.ca_file.as_deref().map(|f| base.join(f)).as_deref())?;
        let dialer = |tls| dial::Dialer::new(tls, spec.connect_timeout, spec.http2);
        let balancer = Arc::new(Balancer::new(targets, spec.max_fails, spec.fail_timeout));
        let prober = spec.health.clone().and_then(|h| {
            let pool = Pool::new(dialer(tls.clone()), n, 1, idle);
            probe::start(h, balancer.clone(), pool, spec.http2, metrics)
        });
        Ok(Upstream {
            balancer,
            pool: Pool::new(dialer(tls), n, workers, idle),
            http2: spec.http2,
            fail_on_connect: spec.fail_on_connect,
            fail_on_5xx: spec.fail_on_5xx,
            _prober: prober,
        })
    }

    /// Does this upstream speak HTTP/2 to its targets?
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// Each target (without user-info) with its active health-check verdict and
    /// whether passive ejection has it out now, for the admin's `/-/routes`.
    pub fn target_states(&self, now: Instant) -> Vec<(String, bool, bool)> {
        (0..self.balancer.len())
            .filter_map(|i| {
                let t = self.balancer.get(i)?;
                Some((
                    t.display(),
                    self.balancer.is_healthy(i),
                    self.balancer.is_ejected(i, now),
                ))
            })
            .collect()
    }

    /// Send `req`, whose URI holds only the path and query, to the next target,
    /// and on to further targets as `o.retry` allows.
    /// The request goes out in the version the pool speaks, whatever the
    /// client's; the answer's version is for the caller to set.
    pub async fn send(
        &self,
        req: Request<Body>,
        o: &SendOptions<'_>,
    ) -> Result<Response<Body>, Reject> {
        let start = tokio::time::Instant::now();
        let deadline = start + o.timeout;
        let (mut head, body) = req.into_parts();
        let idempotent = pool::is_idempotent(&head.method);
        let max_tries = (o.retry.retries.min(MAX_RETRIES) as usize + 1).min(self.balancer.len());
        let mut replay = Replay::new(body, max_tries > 1);
        let mut tried = [usize::MAX; MAX_RETRIES as usize + 1];
        let mut n = 0;
        loop {
            let now = if n == 0 {
                start
            } else {
                tokio::time::Instant::now()
            };
            let try_deadline = o
                .retry
                .try_timeout
                .map_or(deadline, |t| deadline.min(now + t));
            let (idx, target) = self
                .balancer
                .pick_except(now.into_std(), &tried[..n])
                .ok_or_else(|| Reject::UpstreamUnavailable("no target available".into()))?;
            tried[n] = idx;
            n += 1;
            let more = n < max_tries;
            let mut req = Request::new(replay.body());
            *req.method_mut() = head.method.clone();
            *req.uri_mut() = head.uri.clone();
            *req.headers_mut() = if more {
                head.headers.clone()
            } else {
                std::mem::take(&mut head.headers)
            };
            *req.extensions_mut() = std::mem::take(&mut head.extensions);
            let retry_5xx = more && idempotent && o.retry.on_5xx;
            let one = Try {
                idx,
                target,
                started: now,
                deadline: try_deadline,
                retry_5xx,
                slot: replay.slot(),
            };
            let failed = match self.try_once(one, req, o).await {
                Ok(resp) => return Ok(resp),
                Err(f) => f,
            };
            let allowed = match failed.cause {
                Some("connect") => o.retry.on_connect,
                Some("timeout") => o.retry.on_timeout && idempotent,
                Some("5xx") => retry_5xx,
                _ => false,
            };
            if !(more && allowed && replay.untouched() && tokio::time::Instant::now() < deadline) {
                return Err(failed.reject);
            }
            if let (Some(m), Some(cause)) = (o.metrics, failed.cause) {
                m.retry(cause);
            }
            tracing::debug!(cause = failed.cause, "trying another target");
        }
    }

    /// A transport failure of target `idx`, counted when `fail_on` has `connect`.
    fn fail(&self, idx: usize) {
        if self.fail_on_connect {
            self.balancer.report(idx, false, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
