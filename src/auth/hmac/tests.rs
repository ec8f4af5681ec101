//! Unit tests of the `hmac` scheme.

use super::*;
use crate::auth::mac::{AnyMac, KeyedMacs};
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
            let mut m = macs
                .get(MacKey::Secret(alg), SECRET.as_bytes())
                .expect("mac");
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
        (
            "hmac id=\"a\", id=\"b\", algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"",
            "twice",
        ),
        (
            "hmac algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"",
            "id",
        ),
        (
            "hmac id=\"a\", algorithm=\"hmac-sha1\", headers=\"date\"",
            "signature",
        ),
        (
            "hmac id=\"a\", algorithm=\"hmac-sha1\", signature=\"x\"",
            "headers",
        ),
        ("hmac id=\"a\" algorithm=\"hmac-sha1\"", "expected ','"),
        ("hmac id=\"a, algorithm=x", "unterminated"),
        ("hmac id", "no value"),
        (
            "hmac id=\"\", algorithm=\"hmac-sha1\", headers=\"date\", signature=\"x\"",
            "empty",
        ),
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
fn from_raw_takes_each_algorithm_once_in_any_case() {
    let mut raw = crate::config::raw::RawHmacAuth::default();
    assert_eq!(HmacSettings::from_raw(&raw).unwrap().algorithms.len(), 4);
    raw.algorithms = vec!["HMAC-SHA256 ".into(), "hmac-sha256".into()];
    assert_eq!(
        HmacSettings::from_raw(&raw).unwrap().algorithms,
        [Algorithm::HmacSha256]
    );
    // A wrong name is the compiler's problem (config::compile tests).
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
