//! The whole pipeline of one request through the real handler (`Ctx::handle`)
//! on a snapshot compiled from TOML text, without sockets: the request is built
//! in memory and the back end is a mock, so what is measured is keygate's own
//! work from the request head to the decorated answer.
//!
//! - plain: route, IP (no plugin), no auth, no limits, mock answer, decoration.
//! - full policy: route, IP allow-list, hmac-sha256 with a signed nonce (so the
//!   replay cache takes every request), usage-plan lookup, plan + service +
//!   traffic-plugin limits, response header rules, CORS, mock answer.
//!
//! Requests are built (and signed) outside the timed part.
//! `cargo bench --bench pipeline` (`-- --quick` for a short run)

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use keygate::config::compile;
use keygate::handler::{ConnInfo, Ctx};
use keygate::policy::limits::LimitState;
use keygate::state::State;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

const CONFIG: &str = r#"
[[keys]]
id = "AKIDbench"
secret = "bench-secret"
app = "bench-app"
[[usage_plans]]
name = "gold"
qps = 1000000000
keys = ["AKIDbench"]
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
usage_plans = ["gold"]
[[services.apis]]
name = "full"
path = "/full/"
auth = "hmac"
plugins = ["allow", "flow", "web"]
[services.apis.response_headers]
set = { "X-Served-For" = "${app}" }
[services.apis.backend]
type = "mock"
body = "ok"
[[services]]
name = "open"
[[services.apis]]
name = "plain"
path = "/plain/"
[services.apis.backend]
type = "mock"
body = "ok"
"#;

fn handler() -> Ctx {
    let raw = compile::parse(CONFIG).expect("parse");
    // Room for every nonce of a long run: the cache grows as it fills.
    let state = State::new(std::path::Path::new("."), 1 << 26, LimitState::in_memory());
    let gw = compile::compile(&raw, "bench".into(), &state).expect("compile");
    Ctx::new(gw, Arc::new(state))
}

fn conn() -> ConnInfo {
    ConnInfo {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        tls: false,
    }
}

/// Polls the handler's future once: with a mock back end it answers without
/// waiting on anything. A future that does wait is driven by the runtime.
fn run<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => rt.block_on(f),
    }
}

fn plain_request() -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri("/plain/orders?page=2")
        .header("host", "api.example")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// A signed request with a nonce of its own: the replay cache takes it.
fn full_request() -> Request<Full<Bytes>> {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed).to_string();
    let signed = keygate::auth::sign::sign_hmac(
        "AKIDbench",
        "bench-secret",
        "hmac-sha256",
        &[("X-Nonce".to_string(), nonce)],
        SystemTime::now(),
    )
    .expect("sign");
    let mut req = Request::builder()
        .method(Method::GET)
        .uri("/full/orders?page=2")
        .header("host", "api.example")
        .header("origin", "https://app.example");
    for (k, v) in &signed {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Full::new(Bytes::new())).expect("request")
}

fn bench_pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _in_runtime = rt.enter();
    let ctx = handler();

    // Both routes answer as they should before anything is measured.
    let r = run(&rt, ctx.handle(plain_request(), conn()));
    assert_eq!(r.status(), StatusCode::OK);
    let r = run(&rt, ctx.handle(full_request(), conn()));
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.headers());
    assert_eq!(r.headers()["x-served-for"], "bench-app");
    assert_eq!(r.headers()["x-usageplan-id"], "gold");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let mut g = c.benchmark_group("pipeline");
    g.bench_function("plain route: route + mock + decorate", |b| {
        b.iter_batched(
            plain_request,
            |req| black_box(run(&rt, ctx.handle(req, conn()))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function(
        "full policy: route + ip + hmac-sha256 + replay + plan + limits + cors + headers + mock",
        |b| {
            b.iter_batched(
                full_request,
                |req| black_box(run(&rt, ctx.handle(req, conn()))),
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
