//! The access log's hot path: one line per request, formatted by hand (fixed
//! parts preformatted, integers with `itoa`, no `fmt` machinery) straight into
//! a buffer owned by the calling worker thread, and written in batches by one
//! writer thread, which wakes every [`FLUSH_INTERVAL`] or when a buffer passes
//! [`HIGH_WATER`] — never once per line.
//!
//! The lines are the ones the tracing-subscriber formatter wrote before (same
//! fields, same order, same text and JSON shapes, `target` `keygate::access`),
//! so readers of the log see no difference. Lines logged through `tracing` on
//! the `keygate::access` target elsewhere (gRPC trailers, abandoned requests)
//! go through [`AccessWriter`] into the same buffers and file.
//!
//! Nothing is lost unless the sink stalls: a worker's buffer holds up to
//! [`MAX_BUFFER`] bytes; past that, new lines are dropped and counted
//! ([`dropped`], part of the dropped-lines metric), so a stuck disk never
//! blocks a request.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a line may wait in a worker's buffer when traffic is light.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A buffer this full wakes the writer at once.
pub const HIGH_WATER: usize = 64 * 1024;
/// Bytes a worker may hold unwritten before new lines are dropped (about
/// 8k lines of 250 bytes, as the tracing writer's queue held).
pub const MAX_BUFFER: usize = 2 * 1024 * 1024;

type Buffer = Arc<Mutex<Vec<u8>>>;

/// Where the lines go.
pub enum Sink {
    Stderr,
    File(std::fs::File),
}

