//! Policies end to end: IP control, CORS, flow control and quotas, and counters
//! that survive reloads and restarts.

mod common;
use common::signers;
use common::*;
use http::{Method, StatusCode};
use std::time::{Duration, Instant};

fn mock_api(name: &str, path: &str, extra: &str) -> String {
    format!("[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\n{extra}\n[services.apis.backend]\ntype = \"mock\"\nbody = \"{name}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_control_white_and_black_lists_with_trusted_proxies() {
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [[plugins]]\nname = \"office\"\ntype = \"ip_control\"\nmode = \"white\"\nips = \"10.0.0.0/8;2001:db8::/32\"\n\
         [[plugins]]\nname = \"blocked\"\ntype = \"ip_control\"\nmode = \"black\"\nips = \"\"\"\n203.0.113.7\n198.51.100.0/24\n\"\"\"\n\
         [[services]]\nname = \"s\"\n{}{}",
        mock_api("white", "/white", "plugins = [\"office\"]"),
        mock_api("black", "/black", "plugins = [\"blocked\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    let with_xff = |xff: &'static str| async move { (xff, ()) };
    let _ = with_xff;
    for (path, xff, want) in [
        ("/white", "10.1.2.3", StatusCode::OK),
        ("/white", "2001:db8::1", StatusCode::OK),
        ("/white", "11.0.0.1", StatusCode::FORBIDDEN),
        // The right-most untrusted hop counts; a spoofed left entry does not.
        ("/white", "10.0.0.1, 8.8.8.8", StatusCode::FORBIDDEN),
        ("/white", "8.8.8.8, 10.0.0.1", StatusCode::OK),
        ("/black", "203.0.113.7", StatusCode::FORBIDDEN),
        ("/black", "198.51.100.200", StatusCode::FORBIDDEN),
        ("/black", "203.0.113.8", StatusCode::OK),
    ] {
        let r = send(Method::GET, &kg.url(path), &[("x-forwarded-for", xff)], "").await;
        assert_eq!(r.status, want, "{path} from {xff}: {}", r.text());
        if want == StatusCode::FORBIDDEN {
            assert_eq!(r.json()["code"], "UnauthorizedOperation");
        }
    }
    // Without a forwarded header the peer (127.0.0.1) is the client: not on the white list.
    assert_eq!(get(&kg.url("/white")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_peer_cannot_choose_its_address() {
    let cfg = format!(
        "[[plugins]]\nname = \"office\"\ntype = \"ip_control\"\nmode = \"white\"\nips = \"10.0.0.0/8\"\n[[services]]\nname = \"s\"\n{}",
        mock_api("white", "/white", "plugins = [\"office\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    let r = send(
        Method::GET,
        &kg.url("/white"),
        &[("x-forwarded-for", "10.1.2.3")],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "XFF from an untrusted peer is ignored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_actual_and_error_responses() {
    let be = spawn_backend().await;
    let cfg = format!(
        r#"
[[keys]]
id = "AKIDc"
secret = "c"
[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://app.example"]
allow_methods = ["GET", "POST"]
allow_headers = ["authorization", "content-type"]
expose_headers = ["x-trace"]
allow_credentials = true
max_age = 600
[[services]]
name = "s"
[[services.apis]]
name = "open"
path = "/open"
plugins = ["web"]
[services.apis.backend]
type = "http"
url = "http://{be}"
[[services.apis]]
name = "locked"
path = "/locked"
auth = "hmac"
plugins = ["web"]
[services.apis.backend]
type = "http"
url = "http://{be}"
[[services.apis]]
name = "star"
path = "/star"
enable_cors = true
[services.apis.backend]
type = "mock"
body = "star"
"#
    );
    let kg = Keygate::start(&cfg).await;
    let origin = "https://app.example";

    // Preflight on an authenticated API: answered by keygate, no credentials asked.
    let r = send(
        Method::OPTIONS,
        &kg.url("/locked"),
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.body.is_empty(), "not forwarded to the echo back end");

    // Refused origin and refused method: no CORS grant.
    let r = send(
        Method::OPTIONS,
        &kg.url("/open"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        "",
    )
    .await;
    assert!(r.header("access-control-allow-origin").is_none());
    let r = send(
        Method::OPTIONS,
        &kg.url("/open"),
        &[
            ("origin", origin),
            ("access-control-request-method", "DELETE"),
        ],
        "",
    )
    .await;
    assert!(r.header("access-control-allow-origin").is_none());
    let r = send(
        Method::OPTIONS,
        &kg.url("/open"),
        &[("origin", "null"), ("access-control-request-method", "GET")],
        "",
    )
    .await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "null origin never allowed unless listed"
    );

    // Actual requests: allowed origin echoed with credentials and Vary; others get nothing.
    let r = send(Method::GET, &kg.url("/open"), &[("origin", origin)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert!(r
        .header("vary")
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("origin"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-trace"));
    let r = send(
        Method::GET,
        &kg.url("/open"),
        &[("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("access-control-allow-origin").is_none());

    // A gateway 401 carries the API's CORS headers so the browser can read it.
    let r = send(Method::GET, &kg.url("/locked"), &[("origin", origin)], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));

    // The enable_cors flag alone: `*`, never credentials.
    let r = send(
        Method::GET,
        &kg.url("/star"),
        &[("origin", "https://any.example")],
        "",
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn tightest_limit_wins_and_is_named_in_headers() {
    // The documents' example: plugin 500, service 100, API 50 -> 50.
    let cfg = format!(
        "[[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"second\"\nexpire = 1\napi_rate_limit = 500\n\
         [[services]]\nname = \"s\"\nqps = 100\n{}",
        mock_api("a", "/a", "qps = 50\nplugins = [\"flow\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    let r = get(&kg.url("/a")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
    assert!(
        r.header("ratelimit-policy").unwrap_or("").contains("q=50"),
        "{:?}",
        r.headers
    );
    assert!(r.header("ratelimit").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn window_limit_refuses_with_429_and_retry_after() {
    let cfg = format!(
        "[[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"minute\"\nexpire = 1\napi_rate_limit = 100\nip_rate_limit = 5\n\
         [[services]]\nname = \"s\"\n{}",
        mock_api("a", "/a", "plugins = [\"flow\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    for i in 0..5 {
        let r = get(&kg.url("/a")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
    }
    let r = get(&kg.url("/a")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["code"], "RequestLimitExceeded");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn param_traffic_control_counts_each_value() {
    let cfg = format!(
        r#"
[[plugins]]
name = "per-user"
type = "param_traffic_control"
default_window = 0
[[plugins.strategies]]
name = "vip"
strategy_weight = 90
condition = "header.x-tier == 'vip'"
parameters = [{{ type = "header", name = "x-user" }}]
rate_limit = 3
window = 60
[[plugins.strategies]]
name = "all"
strategy_weight = 10
parameters = [{{ type = "query", name = "user" }}]
rate_limit = 2
window = 60
[[services]]
name = "s"
{}"#,
        mock_api("a", "/a", "plugins = [\"per-user\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    for u in ["u1", "u2"] {
        for _ in 0..2 {
            assert_eq!(
                get(&kg.url(&format!("/a?user={u}"))).await.status,
                StatusCode::OK
            );
        }
        assert_eq!(
            get(&kg.url(&format!("/a?user={u}"))).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    for _ in 0..3 {
        let r = send(
            Method::GET,
            &kg.url("/a"),
            &[("x-tier", "vip"), ("x-user", "v1")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = send(
        Method::GET,
        &kg.url("/a"),
        &[("x-tier", "vip"), ("x-user", "v1")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(
        Method::GET,
        &kg.url("/a"),
        &[("x-tier", "basic"), ("x-user", "v1")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the vip condition does not hold");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_condition_is_a_config_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        "[[plugins]]\nname = \"p\"\ntype = \"param_traffic_control\"\n[[plugins.strategies]]\nname = \"s\"\nstrategy_weight = 1\ncondition = \"header.a == \"\nparameters = [{ type = \"header\", name = \"a\" }]\nrate_limit = 1\nwindow = 1\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("plugins (p)") && err.contains("byte"), "{err}");
}

#[test]
fn zero_rates_are_config_errors_reported_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    let toml = format!(
        "[[keys]]\nid = \"AKIDz\"\nsecret = \"z-secret\"\n\
         [[usage_plans]]\nname = \"zero\"\nqps = 0\nquota = 0\nkeys = [\"AKIDz\"]\n\
         [[services]]\nname = \"s\"\nqps = 0\nusage_plans = [\"zero\"]\n{}{}",
        mock_api("a", "/a", "auth = \"hmac\"\nqps = 0"),
        mock_api("b", "/b", "auth = \"hmac\"")
    );
    std::fs::write(&path, toml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines = |what: &str| err.lines().filter(|l| l.contains(what)).count();
    // the plan's qps and quota, the service's qps (not once per API), the API's qps
    assert_eq!(lines("usage_plans (zero)"), 2, "{err}");
    assert_eq!(lines("qps must be positive"), 3, "{err}");
    assert_eq!(lines("quota must be positive"), 1, "{err}");
    assert_eq!(lines("must be a positive integer"), 0, "{err}");
}

fn quota_config(extra_api: &str) -> String {
    format!(
        r#"
[[keys]]
id = "AKIDq"
secret = "q-secret"
[[usage_plans]]
name = "tiny"
quota = 5
keys = ["AKIDq"]
[[services]]
name = "s"
usage_plans = ["tiny"]
[[services.apis]]
name = "q"
path = "/q"
auth = "hmac"
[services.apis.backend]
type = "mock"
body = "ok"
{extra_api}"#
    )
}

async fn signed_get(addr: std::net::SocketAddr, path: &str) -> Reply {
    // A signed nonce makes each request's signature unique (replay protection is on).
    let host = addr.to_string();
    let nonce = signers::nonce().to_string();
    let extra = [("X-Nonce", nonce.as_str())];
    let req = signers::Req {
        headers: &extra,
        ..signers::Req::get(&host, path)
    };
    let h = signers::hmac_headers(&req, "AKIDq", "q-secret", std::time::SystemTime::now());
    let mut hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    hs.push(("X-Nonce", &nonce));
    send(Method::GET, &format!("http://{addr}{path}"), &hs, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_survives_reload_and_graceful_restart() {
    let kg = Keygate::start(&quota_config("")).await;
    for i in 0..2 {
        let r = signed_get(kg.addr, &format!("/q?i={i}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-usageplan-id"), Some("tiny"));
    }
    // An unrelated change: the counts stay.
    kg.write_config(&quota_config(&mock_api("other", "/other", "")));
    assert_eq!(kg.reload().await.0, StatusCode::OK);
    let r = signed_get(kg.addr, "/q?i=2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    // Graceful restart in the same directory.
    let Keygate { dir, running, .. } = kg;
    running.shutdown().await;
    let kg = Keygate::start_in(dir, &quota_config(&mock_api("other", "/other", ""))).await;
    for i in 3..5 {
        assert_eq!(
            signed_get(kg.addr, &format!("/q?i={i}")).await.status,
            StatusCode::OK
        );
    }
    let r = signed_get(kg.addr, "/q?i=5").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["code"], "LimitExceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_survives_kill_9_within_one_second_of_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{}",
            quota_config("")
        ),
    )
    .expect("write");
    let spawn = || spawn_binary(&path);
    let (mut child, addr) = spawn();
    for i in 0..3 {
        assert_eq!(
            signed_get(addr, &format!("/q?i={i}")).await.status,
            StatusCode::OK
        );
    }
    // Counts older than one flush interval are on disk when the process dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let (mut child, addr) = spawn();
    let mut ok = 0;
    for i in 3..10 {
        if signed_get(addr, &format!("/q?i={i}")).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    child.kill().expect("kill");
    let _ = child.wait();
    assert_eq!(ok, 2, "3 of the quota of 5 were used before kill -9");
}

/// Offer `rate` requests per second to `url` for `run`, from 40 paced workers;
/// returns the arrival times (since the UNIX epoch, in seconds) of the accepted
/// answers and the number refused.
async fn offer(url: String, rate: u64, run: Duration) -> (Vec<f64>, u64) {
    const WORKERS: u64 = 40;
    let start = Instant::now();
    let period_us = 1_000_000 * WORKERS / rate;
    let mut tasks = vec![];
    for w in 0..WORKERS {
        let url: http::Uri = url.parse().expect("url");
        tasks.push(tokio::spawn(async move {
            // One keep-alive client per worker, as a real load generator.
            let client = client();
            let (mut ok, mut limited, mut sent) = (vec![], 0u64, 0u64);
            while start.elapsed() < run {
                let due = start + Duration::from_micros(sent * period_us + w * period_us / WORKERS);
                tokio::time::sleep_until(due.into()).await;
                sent += 1;
                let req = http::Request::get(url.clone())
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                let resp = client.request(req).await.expect("answer");
                let status = resp.status();
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("body");
                match status {
                    StatusCode::OK => ok.push(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .expect("clock")
                            .as_secs_f64(),
                    ),
                    StatusCode::TOO_MANY_REQUESTS => limited += 1,
                    s => panic!("unexpected {s}"),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (vec![], 0);
    for t in tasks {
        let (o, l) = t.await.expect("worker");
        ok.extend(o);
        limited += l;
    }
    ok.sort_by(f64::total_cmp);
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_holds_under_load() {
    // A 200-per-second window (fixed, epoch-aligned seconds) and a 200 QPS API
    // limit (GCRA, burst one second's worth), each offered 2,000 per second for 5 s.
    let cfg = format!(
        "[[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"second\"\nexpire = 1\napi_rate_limit = 200\n\
         [[services]]\nname = \"s\"\n{}{}",
        mock_api("a", "/a", "plugins = [\"flow\"]"),
        mock_api("q", "/q", "qps = 200"),
    );
    let kg = Keygate::start(&cfg).await;
    let run = Duration::from_secs(5);

    let (ok, limited) = offer(kg.url("/a"), 2000, run).await;
    assert!(limited > 0, "the offered load exceeded the limit");
    let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
    for t in &ok {
        *per_window.entry(*t as u64).or_default() += 1;
    }
    // Answers are counted by arrival at the client: the first and last windows
    // are partial, and the one after the first may hold late answers to
    // requests decided in the first (connection set-up at the start). The
    // full windows after those count.
    let full: Vec<u64> = per_window
        .values()
        .copied()
        .skip(2)
        .take(per_window.len().saturating_sub(3))
        .collect();
    println!(
        "window 200/s: accepted per full window {full:?}, {limited} refused, {:.0}/s offered",
        (ok.len() as u64 + limited) as f64 / run.as_secs_f64()
    );
    assert!(full.len() >= 2, "{per_window:?}");
    for n in &full {
        assert!(
            (180..=200).contains(n),
            "a full window accepted {n}: {per_window:?}"
        );
    }

    let (ok, limited) = offer(kg.url("/q"), 2000, run).await;
    assert!(limited > 0, "the offered load exceeded the limit");
    // After the initial burst (one second's worth), the steady rate.
    let first = ok.first().copied().unwrap_or_default();
    let steady: Vec<f64> = ok.iter().copied().filter(|t| *t >= first + 1.5).collect();
    let span = steady.last().copied().unwrap_or_default() - first - 1.5;
    let rate = steady.len() as f64 / span.max(0.001);
    println!(
        "qps 200: {} accepted in all (burst 200 + steady), steady {rate:.1}/s over {span:.2} s ({:+.1}%), {limited} refused",
        ok.len(),
        (rate / 200.0 - 1.0) * 100.0
    );
    assert!(span > 2.0, "{span}");
    assert!((170.0..=230.0).contains(&rate), "{rate}");
}

/// Browsers preflight `PUT /x` to the API that takes `PUT /x`: an API listing
/// only its real methods still answers the preflight with its CORS grant. A
/// preflight to an API without a CORS policy stays an `OPTIONS` request, routed
/// (and refused) as one.
#[tokio::test(flavor = "multi_thread")]
async fn preflight_routed_by_the_method_it_asks_about() {
    let cfg = format!(
        "[[plugins]]\nname = \"web\"\ntype = \"cors\"\nallow_origin = [\"https://app.example\"]\nallow_methods = [\"GET\", \"PUT\"]\n\
         [[services]]\nname = \"s\"\n{}{}",
        mock_api("docs", "/docs", "methods = [\"GET\", \"PUT\"]\nplugins = [\"web\"]"),
        mock_api("plain", "/plain", "methods = [\"GET\", \"PUT\"]"),
    );
    let kg = Keygate::start(&cfg).await;
    let ask = |path: &'static str, method: &'static str| {
        let url = kg.url(path);
        async move {
            send(
                Method::OPTIONS,
                &url,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", method),
                ],
                "",
            )
            .await
        }
    };
    let r = ask("/docs", "PUT").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // A method the API does not take: no API answers it.
    assert_eq!(ask("/docs", "DELETE").await.status, StatusCode::NOT_FOUND);
    // No CORS policy: the OPTIONS request is not an allowed method there.
    assert_eq!(ask("/plain", "PUT").await.status, StatusCode::NOT_FOUND);
}
