//! The request body across tries: a try may be repeated only while no byte of
//! the body was polled, so the body waits in a slot that the first poll
//! empties.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A body's slot, shared by the tries of one request.
pub type Slot = Arc<Mutex<Option<Body>>>;

/// The request body across tries.
pub enum Replay {
    /// No body: every try sends none.
    Empty,
    /// One try only: the body as it is.
    Once(Option<Body>),
    /// Several tries possible: the body waits here until a try first polls it.
    Slot(Slot, SizeHint),
}

impl Replay {
    pub fn new(body: Body, several: bool) -> Replay {
        if body.is_end_stream() {
            Replay::Empty
        } else if several {
            let hint = body.size_hint();
            Replay::Slot(Arc::new(Mutex::new(Some(body))), hint)
        } else {
            Replay::Once(Some(body))
        }
    }

    /// The body for the next try.
    pub fn body(&mut self) -> Body {
        match self {
            Replay::Empty => crate::body::empty(),
            Replay::Once(b) => b.take().unwrap_or_else(crate::body::empty),
            Replay::Slot(slot, hint) => SlotBody {
                slot: slot.clone(),
                hint: *hint,
                inner: None,
            }
            .boxed_unsync(),
        }
    }

    /// May the body be sent again (no byte of it was polled)?
    pub fn untouched(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Once(b) => b.is_some(),
            Replay::Slot(slot, _) => slot_untouched(Some(slot)),
        }
    }

    /// The slot a try checks after the answer's head (`None`: nothing to check).
    pub fn slot(&self) -> Option<&Slot> {
        match self {
            Replay::Slot(slot, _) => Some(slot),
            _ => None,
        }
    }
}

/// Is the body still in its slot (or is there no slot)?
pub fn slot_untouched(slot: Option<&Slot>) -> bool {
    slot.is_none_or(|s| s.lock().map(|s| s.is_some()).unwrap_or(false))
}

/// A request body taken from its [`Replay`] slot on the first poll.
struct SlotBody {
    slot: Slot,
    hint: SizeHint,
    inner: Option<Body>,
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_none() {
            let taken = self.slot.lock().ok().and_then(|mut s| s.take());
            match taken {
                Some(b) => self.inner = Some(b),
                None => {
                    return Poll::Ready(Some(Err("request body already sent".into())));
                }
            }
        }
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}
