//! What an upstream is made of, as the config compiler validates it: its
//! identity (targets, timeouts, TLS, protocol, ejection, health checks) and the
//! retry and `fail_on` policies of the APIs that use it.

use crate::health::HealthSpec;
use std::time::Duration;

/// Everything that identifies an upstream's pool; equal specs share one pool
/// across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub targets: Vec<(String, u32)>,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<String>,
    /// Speak HTTP/2 to the targets (`[services.apis.backend] http2`).
    pub http2: bool,
    /// `fail_on`: what counts toward `max_fails` (transport failures, 5xx answers).
    pub fail_on_connect: bool,
    pub fail_on_5xx: bool,
    /// `health_check`: active probes of every target.
    pub health: Option<HealthSpec>,
}

impl UpstreamSpec {
    pub fn identity(&self) -> String {
        format!("{self:?}")
    }
}

/// Most `retries` a back end may ask for.
pub const MAX_RETRIES: u32 = 10;

/// How a request is tried again on another target (`[services.apis.backend]`
/// `retries`, `retry_on`, `try_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further tries after the first, each on a target not tried yet.
    pub retries: u32,
    pub on_connect: bool,
    /// A 502/503/504 answer (idempotent methods only).
    pub on_5xx: bool,
    /// No answer within `try_timeout` (idempotent methods only).
    pub on_timeout: bool,
    /// Time allowed to one try, within the API's `timeout`.
    pub try_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 1,
            on_connect: true,
            on_5xx: false,
            on_timeout: false,
            try_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// From the backend table; `timeout` is the API's.
    pub fn compile(
        retries: Option<u32>,
        retry_on: Option<&[String]>,
        try_timeout: Option<Duration>,
        timeout: Duration,
    ) -> Result<RetryPolicy, Vec<String>> {
        let mut e = vec![];
        let mut p = RetryPolicy {
            retries: retries.unwrap_or(1),
            try_timeout,
            ..RetryPolicy::default()
        };
        if p.retries > MAX_RETRIES {
            e.push(format!("retries must be 0-{MAX_RETRIES}"));
        }
        if let Some(list) = retry_on {
            p.on_connect = false;
            for r in list {
                match r.as_str() {
                    "connect" => p.on_connect = true,
                    "5xx" => p.on_5xx = true,
                    "timeout" => p.on_timeout = true,
                    other => e.push(format!(
                        "retry_on {other:?} is not one of connect, 5xx, timeout"
                    )),
                }
            }
        }
        if let Some(t) = try_timeout {
            if t.is_zero() || t > timeout {
                e.push("try_timeout must be positive and at most the API's timeout".into());
            }
        }
        if e.is_empty() {
            Ok(p)
        } else {
            Err(e)
        }
    }
}

/// `fail_on = ["connect", "5xx"]`: (transport failures count, 5xx answers count).
pub fn compile_fail_on(list: Option<&[String]>) -> Result<(bool, bool), String> {
    let Some(list) = list else {
        return Ok((true, false));
    };
    let (mut connect, mut server) = (false, false);
    for f in list {
        match f.as_str() {
            "connect" => connect = true,
            "5xx" => server = true,
            other => return Err(format!("fail_on {other:?} is not one of connect, 5xx")),
        }
    }
    Ok((connect, server))
}
