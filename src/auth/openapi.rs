//! `openapi` — open platform v3 `sig` parameter (SPEC §3.6).
//!
//! Parameters come from the query (GET, and any method but POST) or a form body
//! (POST); `appid` is the key id and the secret is the app key.
//! ```text
//! source = UPPER(method) & enc(path) & enc(sorted "name=value" joined by "&", decoded values, without sig)
//! sig    = Base64(HMAC-SHA1(appkey + "&", source))
//! ```
//! `enc` keeps only `A-Z a-z 0-9 - _ .` and writes every other byte as `%XX`.
//!
//! Only `appid` and `sig` are required here: `openid`, `openkey` and `pf` are the
//! platform's user parameters, signed like any other and passed to the upstream.
//!
//! Replay: the scheme has no timestamp or nonce, so two legitimate identical
//! calls (e.g. `get_info` twice) carry the same `sig`; a replay token would refuse
//! the second one forever (or for an arbitrary window). No token is returned.

use super::mac::{MacKey, Signature};
use super::params::{request_params, required, sorted_without};
use super::{lookup_key, AuthError, Keys, RequestParts, Verified};
use http::Method;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Body limit of a POST (the form parameters), as for `tc1`.
pub const POST_LIMIT: usize = 1024 * 1024;

/// The platform's documented code for bad parameters / signature.
pub const RET_BAD_PARAMETER: i64 = 1000002;

/// Bytes that `enc` escapes: everything but `A-Z a-z 0-9 - _ .`.
pub const ENC_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// How much body to buffer before [`verify`]: POST parameters are in the body.
pub fn body_limit(method: &Method) -> Option<usize> {
    super::params::body_limit(method, POST_LIMIT)
}

fn feed_source(
    method: &Method,
    path: &str,
    sorted: &[&(Vec<u8>, Vec<u8>)],
    sink: &mut dyn FnMut(&[u8]),
) {
    let m = method.as_str();
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        sink(m.to_ascii_uppercase().as_bytes());
    } else {
        sink(m.as_bytes());
    }
    sink(b"&");
    for chunk in percent_encode(path.as_bytes(), ENC_SET) {
        sink(chunk.as_bytes());
    }
    sink(b"&");
    for (i, (n, v)) in sorted.iter().enumerate() {
        if i > 0 {
            sink(b"%26");
        }
        for chunk in percent_encode(n, ENC_SET) {
            sink(chunk.as_bytes());
        }
        sink(b"%3D");
        for chunk in percent_encode(v, ENC_SET) {
            sink(chunk.as_bytes());
        }
    }
}

/// Verifies an open-platform v3 request. Never returns a replay token (see the
/// module documentation).
pub fn verify(req: &RequestParts<'_>, keys: &Keys) -> Result<Verified, AuthError> {
    let params = request_params(req)?;
    let sig = required(&params, "sig")?;
    let appid = required(&params, "appid")?;
    let given = Signature::base64_param(sig)
        .ok_or_else(|| AuthError::Malformed("sig is not base64".into()))?;
    let appid = std::str::from_utf8(appid).map_err(|_| AuthError::UnknownKey)?;
    let key = lookup_key(keys, appid)?;

    let sorted = sorted_without(&params, "sig");
    let mut mac = key.macs.get(MacKey::SecretAmpSha1, key.secret.as_bytes())?;
    feed_source(req.method, req.uri.path(), &sorted, &mut |b| mac.update(b));
    if !given.matches(mac.finalize().as_bytes()) {
        let mut src = Vec::with_capacity(256);
        feed_source(req.method, req.uri.path(), &sorted, &mut |b| {
            src.extend_from_slice(b)
        });
        return Err(AuthError::BadSignature {
            debug: Some(String::from_utf8_lossy(&src).into_owned()),
        });
    }
    Ok(Verified { key, replay: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mac::{Algorithm, AnyMac};
    use crate::auth::testkit;
    use http::{Uri, Version};

    const APPKEY: &str = "228bf094169a40a3bd188ba37ebe8723";
    // The platform's published example.
    const Q: &str = "/v3/user/get_info?openid=11111111111111111&openkey=2222222222222222&appid=123456&pf=qzone&format=json&userip=112.90.139.30&sig=FdJkiDYwMj5Aj1UG2RUPc83iokk%3D";
    const SRC: &str = "GET&%2Fv3%2Fuser%2Fget_info&appid%3D123456%26format%3Djson%26openid%3D11111111111111111%26openkey%3D2222222222222222%26pf%3Dqzone%26userip%3D112.90.139.30";

    fn keys() -> Keys {
        testkit::keys(&[("123456", APPKEY, true), ("off", APPKEY, false)])
    }

    fn check(
        method: Method,
        uri: &str,
        hdrs: &[(&str, &str)],
        body: Option<&[u8]>,
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
        verify(&req, &keys())
    }

    #[test]
    fn published_example() {
        let v = check(Method::GET, Q, &[], None).unwrap();
        assert_eq!(v.key.id, "123456");
        assert!(v.replay.is_none());
    }

    #[test]
    fn mismatch_shows_source() {
        let q = Q.replace("pf=qzone", "pf=pengyou");
        match check(Method::GET, &q, &[], None) {
            Err(AuthError::BadSignature { debug: Some(d) }) => {
                assert_eq!(d, SRC.replace("qzone", "pengyou"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn post_form_and_encoding() {
        use base64::Engine as _;
        let body = b"appid=123456&openid=x&text=a+b~%E4%BD%A0*";
        let src = "POST&%2Fv3%2Fmsg&appid%3D123456%26openid%3Dx%26text%3Da%20b%7E%E4%BD%A0%2A";
        let key = format!("{APPKEY}&");
        let mac = AnyMac::digest(Algorithm::HmacSha1, key.as_bytes(), &[src.as_bytes()]).unwrap();
        let sig = crate::auth::mac::B64.encode(mac.as_bytes());
        let body = [
            &body[..],
            b"&sig=",
            percent_encode(sig.as_bytes(), ENC_SET)
                .to_string()
                .as_bytes(),
        ]
        .concat();
        let ct = [("content-type", "application/x-www-form-urlencoded")];
        check(Method::POST, "/v3/msg", &ct, Some(&body)).unwrap();
        assert_eq!(body_limit(&Method::POST), Some(POST_LIMIT));
    }

    #[test]
    fn missing_and_unknown() {
        let q = Q.replace("appid=123456&", "");
        assert!(matches!(
            check(Method::GET, &q, &[], None),
            Err(AuthError::Missing(_))
        ));
        let q = Q.replace("&sig=FdJkiDYwMj5Aj1UG2RUPc83iokk%3D", "");
        assert!(matches!(
            check(Method::GET, &q, &[], None),
            Err(AuthError::Missing(_))
        ));
        let q = Q.replace("appid=123456", "appid=9");
        assert_eq!(
            check(Method::GET, &q, &[], None).unwrap_err(),
            AuthError::UnknownKey
        );
        let q = Q.replace("appid=123456", "appid=off");
        assert_eq!(
            check(Method::GET, &q, &[], None).unwrap_err(),
            AuthError::DisabledKey
        );
    }
}
