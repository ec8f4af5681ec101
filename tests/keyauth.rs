//! `auth = "key"`, caller access lists, header rules and custom refusals, end
//! to end over loopback sockets.

mod common;
use common::signers::{self, Req};
use common::*;
use http::{Method, StatusCode};
use std::time::SystemTime;

fn http_backend(be: std::net::SocketAddr) -> String {
    format!("[services.apis.backend]\ntype = \"http\"\nurl = \"http://{be}\"\n")
}

const KEYS: &str = r#"
[[keys]]
id = "alice"
secret = "sk-alice-0123456789"
app = "shop"
[[keys]]
id = "bob"
secret = "sk-bob-0123456789"
app = "shop"
[[keys]]
id = "carol"
secret = "sk-carol-0123456789"
app = "partner"
[[keys]]
id = "off"
secret = "sk-off-0123456789"
enabled = false
"#;

fn code(r: &Reply) -> String {
    r.json()["code"].as_str().unwrap_or("").to_string()
}

async fn key_gateway() -> Keygate {
    let be = spawn_backend().await;
    let http = http_backend(be);
    Keygate::start(&format!(
        r#"
[auth.key]
key_query = "apikey"
{KEYS}
[[usage_plans]]
name = "gold"
quota = 3
keys = ["alice"]
[[usage_plans]]
name = "silver"
keys = ["bob", "off"]

[[services]]
name = "svc"
usage_plans = ["gold", "silver"]
[[services.apis]]
name = "key"
path = "/key/"
auth = "key"
{http}
[[services.apis]]
name = "custom-header"
path = "/custom/"
auth = "key"
key_header = "X-Partner-Token"
key_query = "token"
{http}
"#
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_from_header_and_query_is_stripped_and_identifies_the_caller() {
    let kg = key_gateway().await;

    let r = send(
        Method::GET,
        &kg.url("/key/orders?x=1"),
        &[
            ("x-api-key", "sk-bob-0123456789"),
            ("x-keygate-key-id", "forged"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    let h = &j["headers"];
    assert!(h.get("x-api-key").is_none(), "key header stripped: {j}");
    assert_eq!(h["x-keygate-key-id"], "bob");
    assert_eq!(h["x-keygate-app"], "shop");
    assert_eq!(h["x-keygate-usage-plan"], "silver");
    assert_eq!(j["query"], "x=1");
    assert_eq!(r.header("x-usageplan-id"), Some("silver"));

    // The query parameter, removed before forwarding; the rest kept as sent.
    let r = get(&kg.url("/key/orders?a=%20b&apikey=sk-bob-0123456789&c=d")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["query"], "a=%20b&c=d");
    assert_eq!(j["headers"]["x-keygate-key-id"], "bob");

    // A per-API header and query name; the default header is not read there.
    let r = send(
        Method::GET,
        &kg.url("/custom/x"),
        &[("x-partner-token", "sk-bob-0123456789")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["headers"].get("x-partner-token").is_none());
    let r = get(&kg.url("/custom/x?token=sk-bob-0123456789")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["query"], "");
    let r = send(
        Method::GET,
        &kg.url("/custom/x"),
        &[("x-api-key", "sk-bob-0123456789")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "MissingParameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_refusals_plans_and_quota() {
    let kg = key_gateway().await;
    let with_key = |k: &'static str| [("x-api-key", k)];

    let r = get(&kg.url("/key/x")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "MissingParameter");
    let message = r.json()["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("x-api-key"), "{message}");

    let r = send(
        Method::GET,
        &kg.url("/key/x"),
        &with_key("sk-bob-012345678"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "AuthFailure.SecretIdNotFound");
    assert!(
        !r.text().contains("sk-bob"),
        "no secret echoed: {}",
        r.text()
    );

    let r = send(
        Method::GET,
        &kg.url("/key/x"),
        &with_key("sk-off-0123456789"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "AuthFailure.InvalidSecretId");

    // carol is in no plan of the service.
    let r = send(
        Method::GET,
        &kg.url("/key/x"),
        &with_key("sk-carol-0123456789"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(code(&r), "UnauthorizedOperation");

    // gold: a lifetime quota of 3, counted on the key the API key names.
    for i in 0..3 {
        let r = send(
            Method::GET,
            &kg.url("/key/x"),
            &with_key("sk-alice-0123456789"),
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(r.json()["headers"]["x-keygate-usage-plan"], "gold");
    }
    let r = send(
        Method::GET,
        &kg.url("/key/x"),
        &with_key("sk-alice-0123456789"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&r), "LimitExceeded");
    // bob's plan is untouched by alice's quota.
    let r = send(
        Method::GET,
        &kg.url("/key/x"),
        &with_key("sk-bob-0123456789"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_access_lists_refuse_in_the_schemes_shape() {
    let be = spawn_backend().await;
    let http = http_backend(be);
    let kg = Keygate::start(&format!(
        r#"
[auth]
replay = "off"
{KEYS}
[[services]]
name = "svc"
[[services.apis]]
name = "shop-only"
path = "/shop/"
auth = "key"
allow_apps = ["shop"]
deny_keys = ["bob"]
{http}
[[services.apis]]
name = "carol-or-shop"
path = "/either/"
auth = "key"
allow_keys = ["carol"]
allow_apps = ["shop"]
{http}
[[services.apis]]
name = "no-partner"
path = "/v3/"
auth = "openapi"
deny_apps = ["partner"]
{http}
"#
    ))
    .await;
    let call = |path: &'static str, key: &'static str| {
        let url = kg.url(path);
        async move { send(Method::GET, &url, &[("x-api-key", key)], "").await }
    };
    assert_eq!(
        call("/shop/x", "sk-alice-0123456789").await.status,
        StatusCode::OK
    );
    for key in ["sk-bob-0123456789", "sk-carol-0123456789"] {
        let r = call("/shop/x", key).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{key}");
        assert_eq!(code(&r), "UnauthorizedOperation");
        assert!(r.json()["request_id"].is_string());
    }
    for key in [
        "sk-alice-0123456789",
        "sk-bob-0123456789",
        "sk-carol-0123456789",
    ] {
        let r = call("/either/x", key).await;
        assert_eq!(r.status, StatusCode::OK, "{key}: {}", r.text());
    }

    // A signature scheme and its own error envelope.
    let h = kg.addr.to_string();
    let req = Req::get(&h, "/v3/user");
    let q = signers::openapi_params(&req, &[("openid", "1")], "alice", "sk-alice-0123456789");
    let r = get(&kg.url(&format!("/v3/user?{q}"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let q = signers::openapi_params(&req, &[("openid", "1")], "carol", "sk-carol-0123456789");
    let r = get(&kg.url(&format!("/v3/user?{q}"))).await;
    // Answered with HTTP 200 by default (`cloud_error_status`), the refusal in `ret`.
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["ret"], 1000005, "{j}");
    assert!(j["msg"].is_string(), "{j}");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_rules_apply_after_auth_and_never_touch_identity() {
    let be = spawn_backend().await;
    let http = http_backend(be);
    let kg = Keygate::start(&format!(
        r#"
{KEYS}
[[services]]
name = "svc"
[[services.apis]]
name = "rules"
path = "/rules/"
auth = "key"
{http}
[services.apis.request_headers]
set = {{ "X-Caller" = "${{key_id}}@${{app}}", "X-Trace" = "rid=${{request_id}} ip=${{client_ip}}" }}
add = {{ "X-Tag" = "gw" }}
remove = ["X-Debug"]
rename = {{ "X-Old" = "X-New" }}
[services.apis.response_headers]
set = {{ "X-Served-For" = "${{app}}", "Cache-Control" = "no-store" }}
remove = ["X-Internal"]

[[services.apis]]
name = "anon"
path = "/anon/"
{http}
[services.apis.request_headers]
set = {{ "X-Caller" = "[${{key_id}}]" }}
"#
    ))
    .await;
    let r = send(
        Method::GET,
        &kg.url("/rules/x"),
        &[
            ("x-api-key", "sk-alice-0123456789"),
            ("x-caller", "forged"),
            ("x-debug", "1"),
            ("x-old", "moved"),
            ("x-tag", "client"),
            ("x-request-id", "req-42"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    let h = &j["headers"];
    assert_eq!(h["x-caller"], "alice@shop", "{j}");
    assert_eq!(h["x-trace"], "rid=req-42 ip=127.0.0.1", "{j}");
    // The echo back end shows the last value of a repeated header: the added one.
    assert_eq!(h["x-tag"], "gw", "{j}");
    assert!(h.get("x-debug").is_none(), "{j}");
    assert!(h.get("x-old").is_none(), "{j}");
    assert_eq!(h["x-new"], "moved", "{j}");
    assert_eq!(h["x-keygate-key-id"], "alice");
    assert_eq!(r.header("x-served-for"), Some("shop"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Refusals are not decorated by response rules.
    let r = get(&kg.url("/rules/x")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("x-served-for").is_none());

    // No caller on an anonymous API: the variables are empty.
    let r = get(&kg.url("/anon/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["headers"]["x-caller"], "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_refusals_keep_the_envelope() {
    let be = spawn_backend().await;
    let http = http_backend(be);
    let kg = Keygate::start(&format!(
        r#"
[auth]
replay = "off"
{KEYS}
[[plugins]]
name = "blocked"
type = "ip_control"
mode = "black"
ips = "127.0.0.1"
rejected_code = 451
rejected_msg = "not from here"
[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "day"
api_rate_limit = 1
rejected_code = 503
rejected_msg = "slow down, friend"
[[plugins]]
name = "per-user"
type = "param_traffic_control"
default_window = 0
rejected_msg = "one per user"
[[plugins.strategies]]
name = "users"
strategy_weight = 1
parameters = [{{ type = "header", name = "x-user" }}]
rate_limit = 1
window = 60

[[services]]
name = "svc"
[[services.apis]]
name = "ip"
path = "/ip/"
plugins = ["blocked"]
{http}
[[services.apis]]
name = "flow"
path = "/flow/"
plugins = ["flow"]
{http}
[[services.apis]]
name = "param"
path = "/param/"
plugins = ["per-user"]
{http}
[[services.apis]]
name = "auth"
path = "/auth/"
auth = "key"
auth_rejected_code = 404
auth_rejected_msg = "nothing here"
deny_keys = ["bob"]
{http}
[[services.apis]]
name = "hmac"
path = "/hmac/"
auth = "hmac"
auth_rejected_msg = "sign it properly"
{http}
"#
    ))
    .await;
    let r = get(&kg.url("/ip/x")).await;
    assert_eq!(r.status.as_u16(), 451);
    let j = r.json();
    assert_eq!(j["code"], "UnauthorizedOperation", "{j}");
    assert_eq!(j["message"], "not from here", "{j}");
    assert!(j["request_id"].is_string());

    assert_eq!(get(&kg.url("/flow/x")).await.status, StatusCode::OK);
    let r = get(&kg.url("/flow/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let j = r.json();
    assert_eq!(j["code"], "RequestLimitExceeded", "{j}");
    assert_eq!(j["message"], "slow down, friend", "{j}");

    // Only the message: status 429 and the code stay.
    let user = |u: &'static str| [("x-user", u)];
    let r = send(Method::GET, &kg.url("/param/x"), &user("u1"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(Method::GET, &kg.url("/param/x"), &user("u1"), "").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let j = r.json();
    assert_eq!(j["code"], "RequestLimitExceeded", "{j}");
    assert_eq!(j["message"], "one per user", "{j}");
    let r = send(Method::GET, &kg.url("/param/x"), &user("u2"), "").await;
    assert_eq!(r.status, StatusCode::OK);

    for headers in [
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("x-api-key", "sk-bob-0123456789")],
    ] {
        let r = send(Method::GET, &kg.url("/auth/x"), &headers, "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{headers:?}");
        assert_eq!(r.json()["message"], "nothing here");
    }
    let r = send(
        Method::GET,
        &kg.url("/auth/x"),
        &[("x-api-key", "sk-alice-0123456789")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Only the message: the status and code stay the scheme's.
    let h = kg.addr.to_string();
    let req = Req::get(&h, "/hmac/x");
    let signed = signers::hmac_headers(&req, "alice", "bad-secret", SystemTime::now());
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = send(Method::GET, &kg.url("/hmac/x"), &hs, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "AuthFailure.SignatureFailure");
    assert_eq!(r.json()["message"], "sign it properly");
}

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run keygate check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_key_acl_header_and_refusal_mistakes_with_locations() {
    let backend = "[services.apis.backend]\ntype = \"mock\"\n";
    let (ok, err) = check(&format!(
        r#"
[auth.key]
key_query = "a=b"

[[keys]]
id = "k1"
secret = "same"
[[keys]]
id = "k2"
secret = "same"

[[plugins]]
name = "blocked"
type = "ip_control"
mode = "black"
ips = "10.0.0.1"
rejected_code = 99

[[services]]
name = "svc"
[[services.apis]]
name = "anon"
path = "/anon/"
allow_keys = ["k1"]
auth_rejected_code = 404
key_header = "X-Key"
{backend}
[[services.apis]]
name = "key"
path = "/key/"
auth = "key"
key_header = "bad header"
deny_keys = ["ghost"]
allow_apps = ["nobody"]
{backend}
[services.apis.request_headers]
set = {{ "X-Keygate-Key-Id" = "x", "X-Forwarded-For" = "1.2.3.4", "X-Ok" = "${{nope}}" }}
remove = ["X-Real-IP"]
[services.apis.response_headers]
rename = {{ "a" = "b" }}
"#
    ));
    assert!(!ok, "{err}");
    assert_eq!(
        err.matches("\"a=b\"").count(),
        1,
        "one problem, once: {err}"
    );
    for want in [
        "auth.key: key_query \"a=b\" must be a non-empty name",
        "keys (k2): same secret as key \"k1\"",
        "plugins (blocked): rejected_code 99 is not an HTTP status 200-599",
        "services (svc) / apis (anon): allow_apps, deny_apps, allow_keys and deny_keys need an auth scheme",
        "services (svc) / apis (anon): auth_rejected_code / auth_rejected_msg need an auth scheme",
        "services (svc) / apis (anon): key_header and key_query are only used with auth = \"key\"",
        "services (svc) / apis (key): key_header \"bad header\" is not a header name",
        "services (svc) / apis (key): deny_keys: key \"ghost\" is not defined in [[keys]]",
        "services (svc) / apis (key): allow_apps: no key in [[keys]] has app \"nobody\"",
        "services (svc) / apis (key) / request_headers: set: \"X-Keygate-Key-Id\" is set by keygate itself",
        "services (svc) / apis (key) / request_headers: set: \"X-Forwarded-For\" is set by keygate itself",
        "services (svc) / apis (key) / request_headers: remove: \"X-Real-IP\" is set by keygate itself",
        "services (svc) / apis (key) / request_headers: set: X-Ok: unknown variable ${nope}",
        "services (svc) / apis (key) / response_headers: rename: only request_headers can rename",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