struct Shared {
    json: bool,
    colour: bool,
    /// The level filter lets `keygate::access` INFO lines through.
    enabled: AtomicBool,
    buffers: Mutex<Vec<Buffer>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    writer: Thread,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

thread_local! {
    static LOCAL: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// Stops the writer thread, flushing what is buffered, when dropped.
pub struct AccessGuard {
    thread: Option<JoinHandle<()>>,
}

impl Drop for AccessGuard {
    fn drop(&mut self) {
        if let Some(s) = SHARED.get() {
            s.stop.store(true, Ordering::Release);
            s.writer.unpark();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the writer. `None` when a sink was already installed (a second
/// `logging::init` in one process keeps the first, as the subscriber does).
pub fn start(sink: Sink, json: bool, colour: bool) -> Option<AccessGuard> {
    if SHARED.get().is_some() {
        return None;
    }
    let thread = std::thread::Builder::new()
        .name("keygate-access".into())
        .spawn(move || {
            // Wait until `SHARED` is set by the spawning thread.
            let shared = loop {
                match SHARED.get() {
                    Some(s) => break s,
                    None => std::thread::park_timeout(Duration::from_millis(1)),
                }
            };
            writer_loop(shared, sink);
        })
        .ok()?;
    let shared = Shared {
        json,
        colour,
        enabled: AtomicBool::new(true),
        buffers: Mutex::new(Vec::new()),
        dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        writer: thread.thread().clone(),
    };
    if SHARED.set(shared).is_err() {
        return None;
    }
    thread.thread().unpark();
    Some(AccessGuard {
        thread: Some(thread),
    })
}

/// Whether the level filter lets access lines through (checked once at start).
pub fn set_enabled(on: bool) {
    if let Some(s) = SHARED.get() {
        s.enabled.store(on, Ordering::Relaxed);
    }
}

/// Whether access lines are written at all: a sink is installed and the level
/// filter admits them. Without it the handler skips even the copies.
#[inline]
pub fn enabled() -> bool {
    SHARED
        .get()
        .is_some_and(|s| s.enabled.load(Ordering::Relaxed))
}

/// Access lines dropped because a worker's buffer was full.
pub fn dropped() -> u64 {
    SHARED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

fn writer_loop(shared: &Shared, mut sink: Sink) {
    let mut spare: Vec<u8> = Vec::with_capacity(HIGH_WATER);
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            std::thread::park_timeout(FLUSH_INTERVAL);
        }
        let list: Vec<Buffer> = match shared.buffers.lock() {
            Ok(l) => l.clone(),
            Err(_) => return,
        };
        for b in &list {
            if let Ok(mut g) = b.lock() {
                if g.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *g, &mut spare);
            }
            let res = match &mut sink {
                Sink::Stderr => std::io::stderr().lock().write_all(&spare),
                Sink::File(f) => f.write_all(&spare),
            };
            if res.is_err() {
                let lines = spare.iter().filter(|&&c| c == b'\n').count() as u64;
                shared.dropped.fetch_add(lines, Ordering::Relaxed);
            }
            spare.clear();
            if spare.capacity() > 4 * HIGH_WATER {
                spare = Vec::with_capacity(HIGH_WATER);
            }
        }
        drop(list);
        // Buffers of threads that have exited (only the list holds them) go.
        if let Ok(mut l) = shared.buffers.lock() {
            l.retain(|b| Arc::strong_count(b) > 1 || b.lock().is_ok_and(|g| !g.is_empty()));
        }
        if stopping {
            return;
        }
    }
}

/// Append to this thread's buffer: `f` formats into it. Drops (and counts)
/// the line when the buffer is full, wakes the writer past [`HIGH_WATER`].
fn append(shared: &Shared, f: impl FnOnce(&mut Vec<u8>)) {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let buf = local.get_or_insert_with(|| {
            let b: Buffer = Arc::new(Mutex::new(Vec::with_capacity(HIGH_WATER)));
            if let Ok(mut l) = shared.buffers.lock() {
                l.push(b.clone());
            }
            b
        });
        let Ok(mut g) = buf.lock() else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let before = g.len();
        if before >= MAX_BUFFER {
            drop(g);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.writer.unpark();
            return;
        }
        f(&mut g);
        if g.len() >= HIGH_WATER && before < HIGH_WATER {
            drop(g);
            shared.writer.unpark();
        }
    });
}

/// One request's access line.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub key_id: &'a str,
    pub status: u16,
    pub upstream_status: u16,
    pub grpc_status: &'a str,
    pub error_code: &'a str,
    pub bytes_out: u64,
    pub latency_us: u64,
}

/// Log one line (no-op when no sink is installed).
pub fn log(line: &Line<'_>) {
    let Some(shared) = SHARED.get() else {
        return;
    };
    if !shared.enabled.load(Ordering::Relaxed) {
        return;
    }
    let now = SystemTime::now();
    append(shared, |buf| {
        if shared.json {
            json_line(buf, now, line)
        } else {
            text_line(buf, now, line, shared.colour)
        }
    });
}

/// The line as tracing-subscriber's JSON formatter wrote it.
pub fn json_line(buf: &mut Vec<u8>, now: SystemTime, l: &Line<'_>) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(buf, now);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":");
    json_str(buf, l.request_id);
    buf.extend_from_slice(b",\"client_ip\":\"");
    ip(buf, l.client_ip);
    buf.extend_from_slice(b"\",\"host\":");
    json_str(buf, l.host);
    buf.extend_from_slice(b",\"method\":");
    json_str(buf, l.method);
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, l.path);
    buf.extend_from_slice(b",\"route\":");
    json_str(buf, l.route);
    buf.extend_from_slice(b",\"key_id\":");
    json_str(buf, l.key_id);
    buf.extend_from_slice(b",\"status\":");
    int(buf, l.status);
    buf.extend_from_slice(b",\"upstream_status\":");
    int(buf, l.upstream_status);
    buf.extend_from_slice(b",\"grpc_status\":");
    json_str(buf, l.grpc_status);
    buf.extend_from_slice(b",\"error_code\":");
    json_str(buf, l.error_code);
    buf.extend_from_slice(b",\"bytes_out\":");
    int(buf, l.bytes_out);
    buf.extend_from_slice(b",\"latency_us\":");
    int(buf, l.latency_us);
    buf.extend_from_slice(b"},\"target\":\"keygate::access\"}\n");
}

/// The line as tracing-subscriber's default text formatter wrote it: values
/// logged with `%` bare, string fields quoted. Colour (dim timestamp, green
/// level) only when asked, which is only ever for a terminal.
pub fn text_line(buf: &mut Vec<u8>, now: SystemTime, l: &Line<'_>, colour: bool) {
    if colour {
        buf.extend_from_slice(b"\x1b[2m");
        timestamp(buf, now);
        buf.extend_from_slice(
            b"\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mkeygate::access\x1b[0m\x1b[2m:\x1b[0m ",
        );
    } else {
        timestamp(buf, now);
        buf.extend_from_slice(b"  INFO keygate::access: ");
    }
    buf.extend_from_slice(b"request_id=");
    buf.extend_from_slice(l.request_id.as_bytes());
    buf.extend_from_slice(b" client_ip=");
    ip(buf, l.client_ip);
    buf.extend_from_slice(b" host=");
    debug_str(buf, l.host);
    buf.extend_from_slice(b" method=");
    buf.extend_from_slice(l.method.as_bytes());
    buf.extend_from_slice(b" path=");
    buf.extend_from_slice(l.path.as_bytes());
    buf.extend_from_slice(b" route=");
    debug_str(buf, l.route);
    buf.extend_from_slice(b" key_id=");
    debug_str(buf, l.key_id);
    buf.extend_from_slice(b" status=");
    int(buf, l.status);
    buf.extend_from_slice(b" upstream_status=");
    int(buf, l.upstream_status);
    buf.extend_from_slice(b" grpc_status=");
    debug_str(buf, l.grpc_status);
    buf.extend_from_slice(b" error_code=");
    debug_str(buf, l.error_code);
    buf.extend_from_slice(b" bytes_out=");
    int(buf, l.bytes_out);
    buf.extend_from_slice(b" latency_us=");
    int(buf, l.latency_us);
    buf.push(b'\n');
}

