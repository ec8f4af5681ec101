//! Steps 2 and 3: what is settled before anyone is authenticated: a CORS
//! preflight's answer, and the client address's admission.

use super::Outcome;
use crate::body::{empty, Body};
use crate::gateway::Api;
use crate::policy::cors::CorsPolicy;
use crate::reject::Reject;
use http::request::Parts;
use http::Response;
use std::net::IpAddr;

/// Step 2: a CORS preflight is answered here, before authentication, and
/// never forwarded.
pub(super) fn preflight(api: &Api, parts: &Parts, out: &mut Outcome) -> Option<Response<Body>> {
    let cors = api.cors.as_ref()?;
    if !CorsPolicy::is_preflight(&parts.method, &parts.headers) {
        return None;
    }
    let (status, headers) = cors.preflight(&parts.headers);
    out.preflight = true;
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Some(r)
}

/// Step 3: every `ip_control` plugin of the API must allow the client's
/// address; a refusal is in the refusing plugin's `rejected_*` terms.
pub(super) fn check_ip(api: &Api, ip: IpAddr) -> Result<(), Reject> {
    for (name, policy) in &api.ip {
        if !policy.allows(ip) {
            let reject = Reject::IpDenied(name.to_string());
            return Err(match api.refusals.plugins.get(name) {
                Some(r) => r.apply(reject),
                None => reject,
            });
        }
    }
    Ok(())
}
