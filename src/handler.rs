//! The request pipeline, one straight line: route, CORS preflight, IP control,
//! authentication, limits, forward, decorate. Any refusal is a `Reject`,
//! written in the API's error style by one function.

use crate::action::{self, ReqBody};
use crate::auth::{self, AuthError, RequestParts};
use crate::authority::authority;
use crate::body::{empty, full, Body, BoxError};
use crate::budget::{BodyBudget, BodyBuffer, Held, HeldBody};
use crate::gateway::{Api, AuthMode, Backend, Gateway, HttpBackend, MockBackend};
use crate::metrics::{RouteMetrics, Sample, NO_ROUTE};
use crate::policy::cors::CorsPolicy;
use crate::policy::inputs::Forwarding;
use crate::policy::ip::client_ip;
use crate::policy::limits::exec::Executor;
use crate::policy::limits::{LimitRequest, Timestamp};
use crate::reject::{ErrorStyle, Reject};
use crate::route::compose_backend_path;
use crate::route::front::Front;
use crate::state::State;
use crate::upstream::{
    strip_hop_by_hop, upgrade_protocol, AbandonGuard, BodyLimitExceeded, ClientBodyError,
    SendOptions,
};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-keygate-key-id");
pub const APP_HEADER: HeaderName = HeaderName::from_static("x-keygate-app");
pub const PLAN_HEADER: HeaderName = HeaderName::from_static("x-keygate-usage-plan");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

