//! The whole pipeline driven in process: a config compiled from TOML text by the
//! normal compiler into a snapshot, requests with in-memory bodies handed to
//! `Ctx::handle`, no listener in front. Back ends are the config's mock or the
//! echo server of tests/common on loopback.

mod common;
use bytes::Bytes;
use common::signers::{self, Req};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use keygate::config::compile;
use keygate::handler::{ConnInfo, Ctx};
use keygate::policy::limits::LimitState;
use keygate::state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

const HOST: &str = "api.test";
const GOLD: &str = "gold-secret";
const PLAIN: &str = "plain-secret";

fn config(be: SocketAddr) -> String {
    format!(
        r#"
[auth]
replay = "strict"
cloud_error_status = "http"

[[keys]]
id = "AKIDgold"
secret = "{GOLD}"
app = "shop"
[[keys]]
id = "AKIDplain"
secret = "{PLAIN}"

[[usage_plans]]
name = "gold"
keys = ["AKIDgold"]

[[plugins]]
name = "office"
type = "ip_control"
mode = "white"
ips = "10.0.0.0/8"
[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://app.example"]
allow_methods = ["GET", "POST"]
max_age = 600
[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "minute"
expire = 1
api_rate_limit = 2

[[services]]
name = "open"
[[services.apis]]
name = "office"
path = "/office/"
plugins = ["office"]
[services.apis.backend]
type = "mock"
body = "mocked"
[[services.apis]]
name = "limited"
path = "/limited/"
plugins = ["flow"]
[services.apis.backend]
type = "mock"
body = "mocked"
[[services.apis]]
name = "echo"
path = "/echo/"
plugins = ["web"]
[services.apis.backend]
type = "http"
url = "http://{be}"

[[services]]
name = "signed"
usage_plans = ["gold"]
[[services.apis]]
name = "hmac"
path = "/hmac/"
auth = "hmac"
plugins = ["web"]
[services.apis.response_headers]
set = {{ "X-Served-For" = "${{app}}" }}
[services.apis.backend]
type = "http"
url = "http://{be}"
[[services.apis]]
name = "tc3"
path = "/tc3/"
auth = "tc3"
tc3_service = "cvm"
[services.apis.backend]
type = "http"
url = "http://{be}"
"#
    )
}

/// A handler on a snapshot compiled from `toml`, as the server builds it.
struct Gate {
    ctx: Ctx,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Gate {
    async fn start() -> Gate {
        let be = common::spawn_backend().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = compile::parse(&config(be)).unwrap_or_else(|e| panic!("parse: {e:?}"));
        let state = State::new(dir.path(), 1024, LimitState::in_memory());
        let gw = compile::compile(&raw, "in-process".into(), &state)
            .unwrap_or_else(|e| panic!("compile: {e:?}"));
        Gate {
            ctx: Ctx::new(gw, Arc::new(state)),
            _dir: dir,
        }
    }

    async fn call(&self, req: Request<Full<Bytes>>, peer: &str) -> Answer {
        let conn = ConnInfo {
            peer: format!("{peer}:40000").parse().expect("peer"),
            tls: false,
        };
        let (parts, body) = self.ctx.handle(req, conn).await.into_parts();
        let body = body.collect().await.expect("answer body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        // As a client frames a body: a head without framing announces none.
        if !body.is_empty() {
            req = req.header("content-length", body.len());
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("request");
        self.call(req, "127.0.0.1").await
    }
}

fn pairs(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hmac_get(path: &str, query: &str, id: &str, secret: &str) -> Vec<(String, String)> {
    let req = Req {
        query,
        ..Req::get(HOST, path)
    };
    signers::hmac_headers(&req, id, secret, SystemTime::now())
}

#[tokio::test]
async fn unknown_path_is_refused_with_404_and_a_request_id() {
    let g = Gate::start().await;
    let r = g.send(Method::GET, "/nowhere", &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(r.header("x-request-id").is_some_and(|v| v.len() == 32));
    // A front proxy's well-formed id is kept.
    let r = g
        .send(
            Method::GET,
            "/nowhere",
            &pairs(&[("x-request-id", "front-1")]),
            "",
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("front-1"));
}

#[tokio::test]
async fn ip_control_refuses_addresses_outside_the_list() {
    let g = Gate::start().await;
    let r = g.send(Method::GET, "/office/x", &[], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let req = Request::get("/office/x")
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = g.call(req, "10.1.2.3").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "mocked");
}

#[tokio::test]
async fn hmac_request_is_forwarded_with_its_identity_and_decorated() {
    let g = Gate::start().await;
    let mut h = hmac_get("/hmac/orders", "page=2", "AKIDgold", GOLD);
    h.push(("origin".into(), "https://app.example".into()));
    let r = g.send(Method::GET, "/hmac/orders?page=2", &h, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["path"], "/hmac/orders");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["headers"]["x-keygate-key-id"], "AKIDgold");
    assert_eq!(seen["headers"]["x-keygate-app"], "shop");
    assert_eq!(seen["headers"]["x-keygate-usage-plan"], "gold");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    // The answer: response rules, the usage plan, CORS, the request id.
    assert_eq!(r.header("x-served-for"), Some("shop"));
    assert_eq!(r.header("x-usageplan-id"), Some("gold"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("x-request-id"),
        seen["headers"]["x-request-id"].as_str()
    );
}

#[tokio::test]
async fn hmac_bad_signature_is_refused_and_still_decorated_with_cors() {
    let g = Gate::start().await;
    let mut h = hmac_get("/hmac/orders", "", "AKIDgold", "not-the-secret");
    h.push(("origin".into(), "https://app.example".into()));
    let r = g.send(Method::GET, "/hmac/orders", &h, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r.header("x-served-for").is_none(), "rules are for answers");
}

/// Two `Origin` headers are ambiguous: the answer grants neither (the browser
/// sends one; a second is someone else's doing).
#[tokio::test]
async fn two_origins_get_no_cors_grant() {
    let g = Gate::start().await;
    let mut h = hmac_get("/hmac/orders", "", "AKIDgold", "not-the-secret");
    // Both allowed one by one (the same one twice).
    h.push(("origin".into(), "https://app.example".into()));
    h.push(("origin".into(), "https://app.example".into()));
    let r = g.send(Method::GET, "/hmac/orders", &h, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn hmac_digest_of_the_body_is_checked_after_buffering() {
    let g = Gate::start().await;
    let body = r#"{"id":7}"#;
    let req = Req {
        method: "POST",
        body: body.as_bytes(),
        ..Req::get(HOST, "/hmac/orders")
    };
    let h = signers::hmac_headers_full(&req, "AKIDgold", GOLD, SystemTime::now());
    let r = g.send(Method::POST, "/hmac/orders", &h, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"], body);
    // The same head over another body.
    let h = signers::hmac_headers_full(&req, "AKIDgold", GOLD, SystemTime::now());
    let r = g
        .send(Method::POST, "/hmac/orders", &h, r#"{"id":8}"#)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}

#[tokio::test]
async fn tc3_signature_over_the_body_is_accepted_and_refused() {
    let g = Gate::start().await;
    let body = r#"{"Limit":1}"#;
    let req = Req {
        method: "POST",
        body: body.as_bytes(),
        ..Req::get(HOST, "/tc3/")
    };
    let h = signers::tc3_headers(&req, "AKIDgold", GOLD, "cvm", SystemTime::now());
    let r = g.send(Method::POST, "/tc3/", &h, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["body"], body);
    assert_eq!(seen["headers"]["x-keygate-key-id"], "AKIDgold");
    // Signed for one body, sent with another.
    let h = signers::tc3_headers(&req, "AKIDgold", GOLD, "cvm", SystemTime::now());
    let r = g.send(Method::POST, "/tc3/", &h, r#"{"Limit":2}"#).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // In the cloud API's error style, as tc3 clients read it.
    assert_eq!(
        r.json()["Response"]["Error"]["Code"],
        "AuthFailure.SignatureFailure"
    );
}

#[tokio::test]
async fn replayed_signature_is_refused() {
    let g = Gate::start().await;
    let h = hmac_get("/hmac/once", "", "AKIDgold", GOLD);
    let r = g.send(Method::GET, "/hmac/once", &h, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = g.send(Method::GET, "/hmac/once", &h, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("replay"), "{}", r.text());
}

#[tokio::test]
async fn usage_plan_takes_only_its_keys() {
    let g = Gate::start().await;
    let h = hmac_get("/hmac/x", "", "AKIDplain", PLAIN);
    let r = g.send(Method::GET, "/hmac/x", &h, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["code"], "UnauthorizedOperation");
    let h = hmac_get("/hmac/x", "", "AKIDgold", GOLD);
    let r = g.send(Method::GET, "/hmac/x", &h, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-usageplan-id"), Some("gold"));
}

#[tokio::test]
async fn rate_limit_refusal_carries_its_headers() {
    let g = Gate::start().await;
    for left in ["1", "0"] {
        let r = g.send(Method::GET, "/limited/x", &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
    }
    let r = g.send(Method::GET, "/limited/x", &[], "").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["code"], "RequestLimitExceeded");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn cors_preflight_is_answered_without_authentication_or_forwarding() {
    let g = Gate::start().await;
    let preflight = pairs(&[
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ]);
    for path in ["/hmac/orders", "/echo/orders"] {
        let r = g.send(Method::OPTIONS, path, &preflight, "").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}: {}", r.text());
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert!(
            r.body.is_empty(),
            "{path}: not forwarded to the echo back end"
        );
    }
}

#[tokio::test]
async fn streamed_body_reaches_the_loopback_back_end() {
    let g = Gate::start().await;
    let body = "x".repeat(100_000);
    let r = g
        .send(
            Method::POST,
            "/echo/upload?a=1",
            &pairs(&[("content-type", "text/plain")]),
            &body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/echo/upload");
    assert_eq!(seen["query"], "a=1");
    assert_eq!(seen["body_len"], 100_000);
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], HOST);
}
