//! Micro benchmarks of the pure policy checks: IP list lookup, client IP,
//! CORS decoration, JWT (ES256) verification, the access line's formatting.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use keygate::auth::jwt::JwtProvider;
use keygate::config::raw::{RawCors, RawJwtProvider};
use keygate::policy::cors::CorsPolicy;
use keygate::policy::ip::{client_ip, IpPolicy, TrustedProxies};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn ip(c: &mut Criterion) {
    let list: Vec<String> = (0..10_000u32)
        .map(|i| format!("{}/30", Ipv4Addr::from(0x0a00_0000 + i * 8)))
        .collect();
    let policy = IpPolicy::parse("white", &list.join(";")).unwrap();
    let probe = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 8 * 7_777 + 2));
    c.bench_function("ip_control 10k entries", |b| {
        b.iter(|| policy.allows(black_box(probe)))
    });
    let trusted = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.1.1.1, 10.2.2.2"),
    );
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    c.bench_function("client_ip 4 hops", |b| {
        b.iter(|| client_ip(black_box(peer), &h, &trusted))
    });
}

fn cors(c: &mut Criterion) {
    let raw = RawCors {
        name: "c".into(),
        allow_origin: vec!["https://a.example".into(), "https://b.example".into()],
        allow_methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["x-token".into()],
        expose_headers: vec!["x-request-id".into()],
        allow_credentials: true,
        max_age: 600,
    };
    let policy = CorsPolicy::from_raw(&raw).unwrap();
    let mut req = HeaderMap::new();
    req.insert("origin", HeaderValue::from_static("https://b.example"));
    c.bench_function("cors apply (credentials)", |b| {
        b.iter(|| {
            let mut resp = HeaderMap::new();
            policy.apply(&req, &mut resp);
            resp
        })
    });
}

fn jwt(c: &mut Criterion) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = kp.public_key_raw();
    let jwk = format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65])
    );
    let raw = RawJwtProvider {
        name: "p".into(),
        jwk: Some(jwk),
        jwks_file: None,
        pem_file: None,
        issuer: None,
        audiences: vec![],
        claims_to_headers: BTreeMap::from([("email".to_string(), "x-email".to_string())]),
        key_claim: None,
        ..Default::default()
    };
    let provider = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let now = SystemTime::now();
    let exp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": "alice", "exp": exp, "email": "a@example.com"});
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    c.bench_function("jwt verify ES256", |b| {
        b.iter(|| provider.verify(&h, Duration::from_secs(30), now).unwrap())
    });
}

/// The access line as the request path formats it (text, no colour, as when
/// stderr is redirected; and JSON), into a reused buffer as the writer does.
fn access_line(c: &mut Criterion) {
    use keygate::logging::access::{json_line, text_line, Line};
    let line = Line {
        request_id: "0b7c1d2e3f405162",
        client_ip: "203.0.113.7".parse().unwrap(),
        host: "api.example.com",
        method: "GET",
        path: "/v1/orders/42",
        route: "shop/orders",
        key_id: "AKIDbench",
        status: 200,
        upstream_status: 200,
        grpc_status: "-",
        error_code: "-",
        bytes_out: 512,
        latency_us: 840,
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    c.bench_function("access line text", |b| {
        b.iter(|| {
            buf.clear();
            text_line(&mut buf, SystemTime::now(), black_box(&line), false);
            black_box(buf.len())
        })
    });
    c.bench_function("access line json", |b| {
        b.iter(|| {
            buf.clear();
            json_line(&mut buf, SystemTime::now(), black_box(&line));
            black_box(buf.len())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = ip, cors, jwt, access_line
}
criterion_main!(benches);
