//! `tc1` — cloud API v1 signature, `HmacSHA1` / `HmacSHA256` (SPEC §3.3).
//!
//! Parameters come from the query string (GET and every method but POST) or from
//! an `application/x-www-form-urlencoded` body (POST). All parameters but
//! `Signature` are sorted by name (byte order) and joined as `name=value` with `&`
//! using decoded values; the source string is
//! `METHOD + Host + path + "?" + that`, and
//! `Signature = Base64(HMAC-SHA1|SHA256(secret, source))` (`SignatureMethod=HmacSHA256`
//! selects SHA-256, anything else SHA-1).
//!
//! A `Signature` whose `+` arrived unencoded (decoded to a space) is still accepted.

use super::mac::{Algorithm, AnyMac, MacKey, Signature, B64};
use super::params::{param, request_params, required, sorted_without};
use super::replay::ReplayToken;
use super::{check_skew, lookup_key, request_host};
use super::{AuthError, Keys, RequestParts, Verified};
use base64::Engine as _;
use http::Method;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Body limit of a POST request (SPEC §3.3).
pub const POST_LIMIT: usize = 1024 * 1024;
/// Limit of a GET request (the query lives in the head; no body is read).
pub const GET_LIMIT: usize = 32 * 1024;

/// Compiled `[auth.tc1]` settings.
#[derive(Debug, Clone)]
pub struct Tc1Settings {
    pub max_skew: Duration,
}

impl Default for Tc1Settings {
    fn default() -> Self {
        Tc1Settings {
            max_skew: Duration::from_secs(300),
        }
    }
}

impl Tc1Settings {
    pub fn from_raw(raw: &crate::config::raw::RawTc1Auth) -> Result<Self, String> {
        Ok(Tc1Settings {
            max_skew: raw.max_skew,
        })
    }
}

/// How much body to buffer before [`verify`]: POST parameters live in the body
/// (1 MiB); other methods carry them in the query and need no body.
pub fn body_limit(method: &Method) -> Option<usize> {
    super::params::body_limit(method, POST_LIMIT)
}

fn feed_source(
    req: &RequestParts<'_>,
    host: &[u8],
    sorted: &[&(Vec<u8>, Vec<u8>)],
    sink: &mut dyn FnMut(&[u8]),
) {
    sink(req.method.as_str().as_bytes());
    sink(host);
    sink(req.uri.path().as_bytes());
    sink(b"?");
    for (i, (n, v)) in sorted.iter().enumerate() {
        if i > 0 {
            sink(b"&");
        }
        sink(n);
        sink(b"=");
        sink(v);
    }
}

/// Verifies a v1 (`HmacSHA1` / `HmacSHA256`) request. The replay token is the
/// `Nonce` (to be keyed with the SecretId by the caller), kept for twice the skew.
pub fn verify(
    s: &Tc1Settings,
    req: &RequestParts<'_>,
    keys: &Keys,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let params = request_params(req)?;
    let signature = required(&params, "Signature")?;
    let secret_id = required(&params, "SecretId")?;
    required(&params, "Action")?;
    let nonce = required(&params, "Nonce")?;
    let ts = required(&params, "Timestamp")?;
    let ts: u64 = std::str::from_utf8(ts)
        .ok()
        .filter(|t| t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| AuthError::Malformed("Timestamp must be a unix time in seconds".into()))?;
    check_skew(
        "Timestamp",
        UNIX_EPOCH + Duration::from_secs(ts),
        now,
        s.max_skew,
    )?;
    let alg = match param(&params, "SignatureMethod") {
        Some(b"HmacSHA256") => Algorithm::HmacSha256,
        _ => Algorithm::HmacSha1,
    };
    let host = request_host(req).ok_or_else(|| AuthError::Missing("Host header".into()))?;
    let given = Signature::base64_param(signature)
        .ok_or_else(|| AuthError::Malformed("Signature is not base64".into()))?;

    let secret_id = std::str::from_utf8(secret_id).map_err(|_| AuthError::UnknownKey)?;
    let key = lookup_key(keys, secret_id)?;

    let sorted = sorted_without(&params, "Signature");
    let mut mac = key.macs.get(MacKey::Secret(alg), key.secret.as_bytes())?;
    feed_source(req, host, &sorted, &mut |b| mac.update(b));
    if !given.matches(mac.finalize().as_bytes()) {
        let mut src = Vec::with_capacity(256);
        feed_source(req, host, &sorted, &mut |b| src.extend_from_slice(b));
        return Err(AuthError::BadSignature {
            debug: Some(String::from_utf8_lossy(&src).into_owned()),
        });
    }
    Ok(Verified {
        key,
        replay: Some(ReplayToken::nonce(nonce, s.max_skew * 2)),
    })
}

