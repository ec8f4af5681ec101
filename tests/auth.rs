//! Authentication end to end through the proxy, signed by the independent
//! client in `common/signers.rs`.

mod common;
use common::signers::{self, Req};
use common::*;
use http::{Method, StatusCode};
use std::time::{Duration, SystemTime};

const SECRET: &str = "s3cr3t-good";

async fn setup(extra_auth: &str) -> (Keygate, std::net::SocketAddr) {
    let be = spawn_backend().await;
    let http = format!("[services.apis.backend]\ntype = \"http\"\nurl = \"http://{be}\"\n");
    let cfg = format!(
        r#"
[auth]
replay = "strict"  # these tests replay captured signatures
# These tests check the real HTTP statuses (tests/interop_sdk.rs covers the default).
cloud_error_status = "http"
{extra_auth}

[[keys]]
id = "AKIDgood"
secret = "{SECRET}"
app = "shop"
[[keys]]
id = "AKIDoff"
secret = "off-secret"
enabled = false
[[keys]]
id = "AKIDother"
secret = "other-secret"

[[usage_plans]]
name = "gold"
keys = ["AKIDgood", "AKIDoff"]
[[usage_plans]]
name = "silver"
keys = ["AKIDother"]

[[services]]
name = "svc"
usage_plans = ["gold"]
[[services.apis]]
name = "hmac"
path = "/hmac/"
auth = "hmac"
{http}
[[services.apis]]
name = "hmac-debug"
path = "/debug/"
auth = "hmac"
debug_signatures = true
{http}
[[services.apis]]
name = "tc3"
path = "/tc3/"
auth = "tc3"
tc3_service = "cvm"
{http}
[[services.apis]]
name = "tc1"
path = "/tc1/"
auth = "tc1"
{http}
[[services.apis]]
name = "openapi"
path = "/v3/"
auth = "openapi"
{http}

[[services]]
name = "other"
hosts = ["other.test"]
usage_plans = ["silver"]
[[services.apis]]
name = "hmac"
path = "/"
auth = "hmac"
{http}
"#
    );
    (Keygate::start(&cfg).await, be)
}

fn host(kg: &Keygate) -> String {
    kg.addr.to_string()
}

