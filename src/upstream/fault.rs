//! Telling the client's faults from the back end's: the request body on its
//! way out is watched, and the first error of the client's side (an abort,
//! broken framing, too many bytes) decides the answer, never a 502.

use crate::body::{Body, BoxError};
use crate::reject::Reject;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// What went wrong on the client's side of a request body.
#[derive(Debug, Clone, Copy)]
pub enum ClientFault {
    /// More than the API's body limit.
    TooLarge(u64),
    /// Broken framing (chunked encoding and the like).
    Framing,
    /// The client went away (connection closed, stream reset).
    Closed,
}

impl ClientFault {
    pub fn of(e: &(dyn std::error::Error + 'static)) -> ClientFault {
        if let Some(limit) = body_limit_error(e) {
            return ClientFault::TooLarge(limit);
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) {
                    return ClientFault::Framing;
                }
            }
            if let Some(h) = err.downcast_ref::<hyper::Error>() {
                if h.is_parse() {
                    return ClientFault::Framing;
                }
            }
            cur = err.source();
        }
        ClientFault::Closed
    }

    pub fn reject(self) -> Reject {
        match self {
            ClientFault::TooLarge(n) => Reject::BodyTooLarge(n),
            ClientFault::Framing => Reject::BadRequest("malformed request body framing".into()),
            ClientFault::Closed => Reject::ClientClosed,
        }
    }
}

/// The request body on its way to the back end, remembering the first error
/// the client's side produced: the connection's error that follows says
/// little (an HTTP/2 back end only sees a reset stream).
pub struct WatchedBody {
    pub inner: Body,
    pub watch: Arc<BodyWatch>,
}

#[derive(Default)]
pub struct BodyWatch {
    /// The first error of the client's side.
    pub fault: OnceLock<ClientFault>,
    /// The back end asked for more body and the client has not sent it yet.
    pub waiting_on_client: AtomicBool,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.watch
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.watch.fault.set(ClientFault::of(&**e));
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

// The request body's errors are defined with the body wrapper that yields them.
pub use crate::body::{BodyLimitExceeded, ClientBodyError};

/// The limit a body exceeded, when that is what `e` (or its source) says.
pub fn body_limit_error(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyLimitExceeded>() {
            return Some(b.0);
        }
        cur = err.source();
    }
    None
}
