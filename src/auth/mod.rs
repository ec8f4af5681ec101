//! Authentication schemes. Each scheme is a pure `verify` function over the
//! request head (and, where the scheme hashes it, the buffered body).

pub mod dispatch;
pub mod external;
pub mod hmac;
pub mod jwks;
pub mod jwt;
pub mod key;
pub mod mac;
pub mod openapi;
pub(crate) mod params;
pub mod replay;
pub mod sign;
pub mod tc1;
pub mod tc3;

use http::{HeaderMap, Method, Uri, Version};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A key pair from `[[keys]]`.
#[derive(Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
    /// Flow-control "application"; the key id when not configured.
    pub app: String,
    pub enabled: bool,
    /// The signature schemes' MACs keyed with (what they derive from) `secret`,
    /// prepared on first use and cloned per request instead of keyed again.
    pub(crate) macs: mac::KeyedMacs,
}

impl Key {
    pub fn new(id: String, secret: String, app: Option<String>, enabled: bool) -> Key {
        let app = app.unwrap_or_else(|| id.clone());
        Key {
            id,
            secret,
            app,
            enabled,
            macs: mac::KeyedMacs::default(),
        }
    }
}

pub type Keys = HashMap<String, Arc<Key>>;

/// What a scheme sees of the request.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    /// The body, when the scheme asked for it to be buffered.
    pub body: Option<&'a [u8]>,
}

/// A successful verification.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: Arc<Key>,
    /// Value identifying this exact signed request (nonce or decoded signature)
    /// for the replay cache, and how long it must be remembered.
    pub replay: Option<replay::ReplayToken>,
}

/// Why a request was not authenticated. Messages never contain a secret or the
/// expected signature; `BadSignature.debug` carries the server's string-to-sign and
/// is only shown when the API opts in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: {0}")]
    Missing(String),
    #[error("malformed credentials: {0}")]
    Malformed(String),
    #[error("signature expired or not yet valid: {0}")]
    Expired(String),
    #[error("unknown secret id")]
    UnknownKey,
    #[error("secret id is disabled")]
    DisabledKey,
    #[error("signature mismatch")]
    BadSignature { debug: Option<String> },
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("request replayed")]
    Replay,
    #[error("replay cache full, try again later")]
    ReplayCacheFull,
    #[error("request body too large for this signature mode")]
    BodyTooLarge,
    #[error("key is not allowed on this service")]
    NotAllowed,
    /// The head checks passed and the scheme needs the body to finish: the
    /// caller reads it (within the buffer budget) and verifies again with it.
    #[error("the request body was not available to verify the signature")]
    NeedBody,
    /// `[server] max_buffered_bytes` is exhausted by other requests' bodies.
    #[error("too many request bodies are being checked; try again later")]
    BufferBudget,
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::NotAllowed => 403,
            AuthError::BodyTooLarge => 413,
            AuthError::ReplayCacheFull => 503,
            AuthError::NeedBody => 400,
            AuthError::BufferBudget => 503,
            _ => 401,
        }
    }

    /// Code of the cloud API error vocabulary (SPEC §3.5).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "MissingParameter",
            AuthError::Malformed(_) => "InvalidParameter",
            AuthError::Expired(_) => "AuthFailure.SignatureExpire",
            AuthError::UnknownKey => "AuthFailure.SecretIdNotFound",
            AuthError::DisabledKey => "AuthFailure.InvalidSecretId",
            AuthError::BadSignature { .. } => "AuthFailure.SignatureFailure",
            AuthError::AlgorithmNotAllowed(_) => "AuthFailure.SignatureFailure",
            AuthError::InvalidToken(_) => "AuthFailure.TokenFailure",
            AuthError::Replay => "AuthFailure.SignatureFailure",
            AuthError::ReplayCacheFull => "RequestLimitExceeded",
            AuthError::BodyTooLarge => "InvalidParameter",
            AuthError::NotAllowed => "UnauthorizedOperation",
            AuthError::NeedBody => "InvalidParameter",
            AuthError::BufferBudget => "RequestLimitExceeded",
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the signature schemes.

