//! Routing resilience end to end: failover and retries over a dead target and a
//! failing one, active health checks over a flapping target, and concurrency
//! limits over slow requests, all over loopback sockets.

mod common;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Resp = hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

/// A test back end whose behaviour the test controls.
#[derive(Default)]
struct Ctl {
    /// Requests other than health probes.
    hits: AtomicUsize,
    /// Health probes answered, good and bad.
    probes_ok: AtomicUsize,
    probes_bad: AtomicUsize,
    /// `/healthz` answers 500 while this is false.
    down: AtomicBool,
    /// Requests waiting at `/gate`.
    waiting: AtomicUsize,
    gate: tokio::sync::Notify,
    open: AtomicBool,
}

fn text(status: u16, body: &str) -> Resp {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r
}

/// Paths: `/healthz` (200, or 500 while `down`), `/gate` (waits until the gate
/// opens), `/stream` (one chunk, then nothing), `/slow` (2 s when `status` is a
/// 5xx, else at once), anything else:
/// the body is read, then `status` is answered with body `name`.
async fn spawn_ctl(name: &'static str, status: u16) -> (SocketAddr, Arc<Ctl>) {
    let ctl = Arc::new(Ctl::default());
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let c = ctl.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let c = c.clone();
                    async move { Ok::<_, Infallible>(serve(name, status, &c, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, ctl)
}

async fn serve(name: &str, status: u16, c: &Ctl, req: hyper::Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        if c.down.load(Ordering::SeqCst) {
            c.probes_bad.fetch_add(1, Ordering::SeqCst);
            return text(500, "down");
        }
        c.probes_ok.fetch_add(1, Ordering::SeqCst);
        return text(200, "up");
    }
    c.hits.fetch_add(1, Ordering::SeqCst);
    match path.as_str() {
        "/gate" => {
            c.waiting.fetch_add(1, Ordering::SeqCst);
            while !c.open.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_millis(50), c.gate.notified()).await;
            }
            c.waiting.fetch_sub(1, Ordering::SeqCst);
            text(200, name)
        }
        "/stream" => {
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first chunk\n")))
            });
            let body = futures_util::StreamExt::chain(first, futures_util::stream::pending());
            hyper::Response::new(StreamBody::new(body).boxed())
        }
        "/slow" => {
            // Only a failing back end is slow.
            if status >= 500 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            text(200, name)
        }
        _ => {
            let _ = req.into_body().collect().await;
            text(status, name)
        }
    }
}

fn api(name: &str, path: &str, backend: &str, extra: &str) -> String {
    format!(
        "[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\n{extra}\n[services.apis.backend]\npath = \"/\"\n{backend}\n"
    )
}