/// Base64 of a v1 signature over `source` (used by tests and tooling).
pub fn sign_source(secret: &str, sha256: bool, source: &str) -> String {
    let alg = if sha256 {
        Algorithm::HmacSha256
    } else {
        Algorithm::HmacSha1
    };
    match AnyMac::digest(alg, secret.as_bytes(), &[source.as_bytes()]) {
        Some(mac) => B64.encode(mac.as_bytes()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit;
    use http::{Uri, Version};

    const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const SECRET: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const TS: u64 = 1465185768;
    /// The published source string (host and region of the original document).
    const SRC: &str = "GETcvm.tencentcloudapi.com/?Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Limit=20&Nonce=11886&Offset=0&Region=ap-guangzhou&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Timestamp=1465185768&Version=2017-03-12";

    fn keys() -> Keys {
        testkit::keys(&[(ID, SECRET, true), ("off", "x", false)])
    }

    fn check(
        method: Method,
        uri: &str,
        hdrs: &[(&str, &str)],
        body: Option<&[u8]>,
        now: u64,
    ) -> Result<Verified, AuthError> {
        let uri: Uri = uri.parse().unwrap();
        let headers = testkit::headers(hdrs);
        let req = RequestParts {
            method: &method,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            body,
        };
        verify(
            &Tc1Settings::default(),
            &req,
            &keys(),
            UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    const Q: &str = "/?Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Limit=20&Nonce=11886&Offset=0&Region=ap-guangzhou&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Signature=EliP9YW3pW28FpsEdkXt%2F%2BWcGeI%3D&Timestamp=1465185768&Version=2017-03-12";
    const HOST: (&str, &str) = ("host", "cvm.tencentcloudapi.com");

    #[test]
    fn published_example() {
        assert_eq!(
            sign_source(SECRET, false, SRC),
            "EliP9YW3pW28FpsEdkXt/+WcGeI="
        );
        let v = check(Method::GET, Q, &[HOST], None, TS).unwrap();
        assert_eq!(v.key.id, ID);
        assert_eq!(
            v.replay.unwrap(),
            ReplayToken::nonce(b"11886", Duration::from_secs(600))
        );
        // unencoded '+' in the Signature arrives as a space
        let q = Q.replace("%2B", "+");
        check(Method::GET, &q, &[HOST], None, TS).unwrap();
    }

    #[test]
    fn tampering_and_debug() {
        let q = Q.replace("Limit=20", "Limit=21");
        match check(Method::GET, &q, &[HOST], None, TS) {
            Err(AuthError::BadSignature { debug: Some(d) }) => {
                assert_eq!(d, SRC.replace("Limit=20", "Limit=21"))
            }
            other => panic!("{other:?}"),
        }
        // host is part of the source, port included
        assert!(check(
            Method::GET,
            Q,
            &[("host", "cvm.tencentcloudapi.com:443")],
            None,
            TS
        )
        .is_err());
    }

    #[test]
    fn post_form_body_and_sha256() {
        let params = format!("Action=Send&Nonce=7&SecretId={ID}&SignatureMethod=HmacSHA256&Text=a+b%26c&Timestamp={TS}");
        let src = format!("POSTapi.example.com:8080/v1?Action=Send&Nonce=7&SecretId={ID}&SignatureMethod=HmacSHA256&Text=a b&c&Timestamp={TS}");
        let sig = sign_source(SECRET, true, &src);
        let body = format!(
            "{params}&Signature={}",
            sig.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
        let hdrs = [
            ("host", "api.example.com:8080"),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        check(Method::POST, "/v1", &hdrs, Some(body.as_bytes()), TS).unwrap();
        // not a form
        let e = check(
            Method::POST,
            "/v1",
            &[hdrs[0], ("content-type", "application/json")],
            Some(body.as_bytes()),
            TS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("x-www-form-urlencoded"), "{e}");
        assert_eq!(body_limit(&Method::POST), Some(1024 * 1024));
        assert_eq!(body_limit(&Method::GET), None);
    }

    #[test]
    fn skew_at_the_limit() {
        check(Method::GET, Q, &[HOST], None, TS + 300).unwrap();
        check(Method::GET, Q, &[HOST], None, TS - 300).unwrap();
        assert!(matches!(
            check(Method::GET, Q, &[HOST], None, TS + 301),
            Err(AuthError::Expired(_))
        ));
        assert!(matches!(
            check(Method::GET, Q, &[HOST], None, TS - 301),
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn missing_duplicate_and_bad_parameters() {
        for p in [
            "Nonce=11886&",
            "SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&",
            "Action=DescribeInstances&",
            "Timestamp=1465185768&",
        ] {
            let q = Q.replace(p, "");
            let e = check(Method::GET, &q, &[HOST], None, TS).unwrap_err();
            assert!(matches!(e, AuthError::Missing(_)), "{p}: {e}");
        }
        let q = Q.replace("Signature=EliP9YW3pW28FpsEdkXt%2F%2BWcGeI%3D&", "");
        assert!(matches!(
            check(Method::GET, &q, &[HOST], None, TS),
            Err(AuthError::Missing(_))
        ));
        let q = format!("{Q}&Limit=20");
        let e = check(Method::GET, &q, &[HOST], None, TS).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let q = Q.replace("Timestamp=1465185768", "Timestamp=soon");
        assert!(matches!(
            check(Method::GET, &q, &[HOST], None, TS),
            Err(AuthError::Malformed(_))
        ));
        let q = Q.replace("EliP9YW3pW28FpsEdkXt%2F%2BWcGeI%3D", "%%%");
        assert!(matches!(
            check(Method::GET, &q, &[HOST], None, TS),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_and_disabled_keys() {
        let q = Q.replace(ID, "nope");
        assert_eq!(
            check(Method::GET, &q, &[HOST], None, TS).unwrap_err(),
            AuthError::UnknownKey
        );
        let q = Q.replace(ID, "off");
        assert_eq!(
            check(Method::GET, &q, &[HOST], None, TS).unwrap_err(),
            AuthError::DisabledKey
        );
    }
}
