//! Upstreams: a pooled keep-alive client over one or several targets, and the
//! header hygiene of forwarding (hop-by-hop removal, X-Forwarded-*).
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
//! waits in a [`Replay`] slot that the first poll empties.

use crate::balance::Balancer;
use crate::body::{Body, BoxError};
use crate::health::{HealthSpec, Prober};
use crate::metrics::{Metrics, RouteMetrics};
use crate::reject::Reject;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::cell::Cell;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Largest response head (status line and headers) accepted from a back end;
/// a larger one is a 502, as nginx's "upstream sent too big header".
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How long the first bytes of a response body are awaited before the head is
/// passed on, so that a body broken from its start (bad chunked framing) is a
/// 502 rather than an empty reply. Streams (SSE, gRPC) are never held.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(1);

/// Everything that identifies an upstream's pool; equal specs share one pool
/// across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub targets: Vec<(String, u32)>,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<String>,
    /// Speak HTTP/2 to the targets (`[services.apis.backend] http2`).
    pub http2: bool,
    /// `fail_on`: what counts toward `max_fails` (transport failures, 5xx answers).
    pub fail_on_connect: bool,
    pub fail_on_5xx: bool,
    /// `health_check`: active probes of every target.
    pub health: Option<HealthSpec>,
}

impl UpstreamSpec {
    pub fn identity(&self) -> String {
        format!("{self:?}")
    }
}

pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: HeaderValue,
    /// Path of the target URL without its trailing `/` (`http://h/base` → `/base`).
    pub base_path: String,
}

type Pool = Client<HttpsConnector<HttpConnector>, Body>;

pub struct Upstream {
    balancer: Arc<Balancer<Target>>,
    connector: HttpsConnector<HttpConnector>,
    /// One connection pool per worker (`[server] runtime = "per-core"`), made on
    /// first use: hyper-util's pool sits behind one lock, and a connection
    /// driven by another thread's runtime costs a cross-thread wake-up per
    /// request. With the shared runtime there is one.
    pools: Box<[OnceLock<Pool>]>,
    http2: bool,
    fail_on_connect: bool,
    fail_on_5xx: bool,
    /// The health-check task, stopped when the upstream is dropped.
    _prober: Option<Prober>,
}

/// Most `retries` a back end may ask for.
pub const MAX_RETRIES: u32 = 10;

/// How a request is tried again on another target (`[services.apis.backend]`
/// `retries`, `retry_on`, `try_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further tries after the first, each on a target not tried yet.
    pub retries: u32,
    pub on_connect: bool,
    /// A 502/503/504 answer (idempotent methods only).
    pub on_5xx: bool,
    /// No answer within `try_timeout` (idempotent methods only).
    pub on_timeout: bool,
    /// Time allowed to one try, within the API's `timeout`.
    pub try_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 1,
            on_connect: true,
            on_5xx: false,
            on_timeout: false,
            try_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// From the backend table; `timeout` is the API's.
    pub fn compile(
        retries: Option<u32>,
        retry_on: Option<&[String]>,
        try_timeout: Option<Duration>,
        timeout: Duration,
    ) -> Result<RetryPolicy, Vec<String>> {
        let mut e = vec![];
        let mut p = RetryPolicy {
            retries: retries.unwrap_or(1),
            try_timeout,
            ..RetryPolicy::default()
        };
        if p.retries > MAX_RETRIES {
            e.push(format!("retries must be 0-{MAX_RETRIES}"));
        }
        if let Some(list) = retry_on {
            p.on_connect = false;
            for r in list {
                match r.as_str() {
                    "connect" => p.on_connect = true,
                    "5xx" => p.on_5xx = true,
                    "timeout" => p.on_timeout = true,
                    other => e.push(format!(
                        "retry_on {other:?} is not one of connect, 5xx, timeout"
                    )),
                }
            }
        }
        if let Some(t) = try_timeout {
            if t.is_zero() || t > timeout {
                e.push("try_timeout must be positive and at most the API's timeout".into());
            }
        }
        if e.is_empty() {
            Ok(p)
        } else {
            Err(e)
        }
    }
}

