//! Choosing the API of an action group (`actions = [..]`, see `route::action`) by
//! the cloud-API action the request names, as each candidate's scheme carries it:
//! `X-TC-Action` for `tc3`, the signed `Action` parameter for `tc1` (query string,
//! or the form body of a POST).
//!
//! Only requests whose path matched an action group come here; every other request
//! keeps the plain path lookup. A v1 POST names its action in the form body, which
//! `tc1` buffers anyway (≤ 1 MiB) to verify the signature: it is read here, once,
//! and handed to authentication as `ReqBody::Buffered`.

use super::buffer::{self, ReqBody};
use crate::auth::dispatch::AuthMode;
use crate::auth::{self, AuthError};
use crate::body::RequestBody;
use crate::budget::BodyBudget;
use crate::gateway::Gateway;
use crate::policy::cors::CorsPolicy;
use crate::reject::Reject;
use crate::route::RouteMatch;
use http::request::Parts;
use http::{header, Method};

/// The API taking the request, and its body (read when a v1 POST's form had to be
/// inspected). `InvalidAction` when the path matched but no API takes the action.
pub(super) async fn choose<B: RequestBody>(
    gw: &Gateway,
    m: &RouteMatch<'_>,
    parts: &Parts,
    route_method: &Method,
    body: ReqBody<B>,
    declared_len: Option<u64>,
    budget: &BodyBudget,
) -> Result<(usize, ReqBody<B>), Reject> {
    // A CORS preflight carries no action: the group's first API allowing the
    // method it asks about answers it with its CORS policy.
    if CorsPolicy::is_preflight(&parts.method, &parts.headers) {
        return Ok((m.first_allowing(route_method), body));
    }
    let has = |pred: fn(&AuthMode) -> bool| {
        m.candidates
            .iter()
            .any(|c| gw.apis.get(c.api).is_some_and(|a| pred(&a.auth)))
    };
    let tc3_action = if has(|a| matches!(a, AuthMode::Tc3 { .. })) {
        parts
            .headers
            .get("x-tc-action")
            .and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let mut body = body;
    let tc1_action = if has(|a| matches!(a, AuthMode::Tc1)) {
        if parts.method == Method::POST {
            if !is_form(parts) {
                None
            } else {
                let (bytes, held) = match body {
                    ReqBody::Buffered(b, h) => (b, h),
                    ReqBody::Stream(incoming) => {
                        if declared_len.is_some_and(|l| l > auth::tc1::POST_LIMIT as u64) {
                            return Err(AuthError::BodyTooLarge.into());
                        }
                        buffer::read_in_time(
                            gw.body_read_timeout,
                            incoming,
                            auth::tc1::POST_LIMIT,
                            declared_len,
                            budget,
                        )
                        .await?
                    }
                };
                let action = action_param(&bytes);
                body = ReqBody::Buffered(bytes, held);
                action
            }
        } else {
            action_param(parts.uri.query().unwrap_or("").as_bytes())
        }
    } else {
        None
    };
    let api = m
        .pick(&parts.method, |api| {
            match gw.apis.get(api).map(|a| &a.auth) {
                Some(AuthMode::Tc3 { .. }) => tc3_action,
                Some(AuthMode::Tc1) => tc1_action.as_deref(),
                _ => None,
            }
        })
        .ok_or_else(|| {
            let named = tc3_action.or(tc1_action.as_deref());
            Reject::InvalidAction(match named {
                Some(a) => format!("no API here takes the action {a:?}"),
                None => {
                    "the request names no action (X-TC-Action header or Action parameter)".into()
                }
            })
        })?;
    if let (ReqBody::Buffered(b, _), Some(a)) = (&body, gw.apis.get(api)) {
        // The chosen API's own limit applies to a body read before it was known.
        if b.len() as u64 > a.max_body {
            return Err(Reject::BodyTooLarge(a.max_body));
        }
        a.metrics.add_bytes_in(b.len() as u64);
    }
    Ok((api, body))
}

fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The decoded `Action` of a form-encoded string (`None` when absent, repeated
/// or not UTF-8: the signature check refuses those requests anyway).
fn action_param(form: &[u8]) -> Option<String> {
    let mut found = None;
    for (name, value) in auth::form_pairs(form) {
        if name == b"Action" {
            if found.is_some() {
                return None;
            }
            found = Some(String::from_utf8(value).ok()?);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::action_param;

    #[test]
    fn action_parameter_is_decoded_and_unique() {
        assert_eq!(
            action_param(b"Nonce=1&Action=Describe%49nstances&X=1").as_deref(),
            Some("DescribeInstances")
        );
        assert_eq!(action_param(b"Nonce=1"), None);
        assert_eq!(action_param(b"Action=A&Action=B"), None);
        assert_eq!(action_param(b"Action=%FF"), None);
    }
}
