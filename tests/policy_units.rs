//! Robustness of the policy modules on arbitrary input: nothing panics.
//! (Behaviour is unit-tested next to the code.)

use http::{HeaderMap, HeaderValue, Method};
use keygate::auth::jwt::JwtProvider;
use keygate::config::raw::{RawCors, RawJwtProvider};
use keygate::policy::cors::{normalize_origin, CorsPolicy};
use keygate::policy::ip::{bucket_ipv6, client_ip, IpPolicy, TrustedProxies};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    /// A string mixing fragments that matter to the parsers with random bytes.
    fn text(&mut self, fragments: &[&str]) -> String {
        let n = self.next() % 8;
        let mut s = String::new();
        for _ in 0..n {
            if self.next().is_multiple_of(4) {
                s.push(char::from(32 + (self.next() % 95) as u8));
            } else {
                s.push_str(self.pick(fragments));
            }
        }
        s
    }
}

const IP_FRAGMENTS: &[&str] = &[
    "1",
    "255",
    "256",
    ".",
    ":",
    "::",
    "/",
    "/0",
    "/32",
    "/128",
    "/999",
    "ffff",
    "[",
    "]",
    ",",
    ";",
    " ",
    "\n",
    "10.0.0.1",
    "::ffff:",
    "2001:db8::",
    "-",
    "%eth0",
];

#[test]
fn ip_parsers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
    let peers: [IpAddr; 3] = [
        "10.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
        "::ffff:10.1.1.1".parse().unwrap(),
    ];
    for i in 0..5000 {
        let text = rng.text(IP_FRAGMENTS);
        if let Ok(p) = IpPolicy::parse(if i % 2 == 0 { "white" } else { "black" }, &text) {
            let _ = p.allows(peers[i % 3]);
        }
        let _ = TrustedProxies::parse(std::slice::from_ref(&text));
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.append("x-forwarded-for", v);
            h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        }
        let _ = client_ip(peers[i % 3], &h, &trusted);
        let _ = bucket_ipv6(peers[i % 3], (rng.next() % 256) as u8);
    }
}

const ORIGIN_FRAGMENTS: &[&str] = &[
    "https",
    "http",
    "://",
    "a.example",
    ":",
    "443",
    "0",
    "99999",
    "/",
    "[",
    "]",
    "::1",
    "null",
    "*",
    "@",
    "?",
    "#",
    ",",
    " ",
    "x-a",
    "GET",
];

#[test]
fn cors_never_panics() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..3000 {
        let o = rng.text(ORIGIN_FRAGMENTS);
        let _ = normalize_origin(&o);
        let raw = RawCors {
            name: "c".into(),
            allow_origin: vec![
                o.clone(),
                rng.pick(&["*", "null", "https://a.example"]).into(),
            ],
            allow_methods: vec![rng.pick(&["GET", "put", "BREW", ""]).into()],
            allow_headers: vec![rng.text(ORIGIN_FRAGMENTS)],
            expose_headers: vec![rng.pick(&["*", "x-a", "bad header"]).into()],
            allow_credentials: i % 2 == 0,
            max_age: rng.next() % 3,
        };
        let policy = CorsPolicy::from_raw(&raw).unwrap_or_else(|_| CorsPolicy::allow_any());
        let mut req = HeaderMap::new();
        for name in [
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ] {
            if let Ok(v) = HeaderValue::from_str(&rng.text(ORIGIN_FRAGMENTS)) {
                req.append(name, v);
            }
        }
        let _ = CorsPolicy::is_preflight(&Method::OPTIONS, &req);
        let _ = policy.preflight(&req);
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static("accept"));
        policy.apply(&req, &mut resp);
    }
}

const JWT_FRAGMENTS: &[&str] = &[
    "eyJhbGciOiJSUzI1NiJ9",
    "eyJhbGciOiJFUzI1NiJ9",
    "eyJhbGciOiJub25lIn0",
    "e30",
    ".",
    "..",
    "=",
    "AAAA",
    "_-",
    "\"",
    "id_token=",
    " ",
    "W10",
    "bnVsbA",
];

#[test]
fn jwt_verify_never_panics() {
    let raw = RawJwtProvider {
        name: "p".into(),
        jwk: Some(
            r#"{"kty":"EC","crv":"P-256","x":"pv7oQ_UcAFR1TAj3DT9_s89JmXDTDRW480--qixesIE","y":"c81M_sknhUsGWILL3Y7-9fkkBKD0-8uBc3Y9VNju_2I"}"#
                .into(),
        ),
        jwks_file: None,
        pem_file: None,
        issuer: Some("iss".into()),
        audiences: vec!["aud".into()],
        claims_to_headers: BTreeMap::new(),
        key_claim: None,
        ..Default::default()
    };
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..5000 {
        let t = format!(
            "{} {}",
            rng.pick(&["Bearer", "bearer", "Basic", ""]),
            rng.text(JWT_FRAGMENTS)
        );
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&t) {
            h.insert("authorization", v);
        }
        assert!(p
            .verify(&h, Duration::from_secs(30), SystemTime::UNIX_EPOCH)
            .is_err());
    }
}
