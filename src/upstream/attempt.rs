//! One try of a request on one target: the request as that target gets it, the
//! send through the pool, and what the outcome says about the target (counted
//! toward its ejection) or about the client (never the target's fault).

use super::answer::AnswerBody;
use super::fault::{body_limit_error, BodyWatch, WatchedBody};
use super::pool::{Lease, SendError};
use super::replay::{slot_untouched, Slot};
use super::target::Target;
use super::{SendOptions, Upstream};
use crate::body::Body;
use crate::reject::Reject;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the first bytes of a response body are awaited before the head is
/// passed on, so that a body broken from its start (bad chunked framing) is a
/// 502 rather than an empty reply. Streams (SSE, gRPC) are never held.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(1);

/// Why a try failed, when another target may be tried.
pub struct Failed {
    pub reject: Reject,
    /// `connect`, `timeout` or `5xx`: the retry cause; `None` is final.
    pub cause: Option<&'static str>,
}

impl From<Reject> for Failed {
    fn from(reject: Reject) -> Self {
        Failed {
            reject,
            cause: None,
        }
    }
}

/// One try: where, until when, and what makes an answer a failure.
pub struct Try<'a> {
    pub idx: usize,
    pub target: &'a Target,
    /// When the try began (the clock is read once per try).
    pub started: tokio::time::Instant,
    pub deadline: tokio::time::Instant,
    /// A 502/503/504 answer is a failure to retry (when the body is still
    /// untouched) rather than the answer.
    pub retry_5xx: bool,
    pub slot: Option<&'a Slot>,
}

impl Upstream {
    /// Sends `req`, whose URI holds only the path and query, on one try.
    pub(super) async fn try_once(
        &self,
        t: Try<'_>,
        req: Request<Body>,
        o: &SendOptions<'_>,
    ) -> Result<Response<Body>, Failed> {
        let req = self.prepare(t.target, req, o.preserve_host)?;
        // Only a body can fail on the client's side.
        let watch = (!req.body().is_end_stream()).then(|| Arc::new(BodyWatch::default()));
        let req = match &watch {
            None => req,
            Some(w) => req.map(|b| {
                WatchedBody {
                    inner: b,
                    watch: w.clone(),
                }
                .boxed_unsync()
            }),
        };
        let set = super::pool::local_index(self.pool.sets());
        let sent = self
            .pool
            .send(set, t.idx, t.target, req, t.started.into_std());
        match tokio::time::timeout_at(t.deadline, sent).await {
            Ok(Ok((resp, lease))) => self.answer(t, resp, lease).await,
            Ok(Err(e)) => Err(self.send_failed(t.idx, watch.as_deref(), e)),
            Err(_) => Err(self.timed_out(t.idx, watch.as_deref(), o.timeout)),
        }
    }

