//! Every way the gateway refuses a request, mapped in one place to a status,
//! a code of the cloud API vocabulary and a body in the API's error style.

use crate::auth::AuthError;
use crate::body::{full, Body};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("no API matches this host, path and method")]
    NoRoute,
    #[error("{0}")]
    Auth(AuthError),
    #[error("client address is not allowed by plugin {0}")]
    IpDenied(String),
    #[error("{message}")]
    RateLimited { message: String, quota: bool },
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    #[error("{0}")]
    BadRequest(String),
    /// A plain request to an HTTPS-only service, or the reverse.
    #[error("{0}")]
    Protocol(&'static str),
    /// A method a websocket API does not take (it takes GET only).
    #[error("this websocket API takes GET only")]
    WebsocketMethod,
    /// A required declared parameter (`[[services.apis.params]]`) is absent.
    #[error("{0}")]
    MissingParameter(String),
    #[error("back end did not answer in time")]
    UpstreamTimeout,
    #[error("back end unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Cluster mode with `on_error = "deny"` while Redis cannot answer.
    #[error("shared rate-limit store unavailable; try again later")]
    ClusterUnavailable,
    /// The path matched APIs chosen by cloud-API action, but none takes this one.
    #[error("{0}")]
    InvalidAction(String),
    /// The client went away before its request was complete; logged as nginx's 499.
    #[error("client closed the request")]
    ClientClosed,
    /// A refusal with the status and/or message its plugin or API configured
    /// (`rejected_code`, `rejected_msg`); code and envelope stay the inner one's.
    #[error("{0}")]
    Custom(Box<CustomReject>),
    /// A `concurrency_control` limit with `over_limit_status = 503`.
    #[error("{0}")]
    Overloaded(String),
}

/// A configured `rejected_code` / `rejected_msg` pair (APISIX naming).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusal {
    pub status: Option<StatusCode>,
    pub message: Option<std::sync::Arc<str>>,
}

impl Refusal {
    /// From the raw settings; `None` when neither is set.
    pub fn new(code: Option<u16>, message: Option<&str>) -> Result<Option<Refusal>, String> {
        let status = match code {
            None => None,
            Some(c) => match StatusCode::from_u16(c) {
                Ok(s) if (200..=599).contains(&c) => Some(s),
                _ => return Err(format!("rejected_code {c} is not an HTTP status 200-599")),
            },
        };
        if message.is_some_and(str::is_empty) {
            return Err("rejected_msg must not be empty (omit it for the default)".into());
        }
        let r = Refusal {
            status,
            message: message.map(Into::into),
        };
        Ok((r != Refusal::default()).then_some(r))
    }

    /// `reject` answered with this status and message.
    pub fn apply(&self, reject: Reject) -> Reject {
        Reject::Custom(Box::new(CustomReject {
            inner: reject,
            refusal: self.clone(),
        }))
    }
}

#[derive(Debug)]
pub struct CustomReject {
    pub inner: Reject,
    pub refusal: Refusal,
}

impl std::fmt::Display for CustomReject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.refusal.message {
            Some(m) => f.write_str(m),
            None => self.inner.fmt(f),
        }
    }
}

/// How an API's gateway-generated errors are written (SPEC §3.5, §3.6).
///
/// `http_status: false` (the default, `cloud_error_status = "200"`) answers the
/// cloud and open-platform styles with HTTP 200, as those platforms do: their
/// clients (the official SDKs) read the error code from a 200 body only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"code","message","request_id"}`
    Json,
    /// `{"Response":{"Error":{"Code","Message"},"RequestId"}}` for tc3 / tc1 APIs.
    Cloud { http_status: bool },
    /// `{"ret","msg"}` for open-platform APIs.
    OpenApi { http_status: bool },
}

