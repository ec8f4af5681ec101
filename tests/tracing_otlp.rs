//! `[tracing]`: one span per request exported over OTLP/HTTP (protobuf) to a
//! collector on loopback, decoded with the OpenTelemetry protocol types. The
//! exported span and the `traceparent` the back end receives agree; without
//! `[tracing]` nothing is sent; a dead or stalled collector costs the requests
//! nothing.

mod common;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as SpanStatus};
use prost::Message;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// One export request the collector received.
struct Post {
    path: String,
    headers: HeaderMap,
    body: ExportTraceServiceRequest,
}

/// A loopback OTLP/HTTP collector: decodes every POST and answers 200.
struct Collector {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    async fn start() -> Collector {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let store = posts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|c| c.to_bytes());
                            let decoded = bytes
                                .ok()
                                .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
                            let status = match decoded {
                                Some(body) => {
                                    store.lock().expect("lock").push(Post {
                                        path: parts.uri.path().to_string(),
                                        headers: parts.headers,
                                        body,
                                    });
                                    StatusCode::OK
                                }
                                None => StatusCode::BAD_REQUEST,
                            };
                            let mut r = hyper::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = status;
                            r.headers_mut().insert(
                                "content-type",
                                "application/x-protobuf".parse().expect("v"),
                            );
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Collector { addr, posts }
    }

    /// Every span received: (service.name of its resource, span).
    fn spans(&self) -> Vec<(String, Span)> {
        let posts = self.posts.lock().expect("lock");
        let mut out = vec![];
        for p in posts.iter() {
            for rs in &p.body.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| str_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((service.clone(), s.clone()));
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// Hands what keygate has queued to the collector and waits for it.
async fn flush(kg: &Keygate) {
    let t = kg
        .running
        .live
        .load()
        .tracing
        .clone()
        .expect("[tracing] on");
    let ok = tokio::task::spawn_blocking(move || t.flush())
        .await
        .expect("flush");
    assert!(ok, "the collector took the spans");
}

fn config(be: SocketAddr, tracing: &str) -> String {
    format!(
        r#"
{tracing}

[[keys]]
id = "alice"
secret = "sk-alice-0123456789"

[[services]]
name = "s"

[[services.apis]]
name = "open"
path = "/open/"
[services.apis.backend]
url = "http://{be}"
path = "/"

[[services.apis]]
name = "keyed"
path = "/keyed"
auth = "key"
[services.apis.backend]
url = "http://{be}"

[[services.apis]]
name = "broken"
path = "/broken"
[services.apis.backend]
type = "mock"
status = 503
"#
    )
}

/// `traceparent` fields the back end received.
fn backend_traceparent(r: &Reply) -> (String, String, String) {
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp}");
    (f[1].to_string(), f[2].to_string(), f[3].to_string())
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn one_span_per_request_continues_the_clients_trace() {
    let be = spawn_backend().await;
    let collector = Collector::start().await;
    let kg = Keygate::start(&config(
        be,
        &format!(
            "[tracing]\notlp = \"http://{}/\"\nservice_name = \"edge\"\nheaders = {{ authorization = \"Bearer t0ken\" }}\n",
            collector.addr
        ),
    ))
    .await;
    let before = SystemTime::now();

    // 1. With the client's traceparent: same trace, the client's span as parent,
    //    keygate's span id is the one the back end got.
    let parent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = send(
        Method::GET,
        &kg.url("/open/items?q=1"),
        &[
            ("traceparent", &parent),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (t1, s1, f1) = backend_traceparent(&r);
    assert_eq!((t1.as_str(), f1.as_str()), (TRACE, "01"));
    assert_ne!(s1, CLIENT_SPAN);
    assert_eq!(r.json()["headers"]["tracestate"], "congo=t61rcWkgMzE");

    // 2. Without one: a new trace, no parent.
    let r = get(&kg.url("/open/fresh")).await;
    assert_eq!(r.status, StatusCode::OK);
    let (t2, s2, f2) = backend_traceparent(&r);
    assert_eq!(f2, "01");
    assert_ne!(t2, TRACE);

    // 3. An authenticated caller: its key id.
    let r = send(
        Method::POST,
        &kg.url("/keyed"),
        &[("x-api-key", "sk-alice-0123456789")],
        "x",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (t3, s3, _) = backend_traceparent(&r);

    // 4. A refusal (401) is not a server error; 5. a 503 is.
    let r = get(&kg.url("/keyed")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let refused_code = r.json()["code"].as_str().expect("code").to_string();
    assert!(!refused_code.is_empty());
    let r = get(&kg.url("/broken")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // 6. No route.
    let r = get(&kg.url("/nowhere")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // 7. A caller that did not sample: nothing exported, the flag passed on.
    let unsampled = format!("00-{TRACE}-{CLIENT_SPAN}-00");
    let r = send(
        Method::GET,
        &kg.url("/open/x"),
        &[("traceparent", &unsampled)],
        "",
    )
    .await;
    let (t7, s7, f7) = backend_traceparent(&r);
    assert_eq!((t7.as_str(), f7.as_str()), (TRACE, "00"));
    assert_ne!(s7, CLIENT_SPAN);

    flush(&kg).await;
    let after = SystemTime::now();
    let spans = collector.spans();
    assert_eq!(spans.len(), 6, "one span per sampled request");
    {
        let posts = collector.posts.lock().expect("lock");
        for p in posts.iter() {
            assert_eq!(p.path, "/v1/traces");
            assert_eq!(p.headers["content-type"], "application/x-protobuf");
            assert_eq!(p.headers["authorization"], "Bearer t0ken");
        }
    }
    for (service, s) in &spans {
        assert_eq!(service, "edge");
        assert_eq!(s.kind, SpanKind::Server as i32, "{}", s.name);
        assert!(s.start_time_unix_nano >= unix_nanos(before), "{}", s.name);
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{}", s.name);
        assert!(s.end_time_unix_nano <= unix_nanos(after), "{}", s.name);
        assert_eq!(s.span_id.len(), 8);
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(
            str_attr(&s.attributes, "client.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            str_attr(&s.attributes, "url.scheme").as_deref(),
            Some("http")
        );
    }
    let by_span = |id: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| hex(&s.span_id) == id)
            .unwrap_or_else(|| panic!("no span {id}"))
    };

    let s = by_span(&s1);
    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(hex(&s.parent_span_id), CLIENT_SPAN);
    assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(s.name, "GET s/open");
    let a = &s.attributes;
    assert_eq!(str_attr(a, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(str_attr(a, "url.path").as_deref(), Some("/open/items"));
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(int_attr(a, "keygate.upstream_status_code"), Some(200));
    assert_eq!(str_attr(a, "keygate.route").as_deref(), Some("s/open"));
    assert_eq!(str_attr(a, "keygate.service").as_deref(), Some("s"));
    assert_eq!(str_attr(a, "keygate.api").as_deref(), Some("open"));
    assert_eq!(str_attr(a, "keygate.key_id"), None);
    assert_ne!(
        s.status.as_ref().map_or(0, |st| st.code),
        SpanStatus::Error as i32
    );

    let s = by_span(&s2);
    assert_eq!(hex(&s.trace_id), t2);
    assert!(s.parent_span_id.is_empty(), "a root span");

    let s = by_span(&s3);
    assert_eq!(hex(&s.trace_id), t3);
    assert_eq!(s.name, "POST s/keyed");
    assert_eq!(
        str_attr(&s.attributes, "keygate.key_id").as_deref(),
        Some("alice")
    );

    let named = |name: &str, status: i64| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.name == name
                    && int_attr(&s.attributes, "http.response.status_code") == Some(status)
            })
            .unwrap_or_else(|| panic!("no span {name} {status}"))
    };
    let s = named("GET s/keyed", 401);
    assert_eq!(
        str_attr(&s.attributes, "keygate.error_code").as_deref(),
        Some(refused_code.as_str()),
        "a refusal names its error code"
    );
    assert_eq!(str_attr(&s.attributes, "keygate.key_id"), None);
    assert_ne!(
        s.status.as_ref().map_or(0, |st| st.code),
        SpanStatus::Error as i32,
        "4xx is not a server span's error"
    );
    let s = named("GET s/broken", 503);
    assert_eq!(
        s.status.as_ref().map(|st| st.code),
        Some(SpanStatus::Error as i32)
    );
    assert_eq!(
        str_attr(&s.attributes, "error.type").as_deref(),
        Some("503")
    );
    let s = named("GET", 404);
    assert_eq!(str_attr(&s.attributes, "keygate.route"), None);
    assert_eq!(
        str_attr(&s.attributes, "url.path").as_deref(),
        Some("/nowhere")
    );
    kg.running.shutdown().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Thread names of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    dir.filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// The real binary, with the SDK's own endpoint variable pointing at the
/// collector: only `[tracing]` turns export on.
async fn run_binary(collector: SocketAddr, tracing: &str) -> (usize, Vec<String>) {
    let be = spawn_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nwatch = false\n{}",
        config(be, tracing)
    );
    std::fs::write(&path, text).expect("write");
    let endpoint = format!("http://{collector}");
    let (mut child, addr) =
        common::spawn_binary_with_env(&path, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let mut ok = 0;
    for i in 0..3 {
        let r = get(&format!("http://{addr}/open/{i}")).await;
        if r.status == StatusCode::OK && r.json()["headers"].get("traceparent").is_some() {
            ok += 1;
        }
    }
    let names = threads(child.id());
    // SIGTERM: drain, then the queued spans are flushed before exit.
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    (ok, names)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tracing_nothing_is_sent_and_no_exporter_runs() {
    let collector = Collector::start().await;
    let (ok, names) = run_binary(collector.addr, "").await;
    assert_eq!(ok, 3);
    assert!(
        !names
            .iter()
            .any(|n| n.contains("otlp") || n.contains("OpenTelemetry")),
        "{names:?}"
    );
    assert_eq!(collector.posts.lock().expect("lock").len(), 0);

    // The same binary and requests with `[tracing]`: three spans, flushed
    // by the graceful stop.
    let on = Collector::start().await;
    let (ok, names) = run_binary(
        on.addr,
        &format!("[tracing]\notlp = \"http://{}\"\n", on.addr),
    )
    .await;
    assert_eq!(ok, 3);
    assert!(names.iter().any(|n| n == "keygate-otlp"), "{names:?}");
    assert_eq!(on.spans().len(), 3);
}

/// A collector that accepts connections and never answers.
async fn stalled_collector() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_or_stalled_collector_does_not_slow_or_fail_requests() {
    for collector in [dead_port().await, stalled_collector().await] {
        let be = spawn_backend().await;
        let kg = Keygate::start(&config(
            be,
            &format!("[tracing]\notlp = \"http://{collector}\"\ntimeout = \"3s\"\n"),
        ))
        .await;
        // An export in progress the whole time (the stalled one holds it 3 s).
        let t = kg.running.live.load().tracing.clone().expect("on");
        let _ = get(&kg.url("/open/warm")).await;
        let exporting = tokio::task::spawn_blocking(move || t.flush());
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let t0 = Instant::now();
            let r = get(&kg.url(&format!("/open/{i}"))).await;
            assert_eq!(r.status, StatusCode::OK, "{collector}: {}", r.text());
            slowest = slowest.max(t0.elapsed());
        }
        let total = started.elapsed();
        assert!(
            slowest < Duration::from_secs(1),
            "{collector}: slowest request {slowest:?}"
        );
        println!("collector {collector}: 200 requests in {total:?}, slowest {slowest:?}");
        let flushed = exporting.await.expect("join");
        assert!(
            !flushed,
            "{collector}: the export failed, reported to the flush"
        );
        kg.running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_or_replaces_the_exporter_with_its_settings() {
    let be = spawn_backend().await;
    let collector = Collector::start().await;
    let tracing = |name: &str| {
        format!(
            "[tracing]\notlp = \"http://{}\"\nservice_name = \"{name}\"\n",
            collector.addr
        )
    };
    let kg = Keygate::start(&config(be, &tracing("first"))).await;
    let first = kg.running.live.load().tracing.clone().expect("on");
    assert_eq!(get(&kg.url("/open/1")).await.status, StatusCode::OK);

    // The same section in a changed file: the same exporter, its queue kept.
    kg.write_config(&format!("# changed\n{}", config(be, &tracing("first"))));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kept = kg.running.live.load().tracing.clone().expect("on");
    assert!(std::sync::Arc::ptr_eq(&first, &kept));
    drop(kept);

    // A changed one: a new exporter; the old one flushes what it holds when
    // its last snapshot goes.
    kg.write_config(&config(be, &tracing("second")));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = kg.running.live.load().tracing.clone().expect("on");
    assert!(!std::sync::Arc::ptr_eq(&first, &second));
    drop((first, second));
    assert_eq!(get(&kg.url("/open/2")).await.status, StatusCode::OK);
    flush(&kg).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let names = loop {
        let mut names: Vec<String> = collector.spans().into_iter().map(|(n, _)| n).collect();
        names.sort();
        if names.len() >= 2 || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(names, ["first", "second"]);

    // Without the section: no exporter.
    kg.write_config(&config(be, ""));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(kg.running.live.load().tracing.is_none());
    kg.running.shutdown().await;
}

#[test]
fn check_reports_a_bad_tracing_value_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    for (section, field) in [
        ("otlp = \"grpc://127.0.0.1:4317\"", "tracing.otlp"),
        (
            "otlp = \"http://c:4318\"\nsample_ratio = 2.0",
            "tracing.sample_ratio",
        ),
        (
            "otlp = \"http://c:4318\"\nheaders = { \"x-token\" = \"${KEYGATE_TEST_UNSET_TOKEN}\" }",
            "tracing.headers (x-token)",
        ),
    ] {
        std::fs::write(
            &path,
            format!("[tracing]\n{section}\n\n[[services]]\nname = \"s\"\n"),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check", "-c", path.to_str().expect("utf8")])
            .output()
            .expect("run keygate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}: {err}");
        assert_eq!(err.matches("tracing").count(), 1, "{section}: {err}");
        assert!(err.contains(field), "{section}: {err}");
    }
    std::fs::write(
        &path,
        "[tracing]\notlp = \"https://otel.example:4318\"\n\n[[services]]\nname = \"s\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c", path.to_str().expect("utf8")])
        .output()
        .expect("run keygate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
