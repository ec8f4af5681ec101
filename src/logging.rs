//! Process logging: the application log and the access log (`keygate::access`
//! target, one line per request), text or JSON, both written by a background
//! thread so that a slow terminal, pipe or disk never stalls request handling.
//!
//! The writers are lossy: when the sink falls more than [`BUFFERED_LINES`]
//! behind, new lines are dropped (and counted, see [`dropped_lines`]) rather
//! than blocking a runtime worker. A proxy that hangs because its log pipe is
//! full is worse than a gap in the log, and the gap is visible in `/metrics`.
//!
//! Access lines from the request handler skip `tracing` altogether: they are
//! formatted by hand into per-worker buffers and written in batches (see
//! [`access`]). Other `keygate::access` events still go through tracing and
//! join the same buffers.
//!
//! Text lines carry ANSI colour only when stderr is a terminal and `NO_COLOR`
//! is not set; the `access_file` never does.

pub mod access;

use crate::config::raw::RawLog;
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Lines held in memory per writer before dropping. The queue's slots are
/// allocated and touched up front (about 32 bytes each), so this is resident
/// memory whether or not anything is logged.
pub const BUFFERED_LINES: usize = 8 * 1024;

/// The tracing target of access-log lines.
pub const ACCESS_TARGET: &str = "keygate::access";

static COUNTERS: OnceLock<Vec<ErrorCounter>> = OnceLock::new();

/// Log lines dropped because a writer was too far behind (all writers).
pub fn dropped_lines() -> u64 {
    COUNTERS
        .get()
        .map(|c| c.iter().map(|c| c.dropped_lines() as u64).sum())
        .unwrap_or(0)
        + access::dropped()
}

/// Keeps the background writers alive; dropping it flushes what is buffered.
pub struct LogGuard {
    // Dropped first: the access writer flushes before the tracing writers.
    _access: Option<access::AccessGuard>,
    _guards: Vec<WorkerGuard>,
}

/// Install the global subscriber. `base` resolves a relative `access_file`.
/// Fails only when the access log file cannot be opened.
pub fn init(cfg: &RawLog, base: &Path) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = cfg.format == "json";
    let mut guards = Vec::new();
    let mut counters = Vec::new();

    let (app_writer, g) = builder().finish(std::io::stderr());
    counters.push(app_writer.error_counter());
    guards.push(g);

    let stderr_colour = colour(std::io::stderr().is_terminal(), no_color());
    // Access lines go to their own file when configured, else to stderr with
    // the rest; colour only on a terminal, never in a file.
    let access_sink = match &cfg.access_file {
        Some(p) => {
            let path = base.join(p);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("access log {}: {e}", path.display()))?;
            access::Sink::File(file)
        }
        None => access::Sink::Stderr,
    };
    let access_colour = cfg.access_file.is_none() && stderr_colour;
    let access_guard = access::start(access_sink, json, access_colour);
    let _ = COUNTERS.set(counters);

    let is_access = |m: &tracing::Metadata<'_>| m.target() == ACCESS_TARGET;
    let app = tracing_subscriber::fmt::layer()
        .with_ansi(stderr_colour)
        .with_writer(app_writer);
    let access = tracing_subscriber::fmt::layer()
        .with_ansi(access_colour)
        .with_writer(access::AccessWriter);
    let (app, access) = if json {
        (
            app.json().boxed(),
            access.json().with_current_span(false).boxed(),
        )
    } else {
        (app.boxed(), access.boxed())
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(app.with_filter(filter_fn(move |m| !is_access(m))))
        .with(access.with_filter(filter_fn(is_access)));
    // A second init (tests calling this twice) keeps the first subscriber.
    let _ = registry.try_init();
    // The level filter (`level`, `RUST_LOG`) decides once whether the hand-made
    // access lines are written, as it decided for the tracing events.
    access::set_enabled(tracing::enabled!(
        target: "keygate::access",
        tracing::Level::INFO
    ));
    Ok(LogGuard {
        _access: access_guard,
        _guards: guards,
    })
}

/// `NO_COLOR` set to anything but the empty string (https://no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// ANSI colour in text logs only on a terminal, and never under `NO_COLOR`:
/// a file, a pipe or journald get plain text.
pub fn colour(is_terminal: bool, no_color: bool) -> bool {
    is_terminal && !no_color
}

fn builder() -> NonBlockingBuilder {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("keygate-log")
}
