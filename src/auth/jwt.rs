//! `jwt` authentication (SPEC §3.4): `Authorization: Bearer <jwt>` (or the
//! documented `Bearer id_token="<jwt>"`), RS256 / ES256 only, verified against a
//! configured JWK, JWKS file or PEM public key.
//!
//! Decisions where the spec is silent:
//! - Only RS256 and ES256 exist. The algorithm of every key is fixed when the
//!   config is compiled (RSA key → RS256, P-256 key → ES256) and a token is only
//!   checked against keys of its own `alg`: `none`, `HS*` and algorithm confusion
//!   (an RSA public key used as an HMAC secret) cannot happen.
//! - `exp` is mandatory by default ([`JwtProvider::set_require_exp`]); `exp` and
//!   `nbf` are checked with the leeway when present; `iat` is not checked.
//! - Key choice: a token with a `kid` is checked against the keys with that `kid`
//!   (or, failing those, keys that have no `kid`); a token without `kid` is tried
//!   against every key of its algorithm.
//! - In a JWKS file, keys this module cannot use (other key types or curves,
//!   `use` other than `sig`, `alg` other than RS256/ES256) are skipped; malformed
//!   keys are config errors, and so is a set without one usable key.
//! - RSA keys must have 2048 to 8192 bit moduli (the verifier refuses others).
//! - Tokens with a `crit` header are refused (RFC 7515 §4.1.11: we understand no
//!   extension). Tokens over 16 KiB are refused before any parsing.
//! - The subject (`key_claim`, default `sub`) must be a non-empty string or a
//!   number. `claims_to_headers` copies strings as they are and other JSON as
//!   compact JSON; absent/null claims and values that are not valid header values
//!   are skipped. Callers should remove client-sent copies of those headers
//!   ([`JwtProvider::header_names`]) before adding the verified ones.

use super::AuthError;
use crate::config::raw::RawJwtProvider;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest accepted token, in bytes.
const MAX_TOKEN: usize = 16 * 1024;

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

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// Value of the provider's `key_claim` (default `sub`).
    pub subject: String,
    /// `claims_to_headers` results, ready to add to the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

struct ProviderKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A compiled `[[jwt_providers]]` entry.
pub struct JwtProvider {
    name: String,
    keys: Vec<ProviderKey>,
    issuer: Option<String>,
    audiences: Vec<String>,
    key_claim: String,
    claims_to_headers: Vec<(String, HeaderName)>,
    require_exp: bool,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider")
            .field("name", &self.name)
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("key_claim", &self.key_claim)
            .field("require_exp", &self.require_exp)
            .finish()
    }
}

/// Why a JWK was not loaded: `Unsupported` keys are skipped in a JWKS.
enum JwkError {
    Unsupported(String),
    Invalid(String),
}