/// `fail_on = ["connect", "5xx"]`: (transport failures count, 5xx answers count).
pub fn compile_fail_on(list: Option<&[String]>) -> Result<(bool, bool), String> {
    let Some(list) = list else {
        return Ok((true, false));
    };
    let (mut connect, mut server) = (false, false);
    for f in list {
        match f.as_str() {
            "connect" => connect = true,
            "5xx" => server = true,
            other => return Err(format!("fail_on {other:?} is not one of connect, 5xx")),
        }
    }
    Ok((connect, server))
}

/// How one request is sent: the API's timeouts, host handling and retries.
pub struct SendOptions<'a> {
    pub timeout: Duration,
    pub preserve_host: bool,
    pub retry: &'a RetryPolicy,
    /// The route's metrics, for `keygate_upstream_retries_total`.
    pub metrics: Option<&'a RouteMetrics>,
}

/// Why a try failed, when another target may be tried.
struct Failed {
    reject: Reject,
    /// `connect`, `timeout` or `5xx`: the retry cause; `None` is final.
    cause: Option<&'static str>,
}

impl From<Reject> for Failed {
    fn from(reject: Reject) -> Self {
        Failed {
            reject,
            cause: None,
        }
    }
}

/// The request body across tries: tries may be repeated only while no byte
/// of it was polled.
enum Replay {
    /// No body: every try sends none.
    Empty,
    /// One try only: the body as it is.
    Once(Option<Body>),
    /// Several tries possible: the body waits here until a try first polls it.
    Slot(Arc<Mutex<Option<Body>>>, SizeHint),
}

impl Replay {
    fn new(body: Body, several: bool) -> Replay {
        if body.is_end_stream() {
            Replay::Empty
        } else if several {
            let hint = body.size_hint();
            Replay::Slot(Arc::new(Mutex::new(Some(body))), hint)
        } else {
            Replay::Once(Some(body))
        }
    }

    /// The body for the next try.
    fn body(&mut self) -> Body {
        match self {
            Replay::Empty => crate::body::empty(),
            Replay::Once(b) => b.take().unwrap_or_else(crate::body::empty),
            Replay::Slot(slot, hint) => SlotBody {
                slot: slot.clone(),
                hint: *hint,
                inner: None,
            }
            .boxed_unsync(),
        }
    }

    /// May the body be sent again (no byte of it was polled)?
    fn untouched(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Once(b) => b.is_some(),
            Replay::Slot(slot, _) => slot_untouched(Some(slot)),
        }
    }

    /// The slot a try checks after the answer's head (`None`: nothing to check).
    fn slot(&self) -> Option<&Arc<Mutex<Option<Body>>>> {
        match self {
            Replay::Slot(slot, _) => Some(slot),
            _ => None,
        }
    }
}

fn slot_untouched(slot: Option<&Arc<Mutex<Option<Body>>>>) -> bool {
    slot.is_none_or(|s| s.lock().map(|s| s.is_some()).unwrap_or(false))
}

/// A request body taken from its [`Replay`] slot on the first poll.
struct SlotBody {
    slot: Arc<Mutex<Option<Body>>>,
    hint: SizeHint,
    inner: Option<Body>,
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_none() {
            let taken = self.slot.lock().ok().and_then(|mut s| s.take());
            match taken {
                Some(b) => self.inner = Some(b),
                None => {
                    return Poll::Ready(Some(Err("request body already sent".into())));
                }
            }
        }
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

static POOLS_PER_UPSTREAM: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many per-worker pools each upstream made from now on holds.
pub fn set_pools_per_upstream(n: usize) {
    POOLS_PER_UPSTREAM.store(n.max(1), Ordering::Relaxed);
}

/// Mark the calling thread as worker `i`: its requests use pool `i`.
pub fn set_current_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

fn new_pool(connector: HttpsConnector<HttpConnector>, http2: bool) -> Pool {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .http1_max_buf_size(MAX_RESPONSE_HEAD)
        .http2_max_header_list_size(MAX_RESPONSE_HEAD as u32);
    if http2 {
        b.http2_only(true)
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)));
    }
    b.build(connector)
}

