//! gRPC answers: their `grpc-status` usually comes in the trailers, after the
//! access line was written; it is logged when it arrives.

use crate::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::task::Poll;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The body of a gRPC answer whose head carries no `grpc-status` is wrapped to
/// log the status from its trailers as a second `keygate::access` line with the
/// same request id; any other body is returned as is.
pub fn log_trailer_status(head: &HeaderMap, body: Body, request_id: Option<HeaderValue>) -> Body {
    if is_grpc(head) && !head.contains_key(GRPC_STATUS) {
        crate::body::inspect(body, move |p| {
            if let Poll::Ready(Some(Ok(frame))) = p {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get(GRPC_STATUS)) {
                    tracing::info!(
                        target: "keygate::access",
                        request_id = request_id
                            .as_ref()
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-"),
                        grpc_status = status.to_str().unwrap_or("-"),
                        "grpc trailers",
                    );
                }
            }
        })
    } else {
        body
    }
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}