    /// `req` as target `target` gets it: its URI, `Host` and version.
    fn prepare(
        &self,
        target: &Target,
        mut req: Request<Body>,
        preserve_host: bool,
    ) -> Result<Request<Body>, Reject> {
        // The URI as it came (path and query) suits an HTTP/1.1 target without
        // a base path: no need to parse it again.
        let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
        if self.http2 || !target.base_path.is_empty() || !origin_form {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let full = if target.base_path.is_empty() {
                PathAndQuery::try_from(pq)
            } else {
                PathAndQuery::try_from(format!("{}{}", target.base_path, pq))
            }
            .map_err(|_| Reject::BadRequest("invalid forwarded path".into()))?;
            *req.uri_mut() = target
                .uri(full, self.http2)
                .map_err(|e| Reject::Internal(format!("upstream uri: {e}")))?;
        }
        if !preserve_host || !req.headers().contains_key(header::HOST) {
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
        Ok(req)
    }

    /// No answer: the client's body's own error comes first (the client's
    /// fault is not the target's), then the target is blamed.
    fn send_failed(&self, idx: usize, watch: Option<&BodyWatch>, e: SendError) -> Failed {
        if let Some(f) = watch.and_then(|w| w.fault.get()) {
            return f.reject().into();
        }
        if let SendError::Request(e) = &e {
            if let Some(limit) = body_limit_error(e) {
                return Reject::BodyTooLarge(limit).into();
            }
        }
        self.fail(idx);
        tracing::debug!(error = ?e, "back-end request failed");
        Failed {
            reject: Reject::UpstreamUnavailable(describe(&e).into()),
            cause: matches!(e, SendError::Dial(_)).then_some("connect"),
        }
    }

    /// No answer in time: a client still sending its body is the slow one.
    fn timed_out(&self, idx: usize, watch: Option<&BodyWatch>, timeout: Duration) -> Failed {
        if let Some(f) = watch.and_then(|w| w.fault.get()) {
            return f.reject().into();
        }
        if watch.is_some_and(|w| w.waiting_on_client.load(Ordering::Relaxed)) {
            return Reject::BodyTimeout(timeout).into();
        }
        self.fail(idx);
        Failed {
            reject: Reject::UpstreamTimeout,
            cause: Some("timeout"),
        }
    }

    /// The answer's head is in: is it a failure to retry, and is its body
    /// broken from the start?
    async fn answer(
        &self,
        t: Try<'_>,
        resp: Response<Incoming>,
        lease: Option<Lease>,
    ) -> Result<Response<Body>, Failed> {
        let server_error = resp.status().is_server_error();
        if server_error && self.fail_on_5xx {
            self.balancer.report(t.idx, false, Instant::now());
        }
        if t.retry_5xx
            && matches!(
                resp.status(),
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            )
            && slot_untouched(t.slot)
        {
            return Err(Failed {
                reject: Reject::UpstreamUnavailable("back end answered 5xx".into()),
                cause: Some("5xx"),
            });
        }
        let (parts, mut body) = resp.into_parts();
        // A connection that switched protocols is the tunnel's now.
        let lease = lease.filter(|_| parts.status != StatusCode::SWITCHING_PROTOCOLS);
        let hint = body.size_hint();
        let first = if !parts.status.is_informational()
            && holds_first_frame(&parts.headers)
            && !body.is_end_stream()
        {
            self.first_frame(&t, &mut body).await?
        } else {
            First::NotRead
        };
        if !(server_error && self.fail_on_5xx) {
            // A success needs no clock: the try's start will do.
            self.balancer.report(t.idx, true, t.started.into_std());
        }
        let body = match first {
            // Already over: the connection is free, no need to keep the body.
            First::Ended => {
                if let Some(l) = lease {
                    l.release();
                }
                crate::body::empty()
            }
            First::Frame(frame) => AnswerBody::body(Some(frame), hint, body, lease),
            First::NotRead => AnswerBody::body(None, hint, body, lease),
        };
        Ok(Response::from_parts(parts, body))
    }

    /// The body's first frame, awaited up to [`FIRST_FRAME_WAIT`]: a body
    /// broken from its start is the target's failure.
    async fn first_frame(&self, t: &Try<'_>, body: &mut Incoming) -> Result<First, Failed> {
        // Mostly the first bytes came with the head: no timer needed then.
        let polled = match body.frame().now_or_never() {
            Some(polled) => Some(polled),
            None => {
                let wait = t
                    .deadline
                    .min(tokio::time::Instant::now() + FIRST_FRAME_WAIT);
                tokio::time::timeout_at(wait, body.frame()).await.ok()
            }
        };
        match polled {
            Some(Some(Err(e))) => {
                self.fail(t.idx);
                tracing::debug!(error = ?e, "back-end response body failed");
                Err(
                    Reject::UpstreamUnavailable("back end sent a malformed response body".into())
                        .into(),
                )
            }
            Some(Some(Ok(frame))) => Ok(First::Frame(frame)),
            Some(None) => Ok(First::Ended),
            None => Ok(First::NotRead),
        }
    }
}

/// What was read of an answer's body before its head is passed on.
enum First {
    Frame(Frame<Bytes>),
    /// The body is over (and empty).
    Ended,
    NotRead,
}

/// A short, client-safe cause of a back-end failure.
fn describe(e: &SendError) -> &'static str {
    let e = match e {
        SendError::Dial(_) => return "connection to back end failed",
        SendError::Request(e) => e,
    };
    if e.is_parse_too_large() {
        return "back end sent a response head larger than the limit";
    }
    if e.is_parse() {
        return "back end sent an invalid response";
    }
    "back end closed the connection"
}

/// Is the response's first body frame awaited before its head is passed on?
/// Not for streams whose head is meaningful before any data.
pub(super) fn holds_first_frame(h: &HeaderMap) -> bool {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !(ct.starts_with("text/event-stream") || ct.starts_with("application/grpc"))
}