impl Upstream {
    /// `metrics`: the process's metrics and the label the health gauge uses.
    pub fn new(
        spec: &UpstreamSpec,
        base: &Path,
        metrics: Option<(Arc<Metrics>, String)>,
    ) -> Result<Upstream, String> {
        let mut targets = Vec::with_capacity(spec.targets.len());
        for (url, weight) in &spec.targets {
            targets.push((parse_target(url)?, (*weight).max(1)));
        }
        if targets.is_empty() {
            return Err("no target URL".into());
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(spec.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = client_tls(spec.ca_file.as_deref().map(|f| base.join(f)).as_deref())?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // ALPN offers only what the pool speaks: `h2` alone with `http2 = true`.
        let https = if spec.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let n = POOLS_PER_UPSTREAM.load(Ordering::Relaxed);
        let balancer = Arc::new(Balancer::new(targets, spec.max_fails, spec.fail_timeout));
        let prober = spec.health.clone().and_then(|h| {
            let pool = new_pool(https.clone(), spec.http2);
            crate::health::start(h, balancer.clone(), pool, spec.http2, metrics)
        });
        Ok(Upstream {
            balancer,
            connector: https,
            pools: (0..n).map(|_| OnceLock::new()).collect(),
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
                let host = match t.authority.port_u16() {
                    Some(p) => format!("{}:{p}", t.authority.host()),
                    None => t.authority.host().to_string(),
                };
                let url = format!("{}://{host}{}", t.scheme, t.base_path);
                Some((
                    url,
                    self.balancer.is_healthy(i),
                    self.balancer.is_ejected(i, now),
                ))
            })
            .collect()
    }

    fn pool(&self) -> &Pool {
        let i = WORKER.with(Cell::get) % self.pools.len();
        self.pools[i].get_or_init(|| new_pool(self.connector.clone(), self.http2))
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
        let deadline = tokio::time::Instant::now() + o.timeout;
        let (mut head, body) = req.into_parts();
        let idempotent = is_idempotent(&head.method);
        let max_tries = (o.retry.retries.min(MAX_RETRIES) as usize + 1).min(self.balancer.len());
        let mut replay = Replay::new(body, max_tries > 1);
        let mut tried = [usize::MAX; MAX_RETRIES as usize + 1];
        let mut n = 0;
        loop {
            let now = tokio::time::Instant::now();
            let try_deadline = o
                .retry
                .try_timeout
                .map_or(deadline, |t| deadline.min(now + t));
            let (idx, target) = self
                .balancer
                .pick_except(Instant::now(), &tried[..n])
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
            let slot = replay.slot();
            let tried_once = self.try_once(idx, target, req, try_deadline, o, retry_5xx, slot);
            let failed = match tried_once.await {
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

    /// One try on target `idx`. `retry_5xx`: a 502/503/504 answer is a failure
    /// to retry (when the body is still untouched) rather than the answer.
    #[allow(clippy::too_many_arguments)]
    async fn try_once(
        &self,
        idx: usize,
        target: &Target,
        mut req: Request<Body>,
        deadline: tokio::time::Instant,
        o: &SendOptions<'_>,
        retry_5xx: bool,
        slot: Option<&Arc<Mutex<Option<Body>>>>,
    ) -> Result<Response<Body>, Failed> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let full = if target.base_path.is_empty() {
            PathAndQuery::try_from(pq)
        } else {
            PathAndQuery::try_from(format!("{}{}", target.base_path, pq))
        }
        .map_err(|_| Reject::BadRequest("invalid forwarded path".into()))?;
        *req.uri_mut() = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(full)
            .build()
            .map_err(|e| Reject::Internal(format!("upstream uri: {e}")))?;
        if !o.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        if self.http2 {
            *req.version_mut() = Version::HTTP_2;
            // `:authority` already names the target: no second copy in `host`.
            if req.headers().get(header::HOST) == Some(&target.host) {
                req.headers_mut().remove(header::HOST);
            }
        } else {
            *req.version_mut() = Version::HTTP_11;
            // `te: trailers` means something to an HTTP/2 back end only.
            req.headers_mut().remove(header::TE);
        }
        let watch = Arc::new(BodyWatch::default());
        let req = if req.body().is_end_stream() {
            req
        } else {
            req.map(|b| {
                WatchedBody {
                    inner: b,
                    watch: watch.clone(),
                }
                .boxed_unsync()
            })
        };
        let resp = match tokio::time::timeout_at(deadline, self.pool().request(req)).await {
            Err(_) => {
                if let Some(f) = watch.fault.get() {
                    return Err(f.reject().into());
                }
                // Still waiting for the client's body: its slowness, not the target's.
                if watch.waiting_on_client.load(Ordering::Relaxed) {
                    return Err(Reject::BodyTimeout(o.timeout).into());
                }
                self.fail(idx);
                return Err(Failed {
                    reject: Reject::UpstreamTimeout,
                    cause: Some("timeout"),
                });
            }
            Ok(Err(e)) => {
                // The request body's own error comes first: the client's fault is
                // not the target's.
                if let Some(f) = watch.fault.get() {
                    return Err(f.reject().into());
                }
                if let Some(limit) = body_limit_error(&e) {
                    return Err(Reject::BodyTooLarge(limit).into());
                }
                self.fail(idx);
                tracing::debug!(error = ?e, "back-end request failed");
                return Err(Failed {
                    reject: Reject::UpstreamUnavailable(describe(&e).into()),
                    cause: e.is_connect().then_some("connect"),
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let server_error = resp.status().is_server_error();
        if server_error && self.fail_on_5xx {
            self.balancer.report(idx, false, Instant::now());
        }
        if retry_5xx
            && matches!(
                resp.status(),
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            )
            && slot_untouched(slot)
        {
            return Err(Failed {
                reject: Reject::UpstreamUnavailable("back end answered 5xx".into()),
                cause: Some("5xx"),
            });
        }
        let (parts, mut body) = resp.into_parts();
        let mut first = None;
        if !parts.status.is_informational()
            && holds_first_frame(&parts.headers)
            && !body.is_end_stream()
        {
            let hint = body.size_hint();
            let wait = deadline.min(tokio::time::Instant::now() + FIRST_FRAME_WAIT);
            match tokio::time::timeout_at(wait, body.frame()).await {
                Ok(Some(Err(e))) => {
                    self.fail(idx);
                    tracing::debug!(error = ?e, "back-end response body failed");
                    return Err(Reject::UpstreamUnavailable(
                        "back end sent a malformed response body".into(),
                    )
                    .into());
                }
                Ok(Some(Ok(frame))) => first = Some(Some((frame, hint))),
                Ok(None) => first = Some(None),
                Err(_) => {}
            }
        }
        if !(server_error && self.fail_on_5xx) {
            self.balancer.report(idx, true, Instant::now());
        }
        let body = match first {
            Some(Some((frame, hint))) => PrefixedBody {
                first: Some(frame),
                hint,
                rest: body,
            }
            .boxed_unsync(),
            // Already over: no need to keep the back end's body around.
            Some(None) => crate::body::empty(),
            None => body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        };
        Ok(Response::from_parts(parts, body))
    }

    /// A transport failure of target `idx`, counted when `fail_on` has `connect`.
    fn fail(&self, idx: usize) {
        if self.fail_on_connect {
            self.balancer.report(idx, false, Instant::now());
        }
    }
}

/// A short, client-safe cause of a back-end failure.
fn describe(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        return "connection to back end failed";
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return "back end sent a response head larger than the limit";
            }
            if h.is_parse() {
                return "back end sent an invalid response";
            }
        }
        cur = err.source();
    }
    "back end closed the connection"
}

/// Is the response's first body frame awaited before its head is passed on?
/// Not for streams whose head is meaningful before any data.
fn holds_first_frame(h: &HeaderMap) -> bool {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !(ct.starts_with("text/event-stream") || ct.starts_with("application/grpc"))
}

/// What went wrong on the client's side of a request body.
#[derive(Debug, Clone, Copy)]
enum ClientFault {
    /// More than the API's body limit.
    TooLarge(u64),
    /// Broken framing (chunked encoding and the like).
    Framing,
    /// The client went away (connection closed, stream reset).
    Closed,
}

impl ClientFault {
    fn of(e: &(dyn std::error::Error + 'static)) -> ClientFault {
        if let Some(limit) = body_limit_error(e) {
            return ClientFault::TooLarge(limit);
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) {
                    return ClientFault::Framing;
                }
            }
            if let Some(h) = err.downcast_ref::<hyper::Error>() {
                if h.is_parse() {
                    return ClientFault::Framing;
                }
            }
            cur = err.source();
        }
        ClientFault::Closed
    }

    fn reject(self) -> Reject {
        match self {
            ClientFault::TooLarge(n) => Reject::BodyTooLarge(n),
            ClientFault::Framing => Reject::BadRequest("malformed request body framing".into()),
            ClientFault::Closed => Reject::ClientClosed,
        }
    }
}

/// The request body on its way to the back end, remembering the first error
/// the client's side produced: the connection's error that follows says
/// little (an HTTP/2 back end only sees a reset stream).
struct WatchedBody {
    inner: Body,
    watch: Arc<BodyWatch>,
}

#[derive(Default)]
struct BodyWatch {
    /// The first error of the client's side.
    fault: OnceLock<ClientFault>,
    /// The back end asked for more body and the client has not sent it yet.
    waiting_on_client: std::sync::atomic::AtomicBool,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.watch
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.watch.fault.set(ClientFault::of(&**e));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose first frame was already read.
struct PrefixedBody {
    first: Option<Frame<Bytes>>,
    /// The size hint of the whole body, before its first frame was read.
    hint: SizeHint,
    rest: Incoming,
}

impl http_body::Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            Some(_) => self.hint,
            None => self.rest.size_hint(),
        }
    }
}

/// Armed while a request waits for its back end: if the client goes away
/// meanwhile (hyper drops the request's future: a reset h2 stream, a closed
/// connection), nothing else will log it, so the drop writes a `keygate::access`
/// line with status 499, nginx's "client closed request". No target is blamed.
pub struct AbandonGuard {
    request_id: Option<HeaderValue>,
    armed: bool,
}

impl AbandonGuard {
    pub fn new(request_id: Option<HeaderValue>) -> Self {
        AbandonGuard {
            request_id,
            armed: true,
        }
    }

    /// The request was answered (or refused): nothing to log on drop.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                target: "keygate::access",
                request_id = self
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                status = 499u16,
                upstream_status = 0u16,
                "client went away before the back end answered",
            );
        }
    }
}

// The request body's errors, defined with the body wrapper that yields them.
pub use crate::body::{BodyLimitExceeded, ClientBodyError};

fn body_limit_error(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyLimitExceeded>() {
            return Some(b.0);
        }
        cur = err.source();
    }
    None
}

fn parse_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad back-end URL {url:?}: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("back-end URL {url:?} needs http:// or https://"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "back-end URL {url:?}: only http and https are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("back-end URL {url:?} has no host"))?;
    if uri.query().is_some() {
        return Err(format!(
            "back-end URL {url:?} may not carry a query; use const_query"
        ));
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(Target {
        scheme,
        authority,
        host,
        base_path,
    })
}

pub(crate) fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("bad CA PEM {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1),
/// plus h2c upgrade material. `Trailer` is end to end (RFC 9110 §6.6.2) and
/// kept: HTTP/1.1 peers only get the trailer fields it declares.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
/// `te: trailers` (gRPC's) is kept as that single value: [`Upstream::send`]
/// passes it to HTTP/2 back ends only.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Is this an HTTP/1.1 upgrade request (websocket)? h2c upgrades are not passed on.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let up = headers.get(header::UPGRADE)?;
    if !conn_upgrade || up.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some(up.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
