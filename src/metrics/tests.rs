//! Tests of the metrics: families, route handles, encodings.

use super::*;

fn ok(status: u16, ms: u64) -> Sample {
    Sample {
        status,
        reject: None,
        upstream_status: Some(status),
        latency: Duration::from_millis(ms),
        upstream_latency: Some(Duration::from_millis(ms)),
    }
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line {line:?} in:\n{text}"
    );
}

#[test]
fn records_and_encodes() {
    let m = Arc::new(Metrics::new());
    for (status, ms) in [(200, 3), (200, 40), (404, 1), (502, 1)] {
        m.record("demo/echo", ok(status, ms));
        m.route("demo/echo").add_bytes_in(10);
        m.route("demo/echo").add_bytes_out(100);
    }
    m.record(
        "demo/echo",
        Sample {
            status: 502,
            reject: Some("backend"),
            latency: Duration::from_micros(50),
            ..Sample::default()
        },
    );
    m.record(
        "demo/private",
        Sample {
            status: 401,
            reject: Some("auth"),
            latency: Duration::from_micros(50),
            ..Sample::default()
        },
    );
    m.route("demo/private").add_bytes_out(80);
    m.record(
        NO_ROUTE,
        Sample {
            status: 404,
            reject: Some("route"),
            latency: Duration::from_micros(20),
            ..Sample::default()
        },
    );
    m.record(
        "demo/echo",
        Sample {
            status: 429,
            reject: Some("limit"),
            latency: Duration::from_secs(60),
            ..Sample::default()
        },
    );
    {
        let _a = m.conn_guard();
        let _b = m.conn_guard();
    }
    m.conn_opened();
    m.reload(true);
    m.reload(true);
    m.reload(false);
    m.set_config_version("abc123", 1_700_000_000);
    m.set_config_version("def456", 1_700_000_100);
    let t = m.encode();

    has(
        &t,
        "keygate_requests_total{route=\"demo/echo\",code=\"200\"} 2",
    );
    has(
        &t,
        "keygate_requests_total{route=\"demo/echo\",code=\"404\"} 1",
    );
    has(
        &t,
        "keygate_requests_total{route=\"demo/echo\",code=\"429\"} 1",
    );
    has(
        &t,
        "keygate_requests_total{route=\"demo/echo\",code=\"502\"} 2",
    );
    has(&t, "keygate_requests_total{route=\"-\",code=\"404\"} 1");
    has(&t, "keygate_valid_calls_total{route=\"demo/echo\"} 4");
    has(
        &t,
        "keygate_frontend_errors_total{route=\"demo/private\",reason=\"auth\"} 1",
    );
    has(
        &t,
        "keygate_frontend_errors_total{route=\"-\",reason=\"route\"} 1",
    );
    has(
        &t,
        "keygate_frontend_errors_total{route=\"demo/echo\",reason=\"limit\"} 1",
    );
    // Known label values are there from the start, with 0.
    has(
        &t,
        "keygate_frontend_errors_total{route=\"demo/echo\",reason=\"cors\"} 0",
    );
    has(&t, "keygate_valid_calls_total{route=\"demo/private\"} 0");
    assert!(!t.contains("reason=\"backend\""), "{t}");
    has(
        &t,
        "keygate_backend_errors_total{route=\"demo/echo\",class=\"4xx\"} 1",
    );
    has(
        &t,
        "keygate_backend_errors_total{route=\"demo/echo\",class=\"5xx\"} 2",
    );
    has(
        &t,
        "keygate_backend_responses_total{route=\"demo/echo\",code=\"200\"} 2",
    );
    has(
        &t,
        "keygate_backend_responses_total{route=\"demo/echo\",code=\"404\"} 1",
    );
    has(
        &t,
        "keygate_backend_responses_total{route=\"demo/echo\",code=\"502\"} 2",
    );
    // Refusals by the gateway are not back-end errors.
    has(
        &t,
        "keygate_backend_errors_total{route=\"demo/private\",class=\"4xx\"} 0",
    );
    assert!(
        !t.contains("keygate_backend_responses_total{route=\"demo/private\""),
        "{t}"
    );
    assert!(!t.contains("keygate_backend_502"), "{t}");
    has(&t, "# TYPE keygate_request_duration_seconds histogram");
    has(
        &t,
        "keygate_request_duration_seconds_count{route=\"demo/echo\"} 6",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"0.0001\",route=\"demo/echo\"} 1",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"0.001\",route=\"demo/echo\"} 3",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"0.005\",route=\"demo/echo\"} 4",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"0.05\",route=\"demo/echo\"} 5",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"30.0\",route=\"demo/echo\"} 5",
    );
    has(
        &t,
        "keygate_request_duration_seconds_bucket{le=\"+Inf\",route=\"demo/echo\"} 6",
    );
    // The back end's share: only the samples that reached one.
    has(
        &t,
        "keygate_upstream_duration_seconds_count{route=\"demo/echo\"} 4",
    );
    has(
        &t,
        "keygate_upstream_duration_seconds_count{route=\"demo/private\"} 0",
    );
    has(&t, "keygate_bytes_in_total{route=\"demo/echo\"} 40");
    has(&t, "keygate_bytes_out_total{route=\"demo/echo\"} 400");
    has(&t, "keygate_bytes_out_total{route=\"demo/private\"} 80");
    has(&t, "keygate_open_connections 1");
    has(&t, "keygate_connections_total 3");
    has(&t, "keygate_reloads_total{result=\"ok\"} 2");
    has(&t, "keygate_reloads_total{result=\"failed\"} 1");
    has(&t, "keygate_config_info{hash=\"def456\"} 1");
    assert!(!t.contains("abc123"), "{t}");
    has(&t, "keygate_config_loaded_timestamp_seconds 1700000100");
    has(
        &t,
        &format!(
            "keygate_build_info{{version=\"{}\",commit=\"{BUILD_COMMIT}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    );
    has(&t, "# TYPE process_cpu_seconds counter");
    assert!(t.contains("\nprocess_resident_memory_bytes "), "{t}");
    assert!(t.ends_with("# EOF\n"));
    assert_eq!(t.matches("# EOF").count(), 1);
}

#[test]
fn counters_start_at_zero() {
    let m = Metrics::new();
    let t = m.encode();
    has(&t, "keygate_reloads_total{result=\"ok\"} 0");
    has(&t, "keygate_reloads_total{result=\"failed\"} 0");
    has(&t, "keygate_valid_calls_total{route=\"-\"} 0");
    has(
        &t,
        "keygate_frontend_errors_total{route=\"-\",reason=\"route\"} 0",
    );
    has(&t, "keygate_open_connections 0");
    has(&t, "keygate_connections_total 0");
    // Status codes are an open set: no series before the first answer.
    assert!(!t.contains("keygate_requests_total{"), "{t}");
    m.route("s/a");
    has(
        &m.encode(),
        "keygate_frontend_errors_total{route=\"s/a\",reason=\"auth\"} 0",
    );
}

#[test]
fn refused_preflight_is_no_valid_call() {
    let m = Metrics::new();
    m.record(
        "s/c",
        Sample {
            status: 403,
            reject: Some("cors"),
            ..Sample::default()
        },
    );
    let t = m.encode();
    has(&t, "keygate_valid_calls_total{route=\"s/c\"} 0");
    has(
        &t,
        "keygate_frontend_errors_total{route=\"s/c\",reason=\"cors\"} 1",
    );
    has(&t, "keygate_requests_total{route=\"s/c\",code=\"403\"} 1");
}

#[test]
fn accept_negotiation() {
    // Prometheus 2.x/3.x default scrape protocols.
    assert!(!prefers_text_004("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
    assert!(prefers_text_004("text/plain;version=0.0.4"));
    assert!(prefers_text_004(
        "text/plain; version=0.0.4; q=0.9, application/openmetrics-text; q=0.5"
    ));
    assert!(!prefers_text_004("*/*"));
    assert!(!prefers_text_004("text/plain;q=0"));
    assert!(!prefers_text_004(""));
}

#[test]
fn text_004_names_counters_by_their_samples() {
    let m = Metrics::new();
    m.reload(true);
    let (t, ct) = m.encode_for(Some("text/plain"));
    assert_eq!(ct, CONTENT_TYPE_TEXT);
    has(&t, "# TYPE keygate_reloads_total counter");
    has(&t, "keygate_reloads_total{result=\"ok\"} 1");
    has(&t, "# TYPE keygate_config_loaded_timestamp_seconds gauge");
    has(&t, "# TYPE process_cpu_seconds_total counter");
    assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
    let (om, ct) = m.encode_for(None);
    assert_eq!(ct, CONTENT_TYPE);
    has(&om, "# TYPE keygate_reloads counter");
}

#[test]
fn route_handles_are_shared() {
    let m = Metrics::new();
    let a = m.route("s/a");
    let b = m.route("s/a");
    assert!(Arc::ptr_eq(&a, &b));
    a.record(ok(200, 1));
    m.record("s/a", ok(200, 1));
    assert!(m
        .encode()
        .contains("keygate_requests_total{route=\"s/a\",code=\"200\"} 2"));
}

/// Cost of the hot path; run with `cargo test --release --lib metrics -- --ignored --nocapture`.
#[test]
#[ignore]
fn record_cost() {
    let m = Arc::new(Metrics::new());
    for i in 0..50 {
        m.route(&format!("svc/api{i}"));
    }
    let n = 2_000_000u32;
    let per = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed() / n
    };
    let by_name = per(&|| m.record("svc/api7", ok(200, 2)));
    let h = m.route("svc/api7");
    let by_handle = per(&|| h.record(ok(200, 2)));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    m.record("svc/api7", ok(200, 2));
                }
                t.elapsed() / n
            })
        })
        .collect();
    let contended: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    println!(
        "record by name: {by_name:?}, by handle: {by_handle:?}, 2 threads by name: {contended:?}"
    );
}
