//! Where a token is read from: `Authorization: Bearer`, a cookie, a query
//! parameter; and removing the cookie before forwarding.

use super::{invalid, MAX_TOKEN};
use crate::auth::AuthError;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

pub(super) fn checked_len(t: &str) -> Result<&str, AuthError> {
    if t.is_empty() {
        return Err(AuthError::Missing("empty token".into()));
    }
    if t.len() > MAX_TOKEN {
        return Err(invalid("token too long".into()));
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
        return Err(invalid("several Authorization headers".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("Authorization header is not ASCII".into()))?
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
        return Err(invalid("token too long".into()));
    }
    Ok(token)
}
