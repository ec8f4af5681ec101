//! W3C Trace Context (`traceparent` / `tracestate`) propagated to the back end.
//!
//! keygate is one hop of the trace: a valid incoming `traceparent` keeps its
//! trace id and flags and gets a new parent (span) id, keygate's own; its
//! `tracestate` is passed on unchanged. A request without one, or with a
//! malformed one (or several), gets a new trace id, a new span id and flags
//! `01`; a `tracestate` that came with a malformed `traceparent` is dropped (the
//! specification forbids reading it then).
//!
//! With `[tracing]` configured, the request's exported span ([`span`]) chooses
//! the ids and the sampled flag instead, and leaves them to the forwarding step
//! as a [`Hop`] in the request's extensions, so that the back end sees the span
//! id that the collector receives.

pub mod otlp;
pub mod span;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// keygate's hop of a trace, as lower-case hex: what the back end is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub trace: [u8; 32],
    pub span: [u8; 16],
    pub flags: [u8; 2],
    /// The client's `traceparent` was valid, so its `tracestate` goes on too.
    pub keeps_state: bool,
}

impl Hop {
    /// The next hop of the request's own trace context (no span exported).
    fn next(h: &HeaderMap) -> Hop {
        match incoming(h) {
            Some(p) => Hop {
                trace: p.trace,
                span: random_hex::<16>(8),
                flags: p.flags,
                keeps_state: true,
            },
            None => Hop {
                trace: random_hex::<32>(16),
                span: random_hex::<16>(8),
                flags: *b"01",
                keeps_state: false,
            },
        }
    }
}

/// The client's valid `traceparent`, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace: [u8; 32],
    pub span: [u8; 16],
    pub flags: [u8; 2],
}

/// The request's one valid `traceparent` (none when absent, malformed or repeated).
pub fn incoming(h: &HeaderMap) -> Option<Parent> {
    let mut all = h.get_all(&TRACEPARENT).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => parse(v.as_bytes()),
        _ => None,
    }
}

/// Rewrites the request's trace context for the next hop: `hop` when the
/// exported span chose it, else a new span id on the client's trace (or a new
/// trace). Returns the trace id.
pub fn propagate(h: &mut HeaderMap, hop: Option<&Hop>) -> [u8; 32] {
    let hop = match hop {
        Some(hop) => *hop,
        None => Hop::next(h),
    };
    if !hop.keeps_state {
        h.remove(&TRACESTATE);
    }
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    out.extend_from_slice(&hop.trace);
    out.push(b'-');
    out.extend_from_slice(&hop.span);
    out.push(b'-');
    out.extend_from_slice(&hop.flags);
    // Into the value without a second copy (from_bytes copies).
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(out)) {
        h.insert(TRACEPARENT, v);
    }
    hop.trace
}

/// The fields of a valid `traceparent`. Version `00` must be exactly
/// 55 characters; a later version may carry more fields after a `-`
/// (forward compatibility); `ff` is invalid. Hex is lower-case; an all-zero
/// trace or parent id is invalid.
fn parse(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return None;
    }
    if version == b"00" && v.len() != 55 {
        return None;
    }
    if trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return None;
    }
    let mut p = Parent {
        trace: [0; 32],
        span: [0; 16],
        flags: [flags[0], flags[1]],
    };
    p.trace.copy_from_slice(trace);
    p.span.copy_from_slice(parent);
    Some(p)
}

/// `BYTES` random bytes as `HEX` lower-case hex digits, never all zero.
fn random_hex<const HEX: usize>(bytes: usize) -> [u8; HEX] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; HEX];
    loop {
        // One call for all the bytes: each call reaches the thread's generator.
        let random: [u8; 16] = rand::random();
        let n = bytes.min(HEX / 2).min(random.len());
        for (i, &b) in random[..n].iter().enumerate() {
            out[2 * i] = DIGITS[(b >> 4) as usize];
            out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
        }
        if random[..n].iter().any(|&b| b != 0) {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn run(tp: &[&str], ts: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in tp {
            h.append(TRACEPARENT, HeaderValue::from_str(v).expect("value"));
        }
        if let Some(s) = ts {
            h.insert(TRACESTATE, HeaderValue::from_str(s).expect("value"));
        }
        propagate(&mut h, None);
        h
    }

    fn fields(h: &HeaderMap) -> Vec<String> {
        let v = h[&TRACEPARENT].to_str().expect("ascii");
        assert_eq!(v.len(), 55, "{v}");
        assert!(parse(v.as_bytes()).is_some(), "{v}");
        v.split('-').map(str::to_owned).collect()
    }

    #[test]
    fn valid_parent_keeps_trace_and_state_with_a_new_span() {
        let h = run(&[GOOD], Some("congo=t61rcWkgMzE"));
        let f = fields(&h);
        assert_eq!(f[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(f[2], "00f067aa0ba902b7");
        assert_eq!(f[3], "01");
        assert_eq!(h[&TRACESTATE], "congo=t61rcWkgMzE");
    }

    #[test]
    fn absent_or_malformed_parent_starts_a_new_trace() {
        for bad in [
            vec![],
            vec!["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"],
            vec!["00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
            vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"],
            vec!["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"],
            vec!["garbage"],
            vec![GOOD, GOOD],
        ] {
            let h = run(&bad, Some("a=b"));
            let f = fields(&h);
            assert_ne!(f[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            assert!(h.get(&TRACESTATE).is_none(), "{bad:?}");
        }
        // A later version with extra fields is understood.
        let h = run(
            &["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"],
            None,
        );
        assert_eq!(fields(&h)[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
