//! Client-side helpers for the CLI: `keygate sign` and `keygate keygen` (SPEC §7).

use super::hmac::signing_string;
use super::mac::{Algorithm, AnyMac, B64};
use base64::Engine as _;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use std::time::SystemTime;

/// Pseudo-headers the `hmac` scheme signs but that are not sent as headers.
const PSEUDO_HEADERS: [&str; 1] = ["request-line"];

/// A signed request: the headers to send and the string that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `[("Date", ..), extra headers in order..., ("Authorization", ..)]`,
    /// without pseudo-headers such as `request-line`.
    pub headers: Vec<(String, String)>,
    /// The signing string, lines joined by `\n` (for debugging a client).
    pub string_to_sign: String,
}

/// The headers an `hmac` request needs: `[("Date", ..), extra headers in order...,
/// ("Authorization", ..)]`, signing `date` followed by the extra headers. A
/// pseudo-header (`request-line: GET /path?query HTTP/1.1`) is signed and
/// named in `headers="…"`, but not returned as a header to send.
pub fn sign_hmac(
    id: &str,
    secret: &str,
    algorithm: &str,
    headers: &[(String, String)],
    now: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    sign_hmac_request(id, secret, algorithm, headers, now).map(|s| s.headers)
}

/// [`sign_hmac`], also returning the string to sign.
pub fn sign_hmac_request(
    id: &str,
    secret: &str,
    algorithm: &str,
    headers: &[(String, String)],
    now: SystemTime,
) -> Result<Signed, String> {
    let alg = Algorithm::from_name(algorithm).ok_or_else(|| {
        format!(
            "unknown algorithm {algorithm:?} (expected hmac-sha1, hmac-sha256, hmac-sha384 or hmac-sha512)"
        )
    })?;
    if id.is_empty() || id.contains(['"', '\r', '\n']) {
        return Err("the key id must be non-empty and contain no quote or newline".into());
    }
    let mut signed = Vec::with_capacity(headers.len() + 1);
    signed.push(("Date".to_string(), httpdate::fmt_http_date(now)));
    for (name, value) in headers {
        let name = name.trim();
        let value = value.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("invalid header name {name:?}"));
        }
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name} has a newline in its value"));
        }
        if ["date", "authorization"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return Err(format!("{name} is set by keygate sign itself"));
        }
        if signed.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("header {name} given twice"));
        }
        signed.push((name.to_string(), value.to_string()));
    }
    let string_to_sign = signing_string(&signed);
    let mac = AnyMac::digest(alg, secret.as_bytes(), &[string_to_sign.as_bytes()])
        .ok_or("unusable secret")?;
    let signature = B64.encode(mac.as_bytes());
    let names: Vec<String> = signed.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let authorization = format!(
        "hmac id=\"{id}\", algorithm=\"{}\", headers=\"{}\", signature=\"{signature}\"",
        alg.name(),
        names.join(" ")
    );
    signed.push(("Authorization".to_string(), authorization));
    signed.retain(|(n, _)| !PSEUDO_HEADERS.iter().any(|p| p.eq_ignore_ascii_case(n)));
    Ok(Signed {
        headers: signed,
        string_to_sign,
    })
}

/// A new random key pair: id `AKID` + 32 alphanumerics, secret of 40
/// alphanumerics, both from the operating system's CSPRNG.
pub fn keygen() -> (String, String) {
    let id = format!("AKID{}", Alphanumeric.sample_string(&mut OsRng, 32));
    let secret = Alphanumeric.sample_string(&mut OsRng, 40);
    (id, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hmac::{verify, HmacSettings};
    use crate::auth::{Key, Keys, RequestParts};
    use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
    use std::sync::Arc;

    #[test]
    fn signed_headers_verify() {
        let now = SystemTime::now();
        let extra = vec![("Source".to_string(), "AndriodApp".to_string())];
        let out = sign_hmac("AKID1", "s3cret", "hmac-sha256", &extra, now).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, "Date");
        assert_eq!(out[1], extra[0]);
        assert_eq!(out[2].0, "Authorization");
        assert!(out[2].1.contains("headers=\"date source\""), "{}", out[2].1);
        let mut headers = HeaderMap::new();
        for (n, v) in &out {
            headers.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut keys = Keys::new();
        keys.insert(
            "AKID1".into(),
            Arc::new(Key::new("AKID1".into(), "s3cret".into(), None, true)),
        );
        let (m, u) = (Method::GET, Uri::from_static("/"));
        let req = RequestParts {
            method: &m,
            uri: &u,
            version: Version::HTTP_11,
            headers: &headers,
            body: None,
        };
        verify(&HmacSettings::default(), &req, &keys, now).unwrap();
    }

    #[test]
    fn request_line_is_signed_not_sent() {
        let now = SystemTime::now();
        let extra = vec![(
            "request-line".to_string(),
            "GET /echo?a=1 HTTP/1.1".to_string(),
        )];
        let s = sign_hmac_request("AKID1", "s3cret", "hmac-sha256", &extra, now).unwrap();
        let names: Vec<&str> = s.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Date", "Authorization"]);
        assert!(
            s.headers[1].1.contains("headers=\"date request-line\""),
            "{:?}",
            s.headers
        );
        assert_eq!(
            s.string_to_sign,
            format!(
                "date: {}\nrequest-line: GET /echo?a=1 HTTP/1.1",
                httpdate::fmt_http_date(now)
            )
        );
        // The server computes the same line from the request and accepts it.
        let mut headers = HeaderMap::new();
        for (n, v) in &s.headers {
            headers.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut keys = Keys::new();
        keys.insert(
            "AKID1".into(),
            Arc::new(Key::new("AKID1".into(), "s3cret".into(), None, true)),
        );
        let (m, u) = (Method::GET, Uri::from_static("/echo?a=1"));
        let req = RequestParts {
            method: &m,
            uri: &u,
            version: Version::HTTP_11,
            headers: &headers,
            body: None,
        };
        verify(&HmacSettings::default(), &req, &keys, now).unwrap();
    }

    #[test]
    fn refuses_bad_input() {
        let now = SystemTime::now();
        assert!(sign_hmac("a", "s", "hmac-md5", &[], now).is_err());
        let date = vec![("date".to_string(), "x".to_string())];
        assert!(sign_hmac("a", "s", "hmac-sha1", &date, now).is_err());
        let bad = vec![("a b".to_string(), "x".to_string())];
        assert!(sign_hmac("a", "s", "hmac-sha1", &bad, now).is_err());
        assert!(sign_hmac("a\"", "s", "hmac-sha1", &[], now).is_err());
    }

    #[test]
    fn keygen_shapes() {
        let (id, secret) = keygen();
        assert!(id.starts_with("AKID") && id.len() == 36);
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(keygen(), keygen());
    }
}