fn int(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string literal (serde_json's escaping).
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// A quoted string as `Debug` writes it, for the text format.
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\');
    if plain {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// An address as its `Display` writes it, without the formatting machinery
/// for IPv4 (the common case; `Display` costs about 1,300 instructions).
pub(crate) fn ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                int(buf, *o);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's `SystemTime`
/// timer writes it: `2026-11-23T12:00:00.123456Z`.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out[0..4], y.max(0) as u64);
    put(&mut out[5..7], m as u64);
    put(&mut out[8..10], day as u64);
    put(&mut out[11..13], sod / 3600);
    put(&mut out[14..16], sod / 60 % 60);
    put(&mut out[17..19], sod % 60);
    put(&mut out[20..26], d.subsec_micros() as u64);
    buf.extend_from_slice(&out);
}

/// Zero-padded decimal into a fixed-width slot.
fn put(slot: &mut [u8], mut n: u64) {
    for c in slot.iter_mut().rev() {
        *c = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A `MakeWriter` for the tracing access layer: other `keygate::access`
/// lines (formatted by tracing-subscriber, one `write` per line) join the
/// same per-worker buffers and sink.
#[derive(Clone, Copy, Default)]
pub struct AccessWriter;

impl std::io::Write for AccessWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(shared) = SHARED.get() {
            append(shared, |buf| buf.extend_from_slice(data));
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AccessWriter {
    type Writer = AccessWriter;
    fn make_writer(&'a self) -> Self::Writer {
        AccessWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Line<'static> {
        Line {
            request_id: "req-1",
            client_ip: "203.0.113.7".parse().expect("ip"),
            host: "api.example.com",
            method: "GET",
            path: "/v1/orders",
            route: "shop/orders",
            key_id: "AKID\"x",
            status: 200,
            upstream_status: 200,
            grpc_status: "-",
            error_code: "-",
            bytes_out: 512,
            latency_us: 840,
        }
    }

    #[test]
    fn timestamp_is_rfc3339_micros() {
        let t = UNIX_EPOCH + Duration::new(1_795_435_200, 123_456_000);
        let mut b = Vec::new();
        timestamp(&mut b, t);
        assert_eq!(b, b"2026-11-23T12:00:00.123456Z");
        let mut b = Vec::new();
        timestamp(&mut b, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(b, b"2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn json_line_parses_with_every_field() {
        let mut b = Vec::new();
        json_line(&mut b, SystemTime::now(), &sample());
        assert_eq!(b.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["target"], "keygate::access");
        assert_eq!(v["level"], "INFO");
        let f = &v["fields"];
        assert_eq!(f["client_ip"], "203.0.113.7");
        assert_eq!(f["key_id"], "AKID\"x");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes_out"], 512);
        assert_eq!(f["latency_us"], 840);
        assert_eq!(f["grpc_status"], "-");
        assert_eq!(f.as_object().map(|o| o.len()), Some(13));
    }

    #[test]
    fn text_line_matches_the_tracing_shape_without_colour() {
        let mut b = Vec::new();
        text_line(&mut b, UNIX_EPOCH, &sample(), false);
        let s = String::from_utf8(b).expect("utf8");
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000000Z  INFO keygate::access: request_id=req-1 \
             client_ip=203.0.113.7 host=\"api.example.com\" method=GET path=/v1/orders \
             route=\"shop/orders\" key_id=\"AKID\\\"x\" status=200 upstream_status=200 \
             grpc_status=\"-\" error_code=\"-\" bytes_out=512 latency_us=840\n"
        );
        assert!(!s.contains('\u{1b}'));
    }

    #[test]
    fn json_escapes_control_characters() {
        let mut b = Vec::new();
        json_str(&mut b, "a\u{1}b\\\n");
        assert_eq!(b, b"\"a\\u0001b\\\\\\n\"");
    }
}
