//! `[services.apis.backend]`: an HTTP (or websocket) upstream, or a mock.

use super::{de_duration, de_opt_duration};
use crate::config::choice::{Choice, Closed};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// http | mock | websocket
    #[serde(rename = "type", default = "default_backend_type")]
    pub kind: Choice<BackendKind>,
    pub url: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub path: String,
    /// Back-end method when it differs from the front method.
    pub method: Option<Choice<BackendMethod>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Constant header parameters added to every forwarded request.
    #[serde(default)]
    pub const_headers: BTreeMap<String, String>,
    /// Constant query parameters added to every forwarded request.
    #[serde(default)]
    pub const_query: BTreeMap<String, String>,
    /// Keep the client's Host header instead of the target's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Consecutive failures that take a target out, and for how long.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout", deserialize_with = "de_duration")]
    pub fail_timeout: Duration,
    /// PEM CA bundle for https upstreams (default: system roots).
    pub ca_file: Option<String>,
    /// Speak HTTP/2 to the back end (prior knowledge on http://, ALPN on https://).
    #[serde(default)]
    pub http2: bool,
    /// Further tries on other targets (default 1, for failed connections).
    pub retries: Option<u32>,
    /// `connect`, `5xx`, `timeout` (default `["connect"]`).
    pub retry_on: Option<Vec<Choice<RetryOn>>>,
    /// Time allowed to one try, within `timeout`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub try_timeout: Option<Duration>,
    /// What counts toward `max_fails`: `connect`, `5xx` (default `["connect"]`).
    pub fail_on: Option<Vec<Choice<FailOn>>>,
    /// Active probes of every target.
    pub health_check: Option<RawHealthCheck>,
    // mock
    pub status: Option<u16>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
fn default_backend_type() -> Choice<BackendKind> {
    Choice::parse("http")
}
fn default_max_fails() -> u32 {
    3
}
fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `backend.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Http,
    Mock,
    Websocket,
}
impl Closed for BackendKind {}

/// `backend.method`: the method sent to the back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendMethod {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
}
impl Closed for BackendMethod {}

impl BackendMethod {
    pub fn method(self) -> http::Method {
        match self {
            BackendMethod::Get => http::Method::GET,
            BackendMethod::Post => http::Method::POST,
            BackendMethod::Put => http::Method::PUT,
            BackendMethod::Delete => http::Method::DELETE,
            BackendMethod::Patch => http::Method::PATCH,
            BackendMethod::Head => http::Method::HEAD,
            BackendMethod::Options => http::Method::OPTIONS,
        }
    }
}

/// `backend.retry_on`: what is tried again on another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RetryOn {
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "5xx")]
    ServerError,
    #[serde(rename = "timeout")]
    Timeout,
}
impl Closed for RetryOn {}

/// `backend.fail_on`: what counts toward `max_fails`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FailOn {
    #[serde(rename = "connect")]
    Connect,
    #[serde(rename = "5xx")]
    ServerError,
}
impl Closed for FailOn {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}
fn default_weight() -> u32 {
    1
}

/// `health_check = { path, interval, timeout, healthy, unhealthy }` in
/// `[services.apis.backend]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_healthy")]
    pub healthy: u32,
    #[serde(default = "default_unhealthy")]
    pub unhealthy: u32,
}

fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}
