//! `tc3` — cloud API 3.0 signature `TC3-HMAC-SHA256` (SPEC §3.2).
//!
//! ```text
//! CanonicalRequest = Method \n Path \n RawQuery (empty for POST) \n
//!                    CanonicalHeaders \n SignedHeaders \n hex(sha256(body))
//! StringToSign     = TC3-HMAC-SHA256 \n Timestamp \n Date/service/tc3_request \n
//!                    hex(sha256(CanonicalRequest))
//! Signature        = hex(HMAC(HMAC(HMAC(HMAC("TC3"+key, Date), service), "tc3_request"), StringToSign))
//! ```
//! Signed header names are lower-cased and sorted by the server (a client that lists
//! them in another order is accepted as long as it signed the sorted form);
//! `content-type` and `host` must be signed. The `host` value is the `Host` header,
//! or the URI authority for HTTP/2.
//!
//! # Host with a port
//! On a non-default port the official SDKs disagree: the Python SDK signs the
//! `Host` it sends (`127.0.0.1:8080`), the Node.js SDK sends that `Host` but signs
//! the host name alone (`URL.hostname`, `127.0.0.1`). When the signature over the
//! `Host` as received does not match and that `Host` carries a port, the host name
//! without the port is tried once more. The host name stays signed; only the port
//! is then not covered (a request could be replayed to another port of the same
//! host inside the skew window, which the host-name binding already allows for a
//! default-port request).

use super::mac::{Algorithm, AnyMac, MacKey, NameList, Signature, SignedNames};
use super::{check_skew, head_has_no_body, lookup_key, AuthError, Keys, RequestParts, Verified};
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Body limit of a GET request (SPEC §3.2).
pub const GET_LIMIT: usize = 32 * 1024;
/// Body limit of other requests with a signed payload.
pub const POST_LIMIT: usize = 10 * 1024 * 1024;

/// Compiled `[auth.tc3]` settings.
#[derive(Debug, Clone)]
pub struct Tc3Settings {
    pub max_skew: Duration,
    pub allow_unsigned_payload: bool,
}

impl Default for Tc3Settings {
    fn default() -> Self {
        Tc3Settings {
            max_skew: Duration::from_secs(300),
            allow_unsigned_payload: true,
        }
    }
}

impl Tc3Settings {
    pub fn from_raw(raw: &crate::config::raw::RawTc3Auth) -> Result<Self, String> {
        Ok(Tc3Settings {
            max_skew: raw.max_skew,
            allow_unsigned_payload: raw.allow_unsigned_payload,
        })
    }
}

fn is_unsigned(headers: &HeaderMap) -> bool {
    headers.get("x-tc-content-sha256").is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(UNSIGNED_PAYLOAD.as_bytes())
    })
}

/// How much body to buffer before [`verify`]: `None` when the client declared
/// `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` (stream it), else the SPEC limit.
pub fn body_limit(method: &Method, headers: &HeaderMap) -> Option<usize> {
    if is_unsigned(headers) {
        None
    } else if method == Method::GET {
        Some(GET_LIMIT)
    } else {
        Some(POST_LIMIT)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Credential<'a> {
    id: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn malformed(m: impl Into<String>) -> AuthError {
    AuthError::Malformed(m.into())
}

fn parse_authorization(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let v = all.next().ok_or_else(|| {
        AuthError::Missing(
            "Authorization header (TC3-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..)"
                .into(),
        )
    })?;
    if all.next().is_some() {
        return Err(malformed("more than one Authorization header"));
    }
    let v = v
        .to_str()
        .map_err(|_| malformed("Authorization header is not visible ASCII"))?
        .trim();
    let rest = v
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with([' ', '\t']))
        .ok_or_else(|| malformed("Authorization does not use TC3-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| malformed(format!("Authorization: {item:?} is not name=value")))?;
        let name = name.trim();
        let slot = if name.eq_ignore_ascii_case("Credential") {
            &mut credential
        } else if name.eq_ignore_ascii_case("SignedHeaders") {
            &mut signed
        } else if name.eq_ignore_ascii_case("Signature") {
            &mut signature
        } else {
            return Err(malformed(format!("Authorization: unknown field {name:?}")));
        };
        if slot.is_some() {
            return Err(malformed(format!("Authorization: {name} given twice")));
        }
        *slot = Some(value.trim());
    }
    fn need<'v>(v: Option<&'v str>, name: &str) -> Result<&'v str, AuthError> {
        v.filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::Missing(format!("{name}= in the Authorization header")))
    }
    let credential = need(credential, "Credential")?;
    let signed_headers = need(signed, "SignedHeaders")?;
    let signature = need(signature, "Signature")?;
    let mut parts = credential.split('/');
    let (Some(id), Some(date), Some(service), Some("tc3_request"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed(
            "Credential must be SecretId/YYYY-MM-DD/service/tc3_request",
        ));
    };
    if id.is_empty() || service.is_empty() {
        return Err(malformed(
            "Credential must be SecretId/YYYY-MM-DD/service/tc3_request",
        ));
    }
    Ok(Credential {
        id,
        date,
        service,
        signed_headers,
        signature,
    })
}

