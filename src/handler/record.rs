//! What a request leaves behind once answered: its route's metrics (bytes out
//! counted as the body streams) and its access line. Also the request id.

use super::{ConnInfo, Outcome, REQUEST_ID};
use crate::authority::authority;
use crate::body::Body;
use crate::gateway::Gateway;
use crate::metrics::{Sample, NO_ROUTE};
use crate::reject::Reject;
use crate::state::State;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

/// Copies of the request head for the access log, taken before the pipeline
/// consumes the request; without an access log they cost nothing.
pub(super) struct Seen {
    method: Option<Method>,
    host: Option<String>,
    path: String,
}

impl Seen {
    pub fn of<B>(gw: &Gateway, req: &Request<B>) -> Seen {
        if !(gw.log.access && crate::logging::access::enabled()) {
            return Seen {
                method: None,
                host: None,
                path: String::new(),
            };
        }
        Seen {
            method: Some(req.method().clone()),
            host: host_of(req),
            path: req.uri().path().to_owned(),
        }
    }
}

/// A refusal as metrics and the access log count it: its real status, even
/// when the API's error style answers it with HTTP 200 (`cloud_error_status`).
pub(super) struct Refusal {
    reason: &'static str,
    status: StatusCode,
    code: &'static str,
}

impl Refusal {
    pub fn of(reject: &Reject) -> Refusal {
        Refusal {
            reason: reject.reason(),
            status: reject.status(),
            code: reject.code(),
        }
    }
}

/// How the request ended.
pub(super) struct Done<'a> {
    pub conn: ConnInfo,
    pub request_id: &'a str,
    pub latency: Duration,
    pub refusal: Option<Refusal>,
    /// The request's exported span (`[tracing]`), ended with the access record.
    pub span: Option<crate::trace::span::Started>,
}

/// Records the request in its route's metrics and the access log; returns the
/// answer, its body counting bytes out when its length is not known yet.
pub(super) fn record(
    state: &State,
    gw: &Gateway,
    out: &Outcome,
    seen: Seen,
    done: Done<'_>,
    mut resp: Response<Body>,
) -> Response<Body> {
    let no_route;
    let route_metrics = match out.api {
        Some(i) => &gw.apis[i].metrics,
        None => {
            no_route = state.metrics.route(NO_ROUTE);
            &no_route
        }
    };
    let refusal = done.refusal.as_ref();
    let status = refusal.map_or(resp.status(), |r| r.status).as_u16();
    route_metrics.record(Sample {
        status,
        // A refused preflight is no valid call.
        reject: out
            .refused
            .or(refusal.map(|r| r.reason))
            .or((out.preflight && status >= 400).then_some("cors")),
        upstream_status: out.upstream_status,
        latency: done.latency,
        upstream_latency: out.upstream_latency,
    });
    let bytes_out = resp.body().size_hint().exact();
    match bytes_out {
        Some(n) => route_metrics.add_bytes_out(n),
        None => {
            let route = route_metrics.clone();
            resp = resp.map(|b| {
                crate::body::inspect(b, move |p| {
                    if let Poll::Ready(Some(Ok(f))) = p {
                        if let Some(d) = f.data_ref() {
                            route.add_bytes_out(d.len() as u64);
                        }
                    }
                })
            })
        }
    }
    if let Some(span) = done.span {
        span.end(crate::trace::span::End {
            api: out.api.map(|i| &gw.apis[i]),
            key_id: out.identity.as_ref().map(|i| i.key_id.as_str()),
            client: out.client_ip.unwrap_or(done.conn.peer.ip()),
            status,
            upstream_status: out.upstream_status,
            error_code: refusal.map(|r| r.code),
        });
    }
    if let Some(method) = seen.method {
        let route = out.api.map(|i| &*gw.apis[i].label).unwrap_or("-");
        crate::logging::access::log(&crate::logging::access::Line {
            request_id: done.request_id,
            client_ip: out.client_ip.unwrap_or(done.conn.peer.ip()),
            host: seen.host.as_deref().unwrap_or("-"),
            method: method.as_str(),
            path: &seen.path,
            route,
            key_id: out.identity.as_ref().map_or("-", |i| i.key_id.as_str()),
            status,
            upstream_status: out.upstream_status.unwrap_or(0),
            grpc_status: resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            error_code: refusal.map_or("-", |r| r.code),
            bytes_out: bytes_out.unwrap_or(0),
            latency_us: done.latency.as_micros() as u64,
        });
    }
    resp
}

/// The request's one authority, for the access log (`None` when it is refused).
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let a = authority(req.version(), req.uri(), req.headers()).ok()??;
    a.to_str().ok().map(str::to_owned)
}

/// Keep a well-formed incoming id (a front proxy's), else make one.
pub(super) fn request_id(h: &HeaderMap) -> String {
    if let Some(v) = h.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return v.to_string();
        }
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex16(word: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((word >> (4 * (15 - i))) & 0xf) as usize];
        }
        out
    }
    // The random half once per process, in hex already.
    static PREFIX: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| hex16(rand::random::<u64>()));
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    // `format!("{prefix:016x}{n:016x}")` without the formatting machinery.
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(prefix);
    buf[16..].copy_from_slice(&hex16(n));
    // Hex digits are ASCII: the conversion cannot fail.
    String::from_utf8(buf.to_vec()).unwrap_or_default()
}
