//! What the gateway documents describe, end to end over loopback sockets:
//! declared front-end parameters and their back-end mapping, usage plans bound
//! to an API, `X-RateLimit-Used`, back-end targets of weight 0, websocket APIs,
//! custom domains, front-end protocols and W3C trace context.

mod common;
use common::signers;
use common::*;
use http::{Method, StatusCode};
use std::process::Command;

/// `keygate check -c` on `toml`: (valid, stderr).
fn check(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c", path.to_str().expect("utf8")])
        .output()
        .expect("run keygate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn params_config(be: std::net::SocketAddr) -> String {
    format!(
        r#"
[[keys]]
id = "AKIDp"
secret = "p-secret"

[[services]]
name = "s"

[[services.apis]]
name = "items"
path = "/items/{{id}}"
[[services.apis.params]]
name = "id"
in = "path"
type = "int"
min = 1
required = true
backend_in = "query"
backend_name = "item_id"
[[services.apis.params]]
name = "limit"
type = "int"
max = 100
default = 10
[[services.apis.params]]
name = "X-Color"
in = "header"
required = true
enum = ["red", "blue"]
backend_in = "query"
backend_name = "color"
[[services.apis.params]]
name = "q"
regex = "[a-z]+"
max_length = 5
backend_in = "header"
backend_name = "x-search"
[[services.apis.params]]
name = "ratio"
type = "double"
min = 0
max = 1
[[services.apis.params]]
name = "flag"
type = "boolean"
[services.apis.backend]
url = "http://{be}"
path = "/backend"
const_headers = {{ x-for-item = "item-${{param.id}}", x-fixed = "yes" }}

[[services.apis]]
name = "moved"
path = "/users/{{uid}}/orders"
[[services.apis.params]]
name = "region"
required = true
backend_in = "path"
backend_name = "reg"
[services.apis.backend]
url = "http://{be}"
path = "/r/{{reg}}/u/{{uid}}"

[[services.apis]]
name = "signed"
path = "/signed"
auth = "hmac"
[[services.apis.params]]
name = "must"
required = true
[services.apis.backend]
url = "http://{be}"

[[services.apis]]
name = "cloud"
path = "/cloud"
auth = "tc3"
[[services.apis.params]]
name = "must"
required = true
[services.apis.backend]
url = "http://{be}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_parameters_are_checked_and_mapped_for_the_back_end() {
    let be = spawn_backend().await;
    let kg = Keygate::start(&params_config(be)).await;

    // A good request: the path id goes to the query as item_id, the header to the
    // query as color, q to a header, limit gets its default, the rest is kept.
    let r = send(
        Method::GET,
        &kg.url("/items/7?q=abc&keep=1&flag=TRUE&ratio=0.5"),
        &[("X-Color", "red")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["path"], "/backend");
    let query = j["query"].as_str().expect("query");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let has = |k: &str, v: &str| pairs.iter().any(|(a, b)| a == k && b == v);
    assert!(
        has("keep", "1") && has("flag", "TRUE") && has("ratio", "0.5"),
        "{query}"
    );
    assert!(
        has("item_id", "7") && has("color", "red") && has("limit", "10"),
        "{query}"
    );
    assert!(!pairs.iter().any(|(k, _)| k == "q"), "q was moved: {query}");
    assert_eq!(j["headers"]["x-search"], "abc");
    assert_eq!(j["headers"]["x-for-item"], "item-7");
    assert_eq!(j["headers"]["x-fixed"], "yes");
    assert!(j["headers"].get("x-color").is_none(), "{j}");

    // A given value is kept (not replaced by the default).
    let r = send(
        Method::GET,
        &kg.url("/items/7?limit=100"),
        &[("X-Color", "blue")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let q = r.json()["query"].as_str().unwrap_or("").to_string();
    assert!(q.contains("limit=100") && !q.contains("limit=10&"), "{q}");

    // Refusals, in the API's (JSON) style, never forwarded.
    for (path, color, code) in [
        ("/items/0", Some("red"), "InvalidParameter"),
        ("/items/x", Some("red"), "InvalidParameter"),
        ("/items/99999999999", Some("red"), "InvalidParameter"),
        ("/items/7", None, "MissingParameter"),
        ("/items/7", Some("green"), "InvalidParameter"),
        ("/items/7?limit=101", Some("red"), "InvalidParameter"),
        ("/items/7?limit=1.5", Some("red"), "InvalidParameter"),
        ("/items/7?q=ABC", Some("red"), "InvalidParameter"),
        ("/items/7?q=abcdef", Some("red"), "InvalidParameter"),
        ("/items/7?ratio=1.01", Some("red"), "InvalidParameter"),
        ("/items/7?flag=yes", Some("red"), "InvalidParameter"),
    ] {
        let headers: Vec<(&str, &str)> = color.iter().map(|c| ("X-Color", *c)).collect();
        let r = send(Method::GET, &kg.url(path), &headers, "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert_eq!(r.json()["code"], code, "{path}: {}", r.text());
    }

    // A query parameter sent in the back-end path, percent-encoded there.
    let r = get(&kg.url("/users/u1/orders?region=eu%2Fwest&x=1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["path"], "/r/eu%2Fwest/u/u1");
    assert_eq!(j["query"], "x=1");
    let r = get(&kg.url("/users/u1/orders")).await;
    assert_eq!(r.json()["code"], "MissingParameter");

    // Checked before authentication: an unsigned request missing a parameter is
    // a 400, not a 401; with the parameter it reaches the signature check.
    let r = get(&kg.url("/signed")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["code"], "MissingParameter");
    assert_eq!(
        get(&kg.url("/signed?must=1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A signed request with the parameter passes.
    let host = kg.addr.to_string();
    let req = signers::Req {
        query: "must=1",
        ..signers::Req::get(&host, "/signed")
    };
    let h = signers::hmac_headers(&req, "AKIDp", "p-secret", std::time::SystemTime::now());
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = send(Method::GET, &kg.url("/signed?must=1"), &hs, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A cloud-API (tc3) route answers in its own style: HTTP 200 and an envelope.
    let r = get(&kg.url("/cloud")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Response"]["Error"]["Code"], "MissingParameter");
}

#[test]
fn check_reports_bad_parameter_declarations_with_their_location() {
    let (ok, err) = check(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "a"
path = "/a/{id}"
[[services.apis.params]]
name = "id"
in = "path"
type = "integer"
[[services.apis.params]]
name = "n"
type = "int"
min = 5
max = 1
[[services.apis.params]]
name = "x"
in = "path"
[[services.apis.params]]
name = "s"
max_length = 3
default = "toolong"
[[services.apis.params]]
name = "m"
backend_in = "path"
[services.apis.backend]
url = "http://127.0.0.1:1"
const_query = { k = "${param.nope}" }
"#,
    );
    assert!(!ok);
    for want in [
        "services (s) / apis (a): params[0] (id): type \"integer\" is not one of",
        "params[1] (n): min is greater than max",
        "params[2] (x): path parameter \"x\" is not captured",
        "params[3] (s): default \"toolong\" fails its own checks",
        "params[4] (m): backend_in = \"path\": the back-end path must hold {m}",
        "const_query \"k\": ${param.nope} names no declared parameter",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

fn plans_config() -> String {
    r#"
[[keys]]
id = "AKIDsvc"
secret = "svc-secret"
[[keys]]
id = "AKIDapi"
secret = "api-secret"
[[usage_plans]]
name = "svcplan"
quota = 100
keys = ["AKIDsvc"]
[[usage_plans]]
name = "apiplan"
quota = 5
keys = ["AKIDapi"]
[[services]]
name = "s"
usage_plans = ["svcplan"]
[[services.apis]]
name = "plain"
path = "/plain"
auth = "hmac"
[services.apis.backend]
type = "mock"
body = "plain"
[[services.apis]]
name = "bound"
path = "/bound"
auth = "hmac"
usage_plans = ["apiplan"]
[services.apis.backend]
type = "mock"
body = "bound"
"#
    .to_string()
}

async fn signed(addr: std::net::SocketAddr, path: &str, id: &str, secret: &str) -> Reply {
    let host = addr.to_string();
    let nonce = signers::nonce().to_string();
    let extra = [("X-Nonce", nonce.as_str())];
    let req = signers::Req {
        headers: &extra,
        ..signers::Req::get(&host, path)
    };
    let h = signers::hmac_headers(&req, id, secret, std::time::SystemTime::now());
    let mut hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    hs.push(("X-Nonce", &nonce));
    send(Method::GET, &format!("http://{addr}{path}"), &hs, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_plans_bound_to_an_api_and_rate_limit_used() {
    let kg = Keygate::start(&plans_config()).await;
    // The API-bound plan's key is refused where only the service's plan applies.
    let r = signed(kg.addr, "/plain", "AKIDapi", "api-secret").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // The service's plan still covers the API with its own plan.
    let r = signed(kg.addr, "/bound", "AKIDsvc", "svc-secret").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-usageplan-id"), Some("svcplan"));
    // The API's plan: quota 5, counted, with Used alongside Remaining.
    for i in 1..=5u64 {
        let r = signed(kg.addr, "/bound", "AKIDapi", "api-secret").await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.text());
        assert_eq!(r.header("x-usageplan-id"), Some("apiplan"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-used"), Some(i.to_string().as_str()));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((5 - i).to_string().as_str())
        );
    }
    let r = signed(kg.addr, "/bound", "AKIDapi", "api-secret").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-used"), Some("5"));
}

#[test]
fn check_reports_api_plan_conflicts() {
    let cfg = plans_config().replace(
        "usage_plans = [\"apiplan\"]",
        "usage_plans = [\"apiplan\", \"svcplan\", \"ghost\"]",
    );
    let (ok, err) = check(&cfg);
    assert!(!ok);
    for want in [
        "services (s) / apis (bound): usage plan \"svcplan\" is bound to the service already",
        "services (s) / apis (bound): usage plan \"ghost\" is not defined",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_targets_and_websocket_apis() {
    let be = spawn_backend().await;
    let dead = dead_port().await;
    let cfg = format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "weighted"
path = "/w"
[services.apis.backend]
targets = [{{ url = "http://{be}", weight = 3 }}, {{ url = "http://{dead}", weight = 0 }}]
[[services.apis]]
name = "ws"
path = "/ws"
[services.apis.backend]
type = "websocket"
url = "ws://{be}"
"#
    );
    let kg = Keygate::start(&cfg).await;
    // The disabled target is never tried: every request reaches the live one.
    for i in 0..8 {
        let r = get(&kg.url("/w")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
    }
    // A ws:// back end is spoken to over plain HTTP (the upgrade is HTTP/1.1).
    let r = get(&kg.url("/ws")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["path"], "/ws");
    // Websocket APIs take GET only.
    let r = send(Method::POST, &kg.url("/ws"), &[], "x").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(r.json()["code"], "InvalidParameterValue.InvalidWSMethod");
}

#[test]
fn check_reports_backend_target_and_websocket_problems() {
    let (ok, err) = check(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "zero"
path = "/z"
[services.apis.backend]
targets = [{ url = "http://127.0.0.1:1", weight = 0 }]
[[services.apis]]
name = "plainws"
path = "/p"
[services.apis.backend]
url = "ws://127.0.0.1:1"
[[services.apis]]
name = "wspost"
path = "/wp"
methods = ["POST"]
[services.apis.backend]
type = "websocket"
url = "wss://127.0.0.1:1"
"#,
    );
    assert!(!ok);
    for want in [
        "services (s) / apis (zero) / backend: every target has weight 0 (disabled)",
        "services (s) / apis (plainws) / backend: back-end URL \"ws://127.0.0.1:1\": ws:// and wss:// are for type = \"websocket\"",
        "services (s) / apis (wspost) / backend: type = \"websocket\" takes GET only, not POST",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_context_reaches_the_back_end() {
    let be = spawn_backend().await;
    let cfg = format!(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"t\"\npath = \"/t\"\n[services.apis.backend]\nurl = \"http://{be}\"\n"
    );
    let kg = Keygate::start(&cfg).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = send(
        Method::GET,
        &kg.url("/t"),
        &[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE")],
        "",
    )
    .await;
    let h = &r.json()["headers"];
    let tp = h["traceparent"].as_str().expect("traceparent").to_string();
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp}");
    assert_eq!(
        (f[0], f[1], f[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_eq!(f[2].len(), 16);
    assert_ne!(f[2], "00f067aa0ba902b7", "a new span id per hop");
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");

    // None, or a malformed one: a fresh trace, two requests two traces.
    let mut seen = vec![];
    for sent in [None, Some("00-xyz-00f067aa0ba902b7-01")] {
        let headers: Vec<(&str, &str)> = sent
            .iter()
            .map(|v| ("traceparent", *v))
            .chain([("tracestate", "a=b")])
            .collect();
        let r = send(Method::GET, &kg.url("/t"), &headers, "").await;
        let h = &r.json()["headers"];
        let tp = h["traceparent"].as_str().expect("traceparent").to_string();
        let f: Vec<&str> = tp.split('-').collect();
        assert_eq!(f.len(), 4, "{tp}");
        assert_eq!((f[0], f[1].len(), f[2].len()), ("00", 32, 16), "{tp}");
        assert!(f[1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(h.get("tracestate").is_none(), "{h}");
        seen.push(f[1].to_string());
    }
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn front_protocols_and_https_redirect() {
    let be = spawn_backend().await;
    let cfg = format!(
        r#"
[[services]]
name = "forced"
https_redirect = true
[[services.apis]]
name = "r"
path = "/r"
[services.apis.backend]
url = "http://{be}"
[[services]]
name = "tlsonly"
protocols = ["https"]
[[services.apis]]
name = "t"
path = "/t"
[services.apis.backend]
url = "http://{be}"
[[services]]
name = "both"
[[services.apis]]
name = "b"
path = "/b"
[services.apis.backend]
url = "http://{be}"
"#
    );
    let kg = Keygate::start(&cfg).await;
    // GET: 301 to the same URL over https (no TLS listener configured: port 443).
    let r = get(&kg.url("/r/x?a=1&b=%2F")).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("https://127.0.0.1/r/x?a=1&b=%2F")
    );
    // Other methods: 308, so that the method and body are kept.
    let r = send(Method::POST, &kg.url("/r"), &[], "body").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://127.0.0.1/r"));
    // HTTPS only, without redirect: plain HTTP is refused.
    let r = get(&kg.url("/t")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["code"], "UnsupportedProtocol");
    // The default takes both.
    assert_eq!(get(&kg.url("/b")).await.status, StatusCode::OK);
}

#[test]
fn check_reports_protocol_problems() {
    let (ok, err) = check(
        r#"
[[services]]
name = "a"
protocols = ["http"]
https_redirect = true
[[services]]
name = "b"
protocols = ["ftp"]
[[services]]
name = "c"
protocols = []
[[services]]
name = "d"
https_redirect = true
[server.tls]
listen = ["127.0.0.1:0"]
"#,
    );
    assert!(!ok);
    for want in [
        "services (a): https_redirect needs \"https\" in protocols",
        "services (b): protocol \"ftp\" is not one of http, https",
        "services (c): protocols may not be empty",
        "services (d): https_redirect needs a fixed port",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_domain_path_mapping_to_environments() {
    let mock = |svc: &str| {
        format!("[[services.apis]]\nname = \"hello\"\npath = \"/hello\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"{svc}\"\n")
    };
    let cfg = format!(
        "[[services]]\nname = \"rel\"\nhosts = [\"api.test\"]\nenvironment = \"release\"\npath_mapping = \"/\"\n{}\
         [[services]]\nname = \"tst\"\nhosts = [\"api.test\"]\nenvironment = \"test\"\npath_mapping = \"/t\"\n{}\
         [[services]]\nname = \"plain\"\nenvironment = \"release\"\n{}",
        mock("rel"),
        mock("tst"),
        mock("plain"),
    );
    let kg = Keygate::start(&cfg).await;
    let on = |host: &'static str, path: &'static str| {
        let url = kg.url(path);
        async move { send(Method::GET, &url, &[("host", host)], "").await }
    };
    // On the custom domain, "/" reaches the release environment, "/t" the test one.
    let r = on("api.test", "/hello").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "rel".to_string()));
    let r = on("api.test", "/t/hello").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "tst".to_string()));
    // Elsewhere the environment prefix is as before.
    let r = on("other.test", "/release/hello").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "plain".to_string()));
    assert_eq!(
        on("other.test", "/hello").await.status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn check_reports_path_mapping_and_shared_host_problems() {
    let (ok, err) = check(
        r#"
[[services]]
name = "nohost"
environment = "release"
path_mapping = "/"
[[services]]
name = "noenv"
hosts = ["a.test"]
path_mapping = "/"
[[services]]
name = "deep"
hosts = ["b.test"]
environment = "release"
path_mapping = "/a/b"
[[services]]
name = "first"
hosts = ["c.test", "d.test"]
[[services]]
name = "second"
hosts = ["C.test."]
[[services]]
name = "rel1"
hosts = ["d.test"]
environment = "release"
path_mapping = "/r"
[[services]]
name = "rel2"
hosts = ["d.test"]
environment = "prepub"
path_mapping = "/r"
"#,
    );
    assert!(!ok);
    // d.test is shared by "first" (no prefix) and "rel1" (under /r): allowed.
    assert!(!err.contains("services (rel1)"), "{err}");
    for want in [
        "services (nohost): path_mapping needs hosts",
        "services (noenv): path_mapping needs an environment",
        "services (deep): path_mapping \"/a/b\" must be",
        "services (second): host \"C.test.\" is bound to service first already",
        "services (rel2): host \"d.test\" is bound to service rel1 already under /r",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// One HTTP/1.1 request over TLS (SNI `a.test`, trusting `root`); the raw answer.
async fn tls_request(addr: std::net::SocketAddr, root: &[u8], path: &str) -> String {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.test".to_string()).expect("name");
    let mut s = connector.connect(name, tcp).await.expect("handshake");
    let req = format!("GET {path} HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn https_redirect_points_at_the_tls_listener_which_serves_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).expect("cert");
    std::fs::write(dir.path().join("a.pem"), ck.cert.pem()).expect("write");
    std::fs::write(dir.path().join("a.key"), ck.key_pair.serialize_pem()).expect("write");
    let der = ck.cert.der().to_vec();
    // A fixed TLS port (the redirect names it): a free one, picked now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mock = |name: &str, path: &str| {
        format!("[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"{name}\"\n")
    };
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         [server.tls]\nlisten = [\"127.0.0.1:{port}\"]\n\
         [[server.tls.certs]]\nhosts = [\"a.test\"]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [[services]]\nname = \"forced\"\nhttps_redirect = true\n{}\
         [[services]]\nname = \"tlsonly\"\nprotocols = [\"https\"]\n{}\
         [[services]]\nname = \"plainonly\"\nprotocols = [\"http\"]\n{}",
        mock("forced", "/f"),
        mock("tlsonly", "/t"),
        mock("plainonly", "/p"),
    );
    let kg = Keygate::start_in(dir, &cfg).await;
    let tls = kg.running.https[0];
    assert_eq!(tls.port(), port);
    let r = send(Method::GET, &kg.url("/f?x=1"), &[("host", "a.test")], "").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    let location = format!("https://a.test:{port}/f?x=1");
    assert_eq!(r.header("location"), Some(location.as_str()));
    // Over TLS the same API answers, and the HTTPS-only one too.
    let out = tls_request(tls, &der, "/f?x=1").await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("forced"),
        "{out}"
    );
    let out = tls_request(tls, &der, "/t").await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("tlsonly"),
        "{out}"
    );
    // A plain-HTTP-only service refuses TLS requests.
    let out = tls_request(tls, &der, "/p").await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("UnsupportedProtocol"),
        "{out}"
    );
    assert_eq!(get(&kg.url("/p")).await.status, StatusCode::OK);
}