/// `YYYY-MM-DD` (UTC) of a unix timestamp.
pub(crate) fn utc_date(secs: u64) -> [u8; 10] {
    // Howard Hinnant's days -> civil algorithm.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = (yoe + era * 400 + i64::from(m <= 2)).clamp(0, 9999);
    let mut out = *b"0000-00-00";
    let digits = |n: i64, buf: &mut [u8]| {
        let mut n = n;
        for b in buf.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(y, &mut out[0..4]);
    digits(m, &mut out[5..7]);
    digits(d, &mut out[8..10]);
    out
}

/// The signed header names, sorted; `content-type` and `host` must be among them.
fn signed_names(list: &str) -> Result<SignedNames<'_>, AuthError> {
    let names = SignedNames::parse(list, NameList::Semicolons)?;
    if !names.has("content-type") || !names.has("host") {
        return Err(malformed(
            "SignedHeaders must include content-type and host",
        ));
    }
    Ok(names)
}

/// Feeds `bytes` lower-cased, through a small stack buffer.
fn lower_into(bytes: &[u8], sink: &mut dyn FnMut(&[u8])) {
    for chunk in bytes.chunks(64) {
        let mut buf = [0u8; 64];
        let buf = &mut buf[..chunk.len()];
        buf.copy_from_slice(chunk);
        buf.make_ascii_lowercase();
        sink(buf);
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// `host:port` → `host` (`[v6]:port` → `[v6]`); `None` when there is no port.
fn without_port(host: &[u8]) -> Option<&[u8]> {
    let colon = host.iter().rposition(|&b| b == b':')?;
    let (name, port) = (&host[..colon], &host[colon + 1..]);
    let port_ok = !port.is_empty() && port.iter().all(u8::is_ascii_digit);
    let name_ok = !name.is_empty() && (name.ends_with(b"]") || !name.contains(&b':'));
    (port_ok && name_ok).then_some(name)
}

fn feed_canonical_request(
    req: &RequestParts<'_>,
    names: &SignedNames<'_>,
    payload_hash: &[u8; 64],
    strip_port: bool,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), AuthError> {
    sink(req.method.as_str().as_bytes());
    sink(b"\n");
    sink(req.uri.path().as_bytes());
    sink(b"\n");
    if req.method != Method::POST {
        sink(req.uri.query().unwrap_or("").as_bytes());
    }
    sink(b"\n");
    for name in names.iter() {
        let value = if name.eq_ignore_ascii_case("host") {
            if req.headers.get_all(http::header::HOST).iter().count() > 1 {
                return Err(malformed("Host header given twice"));
            }
            super::request_host(req).map(|h| {
                if strip_port {
                    without_port(h).unwrap_or(h)
                } else {
                    h
                }
            })
        } else {
            let mut all = req.headers.get_all(name).iter();
            let first = all.next();
            if all.next().is_some() {
                return Err(malformed(format!("signed header {name:?} given twice")));
            }
            first.map(|v| v.as_bytes())
        }
        .ok_or_else(|| {
            AuthError::Missing(format!("signed header {name:?} is not in the request"))
        })?;
        lower_into(name.as_bytes(), sink);
        sink(b":");
        lower_into(trim_ows(value), sink);
        sink(b"\n");
    }
    sink(b"\n");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sink(b";");
        }
        lower_into(name.as_bytes(), sink);
    }
    sink(b"\n");
    sink(payload_hash);
    Ok(())
}