impl JwtProvider {
    /// Compiles a provider; files are read relative to `base_dir` (the config's directory).
    pub fn from_raw(raw: &RawJwtProvider, base_dir: &Path) -> Result<JwtProvider, String> {
        let ctx = |e: String| format!("jwt provider {:?}: {e}", raw.name);
        let sources = [&raw.jwk, &raw.jwks_file, &raw.pem_file];
        if sources.iter().filter(|s| s.is_some()).count() != 1 {
            return Err(ctx("give exactly one of jwk, jwks_file, pem_file".into()));
        }
        let keys = if let Some(jwk) = &raw.jwk {
            let v: Value =
                serde_json::from_str(jwk).map_err(|e| ctx(format!("jwk is not JSON: {e}")))?;
            match parse_jwk(&v) {
                Ok(k) => vec![k],
                Err(JwkError::Unsupported(e) | JwkError::Invalid(e)) => return Err(ctx(e)),
            }
        } else if let Some(file) = &raw.jwks_file {
            let text = read(base_dir, file).map_err(ctx)?;
            parse_jwks(&text).map_err(|e| ctx(format!("jwks_file {file:?}: {e}")))?
        } else if let Some(file) = &raw.pem_file {
            let text = read(base_dir, file).map_err(ctx)?;
            vec![parse_pem(&text).map_err(|e| ctx(format!("pem_file {file:?}: {e}")))?]
        } else {
            Vec::new()
        };
        if let Some(iss) = &raw.issuer {
            if iss.is_empty() {
                return Err(ctx("issuer is empty".into()));
            }
        }
        if raw.audiences.iter().any(|a| a.is_empty()) {
            return Err(ctx("an audience is empty".into()));
        }
        let key_claim = raw.key_claim.clone().unwrap_or_else(|| "sub".into());
        if key_claim.is_empty() {
            return Err(ctx("key_claim is empty".into()));
        }
        let mut claims_to_headers: Vec<(String, HeaderName)> = Vec::new();
        for (claim, header) in &raw.claims_to_headers {
            let name = HeaderName::from_bytes(header.trim().as_bytes())
                .map_err(|_| ctx(format!("claims_to_headers: invalid header name {header:?}")))?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(ctx(format!(
                    "claims_to_headers: header {header:?} is reserved"
                )));
            }
            if claims_to_headers.iter().any(|(_, n)| *n == name) {
                return Err(ctx(format!(
                    "claims_to_headers: header {header:?} used twice"
                )));
            }
            claims_to_headers.push((claim.clone(), name));
        }
        Ok(JwtProvider {
            name: raw.name.clone(),
            keys,
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            key_claim,
            claims_to_headers,
            require_exp: true,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a token without `exp` is refused (default: yes).
    pub fn set_require_exp(&mut self, require: bool) {
        self.require_exp = require;
    }

    /// Upstream headers this provider fills from claims.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims_to_headers.iter().map(|(_, h)| h)
    }

    /// Verifies the bearer token of a request at time `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<JwtIdentity, AuthError> {
        let token = bearer_token(headers)?;
        let claims = self.verified_claims(token)?;
        self.check_claims(&claims, leeway, now)?;
        let subject = match claims.get(&self.key_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(invalid(format!(
                    "claim {:?} missing or not a string",
                    self.key_claim
                )))
            }
        };
        let headers = self
            .claims_to_headers
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
            .collect();
        Ok(JwtIdentity { subject, headers })
    }

    /// Checks the header and signature; returns the claims object.
    fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(if token.split('.').count() == 5 {
                "encrypted tokens (JWE) are not supported".into()
            } else {
                "not a JWT (expected header.payload.signature)".into()
            }));
        };
        let header = decode_json(h64).ok_or_else(|| invalid("malformed token header".into()))?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            _ => return Err(invalid("token header has no alg".into())),
        };
        let alg = match alg {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            a if a.eq_ignore_ascii_case("none") => {
                return Err(invalid("unsigned tokens (alg none) are not allowed".into()))
            }
            a => {
                let a: String = a.chars().take(16).collect();
                return Err(invalid(format!(
                    "algorithm {a:?} is not allowed (RS256, ES256)"
                )));
            }
        };
        if header.contains_key("crit") {
            return Err(invalid(
                "critical header parameters are not supported".into(),
            ));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(invalid("kid is not a string".into())),
        };
        let candidates = self.candidates(kid, alg)?;
        let message_len = h64.len() + 1 + p64.len();
        let message = &token.as_bytes()[..message_len];
        let mut ok = false;
        for key in candidates {
            match jsonwebtoken::crypto::verify(s64, message, &key.key, key.alg) {
                Ok(true) => {
                    ok = true;
                    break;
                }
                Ok(false) => {}
                Err(_) => return Err(invalid("malformed signature".into())),
            }
        }
        if !ok {
            return Err(invalid("bad signature".into()));
        }
        decode_json(p64).ok_or_else(|| invalid("payload is not a JSON object".into()))
    }

    fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&ProviderKey>, AuthError> {
        let of_alg = |k: &&ProviderKey| k.alg == alg;
        let mut found: Vec<&ProviderKey> = match kid {
            Some(kid) => {
                let by_kid: Vec<_> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if by_kid.is_empty() {
                    self.keys.iter().filter(|k| k.kid.is_none()).collect()
                } else {
                    by_kid
                }
            }
            None => self.keys.iter().collect(),
        };
        if found.is_empty() {
            let kid: String = kid.unwrap_or_default().chars().take(64).collect();
            return Err(invalid(format!("unknown kid {kid:?}")));
        }
        found.retain(of_alg);
        if found.is_empty() {
            return Err(invalid(format!("no key for algorithm {alg:?}")));
        }
        Ok(found)
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let leeway = leeway.as_secs_f64();
        match numeric_claim(claims, "exp")? {
            Some(exp) if now >= exp + leeway => return Err(invalid("token expired".into())),
            None if self.require_exp => return Err(invalid("token has no exp claim".into())),
            _ => {}
        }
        if let Some(nbf) = numeric_claim(claims, "nbf")? {
            if now + leeway < nbf {
                return Err(invalid("token not valid yet (nbf)".into()));
            }
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                Some(_) => return Err(invalid("issuer not accepted".into())),
                None => return Err(invalid("token has no iss claim".into())),
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|w| w == a))
            };
            match claims.get("aud") {
                None => return Err(invalid("token has no aud claim".into())),
                Some(Value::Array(list)) if list.iter().any(accepted) => {}
                Some(a) if accepted(a) => {}
                Some(_) => return Err(invalid("audience not accepted".into())),
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> AuthError {
    AuthError::InvalidToken(msg)
}

/// `exp` / `nbf`: absent, or a JSON number (NumericDate).
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(invalid(format!("{name} is not a number"))),
        },
    }
}

/// Base64url (no padding) JSON object.
fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The token of `Authorization: Bearer <jwt>` or `Bearer id_token="<jwt>"`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
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

fn read(base_dir: &Path, file: &str) -> Result<String, String> {
    let path = base_dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn b64url(field: &str, s: &str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwkError::Invalid(format!("jwk {field} is not base64url")))
}

fn str_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, JwkError> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| JwkError::Invalid(format!("jwk has no string {field:?}")))
}