pub struct Ctx {
    pub live: Arc<ArcSwap<Gateway>>,
    pub state: Arc<State>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What the access log and the response decoration need to know about a request.
#[derive(Default)]
struct Outcome {
    api: Option<usize>,
    key_id: Option<String>,
    client_ip: Option<IpAddr>,
    upstream_status: Option<u16>,
    /// From sending the request to the back end to its response head.
    upstream_latency: Option<std::time::Duration>,
    /// A CORS preflight answer: final, not decorated again.
    preflight: bool,
    /// Headers added to the response whatever it is (rate-limit headers).
    extra: HeaderMap,
    /// The metrics reason of a refusal that is not counted by its `Reject`'s:
    /// an external authorization service's refusal or failure is `auth`.
    refused: Option<&'static str>,
}

/// The caller, once authenticated.
struct Identity {
    key_id: String,
    app: String,
    plan: Option<Arc<str>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Ctx {
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let gw = self.live.load_full();
        let request_id = request_id(req.headers());
        // Copies for the access log only: without it they cost an allocation each.
        let access = gw.log.access && crate::logging::access::enabled();
        let method = access.then(|| req.method().clone());
        let host = if access { host_of(&req) } else { None };
        let path = if access {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut out = Outcome::default();
        let mut refused = None;
        // A refusal's real status: metrics and the access log count it even when the
        // API's error style answers it with HTTP 200 (`cloud_error_status`).
        let mut refused_status = None;
        let mut error_code = None;
        let mut resp = match self.pipeline(&gw, req, conn, &request_id, &mut out).await {
            Ok(r) => r,
            Err(reject) => {
                refused = Some(reject.reason());
                refused_status = Some(reject.status());
                error_code = Some(reject.code());
                let api = out.api.map(|i| &gw.apis[i]);
                let style = api.map(|a| a.style).unwrap_or(ErrorStyle::Json);
                let debug = api.is_some_and(|a| a.debug_signatures);
                // A Redis outage under on_error = deny is logged once by the breaker;
                // a configured `rejected_code` of 5xx is a refusal, not a failure.
                if reject.status().is_server_error()
                    && !matches!(reject, Reject::ClusterUnavailable | Reject::Custom(_))
                {
                    tracing::warn!(request_id = %request_id, error = %reject, "request failed");
                }
                reject.to_response(style, &request_id, debug)
            }
        };
        // CORS headers on forwarded answers and on gateway errors alike, so that a
        // browser can read a 401/403/429 too. Preflight answers set their own.
        if let (Some(i), Some(o), false) = (out.api, &origin, out.preflight) {
            if let Some(cors) = &gw.apis[i].cors {
                let mut h = HeaderMap::new();
                h.insert(header::ORIGIN, o.clone());
                cors.apply(&h, resp.headers_mut());
            }
        }
        let headers = resp.headers_mut();
        for (k, v) in out.extra.iter() {
            headers.insert(k.clone(), v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, v);
        }
        let latency = start.elapsed();
        let no_route;
        let route_metrics = match out.api {
            Some(i) => &gw.apis[i].metrics,
            None => {
                no_route = self.state.metrics.route(NO_ROUTE);
                &no_route
            }
        };
        let status = refused_status.unwrap_or(resp.status()).as_u16();
        route_metrics.record(Sample {
            status,
            // A refused preflight is no valid call.
            reject: out
                .refused
                .or(refused)
                .or((out.preflight && status >= 400).then_some("cors")),
            upstream_status: out.upstream_status,
            latency,
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
        if let Some(method) = method {
            let route = out.api.map(|i| &*gw.apis[i].label).unwrap_or("-");
            crate::logging::access::log(&crate::logging::access::Line {
                request_id: &request_id,
                client_ip: out.client_ip.unwrap_or(conn.peer.ip()),
                host: host.as_deref().unwrap_or("-"),
                method: method.as_str(),
                path: &path,
                route,
                key_id: out.key_id.as_deref().unwrap_or("-"),
                status,
                upstream_status: out.upstream_status.unwrap_or(0),
                grpc_status: resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                error_code: error_code.unwrap_or("-"),
                bytes_out: bytes_out.unwrap_or(0),
                latency_us: latency.as_micros() as u64,
            });
        }
        resp
    }

    async fn pipeline(
        &self,
        gw: &Gateway,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &str,
        out: &mut Outcome,
    ) -> Result<Response<Body>, Reject> {
        let (mut parts, body) = req.into_parts();
        let declared_len = check_framing(&parts.headers)?;

        // 1. Route, on the one authority and the one canonical path; `parts.uri`
        //    stays the client's for the signature schemes.
        let authority = authority(parts.version, &parts.uri, &parts.headers)
            .map_err(|e| Reject::BadRequest(e.to_string()))?;
        crate::authority::settle(&mut parts.headers, authority.as_ref());
        let host = authority.as_ref().and_then(|h| h.to_str().ok());
        let path = crate::path::canonical(parts.uri.path(), &gw.path)
            .map_err(|e| Reject::BadRequest(e.to_string()))?;
        let mut body = ReqBody::Stream(body);
        let (api_idx, backend_path, env_len, fwd) = {
            let m = gw
                .router
                .lookup(host, &path, &parts.method)
                .ok_or(Reject::NoRoute)?;
            // A back end that merges slashes or drops `;` parameters must not be
            // able to read the path as another API's.
            if let Some(other) = crate::path::other_reading(&path) {
                let elsewhere = gw.router.lookup(host, &other, &parts.method);
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
                let budget = &self.state.body_budget;
                (chosen, body) = action::choose(gw, &m, &parts, body, declared_len, budget).await?;
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
                Front::Redirect(r) => return Ok(r),
                Front::Refuse(m) => return Err(Reject::Protocol(m)),
            }
            if matches!(&a.backend, Backend::Http(b) if b.websocket)
                && parts.method != http::Method::GET
            {
                return Err(Reject::WebsocketMethod);
            }
            let fwd = if a.inputs.is_empty()
                || (a.cors.is_some() && CorsPolicy::is_preflight(&parts.method, &parts.headers))
            {
                Forwarding::default()
            } else {
                a.inputs
                    .check(&m.params, parts.uri.query(), &parts.headers)?
            };
            let backend_path = match &a.backend {
                Backend::Http(b) => fwd.backend_path(&b.path, &m, compose_backend_path),
                Backend::Mock(_) => String::new(),
            };
            (api, backend_path, path.len() - m.path.len(), fwd)
        };
        out.api = Some(api_idx);
        let api = &gw.apis[api_idx];
        if let Some(len) = declared_len {
            if len > api.max_body {
                return Err(Reject::BodyTooLarge(api.max_body));
            }
        }

        // 2. CORS preflight: answered here, before auth, never forwarded.
        if let Some(cors) = &api.cors {
            if CorsPolicy::is_preflight(&parts.method, &parts.headers) {
                let (status, headers) = cors.preflight(&parts.headers);
                out.preflight = true;
                let mut r = Response::new(empty());
                *r.status_mut() = status;
                *r.headers_mut() = headers;
                return Ok(r);
            }
        }

        // 3. IP control.
        let ip = client_ip(conn.peer.ip(), &parts.headers, &gw.trusted);
        out.client_ip = Some(ip);
        for (name, policy) in &api.ip {
            if !policy.allows(ip) {
                let reject = Reject::IpDenied(name.to_string());
                return Err(match api.refusals.plugins.get(name) {
                    Some(r) => r.apply(reject),
                    None => reject,
                });
            }
        }

        // 4. Authentication. An external authorization service is asked first
        //    (src/auth/external.rs); the body is never sent to it.
        let admitted = match &api.auth {
            AuthMode::External(x) => {
                let subject = auth::external::Subject {
                    method: &parts.method,
                    path: &path,
                    query: parts.uri.query(),
                    host: parts.headers.get(header::HOST),
                    client_ip: ip,
                    headers: &parts.headers,
                };
                match x.check(&subject).await {
                    Ok(a) => {
                        a.apply(x.copied_headers(), &mut parts.headers);
                        Some(a)
                    }
                    Err(auth::external::Refused::Answer(r)) => {
                        out.refused = Some("auth");
                        return Ok(*r);
                    }
                    Err(auth::external::Refused::Reject(r)) => {
                        out.refused = Some("auth");
                        return Err(r);
                    }
                }
            }
            _ => None,
        };
        let (identity, body) = self
            .authenticate(gw, api, &parts, body, declared_len, &mut out.extra)
            .await
            .map_err(|r| custom_auth_refusal(api, r))?;
        let identity = match admitted {
            Some(a) => external_identity(gw, api, a).map_err(|r| custom_auth_refusal(api, r))?,
            None => identity,
        };
        out.key_id = identity.as_ref().map(|i| i.key_id.clone());
        if let (Some(acl), Some(id)) = (&api.acl, &identity) {
            if !acl.allows(&id.key_id, &id.app) {
                return Err(custom_auth_refusal(api, AuthError::NotAllowed.into()));
            }
        }

        // 5. Limits: usage plan QPS and quota, service, API, traffic plugins.
        if !api.limits.is_empty() {
            let req = LimitRequest {
                key_id: identity.as_ref().map(|i| i.key_id.as_str()),
                app: identity.as_ref().map(|i| i.app.as_str()),
                plan: identity.as_ref().and_then(|i| i.plan.as_deref()),
                client_ip: ip,
                method: &parts.method,
                path: path.get(env_len..).unwrap_or(""),
                headers: &parts.headers,
                query: parts.uri.query(),
            };
            let report = Executor::new(self.state.cluster.as_ref())
                .check(&api.limits, &req, Timestamp::now())
                .await?;
            report.write_headers(&mut out.extra);
            if report.refused {
                let reject = Reject::RateLimited {
                    message: report.message(),
                    quota: report.is_quota(),
                };
                return Err(match (&api.refusals.traffic, report.policy()) {
                    (Some(r), Some(p)) if is_plugin_limit(p.kind) => r.apply(reject),
                    _ => reject,
                });
            }
        }

        // 5b. Concurrency: the permit is held until the response body ends.
        let permit = match &api.concurrency {
            None => None,
            Some(c) => Some(
                c.acquire(identity.as_ref().map(|i| i.app.as_str()), ip)
                    .map_err(|o| match o.unavailable {
                        true => Reject::Overloaded(o.message),
                        false => Reject::RateLimited {
                            message: o.message,
                            quota: false,
                        },
                    })?,
            ),
        };

        // 6. Forward.
        let mut resp = match &api.backend {
            Backend::Mock(m) => mock_response(m),
            Backend::Http(b) => {
                prepare_forward(
                    gw,
                    api,
                    b,
                    &mut parts,
                    conn,
                    ip,
                    request_id,
                    identity.as_ref(),
                    backend_path,
                )?;
                let sent = Instant::now();
                fwd.apply(&mut parts.uri, &mut parts.headers)?;
                let resp = self.forward(api, b, parts, body).await?;
                out.upstream_latency = Some(sent.elapsed());
                out.upstream_status = Some(resp.status().as_u16());
                resp
            }
        };

        // 7. Decorate.
        if let Some(rules) = &api.response_headers {
            rules.apply(
                resp.headers_mut(),
                &header_vars(identity.as_ref(), ip, request_id),
            );
        }
        if let Some(plan) = identity.as_ref().and_then(|i| i.plan.as_deref()) {
            if !out.extra.contains_key("x-usageplan-id") {
                if let Ok(v) = HeaderValue::from_str(plan) {
                    resp.headers_mut().insert("x-usageplan-id", v);
                }
            }
        }
        if let Some(p) = permit {
            resp = resp.map(|b| p.hold(b));
        }
        Ok(resp)
    }

    /// Verify the API's scheme; returns the caller and the body to forward: the
    /// buffered bytes when the scheme hashed them, else the size-limited stream.
    ///
    /// Everything the head can prove is checked before a byte of body is read
    /// (credential syntax, key, skew, the hmac signature itself); only a request
    /// that passes gets its body buffered, within `[server] max_buffered_bytes`.
    async fn authenticate(
        &self,
        gw: &Gateway,
        api: &Api,
        parts: &Parts,
        body: ReqBody,
        declared_len: Option<u64>,
        extra: &mut HeaderMap,
    ) -> Result<(Option<Identity>, Body), Reject> {
        let stream = |body: ReqBody| match body {
            ReqBody::Stream(body) => LimitedBody::new(body, api.max_body)
                .counted(api.metrics.clone())
                .boxed_unsync(),
            ReqBody::Buffered(bytes, held) => HeldBody::new(bytes, held).boxed_unsync(),
        };
        let limit = match &api.auth {
            AuthMode::None => return Ok((None, stream(body))),
            AuthMode::Jwt(p) => {
                p.ready().await;
                let id = p.verify_request(
                    &parts.headers,
                    parts.uri.query(),
                    gw.auth.jwt_leeway,
                    SystemTime::now(),
                )?;
                let (key_id, app) = match gw.keys.get(&id.subject) {
                    Some(k) if !k.enabled => return Err(AuthError::DisabledKey.into()),
                    Some(k) => (k.id.clone(), k.app.clone()),
                    None => (id.subject.clone(), id.subject.clone()),
                };
                let plan = plan_of(api, &key_id)?;
                let identity = Identity {
                    key_id,
                    app,
                    plan,
                    headers: id.headers,
                };
                return Ok((Some(identity), stream(body)));
            }
            AuthMode::Hmac { .. } => {
                auth::hmac::needs_body(&parts.headers).then_some(api.max_body as usize)
            }
            AuthMode::Tc3 { .. } => auth::tc3::body_limit(&parts.method, &parts.headers),
            AuthMode::Tc1 => auth::tc1::body_limit(&parts.method),
            AuthMode::OpenApi => auth::openapi::body_limit(&parts.method),
            AuthMode::Key(_) => None,
            AuthMode::External(_) => return Ok((None, stream(body))),
        };
        if let (Some(limit), Some(len)) = (limit, declared_len) {
            if len > limit as u64 {
                return Err(AuthError::BodyTooLarge.into());
            }
        }
        let mut rp = RequestParts {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            body: None,
        };
        let now = SystemTime::now();
        // The head alone first: a scheme that needs the body answers `NeedBody`
        // only once everything else it can check has passed.
        // A v1 POST routed by its `Action` arrives read already (src/action.rs).
        let body = match body {
            ReqBody::Buffered(bytes, held) => {
                let rp = RequestParts {
                    body: Some(&bytes),
                    ..rp
                };
                let verified = verify_scheme(gw, api, &rp, now)?;
                let identity = self.admit(gw, api, verified).await?;
                return Ok((Some(identity), HeldBody::new(bytes, held).boxed_unsync()));
            }
            ReqBody::Stream(body) => body,
        };
        let (verified, forward_body) = match verify_scheme(gw, api, &rp, now) {
            Err(AuthError::NeedBody) => {
                let Some(limit) = limit else {
                    return Err(AuthError::NeedBody.into());
                };
                let budget = &self.state.body_budget;
                let read = read_limited(body, limit, declared_len, budget);
                let (bytes, held) = match tokio::time::timeout(gw.body_read_timeout, read).await {
                    Err(_) => return Err(Reject::BodyTimeout(gw.body_read_timeout)),
                    Ok(Err(e)) => {
                        if matches!(e, Reject::Auth(AuthError::BufferBudget)) {
                            extra.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        }
                        return Err(e);
                    }
                    Ok(Ok(read)) => read,
                };
                api.metrics.add_bytes_in(bytes.len() as u64);
                rp.body = Some(&bytes);
                let verified = verify_scheme(gw, api, &rp, now)?;
                (verified, HeldBody::new(bytes, held).boxed_unsync())
            }
            Err(e) => return Err(e.into()),
            Ok(v) => (v, stream(ReqBody::Stream(body))),
        };
        let identity = self.admit(gw, api, verified).await?;
        Ok((Some(identity), forward_body))
    }

    /// After a signature verified: the replay check, then the usage plan.
    async fn admit(
        &self,
        gw: &Gateway,
        api: &Api,
        verified: auth::Verified,
    ) -> Result<Identity, Reject> {
        let mode = gw.auth.replay;
        if let Some(r) = verified.replay.as_ref().filter(|r| mode.checks(r.kind)) {
            let (key, cluster) = (&verified.key, self.state.cluster.as_ref());
            self.state
                .replay
                .check(cluster, &key.id, &key.secret, r)
                .await?;
        }
        let plan = plan_of(api, &verified.key.id)?;
        let identity = Identity {
            key_id: verified.key.id.clone(),
            app: verified.key.app.clone(),
            plan,
            headers: vec![],
        };
        Ok(identity)
    }

    async fn forward(
        &self,
        api: &Api,
        b: &HttpBackend,
        parts: Parts,
        body: Body,
    ) -> Result<Response<Body>, Reject> {
        let mut parts = parts;
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
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await)
                else {
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
}

/// An authentication refusal (401/403) in the API's `auth_rejected_*` terms.
fn custom_auth_refusal(api: &Api, reject: Reject) -> Reject {
    match (&api.refusals.auth, &reject) {
        (Some(r), Reject::Auth(e)) if matches!(e.status(), 401 | 403) => r.apply(reject),
        _ => reject,
    }
}

/// A refusal by a traffic-control plugin (rather than a plan or a `qps`).
fn is_plugin_limit(kind: crate::policy::limits::PolicyKind) -> bool {
    use crate::policy::limits::PolicyKind as K;
    matches!(
        kind,
        K::TrafficApi | K::TrafficApp | K::TrafficIp | K::ParamDefault | K::ParamStrategy
    )
}

fn header_vars<'a>(
    identity: Option<&'a Identity>,
    client_ip: IpAddr,
    request_id: &'a str,
) -> crate::policy::headers::Vars<'a> {
    crate::policy::headers::Vars {
        key_id: identity.map(|i| i.key_id.as_str()),
        app: identity.map(|i| i.app.as_str()),
        client_ip,
        request_id,
    }
}

/// The caller an external authorization service named: a key id must name an
/// enabled key (401 otherwise); an app alone identifies the caller as that app.
fn external_identity(
    gw: &Gateway,
    api: &Api,
    a: auth::external::Admitted,
) -> Result<Option<Identity>, Reject> {
    let (key_id, app) = match (a.key_id, a.app) {
        (None, None) => return Ok(None),
        (Some(id), app) => {
            let k = auth::lookup_key(&gw.keys, &id)?;
            (k.id.clone(), app.unwrap_or_else(|| k.app.clone()))
        }
        (None, Some(app)) => (app.clone(), app),
    };
    let plan = plan_of(api, &key_id)?;
    Ok(Some(Identity {
        key_id,
        app,
        plan,
        headers: vec![],
    }))
}

fn plan_of(api: &Api, key_id: &str) -> Result<Option<Arc<str>>, Reject> {
    match &api.plans {
        None => Ok(None),
        Some(plans) => plans
            .get(key_id)
            .cloned()
            .map(Some)
            .ok_or(Reject::Auth(AuthError::NotAllowed)),
    }
}

/// Rewrite the request head for the back end: path, query, method, hop-by-hop,
/// credentials, identity, X-Forwarded-*, constant parameters.
#[allow(clippy::too_many_arguments)]
fn prepare_forward(
    gw: &Gateway,
    api: &Api,
    b: &HttpBackend,
    parts: &mut Parts,
    conn: ConnInfo,
    client: IpAddr,
    request_id: &str,
    identity: Option<&Identity>,
    backend_path: String,
) -> Result<(), Reject> {
    let mut pq = backend_path;
    let query = parts.uri.query().unwrap_or("");
    let query: &str = &match &api.auth {
        AuthMode::Key(k) if gw.auth.strip_credentials => match &k.query {
            Some(name) => auth::key::strip_query(query, name),
            None => query.into(),
        },
        AuthMode::Jwt(p) if gw.auth.strip_credentials => match p.token_query() {
            Some(name) => auth::key::strip_query(query, name),
            None => query.into(),
        },
        _ => query.into(),
    };
    if !query.is_empty() || !b.const_query.is_empty() {
        pq.push('?');
        pq.push_str(query);
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
    if gw.auth.strip_credentials && !matches!(api.auth, AuthMode::None) {
        h.remove(header::AUTHORIZATION);
        h.remove(header::PROXY_AUTHORIZATION);
    }
    // Identity headers are ours alone: a client's copies are dropped, in any
    // spelling and on every API.
    gw.reserved.strip(h);
    if gw.auth.strip_credentials {
        match &api.auth {
            AuthMode::Key(k) => {
                h.remove(&k.header);
            }
            AuthMode::Jwt(p) => {
                if let Some(c) = p.token_cookie() {
                    auth::jwt::strip_cookie(h, c);
                }
            }
            _ => {}
        }
    }
    // Header rules run before the headers below are set, and may not name them.
    if let Some(rules) = &api.request_headers {
        rules.apply(h, &header_vars(identity, client, request_id));
    }
    crate::trace::propagate(h);
    if let Some(id) = identity {
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
    let peer = conn.peer.ip();
    let peer_trusted = gw.trusted.contains(peer);
    let client_value = HeaderValue::from_str(&client.to_string()).ok();
    let xff = match (peer_trusted, h.get(&XFF).and_then(|v| v.to_str().ok())) {
        (true, Some(prev)) => HeaderValue::from_str(&format!("{prev}, {peer}")).ok(),
        _ if peer == client => client_value.clone(),
        _ => HeaderValue::from_str(&peer.to_string()).ok(),
    };
    if let Some(v) = xff {
        h.insert(XFF, v);
    }
    if !(peer_trusted && h.contains_key(&XFP)) {
        h.insert(
            XFP,
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
    }
    if !(peer_trusted && h.contains_key(&XFH)) {
        if let Some(host) = original_host {
            h.insert(XFH, host);
        }
    }
    if let Some(v) = client_value {
        h.insert(X_REAL_IP, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID, v);
    }
    for (k, v) in &b.const_headers {
        h.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn mock_response(m: &MockBackend) -> Response<Body> {
    let mut r = Response::new(full(m.body.clone()));
    *r.status_mut() = m.status;
    *r.headers_mut() = m.headers.clone();
    r
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

/// Verifies a signature scheme (`hmac`, `tc3`, `tc1`, `openapi`) over `rp`.
fn verify_scheme(
    gw: &Gateway,
    api: &Api,
    rp: &RequestParts<'_>,
    now: SystemTime,
) -> Result<auth::Verified, AuthError> {
    match &api.auth {
        AuthMode::Hmac { settings } => {
            let s = settings.as_deref().unwrap_or(&gw.auth.hmac);
            auth::hmac::verify(s, rp, &gw.keys, now)
        }
        AuthMode::Tc3 {
            service,
            require_signed_payload,
        } => auth::tc3::verify(
            &gw.auth.tc3,
            service.as_deref(),
            *require_signed_payload,
            rp,
            &gw.keys,
            now,
        ),
        AuthMode::Tc1 => auth::tc1::verify(&gw.auth.tc1, rp, &gw.keys, now),
        AuthMode::OpenApi => auth::openapi::verify(rp, &gw.keys),
        AuthMode::Key(source) => auth::key::verify(source, &gw.auth.key_index, rp),
        AuthMode::None | AuthMode::Jwt(_) | AuthMode::External(_) => {
            Err(AuthError::Missing("a signature scheme".into()))
        }
    }
}

/// Buffers a body of at most `limit` bytes, taking room from `budget` first:
/// the declared length at once, else chunk by chunk. The reservation is
/// returned with the bytes and released when it is dropped.
pub(crate) async fn read_limited(
    mut body: Incoming,
    limit: usize,
    declared: Option<u64>,
    budget: &BodyBudget,
) -> Result<(Bytes, Held), Reject> {
    let mut held = budget.hold();
    if let Some(len) = declared {
        if !budget.reserve(&mut held, len) {
            return Err(AuthError::BufferBudget.into());
        }
    }
    let capacity = declared.map_or(limit, |l| l.min(limit as u64) as usize);
    let mut buf = BodyBuffer::new(capacity);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Reject::BadRequest("could not read the request body".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len() + data.len();
        if total > limit {
            return Err(AuthError::BodyTooLarge.into());
        }
        if !budget.reserve(&mut held, total as u64) {
            return Err(AuthError::BufferBudget.into());
        }
        if !buf.push(&data) {
            return Err(Reject::BadRequest(
                "request body longer than its Content-Length".into(),
            ));
        }
    }
    Ok((buf.freeze(), held))
}

/// The request's one authority, for the access log (`None` when it is refused).
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let a = authority(req.version(), req.uri(), req.headers()).ok()??;
    a.to_str().ok().map(str::to_owned)
}

/// Keep a well-formed incoming id (a front proxy's), else make one.
fn request_id(h: &HeaderMap) -> String {
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
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    // `format!("{prefix:016x}{n:016x}")` without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *b = HEX[((word >> (4 * (15 - i % 16))) & 0xf) as usize];
    }
    buf.iter().map(|&b| b as char).collect()
}

/// A streamed request body that fails once it passes the API's limit, so an
/// oversized chunked upload is cut off while streaming (413).
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    bytes_in: Option<Arc<RouteMetrics>>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
            bytes_in: None,
        }
    }

    /// Count the bytes that pass into the route's `bytes_in` metric.
    pub fn counted(mut self, route: Arc<RouteMetrics>) -> Self {
        self.bytes_in = Some(route);
        self
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(self.limit)))));
                    }
                    self.remaining -= n;
                    if let Some(m) = &self.bytes_in {
                        m.add_bytes_in(n);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
