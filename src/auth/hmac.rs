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

use super::mac::{ct_eq, MacKey, NameList, Signature, SignedNames, B64, MAX_BASE64_LEN};
use super::replay::ReplayToken;
use super::{check_skew, head_has_no_body, lookup_key};
use super::{AuthError, Keys, RequestParts, Verified};
use base64::Engine as _;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, Version};
use sha2::{Digest as _, Sha256, Sha512};
use std::time::{Duration, SystemTime};

pub use super::mac::Algorithm;

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
    /// The settings of `[auth.hmac]`. The algorithm names are checked by the
    /// config compiler; the ones it accepted are taken here (each once).
    pub fn from_raw(raw: &crate::config::raw::RawHmacAuth) -> Result<Self, String> {
        let mut algorithms = Vec::new();
        for alg in raw.algorithms.iter().filter_map(|a| a.get()) {
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if raw.algorithms.is_empty() {
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
    // The value is visible ASCII (`find_credential`), so byte positions are
    // char boundaries; byte scans cost a fraction of `char` patterns.
    let skip = |s: &str, set: &[u8]| -> usize {
        s.bytes().position(|b| !set.contains(&b)).unwrap_or(s.len())
    };
    let until = |s: &str, set: &[u8]| -> usize {
        s.bytes().position(|b| set.contains(&b)).unwrap_or(s.len())
    };
    let mut rest = &s[4..];
    let (mut id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    loop {
        rest = &rest[skip(rest, b" \t,")..];
        if rest.is_empty() {
            break;
        }
        let name_end = until(rest, b"= \t,");
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_ascii_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| bad(&format!("parameter {name:?} has no value")))?
            .trim_ascii_start();
        let val;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r
                .find('"')
                .ok_or_else(|| bad(&format!("unterminated quoted value of {name:?}")))?;
            val = &r[..end];
            rest = &r[end + 1..];
        } else {
            let end = until(rest, b", \t");
            val = &rest[..end];
            rest = &rest[end..];
        }
        rest = &rest[skip(rest, b" \t")..];
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
    let names = SignedNames::parse(cred.headers, NameList::Spaces)?;
    check_enforced(&s.enforce_headers, &names, req.headers)?;
    check_dates(s, &names, req.headers, now)?;
    if cred.signature.len() > MAX_BASE64_LEN {
        return Err(AuthError::Malformed(
            "Authorization: signature is too long".into(),
        ));
    }
    let key = lookup_key(keys, cred.id)?;

    let mut mac = key.macs.get(MacKey::Secret(alg), key.secret.as_bytes())?;
    feed_signing_string(&names, req, &mut |b| mac.update(b))?;
    let expected = mac.finalize();
    // Text that is not base64 cannot match: a mismatch, with the debug string.
    let given =
        Signature::base64(cred.signature.as_bytes()).filter(|g| g.matches(expected.as_bytes()));
    let Some(given) = given else {
        let mut debug = Vec::with_capacity(256);
        feed_signing_string(&names, req, &mut |b| debug.extend_from_slice(b))?;
        return Err(AuthError::BadSignature {
            debug: Some(String::from_utf8_lossy(&debug).into_owned()),
        });
    };

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
        replay: Some(replay_token(s, &names, req.headers, &given)?),
    })
}

/// The replay identity: the first signed nonce header's value, else the MAC bytes.
fn replay_token(
    s: &HmacSettings,
    names: &SignedNames<'_>,
    headers: &HeaderMap,
    signature: &Signature,
) -> Result<ReplayToken, AuthError> {
    let ttl = s.max_skew * 2;
    let nonce = names
        .iter()
        .find(|n| s.nonce_headers.iter().any(|h| h.eq_ignore_ascii_case(n)));
    let Some(name) = nonce else {
        return Ok(signature.replay(ttl));
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
mod tests;
