//! Client-side signers written from SPEC §3, independently of keygate's own code
//! (only the hmac / sha1 / sha2 / md-5 / base64 / hex / percent-encoding crates).
//! Integration tests use them to build requests a real client would send.
//!
//! Every function returns what to add to the request: headers as `(name, value)`
//! pairs, or an encoded query / form string.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The parts of a request a signer looks at.
#[derive(Debug, Clone, Copy)]
pub struct Req<'a> {
    pub method: &'a str,
    /// The `Host` header exactly as sent (port included when not default).
    pub host: &'a str,
    pub path: &'a str,
    /// Raw query string without `?` ("" when none).
    pub query: &'a str,
    /// Extra headers the client sends (and, for `hmac`, signs, in this order).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> Req<'a> {
    pub fn get(host: &'a str, path: &'a str) -> Req<'a> {
        Req {
            method: "GET",
            host,
            path,
            query: "",
            headers: &[],
            body: b"",
        }
    }
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac_b64(algorithm: &str, key: &[u8], msg: &[u8]) -> String {
    macro_rules! mac {
        ($d:ty) => {{
            let mut m = <Hmac<$d> as Mac>::new_from_slice(key).expect("hmac key");
            m.update(msg);
            B64.encode(m.finalize().into_bytes())
        }};
    }
    match algorithm {
        "hmac-sha1" => mac!(Sha1),
        "hmac-sha256" => mac!(Sha256),
        "hmac-sha384" => mac!(Sha384),
        "hmac-sha512" => mac!(Sha512),
        other => panic!("unknown algorithm {other}"),
    }
}

/// RFC 7231 IMF-fixdate, e.g. `Fri, 09 Oct 2015 00:00:00 GMT`.
pub fn http_date(now: SystemTime) -> String {
    httpdate::fmt_http_date(now)
}

// ---------------------------------------------------------------- hmac (§3.1)

