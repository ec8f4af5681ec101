//! What the claims of a verified token must say, and what they give the request.
//!
//! - `exp` is mandatory unless disabled; `exp` and `nbf` are checked against the
//!   request's clock with `[auth.jwt] leeway` when present; `iat` only bounds the
//!   lifetime. NumericDates may be fractional (RFC 7519 §2) and are compared
//!   exactly as numbers: `exp = 100.5` is valid until 100.5 s (plus leeway),
//!   neither rounded down nor up. `jsonwebtoken`'s `Validation` is not used for
//!   these: it rounds to the nearest second (half a second of extra life, or of
//!   early use) and reads the system clock instead of the request's.
//! - `max_lifetime` bounds `exp - iat` and `exp - now`.
//! - `iss` must be the provider's issuer (a string), `aud` (a string or an array)
//!   must name one of its audiences; with no audiences configured `aud` is not read.
//! - The subject (`key_claim`, default `sub`) must be a non-empty string or a
//!   number. `claims_to_headers` copies strings as they are and other JSON as
//!   compact JSON; absent/null claims and values that are not valid header values
//!   are skipped.

use super::token::invalid;
use crate::auth::AuthError;
use crate::config::raw::{RawClaimValue, RawJwtProvider};
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Headers a claim may never be copied into.
const FORBIDDEN_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
];

pub(super) type Claims = Map<String, Value>;

/// A provider's rules for claims.
#[derive(Debug)]
pub(super) struct ClaimRules {
    issuer: Option<String>,
    audiences: Vec<String>,
    key_claim: String,
    claims_to_headers: Vec<(String, HeaderName)>,
    pub(super) require_exp: bool,
    /// claim -> accepted values (any one).
    required_claims: Vec<(String, Vec<String>)>,
    max_lifetime: Option<Duration>,
}

impl ClaimRules {
    pub(super) fn from_raw(raw: &RawJwtProvider) -> Result<ClaimRules, String> {
        let mut required_claims = vec![];
        for (claim, v) in &raw.required_claims {
            let values = match v {
                RawClaimValue::One(s) => vec![s.clone()],
                RawClaimValue::Any(l) => l.clone(),
            };
            if claim.is_empty() || values.is_empty() || values.iter().any(String::is_empty) {
                return Err(format!(
                    "required_claims: {claim:?} needs a non-empty value or list"
                ));
            }
            required_claims.push((claim.clone(), values));
        }
        if raw.max_lifetime.is_some_and(|d| d.is_zero()) {
            return Err("max_lifetime must be positive".into());
        }
        if raw.issuer.as_ref().is_some_and(String::is_empty) {
            return Err("issuer is empty".into());
        }
        if raw.audiences.iter().any(String::is_empty) {
            return Err("an audience is empty".into());
        }
        let key_claim = raw.key_claim.clone().unwrap_or_else(|| "sub".into());
        if key_claim.is_empty() {
            return Err("key_claim is empty".into());
        }
        let mut claims_to_headers: Vec<(String, HeaderName)> = Vec::new();
        for (claim, header) in &raw.claims_to_headers {
            let name = HeaderName::from_bytes(header.trim().as_bytes())
                .map_err(|_| format!("claims_to_headers: invalid header name {header:?}"))?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(format!("claims_to_headers: header {header:?} is reserved"));
            }
            if claims_to_headers.iter().any(|(_, n)| *n == name) {
                return Err(format!("claims_to_headers: header {header:?} used twice"));
            }
            claims_to_headers.push((claim.clone(), name));
        }
        Ok(ClaimRules {
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            key_claim,
            claims_to_headers,
            require_exp: true,
            required_claims,
            max_lifetime: raw.max_lifetime,
        })
    }

    /// Upstream headers filled from claims.
    pub(super) fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims_to_headers.iter().map(|(_, h)| h)
    }

    /// Checks time, lifetime, required claims, issuer and audience at `now`.
    pub(super) fn check(
        &self,
        claims: &Claims,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let leeway = leeway.as_secs_f64();
        let exp = numeric_claim(claims, "exp")?;
        match exp {
            Some(exp) if now >= exp + leeway => return Err(invalid("token expired")),
            None if self.require_exp => return Err(invalid("token has no exp claim")),
            _ => {}
        }
        if let Some(nbf) = numeric_claim(claims, "nbf")? {
            if now + leeway < nbf {
                return Err(invalid("token not valid yet (nbf)"));
            }
        }
        if let Some(max) = self.max_lifetime {
            let max = max.as_secs_f64();
            let Some(exp) = exp else {
                return Err(invalid("token has no exp claim (max_lifetime)"));
            };
            let from_iat = numeric_claim(claims, "iat")?.map(|iat| exp - iat);
            if exp - now > max + leeway || from_iat.is_some_and(|l| l > max) {
                return Err(invalid("token lifetime exceeds max_lifetime"));
            }
        }
        for (claim, accepted) in &self.required_claims {
            let Some(value) = claims.get(claim) else {
                return Err(invalid(format!("token has no {claim} claim")));
            };
            let scope = claim == "scope" || claim == "scp";
            if !claim_values(value, scope)
                .iter()
                .any(|v| accepted.contains(v))
            {
                return Err(invalid(format!("claim {claim} not accepted")));
            }
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                Some(_) => return Err(invalid("issuer not accepted")),
                None => return Err(invalid("token has no iss claim")),
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|w| w == a))
            };
            match claims.get("aud") {
                None => return Err(invalid("token has no aud claim")),
                Some(Value::Array(list)) if list.iter().any(accepted) => {}
                Some(a) if accepted(a) => {}
                Some(_) => return Err(invalid("audience not accepted")),
            }
        }
        Ok(())
    }

    /// The caller: the `key_claim`, a non-empty string or a number.
    pub(super) fn subject(&self, claims: &Claims) -> Result<String, AuthError> {
        match claims.get(&self.key_claim) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(invalid(format!(
                "claim {:?} missing or not a string",
                self.key_claim
            ))),
        }
    }

    /// The `claims_to_headers` headers these claims give.
    pub(super) fn headers(&self, claims: &Claims) -> Vec<(HeaderName, HeaderValue)> {
        self.claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                let text = match claims.get(claim)? {
                    Value::Null => return None,
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let value = HeaderValue::from_str(&text).ok()?;
                Some((name.clone(), value))
            })
            .collect()
    }
}

/// A claim's values as text for `required_claims`: a string (split on spaces
/// for `scope` / `scp`), each element of an array, a number or a boolean.
fn claim_values(v: &Value, scope: bool) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::String(s) if scope => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// `exp` / `nbf` / `iat`: absent, or a JSON number (NumericDate, maybe fractional).
fn numeric_claim(claims: &Claims, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(invalid(format!("{name} is not a number"))),
        },
    }
}