fn hex32(d: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input (32 bytes).
    let _ = hex::encode_to_slice(&d[..d.len().min(32)], &mut out);
    out
}

fn hmac256(key: &[u8], data: &[&[u8]]) -> Result<[u8; 32], AuthError> {
    let mac = AnyMac::digest(Algorithm::HmacSha256, key, data)
        .ok_or_else(|| malformed("unusable secret"))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(mac.as_bytes());
    Ok(out)
}

/// Verifies a `TC3-HMAC-SHA256` request. `pinned_service`: the service the
/// credential scope must name for this API; `require_signed_payload`: the API
/// refuses `UNSIGNED-PAYLOAD`.
pub fn verify(
    s: &Tc3Settings,
    pinned_service: Option<&str>,
    require_signed_payload: bool,
    req: &RequestParts<'_>,
    keys: &Keys,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let cred = parse_authorization(req.headers)?;

    // Timestamp, skew, scope date, service.
    let ts_raw = req
        .headers
        .get("x-tc-timestamp")
        .ok_or_else(|| AuthError::Missing("X-TC-Timestamp header".into()))?
        .as_bytes();
    let ts: u64 = std::str::from_utf8(ts_raw)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| malformed("X-TC-Timestamp must be a unix time in seconds"))?;
    let t = UNIX_EPOCH + Duration::from_secs(ts);
    check_skew("X-TC-Timestamp", t, now, s.max_skew)?;
    let date = utc_date(ts);
    if cred.date.as_bytes() != date {
        return Err(malformed(format!(
            "Credential date {:?} is not the UTC date of X-TC-Timestamp ({})",
            cred.date,
            String::from_utf8_lossy(&date)
        )));
    }
    if let Some(pin) = pinned_service {
        if cred.service != pin {
            return Err(malformed(format!(
                "Credential service {:?} is not this API's service ({pin:?})",
                cred.service
            )));
        }
    }
    let names = signed_names(cred.signed_headers)?;
    let given = Signature::hex(cred.signature, 32)
        .ok_or_else(|| malformed("Signature must be 64 hex digits"))?;

    let key = lookup_key(keys, cred.id)?;

    // Payload hash.
    let payload_hash = if is_unsigned(req.headers) {
        if require_signed_payload || !s.allow_unsigned_payload {
            return Err(malformed(
                "X-TC-Content-SHA256: UNSIGNED-PAYLOAD is not allowed on this API",
            ));
        }
        hex32(&Sha256::digest(UNSIGNED_PAYLOAD.as_bytes()))
    } else {
        let body = match req.body {
            Some(b) => b,
            None if head_has_no_body(req.headers) => b"",
            None => return Err(AuthError::NeedBody),
        };
        hex32(&Sha256::digest(body))
    };

    let scope: [&[u8]; 5] = [
        cred.date.as_bytes(),
        b"/",
        cred.service.as_bytes(),
        b"/",
        b"tc3_request",
    ];

    let mut k_date = key.macs.get(MacKey::Tc3Sha256, key.secret.as_bytes())?;
    k_date.update(cred.date.as_bytes());
    let k_date = k_date.finalize();
    let k_date = k_date.as_bytes();
    let k_service = hmac256(k_date, &[cred.service.as_bytes()])?;
    let k_signing = hmac256(&k_service, &[b"tc3_request"])?;
    // Canonical request -> string to sign -> signature.
    let signature = |strip_port: bool| -> Result<([u8; 32], [u8; 64]), AuthError> {
        let mut h = Sha256::new();
        feed_canonical_request(req, &names, &payload_hash, strip_port, &mut |b| h.update(b))?;
        let cr_hash = hex32(&h.finalize());
        let mut sts: Vec<&[u8]> = Vec::with_capacity(12);
        sts.extend_from_slice(&[ALGORITHM.as_bytes(), b"\n", ts_raw, b"\n"]);
        sts.extend_from_slice(&scope);
        sts.extend_from_slice(&[b"\n", &cr_hash]);
        Ok((hmac256(&k_signing, &sts)?, cr_hash))
    };
    let (expected, cr_hash) = signature(false)?;
    // `host` is always signed (`signed_names`); see "Host with a port" above.
    let matched = given.matches(&expected)
        || (super::request_host(req).and_then(without_port).is_some()
            && given.matches(&signature(true)?.0));

    if !matched {
        let mut sts: Vec<&[u8]> = Vec::with_capacity(12);
        sts.extend_from_slice(&[ALGORITHM.as_bytes(), b"\n", ts_raw, b"\n"]);
        sts.extend_from_slice(&scope);
        sts.extend_from_slice(&[b"\n", &cr_hash]);
        let mut cr = Vec::with_capacity(512);
        feed_canonical_request(req, &names, &payload_hash, false, &mut |b| {
            cr.extend_from_slice(b)
        })?;
        let sts: Vec<u8> = sts.concat();
        return Err(AuthError::BadSignature {
            debug: Some(format!(
                "StringToSign:\n{}\n\nCanonicalRequest:\n{}",
                String::from_utf8_lossy(&sts),
                String::from_utf8_lossy(&cr)
            )),
        });
    }
    Ok(Verified {
        key,
        replay: Some(given.replay(s.max_skew * 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::replay::ReplayToken;
    use crate::auth::testkit;
    use http::{HeaderValue, Uri, Version};

    const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const SECRET: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    // The published GET example (cvm.tencentcloudapi.com, 2018-10-09).
    const TS: u64 = 1539084154;
    const SIG: &str = "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474";

    fn keys() -> Keys {
        testkit::keys(&[(ID, SECRET, true), ("off", "x", false)])
    }

    struct R {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    }

    impl R {
        fn example() -> R {
            let mut r = R {
                method: Method::GET,
                uri: Uri::from_static("/?Limit=10&Offset=0"),
                headers: HeaderMap::new(),
                body: Some(Vec::new()),
            };
            r.set("content-type", "application/x-www-form-urlencoded");
            r.set("host", "cvm.tencentcloudapi.com");
            r.set("x-tc-action", "DescribeInstances");
            r.set("x-tc-version", "2017-03-12");
            r.set("x-tc-timestamp", &TS.to_string());
            r.set("authorization", &format!("TC3-HMAC-SHA256 Credential={ID}/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host, Signature={SIG}"));
            r
        }
        fn set(&mut self, n: &'static str, v: &str) {
            self.headers.insert(n, HeaderValue::from_str(v).unwrap());
        }
        fn verify_at(&self, now: SystemTime) -> Result<Verified, AuthError> {
            self.verify_with(&Tc3Settings::default(), None, false, now)
        }
        fn verify_with(
            &self,
            s: &Tc3Settings,
            pin: Option<&str>,
            signed_only: bool,
            now: SystemTime,
        ) -> Result<Verified, AuthError> {
            let parts = RequestParts {
                method: &self.method,
                uri: &self.uri,
                version: Version::HTTP_11,
                headers: &self.headers,
                body: self.body.as_deref(),
            };
            verify(s, pin, signed_only, &parts, &keys(), now)
        }
    }

    fn at(ts: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(ts)
    }

    #[test]
    fn published_get_example() {
        let v = R::example().verify_at(at(TS)).unwrap();
        assert_eq!(v.key.id, ID);
        assert_eq!(
            v.replay.unwrap(),
            ReplayToken::signature(&hex::decode(SIG).unwrap(), Duration::from_secs(600))
        );
    }

    #[test]
    fn host_signed_without_its_port_is_accepted() {
        // The Node.js SDK signs `URL.hostname` but sends `Host: name:port`.
        let mut r = R::example();
        r.set("host", "cvm.tencentcloudapi.com:8080");
        assert!(r.verify_at(at(TS)).is_ok());
        // The host name itself is still bound by the signature.
        for other in [
            "other.tencentcloudapi.com:8080",
            "cvm.tencentcloudapi.com:80x",
            "cvm.tencentcloudapi.com:",
        ] {
            r.set("host", other);
            assert!(
                matches!(r.verify_at(at(TS)), Err(AuthError::BadSignature { .. })),
                "{other}"
            );
        }
    }

    #[test]
    fn ports_are_split_off_host_names_only() {
        assert_eq!(without_port(b"a.b:8080"), Some(&b"a.b"[..]));
        assert_eq!(without_port(b"[::1]:8080"), Some(&b"[::1]"[..]));
        assert_eq!(without_port(b"::1"), None);
        assert_eq!(without_port(b"a.b"), None);
        assert_eq!(without_port(b":80"), None);
        assert_eq!(without_port(b"a.b:"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(&utc_date(0), b"1970-01-01");
        assert_eq!(&utc_date(1551113065), b"2019-02-25");
        assert_eq!(&utc_date(1539084154), b"2018-10-09");
        assert_eq!(&utc_date(951782400), b"2000-02-29");
        assert_eq!(&utc_date(4102444799), b"2099-12-31");
    }

    #[test]
    fn skew_at_the_limit() {
        let r = R::example();
        r.verify_at(at(TS + 300)).unwrap();
        r.verify_at(at(TS - 300)).unwrap();
        let e = r.verify_at(at(TS + 301)).unwrap_err();
        assert!(
            matches!(e, AuthError::Expired(ref m) if m.contains("expired by 1 s")),
            "{e}"
        );
        assert!(matches!(
            r.verify_at(at(TS - 301)),
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn uppercase_hex_and_reordered_fields_accepted() {
        let mut r = R::example();
        r.set("authorization", &format!("TC3-HMAC-SHA256 Signature={}, SignedHeaders=host;content-type,Credential={ID}/2018-10-09/cvm/tc3_request", SIG.to_uppercase()));
        r.verify_at(at(TS)).unwrap();
    }

    #[test]
    fn tampering_is_detected_with_debug() {
        let mut r = R::example();
        r.uri = Uri::from_static("/?Limit=11&Offset=0");
        match r.verify_at(at(TS)) {
            Err(AuthError::BadSignature { debug: Some(d) }) => {
                assert!(
                    d.starts_with(
                        "StringToSign:\nTC3-HMAC-SHA256\n1539084154\n2018-10-09/cvm/tc3_request\n"
                    ),
                    "{d}"
                );
                assert!(d.contains("CanonicalRequest:\nGET\n/\nLimit=11&Offset=0\ncontent-type:application/x-www-form-urlencoded\nhost:cvm.tencentcloudapi.com\n\ncontent-type;host\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "{d}");
                assert!(!d.contains(SECRET) && !d.contains(SIG));
            }
            other => panic!("{other:?}"),
        }
        // header values are lower-cased and trimmed: changing the case does not matter
        let mut r = R::example();
        r.set("host", "  CVM.TencentCloudAPI.com ");
        r.verify_at(at(TS)).unwrap();
    }

    #[test]
    fn scope_checks() {
        let mut r = R::example();
        r.set("authorization", &format!("TC3-HMAC-SHA256 Credential={ID}/2018-10-10/cvm/tc3_request, SignedHeaders=content-type;host, Signature={SIG}"));
        let e = r.verify_at(at(TS)).unwrap_err();
        assert!(e.to_string().contains("UTC date"), "{e}");
        let r = R::example();
        r.verify_with(&Tc3Settings::default(), Some("cvm"), false, at(TS))
            .unwrap();
        let e = r
            .verify_with(&Tc3Settings::default(), Some("cbs"), false, at(TS))
            .unwrap_err();
        assert!(e.to_string().contains("service"), "{e}");
    }

    #[test]
    fn malformed_authorizations() {
        let cases = [
            ("TC3-HMAC-SHA1 Credential=a/b/c/tc3_request", "TC3-HMAC-SHA256"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host", "Signature"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm, SignedHeaders=content-type;host, Signature=00", "SecretId/"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00", "twice"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=host, Signature=00", "content-type and host"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=host;content-type;host, Signature=00", "twice"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host, Signature=zz", "64 hex"),
            ("TC3-HMAC-SHA256 Credential=a/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host;x-foo, Signature=00", "64 hex"),
            ("TC3-HMAC-SHA256 junk", "name=value"),
        ];
        for (a, want) in cases {
            let mut r = R::example();
            r.set("authorization", a);
            let e = r.verify_at(at(TS)).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
        let mut r = R::example();
        r.headers.remove("authorization");
        assert!(matches!(r.verify_at(at(TS)), Err(AuthError::Missing(_))));
        let mut r = R::example();
        r.headers.remove("x-tc-timestamp");
        assert!(matches!(r.verify_at(at(TS)), Err(AuthError::Missing(_))));
        let mut r = R::example();
        r.set("x-tc-timestamp", "-5");
        assert!(matches!(r.verify_at(at(TS)), Err(AuthError::Malformed(_))));
        let mut r = R::example();
        r.set("x-tc-timestamp", "99999999999999999999");
        assert!(r.verify_at(at(TS)).is_err());
    }

    #[test]
    fn signed_header_missing_from_request() {
        let mut r = R::example();
        r.set("authorization", &format!("TC3-HMAC-SHA256 Credential={ID}/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host;x-tc-region, Signature={SIG}"));
        let e = r.verify_at(at(TS)).unwrap_err();
        assert!(e.to_string().contains("x-tc-region"), "{e}");
    }

    #[test]
    fn unknown_and_disabled_keys() {
        for (id, want) in [
            ("nope", AuthError::UnknownKey),
            ("off", AuthError::DisabledKey),
        ] {
            let mut r = R::example();
            r.set("authorization", &format!("TC3-HMAC-SHA256 Credential={id}/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host, Signature={SIG}"));
            assert_eq!(r.verify_at(at(TS)).unwrap_err(), want);
        }
    }

    #[test]
    fn unsigned_payload_modes() {
        let mut r = R::example();
        r.set("x-tc-content-sha256", "UNSIGNED-PAYLOAD");
        assert_eq!(body_limit(&Method::POST, &r.headers), None);
        // The example signed the empty-body hash, so this one is a mismatch with a
        // debug string naming the UNSIGNED-PAYLOAD hash.
        let e = r.verify_at(at(TS)).unwrap_err();
        let unsigned_hash = hex::encode(Sha256::digest(b"UNSIGNED-PAYLOAD"));
        assert!(
            matches!(e, AuthError::BadSignature { debug: Some(ref d) } if d.contains(&unsigned_hash)),
            "{e:?}"
        );
        let e = r
            .verify_with(&Tc3Settings::default(), None, true, at(TS))
            .unwrap_err();
        assert!(
            e.to_string().contains("UNSIGNED-PAYLOAD is not allowed"),
            "{e}"
        );
        let off = Tc3Settings {
            allow_unsigned_payload: false,
            ..Tc3Settings::default()
        };
        assert!(r.verify_with(&off, None, false, at(TS)).is_err());
    }

    #[test]
    fn body_limits() {
        let h = HeaderMap::new();
        assert_eq!(body_limit(&Method::GET, &h), Some(32 * 1024));
        assert_eq!(body_limit(&Method::POST, &h), Some(10 * 1024 * 1024));
    }

    #[test]
    fn missing_body_is_an_error_unless_the_head_says_empty() {
        let mut r = R::example();
        r.body = None;
        r.verify_at(at(TS)).unwrap();
        r.set("content-length", "5");
        // the head passed: the caller must read the body and verify again
        assert_eq!(r.verify_at(at(TS)).unwrap_err(), AuthError::NeedBody);
        // a head that fails is refused before the body is needed
        assert_eq!(
            r.verify_at(at(TS + 3600)).unwrap_err().code(),
            "AuthFailure.SignatureExpire"
        );
    }
}