/// `lower(name): value` lines joined by `\n`.
pub fn hmac_signing_string(signed: &[(&str, &str)]) -> String {
    signed
        .iter()
        .map(|(n, v)| format!("{}: {}", n.to_ascii_lowercase(), v))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `Authorization` value for already chosen signed `(name, value)` pairs.
pub fn hmac_authorization(
    id: &str,
    secret: &str,
    algorithm: &str,
    signed: &[(&str, &str)],
) -> String {
    let sig = mac_b64(
        algorithm,
        secret.as_bytes(),
        hmac_signing_string(signed).as_bytes(),
    );
    let names: Vec<String> = signed.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    format!(
        "hmac id=\"{id}\", algorithm=\"{algorithm}\", headers=\"{}\", signature=\"{sig}\"",
        names.join(" ")
    )
}

/// `METHOD path?query HTTP/1.1` — the value of the `request-line` pseudo-header.
pub fn request_line(req: &Req, version: &str) -> String {
    if req.query.is_empty() {
        format!("{} {} {version}", req.method, req.path)
    } else {
        format!("{} {}?{} {version}", req.method, req.path, req.query)
    }
}

/// `SHA-256=<base64>` for a `Digest` header.
pub fn sha256_digest(body: &[u8]) -> String {
    format!("SHA-256={}", B64.encode(Sha256::digest(body)))
}

/// `hmac-sha1` headers: `Date` and `Authorization`, signing `date` then every
/// header of `req.headers` in order.
pub fn hmac_headers(req: &Req, id: &str, secret: &str, now: SystemTime) -> Vec<(String, String)> {
    hmac_headers_with(req, id, secret, "hmac-sha1", "Date", now)
}

/// Like [`hmac_headers`] with a chosen algorithm and date header (`Date` or `X-Date`).
pub fn hmac_headers_with(
    req: &Req,
    id: &str,
    secret: &str,
    algorithm: &str,
    date_header: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let date = http_date(now);
    let mut signed: Vec<(&str, &str)> = vec![(date_header, &date)];
    signed.extend(req.headers.iter().copied());
    vec![
        (date_header.to_string(), date.clone()),
        (
            "Authorization".to_string(),
            hmac_authorization(id, secret, algorithm, &signed),
        ),
    ]
}

/// `hmac-sha256` headers that also sign the request line and a `Digest` of the
/// body: returns `Date`, `Digest` and `Authorization`.
pub fn hmac_headers_full(
    req: &Req,
    id: &str,
    secret: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let date = http_date(now);
    let digest = sha256_digest(req.body);
    let line = request_line(req, "HTTP/1.1");
    let mut signed: Vec<(&str, &str)> = vec![
        ("date", &date),
        ("request-line", &line),
        ("digest", &digest),
    ];
    signed.extend(req.headers.iter().copied());
    vec![
        ("Date".to_string(), date.clone()),
        ("Digest".to_string(), digest.clone()),
        (
            "Authorization".to_string(),
            hmac_authorization(id, secret, "hmac-sha256", &signed),
        ),
    ]
}

// ----------------------------------------------------------------- tc3 (§3.2)

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac256(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac key");
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// UTC `YYYY-MM-DD` of a unix time (via the HTTP date formatter).
pub fn utc_date(secs: u64) -> String {
    let d = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    // "Fri, 09 Oct 2015 00:00:00 GMT"
    let p: Vec<&str> = d.split(' ').collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == p[2])
    .expect("month")
        + 1;
    format!("{}-{:02}-{}", p[3], month, p[1])
}

/// The TC3 canonical request signing `content-type;host` (plus any extra signed
/// headers given, names lower case).
pub fn tc3_canonical_request(
    req: &Req,
    content_type: &str,
    extra_signed: &[(&str, &str)],
    payload_hash: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = vec![
        (
            "content-type".into(),
            content_type.trim().to_ascii_lowercase(),
        ),
        ("host".into(), req.host.trim().to_ascii_lowercase()),
    ];
    for (n, v) in extra_signed {
        hs.push((n.to_ascii_lowercase(), v.trim().to_ascii_lowercase()));
    }
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed: Vec<&str> = hs.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let query = if req.method == "POST" { "" } else { req.query };
    (
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method, req.path, query, canonical_headers, signed, payload_hash
        ),
        signed,
    )
}

/// hex(HMAC chain) of a TC3 string to sign.
pub fn tc3_signature(secret: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac256(format!("TC3{secret}").as_bytes(), date);
    let k_service = hmac256(&k_date, service);
    let k_signing = hmac256(&k_service, "tc3_request");
    hex::encode(hmac256(&k_signing, string_to_sign))
}

fn tc3_build(
    req: &Req,
    id: &str,
    secret: &str,
    service: &str,
    now: SystemTime,
    unsigned: bool,
) -> Vec<(String, String)> {
    let ts = unix(now);
    let date = utc_date(ts);
    let ct_given = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| *v);
    let ct = ct_given.unwrap_or("application/json");
    let payload_hash = if unsigned {
        sha256_hex(b"UNSIGNED-PAYLOAD")
    } else {
        sha256_hex(req.body)
    };
    let (cr, signed) = tc3_canonical_request(req, ct, &[], &payload_hash);
    let scope = format!("{date}/{service}/tc3_request");
    let sts = format!(
        "TC3-HMAC-SHA256\n{ts}\n{scope}\n{}",
        sha256_hex(cr.as_bytes())
    );
    let sig = tc3_signature(secret, &date, service, &sts);
    let mut out = Vec::new();
    if ct_given.is_none() {
        out.push(("Content-Type".to_string(), ct.to_string()));
    }
    out.push(("X-TC-Timestamp".to_string(), ts.to_string()));
    if unsigned {
        out.push((
            "X-TC-Content-SHA256".to_string(),
            "UNSIGNED-PAYLOAD".to_string(),
        ));
    }
    out.push((
        "Authorization".to_string(),
        format!("TC3-HMAC-SHA256 Credential={id}/{scope}, SignedHeaders={signed}, Signature={sig}"),
    ));
    out
}

