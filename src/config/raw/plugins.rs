//! `[[plugins]]`: a name, a `type` and the type's PluginData fields, and
//! `[[usage_plans]]`.

use crate::config::choice::{lower_trimmed, upper_trimmed, Choice, Closed};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsagePlan {
    pub name: String,
    pub qps: Option<u32>,
    pub quota: Option<u64>,
    #[serde(default)]
    pub keys: Vec<String>,
}

/// A plugin: `name` + `type` + the type's PluginData fields.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawPlugin {
    IpControl(RawIpControl),
    TrafficControl(RawTrafficControl),
    ParamTrafficControl(RawParamTrafficControl),
    Cors(RawCors),
    ConcurrencyControl(crate::policy::concurrency::RawConcurrencyControl),
}

impl RawPlugin {
    pub fn name(&self) -> &str {
        match self {
            RawPlugin::IpControl(p) => &p.name,
            RawPlugin::TrafficControl(p) => &p.name,
            RawPlugin::ParamTrafficControl(p) => &p.name,
            RawPlugin::Cors(p) => &p.name,
            RawPlugin::ConcurrencyControl(p) => &p.name,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            RawPlugin::IpControl(_) => "ip_control",
            RawPlugin::TrafficControl(_) => "traffic_control",
            RawPlugin::ParamTrafficControl(_) => "param_traffic_control",
            RawPlugin::Cors(_) => "cors",
            RawPlugin::ConcurrencyControl(_) => "concurrency_control",
        }
    }
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawIpControl {
    pub name: String,
    /// `white` or `black` (any case).
    pub mode: Choice<IpMode>,
    /// IPs / CIDRs separated by `;` or newlines.
    pub ips: String,
    /// Status of this plugin's refusals (default 403).
    pub rejected_code: Option<u16>,
    /// Message of this plugin's refusals.
    pub rejected_msg: Option<String>,
}

/// `ip_control` `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpMode {
    /// Only listed sources pass.
    White,
    /// Listed sources are refused.
    Black,
}
impl Closed for IpMode {
    fn normalize(written: &str) -> Cow<'_, str> {
        lower_trimmed(written)
    }
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawTrafficControl {
    pub name: String,
    /// second | minute | hour | day
    pub expire_type: Choice<ExpireType>,
    #[serde(default = "default_one")]
    pub expire: u64,
    /// Limit for the whole API; every dimension is optional, at least one is needed.
    pub api_rate_limit: Option<u64>,
    pub app_rate_limit: Option<u64>,
    pub ip_rate_limit: Option<u64>,
    #[serde(default)]
    pub spec_app_rate_limits: Vec<RawSpecApp>,
    #[serde(default)]
    pub spec_ip_rate_limits: Vec<RawSpecIp>,
    /// Bucket IPv6 clients by this prefix length for `ip_rate_limit` (e.g. 64); none = per address.
    pub ipv6_prefix: Option<u8>,
    /// Status of this plugin's refusals (default 429).
    pub rejected_code: Option<u16>,
    /// Message of this plugin's refusals.
    pub rejected_msg: Option<String>,
}
fn default_one() -> u64 {
    1
}

/// `traffic_control` `expire_type`: the unit of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpireType {
    Second,
    Minute,
    Hour,
    Day,
}
impl Closed for ExpireType {}

impl ExpireType {
    pub fn secs(self) -> u64 {
        match self {
            ExpireType::Second => 1,
            ExpireType::Minute => 60,
            ExpireType::Hour => 3600,
            ExpireType::Day => 86_400,
        }
    }
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawSpecApp {
    pub app_id: String,
    pub rate_limit: u64,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawSpecIp {
    pub ip_key: String,
    pub rate_limit: u64,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawParamTrafficControl {
    pub name: String,
    #[serde(default)]
    pub default_window: u64,
    #[serde(default)]
    pub default_rate_limit: u64,
    #[serde(default)]
    pub strategies: Vec<RawStrategy>,
    /// Status of this plugin's refusals (default 429).
    pub rejected_code: Option<u16>,
    /// Message of this plugin's refusals.
    pub rejected_msg: Option<String>,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawStrategy {
    pub name: String,
    pub strategy_weight: u32,
    #[serde(default)]
    pub condition: String,
    #[serde(default)]
    pub parameters: Vec<RawStrategyParam>,
    pub rate_limit: u64,
    pub window: u64,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawStrategyParam {
    /// query | header | path (any case)
    #[serde(rename = "type")]
    pub kind: Choice<ParamIn>,
    #[serde(default)]
    pub name: String,
}

/// Where a `param_traffic_control` strategy reads its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamIn {
    Query,
    Header,
    /// The whole path.
    Path,
}
impl Closed for ParamIn {
    fn normalize(written: &str) -> Cow<'_, str> {
        // Any case, as always; blanks are not trimmed.
        Cow::Owned(written.to_ascii_lowercase())
    }
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub name: String,
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<Choice<CorsMethod>>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_max_age")]
    pub max_age: u64,
}
fn default_cors_methods() -> Vec<Choice<CorsMethod>> {
    ["GET", "PUT", "POST", "DELETE", "HEAD"]
        .into_iter()
        .map(Choice::parse)
        .collect()
}
fn default_max_age() -> u64 {
    86400
}

/// A method of `cors` `allow_methods` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CorsMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
}
impl Closed for CorsMethod {
    fn normalize(written: &str) -> Cow<'_, str> {
        upper_trimmed(written)
    }
}
