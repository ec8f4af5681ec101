//! `hmac` — the gateway's own key-pair signature (SPEC §3.1).
//!
//! ```text
//! Date: Fri, 09 Oct 2015 00:00:00 GMT
//! Source: AndriodApp
//! Authorization: hmac id="AKID..", algorithm="hmac-sha1", headers="date source", signature="<base64>"
//! ```
//! Signing string: for each listed header `lower(name) + ": " + value`, joined by
//! `\n`. Extensions: the `request-line` pseudo-header (`METHOD path?query HTTP/x.y`,
//! HTTP/2 written `HTTP/2.0`) and body digests (`Digest`, `Content-Digest`,
//! `Content-MD5`) checked against the buffered body when they are signed.
//!
//! The verification feeds the HMAC directly from the request (no signing string is
//! built unless the signature does not match and the debug string is needed).

use super::replay::ReplayToken;
use super::{
    check_skew, ct_eq, head_has_no_body, lookup_key, AuthError, Keys, RequestParts, Verified,
};
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, Version};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::time::{Duration, SystemTime};

/// Standard alphabet, padding optional when decoding.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Most headers a client may list in `headers="..."`.
const MAX_SIGNED_HEADERS: usize = 32;
/// Longest accepted base64 signature (HMAC-SHA512 is 88 characters).
const MAX_SIGNATURE_LEN: usize = 128;

/// An HMAC algorithm of the `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::HmacSha1,
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// Parses `hmac-sha1` … `hmac-sha512` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// An HMAC of any supported hash, fed incrementally.
#[derive(Clone)]
pub(crate) enum AnyMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

/// A key's MACs, keyed once per algorithm (the key schedule hashes the padded
/// key: two compression rounds saved per request by cloning instead).
#[derive(Default)]
pub struct KeyedMacs([std::sync::OnceLock<Option<AnyMac>>; 4]);

impl std::fmt::Debug for KeyedMacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedMacs")
    }
}

impl KeyedMacs {
    /// A fresh MAC for `alg` keyed with `key` (the key this cache belongs to).
    pub(crate) fn get(&self, alg: Algorithm, key: &[u8]) -> Option<AnyMac> {
        let i = Algorithm::ALL.iter().position(|a| *a == alg)?;
        self.0[i].get_or_init(|| AnyMac::new(alg, key)).clone()
    }
}

/// A MAC output (at most 64 bytes) without allocation.
pub(crate) struct MacOutput {
    buf: [u8; 64],
    len: usize,
}

