//! `auth = "external"` end to end over loopback sockets, against an
//! authorization service written here with hyper that records every request.

mod common;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the auth service received: method, headers, body length.
type Seen = Arc<Mutex<Vec<(Method, HeaderMap, usize)>>>;

/// The auth service decides by the client's `X-Token`:
/// `ok` → 200 with `X-User: u1` (and `X-Not-Copied`), `alice` / `ghost` →
/// 200 naming that key id, `deny` → 403 with a JSON body, `slow` → 200 after
/// 2s, anything else → 401 without a body.
async fn spawn_auth_service() -> (SocketAddr, Seen) {
    spawn_auth_service_on(None).await
}

/// The same service over TLS, with a certificate for `localhost`; returns the
/// CA (its own certificate) as PEM too.
async fn spawn_tls_auth_service() -> (SocketAddr, Seen, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (addr, seen) = spawn_auth_service_on(Some(acceptor)).await;
    (addr, seen, ck.cert.pem())
}

async fn spawn_auth_service_on(tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = l.accept().await else {
                continue;
            };
            let s = s.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| decide(req, s.clone()));
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => server.serve_connection(TokioIo::new(conn), svc).await,
                    Some(a) => match a.accept(conn).await {
                        Ok(conn) => server.serve_connection(TokioIo::new(conn), svc).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    (addr, seen)
}

async fn decide(
    req: hyper::Request<Incoming>,
    seen: Seen,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let token = parts
        .headers
        .get("x-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Ok(mut s) = seen.lock() {
        s.push((parts.method.clone(), parts.headers.clone(), body.len()));
    }
    let answer = |status: u16, headers: &[(&str, &str)], body: &'static str| {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                r.headers_mut().insert(k, v);
            }
        }
        Ok(r)
    };
    match token.as_str() {
        "ok" => answer(200, &[("x-user", "u1"), ("x-not-copied", "n")], ""),
        "alice" => answer(200, &[("x-caller", "alice")], ""),
        "ghost" => answer(200, &[("x-caller", "ghost")], ""),
        "off" => answer(200, &[("x-caller", "off")], ""),
        "partner" => answer(200, &[("x-app", "partner")], ""),
        "deny" => answer(
            403,
            &[("content-type", "application/json")],
            r#"{"error":"forbidden by policy"}"#,
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            answer(200, &[], "")
        }
        _ => answer(401, &[], ""),
    }
}

fn seen_count(seen: &Seen) -> usize {
    seen.lock().map(|s| s.len()).unwrap_or(0)
}

const KEYS: &str = r#"
[[keys]]
id = "alice"
secret = "sk-alice-0123456789"
app = "shop"
[[keys]]
id = "off"
secret = "sk-off-0123456789"
enabled = false
[[usage_plans]]
name = "gold"
quota = 2
keys = ["alice"]
"#;

