//! gRPC answers: their `grpc-status` usually comes in the trailers, after the
//! access line was written; it is logged when it arrives.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The body of a gRPC answer whose head carries no `grpc-status` is wrapped to
/// log the status from its trailers; any other body is returned as is.
pub fn log_trailer_status(head: &HeaderMap, body: Body, request_id: Option<HeaderValue>) -> Body {
    if is_grpc(head) && !head.contains_key(GRPC_STATUS) {
        GrpcStatusLog::wrap(body, request_id)
    } else {
        body
    }
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

/// A gRPC response body whose `grpc-status` trailer, arriving after the access
/// line was written, is logged as a second `keygate::access` line with the same
/// request id (a trailers-only answer has it in the access line itself).
struct GrpcStatusLog {
    inner: Body,
    request_id: Option<HeaderValue>,
}

impl GrpcStatusLog {
    fn wrap(inner: Body, request_id: Option<HeaderValue>) -> Body {
        GrpcStatusLog { inner, request_id }.boxed_unsync()
    }
}

impl http_body::Body for GrpcStatusLog {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(status) = frame.trailers_ref().and_then(|t| t.get(GRPC_STATUS)) {
                tracing::info!(
                    target: "keygate::access",
                    request_id = self
                        .request_id
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                    grpc_status = status.to_str().unwrap_or("-"),
                    "grpc trailers",
                );
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
