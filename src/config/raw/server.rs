//! `[server]`, `[server.tls]` and `[log]`.

use super::{de_duration, default_true};
use crate::config::choice::{Choice, Closed};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    #[serde(default = "default_admin")]
    pub admin: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest total size of the request head (line + headers); over it: 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    #[serde(default = "default_header_timeout", deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    /// Longest wait for a request body the gateway must read whole (signature
    /// schemes that hash it); over it: 408. Streamed bodies are bounded by the
    /// API's back-end timeout instead.
    #[serde(default = "default_body_timeout", deserialize_with = "de_duration")]
    pub body_read_timeout: Duration,
    #[serde(default = "default_drain_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Global budget of request bodies buffered for signature checks (all
    /// connections together); when exhausted: 503 with Retry-After. Read at start.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_bytes: u64,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Worker threads of the runtime; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// `per-core` (default): `workers` threads, each with its own
    /// single-threaded runtime, its own SO_REUSEPORT listening sockets and its
    /// own upstream connection pools. `multi`: one work-stealing runtime of
    /// `workers` threads.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Watch the config file and reload on change.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Make request paths canonical (see `path.rs`); Envoy's `normalize_path`.
    #[serde(default = "default_true")]
    pub normalize_path: bool,
    /// Merge runs of `/` in request paths; Envoy's `merge_slashes`.
    #[serde(default)]
    pub merge_slashes: bool,
    /// What to do with `%2F` / `%5C` in a path: reject | keep | unescape.
    #[serde(default)]
    pub path_with_escaped_slashes_action: crate::path::EscapedSlashes,
    pub tls: Option<RawTls>,
}

/// How the proxy's threads are organised (`[server] runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    Multi,
    #[default]
    PerCore,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            admin: default_admin(),
            trusted_proxies: vec![],
            max_body_bytes: default_max_body(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            header_read_timeout: default_header_timeout(),
            body_read_timeout: default_body_timeout(),
            shutdown_timeout: default_drain_timeout(),
            max_buffered_bytes: default_max_buffered(),
            state_dir: default_state_dir(),
            workers: 0,
            runtime: RuntimeKind::PerCore,
            watch: true,
            normalize_path: true,
            merge_slashes: false,
            path_with_escaped_slashes_action: crate::path::EscapedSlashes::Reject,
            tls: None,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".into()]
}
fn default_admin() -> Option<String> {
    Some("127.0.0.1:9901".into())
}
fn default_max_body() -> u64 {
    16 * 1024 * 1024
}
fn default_max_buffered() -> u64 {
    64 * 1024 * 1024
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_state_dir() -> String {
    "state".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Vec<String>,
    #[serde(default)]
    pub certs: Vec<RawCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    /// Host names (exact or `*.` wildcard) this certificate answers for.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
    /// Serve this certificate to handshakes without SNI (or with an unknown name).
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: Choice<LogFormat>,
    /// tracing filter, e.g. `info` or `keygate=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default = "default_true")]
    pub access: bool,
    /// Write access lines to this file (relative to the config file) instead of
    /// stderr. Opened in append mode at start; rotate with copytruncate.
    #[serde(default)]
    pub access_file: Option<String>,
}
impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: default_log_format(),
            level: default_log_level(),
            access: true,
            access_file: None,
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
impl Closed for LogFormat {}

impl RawLog {
    /// JSON lines; a wrong `format` (refused by the compiler) reads as text.
    pub fn json(&self) -> bool {
        self.format.get() == Some(LogFormat::Json)
    }
}

fn default_log_format() -> Choice<LogFormat> {
    Choice::parse("text")
}
fn default_log_level() -> String {
    "info".into()
}

/// `[tracing]`: one span per request exported over OTLP/HTTP (absent = off).
/// Checked where the exporter is built (`trace/otlp.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// Collector base URL (`http://` or `https://`); spans go to `<otlp>/v1/traces`.
    pub otlp: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces exported; a caller's sampled flag decides for its own.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent to the collector (values `${ENV}` expanded), e.g. a token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed to one export request.
    #[serde(default = "default_otlp_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}
fn default_service_name() -> String {
    "keygate".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}
