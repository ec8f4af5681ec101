//! Cluster mode end to end: several keygate instances in this process share
//! their counters, quotas and replay cache through a real `redis-server`
//! started per test on a free loopback port (`.ci/run` installs it).
//!
//! `cargo test --test cluster -- --nocapture` also prints the measured accuracy
//! and the latency added per request.

mod common;
use common::signers;
use common::*;
use http::{Method, StatusCode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        // A port picked free may be taken by another server before ours binds
        // it: retry until the server answering is the one we started.
        for _ in 0..10 {
            if let Some(r) = Self::try_start() {
                return r;
            }
        }
        panic!("could not start redis-server on a free loopback port");
    }

    fn try_start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); the cluster tests need it: \
                     apt-get install redis-server (.ci/run does this)"
                )
            });
        let mut r = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if r.child.try_wait().ok().flatten().is_some() {
                return None; // could not bind: Drop reaps it
            }
            match r.server_pid() {
                Ok(pid) if pid == r.child.id() => return Some(r),
                Ok(_) => return None, // somebody else's server on that port
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `process_id` of the server on our port, by one raw RESP round trip (no
    /// client library in the tests).
    fn server_pid(&self) -> std::io::Result<u32> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(b"INFO server\r\n")?;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("process_id:")
            || !text[text.find("process_id:").unwrap_or(0)..].contains('\n')
        {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other("no process_id"))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} redis-server");
    }

    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A stopped process must be resumed to die of SIGKILL promptly everywhere.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[cluster]` with the default 50 ms timeout, for the failure tests.
fn cluster(redis: &Redis, on_error: &str) -> String {
    cluster_with(redis, on_error, "50ms")
}

/// For the sharing tests: a generous timeout, so that a CPU-starved test run
/// (CI shares its cores) does not turn slow answers into local decisions;
/// accuracy holds while Redis answers within the timeout.
fn sharing(redis: &Redis) -> String {
    cluster_with(redis, "local", "2s")
}

fn cluster_with(redis: &Redis, on_error: &str, timeout: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\non_error = \"{on_error}\"\ntimeout = \"{timeout}\"\n",
        redis.url()
    )
}

/// An API limited to `limit` requests per hour by a traffic_control plugin,
/// plus a signed, quota-limited API.
fn config(cluster: &str, limit: u64) -> String {
    format!(
        r#"{cluster}
[auth]
replay = "strict"  # these tests replay captured signatures
[[keys]]
id = "AKIDq"
secret = "q-secret"
[[usage_plans]]
name = "tiny"
quota = 10
keys = ["AKIDq"]
[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "hour"
expire = 1
api_rate_limit = {limit}
[[services]]
name = "s"
usage_plans = ["tiny"]
[[services.apis]]
name = "limited"
path = "/limited"
plugins = ["flow"]
[services.apis.backend]
type = "mock"
body = "ok"
[[services.apis]]
name = "q"
path = "/q"
auth = "hmac"
[services.apis.backend]
type = "mock"
body = "ok"
"#
    )
}

async fn start_n(n: usize, cfg: &str) -> Vec<Keygate> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Keygate::start(cfg).await);
    }
    v
}

/// Headers of an hmac-signed GET whose signed `X-Nonce` makes it unique.
fn signed_headers(host: &str, path: &str) -> Vec<(String, String)> {
    let nonce = signers::nonce().to_string();
    let extra = [("X-Nonce", nonce.as_str())];
    let req = signers::Req {
        headers: &extra,
        ..signers::Req::get(host, path)
    };
    let mut h = signers::hmac_headers(&req, "AKIDq", "q-secret", SystemTime::now());
    h.push(("X-Nonce".into(), nonce.clone()));
    h
}

async fn send_with(addr: SocketAddr, path: &str, h: &[(String, String)]) -> Reply {
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    send(Method::GET, &format!("http://{addr}{path}"), &hs, "").await
}

async fn signed_get(addr: SocketAddr, path: &str) -> Reply {
    send_with(addr, path, &signed_headers(&addr.to_string(), path)).await
}

/// Leaves the last seconds of an hour-long window to the next one, so that a
/// test's requests all fall in one window.
async fn away_from_hour_boundary() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let left = 3600 - now % 3600;
    if left < 15 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// Sends `total` GETs spread round-robin over `addrs`, `concurrency` at a time.
/// Returns each reply's status and latency.
async fn load(
    addrs: &[SocketAddr],
    path: &str,
    total: usize,
    concurrency: usize,
) -> Vec<(StatusCode, Duration)> {
    let mut out = Vec::with_capacity(total);
    let mut i = 0;
    while i < total {
        let batch: Vec<_> = (i..(i + concurrency).min(total))
            .map(|j| {
                let url = format!("http://{}{path}", addrs[j % addrs.len()]);
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(5), get(&url)).await;
                    (
                        r.map(|r| r.status).unwrap_or(StatusCode::GATEWAY_TIMEOUT),
                        t.elapsed(),
                    )
                })
            })
            .collect();
        for h in batch {
            out.push(h.await.expect("request task"));
        }
        i += concurrency;
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn metrics(kg: &Keygate) -> String {
    get(&format!("http://{}/metrics", kg.admin)).await.text()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_a_window_limit() {
    let redis = Redis::start();
    let cfg = config(&sharing(&redis), 100);
    let kgs = start_n(3, &cfg).await;
    let addrs: Vec<_> = kgs.iter().map(|k| k.addr).collect();
    away_from_hour_boundary().await;
    let replies = load(&addrs, "/limited", 300, 30).await;
    let ok = replies.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited = replies
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let err = (ok as f64 - 100.0).abs();
    println!("accuracy: 3 instances, limit 100, 300 requests: {ok} admitted (error {err:.0}%)");
    assert_eq!(ok + limited, 300, "every request answered 200 or 429");
    assert!(
        (98..=102).contains(&ok),
        "{ok} admitted for a shared limit of 100"
    );
    // The refusal carries the usual headers, computed from the shared count.
    let r = get(&kgs[1].url("/limited")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=3600).contains(&retry), "retry-after {retry}");
    assert!(metrics(&kgs[0])
        .await
        .contains("keygate_cluster_mode{mode=\"shared\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn qps_is_local_unless_shared_qps() {
    let redis = Redis::start();
    let api = |qps: u32| {
        format!(
            "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\nqps = {qps}\n\
             [services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n"
        )
    };
    // Local GCRA: each of 3 instances admits its own burst of 5.
    let kgs = start_n(3, &format!("{}{}", sharing(&redis), api(5))).await;
    let addrs: Vec<_> = kgs.iter().map(|k| k.addr).collect();
    let ok = |r: &[(StatusCode, Duration)]| r.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let local = ok(&load(&addrs, "/a", 30, 30).await);
    assert!(local >= 15, "per-instance QPS: {local} admitted");
    // shared_qps: one 1-second window for the cluster (a burst may straddle two).
    let cfg = format!("{}shared_qps = true\n{}", sharing(&redis), api(5));
    let kgs = start_n(3, &cfg).await;
    let addrs: Vec<_> = kgs.iter().map(|k| k.addr).collect();
    let shared = ok(&load(&addrs, "/a", 30, 30).await);
    assert!(
        (5..=10).contains(&shared),
        "cluster-wide QPS: {shared} admitted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_is_shared_and_kept_across_a_restart_of_every_instance() {
    let redis = Redis::start();
    let cfg = config(&sharing(&redis), 1000);
    let kgs = start_n(3, &cfg).await;
    for i in 0..7 {
        let r = signed_get(kgs[i % 3].addr, "/q").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-usageplan-id"), Some("tiny"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((9 - i).to_string().as_str())
        );
    }
    for kg in kgs {
        kg.running.shutdown().await;
    }
    // New instances in new directories: nothing local survives, Redis does.
    let kgs = start_n(3, &cfg).await;
    for (kg, left) in kgs.iter().zip(["2", "1", "0"]) {
        let r = signed_get(kg.addr, "/q").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
    }
    for kg in &kgs {
        let r = signed_get(kg.addr, "/q").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.json()["code"], "LimitExceeded");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_replayed_on_another_instance_is_refused() {
    let redis = Redis::start();
    let cfg = config(&sharing(&redis), 1000);
    let kgs = start_n(2, &cfg).await;
    let h = signed_headers("gateway.example", "/q");
    let r = send_with(kgs[0].addr, "/q", &h).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send_with(kgs[1].addr, "/q", &h).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("replay"), "{}", r.text());
    // A fresh signature still passes on the second instance.
    assert_eq!(signed_get(kgs[1].addr, "/q").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_redis_falls_back_to_local_counting_then_sharing_resumes() {
    let redis = Redis::start();
    let cfg = config(&cluster(&redis, "local"), 100_000);
    let kgs = start_n(2, &cfg).await;
    let addrs: Vec<_> = kgs.iter().map(|k| k.addr).collect();
    away_from_hour_boundary().await;
    let warm = load(&addrs, "/limited", 20, 10).await;
    assert!(warm.iter().all(|(s, _)| *s == StatusCode::OK));

    redis.freeze();
    let t = Instant::now();
    let replies = load(&addrs, "/limited", 300, 20).await;
    let elapsed = t.elapsed();
    assert!(
        replies.iter().all(|(s, _)| *s == StatusCode::OK),
        "on_error = local keeps answering"
    );
    let max = replies.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let med = median(replies.iter().map(|(_, d)| *d).collect());
    println!(
        "redis frozen, on_error = local: 300 requests in {elapsed:?}, median {med:?}, max {max:?}"
    );
    assert!(
        max < Duration::from_secs(2),
        "no request hangs: max {max:?}"
    );
    assert!(med < Duration::from_millis(500), "median {med:?}");
    assert!(metrics(&kgs[0])
        .await
        .contains("keygate_cluster_mode{mode=\"local\"} 1"));
    // Signed requests keep working, with the local replay cache.
    assert_eq!(signed_get(kgs[0].addr, "/q").await.status, StatusCode::OK);

    redis.thaw();
    // Shared counting resumes: consecutive requests on two instances see one count.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get(&kgs[0].url("/limited")).await;
        let b = get(&kgs[1].url("/limited")).await;
        let rem = |r: &Reply| -> i64 {
            r.header("x-ratelimit-remaining")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1)
        };
        if rem(&a) >= 0
            && rem(&b) == rem(&a) - 1
            && !metrics(&kgs[1]).await.contains("mode=\"local\"} 1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "shared counting did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metrics(&kgs[0])
        .await
        .contains("keygate_cluster_mode{mode=\"shared\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_redis_with_deny_refuses_quickly_then_recovers() {
    let redis = Redis::start();
    let cfg = config(&cluster(&redis, "deny"), 100_000);
    let kgs = start_n(2, &cfg).await;
    let addrs: Vec<_> = kgs.iter().map(|k| k.addr).collect();
    assert_eq!(get(&kgs[0].url("/limited")).await.status, StatusCode::OK);

    redis.freeze();
    let replies = load(&addrs, "/limited", 100, 20).await;
    assert!(
        replies
            .iter()
            .all(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE),
        "on_error = deny refuses: {:?}",
        replies.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
    );
    let max = replies.iter().map(|(_, d)| *d).max().unwrap_or_default();
    assert!(
        max < Duration::from_secs(2),
        "no request hangs: max {max:?}"
    );
    let r = get(&kgs[0].url("/limited")).await;
    assert_eq!(r.json()["code"], "RequestLimitExceeded");
    assert!(metrics(&kgs[0])
        .await
        .contains("keygate_cluster_mode{mode=\"deny\"} 1"));
    // Replay checks cannot be made either: refused the same way.
    assert_eq!(
        signed_get(kgs[0].addr, "/q").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&kgs[1].url("/limited")).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_redis_at_start_does_not_block_and_falls_back() {
    // Port 1: privileged and unused, so no other test's server can appear there
    // (a freed ephemeral port could be reused by one).
    let cfg = config(
        "[cluster]\nredis = \"redis://127.0.0.1:1\"\non_error = \"local\"\n",
        3,
    );
    let t = Instant::now();
    let kg = Keygate::start(&cfg).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "startup waited on Redis"
    );
    let replies = load(&[kg.addr], "/limited", 5, 1).await;
    let codes: Vec<_> = replies.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 429, 429],
        "local counting; latencies {:?}",
        replies.iter().map(|(_, d)| *d).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|(_, d)| *d < Duration::from_secs(2)));
    let m = metrics(&kg).await;
    assert!(m.contains("keygate_cluster_mode{mode=\"local\"} 1"), "{m}");
    assert!(
        m.lines().any(
            |l| l.starts_with("keygate_cluster_redis_errors_total{kind=") && !l.ends_with(" 0")
        ),
        "{m}"
    );
}

/// Not an assertion on speed: prints the latency cluster mode adds per request
/// (sequential requests on loopback, local mode vs. Redis on loopback).
#[tokio::test(flavor = "multi_thread")]
async fn added_latency_per_request_is_reported() {
    let redis = Redis::start();
    let local = Keygate::start(&config("", 1_000_000)).await;
    let shared = Keygate::start(&config(&cluster(&redis, "local"), 1_000_000)).await;
    let c = client();
    let mut results = vec![];
    for kg in [&local, &shared] {
        let url: http::Uri = kg.url("/limited").parse().expect("uri");
        let mut lat = Vec::new();
        for i in 0..1100 {
            let t = Instant::now();
            let req = http::Request::get(url.clone())
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            let r = c.request(req).await.expect("response");
            assert_eq!(r.status(), StatusCode::OK);
            if i >= 100 {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
        results.push((median(lat.clone()), mean, lat[lat.len() * 99 / 100]));
    }
    let (l, s) = (results[0], results[1]);
    println!(
        "latency per request (1000 sequential, loopback): local median {:?} mean {:?} p99 {:?}; \
         cluster median {:?} mean {:?} p99 {:?}; added median {:?}",
        l.0,
        l.1,
        l.2,
        s.0,
        s.1,
        s.2,
        s.0.saturating_sub(l.0)
    );
}
