//! The core gateway end to end: routing, URL composition, forwarding headers,
//! mock back ends, errors of the back end, size limits.

mod common;
use common::*;
use http::{Method, StatusCode};

fn api(name: &str, path: &str, backend: &str, extra: &str) -> String {
    format!(
        "[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\n{extra}\n[services.apis.backend]\n{backend}\n"
    )
}

fn mock(body: &str) -> String {
    format!("type = \"mock\"\nbody = \"{body}\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn path_rule_kinds_and_priorities() {
    let mut cfg = String::from("[[services]]\nname = \"rules\"\n");
    cfg += &api("prefix-short", "/user", &mock("prefix-short"), "");
    cfg += &api("prefix-long", "/user/test", &mock("prefix-long"), "");
    cfg += &api("template", "/user/{id}/profile", &mock("template"), "");
    cfg += &api("regex", "~^/user/[0-9]+$", &mock("regex"), "");
    cfg += &api("pref", "^~/user/static", &mock("pref"), "");
    cfg += &api("exact", "=/user", &mock("exact"), "");
    cfg += &api(
        "post-only",
        "=/only-post",
        &mock("post-only"),
        "methods = [\"POST\"]",
    );
    let kg = Keygate::start(&cfg).await;
    let cases = [
        ("/user", "exact"),               // = beats everything
        ("/usertest", "prefix-short"),    // plain string is a raw prefix
        ("/user/test/a", "prefix-long"),  // longest prefix wins
        ("/user/static/x.css", "pref"),   // ^~ beats regex and prefix
        ("/user/42", "regex"),            // regex beats prefix
        ("/user/42/profile", "template"), // {param} beats prefix
        ("/user/abc", "prefix-short"),    // regex does not match letters
    ];
    for (path, want) in cases {
        let r = get(&kg.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.text(), want, "{path}");
    }
    // Method mismatch: not found, in the JSON error shape with a request id.
    let r = get(&kg.url("/only-post")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let j = r.json();
    assert_eq!(j["code"], "ResourceNotFound");
    assert_eq!(j["request_id"].as_str(), r.header("x-request-id"));
    let r = send(Method::POST, &kg.url("/only-post"), &[], "").await;
    assert_eq!(r.text(), "post-only");
    assert_eq!(get(&kg.url("/nothing")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_exact_beat_wildcard_beat_any() {
    let cfg = format!(
        "[[services]]\nname = \"exact\"\nhosts = [\"api.example.com\"]\n{}\
         [[services]]\nname = \"wild\"\nhosts = [\"*.example.com\"]\n{}\
         [[services]]\nname = \"any\"\n{}",
        api("a", "/", &mock("exact"), ""),
        api("a", "/", &mock("wild"), ""),
        api("a", "/", &mock("any"), ""),
    );
    let kg = Keygate::start(&cfg).await;
    for (host, want) in [
        ("api.example.com", "exact"),
        ("API.example.com:8080", "exact"),
        ("x.example.com", "wild"),
        ("other.org", "any"),
    ] {
        let r = send(Method::GET, &kg.url("/p"), &[("host", host)], "").await;
        assert_eq!(r.text(), want, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_url_composition_and_forwarded_headers() {
    let be = spawn_backend().await;
    let http = |path: &str| format!("type = \"http\"\nurl = \"http://{be}\"\npath = \"{path}\"");
    let mut cfg = String::from("[[services]]\nname = \"comp\"\nenvironment = \"release\"\n");
    cfg += &api("replace", "/apia/", &http("/endpoint/"), "");
    cfg += &api("keep", "/apib/", &http(""), "");
    cfg += &api("param", "/pets/{petid}", &http("/path/{petid}"), "");
    cfg += &api(
        "method",
        "/m/",
        &format!("{}\nmethod = \"POST\"\nconst_headers = {{ \"x-const\" = \"c1\" }}\nconst_query = {{ \"k\" = \"v w\" }}", http("")),
        "",
    );
    let kg = Keygate::start(&cfg).await;

    let j = get(&kg.url("/release/apia/20171012/index.html?a=1&b=2"))
        .await
        .json();
    assert_eq!(j["path"], "/endpoint/20171012/index.html");
    assert_eq!(j["query"], "a=1&b=2");
    let j = get(&kg.url("/release/apib/20171012/index.html"))
        .await
        .json();
    assert_eq!(j["path"], "/apib/20171012/index.html");
    let j = get(&kg.url("/release/pets/7")).await.json();
    assert_eq!(j["path"], "/path/7");
    let j = get(&kg.url("/release/m/x?q=1")).await.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["query"], "q=1&k=v+w");
    assert_eq!(j["headers"]["x-const"], "c1");
    // Without the environment prefix nothing matches.
    assert_eq!(get(&kg.url("/apia/x")).await.status, StatusCode::NOT_FOUND);

    // Forwarding headers: hop-by-hop removed, X-Forwarded-* set, spoofed XFF and
    // identity headers from an untrusted peer dropped.
    let r = send(
        Method::GET,
        &kg.url("/release/apib/h"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-keygate-key-id", "forged"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("http2-settings", "AAA"),
        ],
        "",
    )
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.get("x-keygate-key-id").is_none());
    assert!(h.get("x-hop").is_none());
    assert!(h.get("te").is_none());
    assert!(h.get("http2-settings").is_none());
    assert_eq!(h["x-request-id"].as_str(), r.header("x-request-id"));
    assert_eq!(h["host"], be.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn mock_backend_answers_fixed_response() {
    let cfg = api(
        "m",
        "=/m",
        "type = \"mock\"\nstatus = 201\nbody = \"made\"\nheaders = { \"content-type\" = \"text/plain\", \"x-mock\" = \"1\" }",
        "",
    );
    let kg = Keygate::start(&format!("[[services]]\nname = \"s\"\n{cfg}")).await;
    let r = get(&kg.url("/m")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.text(), "made");
    assert_eq!(r.header("x-mock"), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_backend_is_502_and_slow_backend_504() {
    let dead = dead_port().await;
    let be = spawn_backend().await;
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}{}",
        api(
            "dead",
            "/dead",
            &format!("type = \"http\"\nurl = \"http://{dead}\""),
            ""
        ),
        api(
            "slow",
            "/slow",
            &format!("type = \"http\"\nurl = \"http://{be}\"\ntimeout = \"300ms\""),
            ""
        ),
    );
    let kg = Keygate::start(&cfg).await;
    let r = get(&kg.url("/dead")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["code"], "InternalError");
    let r = get(&kg.url("/slow/2000")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(get(&kg.url("/slow/10")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_over_weighted_targets() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}",
        api(
            "lb",
            "/",
            &format!("type = \"http\"\ntargets = [{{ url = \"http://{a}\", weight = 3 }}, {{ url = \"http://{b}\", weight = 1 }}]"),
            ""
        ),
    );
    let kg = Keygate::start(&cfg).await;
    let mut to_a = 0;
    for _ in 0..40 {
        let j = get(&kg.url("/x")).await.json();
        if j["headers"]["host"] == a.to_string() {
            to_a += 1;
        }
    }
    assert_eq!(to_a, 30, "3:1 weights over 40 requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_target_is_taken_out() {
    let good = spawn_backend().await;
    let dead = dead_port().await;
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}",
        api(
            "lb",
            "/",
            &format!("type = \"http\"\nurls = [\"http://{good}\", \"http://{dead}\"]\nmax_fails = 1\nfail_timeout = \"30s\""),
            ""
        ),
    );
    let kg = Keygate::start(&cfg).await;
    let mut failures = 0;
    for _ in 0..20 {
        if get(&kg.url("/x")).await.status != StatusCode::OK {
            failures += 1;
        }
    }
    assert!(
        failures <= 1,
        "the dead target fails at most once before ejection, got {failures}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_is_413_and_ambiguous_framing_400() {
    let be = spawn_backend().await;
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nmax_body_bytes = 1000\n\n[[services]]\nname = \"s\"\n{}",
        api("up", "/", &format!("type = \"http\"\nurl = \"http://{be}\""), ""),
    );
    let kg = Keygate::start(&cfg).await;
    let r = send(Method::POST, &kg.url("/x"), &[], vec![b'a'; 1001]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = send(Method::POST, &kg.url("/x"), &[], vec![b'a'; 1000]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], 1000);

    // Chunked (no Content-Length): cut off while streaming.
    let status = raw_request(
        kg.addr,
        &format!(
            "POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            800,
            "b".repeat(800),
            800,
            "b".repeat(800)
        ),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    let status = raw_request(
        kg.addr,
        "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_large_headers_are_431() {
    let cfg = format!(
        "[[services]]\nname = \"s\"\n{}",
        api("m", "/", &mock("ok"), "")
    );
    let kg = Keygate::start(&cfg).await;
    let big = "x".repeat(40 * 1024);
    let status = raw_request(
        kg.addr,
        &format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let status = raw_request(kg.addr, &format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n")).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    assert_eq!(get(&kg.url("/")).await.text(), "ok");
}

/// Send raw bytes, return the status line of the answer.
async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge_on_a_plain_listener() {
    use http_body_util::{BodyExt, Full};
    let kg = Keygate::start(&format!(
        "[[services]]\nname = \"s\"\n{}",
        api("m", "/", &mock("over h2"), "")
    ))
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let resp = client
        .get(kg.url("/x").parse().expect("uri"))
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"over h2");
}
