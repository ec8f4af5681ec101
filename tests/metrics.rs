//! `/metrics` on the admin listener: every family of the monitoring list is
//! scraped after real traffic and its values are checked.

mod common;
use common::*;
use http::{Method, StatusCode};
use std::collections::HashMap;

/// `name{labels}` -> value, from the OpenMetrics text.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no series {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

async fn metrics(kg: &Keygate) -> (String, HashMap<String, f64>) {
    let r = get(&format!("http://{}/metrics", kg.admin)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let text = r.text();
    let m = scrape(&text);
    (text, m)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_refusals_backend_errors_bytes_and_reloads() {
    let backend = spawn_backend().await;
    let dead = dead_port().await;
    let toml = format!(
        r#"
[[keys]]
id = "AKIDm"
secret = "metrics-secret"

[[services]]
name = "s"

[[services.apis]]
name = "mock"
path = "/mock"
[services.apis.backend]
type = "mock"
body = "hello"

[[services.apis]]
name = "echo"
path = "/echo/"
methods = ["ANY"]
[services.apis.backend]
type = "http"
url = "http://{backend}"
path = "/"

[[services.apis]]
name = "signed"
path = "/signed/"
auth = "hmac"
[services.apis.backend]
type = "http"
url = "http://{backend}"
path = "/"

[[services.apis]]
name = "dead"
path = "/dead/"
[services.apis.backend]
type = "http"
url = "http://{dead}"
path = "/"
"#
    );
    let kg = Keygate::start(&toml).await;
    for _ in 0..3 {
        assert_eq!(get(&kg.url("/mock")).await.status, StatusCode::OK);
    }
    let body = vec![b'x'; 1000];
    let r = send(Method::POST, &kg.url("/echo/up"), &[], body).await;
    assert_eq!(r.status, StatusCode::OK);
    let echoed = r.body.len() as f64;
    assert_eq!(
        get(&kg.url("/echo/status/404")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&kg.url("/echo/status/503")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&kg.url("/signed/x")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&kg.url("/nowhere")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&kg.url("/dead/x")).await.status,
        StatusCode::BAD_GATEWAY
    );

    // One good reload (a changed file) and one refused.
    kg.write_config(&format!("{toml}\n# touched\n"));
    assert_eq!(kg.reload().await.0, StatusCode::OK);
    kg.write_config("this is = = not toml");
    assert_eq!(kg.reload().await.0, StatusCode::UNPROCESSABLE_ENTITY);

    let (text, m) = metrics(&kg).await;
    // Requests by route and status code.
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/mock",code="200"}"#),
        3.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/echo",code="404"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="-",code="404"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/dead",code="502"}"#),
        1.0
    );
    // Valid calls: forwarded or mocked without a gateway refusal.
    assert_eq!(
        value(&m, r#"keygate_valid_calls_total{route="s/mock"}"#),
        3.0
    );
    assert_eq!(
        value(&m, r#"keygate_valid_calls_total{route="s/echo"}"#),
        3.0
    );
    // Front-end errors by reason.
    assert_eq!(
        value(
            &m,
            r#"keygate_frontend_errors_total{route="s/signed",reason="auth"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_frontend_errors_total{route="-",reason="route"}"#
        ),
        1.0
    );
    // Back-end errors, 404s and 502s.
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_errors_total{route="s/echo",class="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_errors_total{route="s/echo",class="5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_responses_total{route="s/echo",code="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_responses_total{route="s/echo",code="503"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_responses_total{route="s/dead",code="502"}"#
        ),
        1.0
    );
    assert!(!text.contains("keygate_backend_404"), "{text}");
    assert!(!text.contains("keygate_backend_502"), "{text}");
    // A refusal before the back end is no back-end answer.
    assert!(
        !text.contains(r#"keygate_backend_responses_total{route="s/signed""#),
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_backend_errors_total{route="s/signed",class="4xx"}"#
        ),
        0.0
    );
    // Latency histogram: one observation per answered request of the route.
    assert_eq!(
        value(
            &m,
            r#"keygate_request_duration_seconds_count{route="s/echo"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_request_duration_seconds_bucket{le="+Inf",route="s/mock"}"#
        ),
        3.0
    );
    // The back end's share: the three answers of the echo back end, none of the mock.
    assert_eq!(
        value(
            &m,
            r#"keygate_upstream_duration_seconds_count{route="s/echo"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"keygate_upstream_duration_seconds_count{route="s/mock"}"#
        ),
        0.0
    );
    assert!(
        value(
            &m,
            r#"keygate_upstream_duration_seconds_sum{route="s/echo"}"#
        ) <= value(
            &m,
            r#"keygate_request_duration_seconds_sum{route="s/echo"}"#
        )
    );
    // Bytes: the 1,000-byte body in; the mocks' and the echo's bodies out.
    assert_eq!(
        value(&m, r#"keygate_bytes_in_total{route="s/echo"}"#),
        1000.0
    );
    assert_eq!(
        value(&m, r#"keygate_bytes_out_total{route="s/mock"}"#),
        15.0
    );
    assert!(value(&m, r#"keygate_bytes_out_total{route="s/echo"}"#) >= echoed);
    // Connections, reloads, config version.
    assert!(value(&m, "keygate_connections_total") >= 1.0);
    assert!(value(&m, "keygate_open_connections") >= 0.0);
    assert_eq!(value(&m, r#"keygate_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(value(&m, r#"keygate_reloads_total{result="failed"}"#), 1.0);
    let version = get(&format!("http://{}/-/version", kg.admin)).await.json();
    let hash = version["hash"].as_str().expect("hash");
    assert_eq!(
        value(&m, &format!(r#"keygate_config_info{{hash="{hash}"}}"#)),
        1.0
    );
    assert!(value(&m, "keygate_config_loaded_timestamp_seconds") > 1.7e9);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_follow_keep_alive_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kg = Keygate::start(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"m\"\npath = \"/m\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n",
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(kg.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /m HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        conns.push(s);
    }
    let (_, m) = metrics(&kg).await;
    assert!(value(&m, "keygate_open_connections") >= 5.0);
    drop(conns);
    // The server notices the closes asynchronously.
    let mut open = f64::MAX;
    for _ in 0..100 {
        open = value(&metrics(&kg).await.1, "keygate_open_connections");
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0);
}

/// Exported before any traffic: every counter with known labels at 0, the
/// process and build metrics; the status-code series appear with traffic only.
#[tokio::test(flavor = "multi_thread")]
async fn counters_process_and_build_info_from_the_start() {
    let kg = Keygate::start(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"m\"\npath = \"/m\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n",
    )
    .await;
    let (text, m) = metrics(&kg).await;
    for key in [
        r#"keygate_reloads_total{result="ok"}"#,
        r#"keygate_reloads_total{result="failed"}"#,
        r#"keygate_valid_calls_total{route="s/m"}"#,
        r#"keygate_frontend_errors_total{route="s/m",reason="auth"}"#,
        r#"keygate_frontend_errors_total{route="s/m",reason="limit"}"#,
        r#"keygate_frontend_errors_total{route="s/m",reason="cors"}"#,
        r#"keygate_frontend_errors_total{route="-",reason="route"}"#,
        r#"keygate_backend_errors_total{route="s/m",class="5xx"}"#,
        r#"keygate_request_duration_seconds_count{route="s/m"}"#,
        r#"keygate_upstream_duration_seconds_count{route="s/m"}"#,
        "keygate_cluster_fallback_decisions_total",
    ] {
        assert_eq!(value(&m, key), 0.0, "{key}");
    }
    assert!(!text.contains("keygate_requests_total{"), "{text}");
    // Process metrics from /proc.
    assert!(value(&m, "process_cpu_seconds_total") > 0.0);
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    assert!(value(&m, "process_virtual_memory_bytes") > 1e6);
    assert!(value(&m, "process_open_fds") >= 3.0);
    assert!(value(&m, "process_max_fds") >= value(&m, "process_open_fds"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = value(&m, "process_start_time_seconds");
    assert!(started > now - 600.0 && started <= now + 1.0, "{started}");
    // Build info: version and commit (a git checkout builds with its commit).
    let build = text
        .lines()
        .find(|l| l.starts_with("keygate_build_info{"))
        .unwrap_or_else(|| panic!("no build_info in {text}"));
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    let commit = build
        .split("commit=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("commit label");
    assert!(
        commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{commit}"
    );
    assert!(build.ends_with(" 1"), "{build}");
}

/// Prometheus' own Accept header gets OpenMetrics; a scraper asking for the
/// text format 0.0.4 gets it, with the counters' metadata under `_total`.
#[tokio::test(flavor = "multi_thread")]
async fn exposition_format_follows_accept() {
    let kg = Keygate::start(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"m\"\npath = \"/m\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"ok\"\n",
    )
    .await;
    assert_eq!(get(&kg.url("/m")).await.status, StatusCode::OK);
    let url = format!("http://{}/metrics", kg.admin);
    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let r = send(Method::GET, &url, &[("accept", prometheus)], vec![]).await;
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let om = r.text();
    assert!(om.contains("# TYPE keygate_requests counter"), "{om}");
    assert!(om.trim_end().ends_with("# EOF"));

    let r = send(
        Method::GET,
        &url,
        &[("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(
        text.contains("# TYPE keygate_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(r#"keygate_requests_total{route="s/m",code="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    // Every sample line of one format is in the other.
    let samples = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| !l.starts_with("process_"))
            .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(samples(&om), samples(&text));
}

/// A refused CORS preflight is counted as a refusal, not as a valid call.
#[tokio::test(flavor = "multi_thread")]
async fn refused_preflight_is_not_a_valid_call() {
    let kg = Keygate::start(
        r#"
[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://app.example"]
allow_methods = ["GET"]
[[services]]
name = "s"
[[services.apis]]
name = "c"
path = "/c"
plugins = ["web"]
[services.apis.backend]
type = "mock"
body = "ok"
"#,
    )
    .await;
    let url = kg.url("/c");
    let ok = send(
        Method::OPTIONS,
        &url,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
        vec![],
    )
    .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let refused = send(
        Method::OPTIONS,
        &url,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        vec![],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (_, m) = metrics(&kg).await;
    assert_eq!(value(&m, r#"keygate_valid_calls_total{route="s/c"}"#), 1.0);
    assert_eq!(
        value(
            &m,
            r#"keygate_frontend_errors_total{route="s/c",reason="cors"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/c",code="403"}"#),
        1.0
    );
}

/// Metric names (`keygate_*`, `process_*`) mentioned in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["keygate_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let boundary = start == 0 || {
                let b = bytes[start - 1];
                !(b.is_ascii_alphanumeric() || b == b'_')
            };
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| start + e);
            if boundary {
                out.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    out
}

/// The Grafana dashboard and the Prometheus alert rules name only metrics that
/// a live keygate exports (with a `[cluster]` section, Redis unreachable, so
/// that the cluster series exist too).
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_use_existing_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard = std::fs::read_to_string(format!("{root}/deploy/grafana/keygate.json"))
        .expect("deploy/grafana/keygate.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() > 10));
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");

    let backend = spawn_backend().await;
    let kg = Keygate::start(&format!(
        r#"
[cluster]
redis = "redis://127.0.0.1:1"
on_error = "local"

[[services]]
name = "s"
[[services.apis]]
name = "echo"
path = "/echo/"
[services.apis.backend]
type = "http"
url = "http://{backend}"
path = "/"
"#
    ))
    .await;
    assert_eq!(get(&kg.url("/echo/x")).await.status, StatusCode::OK);
    assert_eq!(get(&kg.url("/nowhere")).await.status, StatusCode::NOT_FOUND);
    let (text, _) = metrics(&kg).await;
    let live: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    for (file, body) in [
        ("deploy/grafana/keygate.json", &dashboard),
        ("deploy/prometheus/alerts.yml", &alerts),
    ] {
        let used = metric_names(body);
        assert!(used.len() >= 5, "{file} names hardly any metric: {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !live.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics that /metrics does not export: {missing:?}\nlive: {live:?}"
        );
    }
    // What the brief asks the dashboard and the alerts to cover.
    for name in [
        "keygate_requests_total",
        "keygate_frontend_errors_total",
        "keygate_request_duration_seconds_bucket",
        "keygate_upstream_duration_seconds_bucket",
        "keygate_backend_responses_total",
        "keygate_reloads_total",
        "keygate_cluster_mode",
    ] {
        assert!(dashboard.contains(name), "dashboard lacks {name}");
    }
    for name in [
        "keygate_reloads_total{result=\"failed\"}",
        "keygate_backend_responses_total{code=~\"5..\"}",
        "keygate_cluster_mode{mode!=\"shared\"}",
    ] {
        assert!(alerts.contains(name), "alerts lack {name}");
    }
}
