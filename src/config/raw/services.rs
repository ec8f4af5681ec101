//! `[[services]]` and their `[[services.apis]]`.

use super::auth::RawExternalAuth;
use super::backend::RawBackend;
use super::CloudErrorStatus;
use crate::config::choice::{Choice, Closed};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub environment: Option<String>,
    pub qps: Option<u32>,
    #[serde(default)]
    pub usage_plans: Vec<String>,
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Custom-domain path mapping: on `hosts`, this service's environment is
    /// reached under this prefix (`"/"` or `"/name"`) instead of `/<environment>`.
    pub path_mapping: Option<String>,
    /// Front-end protocols taken: `http`, `https` (default both).
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Choice<Protocol>>,
    /// Redirect plain-HTTP requests to HTTPS (301 GET/HEAD, 308 others).
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub apis: Vec<RawApi>,
}
fn default_protocols() -> Vec<Choice<Protocol>> {
    vec![Choice::parse("http"), Choice::parse("https")]
}

/// A front-end protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}
impl Closed for Protocol {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub name: String,
    pub path: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<Choice<ApiMethod>>,
    #[serde(default = "default_auth")]
    pub auth: Choice<AuthKind>,
    pub jwt_provider: Option<String>,
    pub tc3_service: Option<String>,
    /// Refuse `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` on this API.
    #[serde(default)]
    pub tc3_require_signed_payload: bool,
    /// Per-API override of `[auth.hmac] enforce_headers` (`auth = "hmac"` only).
    pub hmac_enforce_headers: Option<Vec<String>>,
    #[serde(default)]
    pub enable_cors: bool,
    pub qps: Option<u32>,
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Per-API override of `[auth] debug_signatures`.
    pub debug_signatures: Option<bool>,
    /// Per-API override of `[server] max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Per-API override of `[auth] cloud_error_status`.
    pub cloud_error_status: Option<CloudErrorStatus>,
    /// tc3 / tc1 only: the cloud-API actions (`X-TC-Action` / `Action`) this API
    /// takes, exact or a trailing-`*` prefix; empty = any.
    #[serde(default)]
    pub actions: Vec<String>,
    /// `auth = "key"`: per-API override of `[auth.key] key_header`.
    pub key_header: Option<String>,
    /// `auth = "key"`: per-API override of `[auth.key] key_query`.
    pub key_query: Option<String>,
    /// `auth = "external"`: the external authorization service.
    pub external_auth: Option<RawExternalAuth>,
    /// Caller access lists, checked after authentication (403).
    #[serde(default)]
    pub allow_apps: Vec<String>,
    #[serde(default)]
    pub deny_apps: Vec<String>,
    #[serde(default)]
    pub allow_keys: Vec<String>,
    #[serde(default)]
    pub deny_keys: Vec<String>,
    /// Status of this API's authentication refusals (401/403 by default).
    pub auth_rejected_code: Option<u16>,
    /// Message of this API's authentication refusals.
    pub auth_rejected_msg: Option<String>,
    #[serde(default)]
    pub request_headers: RawHeaderRules,
    #[serde(default)]
    pub response_headers: RawHeaderRules,
    /// Usage plans bound to this API alone (the documents' BindType=API).
    #[serde(default)]
    pub usage_plans: Vec<String>,
    /// Declared front-end parameters, checked before authentication.
    #[serde(default)]
    pub params: Vec<RawParam>,
    pub backend: RawBackend,
}
fn default_methods() -> Vec<Choice<ApiMethod>> {
    vec![Choice::parse("ANY")]
}
fn default_auth() -> Choice<AuthKind> {
    Choice::parse("none")
}

/// A method an API takes (upper case, as the documents write them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiMethod {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
    Any,
}
impl Closed for ApiMethod {}

/// An API's authentication scheme (`auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    None,
    Hmac,
    Tc3,
    Tc1,
    Jwt,
    Openapi,
    Key,
    External,
}
impl Closed for AuthKind {}

/// `[services.apis.request_headers]` / `[services.apis.response_headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// name -> value template; replaces any value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// name -> value template; appended to the values present.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    /// old name -> new name (requests only).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// `[[services.apis.params]]`: a declared front-end parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    pub name: String,
    #[serde(rename = "in", default = "default_param_in")]
    pub position: Choice<ParamPosition>,
    #[serde(rename = "type", default = "default_param_type")]
    pub kind: Choice<ParamType>,
    #[serde(default)]
    pub required: bool,
    pub default: Option<Scalar>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_length: Option<usize>,
    #[serde(rename = "enum", default)]
    pub allowed: Vec<Scalar>,
    pub regex: Option<String>,
    /// Name sent to the back end (default: `name`).
    pub backend_name: Option<String>,
    /// Position sent to the back end (default: `in`).
    pub backend_in: Option<Choice<ParamPosition>>,
}
fn default_param_in() -> Choice<ParamPosition> {
    Choice::parse("query")
}
fn default_param_type() -> Choice<ParamType> {
    Choice::parse("string")
}

/// Where a declared parameter is read (`in`) or sent (`backend_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamPosition {
    Query,
    Header,
    Path,
}
impl Closed for ParamPosition {}

/// The type of a declared parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Long,
    Float,
    Double,
    Boolean,
}
impl Closed for ParamType {}

/// A TOML scalar written for a default or an enum value, kept as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}