/// The value of one series of `/metrics` (`None` when it is absent).
async fn metric(kg: &Keygate, series: &str) -> Option<f64> {
    let r = get(&format!("http://{}/metrics", kg.admin)).await;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Polls `cond` for up to 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_target_is_failed_over_to_the_live_one() {
    let live = spawn_backend().await;
    let dead = dead_port().await;
    // The dead target is first: the first pick of the round robin lands on it.
    let targets = format!("urls = [\"http://{dead}\", \"http://{live}\"]\nmax_fails = 100");
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}{}",
        api("failover", "/failover", &targets, ""),
        api(
            "noretry",
            "/noretry",
            &format!("{targets}\nretries = 0"),
            ""
        ),
    );
    let kg = Keygate::start(&cfg).await;
    for i in 0..12 {
        let r = get(&kg.url(&format!("/failover/get/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "GET {i}: {}", r.text());
        // Connect failures are retried for any method: nothing was sent.
        let r = send(
            Method::POST,
            &kg.url(&format!("/failover/post/{i}")),
            &[],
            "payload",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "POST {i}: {}", r.text());
        assert_eq!(r.json()["body"], "payload");
    }
    let retries = metric(
        &kg,
        "keygate_upstream_retries_total{route=\"s/failover\",reason=\"connect\"}",
    )
    .await
    .expect("retries series");
    assert!(
        retries >= 12.0,
        "half the tries land on the dead target: {retries}"
    );
    // Without retries, the dead target's share fails.
    let mut failed = 0;
    for _ in 0..6 {
        let r = get(&kg.url("/noretry/x")).await;
        if r.status == StatusCode::BAD_GATEWAY {
            failed += 1;
        } else {
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    assert!(failed >= 1, "retries = 0 lets the dead target's share fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_5xx_and_timeouts_are_retried_only_when_asked_and_safe() {
    let (bad, bad_ctl) = spawn_ctl("bad", 503).await;
    let (good, good_ctl) = spawn_ctl("good", 200).await;
    let targets = format!("urls = [\"http://{bad}\", \"http://{good}\"]\nmax_fails = 0");
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}{}",
        api(
            "retry",
            "/retry",
            &format!("{targets}\nretry_on = [\"connect\", \"5xx\", \"timeout\"]\ntry_timeout = \"300ms\"\ntimeout = \"5s\""),
            ""
        ),
        api("plain", "/plain", &targets, ""),
    );
    let kg = Keygate::start(&cfg).await;
    // Opt-in: every idempotent request ends on the good target.
    for i in 0..8 {
        let r = get(&kg.url(&format!("/retry/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.text(), "good");
        let r = send(Method::DELETE, &kg.url("/retry/d"), &[], "").await;
        assert_eq!(r.text(), "good");
    }
    assert!(metric(
        &kg,
        "keygate_upstream_retries_total{route=\"s/retry\",reason=\"5xx\"}"
    )
    .await
    .is_some_and(|v| v >= 8.0));
    // Not asked: the 503 is passed on.
    let mut passed_on = 0;
    for _ in 0..6 {
        let r = get(&kg.url("/plain/x")).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.text(), "bad");
            passed_on += 1;
        }
    }
    assert!(passed_on >= 1);
    // A POST is never retried on a 5xx, and neither is a PUT whose streamed
    // body the failing back end has read.
    for (method, body) in [(Method::POST, "post body"), (Method::PUT, "put body")] {
        let mut answered_bad = 0;
        for _ in 0..6 {
            let before = bad_ctl.hits.load(Ordering::SeqCst);
            let r = send(method.clone(), &kg.url("/retry/w"), &[], body).await;
            if bad_ctl.hits.load(Ordering::SeqCst) > before {
                assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{method}");
                assert_eq!(r.text(), "bad");
                answered_bad += 1;
            } else {
                assert_eq!(r.status, StatusCode::OK);
            }
        }
        assert!(answered_bad >= 1, "{method} reached the failing target");
    }
    // A timeout of one try moves an idempotent request to the other target.
    let good_before = good_ctl.hits.load(Ordering::SeqCst);
    let mut slow_answers = 0;
    for _ in 0..4 {
        let r = get(&kg.url("/retry/slow")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        slow_answers += 1;
    }
    assert_eq!(slow_answers, 4);
    assert!(good_ctl.hits.load(Ordering::SeqCst) >= good_before + 4);
    assert!(metric(
        &kg,
        "keygate_upstream_retries_total{route=\"s/retry\",reason=\"timeout\"}"
    )
    .await
    .is_some_and(|v| v >= 1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_a_flapping_target_out_and_bring_it_back() {
    let (flap, flap_ctl) = spawn_ctl("flap", 200).await;
    let (steady, _) = spawn_ctl("steady", 200).await;
    let backend = format!(
        "urls = [\"http://{flap}\", \"http://{steady}\"]\nhealth_check = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", healthy = 2, unhealthy = 3 }}"
    );
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}",
        api("hc", "/hc", &backend, "")
    );
    let kg = Keygate::start(&cfg).await;
    let gauge =
        format!("keygate_upstream_target_healthy{{upstream=\"s/hc\",target=\"http://{flap}\"}}");
    assert_eq!(metric(&kg, &gauge).await, Some(1.0));
    let mut seen = 0;
    for _ in 0..6 {
        if get(&kg.url("/hc/x")).await.text() == "flap" {
            seen += 1;
        }
    }
    assert!(seen >= 1, "both targets serve while healthy");

    flap_ctl.down.store(true, Ordering::SeqCst);
    eventually("the flapping target to be taken out", || async {
        metric(&kg, &gauge).await == Some(0.0)
    })
    .await;
    assert!(
        flap_ctl.probes_bad.load(Ordering::SeqCst) >= 3,
        "taken out after `unhealthy` failed probes"
    );
    // The admin's route view shows the verdict per target.
    let routes = get(&format!("http://{}/-/routes", kg.admin)).await.json();
    let hc = routes
        .as_array()
        .and_then(|l| l.iter().find(|r| r["route"] == "s/hc"))
        .expect("route s/hc in /-/routes")
        .clone();
    let targets = hc["backend"]["targets"]
        .as_array()
        .expect("targets")
        .clone();
    let state = |addr: String| {
        targets
            .iter()
            .find(|t| t["url"] == format!("http://{addr}").as_str())
            .map(|t| t["healthy"].clone())
    };
    assert_eq!(state(flap.to_string()), Some(false.into()), "{hc}");
    assert_eq!(state(steady.to_string()), Some(true.into()), "{hc}");
    let hits = flap_ctl.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        let r = get(&kg.url("/hc/x")).await;
        assert_eq!(r.text(), "steady");
    }
    assert_eq!(
        flap_ctl.hits.load(Ordering::SeqCst),
        hits,
        "requests avoid it"
    );

    let ok_before = flap_ctl.probes_ok.load(Ordering::SeqCst);
    flap_ctl.down.store(false, Ordering::SeqCst);
    eventually("the flapping target to come back", || async {
        metric(&kg, &gauge).await == Some(1.0)
    })
    .await;
    assert!(
        flap_ctl.probes_ok.load(Ordering::SeqCst) >= ok_before + 2,
        "back after `healthy` good probes"
    );
    let mut seen = 0;
    for _ in 0..6 {
        if get(&kg.url("/hc/x")).await.text() == "flap" {
            seen += 1;
        }
    }
    assert!(seen >= 1, "the target serves again");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_verdicts_survive_a_reload_and_probes_stop_with_the_upstream() {
    let (flap, flap_ctl) = spawn_ctl("flap", 200).await;
    let (steady, _) = spawn_ctl("steady", 200).await;
    let backend = format!(
        "urls = [\"http://{flap}\", \"http://{steady}\"]\nhealth_check = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", healthy = 2, unhealthy = 2 }}"
    );
    let hc = api("hc", "/hc", &backend, "");
    let other = api("m", "/m", "type = \"mock\"\nbody = \"m\"", "");
    let kg = Keygate::start(&format!("[[services]]\nname = \"s\"\n{hc}")).await;
    let gauge =
        format!("keygate_upstream_target_healthy{{upstream=\"s/hc\",target=\"http://{flap}\"}}");
    flap_ctl.down.store(true, Ordering::SeqCst);
    eventually("the target to be taken out", || async {
        metric(&kg, &gauge).await == Some(0.0)
    })
    .await;
    // A reload that leaves the back end as it was keeps the pool and its verdicts.
    kg.write_config(&format!("[[services]]\nname = \"s\"\n{hc}{other}"));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&kg.url("/m")).await.text(), "m", "the reload took");
    assert_eq!(metric(&kg, &gauge).await, Some(0.0));
    let hits = flap_ctl.hits.load(Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(get(&kg.url("/hc/x")).await.text(), "steady");
    }
    assert_eq!(flap_ctl.hits.load(Ordering::SeqCst), hits);
    // A changed health check makes a new pool; the old pool's going does not
    // take the new one's series with it.
    let changed = api(
        "hc",
        "/hc",
        &backend.replace("interval = \"100ms\"", "interval = \"120ms\""),
        "",
    );
    kg.write_config(&format!("[[services]]\nname = \"s\"\n{changed}{other}"));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(metric(&kg, &gauge).await.is_some(), "series kept");
    eventually("the new pool to take the target out", || async {
        metric(&kg, &gauge).await == Some(0.0)
    })
    .await;
    // A reload without the API drops the upstream: probing stops, the series goes.
    kg.write_config(&format!("[[services]]\nname = \"s\"\n{other}"));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("the series to go", || async {
        metric(&kg, &gauge).await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probes = flap_ctl.probes_bad.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        flap_ctl.probes_bad.load(Ordering::SeqCst),
        probes,
        "no probe after the upstream is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_admits_exactly_max_and_releases_on_end_and_abort() {
    let (be, ctl) = spawn_ctl("be", 200).await;
    let cfg = format!(
        "[[plugins]]\nname = \"three\"\ntype = \"concurrency_control\"\nmax_in_flight = 3\n\
         [[plugins]]\nname = \"one\"\ntype = \"concurrency_control\"\nmax_in_flight = 1\nover_limit_status = 503\n\
         [[services]]\nname = \"s\"\n{}{}",
        api("three", "/three", &format!("url = \"http://{be}\""), "plugins = [\"three\"]"),
        api("one", "/one", &format!("url = \"http://{be}\""), "plugins = [\"one\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..8 {
        let tx = tx.clone();
        let url = kg.url("/three/gate");
        tokio::spawn(async move {
            let _ = tx.send(get(&url).await.status);
        });
    }
    // The refusals come back while the admitted requests wait at the gate.
    let mut refused = 0;
    while refused < 5 {
        let status = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("refusals arrive")
            .expect("status");
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        refused += 1;
    }
    eventually("three requests at the gate", || async {
        ctl.waiting.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(ctl.hits.load(Ordering::SeqCst), 3, "exactly max admitted");
    let r = get(&kg.url("/three/other")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    ctl.open.store(true, Ordering::SeqCst);
    ctl.gate.notify_waiters();
    for _ in 0..3 {
        let status = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("admitted answers")
            .expect("status");
        assert_eq!(status, StatusCode::OK);
    }
    // Released: new requests pass.
    for _ in 0..4 {
        assert_eq!(get(&kg.url("/three/after")).await.status, StatusCode::OK);
    }

    // A client that goes away in the middle of a response releases its place.
    let mut s = TcpStream::connect(kg.addr).await.expect("connect");
    s.write_all(b"GET /one/stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("first chunk") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response head")
            .expect("read");
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let r = get(&kg.url("/one/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["code"], "RequestLimitExceeded");
    drop(s);
    eventually("the aborted response to release its place", || async {
        get(&kg.url("/one/x")).await.status == StatusCode::OK
    })
    .await;
}

#[test]
fn check_reports_bad_resilience_settings_with_their_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        "[[plugins]]\nname = \"cc\"\ntype = \"concurrency_control\"\nmax_in_flight = 0\nover_limit_status = 500\n\
         [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
         [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\nretries = 11\nretry_on = [\"5xx\", \"always\"]\n\
         try_timeout = \"20s\"\ntimeout = \"2s\"\nfail_on = [\"4xx\"]\n\
         health_check = { path = \"healthz\", interval = \"1s\", timeout = \"2s\", healthy = 0 }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run keygate check");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "plugins (cc)",
        "max_in_flight must be positive",
        "over_limit_status 500",
        "backend",
        "retries must be 0-10",
        "retry_on \"always\"",
        "try_timeout must be positive",
        "fail_on \"4xx\"",
        "health_check.path",
        "health_check.timeout",
        "health_check.healthy must be 1-100",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