/// One JWK: RSA (`n`, `e`) → RS256, EC P-256 (`x`, `y`) → ES256.
fn parse_jwk(v: &Value) -> Result<ProviderKey, JwkError> {
    if !v.is_object() {
        return Err(JwkError::Invalid("jwk is not a JSON object".into()));
    }
    let kty = str_field(v, "kty")?;
    if let Some(u) = v.get("use").and_then(Value::as_str) {
        if u != "sig" {
            return Err(JwkError::Unsupported(format!("key use {u:?} is not sig")));
        }
    }
    let kid = v.get("kid").and_then(Value::as_str).map(str::to_string);
    let declared = v.get("alg").and_then(Value::as_str);
    let (alg, key) = match kty {
        "RSA" => {
            let n = b64url("n", str_field(v, "n")?)?;
            let e = b64url("e", str_field(v, "e")?)?;
            check_rsa(&n, &e).map_err(JwkError::Invalid)?;
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            let crv = str_field(v, "crv")?;
            if crv != "P-256" {
                return Err(JwkError::Unsupported(format!(
                    "EC curve {crv:?} (only P-256)"
                )));
            }
            let x = b64url("x", str_field(v, "x")?)?;
            let y = b64url("y", str_field(v, "y")?)?;
            (Algorithm::ES256, ec_key(&x, &y).map_err(JwkError::Invalid)?)
        }
        other => {
            return Err(JwkError::Unsupported(format!(
                "key type {other:?} (only RSA and EC P-256)"
            )))
        }
    };
    match declared {
        None => {}
        Some(d) if d == format!("{alg:?}") => {}
        Some(d) => {
            return Err(JwkError::Unsupported(format!(
                "key alg {d:?} (only RS256 and ES256)"
            )))
        }
    }
    Ok(ProviderKey { kid, alg, key })
}

fn ec_key(x: &[u8], y: &[u8]) -> Result<DecodingKey, String> {
    if x.len() != 32 || y.len() != 32 {
        return Err("EC P-256 coordinates must be 32 bytes".into());
    }
    DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
        .map_err(|e| e.to_string())
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = strip_zeros(n);
    let bits = match n.first() {
        Some(b) => n.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    };
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "RSA modulus has {bits} bits (2048 to 8192 accepted)"
        ));
    }
    let e = strip_zeros(e);
    if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA exponent is invalid".into());
    }
    Ok(())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn parse_jwks(text: &str) -> Result<Vec<ProviderKey>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().enumerate() {
        match parse_jwk(k) {
            Ok(key) => keys.push(key),
            Err(JwkError::Unsupported(why)) => skipped.push(format!("key {i}: {why}")),
            Err(JwkError::Invalid(why)) => return Err(format!("key {i}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable RS256/ES256 key ({})",
            skipped.join("; ")
        ));
    }
    Ok(keys)
}

// --- PEM public keys (SubjectPublicKeyInfo or PKCS#1 RSAPublicKey) ---

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn parse_pem(text: &str) -> Result<ProviderKey, String> {
    let start = text.find("-----BEGIN ").ok_or("no PEM block")?;
    let after = &text[start + 11..];
    let (label, body) = after.split_once("-----").ok_or("bad PEM header")?;
    let end = body.find("-----END ").ok_or("unterminated PEM block")?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = STANDARD.decode(b64).map_err(|_| "PEM body is not base64")?;
    let (alg, key) = match label {
        "PUBLIC KEY" => spki_key(&der)?,
        "RSA PUBLIC KEY" => (Algorithm::RS256, rsa_pkcs1_key(&der)?),
        l if l.contains("PRIVATE") => {
            return Err("holds a private key; give the public key (openssl pkey -pubout)".into())
        }
        "CERTIFICATE" => {
            return Err(
                "holds a certificate; give its public key (openssl x509 -pubkey -noout)".into(),
            )
        }
        l => return Err(format!("unsupported PEM block {l:?}")),
    };
    Ok(ProviderKey {
        kid: None,
        alg,
        key,
    })
}

/// One DER TLV: (tag, content, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize),
            2 + n,
        )
    };
    let content = input.get(hdr..hdr.checked_add(len)?)?;
    Some((tag, content, &input[hdr + len..]))
}

fn der_expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    match der_tlv(input) {
        Some((t, c, rest)) if t == tag => Ok((c, rest)),
        _ => Err("malformed DER public key".into()),
    }
}

fn spki_key(der: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    let (spki, _) = der_expect(der, 0x30)?;
    let (alg_id, rest) = der_expect(spki, 0x30)?;
    let (bits, _) = der_expect(rest, 0x03)?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("malformed DER public key".into()),
    };
    let (oid, params) = der_expect(alg_id, 0x06)?;
    if oid == OID_RSA {
        Ok((Algorithm::RS256, rsa_pkcs1_key(key)?))
    } else if oid == OID_EC {
        let (curve, _) = der_expect(params, 0x06)?;
        if curve != OID_P256 {
            return Err("EC key is not on P-256 (only ES256 is supported)".into());
        }
        match key.split_first() {
            Some((4, xy)) if xy.len() == 64 => {
                Ok((Algorithm::ES256, ec_key(&xy[..32], &xy[32..])?))
            }
            _ => Err("EC public key is not an uncompressed P-256 point".into()),
        }
    } else {
        Err("public key is neither RSA nor EC (only RS256 and ES256 are supported)".into())
    }
}

