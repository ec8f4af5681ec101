//! Router lookups over 1,000 routes of mixed kinds, and the balancer's pick.
//!
//! cargo bench --bench routing -- --warm-up-time 1 --measurement-time 2

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use keygate::balance::Balancer;
use keygate::route::{compose_backend_path, ApiSpec, Router, ServiceSpec};

/// 10 services × 100 APIs: 30% exact, 20% `^~`, 20% templates, 10% regex, 20% prefix;
/// half the services on hosts (exact or wildcard), half with an environment.
fn services() -> Vec<ServiceSpec> {
    let mut id = 0;
    (0..10)
        .map(|s| {
            let apis = (0..100)
                .map(|i| {
                    id += 1;
                    let path = match i % 10 {
                        0..=2 => format!("=/s{s}/exact{i}/resource"),
                        3 | 4 => format!("^~/s{s}/static{i}/"),
                        5 | 6 => format!("/s{s}/items{i}/{{id}}/detail"),
                        7 => format!("~^/s{s}/re{i}/v[0-9]+/(?P<name>[a-z]+)$"),
                        _ => format!("/s{s}/prefix{i}"),
                    };
                    ApiSpec {
                        id,
                        name: format!("api{i}"),
                        path,
                        methods: vec![if i % 2 == 0 { "GET" } else { "ANY" }.into()],
                        actions: vec![],
                    }
                })
                .collect();
            ServiceSpec {
                name: format!("svc{s}"),
                hosts: match s % 4 {
                    0 => vec![format!("svc{s}.example.com")],
                    1 => vec![format!("*.svc{s}.example.com")],
                    _ => vec![],
                },
                environment: (s % 2 == 1).then(|| "release".to_owned()),
                apis,
            }
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let router = Router::build(&services()).expect("valid routes");
    let get = Method::GET;
    let cases: [(&str, Option<&str>, &str); 6] = [
        ("exact", Some("svc4.example.com"), "/s4/exact20/resource"),
        ("prefix", None, "/release/s7/prefix58/some/deeper/path"),
        (
            "pref_prefix",
            Some("svc8.example.com:8443"),
            "/s8/static33/img/logo.png",
        ),
        (
            "template",
            Some("API.svc1.example.com"),
            "/release/s1/items55/12345/detail",
        ),
        ("regex", None, "/s6/re47/v2/alice"),
        (
            "miss",
            Some("nowhere.test"),
            "/s3/unknown/path/that/is/long",
        ),
    ];
    let mut g = c.benchmark_group("route_lookup_1000");
    for (name, host, path) in cases {
        assert!(
            router.lookup(host, path, &get).is_some() == (name != "miss"),
            "{name}"
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                router
                    .lookup(black_box(host), black_box(path), &get)
                    .map(|m| m.api)
            })
        });
    }
    g.finish();

    let m = router
        .lookup(
            Some("x.svc1.example.com"),
            "/release/s1/items55/12345/detail",
            &get,
        )
        .unwrap();
    c.bench_function("compose_backend_path", |b| {
        b.iter(|| compose_backend_path(black_box("/backend/{id}/x"), black_box(&m)))
    });
}

fn bench_balance(c: &mut Criterion) {
    let b = Balancer::new(
        vec![("a", 5), ("b", 3), ("c", 1)],
        3,
        Duration::from_secs(10),
    );
    let now = Instant::now();
    c.bench_function("balance_pick", |bench| {
        bench.iter(|| b.pick(black_box(now)).map(|p| p.0))
    });
}

criterion_group!(benches, bench_lookup, bench_balance);
criterion_main!(benches);
