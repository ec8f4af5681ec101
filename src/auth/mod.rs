//! Authentication schemes. Each scheme is a pure `verify` function over the
//! request head (and, where the scheme hashes it, the buffered body).

pub mod hmac;
pub mod jwt;
pub mod openapi;
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
}

impl Key {
    pub fn new(id: String, secret: String, app: Option<String>, enabled: bool) -> Key {
        let app = app.unwrap_or_else(|| id.clone());
        Key {
            id,
            secret,
            app,
            enabled,
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
    /// Value identifying this exact signed request (nonce or signature) for the
    /// replay cache, and how long it must be remembered.
    pub replay: Option<(String, Duration)>,
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
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::NotAllowed => 403,
            AuthError::BodyTooLarge => 413,
            AuthError::ReplayCacheFull => 503,
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
        }
    }
}