fn rsa_pkcs1_key(der: &[u8]) -> Result<DecodingKey, String> {
    let (seq, _) = der_expect(der, 0x30)?;
    let (n, rest) = der_expect(seq, 0x02)?;
    let (e, _) = der_expect(rest, 0x02)?;
    check_rsa(n, e)?;
    Ok(DecodingKey::from_rsa_raw_components(
        strip_zeros(n),
        strip_zeros(e),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::collections::BTreeMap;

    // Fixed test keys (generated with openssl for these tests only).
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCWecJ7aBSHRmJV
MfojFQkvCwwiEfwMHOcgGmEizfGgzmsZmfYSSnCDi9HvfUvyc1Qaw2jGlefIAQRi
L3I+XMqEitAI31tDdtAFtJdNDokBI/jHP8bRGjoYD52NftA93Fn2YINQpKh2h7LL
A8nd4HmkmJKgQQYlc3L+HTSGaq49ms1bkeQMHbddvTRqxy/PMTrtI5kPqQnhBWeR
VCOuOWqLjhfos80xmO0qw6A5Nc3hzhdnBs/nX1gMLJrEINDYYwUYWXnunIatrxWS
Hz7hFLKBTsSjeyhOTAU6ued9EH56saSEUnqKSRjTDglS/sveHh6YJ0gfz4PX+vCE
hO6AqD7VAgMBAAECggEAH9HWnOb49FQfZhmf5fxESWTiJ3A7JsqT21eIs+Xt0w3j
WvISNXL1UPPnrGeIAFh/7/rjdJ7teP8yEJss4uAXWSjLbhzhPSZqPdKe7gYFVa7o
JCYp4jzUDRN8QxgObA5lHbLyAcMX9pyiY8jEzrzxrCsxUl79sDy2E+NUIJp9hvwa
hwqdzgV7NbqNnSwUIt3PYVfewJXD4Obgu7yI5S0qOKlPVfk0BjObPjyZFyCp2y0t
ZpzcLOwCjv7a2xio6h/qcOz2vCHCRUHJGBPnwMWgWwMGcOgICj8cXgWfuMTx6YWc
PsNY2/6Y9pQ+Gdzo82nmLpscZuSFAXxUTOBG/X/9fwKBgQDQ0aV7YH7LE9/VQW+6
YukuIq09h41CNTIcSta6YESIKZD8CA8+Jnj/9f8aiB35gFL88qKgez457Ou9yDOY
lPVIQ9R8m7qFSeRbBQee01daY7aRId+u7AB1KAF5xLi+qtJDCHmFsx46AhxGFBPX
hcaftBUTVusFM9UUgokK0BQwcwKBgQC4eXY+YBA1xvSAiXfyKxDJAOVbRh2QL6ri
FQGuP7jz0u2xl1pPFZ+15xD988h2klJCZ7bmP3gH3zhn1ToExofRx+LYTaMEK2wb
RBk56DvN1BqultniW4psHTaB8KvcLVCcnceUscoRAwA2ye6IRoTHbpciMTLR0okB
PDBosf3plwKBgCeJCcOqKVdZk+9UTEsFnxBVEGet2ljGqY4hvTXcNB1zgTe2buxd
bFtJv9rOGp66ZPvvFEs+CjH9YUS1Os+QpD/iV8Cf21iQ/OMeuKqhaNB8QHyJ5UfA
9vU3ddAQJsoynUyDtj5SA08IR0IdWwRbF5f1CGh49FYv0g/oBvo9GxVxAoGAVtwK
CvCccVXOhj80FPimHJ6pX8Kx5NQs9+rAMdWbNmMYvEfxo88gtjuoSorg1sOqq829
1sgHsl0uZ+WEPf9ksCgX7ZUQrsPrUSNNZXCtyAqYzaAF04kasjFHGwPBSBimHjhE
YwUbicsJ7MJD6DKcDnNKAjV8IkOpcsVuXb2BOt0CgYEArV3Jo/2gMXfw3m4ZaWeE
RtHd0ta9/VuWVXbZRGaY3+m6FEz4NSX70BMPb3xANvpmBTUpgD7a8wdz+h5k4ZOT
1SewJXZrI57I3D2rfuyyOqGS3Jgn9m9UGN9DkVun2mSrysxVc8L8xrkzjm2pVl/+
hRgM45IhniCqJlX/dZ39tFk=
-----END PRIVATE KEY-----";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlnnCe2gUh0ZiVTH6IxUJ
LwsMIhH8DBznIBphIs3xoM5rGZn2Ekpwg4vR731L8nNUGsNoxpXnyAEEYi9yPlzK
hIrQCN9bQ3bQBbSXTQ6JASP4xz/G0Ro6GA+djX7QPdxZ9mCDUKSodoeyywPJ3eB5
pJiSoEEGJXNy/h00hmquPZrNW5HkDB23Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlq
i44X6LPNMZjtKsOgOTXN4c4XZwbP519YDCyaxCDQ2GMFGFl57pyGra8Vkh8+4RSy
gU7Eo3soTkwFOrnnfRB+erGkhFJ6ikkY0w4JUv7L3h4emCdIH8+D1/rwhITugKg+
1QIDAQAB
-----END PUBLIC KEY-----";
    const RSA_PUBLIC_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAlnnCe2gUh0ZiVTH6IxUJLwsMIhH8DBznIBphIs3xoM5rGZn2Ekpw
g4vR731L8nNUGsNoxpXnyAEEYi9yPlzKhIrQCN9bQ3bQBbSXTQ6JASP4xz/G0Ro6
GA+djX7QPdxZ9mCDUKSodoeyywPJ3eB5pJiSoEEGJXNy/h00hmquPZrNW5HkDB23
Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlqi44X6LPNMZjtKsOgOTXN4c4XZwbP519Y
DCyaxCDQ2GMFGFl57pyGra8Vkh8+4RSygU7Eo3soTkwFOrnnfRB+erGkhFJ6ikkY
0w4JUv7L3h4emCdIH8+D1/rwhITugKg+1QIDAQAB
-----END RSA PUBLIC KEY-----";
    const RSA_N: &str = "lnnCe2gUh0ZiVTH6IxUJLwsMIhH8DBznIBphIs3xoM5rGZn2Ekpwg4vR731L8nNUGsNoxpXnyAEEYi9yPlzKhIrQCN9bQ3bQBbSXTQ6JASP4xz_G0Ro6GA-djX7QPdxZ9mCDUKSodoeyywPJ3eB5pJiSoEEGJXNy_h00hmquPZrNW5HkDB23Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlqi44X6LPNMZjtKsOgOTXN4c4XZwbP519YDCyaxCDQ2GMFGFl57pyGra8Vkh8-4RSygU7Eo3soTkwFOrnnfRB-erGkhFJ6ikkY0w4JUv7L3h4emCdIH8-D1_rwhITugKg-1Q";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk4SgouBXDR9+BPLI
AJat1Lxu6cv+asjSS3TS+cwtIXOhRANCAASm/uhD9RwAVHVMCPcNP3+zz0mZcNMN
FbjzT76qLF6wgXPNTP7JJ4VLBliCy92O/vX5JASg9PvLgXN2PVTY7v9i
-----END PRIVATE KEY-----";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpv7oQ/UcAFR1TAj3DT9/s89JmXDT
DRW480++qixesIFzzUz+ySeFSwZYgsvdjv71+SQEoPT7y4Fzdj1U2O7/Yg==
-----END PUBLIC KEY-----";
    const EC_X: &str = "pv7oQ_UcAFR1TAj3DT9_s89JmXDTDRW480--qixesIE";
    const EC_Y: &str = "c81M_sknhUsGWILL3Y7-9fkkBKD0-8uBc3Y9VNju_2I";
    const EC2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEKzOYc4YlLSiz18j
yfZOwu5zaCW8SbjArr/KaJ/9fcqhRANCAASK2KmU5emvSBF8BDF1JIy8EOEJTajS
q5o17HKqPEpNwNmoE1EJxxiEr12PNJB+XtyVl0H24zFf2DcyXiMhsnfR
-----END PRIVATE KEY-----";
    const EC2_X: &str = "itiplOXpr0gRfAQxdSSMvBDhCU2o0quaNexyqjxKTcA";
    const EC2_Y: &str = "2agTUQnHGISvXY80kH5e3JWXQfbjMV_YNzJeIyGyd9E";
    const EC384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEBthfLkn9hZ8KoIquUw0N0XJvbNtllZ7j
0x7LKQ1eq9BzPrhMEvAM8ckUeT4zMWfnQ/wwSyILzBfQKJnK/Rl1J2zjSyjQtaxu
WTZYap9TblGPFdBbzRTjCy4cIEYy20T+
-----END PUBLIC KEY-----";

    const NOW: u64 = 1_700_000_000;
    const LEEWAY: Duration = Duration::from_secs(30);

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn rsa_jwk() -> String {
        json!({"kty": "RSA", "e": "AQAB", "n": RSA_N}).to_string()
    }

    fn ec_jwk() -> String {
        json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y}).to_string()
    }

    fn raw_jwk(jwk: &str) -> RawJwtProvider {
        RawJwtProvider {
            name: "corp".into(),
            jwk: Some(jwk.into()),
            jwks_file: None,
            pem_file: None,
            issuer: None,
            audiences: vec![],
            claims_to_headers: BTreeMap::new(),
            key_claim: None,
        }
    }

    fn provider(jwk: &str) -> JwtProvider {
        JwtProvider::from_raw(&raw_jwk(jwk), Path::new(".")).unwrap()
    }

    fn claims() -> Value {
        json!({"sub": "alice", "exp": NOW + 600, "iat": NOW})
    }

    fn sign(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            Algorithm::HS256 => EncodingKey::from_secret(pem.as_bytes()),
            _ => unreachable!(),
        };
        encode(&header, claims, &key).unwrap()
    }

    fn rs(claims: &Value) -> String {
        sign(Algorithm::RS256, None, RSA_PRIVATE, claims)
    }

    fn es(claims: &Value) -> String {
        sign(Algorithm::ES256, None, EC_PRIVATE, claims)
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn check(p: &JwtProvider, token: &str) -> Result<JwtIdentity, AuthError> {
        p.verify(&bearer(&format!("Bearer {token}")), LEEWAY, now())
    }

    fn reason(r: Result<JwtIdentity, AuthError>) -> String {
        match r {
            Err(AuthError::InvalidToken(m)) => m,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn rs256_valid() {
        let p = provider(&rsa_jwk());
        let id = check(&p, &rs(&claims())).unwrap();
        assert_eq!(id.subject, "alice");
        assert!(id.headers.is_empty());
        // Scheme is case-insensitive.
        let h = bearer(&format!("bearer  {}", rs(&claims())));
        assert!(p.verify(&h, LEEWAY, now()).is_ok());
    }

    #[test]
    fn es256_valid() {
        let p = provider(&ec_jwk());
        assert_eq!(check(&p, &es(&claims())).unwrap().subject, "alice");
    }

    #[test]
    fn id_token_form() {
        let p = provider(&rsa_jwk());
        let t = rs(&claims());
        for form in [
            format!("Bearer id_token=\"{t}\""),
            format!("Bearer id_token={t}"),
        ] {
            assert_eq!(
                p.verify(&bearer(&form), LEEWAY, now()).unwrap().subject,
                "alice"
            );
        }
    }

    #[test]
    fn missing_credentials() {
        let p = provider(&rsa_jwk());
        for h in [
            HeaderMap::new(),
            bearer("Basic YWxhZGRpbjpvcGVu"),
            bearer("Bearer"),
            bearer("Bearer   "),
        ] {
            assert!(
                matches!(p.verify(&h, LEEWAY, now()), Err(AuthError::Missing(_))),
                "{h:?}"
            );
        }
        let mut h = bearer("Bearer a.b.c");
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer d.e.f"));
        assert!(reason(p.verify(&h, LEEWAY, now())).contains("several"));
    }

    #[test]
    fn expiry_and_nbf_with_leeway() {
        let p = provider(&rsa_jwk());
        let expired = json!({"sub": "a", "exp": NOW - 31});
        assert_eq!(reason(check(&p, &rs(&expired))), "token expired");
        let in_leeway = json!({"sub": "a", "exp": NOW - 29});
        assert!(check(&p, &rs(&in_leeway)).is_ok());
        let future = json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 31});
        assert!(reason(check(&p, &rs(&future))).contains("nbf"));
        let soon = json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 29});
        assert!(check(&p, &rs(&soon)).is_ok());
        let float = json!({"sub": "a", "exp": (NOW as f64) + 0.5});
        assert!(check(&p, &rs(&float)).is_ok());
        let text = json!({"sub": "a", "exp": "tomorrow"});
        assert!(reason(check(&p, &rs(&text))).contains("exp is not a number"));
    }

    #[test]
    fn exp_required_unless_disabled() {
        let mut p = provider(&rsa_jwk());
        let no_exp = json!({"sub": "a"});
        assert!(reason(check(&p, &rs(&no_exp))).contains("no exp"));
        p.set_require_exp(false);
        assert!(check(&p, &rs(&no_exp)).is_ok());
    }

    #[test]
    fn wrong_key_and_tampering() {
        // EC token signed by another P-256 key.
        let p = provider(&ec_jwk());
        let t = sign(Algorithm::ES256, None, EC2_PRIVATE, &claims());
        assert_eq!(reason(check(&p, &t)), "bad signature");
        // RSA token whose payload was swapped.
        let p = provider(&rsa_jwk());
        let t = rs(&claims());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&json!({"sub": "root", "exp": NOW + 60})),
            parts[2]
        );
        assert_eq!(reason(check(&p, &forged)), "bad signature");
        let bad_sig = format!("{}.{}.!!!", parts[0], parts[1]);
        assert!(check(&p, &bad_sig).is_err());
        // ES token against an RSA-only provider.
        assert!(reason(check(&p, &es(&claims()))).contains("no key for algorithm"));
    }

    #[test]
    fn refused_algorithms() {
        let p = provider(&rsa_jwk());
        let payload = b64(&claims());
        let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
        assert!(reason(check(&p, &none)).contains("alg none"));
        let none = format!("{}.{payload}.", b64(&json!({"alg": "NONE"})));
        assert!(reason(check(&p, &none)).contains("alg none"));
        // HS256 signed with the RSA public key as secret (algorithm confusion).
        let hs = sign(Algorithm::HS256, None, RSA_PUBLIC, &claims());
        assert!(reason(check(&p, &hs)).contains("\"HS256\" is not allowed"));
        let rs384 = format!("{}.{payload}.AAAA", b64(&json!({"alg": "RS384"})));
        assert!(reason(check(&p, &rs384)).contains("RS384"));
        let noalg = format!("{}.{payload}.AAAA", b64(&json!({"typ": "JWT"})));
        assert!(reason(check(&p, &noalg)).contains("no alg"));
        let crit = format!(
            "{}.{payload}.AAAA",
            b64(&json!({"alg": "RS256", "crit": ["x"]}))
        );
        assert!(reason(check(&p, &crit)).contains("critical"));
    }

    #[test]
    fn malformed_tokens_never_panic() {
        let p = provider(&rsa_jwk());
        for t in [
            "abc",
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "...",
            "%%%.%%%.%%%",
            "eyJhbGciOiJSUzI1NiJ9.e30.",
            "eyJhbGciOiJSUzI1NiJ9..",
            "W10.e30.AAAA",
            "bnVsbA.e30.AAAA",
        ] {
            assert!(
                matches!(check(&p, t), Err(AuthError::InvalidToken(_))),
                "{t}"
            );
        }
        let long = "a".repeat(MAX_TOKEN + 1);
        assert!(reason(check(&p, &long)).contains("too long"));
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff.\xfe.\xfd").unwrap(),
        );
        assert!(p.verify(&h, LEEWAY, now()).is_err());
        // Valid signature but payload not an object.
        let t = sign(Algorithm::RS256, None, RSA_PRIVATE, &json!([1, 2]));
        assert!(reason(check(&p, &t)).contains("JSON object"));
    }

    #[test]
    fn issuer_and_audiences() {
        let mut raw = raw_jwk(&rsa_jwk());
        raw.issuer = Some("https://idp.example".into());
        raw.audiences = vec!["api-1".into(), "api-2".into()];
        let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
        let ok = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": "api-2"});
        assert!(check(&p, &rs(&ok)).is_ok());
        let ok = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x", "api-1"]});
        assert!(check(&p, &rs(&ok)).is_ok());
        let bad_iss = json!({"sub": "a", "exp": NOW + 60, "iss": "https://evil", "aud": "api-1"});
        assert!(reason(check(&p, &rs(&bad_iss))).contains("issuer"));
        let no_iss = json!({"sub": "a", "exp": NOW + 60, "aud": "api-1"});
        assert!(reason(check(&p, &rs(&no_iss))).contains("no iss"));
        let bad_aud =
            json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x"]});
        assert!(reason(check(&p, &rs(&bad_aud))).contains("audience"));
        let no_aud = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example"});
        assert!(reason(check(&p, &rs(&no_aud))).contains("no aud"));
    }

    #[test]
    fn subject_and_claims_to_headers() {
        let mut raw = raw_jwk(&ec_jwk());
        raw.key_claim = Some("client_id".into());
        for (c, h) in [
            ("email", "X-User-Email"),
            ("roles", "x-user-roles"),
            ("level", "x-level"),
            ("evil", "x-evil"),
            ("absent", "x-absent"),
            ("nothing", "x-nothing"),
        ] {
            raw.claims_to_headers.insert(c.into(), h.into());
        }
        let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
        let mut names: Vec<&str> = p.header_names().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names.len(), 6);
        let c = json!({
            "client_id": "app-7", "exp": NOW + 60, "email": "a@example.com",
            "roles": ["admin", "dev"], "level": 3, "evil": "x\r\nInjected: 1", "nothing": null
        });
        let id = check(&p, &es(&c)).unwrap();
        assert_eq!(id.subject, "app-7");
        let got: BTreeMap<&str, &str> = id
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(got.get("x-user-email"), Some(&"a@example.com"));
        assert_eq!(got.get("x-user-roles"), Some(&r#"["admin","dev"]"#));
        assert_eq!(got.get("x-level"), Some(&"3"));
        assert_eq!(got.len(), 3);
        // Numeric subjects are accepted; missing ones are refused.
        let numeric = json!({"client_id": 42, "exp": NOW + 60});
        assert_eq!(check(&p, &es(&numeric)).unwrap().subject, "42");
        let missing = json!({"sub": "a", "exp": NOW + 60});
        assert!(reason(check(&p, &es(&missing))).contains("client_id"));
        let empty = json!({"client_id": "", "exp": NOW + 60});
        assert!(check(&p, &es(&empty)).is_err());
    }

    #[test]
    fn config_errors() {
        let base = Path::new(".");
        let mut raw = raw_jwk(&rsa_jwk());
        raw.pem_file = Some("x.pem".into());
        assert!(JwtProvider::from_raw(&raw, base)
            .unwrap_err()
            .contains("exactly one"));
        raw.jwk = None;
        raw.pem_file = None;
        assert!(JwtProvider::from_raw(&raw, base).is_err());
        for bad in [
            "not json".to_string(),
            "[]".to_string(),
            json!({"kty": "oct", "k": "c2VjcmV0"}).to_string(),
            json!({"kty": "RSA", "e": "AQAB"}).to_string(),
            json!({"kty": "RSA", "e": "AQAB", "n": "AQAB"}).to_string(), // tiny modulus
            json!({"kty": "RSA", "e": "AQAB", "n": "%%%"}).to_string(),
            json!({"kty": "RSA", "e": "", "n": RSA_N}).to_string(),
            json!({"kty": "EC", "crv": "P-384", "x": EC_X, "y": EC_Y}).to_string(),
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": EC_Y}).to_string(),
            json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "alg": "RS512"}).to_string(),
            json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "use": "enc"}).to_string(),
        ] {
            assert!(
                JwtProvider::from_raw(&raw_jwk(&bad), base).is_err(),
                "{bad}"
            );
        }
        let mut raw = raw_jwk(&rsa_jwk());
        raw.claims_to_headers.insert("sub".into(), "Host".into());
        assert!(JwtProvider::from_raw(&raw, base)
            .unwrap_err()
            .contains("reserved"));
        let mut raw = raw_jwk(&rsa_jwk());
        raw.claims_to_headers
            .insert("sub".into(), "bad header".into());
        assert!(JwtProvider::from_raw(&raw, base).is_err());
        let mut raw = raw_jwk(&rsa_jwk());
        raw.claims_to_headers.insert("sub".into(), "x-a".into());
        raw.claims_to_headers.insert("email".into(), "X-A".into());
        assert!(JwtProvider::from_raw(&raw, base)
            .unwrap_err()
            .contains("twice"));
        let mut raw = raw_jwk(&rsa_jwk());
        raw.key_claim = Some(String::new());
        assert!(JwtProvider::from_raw(&raw, base).is_err());
        // Declared alg matching the key type is fine.
        let ok = json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "alg": "RS256", "use": "sig"});
        assert!(JwtProvider::from_raw(&raw_jwk(&ok.to_string()), base).is_ok());
    }

    fn file_provider(
        dir: &Path,
        field: &str,
        file: &str,
        text: &str,
    ) -> Result<JwtProvider, String> {
        std::fs::write(dir.join(file), text).unwrap();
        let mut raw = raw_jwk("");
        raw.jwk = None;
        match field {
            "pem" => raw.pem_file = Some(file.into()),
            _ => raw.jwks_file = Some(file.into()),
        }
        JwtProvider::from_raw(&raw, dir)
    }

    #[test]
    fn pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = file_provider(d, "pem", "rsa.pem", RSA_PUBLIC).unwrap();
        assert!(check(&p, &rs(&claims())).is_ok());
        assert!(check(&p, &es(&claims())).is_err());
        let p = file_provider(d, "pem", "rsa1.pem", RSA_PUBLIC_PKCS1).unwrap();
        assert!(check(&p, &rs(&claims())).is_ok());
        let p = file_provider(d, "pem", "ec.pem", &format!("# comment\n{EC_PUBLIC}\n")).unwrap();
        assert!(check(&p, &es(&claims())).is_ok());
        assert!(check(&p, &rs(&claims())).is_err());
        let e = file_provider(d, "pem", "priv.pem", RSA_PRIVATE).unwrap_err();
        assert!(e.contains("private key"), "{e}");
        let e = file_provider(d, "pem", "p384.pem", EC384_PUBLIC).unwrap_err();
        assert!(e.contains("P-256"), "{e}");
        assert!(file_provider(d, "pem", "junk.pem", "hello").is_err());
        let truncated = &RSA_PUBLIC[..200];
        assert!(file_provider(d, "pem", "trunc.pem", truncated).is_err());
        let mut raw = raw_jwk("");
        raw.jwk = None;
        raw.pem_file = Some("does-not-exist.pem".into());
        assert!(JwtProvider::from_raw(&raw, d)
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn jwks_with_kid() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "e": "AQAB", "n": RSA_N, "kid": "rsa-1", "use": "sig"},
            {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec-1"},
            {"kty": "EC", "crv": "P-256", "x": EC2_X, "y": EC2_Y, "kid": "ec-2"},
        ]});
        let p = file_provider(dir.path(), "jwks", "keys.json", &jwks.to_string()).unwrap();
        let t = sign(Algorithm::ES256, Some("ec-1"), EC_PRIVATE, &claims());
        assert!(check(&p, &t).is_ok());
        let t = sign(Algorithm::ES256, Some("ec-2"), EC2_PRIVATE, &claims());
        assert!(check(&p, &t).is_ok());
        // Right kid, wrong signer.
        let t = sign(Algorithm::ES256, Some("ec-2"), EC_PRIVATE, &claims());
        assert_eq!(reason(check(&p, &t)), "bad signature");
        let t = sign(Algorithm::RS256, Some("rsa-1"), RSA_PRIVATE, &claims());
        assert!(check(&p, &t).is_ok());
        let t = sign(Algorithm::RS256, Some("rsa-9"), RSA_PRIVATE, &claims());
        assert!(reason(check(&p, &t)).contains("unknown kid"));
        // kid naming a key of another algorithm.
        let t = sign(Algorithm::RS256, Some("ec-1"), RSA_PRIVATE, &claims());
        assert!(reason(check(&p, &t)).contains("no key for algorithm"));
        // No kid: every key of the algorithm is tried.
        let t = sign(Algorithm::ES256, None, EC2_PRIVATE, &claims());
        assert!(check(&p, &t).is_ok());
        // The HMAC key was skipped: an HS256 token is refused.
        let t = sign(Algorithm::HS256, Some("hmac"), "secret", &claims());
        assert!(check(&p, &t).is_err());

        let e = file_provider(
            dir.path(),
            "jwks",
            "none.json",
            r#"{"keys":[{"kty":"oct","k":"AA"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("no usable"), "{e}");
        assert!(file_provider(
            dir.path(),
            "jwks",
            "bad.json",
            r#"{"keys":[{"kty":"RSA"}]}"#
        )
        .is_err());
        assert!(file_provider(dir.path(), "jwks", "nokeys.json", r#"{"k":[]}"#).is_err());
    }

    #[test]
    fn mutated_pem_never_panics() {
        let mut state = 0x0123_4567_89ab_cdefu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1, EC_PUBLIC, EC384_PUBLIC] {
            let (label, body) = pem.split_once('\n').unwrap();
            let body = body.trim_end().trim_end_matches(|c| c != '\n').trim_end();
            let der = STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .unwrap();
            let end = label.replace("BEGIN", "END");
            for _ in 0..2000 {
                let mut d = der.clone();
                match next() % 3 {
                    0 => d.truncate((next() % (d.len() as u64 + 1)) as usize),
                    _ => {
                        let i = (next() % d.len() as u64) as usize;
                        d[i] = next() as u8;
                    }
                }
                let text = format!("{label}\n{}\n{end}\n", STANDARD.encode(&d));
                let _ = parse_pem(&text);
            }
        }
        for t in [
            "-----BEGIN ",
            "-----BEGIN X-----",
            "-----BEGIN PUBLIC KEY-----\n-----END ",
        ] {
            assert!(parse_pem(t).is_err());
        }
        assert!(der_tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(der_tlv(&[0x30, 0x80]).is_none());
        assert!(der_tlv(&[0x30]).is_none());
    }

    #[test]
    fn kid_on_single_jwk_without_kid_is_ignored() {
        let p = provider(&rsa_jwk());
        let t = sign(Algorithm::RS256, Some("whatever"), RSA_PRIVATE, &claims());
        assert!(check(&p, &t).is_ok());
        let p = provider(&json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "kid": "k1"}).to_string());
        assert!(reason(check(&p, &t)).contains("unknown kid"));
        assert!(format!("{p:?}").contains("corp"));
        assert_eq!(p.name(), "corp");
    }
}
