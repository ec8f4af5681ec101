//! Global budget of request bodies buffered before their signature is checked
//! (`[server] max_buffered_bytes`).
//!
//! A semaphore of bytes (counted in KiB units): room is taken before a byte is
//! buffered — the declared `Content-Length` at once, or chunk by chunk for a
//! chunked body — and given back when the buffered body is dropped (after it was
//! forwarded, or when the request fails). When no room is left the request is
//! refused at once (503 with `Retry-After`) instead of waiting: a flood of slow
//! bodies cannot pin more memory than the budget.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Smallest accepted budget.
pub const MIN_BYTES: u64 = 64 * 1024;
/// Largest accepted budget.
pub const MAX_BYTES: u64 = 1 << 40;
/// Default budget.
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

const UNIT: u64 = 1024;

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// The process-wide budget.
#[derive(Debug)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    capacity: u64,
}

impl BodyBudget {
    /// A budget of `bytes` (clamped to [`MIN_BYTES`]..=[`MAX_BYTES`]).
    pub fn new(bytes: u64) -> BodyBudget {
        let capacity = units(bytes.clamp(MIN_BYTES, MAX_BYTES));
        BodyBudget {
            sem: Arc::new(Semaphore::new(capacity as usize)),
            capacity: capacity * UNIT,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes not reserved by any request now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// An empty reservation, grown by [`BodyBudget::reserve`].
    pub fn hold(&self) -> Held {
        Held {
            permit: None,
            units: 0,
        }
    }

    /// Makes `held` cover `total` bytes. `false` (and `held` unchanged) when the
    /// budget has no room for the difference.
    pub fn reserve(&self, held: &mut Held, total: u64) -> bool {
        let want = units(total);
        if want <= held.units {
            return true;
        }
        let more = want - held.units;
        let Ok(n) = u32::try_from(more) else {
            return false;
        };
        let Ok(p) = self.sem.clone().try_acquire_many_owned(n) else {
            return false;
        };
        match &mut held.permit {
            Some(h) => h.merge(p),
            None => held.permit = Some(p),
        }
        held.units = want;
        true
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(DEFAULT_BYTES)
    }
}

/// Room taken from the budget; given back on drop.
#[derive(Debug)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    units: u64,
}

impl Held {
    /// Bytes this reservation covers.
    pub fn bytes(&self) -> u64 {
        self.units * UNIT
    }
}

/// A buffered request body that keeps its budget reservation until it is
/// dropped (sent to the back end, or abandoned).
pub struct HeldBody {
    data: Option<Bytes>,
    _held: Held,
}

impl HeldBody {
    pub fn new(data: Bytes, held: Held) -> HeldBody {
        HeldBody {
            data: (!data.is_empty()).then_some(data),
            _held: held,
        }
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_grows_and_release_on_drop() {
        let b = BodyBudget::new(100 * 1024);
        assert_eq!(b.capacity(), 100 * 1024);
        let mut h = b.hold();
        assert!(b.reserve(&mut h, 10));
        assert_eq!(h.bytes(), 1024);
        assert!(b.reserve(&mut h, 1024));
        assert_eq!(b.available(), 99 * 1024);
        assert!(b.reserve(&mut h, 60 * 1024));
        let mut h2 = b.hold();
        assert!(!b.reserve(&mut h2, 41 * 1024), "over the budget");
        assert_eq!(h2.bytes(), 0);
        assert!(b.reserve(&mut h2, 40 * 1024));
        assert_eq!(b.available(), 0);
        let body = HeldBody::new(Bytes::from_static(b"x"), h);
        drop(body);
        assert_eq!(b.available(), 60 * 1024);
        drop(h2);
        assert_eq!(b.available(), 100 * 1024);
    }

    #[test]
    fn clamped_and_huge_requests_refused() {
        let b = BodyBudget::new(1);
        assert_eq!(b.capacity(), MIN_BYTES);
        let mut h = b.hold();
        assert!(!b.reserve(&mut h, u64::MAX));
        assert!(b.reserve(&mut h, MIN_BYTES));
    }

    #[tokio::test]
    async fn held_body_yields_its_bytes_once() {
        use http_body_util::BodyExt;
        let b = BodyBudget::new(MIN_BYTES);
        let mut h = b.hold();
        assert!(b.reserve(&mut h, 5));
        let body = HeldBody::new(Bytes::from_static(b"hello"), h);
        assert_eq!(body.size_hint().exact(), Some(5));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        assert_eq!(b.available(), MIN_BYTES);
    }
}