impl MacOutput {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AnyMac {
    /// HMAC accepts keys of any length, so this never fails in practice; `None`
    /// is returned instead of panicking if it ever did.
    pub(crate) fn new(alg: Algorithm, key: &[u8]) -> Option<AnyMac> {
        Some(match alg {
            Algorithm::HmacSha1 => AnyMac::Sha1(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha256 => AnyMac::Sha256(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha384 => AnyMac::Sha384(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha512 => AnyMac::Sha512(Hmac::new_from_slice(key).ok()?),
        })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            AnyMac::Sha1(m) => m.update(data),
            AnyMac::Sha256(m) => m.update(data),
            AnyMac::Sha384(m) => m.update(data),
            AnyMac::Sha512(m) => m.update(data),
        }
    }

    pub(crate) fn finalize(self) -> MacOutput {
        fn out(bytes: &[u8]) -> MacOutput {
            let mut buf = [0u8; 64];
            let len = bytes.len().min(64);
            buf[..len].copy_from_slice(&bytes[..len]);
            MacOutput { buf, len }
        }
        match self {
            AnyMac::Sha1(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha256(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha384(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha512(m) => out(&m.finalize().into_bytes()),
        }
    }
}

/// Compiled `[auth.hmac]` settings.
#[derive(Debug, Clone)]
pub struct HmacSettings {
    pub algorithms: Vec<Algorithm>,
    pub max_skew: Duration,
    /// Check the skew of a plain `Date` header (`X-Date` is always checked).
    pub check_date: bool,
    /// Headers whose signed value is a nonce (lower case): when one is signed,
    /// it is the request's replay identity (with the key id).
    pub nonce_headers: Vec<String>,
    /// Headers that must be signed (lower case): `request-line`, `host`,
    /// `digest` (for requests with a body: a `Digest`, `Content-Digest` or
    /// `Content-MD5` must be signed) or any header name.
    pub enforce_headers: Vec<String>,
}

impl Default for HmacSettings {
    fn default() -> Self {
        HmacSettings {
            algorithms: Algorithm::ALL.to_vec(),
            max_skew: Duration::from_secs(900),
            check_date: true,
            nonce_headers: vec!["x-nonce".into()],
            enforce_headers: vec![],
        }
    }
}

impl HmacSettings {
    pub fn from_raw(raw: &crate::config::raw::RawHmacAuth) -> Result<Self, String> {
        let mut algorithms = Vec::new();
        for name in &raw.algorithms {
            let alg = Algorithm::from_name(name.trim()).ok_or_else(|| {
                format!(
                    "unknown hmac algorithm {name:?} (expected hmac-sha1, hmac-sha256, hmac-sha384 or hmac-sha512)"
                )
            })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            return Err("auth.hmac.algorithms must list at least one algorithm".into());
        }
        let mut nonce_headers = Vec::with_capacity(raw.nonce_headers.len());
        for n in &raw.nonce_headers {
            let n = n.trim().to_ascii_lowercase();
            if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                return Err(format!(
                    "auth.hmac.nonce_headers: {n:?} is not a header name"
                ));
            }
            if ["date", "x-date", "authorization"].contains(&n.as_str()) {
                return Err(format!(
                    "auth.hmac.nonce_headers: {n:?} cannot be a nonce header"
                ));
            }
            nonce_headers.push(n);
        }
        Ok(HmacSettings {
            algorithms,
            max_skew: raw.max_skew,
            check_date: raw.check_date,
            nonce_headers,
            enforce_headers: parse_enforce_headers(&raw.enforce_headers)
                .map_err(|e| format!("auth.hmac.enforce_headers: {e}"))?,
        })
    }
}

/// Validates an `enforce_headers` list: header names, `request-line` or `digest`;
/// returned lower case and de-duplicated.
pub fn parse_enforce_headers(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for n in list {
        let n = n.trim().to_ascii_lowercase();
        if n != "request-line" && http::HeaderName::from_bytes(n.as_bytes()).is_err() {
            return Err(format!(
                "{n:?} is not a header name (or request-line, digest)"
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Checks that every enforced header is among the signed ones.
fn check_enforced(
    enforce: &[String],
    names: &SignedNames<'_>,
    headers: &HeaderMap,
) -> Result<(), AuthError> {
    for want in enforce {
        if want == "digest" {
            if !head_has_no_body(headers) && !names.iter().any(is_digest_header) {
                return Err(AuthError::Malformed(
                    "this API requires a body digest (Digest, Content-Digest or Content-MD5) among the signed headers"
                        .into(),
                ));
            }
        } else if !names.has(want) {
            return Err(AuthError::Malformed(format!(
                "this API requires {want:?} among the signed headers (headers=\"..\")"
            )));
        }
    }
    Ok(())
}

/// The parameters of an `hmac` credential.
#[derive(Debug, PartialEq, Eq)]
struct Credential<'a> {
    id: &'a str,
    algorithm: &'a str,
    headers: &'a str,
    signature: &'a str,
}

fn is_hmac_scheme(v: &[u8]) -> bool {
    v.len() > 4 && v[..4].eq_ignore_ascii_case(b"hmac") && matches!(v[4], b' ' | b'\t')
}

/// Finds the one `hmac` credential in `Authorization` or `Proxy-Authorization`.
fn find_credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut found = None;
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION] {
        for v in headers.get_all(name) {
            if !is_hmac_scheme(v.as_bytes()) {
                continue;
            }
            if found.is_some() {
                return Err(AuthError::Malformed(
                    "more than one hmac credential (Authorization / Proxy-Authorization)".into(),
                ));
            }
            found = Some(v.to_str().map_err(|_| {
                AuthError::Malformed("Authorization header is not visible ASCII".into())
            })?);
        }
    }
    match found {
        Some(v) => Ok(v),
        None if headers.contains_key(AUTHORIZATION) => Err(AuthError::Missing(
            "Authorization header does not use the hmac scheme (expected: hmac id=\"..\", algorithm=\"..\", headers=\"..\", signature=\"..\")".into(),
        )),
        None => Err(AuthError::Missing(
            "Authorization header (hmac id=\"..\", algorithm=\"..\", headers=\"..\", signature=\"..\")".into(),
        )),
    }
}

/// Parses `hmac id="..", algorithm="..", headers="..", signature=".."`: any order,
/// any spacing, quoted or bare values; unknown parameters are ignored; duplicates
/// and missing or empty parameters are errors. `username` and `keyId` are accepted
/// as spellings of `id`.
fn parse_credential(value: &str) -> Result<Credential<'_>, AuthError> {
    let bad = |m: &str| AuthError::Malformed(format!("Authorization: {m}"));
    let s = value.trim_start();
    if !is_hmac_scheme(s.as_bytes()) {
        return Err(bad("scheme is not hmac"));
    }
    let mut rest = &s[4..];
    let (mut id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(['=', ' ', '\t', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| bad(&format!("parameter {name:?} has no value")))?
            .trim_start();
        let val;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r
                .find('"')
                .ok_or_else(|| bad(&format!("unterminated quoted value of {name:?}")))?;
            val = &r[..end];
            rest = &r[end + 1..];
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            val = &rest[..end];
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(bad(&format!("expected ',' after the value of {name:?}")));
        }
        let slot = if name.eq_ignore_ascii_case("id")
            || name.eq_ignore_ascii_case("username")
            || name.eq_ignore_ascii_case("keyid")
        {
            &mut id
        } else if name.eq_ignore_ascii_case("algorithm") {
            &mut algorithm
        } else if name.eq_ignore_ascii_case("headers") {
            &mut headers
        } else if name.eq_ignore_ascii_case("signature") {
            &mut signature
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(bad(&format!("parameter {name:?} given twice")));
        }
        *slot = Some(val);
    }
    fn need<'v>(v: Option<&'v str>, name: &str) -> Result<&'v str, AuthError> {
        match v {
            None => Err(AuthError::Missing(format!(
                "Authorization has no {name}=\"..\" parameter"
            ))),
            Some("") => Err(AuthError::Malformed(format!(
                "Authorization: {name} is empty"
            ))),
            Some(v) => Ok(v),
        }
    }
    Ok(Credential {
        id: need(id, "id")?,
        algorithm: need(algorithm, "algorithm")?,
        headers: need(headers, "headers")?,
        signature: need(signature, "signature")?,
    })
}

/// The listed header names, validated (count, duplicates), without allocation.
struct SignedNames<'a> {
    names: [&'a str; MAX_SIGNED_HEADERS],
    len: usize,
}

impl<'a> SignedNames<'a> {
    fn parse(list: &'a str) -> Result<Self, AuthError> {
        let mut out = SignedNames {
            names: [""; MAX_SIGNED_HEADERS],
            len: 0,
        };
        for name in list.split_ascii_whitespace() {
            if out.len == MAX_SIGNED_HEADERS {
                return Err(AuthError::Malformed(format!(
                    "Authorization: more than {MAX_SIGNED_HEADERS} signed headers"
                )));
            }
            if out.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return Err(AuthError::Malformed(format!(
                    "Authorization: header {name:?} is listed twice in headers=\"..\""
                )));
            }
            out.names[out.len] = name;
            out.len += 1;
        }
        if out.len == 0 {
            return Err(AuthError::Malformed(
                "Authorization: headers=\"..\" lists no header".into(),
            ));
        }
        Ok(out)
    }

    fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.names[..self.len].iter().copied()
    }

    fn has(&self, name: &str) -> bool {
        self.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

fn is_digest_header(name: &str) -> bool {
    ["digest", "content-digest", "content-md5"]
        .iter()
        .any(|d| d.eq_ignore_ascii_case(name))
}

/// True when the request's hmac credential signs a body digest, i.e. the body
/// must be buffered and passed to [`verify`].
pub fn needs_body(headers: &HeaderMap) -> bool {
    // Fast path: every digest header name contains "digest" or "md5"; most
    // credentials sign neither, and need not be parsed twice.
    let mentions = |v: &http::HeaderValue| {
        v.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"dig") || w.eq_ignore_ascii_case(b"md5"))
    };
    if !headers.get_all(AUTHORIZATION).iter().any(mentions)
        && !headers.get_all(PROXY_AUTHORIZATION).iter().any(mentions)
    {
        return false;
    }
    let Ok(value) = find_credential(headers) else {
        return false;
    };
    let Ok(cred) = parse_credential(value) else {
        return false;
    };
    cred.headers.split_ascii_whitespace().any(is_digest_header)
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Writes the signing string into `sink`, piece by piece.
fn feed_signing_string(
    names: &SignedNames<'_>,
    req: &RequestParts<'_>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), AuthError> {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sink(b"\n");
        }
        // lower(name), in small stack chunks.
        for chunk in name.as_bytes().chunks(32) {
            let mut buf = [0u8; 32];
            let buf = &mut buf[..chunk.len()];
            buf.copy_from_slice(chunk);
            buf.make_ascii_lowercase();
            sink(buf);
        }
        sink(b": ");
        if name.eq_ignore_ascii_case("request-line") {
            sink(req.method.as_str().as_bytes());
            sink(b" ");
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            sink(pq.as_bytes());
            sink(b" ");
            sink(version_str(req.version).as_bytes());
            continue;
        }
        let mut values = req.headers.get_all(name).iter();
        let first = values.next().ok_or_else(|| {
            AuthError::Missing(format!("signed header {name:?} is not in the request"))
        })?;
        sink(first.as_bytes());
        for v in values {
            sink(b", ");
            sink(v.as_bytes());
        }
    }
    Ok(())
}

/// Checks the signed date header(s): one must be signed, and each signed one
/// (except `Date` with `check_date = false`) must be within the skew.
fn check_dates(
    s: &HmacSettings,
    names: &SignedNames<'_>,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), AuthError> {
    let signed_x_date = names.has("x-date");
    let signed_date = names.has("date");
    if !signed_x_date && !signed_date {
        return Err(
            if headers.contains_key("x-date") || headers.contains_key(http::header::DATE) {
                AuthError::Malformed(
                    "the date header (X-Date or Date) must be among the signed headers".into(),
                )
            } else {
                AuthError::Missing("a Date or X-Date header (signed)".into())
            },
        );
    }
    for (name, check) in [
        ("x-date", signed_x_date),
        ("date", signed_date && s.check_date),
    ] {
        if !check {
            continue;
        }
        let mut all = headers.get_all(name).iter();
        let v = all.next().ok_or_else(|| {
            AuthError::Missing(format!("signed header {name:?} is not in the request"))
        })?;
        if all.next().is_some() {
            return Err(AuthError::Malformed(format!("{name} header given twice")));
        }
        let t = v
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .ok_or_else(|| {
                AuthError::Malformed(format!(
                    "{name} is not an HTTP date (e.g. Fri, 09 Oct 2015 00:00:00 GMT)"
                ))
            })?;
        check_skew(name, t, now, s.max_skew)?;
    }
    Ok(())
}

/// Verifies a signed body digest header against the body.
fn check_digest(name: &str, value: &[u8], body: &[u8]) -> Result<(), AuthError> {
    let mismatch =
        || AuthError::Malformed(format!("request body does not match the {name} header"));
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthError::Malformed(format!("{name} header is not ASCII")))?;
    let mut buf = [0u8; 96];
    if name.eq_ignore_ascii_case("content-md5") {
        let n = B64
            .decode_slice(value.trim(), &mut buf)
            .map_err(|_| AuthError::Malformed("Content-MD5 is not base64".into()))?;
        let got = md5::Md5::digest(body);
        return if ct_eq(&buf[..n], &got) {
            Ok(())
        } else {
            Err(mismatch())
        };
    }
    // Digest: SHA-256=<b64>, ...   Content-Digest: sha-256=:<b64>:, ...
    let mut checked = 0;
    for item in value.split(',') {
        let Some((alg, v)) = item.trim().split_once('=') else {
            continue;
        };
        let alg = alg.trim();
        let actual: &[u8] = if alg.eq_ignore_ascii_case("sha-256") {
            &Sha256::digest(body)
        } else if alg.eq_ignore_ascii_case("sha-512") {
            &Sha512::digest(body)
        } else if alg.eq_ignore_ascii_case("md5") {
            &md5::Md5::digest(body)
        } else {
            continue;
        };
        let v = v.trim().trim_matches(':');
        let n = B64
            .decode_slice(v, &mut buf)
            .map_err(|_| AuthError::Malformed(format!("{name} {alg} value is not base64")))?;
        let ok = ct_eq(&buf[..n], actual);
        if !ok {
            return Err(mismatch());
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(AuthError::Malformed(format!(
            "{name} header has no SHA-256, SHA-512 or MD5 value"
        )));
    }
    Ok(())
}

/// Verifies an `hmac` request. Checks, in order: credential syntax, algorithm,
/// enforced signed headers, signed date header and skew, key (unknown /
/// disabled), signature, body digest. Everything but the digest is checked from
/// the head: with a body that was not read yet, a request that passes all of it
/// gets [`AuthError::NeedBody`] (read the body, call again).
pub fn verify(
    s: &HmacSettings,
    req: &RequestParts<'_>,
    keys: &Keys,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let cred = parse_credential(find_credential(req.headers)?)?;
    let alg = Algorithm::from_name(cred.algorithm)
        .filter(|a| s.algorithms.contains(a))
        .ok_or_else(|| {
            let allowed: Vec<&str> = s.algorithms.iter().map(|a| a.name()).collect();
            AuthError::AlgorithmNotAllowed(format!(
                "{:?} (allowed: {})",
                cred.algorithm,
                allowed.join(", ")
            ))
        })?;
    let names = SignedNames::parse(cred.headers)?;
    check_enforced(&s.enforce_headers, &names, req.headers)?;
    check_dates(s, &names, req.headers, now)?;
    if cred.signature.len() > MAX_SIGNATURE_LEN {
        return Err(AuthError::Malformed(
            "Authorization: signature is too long".into(),
        ));
    }
    let key = lookup_key(keys, cred.id)?;

    let mut mac = key
        .macs
        .get(alg, key.secret.as_bytes())
        .ok_or_else(|| AuthError::Malformed("unusable secret".into()))?;
    feed_signing_string(&names, req, &mut |b| mac.update(b))?;
    let expected = mac.finalize();

    let mut given = [0u8; 96];
    let matches = match B64.decode_slice(cred.signature, &mut given) {
        Ok(n) => ct_eq(&given[..n], expected.as_bytes()),
        Err(_) => false,
    };
    if !matches {
        let mut debug = Vec::with_capacity(256);
        feed_signing_string(&names, req, &mut |b| debug.extend_from_slice(b))?;
        return Err(AuthError::BadSignature {
            debug: Some(String::from_utf8_lossy(&debug).into_owned()),
        });
    }

    if let Some(name) = names.iter().find(|n| is_digest_header(n)) {
        let body = match req.body {
            Some(b) => b,
            None if head_has_no_body(req.headers) => b"",
            None => return Err(AuthError::NeedBody),
        };
        for value in req.headers.get_all(name) {
            check_digest(name, value.as_bytes(), body)?;
        }
    }

    Ok(Verified {
        key,
        replay: Some(replay_token(s, &names, req.headers, expected.as_bytes())?),
    })
}

/// The replay identity: the first signed nonce header's value, else the MAC bytes.
fn replay_token(
    s: &HmacSettings,
    names: &SignedNames<'_>,
    headers: &HeaderMap,
    mac: &[u8],
) -> Result<ReplayToken, AuthError> {
    let ttl = s.max_skew * 2;
    let nonce = names
        .iter()
        .find(|n| s.nonce_headers.iter().any(|h| h.eq_ignore_ascii_case(n)));
    let Some(name) = nonce else {
        return Ok(ReplayToken::signature(mac, ttl));
    };
    let mut all = headers.get_all(name).iter();
    let value = all.next().map(|v| v.as_bytes()).unwrap_or_default();
    if all.next().is_some() {
        return Err(AuthError::Malformed(format!(
            "nonce header {name:?} given twice"
        )));
    }
    if value.is_empty() {
        return Err(AuthError::Malformed(format!(
            "nonce header {name:?} is empty"
        )));
    }
    Ok(ReplayToken::nonce(value, ttl))
}

/// The signing string for `(name, value)` pairs, as a client builds it.
pub(crate) fn signing_string(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&name.to_ascii_lowercase());
        out.push_str(": ");
        out.push_str(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit;
    use http::{Method, Uri};

    const SECRET: &str = "ZxF2whsecretN2oPrC";

    fn keys() -> Keys {
        testkit::keys(&[("AKID1", SECRET, true), ("AKIDoff", SECRET, false)])
    }

    fn t0() -> SystemTime {
        httpdate::parse_http_date("Fri, 09 Oct 2015 00:00:00 GMT").unwrap()
    }

    fn sign(alg: Algorithm, s: &str) -> String {
        let mut m = AnyMac::new(alg, SECRET.as_bytes()).unwrap();
        m.update(s.as_bytes());
        B64.encode(m.finalize().as_bytes())
    }

    #[test]
    fn cached_keyed_mac_is_fresh_on_every_use() {
        let macs = KeyedMacs::default();
        for alg in Algorithm::ALL {
            for msg in ["first", "second", "first"] {
                let mut m = macs.get(alg, SECRET.as_bytes()).expect("mac");
                m.update(msg.as_bytes());
                assert_eq!(B64.encode(m.finalize().as_bytes()), sign(alg, msg));
            }
        }
    }

    struct R {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    }
    impl R {
        fn new(h: &[(&str, &str)]) -> R {
            let headers = testkit::headers(h);
            R {
                method: Method::GET,
                uri: Uri::from_static("/echo?a=1"),
                headers,
                body: None,
            }
        }
        fn parts(&self) -> RequestParts<'_> {
            RequestParts {
                method: &self.method,
                uri: &self.uri,
                version: Version::HTTP_11,
                headers: &self.headers,
                body: self.body.as_deref(),
            }
        }
        fn verify(&self, s: &HmacSettings, now: SystemTime) -> Result<Verified, AuthError> {
            verify(s, &self.parts(), &keys(), now)
        }
    }

