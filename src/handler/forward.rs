//! Step 6: the answer: the mock back end's, or the back end's through the
//! upstream pool (src/upstream.rs), the request head rewritten for it first.

use super::identity::{header_vars, Identity};
use super::{ConnInfo, REQUEST_ID};
use crate::body::{empty, full, Body};
use crate::gateway::{Api, Gateway, HttpBackend, MockBackend};
use crate::reject::Reject;
use crate::upstream::{strip_hop_by_hop, upgrade_protocol, AbandonGuard, SendOptions};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::IpAddr;

pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-keygate-key-id");
pub const APP_HEADER: HeaderName = HeaderName::from_static("x-keygate-app");
pub const PLAN_HEADER: HeaderName = HeaderName::from_static("x-keygate-usage-plan");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the forwarded request head is made of, besides the client's.
pub(super) struct ForwardHead<'a> {
    pub gw: &'a Gateway,
    pub api: &'a Api,
    pub backend: &'a HttpBackend,
    pub conn: ConnInfo,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    pub identity: Option<&'a Identity>,
}

impl ForwardHead<'_> {
    /// Rewrites the request head for the back end: path, query, method,
    /// hop-by-hop, credentials, identity, X-Forwarded-*, constant parameters.
    pub fn prepare(&self, parts: &mut Parts, backend_path: String) -> Result<(), Reject> {
        let (gw, api, b) = (self.gw, self.api, self.backend);
        let mut pq = backend_path;
        let query = parts.uri.query().unwrap_or("");
        let query = match gw.auth.strip_credentials {
            true => api.auth.strip_query(query),
            false => query.into(),
        };
        if !query.is_empty() || !b.const_query.is_empty() {
            pq.push('?');
            pq.push_str(&query);
            if !query.is_empty() && !b.const_query.is_empty() {
                pq.push('&');
            }
            pq.push_str(&b.const_query);
        }
        parts.uri = pq
            .parse()
            .map_err(|_| Reject::BadRequest("request path cannot be forwarded".into()))?;
        if let Some(m) = &b.method {
            parts.method = m.clone();
        }
        let original_host = parts.headers.get(header::HOST).cloned();
        let upgrade = upgrade_protocol(&parts.headers);
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        if let Some(proto) = upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, proto);
        }
        if gw.auth.strip_credentials {
            api.auth.strip_headers(h);
        }
        // Identity headers are ours alone: a client's copies are dropped, in any
        // spelling and on every API.
        gw.reserved.strip(h);
        // Header rules run before the headers below are set, and may not name them.
        if let Some(rules) = &api.request_headers {
            rules.apply(
                h,
                &header_vars(self.identity, self.client_ip, self.request_id),
            );
        }
        crate::trace::propagate(h, parts.extensions.get());
        if let Some(id) = self.identity {
            if let Ok(v) = HeaderValue::from_str(&id.key_id) {
                h.insert(KEY_ID_HEADER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&id.app) {
                h.insert(APP_HEADER, v);
            }
            if let Some(plan) = id
                .plan
                .as_deref()
                .and_then(|p| HeaderValue::from_str(p).ok())
            {
                h.insert(PLAN_HEADER, plan);
            }
            for (k, v) in &id.headers {
                h.append(k.clone(), v.clone());
            }
        }
        let (client, peer) = (self.client_ip, self.conn.peer.ip());
        let peer_trusted = gw.trusted.contains(peer);
        let client_value = ip_value(client);
        let xff = match (peer_trusted, h.get(&XFF).and_then(|v| v.to_str().ok())) {
            (true, Some(prev)) => HeaderValue::from_str(&format!("{prev}, {peer}")).ok(),
            _ if peer == client => client_value.clone(),
            _ => ip_value(peer),
        };
        if let Some(v) = xff {
            h.insert(XFF, v);
        }
        if !(peer_trusted && h.contains_key(&XFP)) {
            let proto = if self.conn.tls { "https" } else { "http" };
            h.insert(XFP, HeaderValue::from_static(proto));
        }
        if !(peer_trusted && h.contains_key(&XFH)) {
            if let Some(host) = original_host {
                h.insert(XFH, host);
            }
        }
        if let Some(v) = client_value {
            h.insert(X_REAL_IP, v);
        }
        if let Ok(v) = HeaderValue::from_str(self.request_id) {
            h.insert(REQUEST_ID, v);
        }
        for (k, v) in &b.const_headers {
            h.insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

/// The answer of a `type = "mock"` back end.
pub(super) fn mock_response(m: &MockBackend) -> Response<Body> {
    let mut r = Response::new(full(m.body.clone()));
    *r.status_mut() = m.status;
    *r.headers_mut() = m.headers.clone();
    r
}

/// Sends the prepared request to the back end; opens the tunnel of an agreed
/// protocol switch (websockets).
pub(super) async fn send(
    api: &Api,
    b: &HttpBackend,
    mut parts: Parts,
    body: Body,
) -> Result<Response<Body>, Reject> {
    // RFC 8441 websockets over HTTP/2 are not offered (the h2 server does not
    // announce extended CONNECT); a plain CONNECT is not ours to tunnel.
    if parts.method == http::Method::CONNECT {
        return Err(Reject::BadRequest(
            "CONNECT is not forwarded; websockets need HTTP/1.1 (RFC 8441 over HTTP/2 is not supported)"
                .into(),
        ));
    }
    let client_version = parts.version;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let wants_upgrade = parts.headers.contains_key(header::UPGRADE);
    let request_id = parts.headers.get(REQUEST_ID).cloned();
    let req = Request::from_parts(parts, body);
    let abandon = AbandonGuard::new(request_id.clone());
    let opts = SendOptions {
        timeout: b.timeout,
        preserve_host: b.preserve_host,
        retry: &b.retry,
        metrics: Some(&api.metrics),
    };
    let sent = b.upstream.send(req, &opts).await;
    abandon.disarm();
    let mut resp = sent?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The tunnel opens only now that the upstream agreed to switch.
        let Some(client_upgrade) = client_upgrade.filter(|_| wants_upgrade) else {
            return Err(Reject::UpstreamUnavailable(
                "back end switched protocols unasked".into(),
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                tracing::debug!("upgrade failed on one side");
                return;
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::TE);
    // The client's connection sets the version: an HTTP/1.0 back end must not
    // downgrade (and close) an HTTP/1.1 client's keep-alive connection.
    parts.version = client_version;
    let body = crate::grpc::log_trailer_status(&parts.headers, body, request_id);
    Ok(Response::from_parts(parts, body))
}

/// An address as a header value.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let mut b = Vec::with_capacity(15);
    crate::logging::access::ip(&mut b, ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(b)).ok()
}
