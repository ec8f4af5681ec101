//! Global budget of request bodies buffered before their signature is checked
//! (`[server] max_buffered_bytes`).
//!
//! A semaphore of bytes (counted in KiB units): room is taken before a byte is
//! buffered — the declared `Content-Length` at once, or chunk by chunk for a
//! chunked body — and given back when the buffered body is dropped (after it was
//! forwarded, or when the request fails). When no room is left the request is
//! refused at once (503 with `Retry-After`) instead of waiting: a flood of slow
//! bodies cannot pin more memory than the budget.
//!
//! Large bodies are buffered in their own anonymous memory mapping
//! ([`BodyBuffer`]): its pages go back to the kernel the moment the body is
//! dropped, instead of staying in the allocator's free lists (mimalloc purges
//! lazily, so after a flood of large uploads the process would keep its peak
//! RSS until the next allocation activity on the same threads).

use bytes::{Bytes, BytesMut};
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

/// Bodies at least this large (declared, or the limit of a chunked body) are
/// buffered in a memory mapping of their own.
pub const MAP_THRESHOLD: usize = 128 * 1024;

/// A growing body buffer of fixed capacity: on the heap when small, else in an
/// anonymous mapping whose untouched pages cost no memory.
pub enum BodyBuffer {
    Heap(BytesMut),
    Mapped(Mapped),
}

impl BodyBuffer {
    /// A buffer for up to `capacity` bytes.
    pub fn new(capacity: usize) -> BodyBuffer {
        if capacity >= MAP_THRESHOLD {
            if let Some(m) = Mapped::new(capacity) {
                return BodyBuffer::Mapped(m);
            }
        }
        BodyBuffer::Heap(BytesMut::with_capacity(capacity.min(MAP_THRESHOLD)))
    }

    pub fn len(&self) -> usize {
        match self {
            BodyBuffer::Heap(b) => b.len(),
            BodyBuffer::Mapped(m) => m.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data`; `false` when it does not fit in a mapped buffer's capacity.
    pub fn push(&mut self, data: &[u8]) -> bool {
        match self {
            BodyBuffer::Heap(b) => {
                b.extend_from_slice(data);
                true
            }
            BodyBuffer::Mapped(m) => m.push(data),
        }
    }

    pub fn freeze(self) -> Bytes {
        match self {
            BodyBuffer::Heap(b) => b.freeze(),
            BodyBuffer::Mapped(m) if m.len == 0 => Bytes::new(),
            BodyBuffer::Mapped(m) => Bytes::from_owner(m),
        }
    }
}

/// An anonymous private mapping of `cap` bytes, of which `len` are written.
pub struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: `Mapped` owns its mapping exclusively (like a `Vec<u8>`); it is only
// written through `&mut self` and read through `&self`.
unsafe impl Send for Mapped {}
// SAFETY: shared access is read-only.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(cap: usize) -> Option<Mapped> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>())?;
        Some(Mapped { ptr, cap, len: 0 })
    }

    fn push(&mut self, data: &[u8]) -> bool {
        if data.len() > self.cap - self.len {
            return false;
        }
        // SAFETY: `len + data.len() <= cap`: the destination lies inside the
        // mapping, which cannot overlap `data` (we hold `&mut self`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            );
        }
        self.len += data.len();
        true
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping were written by `push`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference to it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.cap);
        }
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

    #[test]
    fn buffers_small_on_the_heap_large_mapped() {
        let mut small = BodyBuffer::new(100);
        assert!(matches!(small, BodyBuffer::Heap(_)));
        assert!(small.push(b"abc") && small.push(b"def"));
        assert_eq!(&small.freeze()[..], b"abcdef");

        let mut big = BodyBuffer::new(MAP_THRESHOLD * 2);
        assert!(matches!(big, BodyBuffer::Mapped(_)));
        assert!(big.is_empty());
        let chunk = vec![7u8; MAP_THRESHOLD];
        assert!(big.push(&chunk) && big.push(&chunk));
        assert!(!big.push(b"x"), "capacity is a hard limit");
        assert_eq!(big.len(), MAP_THRESHOLD * 2);
        let frozen = big.freeze();
        let copy = frozen.clone();
        drop(frozen);
        assert!(copy.iter().all(|&b| b == 7) && copy.len() == MAP_THRESHOLD * 2);
        assert!(BodyBuffer::new(MAP_THRESHOLD).freeze().is_empty());
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