    const DATE: &str = "Fri, 09 Oct 2015 00:00:00 GMT";

    fn auth(id: &str, alg: &str, headers: &str, sig: &str) -> String {
        format!("hmac id=\"{id}\", algorithm=\"{alg}\", headers=\"{headers}\", signature=\"{sig}\"")
    }

    fn basic(sig_str: &str) -> R {
        let sig = sign(Algorithm::HmacSha1, sig_str);
        R::new(&[
            ("date", DATE),
            ("source", "AndriodApp"),
            (
                "authorization",
                &auth("AKID1", "hmac-sha1", "date source", &sig),
            ),
        ])
    }

    #[test]
    fn documented_example_verifies() {
        let r = basic("date: Fri, 09 Oct 2015 00:00:00 GMT\nsource: AndriodApp");
        let v = r.verify(&HmacSettings::default(), t0()).unwrap();
        assert_eq!(v.key.id, "AKID1");
        let tok = v.replay.unwrap();
        assert_eq!(tok.kind, crate::auth::replay::TokenKind::Signature);
        assert!(tok.token.starts_with("s:"));
        assert_eq!(tok.ttl, Duration::from_secs(1800));
    }

    #[test]
    fn every_algorithm() {
        for alg in Algorithm::ALL {
            let sig = sign(alg, &format!("x-date: {DATE}"));
            let r = R::new(&[
                ("x-date", DATE),
                ("authorization", &auth("AKID1", alg.name(), "x-date", &sig)),
            ]);
            r.verify(&HmacSettings::default(), t0()).unwrap();
            let only_sha1 = HmacSettings {
                algorithms: vec![Algorithm::HmacSha1],
                ..HmacSettings::default()
            };
            let res = r.verify(&only_sha1, t0());
            if alg == Algorithm::HmacSha1 {
                res.unwrap();
            } else {
                assert!(
                    matches!(res, Err(AuthError::AlgorithmNotAllowed(_))),
                    "{res:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_signature_gives_debug_string() {
        let r = basic("date: something else");
        match r.verify(&HmacSettings::default(), t0()) {
            Err(AuthError::BadSignature { debug: Some(d) }) => {
                assert_eq!(d, "date: Fri, 09 Oct 2015 00:00:00 GMT\nsource: AndriodApp")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parsing_is_tolerant_of_order_spacing_and_case() {
        let c = parse_credential(
            "HMAC   signature=abc=,headers = \"Date Source\" ,  ALGORITHM=\"hmac-sha1\",id=\"k\", extra=\"x\"",
        )
        .unwrap();
        assert_eq!(
            c,
            Credential {
                id: "k",
                algorithm: "hmac-sha1",
                headers: "Date Source",
                signature: "abc="
            }
        );
    }

    #[test]
    fn uppercase_header_names_are_lowercased() {
        let sig = sign(
            Algorithm::HmacSha1,
            &format!("date: {DATE}\nsource: AndriodApp"),
        );
        let r = R::new(&[
            ("date", DATE),
            ("source", "AndriodApp"),
            (
                "authorization",
                &auth("AKID1", "hmac-sha1", "Date Source", &sig),
            ),
        ]);
        r.verify(&HmacSettings::default(), t0()).unwrap();
    }

    #[test]
    fn parsing_errors() {
        let cases = [
            ("hmac id=\"a\", id=\"b\", algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"", "twice"),
            ("hmac algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"", "id"),
            ("hmac id=\"a\", algorithm=\"hmac-sha1\", headers=\"date\"", "signature"),
            ("hmac id=\"a\", algorithm=\"hmac-sha1\", signature=\"x\"", "headers"),
            ("hmac id=\"a\" algorithm=\"hmac-sha1\"", "expected ','"),
            ("hmac id=\"a, algorithm=x", "unterminated"),
            ("hmac id", "no value"),
            ("hmac id=\"\", algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"", "empty"),
        ];
        for (v, want) in cases {
            let e = parse_credential(v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn missing_or_foreign_authorization() {
        let r = R::new(&[("date", DATE)]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(matches!(e, AuthError::Missing(_)) && e.to_string().contains("Authorization"));
        let r = R::new(&[("date", DATE), ("authorization", "Basic Zm9vOmJhcg==")]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("hmac scheme"), "{e}");
    }

    #[test]
    fn proxy_authorization_is_accepted_and_duplicates_refused() {
        let sig = sign(Algorithm::HmacSha1, &format!("date: {DATE}"));
        let a = auth("AKID1", "hmac-sha1", "date", &sig);
        let r = R::new(&[
            ("date", DATE),
            ("authorization", "Bearer abc"),
            ("proxy-authorization", &a),
        ]);
        r.verify(&HmacSettings::default(), t0()).unwrap();
        let r = R::new(&[
            ("date", DATE),
            ("authorization", &a),
            ("proxy-authorization", &a),
        ]);
        assert!(matches!(
            r.verify(&HmacSettings::default(), t0()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn date_must_be_signed() {
        let sig = sign(Algorithm::HmacSha1, "source: AndriodApp");
        let r = R::new(&[
            ("date", DATE),
            ("source", "AndriodApp"),
            ("authorization", &auth("AKID1", "hmac-sha1", "source", &sig)),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("must be among the signed"), "{e}");
        let r = R::new(&[
            ("source", "AndriodApp"),
            ("authorization", &auth("AKID1", "hmac-sha1", "source", &sig)),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(matches!(e, AuthError::Missing(_)), "{e}");
    }

    #[test]
    fn skew_limits_are_inclusive() {
        let s = HmacSettings::default();
        let r = basic("date: Fri, 09 Oct 2015 00:00:00 GMT\nsource: AndriodApp");
        let lim = Duration::from_secs(900);
        let one = Duration::from_secs(1);
        r.verify(&s, t0() + lim).unwrap();
        r.verify(&s, t0() - lim).unwrap();
        let e = r.verify(&s, t0() + lim + one).unwrap_err();
        assert_eq!(
            e,
            AuthError::Expired("date is 901 s old: expired by 1 s (allowed skew 900 s)".into())
        );
        let e = r.verify(&s, t0() - lim - one).unwrap_err();
        assert!(
            matches!(e, AuthError::Expired(ref m) if m.contains("future")),
            "{e}"
        );
        // compatibility switch: Date is not checked, but still must be signed
        let lax = HmacSettings {
            check_date: false,
            ..HmacSettings::default()
        };
        r.verify(&lax, t0() + lim * 10).unwrap();
    }

    #[test]
    fn x_date_is_checked_even_with_check_date_off() {
        let sig = sign(Algorithm::HmacSha1, &format!("x-date: {DATE}"));
        let r = R::new(&[
            ("x-date", DATE),
            ("authorization", &auth("AKID1", "hmac-sha1", "x-date", &sig)),
        ]);
        let lax = HmacSettings {
            check_date: false,
            ..HmacSettings::default()
        };
        assert!(matches!(
            r.verify(&lax, t0() + Duration::from_secs(901)),
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn bad_date_and_duplicate_date() {
        let r = R::new(&[
            ("date", "yesterday"),
            ("authorization", &auth("AKID1", "hmac-sha1", "date", "AAAA")),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("not an HTTP date"), "{e}");
        let r = R::new(&[
            ("date", DATE),
            ("date", DATE),
            ("authorization", &auth("AKID1", "hmac-sha1", "date", "AAAA")),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn keys_unknown_and_disabled_before_signature() {
        for (id, want) in [
            ("nope", AuthError::UnknownKey),
            ("AKIDoff", AuthError::DisabledKey),
        ] {
            let r = R::new(&[
                ("date", DATE),
                ("authorization", &auth(id, "hmac-sha1", "date", "garbage")),
            ]);
            assert_eq!(r.verify(&HmacSettings::default(), t0()).unwrap_err(), want);
        }
    }

    #[test]
    fn duplicate_and_missing_signed_headers() {
        let r = R::new(&[
            ("date", DATE),
            (
                "authorization",
                &auth("AKID1", "hmac-sha1", "date Date", "x"),
            ),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let r = R::new(&[
            ("date", DATE),
            (
                "authorization",
                &auth("AKID1", "hmac-sha1", "date source", "x"),
            ),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(
            e.to_string().contains("\"source\" is not in the request"),
            "{e}"
        );
    }

    #[test]
    fn request_line_pseudo_header() {
        let sig = sign(
            Algorithm::HmacSha256,
            &format!("date: {DATE}\nrequest-line: GET /echo?a=1 HTTP/1.1"),
        );
        let r = R::new(&[
            ("date", DATE),
            (
                "authorization",
                &auth("AKID1", "hmac-sha256", "date request-line", &sig),
            ),
        ]);
        r.verify(&HmacSettings::default(), t0()).unwrap();
        let mut r2 = r;
        r2.uri = Uri::from_static("/echo?a=2");
        assert!(matches!(
            r2.verify(&HmacSettings::default(), t0()),
            Err(AuthError::BadSignature { .. })
        ));
    }

    fn digest_req(digest_name: &str, digest: &str, body: &[u8]) -> R {
        let sig = sign(
            Algorithm::HmacSha256,
            &format!("date: {DATE}\n{digest_name}: {digest}"),
        );
        let mut r = R::new(&[
            ("date", DATE),
            (digest_name, digest),
            ("content-length", &body.len().to_string()),
            (
                "authorization",
                &auth("AKID1", "hmac-sha256", &format!("date {digest_name}"), &sig),
            ),
        ]);
        r.body = Some(body.to_vec());
        r
    }

    #[test]
    fn body_digest_is_verified_when_signed() {
        let body = b"{\"hello\":1}";
        let d = format!("SHA-256={}", B64.encode(Sha256::digest(body)));
        let r = digest_req("digest", &d, body);
        assert!(needs_body(&r.headers));
        r.verify(&HmacSettings::default(), t0()).unwrap();

        let r = digest_req("digest", &d, b"tampered");
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        assert!(e.to_string().contains("does not match the digest"), "{e}");

        let mut r = digest_req("digest", &d, body);
        r.body = None;
        assert!(r.verify(&HmacSettings::default(), t0()).is_err());

        let md5 = B64.encode(md5::Md5::digest(body));
        digest_req("content-md5", &md5, body)
            .verify(&HmacSettings::default(), t0())
            .unwrap();
        assert!(digest_req("content-md5", &md5, b"x")
            .verify(&HmacSettings::default(), t0())
            .is_err());
        let cd = format!("sha-256=:{}:", B64.encode(Sha256::digest(body)));
        digest_req("content-digest", &cd, body)
            .verify(&HmacSettings::default(), t0())
            .unwrap();
        let e = digest_req("digest", "UNIXsum=30637", body)
            .verify(&HmacSettings::default(), t0())
            .unwrap_err();
        assert!(e.to_string().contains("no SHA-256"), "{e}");
    }

    #[test]
    fn needs_body_only_when_digest_signed() {
        let r = basic("x");
        assert!(!needs_body(&r.headers));
        assert!(!needs_body(&HeaderMap::new()));
    }

    #[test]
    fn from_raw_validates_algorithms() {
        let mut raw = crate::config::raw::RawHmacAuth::default();
        assert_eq!(HmacSettings::from_raw(&raw).unwrap().algorithms.len(), 4);
        raw.algorithms = vec!["hmac-md5".into()];
        assert!(HmacSettings::from_raw(&raw)
            .unwrap_err()
            .contains("hmac-md5"));
        raw.algorithms = vec![];
        assert!(HmacSettings::from_raw(&raw).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "hmac ",
            "hmac ,,,,",
            "hmac =",
            "hmac a=\"",
            "hmac id=x,algorithm=hmac-sha1,headers=date,signature=!!!!",
            "hmac id=AKID1,algorithm=hmac-sha1,headers=date,signature=",
            "hmac id=AKID1,algorithm=hmac-sha1,headers=\"date (request-target) a:b\",signature=AAAA",
        ];
        for i in inputs {
            let r = R::new(&[("date", DATE), ("authorization", i)]);
            assert!(r.verify(&HmacSettings::default(), t0()).is_err(), "{i}");
        }
    }

    #[test]
    fn errors_never_contain_the_secret_or_expected_signature() {
        let good = sign(Algorithm::HmacSha1, &format!("date: {DATE}"));
        let r = R::new(&[
            ("date", DATE),
            ("authorization", &auth("AKID1", "hmac-sha1", "date", "AAAA")),
        ]);
        let e = r.verify(&HmacSettings::default(), t0()).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET) && !text.contains(&good), "{text}");
    }

    fn x_date_req(alg: Algorithm, extra: &[(&str, &str)]) -> R {
        let mut signed = vec![("x-date", DATE)];
        signed.extend_from_slice(extra);
        let pairs: Vec<(String, String)> = signed
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let sig = sign(alg, &signing_string(&pairs));
        let names: Vec<&str> = signed.iter().map(|(n, _)| *n).collect();
        let mut h = signed.clone();
        let a = auth("AKID1", alg.name(), &names.join(" "), &sig);
        h.push(("authorization", &a));
        R::new(&h)
    }

    fn with_signature(r: &R, f: impl Fn(&str) -> String) -> R {
        let a = r.headers.get("authorization").unwrap().to_str().unwrap();
        let (head, rest) = a.split_once("signature=\"").unwrap();
        let sig = rest.trim_end_matches('"');
        let mut r2 = R::new(&[]);
        r2.headers = r.headers.clone();
        r2.headers.insert(
            "authorization",
            format!("{head}signature=\"{}\"", f(sig)).parse().unwrap(),
        );
        r2
    }

    #[test]
    fn replay_identity_is_the_decoded_mac() {
        for alg in Algorithm::ALL {
            let r = x_date_req(alg, &[]);
            let s = HmacSettings::default();
            let tok = r.verify(&s, t0()).unwrap().replay.unwrap();
            // padding removed: same identity
            let stripped = with_signature(&r, |sig| sig.trim_end_matches('=').to_string());
            assert_eq!(stripped.verify(&s, t0()).unwrap().replay.unwrap(), tok);
            // padding shortened (sha512 has two): same identity or refused
            let shortened = with_signature(&r, |sig| sig.replacen("==", "=", 1));
            match shortened.verify(&s, t0()) {
                Ok(v) => assert_eq!(v.replay.unwrap(), tok),
                Err(e) => assert!(matches!(e, AuthError::BadSignature { .. }), "{e}"),
            }
            // URL-safe alphabet: refused (not a second identity)
            let url = with_signature(&r, |sig| sig.replace('+', "-").replace('/', "_"));
            if url.headers != r.headers {
                assert!(url.verify(&s, t0()).is_err());
            }
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        // HMAC-SHA1 is 20 bytes: 28 characters, the last before '=' carries 2
        // unused bits; setting them gives another text for the same bytes.
        let r = x_date_req(Algorithm::HmacSha1, &[]);
        let s = HmacSettings::default();
        r.verify(&s, t0()).unwrap();
        let tweaked = with_signature(&r, |sig| {
            let b = sig.as_bytes();
            let last = b[26];
            let pos = base64::alphabet::STANDARD
                .as_str()
                .bytes()
                .position(|c| c == last)
                .unwrap();
            let alt = base64::alphabet::STANDARD.as_str().as_bytes()[(pos & !3) | ((pos + 1) & 3)];
            format!("{}{}=", &sig[..26], alt as char)
        });
        assert!(matches!(
            tweaked.verify(&s, t0()),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn signed_nonce_header_is_the_identity() {
        let s = HmacSettings::default();
        let r = x_date_req(Algorithm::HmacSha256, &[("x-nonce", "abc123")]);
        let tok = r.verify(&s, t0()).unwrap().replay.unwrap();
        assert_eq!(tok.kind, crate::auth::replay::TokenKind::Nonce);
        assert_eq!(tok.token, "n:abc123");
        // not in nonce_headers: the signature is the identity
        let other = HmacSettings {
            nonce_headers: vec!["x-request-nonce".into()],
            ..HmacSettings::default()
        };
        let tok = r.verify(&other, t0()).unwrap().replay.unwrap();
        assert_eq!(tok.kind, crate::auth::replay::TokenKind::Signature);
        // an empty nonce is refused
        let r = x_date_req(Algorithm::HmacSha256, &[("x-nonce", "")]);
        let e = r.verify(&s, t0()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn enforced_headers_must_be_signed() {
        let strict = HmacSettings {
            enforce_headers: parse_enforce_headers(&[
                "Request-Line".into(),
                "host".into(),
                "digest".into(),
            ])
            .unwrap(),
            ..HmacSettings::default()
        };
        let r = x_date_req(Algorithm::HmacSha256, &[]);
        let e = r.verify(&strict, t0()).unwrap_err();
        assert!(
            matches!(&e, AuthError::Malformed(m) if m.contains("\"request-line\"")),
            "{e}"
        );
        let line = "GET /echo?a=1 HTTP/1.1";
        let r = x_date_req(
            Algorithm::HmacSha256,
            &[("request-line", line), ("host", "a.example")],
        );
        let mut r = r;
        r.headers.remove("request-line");
        // no body: digest is not required
        r.verify(&strict, t0()).unwrap();
        // with a body, an unsigned digest is refused before anything is read
        r.headers.insert("content-length", "5".parse().unwrap());
        let e = r.verify(&strict, t0()).unwrap_err();
        assert!(e.to_string().contains("body digest"), "{e}");
        assert!(parse_enforce_headers(&["bad header".into()]).is_err());
    }

    #[test]
    fn digest_requests_are_checked_from_the_head_first() {
        let body = b"{\"hello\":1}";
        let d = format!("SHA-256={}", B64.encode(Sha256::digest(body)));
        let mut r = digest_req("digest", &d, body);
        r.body = None;
        // head fine: the body is asked for
        assert_eq!(
            r.verify(&HmacSettings::default(), t0()).unwrap_err(),
            AuthError::NeedBody
        );
        // an expired date is refused without the body
        let e = r
            .verify(&HmacSettings::default(), t0() + Duration::from_secs(3600))
            .unwrap_err();
        assert!(matches!(e, AuthError::Expired(_)), "{e}");
    }
}
