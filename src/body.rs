//! The one body type used for requests to and responses from keygate, and the
//! wrappers a request body passes through on its way to the back end.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The result of polling a [`Body`] for its next frame.
pub type Polled = std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>>;

/// `inner`, with `watch` shown every poll result as it passes (counting bytes,
/// logging trailers, releasing a guard at the end). Whatever `watch` owns is
/// dropped with the body, so a client abort releases it too.
pub fn inspect<F>(inner: Body, watch: F) -> Body
where
    F: FnMut(&Polled) + Send + Unpin + 'static,
{
    Inspect { inner, watch }.boxed_unsync()
}

struct Inspect<F> {
    inner: Body,
    watch: F,
}

impl<F: FnMut(&Polled) + Unpin> http_body::Body for Inspect<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Polled {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        (self.watch)(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body as the handler takes it: hyper's `Incoming` from the
/// listeners; any body of bytes (`Full<Bytes>`) in in-process tests and benches.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// Error a streamed request body yields when reading from the client failed
/// (connection closed, stream reset, broken chunked framing).
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// Marker error a size-limited request body yields when the client sends too much.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyLimitExceeded(pub u64);

/// A streamed request body that fails once it passes the API's limit, so an
/// oversized chunked upload is cut off while streaming (413). `count` is told
/// the size of every data frame that passes (the route's `bytes_in`).
pub struct LimitedBody<B, C = fn(u64)> {
    inner: B,
    remaining: u64,
    limit: u64,
    count: C,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
            count: |_| {},
        }
    }
}

impl<B, C> LimitedBody<B, C> {
    /// The same body, telling `count` the bytes that pass.
    pub fn counted<D: FnMut(u64)>(self, count: D) -> LimitedBody<B, D> {
        LimitedBody {
            inner: self.inner,
            remaining: self.remaining,
            limit: self.limit,
            count,
        }
    }
}

impl<B: RequestBody, C: FnMut(u64) + Unpin> http_body::Body for LimitedBody<B, C> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(self.limit)))));
                    }
                    self.remaining -= n;
                    (self.count)(n);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e.into())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
