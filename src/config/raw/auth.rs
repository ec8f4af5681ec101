//! `[auth]` and its scheme tables, `[[keys]]`, `[[jwt_providers]]` and an API's
//! `[services.apis.external_auth]`.

use super::{de_duration, de_opt_duration, default_true};
use crate::auth::mac::Algorithm as HmacAlgorithm;
use crate::config::choice::{lower_trimmed, Choice, Closed};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// The algorithms a signature may use (any case; a name listed twice
    /// counts once).
    #[serde(default = "default_hmac_algorithms")]
    pub algorithms: Vec<Choice<HmacAlgorithm>>,
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
fn default_hmac_algorithms() -> Vec<Choice<HmacAlgorithm>> {
    HmacAlgorithm::ALL
        .iter()
        .map(|a| Choice::parse(a.name()))
        .collect()
}
impl Closed for HmacAlgorithm {
    fn normalize(written: &str) -> Cow<'_, str> {
        lower_trimmed(written)
    }
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
    pub algorithm: Option<Choice<RsaAlgorithm>>,
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

/// `[[jwt_providers]] algorithm`: the RSA algorithms a key can be pinned to,
/// spelt as in a JWK's `alg` (exact case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RsaAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}
impl Closed for RsaAlgorithm {}

/// A required claim value: one value or a list of accepted ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawClaimValue {
    One(String),
    Any(Vec<String>),
}

/// `[services.apis.external_auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExternalAuth {
    pub url: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Client headers sent to the auth service.
    #[serde(default)]
    pub request_headers: Vec<String>,
    /// Auth-service answer headers copied to the back-end request.
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// Answer header naming the caller's key id (plans and limits apply).
    pub key_id_header: Option<String>,
    /// Answer header naming the caller's app.
    pub app_header: Option<String>,
    /// `deny` (default: 503) or `allow` when the service cannot answer.
    pub on_error: Option<Choice<ExternalOnError>>,
    /// Cache 2xx answers for this long (default: no cache).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub cache_ttl: Option<Duration>,
    /// PEM CA bundle for an https `url` (default: the bundled web PKI roots);
    /// relative to the config file.
    pub ca_file: Option<String>,
}

/// `external_auth.on_error`: the answer when the auth service cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalOnError {
    Deny,
    Allow,
}
impl Closed for ExternalOnError {}
