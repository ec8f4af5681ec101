//! Seeded, bounded fuzzing (stable Rust, no fuzzing engine) of the parsers that a
//! client or a config controls and that the other suites do not already mutate:
//! JWT bearer tokens, `X-Forwarded-For`, CORS origins and request headers, the
//! condition expressions of `param_traffic_control`, and whole TOML configs.
//! (The auth headers of hmac/tc3/tc1/openapi are mutated in tests/attack_auth.rs,
//! request paths in `path::tests`.)
//!
//! Each test fixes its seed, so a failure reproduces; each asserts a property
//! beyond "no panic": a mutated token never yields another identity, the client
//! address is the peer or one the header named, an origin that is not allowed never
//! gets `Access-Control-Allow-Origin`, and every mutated config is either compiled
//! or refused with located problems.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate::auth::jwt::JwtProvider;
use keygate::config::raw::{RawCors, RawJwtProvider};
use keygate::policy::cors::{normalize_origin, CorsPolicy};
use keygate::policy::expr::{Context, Expr};
use keygate::policy::ip::{client_ip, TrustedProxies};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes that tend to break parsers, mixed into the mutations.
const SPICE: &[&[u8]] = &[
    b"",
    b".",
    b"..",
    b",",
    b";",
    b" ",
    b"\t",
    b"=",
    b"\"",
    b"'",
    b"\\",
    b"%",
    b"%00",
    b"%2e",
    b"[",
    b"]",
    b":",
    b"::",
    b"/",
    b"//",
    b"*",
    b"-",
    b"_",
    b"+",
    b"\xff",
    b"\xc0\xae",
    b"0",
    b"9999999999999999999999",
    b"-1",
    b"AAAA",
    b"==",
    b"eyJ",
    b"null",
    b"{}",
    b"(",
    b")",
    b"&&",
    b"||",
    b"!",
    b"\n",
    b"\r\n",
];

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = if v.is_empty() {
            0
        } else {
            rng.gen_range(0..=v.len())
        };
        match rng.gen_range(0..7) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if at < v.len() => {
                let end = rng.gen_range(at..=v.len());
                v.drain(at..end);
            }
            2 => {
                let s = SPICE[rng.gen_range(0..SPICE.len())];
                v.splice(at..at, s.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                let j = rng.gen_range(i..=v.len().min(i + 16));
                let chunk = v[i..j].to_vec();
                v.splice(at..at, chunk);
            }
            4 => v.truncate(at),
            5 => v.insert(at, rng.gen()),
            _ => {
                if !v.is_empty() {
                    let i = rng.gen_range(0..v.len());
                    v[i] = b"AZaz09-_.=+/"[rng.gen_range(0..12)];
                }
            }
        }
    }
    v
}

// ------------------------------------------------------------------------ JWT

// Ed25519 test key (openssl genpkey, for tests only), as in tests/jwt.rs.
const ED_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOIrWyakZ4rjU1LVE9XAUOV7hePvFGv4GHXq3am8qdtn
-----END PRIVATE KEY-----";
const ED_X: &str = "MxOFv3bcm9v8K_zr4K9GwHAnC4-jJ7g6d42k5QXBngE";

#[test]
fn mutated_jwts_never_yield_another_identity() {
    let raw = RawJwtProvider {
        name: "fuzz".into(),
        jwk: Some(
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "alg": "EdDSA"})
                .to_string(),
        ),
        ..Default::default()
    };
    let provider = JwtProvider::from_raw(&raw, Path::new(".")).expect("provider");
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let claims = serde_json::json!({"sub": "alice", "iat": secs, "exp": secs + 600});
    let key = jsonwebtoken::EncodingKey::from_ed_pem(ED_KEY.as_bytes()).expect("key");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");

    let verify = |t: &[u8]| -> Option<Result<String, String>> {
        let mut v = b"Bearer ".to_vec();
        v.extend_from_slice(t);
        let value = HeaderValue::from_bytes(&v).ok()?;
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value);
        Some(
            provider
                .verify(&h, Duration::from_secs(5), now)
                .map(|id| id.subject)
                .map_err(|e| e.to_string()),
        )
    };
    assert_eq!(verify(token.as_bytes()), Some(Ok("alice".into())));

    let mut rng = StdRng::seed_from_u64(0x6a77);
    let (mut tried, mut accepted) = (0, 0);
    for _ in 0..4000 {
        let t = mutate(&mut rng, token.as_bytes());
        let Some(result) = verify(&t) else { continue };
        tried += 1;
        if let Ok(subject) = result {
            accepted += 1;
            assert_eq!(subject, "alice", "token {:?}", String::from_utf8_lossy(&t));
        }
    }
    assert!(
        tried > 2000,
        "too few mutations reached the verifier: {tried}"
    );
    // Whatever the verifier accepts, it accepts only the signed claims; almost
    // every mutation must be refused.
    assert!(accepted * 20 < tried, "{accepted} of {tried} accepted");
}

