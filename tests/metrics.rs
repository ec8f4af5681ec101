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
    // Requests by route and status class.
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/mock",class="2xx"}"#),
        3.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="s/echo",class="4xx"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"keygate_requests_total{route="-",class="4xx"}"#),
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
        value(&m, r#"keygate_backend_404_total{route="s/echo"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"keygate_backend_502_total{route="s/dead"}"#),
        1.0
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