/// Looks up an enabled key: `UnknownKey` / `DisabledKey` otherwise.
pub(crate) fn lookup_key(keys: &Keys, id: &str) -> Result<Arc<Key>, AuthError> {
    match keys.get(id) {
        None => Err(AuthError::UnknownKey),
        Some(k) if !k.enabled => Err(AuthError::DisabledKey),
        Some(k) => Ok(k.clone()),
    }
}

/// Checks that `t` is within `max_skew` of `now` (inclusive). `what` names the
/// field in the error message.
pub(crate) fn check_skew(
    what: &str,
    t: std::time::SystemTime,
    now: std::time::SystemTime,
    max_skew: Duration,
) -> Result<(), AuthError> {
    let (diff, past) = match now.duration_since(t) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    if diff <= max_skew {
        return Ok(());
    }
    let secs = diff.as_secs();
    let over = diff.saturating_sub(max_skew).as_secs().max(1);
    let msg = if past {
        format!(
            "{what} is {secs} s old: expired by {over} s (allowed skew {} s)",
            max_skew.as_secs()
        )
    } else {
        format!(
            "{what} is {secs} s in the future: {over} s beyond the allowed skew of {} s",
            max_skew.as_secs()
        )
    };
    Err(AuthError::Expired(msg))
}

/// The request's host as the client sent it: the single `Host` header, or the URI
/// authority (HTTP/2 `:authority`) without user info. The handler has already made
/// `Host` the request's one authority (`crate::authority`), so this is the host the
/// request was routed by; several `Host` headers give `None`.
pub(crate) fn request_host<'a>(req: &RequestParts<'a>) -> Option<&'a [u8]> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    if let Some(h) = hosts.next() {
        return hosts.next().is_none().then_some(h.as_bytes());
    }
    req.uri.authority().map(|a| {
        let s = a.as_str();
        s.rsplit_once('@').map_or(s, |(_, h)| h).as_bytes()
    })
}

/// Splits an `application/x-www-form-urlencoded` string into decoded
/// `(name, value)` byte pairs (`+` is a space, `%XX` a byte; invalid escapes are
/// kept literally). Empty segments are skipped.
pub(crate) fn form_pairs(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn decode(s: &[u8]) -> Vec<u8> {
        let plus: std::borrow::Cow<[u8]> = if s.contains(&b'+') {
            s.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect::<Vec<u8>>()
                .into()
        } else {
            s.into()
        };
        percent_encoding::percent_decode(&plus).collect()
    }
    input
        .split(|&b| b == b'&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.iter().position(|&b| b == b'=') {
            Some(i) => (decode(&seg[..i]), decode(&seg[i + 1..])),
            None => (decode(seg), Vec::new()),
        })
        .collect()
}

/// True when the request head announces no body at all (no `Content-Length`
/// or `Content-Length: 0`, and no `Transfer-Encoding`).
pub(crate) fn head_has_no_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    match headers.get(http::header::CONTENT_LENGTH) {
        None => true,
        Some(v) => v.as_bytes() == b"0",
    }
}

/// Fixtures shared by the schemes' unit tests.
#[cfg(test)]
pub(crate) mod testkit {
    use super::{Key, Keys};
    use http::{HeaderMap, HeaderName, HeaderValue};
    use std::sync::Arc;

    /// Keys from `(id, secret, enabled)`.
    pub fn keys(entries: &[(&str, &str, bool)]) -> Keys {
        let mut k = Keys::new();
        for (id, secret, enabled) in entries {
            k.insert(
                (*id).into(),
                Arc::new(Key::new((*id).into(), (*secret).into(), None, *enabled)),
            );
        }
        k
    }

    /// A header map from `(name, value)` pairs, repeats appended.
    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        h
    }
}
