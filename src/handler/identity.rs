//! Step 4: who calls. The external authorization service's verdict, the API's
//! scheme (src/auth/dispatch.rs), then the caller's usage plan and the API's
//! access list. The replay check between them is replay.rs.

use super::buffer::{self, ReqBody};
use super::route::Routed;
use super::{Ctx, Flow, Outcome};
use crate::auth::dispatch::{AuthMode, Caller};
use crate::auth::external::{Admitted, Refused, Subject};
use crate::auth::{AuthError, RequestParts};
use crate::body::{Body, RequestBody};
use crate::budget::HeldBody;
use crate::gateway::{Api, Gateway};
use crate::header_list::{HeaderList, HeaderSink};
use crate::reject::Reject;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// The caller, once authenticated.
pub(super) struct Identity {
    pub key_id: String,
    pub app: String,
    pub plan: Option<Arc<str>>,
    /// Added to the forwarded request (JWT `claims_to_headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Step 4a: an `external` API's authorization service decides first; the headers
/// it names are copied from its answer onto the request. `Flow::Answer`: its
/// own refusal, passed to the client as is.
pub(super) async fn ask_external(
    api: &Api,
    parts: &mut Parts,
    routed: &Routed,
    ip: IpAddr,
    out: &mut Outcome,
) -> Result<Flow<Option<Admitted>>, Reject> {
    let AuthMode::External(x) = &api.auth else {
        return Ok(Flow::Next(None));
    };
    let subject = Subject {
        method: &parts.method,
        path: routed.path(&parts.uri),
        query: parts.uri.query(),
        host: parts.headers.get(header::HOST),
        client_ip: ip,
        headers: &parts.headers,
    };
    match x.check(&subject).await {
        Ok(a) => {
            a.apply(x.copied_headers(), &mut parts.headers);
            Ok(Flow::Next(Some(a)))
        }
        Err(Refused::Answer(r)) => {
            out.refused = Some("auth");
            Ok(Flow::Answer(*r))
        }
        Err(Refused::Reject(r)) => {
            out.refused = Some("auth");
            Err(r)
        }
    }
}

impl Ctx {
    /// Step 4b: verifies the API's scheme; returns the caller and the body to
    /// forward: the buffered bytes when the scheme hashed them, else the
    /// size-limited stream.
    ///
    /// Everything the head can prove is checked before a byte of body is read
    /// (credential syntax, key, skew, the hmac signature itself); only a request
    /// that passes gets its body buffered, within `[server] max_buffered_bytes`.
    pub(super) async fn authenticate<B: RequestBody>(
        &self,
        gw: &Gateway,
        api: &Api,
        parts: &Parts,
        body: ReqBody<B>,
        declared_len: Option<u64>,
        extra: &mut HeaderList,
    ) -> Result<(Option<Caller>, Body), Reject> {
        let mode = &api.auth;
        mode.ready().await;
        let now = SystemTime::now();
        let mut rp = RequestParts {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            body: None,
        };
        // A v1 POST routed by its `Action` arrives read already (action.rs).
        let body = match body {
            ReqBody::Buffered(bytes, held) => {
                let rp = RequestParts {
                    body: Some(&bytes),
                    ..rp
                };
                let caller = mode.verify(&gw.auth, &gw.keys, &rp, now)?;
                return Ok((caller, HeldBody::new(bytes, held).boxed_unsync()));
            }
            ReqBody::Stream(body) => body,
        };
        // The head alone first: a scheme that needs the body answers `NeedBody`
        // only once everything else it can check has passed.
        match mode.verify(&gw.auth, &gw.keys, &rp, now) {
            Err(AuthError::NeedBody) => {}
            Err(e) => return Err(e.into()),
            Ok(caller) => return Ok((caller, ReqBody::Stream(body).forward(api))),
        }
        // Asked only now: finding whether an hmac credential signs a digest
        // costs a scan most requests need not pay.
        let Some(limit) = mode.body_limit(&parts.method, &parts.headers, api.max_body) else {
            return Err(AuthError::NeedBody.into());
        };
        if declared_len.is_some_and(|len| len > limit as u64) {
            return Err(AuthError::BodyTooLarge.into());
        }
        let budget = &self.state.body_budget;
        let read = buffer::read_in_time(gw.body_read_timeout, body, limit, declared_len, budget);
        let (bytes, held) = match read.await {
            Err(e @ Reject::Auth(AuthError::BufferBudget)) => {
                extra.put(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(e);
            }
            read => read?,
        };
        api.metrics.add_bytes_in(bytes.len() as u64);
        rp.body = Some(&bytes);
        let caller = mode.verify(&gw.auth, &gw.keys, &rp, now)?;
        Ok((caller, HeldBody::new(bytes, held).boxed_unsync()))
    }
}

/// The caller the external service named, in place of the scheme's (an
/// `external` API's scheme names nobody).
pub(super) fn or_admitted(
    gw: &Gateway,
    caller: Option<Caller>,
    admitted: Option<Admitted>,
) -> Result<Option<Caller>, Reject> {
    match admitted {
        Some(a) => Ok(Caller::admitted(&gw.keys, a)?),
        None => Ok(caller),
    }
}

/// Step 4d: the caller's usage plan on this API: a service that binds plans takes
/// only their keys (403).
pub(super) fn with_plan(api: &Api, caller: Option<Caller>) -> Result<Option<Identity>, Reject> {
    let Some(c) = caller else { return Ok(None) };
    let plan = match &api.plans {
        None => None,
        Some(plans) => Some(
            plans
                .get(&c.key_id)
                .cloned()
                .ok_or(Reject::Auth(AuthError::NotAllowed))?,
        ),
    };
    Ok(Some(Identity {
        key_id: c.key_id,
        app: c.app,
        plan,
        headers: c.headers,
    }))
}

/// Step 4e: the API's `allow_*` / `deny_*` caller lists.
pub(super) fn check_acl(api: &Api, identity: Option<&Identity>) -> Result<(), Reject> {
    match (&api.acl, identity) {
        (Some(acl), Some(id)) if !acl.allows(&id.key_id, &id.app) => {
            Err(AuthError::NotAllowed.into())
        }
        _ => Ok(()),
    }
}

/// An authentication refusal (401/403) in the API's `auth_rejected_*` terms.
pub(super) fn auth_refusal(api: &Api, reject: Reject) -> Reject {
    match (&api.refusals.auth, &reject) {
        (Some(r), Reject::Auth(e)) if matches!(e.status(), 401 | 403) => r.apply(reject),
        _ => reject,
    }
}

/// What header rules may name of the request (`request_headers`,
/// `response_headers`).
pub(super) fn header_vars<'a>(
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
