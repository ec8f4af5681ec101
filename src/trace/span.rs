//! One exported span per request (`[tracing]`), kind SERVER: begun when the
//! request arrives, ended with the access-log record. Without `[tracing]`
//! [`begin`] returns `None` at once and nothing else here runs.
//!
//! The span continues the client's trace: its parent is the client's span id,
//! its trace id the client's, and its own span id is the one the back end
//! receives in `traceparent` (left as a [`Hop`] in the request's extensions for
//! the forwarding step). Attribute names follow the OpenTelemetry HTTP server
//! semantic conventions; keygate's own are under `keygate.`.

use super::otlp::Tracer;
use super::Hop;
use crate::gateway::Api;
use http::{Method, Request};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use std::net::IpAddr;

/// A request's span, open until [`Started::end`].
pub struct Started {
    span: opentelemetry_sdk::trace::Span,
    method: Method,
    path: String,
    scheme: &'static str,
}

/// Starts the request's span when `[tracing]` is configured, and leaves the
/// ids the back end is to see in the request's extensions.
#[inline]
pub fn begin<B>(tracer: Option<&Tracer>, req: &mut Request<B>, tls: bool) -> Option<Started> {
    let tracer = tracer?.sdk()?;
    Some(start(tracer, req, tls))
}

fn start<B>(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    req: &mut Request<B>,
    tls: bool,
) -> Started {
    let client = super::incoming(req.headers());
    let parent = match client {
        Some(p) => Context::new().with_remote_span_context(remote(&p, req.headers())),
        None => Context::new(),
    };
    let builder = tracer.span_builder("request").with_kind(SpanKind::Server);
    let span = tracer.build_with_context(builder, &parent);
    let sc = span.span_context();
    let mut hop = Hop {
        trace: [0; 32],
        span: [0; 16],
        flags: [0; 2],
        keeps_state: client.is_some(),
    };
    hex(&sc.trace_id().to_bytes(), &mut hop.trace);
    hex(&sc.span_id().to_bytes(), &mut hop.span);
    hex(&[sc.trace_flags().to_u8()], &mut hop.flags);
    req.extensions_mut().insert(hop);
    Started {
        span,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        scheme: if tls { "https" } else { "http" },
    }
}

/// The client's span as a remote parent, with its `tracestate` when it parses.
fn remote(p: &super::Parent, h: &http::HeaderMap) -> SpanContext {
    fn id(s: &[u8]) -> &str {
        std::str::from_utf8(s).unwrap_or("0")
    }
    let state = h
        .get(&super::TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let flags = u8::from_str_radix(id(&p.flags), 16).unwrap_or(0);
    SpanContext::new(
        TraceId::from_hex(id(&p.trace)).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(id(&p.span)).unwrap_or(SpanId::INVALID),
        TraceFlags::new(flags),
        true,
        state,
    )
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
}

/// What the request came to, from the handler's access-log record.
pub struct End<'a> {
    pub api: Option<&'a Api>,
    pub key_id: Option<&'a str>,
    pub client: IpAddr,
    /// The status counted for the request (a refusal's real status even when
    /// the API's error style answers HTTP 200).
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// The `code` of a refusal's error body.
    pub error_code: Option<&'a str>,
}

impl Started {
    /// Names the span after the route, records the outcome, and hands it to
    /// the exporter's queue (never waits for the collector).
    pub fn end(mut self, e: End<'_>) {
        if !self.span.is_recording() {
            return;
        }
        let method = self.method.as_str();
        let known = matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::POST
                | Method::PUT
                | Method::DELETE
                | Method::CONNECT
                | Method::OPTIONS
                | Method::TRACE
                | Method::PATCH
        );
        let name = match e.api {
            Some(a) if known => format!("{method} {}", a.label),
            Some(a) => format!("HTTP {}", a.label),
            None if known => method.to_owned(),
            None => "HTTP".to_owned(),
        };
        self.span.update_name(name);
        let mut attrs = Vec::with_capacity(12);
        if known {
            attrs.push(KeyValue::new("http.request.method", method.to_owned()));
        } else {
            attrs.push(KeyValue::new("http.request.method", "_OTHER"));
            attrs.push(KeyValue::new(
                "http.request.method_original",
                method.to_owned(),
            ));
        }
        attrs.push(KeyValue::new("url.path", std::mem::take(&mut self.path)));
        attrs.push(KeyValue::new("url.scheme", self.scheme));
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(e.status),
        ));
        attrs.push(KeyValue::new("client.address", e.client.to_string()));
        if let Some(a) = e.api {
            attrs.push(KeyValue::new("keygate.route", a.label.to_string()));
            attrs.push(KeyValue::new("keygate.service", a.service.to_string()));
            attrs.push(KeyValue::new("keygate.api", a.name.to_string()));
        }
        if let Some(k) = e.key_id {
            attrs.push(KeyValue::new("keygate.key_id", k.to_owned()));
        }
        if let Some(s) = e.upstream_status {
            attrs.push(KeyValue::new("keygate.upstream_status_code", i64::from(s)));
        }
        if let Some(c) = e.error_code {
            attrs.push(KeyValue::new("keygate.error_code", c.to_owned()));
        }
        // A server span is in error for 5xx only: 4xx is the client's.
        if e.status >= 500 {
            attrs.push(KeyValue::new("error.type", e.status.to_string()));
            self.span.set_status(Status::error(match e.error_code {
                Some(c) => c.to_owned(),
                None => format!("status {}", e.status),
            }));
        }
        self.span.set_attributes(attrs);
        self.span.end();
    }
}