async fn gateway(auth: SocketAddr, extra: &str) -> Keygate {
    let be = spawn_backend().await;
    Keygate::start(&format!(
        r#"
{KEYS}
[[services]]
name = "svc"
[[services.apis]]
name = "ext"
path = "/ext/"
auth = "external"
[services.apis.external_auth]
url = "http://{auth}/check"
timeout = "300ms"
request_headers = ["X-Token"]
response_headers = ["X-User"]
key_id_header = "X-Caller"
app_header = "X-App"
{extra}
[services.apis.backend]
type = "http"
url = "http://{be}"

[[services]]
name = "planned"
usage_plans = ["gold"]
[[services.apis]]
name = "ext"
path = "/planned/"
auth = "external"
[services.apis.external_auth]
url = "http://{auth}/check"
request_headers = ["X-Token"]
key_id_header = "X-Caller"
[services.apis.backend]
type = "http"
url = "http://{be}"
"#
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn admits_sends_the_request_facts_and_copies_answer_headers() {
    let (auth, seen) = spawn_auth_service().await;
    let kg = gateway(auth, "").await;
    let r = send(
        Method::POST,
        &kg.url("/ext/a/./%62?x=1&y=%20"),
        &[
            ("x-token", "ok"),
            ("x-user", "forged"),
            ("x-other", "not sent"),
        ],
        "request body",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(
        j["headers"]["x-user"], "u1",
        "copied, the client's replaced"
    );
    assert!(j["headers"].get("x-not-copied").is_none(), "{j}");
    assert_eq!(
        j["body"], "request body",
        "the back end still gets the body"
    );

    let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(s.len(), 1);
    let (method, h, body_len) = &s[0];
    assert_eq!(method, Method::GET);
    assert_eq!(*body_len, 0, "the body is never sent to the auth service");
    let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(hv("x-forwarded-method").as_deref(), Some("POST"));
    assert_eq!(hv("x-forwarded-uri").as_deref(), Some("/ext/a/b?x=1&y=%20"));
    let host = kg.url("").trim_start_matches("http://").to_string();
    assert_eq!(hv("x-forwarded-host"), Some(host));
    assert_eq!(hv("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(hv("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(hv("x-token").as_deref(), Some("ok"));
    assert!(hv("x-other").is_none(), "only the named client headers");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_carry_the_services_status_and_small_body() {
    let (auth, _seen) = spawn_auth_service().await;
    let kg = gateway(auth, "").await;
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "deny")], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "forbidden by policy");

    // No body: the API's error style, with the service's status.
    let r = get(&kg.url("/ext/x")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "AuthFailure.TokenFailure");

    // Both count as authentication refusals, not as valid calls.
    let m = get(&format!("http://{}/metrics", kg.admin)).await.text();
    for want in [
        "keygate_frontend_errors_total{route=\"svc/ext\",reason=\"auth\"} 2",
        "keygate_valid_calls_total{route=\"svc/ext\"} 0",
        "keygate_requests_total{route=\"svc/ext\",code=\"403\"} 1",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_key_gets_its_identity_plan_and_quota() {
    let (auth, _seen) = spawn_auth_service().await;
    let kg = gateway(auth, "").await;
    for _ in 0..2 {
        let r = send(
            Method::GET,
            &kg.url("/planned/x"),
            &[("x-token", "alice")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let j = r.json();
        assert_eq!(j["headers"]["x-keygate-key-id"], "alice");
        assert_eq!(j["headers"]["x-keygate-app"], "shop");
        assert_eq!(j["headers"]["x-keygate-usage-plan"], "gold");
        assert_eq!(r.header("x-usageplan-id"), Some("gold"));
    }
    let r = send(
        Method::GET,
        &kg.url("/planned/x"),
        &[("x-token", "alice")],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "quota 2: {}",
        r.text()
    );

    // A key id that is not in [[keys]] is refused.
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "ghost")], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["code"], "AuthFailure.SecretIdNotFound");
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "off")], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["code"], "AuthFailure.InvalidSecretId");
    // An app alone identifies the caller as that app.
    let r = send(
        Method::GET,
        &kg.url("/ext/x"),
        &[("x-token", "partner")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-keygate-app"], "partner");
    assert_eq!(r.json()["headers"]["x-keygate-key-id"], "partner");
    // On a service binding plans, an admission naming no key passes unplanned.
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "ok")], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["headers"].get("x-keygate-key-id").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_503_and_unreachable_may_be_allowed() {
    let (auth, _seen) = spawn_auth_service().await;
    let kg = gateway(auth, "").await;
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "slow")], "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "external authorization service unavailable"
    );

    let dead = dead_port().await;
    let deny = gateway(dead, "").await;
    let r = send(Method::GET, &deny.url("/ext/x"), &[("x-token", "ok")], "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());

    let allow = gateway(dead, "on_error = \"allow\"").await;
    let r = send(
        Method::GET,
        &allow.url("/ext/x"),
        &[("x-token", "ok"), ("x-user", "forged")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.json()["headers"].get("x-user").is_none(),
        "a client's copy of a copied header never passes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admissions_are_cached_by_the_headers_sent() {
    let (auth, seen) = spawn_auth_service().await;
    let kg = gateway(auth, "cache_ttl = \"30s\"").await;
    for _ in 0..2 {
        let r = send(Method::GET, &kg.url("/ext/x?a=1"), &[("x-token", "ok")], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["headers"]["x-user"], "u1");
    }
    assert_eq!(
        seen_count(&seen),
        1,
        "the second answer came from the cache"
    );
    // Another path is another question; refusals are never cached.
    let r = send(Method::GET, &kg.url("/ext/x?a=2"), &[("x-token", "ok")], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(seen_count(&seen), 2);
    for _ in 0..2 {
        let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "deny")], "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(seen_count(&seen), 4);
}

#[test]
fn check_reports_external_auth_mistakes_with_locations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    let backend = "[services.apis.backend]\ntype = \"mock\"\n";
    std::fs::write(
        &path,
        format!(
            r#"
[[services]]
name = "svc"
[[services.apis]]
name = "bad"
path = "/bad/"
auth = "external"
[services.apis.external_auth]
url = "ftp://auth.example"
timeout = "0ms"
on_error = "maybe"
request_headers = ["X-Forwarded-Uri"]
response_headers = ["X-Keygate-Key-Id", "bad name"]
{backend}
[[services.apis]]
name = "missing"
path = "/missing/"
auth = "external"
{backend}
[[services.apis]]
name = "stray"
path = "/stray/"
[services.apis.external_auth]
url = "http://127.0.0.1:9/"
{backend}[[services.apis]]
name = "noca"
path = "/noca/"
auth = "external"
[services.apis.external_auth]
url = "https://127.0.0.1:9/"
ca_file = "missing-ca.pem"
{backend}
"#
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run keygate check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "services (svc) / apis (bad) / external_auth: url \"ftp://auth.example\" must be an http:// or https:// URL",
        "services (svc) / apis (bad) / external_auth: timeout must be at least 1ms",
        "services (svc) / apis (bad) / external_auth: on_error \"maybe\" is not one of deny, allow",
        "services (svc) / apis (bad) / external_auth: request_headers: \"X-Forwarded-Uri\" is a header keygate sets",
        "services (svc) / apis (bad) / external_auth: response_headers: \"X-Keygate-Key-Id\" is a header keygate sets",
        "services (svc) / apis (bad) / external_auth: response_headers: \"bad name\" is not a header name",
        "services (svc) / apis (missing): auth = \"external\" needs [services.apis.external_auth]",
        "services (svc) / apis (stray): external_auth is only used with auth = \"external\"",
        "services (svc) / apis (noca) / external_auth: ca_file: cannot read CA file",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_auth_service_is_reached_with_its_ca_file() {
    let (auth, seen, ca) = spawn_tls_auth_service().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("auth-ca.pem"), ca).expect("write ca");
    let be = spawn_backend().await;
    let kg = Keygate::start_in(
        dir,
        &format!(
            r#"
[[services]]
name = "svc"
[[services.apis]]
name = "ext"
path = "/ext/"
auth = "external"
[services.apis.external_auth]
url = "https://localhost:{port}/check"
ca_file = "auth-ca.pem"
request_headers = ["X-Token"]
response_headers = ["X-User"]
[services.apis.backend]
type = "http"
url = "http://{be}"
"#,
            port = auth.port()
        ),
    )
    .await;
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "ok")], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user"], "u1");
    let r = send(Method::GET, &kg.url("/ext/x"), &[("x-token", "deny")], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(seen_count(&seen), 2);
}
