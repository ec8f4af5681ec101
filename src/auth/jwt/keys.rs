//! A provider's public keys: loaded from a JWK, a JWKS or a PEM file by
//! `jsonwebtoken`, each pinned to one algorithm; and the last good set fetched
//! from each `jwks_url`, kept across reloads.
//!
//! The crate decodes the keys and verifies signatures. What stays here is what it
//! does not decide: which algorithm a key may verify (its family, the EC curve, a
//! declared `alg`), whether a JWKS entry is usable at all, and the sizes of RSA
//! moduli and EC / Ed25519 points (checked once, at load).

use super::token::invalid;
use crate::auth::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use simple_asn1::ASN1Block;
use std::sync::{Arc, Mutex};

/// A verification key and the one algorithm it may verify.
#[derive(Clone)]
pub(super) struct ProviderKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
    /// What the crate checks when it decodes a token with this key: the header's
    /// `alg` is this key's, and the key's family suits it. The claims (time,
    /// issuer, audience) are checked by `super::claims`.
    pub(super) validation: Validation,
}

impl ProviderKey {
    fn new(kid: Option<String>, alg: Algorithm, key: DecodingKey) -> ProviderKey {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        ProviderKey {
            kid,
            alg,
            key,
            validation,
        }
    }
}

/// Keys to try for a token: those of its `kid` (or, failing those, keys without
/// a kid; a token without `kid` tries every key), then only those pinned to its
/// algorithm.
pub(super) fn candidates<'k>(
    keys: &'k [ProviderKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Vec<&'k ProviderKey>, AuthError> {
    let mut found: Vec<&ProviderKey> = match kid {
        Some(kid) => {
            let by_kid: Vec<_> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if by_kid.is_empty() {
                keys.iter().filter(|k| k.kid.is_none()).collect()
            } else {
                by_kid
            }
        }
        None => keys.iter().collect(),
    };
    if found.is_empty() {
        let kid: String = kid.unwrap_or_default().chars().take(64).collect();
        return Err(invalid(format!("unknown kid {kid:?}")));
    }
    found.retain(|k| k.alg == alg);
    if found.is_empty() {
        return Err(invalid(format!("no key for algorithm {alg:?}")));
    }
    Ok(found)
}

/// Why a JWK was not loaded: `Unsupported` keys are skipped in a JWKS.
pub(super) enum JwkError {
    Unsupported(String),
    Invalid(String),
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
        return d
            .parse()
            .ok()
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| JwkError::Unsupported(format!("key alg {d:?} does not suit the key")));
    }
    match configured {
        Some(c) if allowed.contains(&c) => Ok(c),
        Some(_) | None => Ok(default),
    }
}

/// One JWK (RSA, EC P-256 / P-384, OKP Ed25519), loaded by `DecodingKey::from_jwk`.
pub(super) fn parse_jwk(v: &Value, configured: Option<Algorithm>) -> Result<ProviderKey, JwkError> {
    let Some(fields) = v.as_object() else {
        return Err(JwkError::Invalid("jwk is not a JSON object".into()));
    };
    let text = |f: &str| fields.get(f).and_then(Value::as_str);
    let missing = |f: &str| JwkError::Invalid(format!("jwk has no string {f:?}"));
    // Classified before the crate's typed parse, so that an entry of a kind this
    // module does not use (another key type or curve, an encryption key) is
    // skipped in a JWKS instead of failing the whole set.
    let kty = text("kty").ok_or_else(|| missing("kty"))?;
    if let Some(u) = text("use") {
        if u != "sig" {
            return Err(JwkError::Unsupported(format!("key use {u:?} is not sig")));
        }
    }
    let (allowed, default) = family_algorithms(kty, text("crv")).map_err(JwkError::Unsupported)?;
    let alg = pin(allowed, default, text("alg"), configured)?;
    let needed: &[&str] = match kty {
        "RSA" => &["n", "e"],
        "EC" => &["x", "y"],
        _ => &["x"],
    };
    if let Some(f) = needed.iter().find(|f| text(f).is_none()) {
        return Err(missing(f));
    }
    let jwk: Jwk =
        serde_json::from_value(v.clone()).map_err(|e| JwkError::Invalid(format!("jwk: {e}")))?;
    check_sizes(&jwk.algorithm, alg).map_err(JwkError::Invalid)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwkError::Invalid(format!("jwk: {e}")))?;
    Ok(ProviderKey::new(jwk.common.key_id, alg, key))
}

