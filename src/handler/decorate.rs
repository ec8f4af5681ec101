//! Step 7: the answer as the client gets it. The back end's answer gets the
//! API's response rules and the usage plan; every answer, refusals included,
//! gets CORS headers (so that a browser can read a 401/403/429 too), the
//! rate-limit headers and the request id.

use super::identity::header_vars;
use super::{Outcome, REQUEST_ID};
use crate::body::Body;
use crate::gateway::Gateway;
use crate::header_list::HeaderList;
use crate::reject::{ErrorStyle, Reject};
use http::header::HeaderValue;
use http::{HeaderName, Response};

const X_USAGEPLAN_ID: HeaderName = HeaderName::from_static("x-usageplan-id");

/// A refusal, written in the routed API's error style (JSON before routing).
pub(super) fn refusal(
    gw: &Gateway,
    api: Option<usize>,
    reject: &Reject,
    request_id: &str,
) -> Response<Body> {
    let api = api.map(|i| &gw.apis[i]);
    let style = api.map(|a| a.style).unwrap_or(ErrorStyle::Json);
    let debug = api.is_some_and(|a| a.debug_signatures);
    // A Redis outage under on_error = deny is logged once by the breaker;
    // a configured `rejected_code` of 5xx is a refusal, not a failure.
    if reject.status().is_server_error()
        && !matches!(reject, Reject::ClusterUnavailable | Reject::Custom(_))
    {
        tracing::warn!(request_id = %request_id, error = %reject, "request failed");
    }
    reject.to_response(style, request_id, debug)
}

/// Step 7: decorates the answer, whatever produced it.
pub(super) fn answer(
    gw: &Gateway,
    out: &Outcome,
    extra: HeaderList,
    origin: Option<&HeaderValue>,
    request_id: &str,
    resp: &mut Response<Body>,
) {
    let api = out.api.map(|i| &gw.apis[i]);
    if let (Some(api), Some(ip), true) = (api, out.client_ip, out.forwarded) {
        if let Some(rules) = &api.response_headers {
            let vars = header_vars(out.identity.as_ref(), ip, request_id);
            rules.apply(resp.headers_mut(), &vars);
        }
        if let Some(plan) = out.identity.as_ref().and_then(|i| i.plan.as_deref()) {
            if !extra.contains(&X_USAGEPLAN_ID) {
                if let Ok(v) = HeaderValue::from_str(plan) {
                    resp.headers_mut().insert(X_USAGEPLAN_ID, v);
                }
            }
        }
    }
    // Preflight answers set their own CORS headers.
    if let (Some(cors), Some(o), false) = (api.and_then(|a| a.cors.as_ref()), origin, out.preflight)
    {
        cors.apply_origin(Some(o), resp.headers_mut());
    }
    let headers = resp.headers_mut();
    extra.move_into(headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
}