async fn hmac_get(kg: &Keygate, path: &str, id: &str, secret: &str, at: SystemTime) -> Reply {
    let h = host(kg);
    let req = Req::get(&h, path);
    let signed = signers::hmac_headers(&req, id, secret, at);
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    send(Method::GET, &kg.url(path), &hs, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_good_signature_is_forwarded_without_credentials() {
    let (kg, _) = setup("").await;
    let r = hmac_get(&kg, "/hmac/orders", "AKIDgood", SECRET, SystemTime::now()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    let h = &j["headers"];
    assert!(h.get("authorization").is_none(), "credential stripped");
    assert_eq!(h["x-keygate-key-id"], "AKIDgood");
    assert_eq!(h["x-keygate-app"], "shop");
    assert_eq!(h["x-keygate-usage-plan"], "gold");
    assert_eq!(r.header("x-usageplan-id"), Some("gold"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_failures_are_refused_with_clear_codes() {
    let (kg, _) = setup("").await;
    let now = SystemTime::now();
    let code = |r: &Reply| r.json()["code"].as_str().unwrap_or("").to_string();

    let r = get(&kg.url("/hmac/x")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r), "MissingParameter");

    let r = send(
        Method::GET,
        &kg.url("/hmac/x"),
        &[("authorization", "hmac id=\"AKIDgood\", garbage")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = hmac_get(&kg, "/hmac/x", "AKIDnobody", SECRET, now).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "AuthFailure.SecretIdNotFound")
    );

    let r = hmac_get(&kg, "/hmac/x", "AKIDoff", "off-secret", now).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "AuthFailure.InvalidSecretId")
    );

    let r = hmac_get(&kg, "/hmac/x", "AKIDgood", "wrong-secret", now).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "AuthFailure.SignatureFailure")
    );
    assert!(!r.text().contains(SECRET));
    assert!(
        !r.text().contains("date:"),
        "no string-to-sign unless the API opts in"
    );

    // Skew: 15 minutes by default; just inside passes, just outside fails.
    let r = hmac_get(
        &kg,
        "/hmac/x",
        "AKIDgood",
        SECRET,
        now - Duration::from_secs(898),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = hmac_get(
        &kg,
        "/hmac/x",
        "AKIDgood",
        SECRET,
        now - Duration::from_secs(902),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "AuthFailure.SignatureExpire")
    );
    let r = hmac_get(
        &kg,
        "/hmac/x",
        "AKIDgood",
        SECRET,
        now + Duration::from_secs(902),
    )
    .await;
    assert_eq!(code(&r), "AuthFailure.SignatureExpire");

    // A valid key that no plan of this service binds: 403.
    let h = host(&kg);
    let req = Req::get(&h, "/hmac/x");
    let signed = signers::hmac_headers(&req, "AKIDother", "other-secret", now);
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = send(Method::GET, &kg.url("/hmac/x"), &hs, "").await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "UnauthorizedOperation")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_replay_is_refused() {
    let (kg, _) = setup("").await;
    let h = host(&kg);
    let req = Req::get(&h, "/hmac/once");
    let signed = signers::hmac_headers(&req, "AKIDgood", SECRET, SystemTime::now());
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        send(Method::GET, &kg.url("/hmac/once"), &hs, "")
            .await
            .status,
        StatusCode::OK
    );
    let r = send(Method::GET, &kg.url("/hmac/once"), &hs, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("replay"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_algorithm_not_allowed_and_debug_string() {
    let (kg, _) = setup("[auth.hmac]\nalgorithms = [\"hmac-sha256\"]\n").await;
    let r = hmac_get(&kg, "/hmac/x", "AKIDgood", SECRET, SystemTime::now()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("hmac-sha1"), "{}", r.text());

    let h = host(&kg);
    let req = Req::get(&h, "/debug/x");
    let signed = signers::hmac_headers_with(
        &req,
        "AKIDgood",
        "bad",
        "hmac-sha256",
        "X-Date",
        SystemTime::now(),
    );
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = send(Method::GET, &kg.url("/debug/x"), &hs, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.text().contains("x-date: "),
        "debug string-to-sign shown: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_request_line_and_digest_protect_the_body() {
    let (kg, _) = setup("").await;
    let h = host(&kg);
    let body = br#"{"amount": 10}"#;
    let req = Req {
        method: "POST",
        host: &h,
        path: "/hmac/pay",
        query: "",
        headers: &[],
        body,
    };
    let signed = signers::hmac_headers_full(&req, "AKIDgood", SECRET, SystemTime::now());
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = send(Method::POST, &kg.url("/hmac/pay"), &hs, &body[..]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"amount": 10}"#);
    let signed = signers::hmac_headers_full(
        &req,
        "AKIDgood",
        SECRET,
        SystemTime::now() - Duration::from_secs(1),
    );
    let hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = send(
        Method::POST,
        &kg.url("/hmac/pay"),
        &hs,
        &br#"{"amount": 99}"#[..],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "tampered body refused");
}

async fn tc3_send(
    kg: &Keygate,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    tamper: impl Fn(&mut String, &mut String, &mut Vec<u8>, &mut String),
) -> Reply {
    let h = host(kg);
    let req = Req {
        method,
        host: &h,
        path,
        query,
        headers: &[("Content-Type", "application/json")],
        body,
    };
    let mut headers = signers::tc3_headers(&req, "AKIDgood", SECRET, "cvm", SystemTime::now());
    headers.push(("Content-Type".into(), "application/json".into()));
    headers.push(("X-TC-Action".into(), "DescribeInstances".into()));
    headers.push(("X-TC-Version".into(), "2017-03-12".into()));
    let (mut m, mut p, mut b, mut q) = (
        method.to_string(),
        path.to_string(),
        body.to_vec(),
        query.to_string(),
    );
    tamper(&mut m, &mut p, &mut b, &mut q);
    let url = if q.is_empty() {
        kg.url(&p)
    } else {
        kg.url(&format!("{p}?{q}"))
    };
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    send(
        Method::from_bytes(m.as_bytes()).expect("method"),
        &url,
        &hs,
        b,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tc3_good_and_tampered_requests() {
    let (kg, _) = setup("").await;
    let body = br#"{"Limit": 1, "Filters": [{"Values": ["unnamed"], "Name": "instance-name"}]}"#;
    let r = tc3_send(&kg, "POST", "/tc3/", "", body, |_, _, _, _| {}).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-keygate-key-id"], "AKIDgood");

    let envelope_code = |r: &Reply| {
        r.json()["Response"]["Error"]["Code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let r = tc3_send(&kg, "POST", "/tc3/", "", body, |_, _, b, _| b.push(b' ')).await;
    assert_eq!(
        (r.status, envelope_code(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "AuthFailure.SignatureFailure")
    );
    assert!(r.json()["Response"]["RequestId"].is_string());
    let r = tc3_send(&kg, "POST", "/tc3/", "", body, |_, p, _, _| {
        *p = "/tc3/other".into()
    })
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = tc3_send(&kg, "POST", "/tc3/", "", body, |m, _, _, _| {
        *m = "PUT".into()
    })
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = tc3_send(
        &kg,
        "GET",
        "/tc3/",
        "Limit=1&Offset=0",
        b"",
        |_, _, _, q| *q = "Limit=2&Offset=0".into(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = tc3_send(
        &kg,
        "GET",
        "/tc3/",
        "Limit=1&Offset=0",
        b"",
        |_, _, _, _| {},
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // GET bodies are limited to 32 KiB under tc3.
    let big = vec![b'x'; 33 * 1024];
    let r = tc3_send(&kg, "GET", "/tc3/", "", &big, |_, _, _, _| {}).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tc1_query_signature_and_nonce_replay() {
    let (kg, _) = setup("").await;
    let h = host(&kg);
    let req = Req::get(&h, "/tc1/");
    let q = signers::tc1_params(
        &req,
        &[("Action", "DescribeInstances"), ("Region", "ap-guangzhou")],
        "AKIDgood",
        SECRET,
        SystemTime::now(),
        signers::nonce(),
        true,
    );
    let r = get(&kg.url(&format!("/tc1/?{q}"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&kg.url(&format!("/tc1/?{q}"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "same nonce again");
    assert!(r.json()["Response"]["Error"]["Code"].is_string());
    let q = signers::tc1_params(
        &req,
        &[("Action", "DescribeInstances")],
        "AKIDgood",
        "nope",
        SystemTime::now(),
        signers::nonce(),
        false,
    );
    let r = get(&kg.url(&format!("/tc1/?{q}"))).await;
    assert_eq!(
        r.json()["Response"]["Error"]["Code"],
        "AuthFailure.SignatureFailure"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_sig_and_its_error_body() {
    let (kg, _) = setup("").await;
    let h = host(&kg);
    let req = Req::get(&h, "/v3/user/get_info");
    let q = signers::openapi_params(
        &req,
        &[("openid", "11"), ("openkey", "22"), ("pf", "qzone")],
        "AKIDgood",
        SECRET,
    );
    let r = get(&kg.url(&format!("/v3/user/get_info?{q}"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let q = signers::openapi_params(&req, &[("openid", "11")], "AKIDgood", "bad");
    let r = get(&kg.url(&format!("/v3/user/get_info?{q}"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let j = r.json();
    assert!(
        j["ret"].as_i64().unwrap_or(0) != 0 && j["msg"].is_string(),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_es256_with_claims_to_headers() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let be = spawn_backend().await;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keypair");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwt.pem"), kp.public_key_pem()).expect("write");
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         [[jwt_providers]]\nname = \"corp\"\npem_file = \"jwt.pem\"\nclaims_to_headers = {{ \"email\" = \"x-user-email\" }}\n\
         [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"j\"\npath = \"/\"\nauth = \"jwt\"\njwt_provider = \"corp\"\n\
         [services.apis.backend]\ntype = \"http\"\nurl = \"http://{be}\"\n"
    );
    let kg = Keygate::start_in(dir, &cfg).await;
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("encoding key");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let token = |exp: u64| {
        encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"sub": "alice", "email": "a@example.com", "exp": exp}),
            &key,
        )
        .expect("token")
    };
    let good = format!("Bearer {}", token(now + 600));
    let r = send(
        Method::GET,
        &kg.url("/me"),
        &[("authorization", &good), ("x-user-email", "forged@x")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-user-email"], "a@example.com");
    assert_eq!(h["x-keygate-key-id"], "alice");
    assert!(h.get("authorization").is_none());
    let id_token = format!("Bearer id_token=\"{}\"", token(now + 600));
    assert_eq!(
        send(
            Method::GET,
            &kg.url("/me"),
            &[("authorization", &id_token)],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    let expired = format!("Bearer {}", token(now - 3600));
    let r = send(
        Method::GET,
        &kg.url("/me"),
        &[("authorization", &expired)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "AuthFailure.TokenFailure");
}

#[test]
fn sign_cli_output_is_accepted_by_the_gateway() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "sign",
            "--id",
            "AKIDgood",
            "--secret",
            SECRET,
            "-H",
            "Source: cli",
        ])
        .output()
        .expect("run keygate sign");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let headers: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert!(headers.iter().any(|(k, _)| k == "Date"), "{text}");
    assert!(headers.iter().any(|(k, _)| k == "Authorization"), "{text}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (kg, _) = setup("").await;
        let hs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = send(Method::GET, &kg.url("/hmac/cli"), &hs, "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    });
}
