//! Loading a provider's public keys (JWK, JWKS, PEM) and pinning each to one
//! algorithm; `jsonwebtoken` does the decoding. Also the last good set fetched
//! from each `jwks_url`.

use super::{JwkError, ProviderKey};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

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

/// The algorithms a key of this family may be pinned to, and its default.
pub(super) fn family_algorithms(
    kty: &str,
    crv: Option<&str>,
) -> Result<(&'static [Algorithm], Algorithm), String> {
    use Algorithm::*;
    const RSA: &[Algorithm] = &[RS256, RS384, RS512, PS256, PS384, PS512];
    match (kty, crv) {
        ("RSA", _) => Ok((RSA, RS256)),
        ("EC", Some("P-256")) => Ok((&[ES256], ES256)),
        ("EC", Some("P-384")) => Ok((&[ES384], ES384)),
        ("EC", c) => Err(format!(
            "EC curve {:?} (only P-256 and P-384)",
            c.unwrap_or("")
        )),
        ("OKP", Some("Ed25519")) => Ok((&[EdDSA], EdDSA)),
        ("OKP", c) => Err(format!("OKP curve {:?} (only Ed25519)", c.unwrap_or(""))),
        (other, _) => Err(format!("key type {other:?} (only RSA, EC and OKP)")),
    }
}

/// The pinned algorithm of a key: its declared `alg` (JWK) or the provider's
/// `algorithm`, which must suit the key; else the family's default.
fn pin(
    allowed: &[Algorithm],
    default: Algorithm,
    declared: Option<&str>,
    configured: Option<Algorithm>,
) -> Result<Algorithm, JwkError> {
    if let Some(d) = declared {
        return allowed
            .iter()
            .copied()
            .find(|a| format!("{a:?}") == d)
            .ok_or_else(|| JwkError::Unsupported(format!("key alg {d:?} does not suit the key")));
    }
    match configured {
        Some(c) if allowed.contains(&c) => Ok(c),
        Some(_) | None => Ok(default),
    }
}

/// One JWK (RSA, EC P-256 / P-384, OKP Ed25519), loaded by `DecodingKey::from_jwk`.
pub(super) fn parse_jwk(v: &Value, configured: Option<Algorithm>) -> Result<ProviderKey, JwkError> {
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
    let crv = v.get("crv").and_then(Value::as_str);
    let (allowed, default) = family_algorithms(kty, crv).map_err(JwkError::Unsupported)?;
    let alg = pin(
        allowed,
        default,
        v.get("alg").and_then(Value::as_str),
        configured,
    )?;
    // What the crate does not check: RSA sizes and EC coordinate lengths.
    match kty {
        "RSA" => {
            let n = b64url("n", str_field(v, "n")?)?;
            let e = b64url("e", str_field(v, "e")?)?;
            check_rsa(&n, &e).map_err(JwkError::Invalid)?;
        }
        "EC" => {
            let want = if alg == Algorithm::ES384 { 48 } else { 32 };
            let x = b64url("x", str_field(v, "x")?)?;
            let y = b64url("y", str_field(v, "y")?)?;
            if x.len() != want || y.len() != want {
                return Err(JwkError::Invalid(format!(
                    "EC {} coordinates must be {want} bytes",
                    crv.unwrap_or("")
                )));
            }
        }
        _ => {
            let x = b64url("x", str_field(v, "x")?)?;
            if x.len() != 32 {
                return Err(JwkError::Invalid("Ed25519 key must be 32 bytes".into()));
            }
        }
    }
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(v.clone()).map_err(|e| JwkError::Invalid(format!("jwk: {e}")))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwkError::Invalid(format!("jwk: {e}")))?;
    Ok(ProviderKey { kid, alg, key })
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

pub(super) fn parse_jwks(
    text: &str,
    configured: Option<Algorithm>,
) -> Result<Vec<ProviderKey>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().enumerate() {
        match parse_jwk(k, configured) {
            Ok(key) => keys.push(key),
            Err(JwkError::Unsupported(why)) => skipped.push(format!("key {i}: {why}")),
            Err(JwkError::Invalid(why)) => return Err(format!("key {i}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(format!("no usable key ({})", skipped.join("; ")));
    }
    Ok(keys)
}

// --- PEM public keys (SubjectPublicKeyInfo or PKCS#1 RSAPublicKey) ---
// The crate decodes them; the key's kind (and EC curve) is read from the
// algorithm identifier's OID to pin the algorithm.

const OID_RSA: &[u8] = &[6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[6, 7, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[6, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[6, 5, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[6, 3, 0x2b, 0x65, 0x70];

pub(super) fn parse_pem(text: &str, configured: Option<Algorithm>) -> Result<ProviderKey, String> {
    let start = text.find("-----BEGIN ").ok_or("no PEM block")?;
    let after = &text[start + 11..];
    let (label, body) = after.split_once("-----").ok_or("bad PEM header")?;
    let end = body.find("-----END ").ok_or("unterminated PEM block")?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = STANDARD.decode(b64).map_err(|_| "PEM body is not base64")?;
    let block = &text[start..];
    let bad = |e: jsonwebtoken::errors::Error| format!("malformed public key: {e}");
    // The algorithm identifier sits in the first bytes of a SubjectPublicKeyInfo.
    let head = &der[..der.len().min(32)];
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    let (family, key) = match label {
        "RSA PUBLIC KEY" => ("RSA", None),
        "PUBLIC KEY" if has(OID_RSA) => ("RSA", None),
        "PUBLIC KEY" if has(OID_EC) && has(OID_P256) => ("EC", Some("P-256")),
        "PUBLIC KEY" if has(OID_EC) && has(OID_P384) => ("EC", Some("P-384")),
        "PUBLIC KEY" if has(OID_EC) => {
            return Err("EC key is not on P-256 or P-384 (ES256, ES384)".into())
        }
        "PUBLIC KEY" if has(OID_ED25519) => ("OKP", Some("Ed25519")),
        "PUBLIC KEY" => {
            return Err("public key is neither RSA, EC nor Ed25519".into());
        }
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
    let (allowed, default) = family_algorithms(family, key)?;
    let alg = match pin(allowed, default, None, configured) {
        Ok(a) => a,
        Err(JwkError::Unsupported(m) | JwkError::Invalid(m)) => return Err(m),
    };
    let key = match family {
        "RSA" => DecodingKey::from_rsa_pem(block.as_bytes()).map_err(bad)?,
        "EC" => DecodingKey::from_ec_pem(block.as_bytes()).map_err(bad)?,
        _ => DecodingKey::from_ed_pem(block.as_bytes()).map_err(bad)?,
    };
    Ok(ProviderKey {
        kid: None,
        alg,
        key,
    })
}

type CacheKey = (String, Option<Algorithm>);

/// The last good set fetched from each `jwks_url`, so that a reload does not
/// start without keys (nor lose them when the IdP is down at that moment).
static LAST_GOOD: std::sync::Mutex<Vec<(CacheKey, Vec<ProviderKey>)>> =
    std::sync::Mutex::new(Vec::new());

pub(super) fn last_good(url: &http::Uri, alg: Option<Algorithm>) -> Option<Vec<ProviderKey>> {
    let key = (url.to_string(), alg);
    let cache = LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
}

pub(super) fn remember(url: &http::Uri, alg: Option<Algorithm>, keys: &[ProviderKey]) {
    let key = (url.to_string(), alg);
    let mut cache = LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|(k, _)| *k != key);
    cache.push((key, keys.to_vec()));
}