// ------------------------------------------------------------------------ XFF

#[test]
fn forwarded_for_yields_the_peer_or_an_address_it_names() {
    let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1/128".into()]).expect("cidrs");
    let pieces: &[&str] = &[
        "10.0.0.1",
        "10.9.9.9",
        "1.2.3.4",
        "203.0.113.7",
        "::1",
        "2001:db8::1",
        "[2001:db8::2]",
        "[2001:db8::3]:443",
        "1.2.3.4:8080",
        "::ffff:198.51.100.1",
        "unknown",
        "999.1.1.1",
        "",
        " ",
        "_hidden",
    ];
    let mut rng = StdRng::seed_from_u64(0x0ff);
    for round in 0..5000 {
        let mut h = HeaderMap::new();
        let mut named: Vec<IpAddr> = vec![];
        for _ in 0..rng.gen_range(0..3) {
            let mut text = String::new();
            for i in 0..rng.gen_range(1..5) {
                if i > 0 {
                    text.push_str(if rng.gen() { ", " } else { "," });
                }
                text.push_str(pieces[rng.gen_range(0..pieces.len())]);
            }
            let mut bytes = text.into_bytes();
            if rng.gen_range(0..4) == 0 {
                bytes = mutate(&mut rng, &bytes);
            }
            let Ok(v) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            if let Ok(s) = v.to_str() {
                for item in s.split(',') {
                    let item = item.trim();
                    let ip = item
                        .parse::<IpAddr>()
                        .ok()
                        .or_else(|| item.parse::<SocketAddr>().ok().map(|a| a.ip()))
                        .or_else(|| {
                            item.strip_prefix('[')
                                .and_then(|r| r.strip_suffix(']'))
                                .and_then(|r| r.parse::<IpAddr>().ok())
                        });
                    named.extend(ip.map(keygate::policy::ip::normalize));
                }
            }
            h.append("x-forwarded-for", v);
        }
        let peer: IpAddr = if rng.gen() {
            "10.1.1.1".parse().expect("ip")
        } else {
            "192.0.2.9".parse().expect("ip")
        };
        let ip = client_ip(peer, &h, &trusted);
        if !trusted.contains(peer) {
            assert_eq!(
                ip, peer,
                "round {round}: untrusted peer's XFF believed: {h:?}"
            );
        } else {
            assert!(
                ip == peer || named.contains(&ip),
                "round {round}: {ip} is neither the peer nor named in {h:?}"
            );
        }
    }
}

// ----------------------------------------------------------------------- CORS

#[test]
fn cors_never_grants_an_origin_it_does_not_allow() {
    let raw = RawCors {
        name: "c".into(),
        allow_origin: vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ],
        allow_methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["x-custom".into()],
        expose_headers: vec![],
        allow_credentials: true,
        max_age: 60,
    };
    let cors = CorsPolicy::from_raw(&raw).expect("cors");
    let allowed = ["https://app.example.com", "http://localhost:3000"];
    let seeds: &[&[u8]] = &[
        b"https://app.example.com",
        b"http://localhost:3000",
        b"https://app.example.com.evil.test",
        b"null",
    ];
    let mut rng = StdRng::seed_from_u64(0xc025);
    for round in 0..6000 {
        let seed = seeds[rng.gen_range(0..seeds.len())];
        let origin = mutate(&mut rng, seed);
        if let Ok(s) = std::str::from_utf8(&origin) {
            // The origin parser itself: no panic, and idempotent.
            if let Some(n) = normalize_origin(s) {
                assert_eq!(normalize_origin(&n).as_deref(), Some(n.as_str()), "{s:?}");
            }
        }
        let Ok(ov) = HeaderValue::from_bytes(&origin) else {
            continue;
        };
        let mut req = HeaderMap::new();
        req.insert(http::header::ORIGIN, ov);
        req.insert(
            http::header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        if let Ok(v) = HeaderValue::from_bytes(&mutate(&mut rng, b"x-custom, content-type")) {
            req.insert(http::header::ACCESS_CONTROL_REQUEST_HEADERS, v);
        }
        let is_allowed = std::str::from_utf8(&origin)
            .ok()
            .and_then(normalize_origin)
            .is_some_and(|n| allowed.contains(&n.as_str()));
        let (_, pre) = cors.preflight(&req);
        let mut actual = HeaderMap::new();
        cors.apply(&req, &mut actual);
        for h in [&pre, &actual] {
            if let Some(granted) = h.get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
                assert!(
                    is_allowed,
                    "round {round}: origin {:?} granted {granted:?}",
                    String::from_utf8_lossy(&origin)
                );
            }
        }
        assert!(CorsPolicy::is_preflight(&Method::OPTIONS, &req));
    }
}

