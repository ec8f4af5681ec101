//! Upper bounds on every count the config controls and lower bounds on its
//! durations. An unbounded count lets one line of config exhaust threads or
//! memory (`workers = 100000` starts thousands of threads and never listens);
//! a duration below a millisecond is a typo, not a setting. Checked by
//! `compile`, so `keygate check`, start and reload all refuse the same files.

use super::error::ConfigError;
use super::raw::{RawBackend, RawConfig};
use std::time::Duration;

/// Most worker threads (`[server] workers`): far above any core count keygate
/// is deployed on, far below what exhausts a host's threads.
pub const MAX_WORKERS: usize = 1024;
/// Most request headers (`[server] max_headers`).
pub const MAX_HEADERS: usize = 10_000;
/// Largest request head (`[server] max_header_bytes`): a buffer per connection.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Largest request body (`max_body_bytes`): some schemes buffer it whole.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Most live entries of the replay cache (`[auth] replay_capacity`), about
/// 100 bytes each.
pub const MAX_REPLAY_CAPACITY: usize = 10_000_000;
/// Most targets of one back end.
pub const MAX_TARGETS: usize = 256;
/// Most special apps, and most special IPs, of one `traffic_control` plugin
/// (SPEC §1).
pub const MAX_SPECIAL: usize = 30;
/// Most strategies of one `param_traffic_control` plugin (SPEC §1).
pub const MAX_STRATEGIES: usize = 10;
/// Highest `strategy_weight` (SPEC §1: unique weights 0-100).
pub const MAX_WEIGHT: u32 = 100;

/// The smallest duration any setting accepts.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn push(e: &mut Vec<ConfigError>, at: &str, message: String) {
    e.push(ConfigError {
        location: at.to_string(),
        message,
    });
}

fn count<T: PartialOrd + std::fmt::Display>(
    e: &mut Vec<ConfigError>,
    at: &str,
    field: &str,
    v: T,
    max: T,
) {
    if v > max {
        push(e, at, format!("{field} = {v} is over the maximum of {max}"));
    }
}

/// `min ≤ d ≤ max`; `min` is zero for settings where zero means "none".
fn duration(
    e: &mut Vec<ConfigError>,
    at: &str,
    field: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) {
    if d < min || d > max {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        push(
            e,
            at,
            format!(
                "{field} = {} is not between {} and {}",
                fmt(d),
                if min.is_zero() { "0".into() } else { fmt(min) },
                fmt(max)
            ),
        );
    }
}

/// Every bound of the file; each problem with its location.
pub fn check(raw: &RawConfig) -> Vec<ConfigError> {
    let mut e = vec![];
    let s = &raw.server;
    count(&mut e, "server", "workers", s.workers, MAX_WORKERS);
    count(&mut e, "server", "max_headers", s.max_headers, MAX_HEADERS);
    count(
        &mut e,
        "server",
        "max_header_bytes",
        s.max_header_bytes,
        MAX_HEADER_BYTES,
    );
    count(
        &mut e,
        "server",
        "max_body_bytes",
        s.max_body_bytes,
        MAX_BODY_BYTES,
    );
    duration(
        &mut e,
        "server",
        "header_read_timeout",
        s.header_read_timeout,
        MIN_DURATION,
        HOUR,
    );
    duration(
        &mut e,
        "server",
        "body_read_timeout",
        s.body_read_timeout,
        MIN_DURATION,
        HOUR,
    );
    duration(
        &mut e,
        "server",
        "shutdown_timeout",
        s.shutdown_timeout,
        Duration::ZERO,
        HOUR,
    );

    let a = &raw.auth;
    count(
        &mut e,
        "auth",
        "replay_capacity",
        a.replay_capacity,
        MAX_REPLAY_CAPACITY,
    );
    duration(
        &mut e,
        "auth.hmac",
        "max_skew",
        a.hmac.max_skew,
        Duration::from_secs(1),
        DAY,
    );
    duration(
        &mut e,
        "auth.tc3",
        "max_skew",
        a.tc3.max_skew,
        Duration::from_secs(1),
        DAY,
    );
    duration(
        &mut e,
        "auth.tc1",
        "max_skew",
        a.tc1.max_skew,
        Duration::from_secs(1),
        DAY,
    );
    duration(
        &mut e,
        "auth.jwt",
        "leeway",
        a.jwt.leeway,
        Duration::ZERO,
        DAY,
    );

    for svc in &raw.services {
        for api in &svc.apis {
            let at = format!("services ({}) / apis ({})", svc.name, api.name);
            if let Some(m) = api.max_body_bytes {
                count(&mut e, &at, "max_body_bytes", m, MAX_BODY_BYTES);
            }
            backend(&mut e, &format!("{at} / backend"), &api.backend);
        }
    }
    e
}

/// The back end's `timeout` (1 ms to 30 s, 30 min for websocket) is checked
/// where its default is chosen; here the other durations and the counts.
fn backend(e: &mut Vec<ConfigError>, at: &str, b: &RawBackend) {
    if let Some(t) = b.connect_timeout {
        duration(
            e,
            at,
            "connect_timeout",
            t,
            MIN_DURATION,
            Duration::from_secs(60),
        );
    }
    duration(e, at, "fail_timeout", b.fail_timeout, MIN_DURATION, HOUR);
    count(
        e,
        at,
        "targets",
        b.urls.len() + b.targets.len(),
        MAX_TARGETS,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::parse;

    fn problems(toml: &str) -> Vec<String> {
        let raw = parse(toml).expect("parses");
        check(&raw).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_are_within_bounds() {
        assert!(problems("").is_empty());
    }

    #[test]
    fn counts_and_durations_out_of_bounds_are_named() {
        let p = problems(
            "[server]\nworkers = 100000\nmax_headers = 1000000\nheader_read_timeout = \"1ns\"\n\
             [auth]\nreplay_capacity = 1000000000\n\
             [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
             [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"1ns\"\nconnect_timeout = \"500us\"\n",
        );
        for want in [
            "server: workers = 100000 is over the maximum of 1024",
            "server: max_headers = 1000000 is over the maximum of 10000",
            "server: header_read_timeout = 1ns is not between 1ms and 1h",
            "auth: replay_capacity = 1000000000 is over the maximum of 10000000",
            "services (s) / apis (a) / backend: connect_timeout = 500us is not between 1ms and 1m",
        ] {
            assert!(p.iter().any(|m| m == want), "{want:?} missing in {p:#?}");
        }
        assert_eq!(p.len(), 5, "{p:#?}");
    }
}
