//! The whole policy chain of one request on a compiled snapshot, without sockets:
//! route, client IP, IP allow-list, hmac verification, limits, CORS decoration.
//! `cargo bench --bench pipeline`

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Request};
use keygate::auth::{hmac, RequestParts};
use keygate::config::compile;
use keygate::policy::ip::client_ip;
use keygate::policy::limits::{LimitRequest, LimitState, Timestamp};
use keygate::state::State;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::SystemTime;

const CONFIG: &str = r#"
[[keys]]
id = "AKIDbench"
secret = "bench-secret"
[[plugins]]
name = "allow"
type = "ip_control"
mode = "white"
ips = "127.0.0.0/8;10.0.0.0/8"
[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "second"
expire = 1
api_rate_limit = 1000000000
ip_rate_limit = 1000000000
[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://app.example"]
max_age = 600
[[services]]
name = "bench"
qps = 1000000000
[[services.apis]]
name = "full"
path = "/full/"
auth = "hmac"
plugins = ["allow", "flow", "web"]
[services.apis.backend]
url = "http://127.0.0.1:9"
"#;

fn bench_chain(c: &mut Criterion) {
    let raw = compile::parse(CONFIG).expect("parse");
    let state = State::new(std::path::Path::new("."), 16, LimitState::in_memory());
    let gw = compile::compile(&raw, "bench".into(), &state).expect("compile");
    let signed = keygate::auth::sign::sign_hmac(
        "AKIDbench",
        "bench-secret",
        "hmac-sha256",
        &[],
        SystemTime::now(),
    )
    .expect("sign");
    let mut req = Request::builder()
        .method(Method::GET)
        .uri("/full/orders?page=2");
    for (k, v) in &signed {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .header("host", "api.example")
        .header("origin", "https://app.example")
        .body(())
        .expect("request");
    let peer: IpAddr = "127.0.0.1".parse().expect("ip");
    let origin = {
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_static("https://app.example"));
        h
    };

    c.bench_function(
        "policy chain: route + ip + hmac-sha256 + limits + cors",
        |b| {
            b.iter(|| {
                let m = gw
                    .router
                    .lookup(Some("api.example"), req.uri().path(), req.method())
                    .expect("route");
                let api = &gw.apis[m.api];
                let ip = client_ip(peer, req.headers(), &gw.trusted);
                for (_, p) in &api.ip {
                    assert!(p.allows(ip));
                }
                let rp = RequestParts {
                    method: req.method(),
                    uri: req.uri(),
                    version: req.version(),
                    headers: req.headers(),
                    body: None,
                };
                let v =
                    hmac::verify(&gw.auth.hmac, &rp, &gw.keys, SystemTime::now()).expect("verify");
                let lr = LimitRequest {
                    key_id: Some(&v.key.id),
                    app: Some(&v.key.app),
                    plan: None,
                    client_ip: ip,
                    method: req.method(),
                    path: m.path,
                    headers: req.headers(),
                    query: req.uri().query(),
                };
                let mut out = HeaderMap::new();
                let r = api.limits.check(&lr, Timestamp::now());
                assert!(!r.refused, "limited");
                r.write_headers(&mut out);
                if let Some(cors) = &api.cors {
                    cors.apply(&origin, &mut out);
                }
                black_box(out)
            })
        },
    );
}

criterion_group!(benches, bench_chain);
criterion_main!(benches);
