//! JWT breadth end to end: a JWKS served by a local hyper server on loopback
//! (fetched at start, refreshed, last good set kept), tokens from a cookie or a
//! query parameter (stripped before forwarding), `required_claims`.

mod common;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

// Ed25519 test keys (openssl genpkey, for these tests only).
const KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOIrWyakZ4rjU1LVE9XAUOV7hePvFGv4GHXq3am8qdtn
-----END PRIVATE KEY-----";
const KEY_A_X: &str = "MxOFv3bcm9v8K_zr4K9GwHAnC4-jJ7g6d42k5QXBngE";
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIC5czOGoJE82FDrM00b6DgzhKlpBP3YudvgQvOjm/TEL
-----END PRIVATE KEY-----";
const KEY_B_X: &str = "jvdq0DWBYdEX5V3ZFg9hiqlIm0YrcpBM4hq6f8Nehtk";

fn jwks(kid: &str, x: &str) -> String {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}]})
        .to_string()
}

fn token(kid: &str, pem: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed key");
    encode(&header, &claims, &key).expect("sign")
}

fn claims(scope: &str) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    json!({"sub": "alice", "scope": scope, "iat": now, "exp": now + 600})
}

/// What the JWKS server answers: (status, body), changed by the test.
type Answer = Arc<Mutex<(u16, String)>>;

async fn jwks_server(answer: Answer) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (status, body) = answer.lock().expect("lock").clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn bearer(kg: &Keygate, t: &str) -> Reply {
    let auth = format!("Bearer {t}");
    send(
        Method::GET,
        &kg.url("/api/x"),
        &[("authorization", auth.as_str())],
        "",
    )
    .await
}

/// Polls until `f` gives `want` (a JWKS refresh happens in the background).
async fn eventually(kg: &Keygate, t: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bearer(kg, t).await;
        if r.status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} (want {want}): {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(answer: &Answer) -> Keygate {
    let jwks_addr = jwks_server(answer.clone()).await;
    let be = spawn_backend().await;
    Keygate::start(&config(jwks_addr, be)).await
}

fn config(jwks_addr: SocketAddr, be: SocketAddr) -> String {
    format!(
        r#"
[[jwt_providers]]
name = "idp"
jwks_url = "http://{jwks_addr}/jwks.json"
jwks_refresh = "1s"
jwks_timeout = "2s"
token_cookie = "session"
token_query = "access_token"
required_claims = {{ scope = "orders:read" }}

[[services]]
name = "svc"
[[services.apis]]
name = "api"
path = "/api/"
auth = "jwt"
jwt_provider = "idp"
[services.apis.backend]
url = "http://{be}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_url_is_fetched_refreshed_and_the_last_good_set_kept() {
    let answer: Answer = Arc::new(Mutex::new((200, jwks("a", KEY_A_X))));
    let kg = start(&answer).await;
    let a = token("a", KEY_A, claims("orders:read"));
    let b = token("b", KEY_B, claims("orders:read"));

    // Fetched at start: the first request already passes.
    let r = bearer(&kg, &a).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-keygate-key-id"], "alice");
    let r = bearer(&kg, &b).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The IdP fails, then serves garbage: the last good set stays in use.
    *answer.lock().expect("lock") = (500, "oops".into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bearer(&kg, &a).await.status, StatusCode::OK);
    *answer.lock().expect("lock") = (200, "{\"keys\": 7}".into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bearer(&kg, &a).await.status, StatusCode::OK);

    // Rotation: key b replaces key a.
    *answer.lock().expect("lock") = (200, jwks("b", KEY_B_X));
    eventually(&kg, &b, StatusCode::OK).await;
    eventually(&kg, &a, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_from_cookie_or_query_is_stripped_and_claims_are_required() {
    let answer: Answer = Arc::new(Mutex::new((200, jwks("a", KEY_A_X))));
    let kg = start(&answer).await;
    let good = token("a", KEY_A, claims("profile orders:read"));

    let cookie = format!("theme=dark; session={good}; lang=en");
    let r = send(
        Method::GET,
        &kg.url("/api/x"),
        &[("cookie", cookie.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["headers"]["cookie"], "theme=dark; lang=en", "{j}");
    assert_eq!(j["headers"]["x-keygate-key-id"], "alice");

    let r = get(&kg.url(&format!("/api/x?a=1&access_token={good}&b=2"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["query"], "a=1&b=2");

    let r = get(&kg.url("/api/x?a=1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "MissingParameter");

    // Missing scope: refused with the token code.
    let narrow = token("a", KEY_A, claims("profile"));
    let r = bearer(&kg, &narrow).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "AuthFailure.TokenFailure");
    assert!(r.text().contains("scope"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_the_idp_is_down_keeps_the_last_good_keys() {
    let answer: Answer = Arc::new(Mutex::new((200, jwks("a", KEY_A_X))));
    let jwks_addr = jwks_server(answer.clone()).await;
    let be = spawn_backend().await;
    let kg = Keygate::start(&config(jwks_addr, be)).await;
    let a = token("a", KEY_A, claims("orders:read"));
    assert_eq!(bearer(&kg, &a).await.status, StatusCode::OK);

    *answer.lock().expect("lock") = (503, String::new());
    // Another route, so that the reload builds a new snapshot with a new provider.
    kg.write_config(&format!(
        "{}\n[[services.apis]]\nname = \"more\"\npath = \"/more/\"\n[services.apis.backend]\ntype = \"mock\"\n",
        config(jwks_addr, be)
    ));
    let (status, text) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(get(&kg.url("/more/")).await.status, StatusCode::OK);
    let r = bearer(&kg, &a).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
