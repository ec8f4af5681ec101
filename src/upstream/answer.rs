//! The body of a back end's answer on its way to the client: its first frame
//! perhaps already read, and the connection going back to its pool once the
//! last byte is in.

use super::pool::Lease;
use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct AnswerBody {
    first: Option<Frame<Bytes>>,
    /// The size hint of the whole body, before its first frame was read.
    hint: SizeHint,
    rest: Incoming,
    /// The HTTP/1.1 connection the body comes on, released at the body's end
    /// and closed if the body is dropped before.
    lease: Option<Lease>,
}

impl AnswerBody {
    /// The client's body: `first` (if read) then `rest`.
    pub fn body(
        first: Option<Frame<Bytes>>,
        hint: SizeHint,
        rest: Incoming,
        lease: Option<Lease>,
    ) -> Body {
        let mut b = AnswerBody {
            first,
            hint,
            rest,
            lease,
        };
        b.release_at_end();
        b.boxed_unsync()
    }

    fn release_at_end(&mut self) {
        if self.rest.is_end_stream() {
            if let Some(l) = self.lease.take() {
                l.release();
            }
        }
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        let polled = Pin::new(&mut self.rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.release_at_end(),
            Poll::Ready(None) => {
                if let Some(l) = self.lease.take() {
                    l.release();
                }
            }
            // A broken body leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            Poll::Pending => {}
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            Some(_) => self.hint,
            None => self.rest.size_hint(),
        }
    }
}
