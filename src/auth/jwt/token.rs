//! Where a token is read from (`Authorization: Bearer`, a cookie, a query
//! parameter), removing the cookie before forwarding, and what the token's
//! header says.

use crate::auth::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// Longest accepted token, in bytes.
pub(super) const MAX_TOKEN: usize = 16 * 1024;

pub(super) fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(msg.into())
}

/// The checked header of a compact JWS: an asymmetric algorithm to verify it
/// with, no `crit` (RFC 7515 §4.1.11: we understand no extension), and its `kid`.
pub(super) struct TokenHeader {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
}

impl TokenHeader {
    pub(super) fn parse(token: &str) -> Result<TokenHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(if token.split('.').count() == 5 {
                "encrypted tokens (JWE) are not supported"
            } else {
                "not a JWT (expected header.payload.signature)"
            }));
        };
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(h64)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| invalid("malformed token header"))?;
        let Some(Value::String(name)) = header.get("alg") else {
            return Err(invalid("token header has no alg"));
        };
        let alg = match name.parse() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                if name.eq_ignore_ascii_case("none") {
                    return Err(invalid("unsigned tokens (alg none) are not allowed"));
                }
                let a: String = name.chars().take(16).collect();
                return Err(invalid(format!(
                    "algorithm {a:?} is not allowed (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"
                )));
            }
            Ok(a) => a,
        };
        if header.contains_key("crit") {
            return Err(invalid("critical header parameters are not supported"));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(invalid("kid is not a string")),
        };
        Ok(TokenHeader { alg, kid })
    }
}

pub(super) fn checked_len(t: &str) -> Result<&str, AuthError> {
    if t.is_empty() {
        return Err(AuthError::Missing("empty token".into()));
    }
    if t.len() > MAX_TOKEN {
        return Err(invalid("token too long"));
    }
    Ok(t)
}

/// The value of cookie `name` in the request's `Cookie` headers; twice is refused.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    let mut found = None;
    for h in headers.get_all(http::header::COOKIE) {
        let Ok(text) = h.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim() == name {
                if found.is_some() {
                    return Err(invalid(format!("several {name} cookies")));
                }
                let v = v.trim();
                found = Some(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v),
                );
            }
        }
    }
    Ok(found)
}

/// Removes cookie `name` from the request's `Cookie` headers (the others kept).
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let values: Vec<HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    if values.is_empty() {
        return;
    }
    headers.remove(http::header::COOKIE);
    for v in values {
        let Ok(text) = v.to_str() else {
            headers.append(http::header::COOKIE, v);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|&p| !p.is_empty() && p.split_once('=').map_or(p, |(k, _)| k).trim() != name)
            .collect();
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.append(http::header::COOKIE, v);
            }
        }
    }
}

/// The token of `Authorization: Bearer <jwt>` or `Bearer id_token="<jwt>"`.
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(AuthError::Missing("no Authorization header".into()));
    };
    if all.next().is_some() {
        return Err(invalid("several Authorization headers"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("Authorization header is not ASCII"))?
        .trim();
    let (scheme, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing(
            "no Bearer token in Authorization".into(),
        ));
    }
    let mut token = rest.trim();
    if token.len() > 9 && token.as_bytes()[..9].eq_ignore_ascii_case(b"id_token=") {
        token = token[9..].trim();
        if let Some(inner) = token.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            token = inner;
        }
    }
    if token.is_empty() {
        return Err(AuthError::Missing("empty Bearer token".into()));
    }
    if token.len() > MAX_TOKEN {
        return Err(invalid("token too long"));
    }
    Ok(token)
}
