//! Serde structs mirroring the TOML file of SPEC §7. They only describe shape;
//! every cross-reference and value range is checked in `compile.rs`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub jwt_providers: Vec<RawJwtProvider>,
    #[serde(default)]
    pub usage_plans: Vec<RawUsagePlan>,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

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
    /// `multi`: one work-stealing runtime of `workers` threads. `per-core`:
    /// `workers` threads, each with its own single-threaded runtime, its own
    /// SO_REUSEPORT listening sockets and its own upstream connection pools.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Watch the config file and reload on change.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Make request paths canonical (see `crate::path`); Envoy's `normalize_path`.
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
    #[default]
    Multi,
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
            runtime: RuntimeKind::Multi,
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
fn default_true() -> bool {
    true
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
pub struct RawCluster {
    /// One server: `redis://` or `rediss://` (TLS). Exactly one of `redis`,
    /// `sentinels`, `nodes` (see the `conn` module of `cluster`).
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
    pub on_error: String,
    #[serde(default = "default_redis_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Make per-second QPS limits cluster-wide too (default: local per instance).
    #[serde(default)]
    pub shared_qps: bool,
    /// Prefix of every Redis key (several deployments may share one Redis).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
}
fn default_redis_prefix() -> String {
    "keygate".into()
}
fn default_on_error() -> String {
    "local".into()
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `"off"`, `"nonce"` (default; `true`) or `"strict"`; `false` = `"off"`.
    #[serde(default, deserialize_with = "crate::auth::replay::de_replay_mode")]
    pub replay: crate::auth::replay::ReplayMode,
    /// Maximum live entries of the replay cache; when full, new signed requests are refused.
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
    #[serde(default)]
    pub debug_signatures: bool,
    /// Remove credential headers/parameters before forwarding.
    #[serde(default = "default_true")]
    pub strip_credentials: bool,
    #[serde(default)]
    pub hmac: RawHmacAuth,
    #[serde(default)]
    pub tc3: RawTc3Auth,
    #[serde(default)]
    pub tc1: RawTc1Auth,
    #[serde(default)]
    pub jwt: RawJwtAuth,
    /// Status of gateway refusals on tc3 / tc1 / openapi APIs: "200" (as the cloud
    /// API does; the official SDKs read error codes only from 200 answers) or "http".
    #[serde(default)]
    pub cloud_error_status: CloudErrorStatus,
    #[serde(default)]
    pub key: RawKeyAuth,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CloudErrorStatus {
    #[default]
    #[serde(rename = "200")]
    Ok,
    #[serde(rename = "http")]
    Http,
}
impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            replay: crate::auth::replay::ReplayMode::default(),
            replay_capacity: default_replay_capacity(),
            debug_signatures: false,
            strip_credentials: true,
            hmac: RawHmacAuth::default(),
            tc3: RawTc3Auth::default(),
            tc1: RawTc1Auth::default(),
            jwt: RawJwtAuth::default(),
            cloud_error_status: CloudErrorStatus::default(),
            key: RawKeyAuth::default(),
        }
    }
}
fn default_replay_capacity() -> usize {
    1_000_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHmacAuth {
    #[serde(default = "default_hmac_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_15m", deserialize_with = "de_duration")]
    pub max_skew: Duration,
    /// Compatibility switch: do not check the skew of a plain `Date` header (X-Date still checked).
    #[serde(default = "default_true")]
    pub check_date: bool,
    /// Signed headers whose value is a nonce: the replay identity of the request.
    #[serde(default = "default_nonce_headers")]
    pub nonce_headers: Vec<String>,
    /// Headers every hmac signature must cover (`request-line`, `host`, `digest`, ...).
    #[serde(default)]
    pub enforce_headers: Vec<String>,
}
impl Default for RawHmacAuth {
    fn default() -> Self {
        RawHmacAuth {
            algorithms: default_hmac_algorithms(),
            max_skew: default_15m(),
            check_date: true,
            nonce_headers: default_nonce_headers(),
            enforce_headers: vec![],
        }
    }
}
fn default_nonce_headers() -> Vec<String> {
    vec!["x-nonce".into()]
}
fn default_hmac_algorithms() -> Vec<String> {
    ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_15m() -> Duration {
    Duration::from_secs(900)
}
fn default_5m() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTc3Auth {
    #[serde(default = "default_5m", deserialize_with = "de_duration")]
    pub max_skew: Duration,
    #[serde(default = "default_true")]
    pub allow_unsigned_payload: bool,
}
impl Default for RawTc3Auth {
    fn default() -> Self {
        RawTc3Auth {
            max_skew: default_5m(),
            allow_unsigned_payload: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTc1Auth {
    #[serde(default = "default_5m", deserialize_with = "de_duration")]
    pub max_skew: Duration,
}
impl Default for RawTc1Auth {
    fn default() -> Self {
        RawTc1Auth {
            max_skew: default_5m(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtAuth {
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
}
impl Default for RawJwtAuth {
    fn default() -> Self {
        RawJwtAuth {
            leeway: default_leeway(),
        }
    }
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// `[auth.key]`: where `auth = "key"` APIs read the API key by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyAuth {
    /// Header carrying the key (default `X-API-Key`).
    pub key_header: Option<String>,
    /// Query parameter carrying the key; unset: the query is not read.
    pub key_query: Option<String>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
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
fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub app: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtProvider {
    pub name: String,
    pub jwk: Option<String>,
    pub jwks_file: Option<String>,
    pub pem_file: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values, when set.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// claim name -> upstream header name
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Claim naming the caller's key for usage plans and limits (default `sub`).
    pub key_claim: Option<String>,
    /// Algorithm of RSA keys that declare none (PEM keys, JWKs without `alg`):
    /// RS256 (default), RS384, RS512, PS256, PS384 or PS512.
    pub algorithm: Option<String>,
    /// Cookie carrying the token when there is no `Authorization` header.
    pub token_cookie: Option<String>,
    /// Query parameter carrying the token when there is no header or cookie.
    pub token_query: Option<String>,
    /// claim -> required value, or list of accepted values (`scope`/`scp`
    /// strings are split on spaces).
    #[serde(default)]
    pub required_claims: BTreeMap<String, RawClaimValue>,
    /// JWKS fetched at start and every `jwks_refresh` (default 5m); the last
    /// good set is kept when a fetch fails.
    pub jwks_url: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub jwks_refresh: Option<Duration>,
    /// Bound of one JWKS fetch (default 5s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub jwks_timeout: Option<Duration>,
    /// Longest accepted token lifetime (`exp - iat`, and `exp - now`).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_lifetime: Option<Duration>,
}

/// A required claim value: one value or a list of accepted ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawClaimValue {
    One(String),
    Any(Vec<String>),
}

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
    /// `white` or `black`.
    pub mode: String,
    /// IPs / CIDRs separated by `;` or newlines.
    pub ips: String,
    /// Status of this plugin's refusals (default 403).
    pub rejected_code: Option<u16>,
    /// Message of this plugin's refusals.
    pub rejected_msg: Option<String>,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawTrafficControl {
    pub name: String,
    /// second | minute | hour | day
    pub expire_type: String,
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
    /// query | header | path
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub name: String,
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_max_age")]
    pub max_age: u64,
}
fn default_cors_methods() -> Vec<String> {
    ["GET", "PUT", "POST", "DELETE", "HEAD"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_max_age() -> u64 {
    86400
}

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
    pub protocols: Vec<String>,
    /// Redirect plain-HTTP requests to HTTPS (301 GET/HEAD, 308 others).
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub apis: Vec<RawApi>,
}
fn default_protocols() -> Vec<String> {
    vec!["http".into(), "https".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub name: String,
    pub path: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_auth")]
    pub auth: String,
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
    pub external_auth: Option<crate::auth::external::RawExternalAuth>,
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
    pub params: Vec<crate::policy::inputs::RawParam>,
    pub backend: RawBackend,
}
fn default_methods() -> Vec<String> {
    vec!["ANY".into()]
}
fn default_auth() -> String {
    "none".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// http | mock | websocket
    #[serde(rename = "type", default = "default_backend_type")]
    pub kind: String,
    pub url: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub path: String,
    /// Back-end method when it differs from the front method.
    pub method: Option<String>,
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
    pub retry_on: Option<Vec<String>>,
    /// Time allowed to one try, within `timeout`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub try_timeout: Option<Duration>,
    /// What counts toward `max_fails`: `connect`, `5xx` (default `["connect"]`).
    pub fail_on: Option<Vec<String>>,
    /// Active probes of every target.
    pub health_check: Option<crate::health::RawHealthCheck>,
    // mock
    pub status: Option<u16>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
fn default_backend_type() -> String {
    "http".into()
}
fn default_max_fails() -> u32 {
    3
}
fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
}

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

/// Durations are strings like `"500ms"`, `"15s"`, `"15m"`; a bare integer means seconds.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dur {
        Secs(u64),
        Text(String),
    }
    match Dur::deserialize(d)? {
        Dur::Secs(s) => Ok(Duration::from_secs(s)),
        Dur::Text(t) => humantime::parse_duration(t.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {t:?}: {e}"))),
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}