impl ErrorStyle {
    /// The status sent on the wire for a refusal whose real status is `real`.
    pub fn wire_status(self, real: StatusCode) -> StatusCode {
        match self {
            ErrorStyle::Cloud { http_status: false }
            | ErrorStyle::OpenApi { http_status: false } => StatusCode::OK,
            _ => real,
        }
    }
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Reject::NoRoute => 404,
            Reject::Auth(e) => e.status(),
            Reject::IpDenied(_) => 403,
            Reject::RateLimited { .. } => 429,
            Reject::BodyTooLarge(_) => 413,
            Reject::BodyTimeout(_) => 408,
            Reject::BadRequest(_) | Reject::MissingParameter(_) => 400,
            Reject::WebsocketMethod => 405,
            Reject::Protocol(_) => 400,
            Reject::UpstreamTimeout => 504,
            Reject::UpstreamUnavailable(_) => 502,
            Reject::Internal(_) => 500,
            Reject::ClusterUnavailable => 503,
            Reject::InvalidAction(_) => 400,
            Reject::ClientClosed => 499,
            Reject::Overloaded(_) => 503,
            Reject::Custom(c) => return c.refusal.status.unwrap_or_else(|| c.inner.status()),
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> &'static str {
        match self {
            Reject::Custom(c) => c.inner.code(),
            Reject::NoRoute => "ResourceNotFound",
            Reject::Auth(e) => e.code(),
            Reject::IpDenied(_) => "UnauthorizedOperation",
            Reject::RateLimited { quota: true, .. } => "LimitExceeded",
            Reject::RateLimited { quota: false, .. }
            | Reject::ClusterUnavailable
            | Reject::Overloaded(_) => "RequestLimitExceeded",
            Reject::BodyTooLarge(_) => "InvalidParameter",
            Reject::InvalidAction(_) => "InvalidAction",
            Reject::BodyTimeout(_) => "RequestTimeout",
            Reject::BadRequest(_) => "InvalidParameter",
            Reject::MissingParameter(_) => "MissingParameter",
            Reject::WebsocketMethod => "InvalidParameterValue.InvalidWSMethod",
            Reject::Protocol(_) => "UnsupportedProtocol",
            Reject::UpstreamTimeout | Reject::UpstreamUnavailable(_) | Reject::Internal(_) => {
                "InternalError"
            }
            Reject::ClientClosed => "ClientClosedRequest",
        }
    }

    /// Metric / log label: which front-end check refused the request.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Custom(c) => c.inner.reason(),
            Reject::NoRoute
            | Reject::InvalidAction(_)
            | Reject::WebsocketMethod
            | Reject::Protocol(_) => "route",
            Reject::Auth(AuthError::NotAllowed) => "auth",
            Reject::Auth(_) => "auth",
            Reject::IpDenied(_) => "ip",
            Reject::RateLimited { .. } | Reject::ClusterUnavailable | Reject::Overloaded(_) => {
                "limit"
            }
            Reject::BodyTooLarge(_)
            | Reject::BodyTimeout(_)
            | Reject::BadRequest(_)
            | Reject::MissingParameter(_) => "request",
            Reject::UpstreamTimeout | Reject::UpstreamUnavailable(_) | Reject::Internal(_) => {
                "backend"
            }
            Reject::ClientClosed => "request",
        }
    }

    fn message(&self, show_debug: bool) -> String {
        match self {
            Reject::Auth(AuthError::BadSignature { debug: Some(s) }) if show_debug => {
                format!("signature mismatch; the server's string to sign was: {s:?}")
            }
            Reject::Custom(c) => match &c.refusal.message {
                Some(m) => m.to_string(),
                None => c.inner.message(show_debug),
            },
            other => other.to_string(),
        }
    }

    pub fn to_response(
        &self,
        style: ErrorStyle,
        request_id: &str,
        show_debug: bool,
    ) -> Response<Body> {
        let message = self.message(show_debug);
        let body = match style {
            ErrorStyle::Json => serde_json::json!({
                "code": self.code(),
                "message": message,
                "request_id": request_id,
            }),
            ErrorStyle::Cloud { .. } => serde_json::json!({
                "Response": {
                    "Error": { "Code": self.code(), "Message": message },
                    "RequestId": request_id,
                }
            }),
            ErrorStyle::OpenApi { .. } => serde_json::json!({
                "ret": self.openapi_ret(),
                "msg": message,
            }),
        };
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = style.wire_status(self.status());
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    /// Non-zero `ret` codes of the open platform (1000002 = bad parameter).
    fn openapi_ret(&self) -> i64 {
        match self {
            Reject::Custom(c) => c.inner.openapi_ret(),
            Reject::Auth(AuthError::Missing(_) | AuthError::Malformed(_)) => 1000002,
            Reject::BadRequest(_) | Reject::MissingParameter(_) | Reject::BodyTooLarge(_) => {
                1000002
            }
            Reject::Auth(_) | Reject::IpDenied(_) => 1000005,
            Reject::RateLimited { .. } | Reject::ClusterUnavailable => 1000030,
            Reject::NoRoute | Reject::InvalidAction(_) => 1000004,
            _ => 1000001,
        }
    }
}

impl From<AuthError> for Reject {
    fn from(e: AuthError) -> Self {
        Reject::Auth(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(r: Reject, style: ErrorStyle) -> (StatusCode, serde_json::Value) {
        let resp = r.to_response(style, "rid", false);
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn cloud_and_openapi_answer_200_unless_http_status_is_asked() {
        let limited = || Reject::RateLimited {
            message: "slow down".into(),
            quota: false,
        };
        let (s, j) = answer(limited(), ErrorStyle::Cloud { http_status: false }).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(j["Response"]["Error"]["Code"], "RequestLimitExceeded");
        assert_eq!(j["Response"]["RequestId"], "rid");
        let (s, _) = answer(limited(), ErrorStyle::Cloud { http_status: true }).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        let (s, j) = answer(limited(), ErrorStyle::OpenApi { http_status: false }).await;
        assert_eq!((s, j["ret"].as_i64()), (StatusCode::OK, Some(1000030)));
        let (s, _) = answer(limited(), ErrorStyle::OpenApi { http_status: true }).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        // The plain JSON style always carries the real status.
        let (s, j) = answer(limited(), ErrorStyle::Json).await;
        assert_eq!(
            (s, j["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("RequestLimitExceeded"))
        );
    }

    #[test]
    fn invalid_action_is_a_route_refusal() {
        let r = Reject::InvalidAction("x".into());
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.code(), "InvalidAction");
        assert_eq!(r.reason(), "route");
    }
}