// ----------------------------------------------------------------- expressions

struct Cx(HeaderMap);

impl Context for Cx {
    fn header(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
        self.0
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        (name == "id").then_some(Cow::Borrowed("42"))
    }
    fn path(&self) -> &str {
        "/orders/7"
    }
    fn method(&self) -> &str {
        "GET"
    }
    fn client_ip(&self) -> IpAddr {
        IpAddr::from([192, 0, 2, 1])
    }
}

#[test]
fn condition_expressions_parse_or_fail_cleanly() {
    let seeds: &[&str] = &[
        "header.x-tier == 'gold' && query.id > 10",
        "!(method == \"POST\") || path != '/a'",
        "sysparam.ClientIp == '192.0.2.1' && sysparam.UserAgent != ''",
        "((((query.id))))",
        "query.id >= -5 && query.id <= 99999999999999999999",
    ];
    let mut h = HeaderMap::new();
    h.insert("x-tier", HeaderValue::from_static("gold"));
    let cx = Cx(h);
    let mut rng = StdRng::seed_from_u64(0xe4e);
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..8000 {
        let seed = seeds[rng.gen_range(0..seeds.len())];
        let src = mutate(&mut rng, seed.as_bytes());
        let Ok(src) = String::from_utf8(src) else {
            continue;
        };
        match Expr::parse(&src) {
            Ok(e) => {
                parsed += 1;
                let _ = e.eval(&cx);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty(), "{src:?}: empty error");
            }
        }
    }
    // Deep nesting must be refused, not overflow the stack.
    let deep = format!("{}query.id{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(Expr::parse(&deep).is_err());
    assert!(Expr::parse(&"!".repeat(100_000)).is_err());
    assert!(
        parsed > 100 && refused > 100,
        "{parsed} parsed, {refused} refused"
    );
}

// ----------------------------------------------------------------------- TOML

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8"]

[auth]
replay = "nonce"

[[keys]]
id = "AKIDfuzz"
secret = "fuzz-secret"
app = "mobile"

[[usage_plans]]
name = "gold"
qps = 10
quota = 1000
keys = ["AKIDfuzz"]

[[plugins]]
name = "office"
type = "ip_control"
mode = "white"
ips = "10.0.0.0/8;127.0.0.1"

[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "second"
expire = 1
api_rate_limit = 50

[[plugins]]
name = "params"
type = "param_traffic_control"
default_window = 1
default_rate_limit = 100
strategies = [{ name = "s", strategy_weight = 10, condition = "query.id > 1", parameters = [{ type = "query", name = "id" }], rate_limit = 5, window = 1 }]

[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://a.example"]

[[services]]
name = "demo"
environment = "release"
usage_plans = ["gold"]

[[services.apis]]
name = "echo"
path = "/echo/{id}"
methods = ["GET", "POST"]
auth = "hmac"
plugins = ["office", "flow", "web"]
[services.apis.backend]
type = "http"
url = "http://127.0.0.1:9"
timeout = "2s"

[[services.apis]]
name = "mock"
path = "=/hello"
plugins = ["params"]
[services.apis.backend]
type = "mock"
body = "hi"
"#;

#[test]
fn mutated_configs_compile_or_are_refused_with_located_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = keygate::policy::limits::LimitState::in_memory();
    let state = keygate::state::State::new(dir.path(), 16, limits);
    let raw = keygate::config::compile::parse(CONFIG).expect("the seed config parses");
    keygate::config::compile::compile(&raw, "seed".into(), &state).expect("seed compiles");

    let mut rng = StdRng::seed_from_u64(0x70e1);
    let (mut compiled, mut refused) = (0, 0);
    for round in 0..1500 {
        let text = mutate(&mut rng, CONFIG.as_bytes());
        let Ok(text) = String::from_utf8(text) else {
            continue;
        };
        let raw = match keygate::config::compile::parse(&text) {
            Ok(raw) => raw,
            Err(e) => {
                refused += 1;
                assert!(!e.message.is_empty(), "round {round}: empty parse error");
                continue;
            }
        };
        match keygate::config::compile::compile(&raw, "fuzz".into(), &state) {
            Ok(_) => compiled += 1,
            Err(problems) => {
                refused += 1;
                assert!(
                    !problems.is_empty(),
                    "round {round}: refused without a problem"
                );
                for p in &problems {
                    assert!(
                        !p.location.is_empty() && !p.message.is_empty(),
                        "round {round}: unlocated problem {p:?}"
                    );
                }
            }
        }
    }
    assert!(
        compiled > 10 && refused > 50,
        "{compiled} compiled, {refused} refused"
    );
}
