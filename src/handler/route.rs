//! Step 1: which API takes the request, on the one authority and the one
//! canonical path, and what that API checks before any work on the body (the
//! service's front-end protocol, a websocket API's method, declared inputs, the
//! declared body length).

use super::buffer::ReqBody;
use super::{action, ConnInfo, Flow, Outcome};
use crate::authority::authority;
use crate::body::RequestBody;
use crate::budget::BodyBudget;
use crate::gateway::{Backend, Gateway};
use crate::policy::cors::CorsPolicy;
use crate::policy::inputs::Forwarding;
use crate::reject::Reject;
use crate::route::compose_backend_path;
use crate::route::front::Front;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::Uri;
use std::borrow::Cow;

/// The API a request was routed to, and what routing learnt on the way.
pub(super) struct Routed {
    pub api: usize,
    /// The canonical path when it differs from the client's (see [`Routed::path`]).
    canonical: Option<String>,
    /// Length of the environment prefix of the canonical path.
    env_len: usize,
    /// The back end's path, before the query (empty for a mock back end).
    pub backend_path: String,
    /// Where the declared inputs go on the forwarded request.
    pub inputs: Forwarding,
    /// The request's `Content-Length`.
    pub declared_len: Option<u64>,
}

impl Routed {
    /// The canonical path the request was routed by; `uri` is the client's
    /// (the request's until it is rewritten for the back end).
    pub fn path<'a>(&'a self, uri: &'a Uri) -> &'a str {
        self.canonical.as_deref().unwrap_or(uri.path())
    }

    /// The path below the environment prefix, as the limits key it.
    pub fn limit_path<'a>(&'a self, uri: &'a Uri) -> &'a str {
        self.path(uri).get(self.env_len..).unwrap_or("")
    }
}

/// Step 1: routes the request. `Flow::Answer`: the service redirects it
/// (forced HTTPS). The body comes back read when an action group had to read
/// a v1 form to choose the API.
pub(super) async fn route<B: RequestBody>(
    gw: &Gateway,
    parts: &mut Parts,
    body: B,
    conn: ConnInfo,
    budget: &BodyBudget,
    out: &mut Outcome,
) -> Result<Flow<(Routed, ReqBody<B>)>, Reject> {
    let declared_len = check_framing(&parts.headers)?;
    let authority = authority(parts.version, &parts.uri, &parts.headers)
        .map_err(|e| Reject::BadRequest(e.to_string()))?;
    crate::authority::settle(&mut parts.headers, authority.as_ref());
    let parts = &*parts;
    let host = authority.as_ref().and_then(|h| h.to_str().ok());
    let path = crate::path::canonical(parts.uri.path(), &gw.path)
        .map_err(|e| Reject::BadRequest(e.to_string()))?;
    let mut body = ReqBody::Stream(body);
    // A preflight is routed by the method it asks about, to an API with a CORS
    // policy; otherwise (no such API) as the OPTIONS request it is.
    let asked = CorsPolicy::requested_method(&parts.method, &parts.headers);
    let by_asked = asked.as_ref().and_then(|am| {
        gw.router
            .lookup(host, &path, am)
            .filter(|m| {
                gw.apis
                    .get(m.first_allowing(am))
                    .is_some_and(|a| a.cors.is_some())
            })
            .map(|m| (m, am))
    });
    let (m, route_method) = match by_asked {
        Some(found) => found,
        None => (
            gw.router
                .lookup(host, &path, &parts.method)
                .ok_or(Reject::NoRoute)?,
            &parts.method,
        ),
    };
    // A back end that merges slashes or drops `;` parameters must not be
    // able to read the path as another API's.
    if let Some(other) = crate::path::other_reading(&path) {
        let elsewhere = gw.router.lookup(host, &other, route_method);
        if elsewhere.is_some_and(|o| o.api != m.api) {
            return Err(Reject::BadRequest(
                "path reads as another API's once slashes are merged or `;` parameters dropped"
                    .into(),
            ));
        }
    }
    let api = if m.by_action() {
        out.api = Some(m.api);
        let chosen;
        (chosen, body) =
            action::choose(gw, &m, parts, route_method, body, declared_len, budget).await?;
        chosen
    } else {
        m.api
    };
    // The service's front-end protocol (forced HTTPS), a websocket API's
    // method, declared parameters: all before any work on the body.
    out.api = Some(api);
    let a = &gw.apis[api];
    match a.front.check(conn.tls, &parts.method, host, &parts.uri) {
        Front::Pass => {}
        Front::Redirect(r) => return Ok(Flow::Answer(r)),
        Front::Refuse(m) => return Err(Reject::Protocol(m)),
    }
    if matches!(&a.backend, Backend::Http(b) if b.websocket) && parts.method != http::Method::GET {
        return Err(Reject::WebsocketMethod);
    }
    let inputs = if a.inputs.is_empty()
        || (a.cors.is_some() && CorsPolicy::is_preflight(&parts.method, &parts.headers))
    {
        Forwarding::default()
    } else {
        a.inputs
            .check(&m.params, parts.uri.query(), &parts.headers)?
    };
    let backend_path = match &a.backend {
        Backend::Http(b) => inputs.backend_path(&b.path, &m, compose_backend_path),
        Backend::Mock(_) => String::new(),
    };
    let env_len = path.len() - m.path.len();
    if let Some(len) = declared_len {
        if len > a.max_body {
            return Err(Reject::BodyTooLarge(a.max_body));
        }
    }
    let routed = Routed {
        api,
        canonical: match path {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        },
        env_len,
        backend_path,
        inputs,
        declared_len,
    };
    Ok(Flow::Next((routed, body)))
}

/// Refuse ambiguous framing (request smuggling): several Content-Length values,
/// or Content-Length together with Transfer-Encoding. Returns the declared length.
///
/// On HTTP/1.1, hyper settles most of this before the handler runs (raw-socket
/// tests in tests/attack_path.rs): differing Content-Length values, a
/// Transfer-Encoding whose last coding is not `chunked`, Transfer-Encoding on
/// HTTP/1.0, obs-fold and a space before the colon are answered 400 by hyper;
/// repeated equal Content-Length values are folded into one; with both
/// Content-Length and Transfer-Encoding, hyper frames the body as chunked, drops
/// Content-Length (so it is never forwarded) and closes the connection after the
/// answer (RFC 9112 §6.3), so nothing after the body is read as a request. The
/// checks here remain for what reaches the handler otherwise.
fn check_framing(h: &HeaderMap) -> Result<Option<u64>, Reject> {
    let mut lens = h.get_all(header::CONTENT_LENGTH).iter();
    let first = lens.next();
    if lens.next().is_some() {
        return Err(Reject::BadRequest("duplicate Content-Length".into()));
    }
    let Some(v) = first else { return Ok(None) };
    if h.contains_key(header::TRANSFER_ENCODING) {
        return Err(Reject::BadRequest(
            "Content-Length with Transfer-Encoding".into(),
        ));
    }
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Reject::BadRequest("invalid Content-Length".into()))
}
