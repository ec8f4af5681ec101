//! Active health checks as configured: `health_check = { path, interval,
//! timeout, healthy, unhealthy }`. `unhealthy` failed probes in a row take a
//! target out of the balancer; `healthy` good ones (2xx or 3xx within
//! `timeout`) bring it back, which also ends a passive ejection. The probing
//! itself is the upstream's (src/upstream/probe.rs).

use crate::config::raw::RawHealthCheck;
use http::uri::PathAndQuery;
use std::time::Duration;

/// A validated health check; part of the upstream's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthSpec {
    pub path: PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

impl HealthSpec {
    /// Checks the raw table; the messages are for `keygate check`.
    pub fn compile(raw: &RawHealthCheck) -> Result<HealthSpec, Vec<String>> {
        let mut e = vec![];
        let path = match PathAndQuery::try_from(raw.path.as_str()) {
            Ok(p) if raw.path.starts_with('/') => Some(p),
            _ => {
                e.push(format!(
                    "health_check.path {:?} must be a path starting with /",
                    raw.path
                ));
                None
            }
        };
        if raw.interval < Duration::from_millis(100) || raw.interval > Duration::from_secs(3600) {
            e.push("health_check.interval must be between 100ms and 1h".into());
        }
        if raw.timeout.is_zero() || raw.timeout > raw.interval {
            e.push("health_check.timeout must be positive and at most the interval".into());
        }
        for (name, n) in [("healthy", raw.healthy), ("unhealthy", raw.unhealthy)] {
            if !(1..=100).contains(&n) {
                e.push(format!("health_check.{name} must be 1-100"));
            }
        }
        match path {
            Some(path) if e.is_empty() => Ok(HealthSpec {
                path,
                interval: raw.interval,
                timeout: raw.timeout,
                healthy: raw.healthy,
                unhealthy: raw.unhealthy,
            }),
            _ => Err(e),
        }
    }
}
