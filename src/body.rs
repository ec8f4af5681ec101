//! The one body type used for requests to and responses from keygate.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

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