/// TC3 headers: `Content-Type` (only when `req.headers` has none: `application/json`),
/// `X-TC-Timestamp` and `Authorization`; signs `content-type;host` and the body hash.
pub fn tc3_headers(
    req: &Req,
    id: &str,
    secret: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    tc3_build(req, id, secret, service, now, false)
}

/// Like [`tc3_headers`] with `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` (body not signed).
pub fn tc3_headers_unsigned(
    req: &Req,
    id: &str,
    secret: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    tc3_build(req, id, secret, service, now, true)
}

// ----------------------------------------------------------------- tc1 (§3.3)

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    percent_encode(s.as_bytes(), QUERY_SET).to_string()
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A fresh nonce for each call in this process.
pub fn nonce() -> u64 {
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (base % 1_000_000) * 1000 + NONCE.fetch_add(1, Ordering::Relaxed) % 1000 + 1
}

/// The v1 source string: METHOD + host + path + "?" + sorted `name=value` (raw values).
pub fn tc1_source(method: &str, host: &str, path: &str, params: &[(&str, &str)]) -> String {
    let mut p: Vec<&(&str, &str)> = params.iter().filter(|(n, _)| *n != "Signature").collect();
    p.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let joined: Vec<String> = p.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("{method}{host}{path}?{}", joined.join("&"))
}

/// Base64 v1 signature (`HmacSHA1`, or `HmacSHA256` when `sha256`).
pub fn tc1_signature(secret: &str, sha256: bool, source: &str) -> String {
    let alg = if sha256 { "hmac-sha256" } else { "hmac-sha1" };
    mac_b64(alg, secret.as_bytes(), source.as_bytes())
}

/// The encoded query (GET) or form body (POST) for a v1 request: `params` (raw
/// values; include `Action`) plus `SecretId`, `Timestamp`, `Nonce`,
/// `SignatureMethod` (when `sha256`) and `Signature`.
pub fn tc1_params(
    req: &Req,
    params: &[(&str, &str)],
    id: &str,
    secret: &str,
    now: SystemTime,
    nonce: u64,
    sha256: bool,
) -> String {
    let ts = unix(now).to_string();
    let nonce = nonce.to_string();
    let mut all: Vec<(&str, &str)> = params.to_vec();
    all.push(("SecretId", id));
    all.push(("Timestamp", &ts));
    all.push(("Nonce", &nonce));
    if sha256 {
        all.push(("SignatureMethod", "HmacSHA256"));
    }
    let sig = tc1_signature(
        secret,
        sha256,
        &tc1_source(req.method, req.host, req.path, &all),
    );
    all.push(("Signature", &sig));
    all.iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ------------------------------------------------------------- openapi (§3.6)

/// `enc` of the open platform: keeps only `A-Z a-z 0-9 - _ .`.
const OPENAPI_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn openapi_enc(s: &str) -> String {
    percent_encode(s.as_bytes(), OPENAPI_SET).to_string()
}

/// UPPER(method) & enc(path) & enc(sorted params).
pub fn openapi_source(method: &str, path: &str, params: &[(&str, &str)]) -> String {
    let mut p: Vec<&(&str, &str)> = params.iter().filter(|(n, _)| *n != "sig").collect();
    p.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let joined: Vec<String> = p.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        openapi_enc(path),
        openapi_enc(&joined.join("&"))
    )
}

/// Base64(HMAC-SHA1(appkey + "&", source)).
pub fn openapi_sig(appkey: &str, source: &str) -> String {
    mac_b64(
        "hmac-sha1",
        format!("{appkey}&").as_bytes(),
        source.as_bytes(),
    )
}

/// The encoded query (GET) or form body (POST): `params` plus `appid` and `sig`.
pub fn openapi_params(req: &Req, params: &[(&str, &str)], appid: &str, appkey: &str) -> String {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    all.push(("appid", appid));
    let sig = openapi_sig(appkey, &openapi_source(req.method, req.path, &all));
    all.push(("sig", &sig));
    all.iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
