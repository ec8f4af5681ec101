//! `[cluster]`: counters shared through Redis.

use super::de_duration;
use crate::config::choice::{Choice, Closed};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// One server: `redis://` or `rediss://` (TLS). Exactly one of `redis`,
    /// `sentinels`, `nodes` (see `config/cluster.rs`).
    #[serde(default)]
    pub redis: Option<String>,
    /// Redis Sentinel: `host:port` of the sentinels, with `master_name`.
    #[serde(default)]
    pub sentinels: Vec<String>,
    #[serde(default)]
    pub master_name: Option<String>,
    /// Redis Cluster: `host:port` (or `redis[s]://` URLs) of some nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// TLS to `host:port` nodes and to the primaries found through Sentinel.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA that TLS servers are checked against instead of the webpki roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Password of the Sentinel primaries and Cluster nodes (`${ENV}` expanded).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_on_error")]
    pub on_error: Choice<OnError>,
    #[serde(default = "default_redis_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Make per-second QPS limits cluster-wide too (default: local per instance).
    #[serde(default)]
    pub shared_qps: bool,
    /// Prefix of every Redis key (several deployments may share one Redis).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
}

/// `[cluster] on_error`: what a request is decided by when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// This instance's own counters and replay cache.
    Local,
    /// Admitted, uncounted.
    Allow,
    /// Refused (503).
    Deny,
}
impl Closed for OnError {}

fn default_redis_prefix() -> String {
    "keygate".into()
}
fn default_on_error() -> Choice<OnError> {
    Choice::parse("local")
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}