/// What the crate does not check: RSA modulus and exponent, EC coordinate and
/// Ed25519 key lengths (a wrong one would fail every token instead of the config).
fn check_sizes(params: &AlgorithmParameters, alg: Algorithm) -> Result<(), String> {
    let bytes = |field: &str, s: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| format!("jwk {field} is not base64url"))
    };
    match params {
        AlgorithmParameters::RSA(p) => check_rsa(&bytes("n", &p.n)?, &bytes("e", &p.e)?),
        AlgorithmParameters::EllipticCurve(p) => {
            let (curve, want) = match alg {
                Algorithm::ES384 => ("P-384", 48),
                _ => ("P-256", 32),
            };
            if bytes("x", &p.x)?.len() != want || bytes("y", &p.y)?.len() != want {
                return Err(format!("EC {curve} coordinates must be {want} bytes"));
            }
            Ok(())
        }
        AlgorithmParameters::OctetKeyPair(p) => match bytes("x", &p.x)?.len() {
            32 => Ok(()),
            _ => Err("Ed25519 key must be 32 bytes".into()),
        },
        AlgorithmParameters::OctetKey(_) => Err("symmetric keys are not accepted".into()),
    }
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

/// A JWKS document: its usable keys (others skipped); none is an error.
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

/// A PEM public key: PKCS#1 `RSA PUBLIC KEY`, or a SubjectPublicKeyInfo
/// `PUBLIC KEY` whose algorithm identifier names the family (and EC curve).
pub(super) fn parse_pem(text: &str, configured: Option<Algorithm>) -> Result<ProviderKey, String> {
    let block = pem::parse(text).map_err(|e| format!("no PEM public key: {e}"))?;
    let (family, curve) = match block.tag() {
        "RSA PUBLIC KEY" => ("RSA", None),
        "PUBLIC KEY" => spki_family(block.contents())?,
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
    let (allowed, default) = family_algorithms(family, curve)?;
    let alg = match pin(allowed, default, None, configured) {
        Ok(a) => a,
        Err(JwkError::Unsupported(m) | JwkError::Invalid(m)) => return Err(m),
    };
    let pem = text.as_bytes();
    let key = match family {
        "RSA" => DecodingKey::from_rsa_pem(pem),
        "EC" => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| format!("malformed public key: {e}"))?;
    Ok(ProviderKey::new(None, alg, key))
}

/// The key family (and curve) a SubjectPublicKeyInfo's algorithm identifier names.
fn spki_family(der: &[u8]) -> Result<(&'static str, Option<&'static str>), String> {
    const RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    const EC: &[u64] = &[1, 2, 840, 10045, 2, 1];
    const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
    const P384: &[u64] = &[1, 3, 132, 0, 34];
    const ED25519: &[u64] = &[1, 3, 101, 112];
    let bad = || "malformed public key (not a SubjectPublicKeyInfo)".to_string();
    let blocks = simple_asn1::from_der(der).map_err(|_| bad())?;
    let Some(ASN1Block::Sequence(_, spki)) = blocks.first() else {
        return Err(bad());
    };
    let Some(ASN1Block::Sequence(_, algorithm)) = spki.first() else {
        return Err(bad());
    };
    let oid = |i: usize| match algorithm.get(i) {
        Some(ASN1Block::ObjectIdentifier(_, oid)) => oid.as_vec::<u64>().ok(),
        _ => None,
    };
    match (oid(0).as_deref(), oid(1).as_deref()) {
        (Some(RSA), _) => Ok(("RSA", None)),
        (Some(EC), Some(P256)) => Ok(("EC", Some("P-256"))),
        (Some(EC), Some(P384)) => Ok(("EC", Some("P-384"))),
        (Some(EC), _) => Err("EC key is not on P-256 or P-384 (ES256, ES384)".into()),
        (Some(ED25519), _) => Ok(("OKP", Some("Ed25519"))),
        (Some(_), _) => Err("public key is neither RSA, EC nor Ed25519".into()),
        (None, _) => Err(bad()),
    }
}

/// A `jwks_url` and the provider `algorithm` its keys were pinned with.
type CacheKey = (String, Option<Algorithm>);
type CachedSets = Vec<(CacheKey, Vec<ProviderKey>)>;

/// The last good set fetched from each `jwks_url` (with the provider's
/// `algorithm`), so that a reload does not start without keys (nor lose them
/// when the IdP is down at that moment). Held by the gateway's long-lived state
/// (`crate::state::State`); a clone is a handle on the same sets.
#[derive(Clone, Default)]
pub struct JwksCache(Arc<Mutex<CachedSets>>);

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sets = self.0.lock().map_or(0, |c| c.len());
        write!(f, "JwksCache({sets} sets)")
    }
}

impl JwksCache {
    pub(super) fn last_good(
        &self,
        url: &http::Uri,
        alg: Option<Algorithm>,
    ) -> Option<Vec<ProviderKey>> {
        let key = (url.to_string(), alg);
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    pub(super) fn remember(&self, url: &http::Uri, alg: Option<Algorithm>, keys: &[ProviderKey]) {
        let key = (url.to_string(), alg);
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != key);
        cache.push((key, keys.to_vec()));
    }
}
