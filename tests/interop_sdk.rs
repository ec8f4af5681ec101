//! The official cloud API SDKs and the key-pair signer, written by others, against
//! keygate on a non-default port: the Python SDK (`tencentcloud-sdk-python-common`),
//! the Node.js SDK (`tencentcloud-sdk-nodejs-common`, under
//! tests/interop/node/node_modules) and `tencentcloud-apigateway-authorization`.
//! Each client script (tests/interop/*.py, *.js) runs all its cases in one process
//! and prints JSON; these tests check every case for success or for the error code
//! the SDK read. `.ci/test` installs the clients; a missing one fails the test with
//! the install command.
//!
//! The default replay mode (`nonce`) is kept: each client makes a deliberate
//! second identical call (same second, same signature), which the real cloud API
//! accepts and so must keygate; v1 calls carry a fresh `Nonce` each time.

mod common;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ID: &str = "AKIDinterop";
const SECRET: &str = "interop-s3cr3t";

/// A cloud-API-style back end: answers `{"Response":{...}}` describing what it got.
async fn cloud_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let h = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
                    let out = json!({"Response": {
                        "RequestId": format!("backend-{name}"),
                        "Backend": name,
                        "Method": parts.method.as_str(),
                        "Path": parts.uri.path(),
                        "Query": parts.uri.query().unwrap_or(""),
                        "Action": h("x-tc-action"),
                        "KeyId": h("x-keygate-key-id"),
                        "ContentType": h("content-type"),
                        "BodyLen": body.len(),
                    }});
                    let mut r = hyper::Response::new(Full::new(Bytes::from(out.to_string())));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs `program script` with `input` on stdin (proxy variables removed: every
/// call goes to loopback) and parses the JSON it prints.
async fn run_client(program: &str, script: &str, input: Value, install: &str) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(interop_dir().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); the interop tests need it: {install}")
    });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.to_string().as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 120 s"))
    .expect("client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if let Some(err) = parsed.get("_error") {
        panic!("{script}: {err}\nInstall the client: {install}");
    }
    parsed
}

const PIP: &str = "pip install tencentcloud-sdk-python-common tencentcloud-apigateway-authorization requests (as .ci/test does)";
const NPM: &str = "npm install --prefix tests/interop/node --no-audit --no-fund (as .ci/test does)";

struct Setup {
    kg: Keygate,
}

async fn setup() -> Setup {
    let a = cloud_backend("A").await;
    let b = cloud_backend("B").await;
    let be = |addr: SocketAddr| format!("backend = {{ type = \"http\", url = \"http://{addr}\" }}");
    let cfg = format!(
        r#"
[[keys]]
id = "{ID}"
secret = "{SECRET}"

[[plugins]]
name = "one-per-minute"
type = "traffic_control"
expire_type = "minute"
expire = 1
api_rate_limit = 1

# The SDKs call "/" on 127.0.0.1:PORT and name the operation; the APIs below share
# that rule and are chosen by action (TC3: X-TC-Action; v1: the Action parameter).
[[services]]
name = "cloud"
hosts = ["127.0.0.1"]
[[services.apis]]
name = "tc3-describe"
path = "/"
auth = "tc3"
actions = ["Describe*"]
enable_cors = true
{a}
[[services.apis]]
name = "tc3-run"
path = "/"
auth = "tc3"
actions = ["RunInstances"]
{b}
[[services.apis]]
name = "tc3-limited"
path = "/"
auth = "tc3"
actions = ["LimitedCall"]
plugins = ["one-per-minute"]
{b}
[[services.apis]]
name = "v1-describe"
path = "/"
auth = "tc1"
actions = ["Describe*"]
{a}
[[services.apis]]
name = "v1-run"
path = "/"
auth = "tc1"
actions = ["Run*"]
{b}
[[services.apis]]
name = "keypair"
path = "/kp/"
auth = "hmac"
{a}

# Same SDK calls, addressed as localhost: an open API (the SDKs' SkipSign).
[[services]]
name = "open"
hosts = ["localhost"]
[[services.apis]]
name = "public"
path = "/"
{a}

# Real HTTP statuses instead of the SDKs' 200 envelope.
[[services]]
name = "strict"
hosts = ["strict.test"]
[[services.apis]]
name = "tc3"
path = "/"
auth = "tc3"
cloud_error_status = "http"
{a}
[[services.apis]]
name = "openapi"
path = "/v3/"
auth = "openapi"
{a}
"#,
        a = be(a),
        b = be(b),
    );
    Setup {
        kg: Keygate::start(&cfg).await,
    }
}

#[track_caller]
fn ok<'a>(res: &'a Value, case: &str) -> &'a Value {
    let r = &res[case];
    assert_eq!(r["ok"], true, "{case}: {r}");
    let resp = &r["response"];
    // Python's call_json returns the whole body; Node's request() its "Response".
    resp.get("Response").unwrap_or(resp)
}

#[track_caller]
fn code(res: &Value, case: &str, want: &str) {
    let r = &res[case];
    assert_eq!(r["ok"], false, "{case} should fail: {r}");
    assert_eq!(r["code"], want, "{case}: {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_tc3_and_v1_forms_and_error_codes() {
    let s = setup().await;
    let port = s.kg.addr.port();
    let res = run_client(
        "python3",
        "sdk_python.py",
        json!({
            "endpoint": format!("127.0.0.1:{port}"),
            "open_endpoint": format!("localhost:{port}"),
            "id": ID,
            "secret": SECRET,
        }),
        PIP,
    )
    .await;

    // TC3: POST JSON, GET, unsigned payloads, octet-stream hashed and unsigned,
    // each dispatched by action to its back end.
    for (case, backend, action, method) in [
        ("tc3_post_json", "A", "DescribeInstances", "POST"),
        ("tc3_get", "A", "DescribeInstances", "GET"),
        ("tc3_post_unsigned", "A", "DescribeZones", "POST"),
        ("tc3_get_unsigned", "A", "DescribeZones", "GET"),
        ("tc3_octet_stream", "B", "RunInstances", "POST"),
        ("tc3_octet_stream_unsigned", "B", "RunInstances", "POST"),
        ("tc3_multipart", "A", "DescribeFiles", "POST"),
        ("tc3_call_twice_1", "A", "DescribeRegions", "POST"),
        ("tc3_call_twice_2", "A", "DescribeRegions", "POST"),
        ("tc3_limit_1", "B", "LimitedCall", "POST"),
    ] {
        let r = ok(&res, case);
        assert_eq!(r["Backend"], backend, "{case}: {r}");
        assert_eq!(r["Action"], action, "{case}: {r}");
        assert_eq!(r["Method"], method, "{case}: {r}");
        assert_eq!(r["KeyId"], ID, "{case}: {r}");
        assert_eq!(r["Path"], "/", "{case}: {r}");
    }
    assert_eq!(ok(&res, "tc3_octet_stream")["BodyLen"], 10240);
    assert_eq!(ok(&res, "tc3_octet_stream_unsigned")["BodyLen"], 10240);
    assert!(ok(&res, "tc3_get")["Query"]
        .as_str()
        .is_some_and(|q| q.contains("Name=a+b%26c%3Dd%2F%C3%BC")));

    // v1: HmacSHA1 / HmacSHA256, GET and POST, dispatched by the Action parameter.
    for case in [
        "v1_hmacsha1_get",
        "v1_hmacsha1_post",
        "v1_hmacsha256_get",
        "v1_hmacsha256_post",
    ] {
        let r = ok(&res, case);
        assert_eq!(r["Backend"], "A", "{case}: {r}");
        assert_eq!(r["KeyId"], ID, "{case}: {r}");
    }
    assert_eq!(ok(&res, "v1_run")["Backend"], "B");

    // The SDK reads keygate's refusals as cloud API errors (HTTP 200 envelope).
    code(&res, "tc3_wrong_secret", "AuthFailure.SignatureFailure");
    code(&res, "tc3_unknown_id", "AuthFailure.SecretIdNotFound");
    code(&res, "tc3_invalid_action", "InvalidAction");
    code(&res, "tc3_limit_2", "RequestLimitExceeded");
    code(&res, "v1_wrong_secret", "AuthFailure.SignatureFailure");
    code(&res, "v1_invalid_action", "InvalidAction");
    // SkipSign: refused by a signed API, taken by an open one.
    code(&res, "tc3_skip_sign", "InvalidParameter");
    let r = ok(&res, "open_skip_sign");
    assert_eq!(r["Backend"], "A");
    assert_eq!(r["KeyId"], Value::Null);

    // Metrics count the 200-answered refusals under their real status and reason.
    let m = get(&format!("http://{}/metrics", s.kg.admin)).await.text();
    for line in [
        r#"keygate_requests_total{route="cloud/tc3-describe",code="4"#,
        r#"keygate_frontend_errors_total{route="cloud/tc3-describe",reason="auth"}"#,
        r#"keygate_frontend_errors_total{route="cloud/tc3-limited",reason="limit"} 1"#,
        r#"keygate_frontend_errors_total{route="cloud/tc3-describe",reason="route"}"#,
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_sdk_tc3_and_v1_forms_and_error_codes() {
    let s = setup().await;
    let res = run_client(
        "node",
        "sdk_node.js",
        json!({
            "endpoint": format!("127.0.0.1:{}", s.kg.addr.port()),
            "id": ID,
            "secret": SECRET,
        }),
        NPM,
    )
    .await;
    for (case, backend, action, method) in [
        // The Node.js SDK signs the host without its port: accepted (see tc3.rs).
        ("tc3_post_json", "A", "DescribeInstances", "POST"),
        ("tc3_get", "A", "DescribeInstances", "GET"),
        ("tc3_octet_stream", "B", "RunInstances", "POST"),
        ("tc3_multipart", "A", "DescribeFiles", "POST"),
        ("tc3_call_twice_1", "A", "DescribeRegions", "POST"),
        ("tc3_call_twice_2", "A", "DescribeRegions", "POST"),
    ] {
        let r = ok(&res, case);
        assert_eq!(r["Backend"], backend, "{case}: {r}");
        assert_eq!(r["Action"], action, "{case}: {r}");
        assert_eq!(r["Method"], method, "{case}: {r}");
        assert_eq!(r["KeyId"], ID, "{case}: {r}");
    }
    assert!(ok(&res, "tc3_multipart")["ContentType"]
        .as_str()
        .is_some_and(|c| c.starts_with("multipart/form-data; boundary=")));
    let r = ok(&res, "tc3_octet_stream");
    assert_eq!(r["BodyLen"], 10240);
    assert_eq!(r["ContentType"], "application/octet-stream; charset=utf-8");
    for case in [
        "v1_hmacsha1_get",
        "v1_hmacsha1_post",
        "v1_hmacsha256_get",
        "v1_hmacsha256_post",
    ] {
        let r = ok(&res, case);
        assert_eq!(r["Backend"], "A", "{case}: {r}");
        assert_eq!(r["KeyId"], ID, "{case}: {r}");
    }
    assert_eq!(ok(&res, "v1_run")["Backend"], "B");
    code(&res, "tc3_wrong_secret", "AuthFailure.SignatureFailure");
    code(&res, "tc3_unknown_id", "AuthFailure.SecretIdNotFound");
    code(&res, "tc3_invalid_action", "InvalidAction");
    code(&res, "tc3_skip_sign", "InvalidParameter");
    code(&res, "v1_wrong_secret", "AuthFailure.SignatureFailure");
    code(&res, "v1_invalid_action", "InvalidAction");
}

#[tokio::test(flavor = "multi_thread")]
async fn keypair_signer_requests_are_accepted_and_tampering_refused() {
    let s = setup().await;
    let res = run_client(
        "python3",
        "signer_python.py",
        json!({"base": s.kg.url("/kp"), "id": ID, "secret": SECRET}),
        PIP,
    )
    .await;
    for (case, method, path) in [
        ("get", "GET", "/kp/orders"),
        ("get_again", "GET", "/kp/orders"),
        ("post", "POST", "/kp/orders"),
        ("date_only", "GET", "/kp/ping"),
    ] {
        let r = &res[case];
        assert_eq!(r["status"], 200, "{case}: {r}");
        let b = &r["body"]["Response"];
        assert_eq!(b["Method"], method, "{case}: {r}");
        assert_eq!(b["Path"], path, "{case}: {r}");
        assert_eq!(b["KeyId"], ID, "{case}: {r}");
    }
    // `{"item": "\u00fc", "n": 2}` as json.dumps writes it.
    assert_eq!(res["post"]["body"]["Response"]["BodyLen"], 26);
    for (case, want) in [
        ("tampered", "AuthFailure.SignatureFailure"),
        ("wrong_secret", "AuthFailure.SignatureFailure"),
        ("unknown_id", "AuthFailure.SecretIdNotFound"),
    ] {
        let r = &res[case];
        assert_eq!(r["status"], 401, "{case}: {r}");
        assert_eq!(r["body"]["code"], want, "{case}: {r}");
    }
}

/// Raw HTTP: the envelope's status in both modes, Retry-After kept on a 200
/// refusal, and the open-platform body.
#[tokio::test(flavor = "multi_thread")]
async fn cloud_error_status_modes() {
    let s = setup().await;
    let host = format!("127.0.0.1:{}", s.kg.addr.port());
    let tc3 = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
        ("x-tc-action", "DescribeInstances"),
    ];
    // Default: HTTP 200 with the cloud API envelope.
    let r = send(Method::POST, &s.kg.url("/"), &tc3, "{}").await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["Response"]["Error"]["Code"], "MissingParameter", "{j}");
    assert_eq!(
        Some(j["Response"]["RequestId"].as_str().unwrap_or("")),
        r.header("x-request-id")
    );
    // An action no API takes.
    let r = send(
        Method::POST,
        &s.kg.url("/"),
        &[("host", host.as_str()), ("x-tc-action", "Nope")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Response"]["Error"]["Code"], "InvalidAction");
    // A rate-limit refusal answered 200 keeps Retry-After and the rate-limit headers.
    let signed = |n: &str| {
        let body = format!("{{\"N\":{n}}}");
        let req = common::signers::Req {
            method: "POST",
            host: &host,
            path: "/",
            query: "",
            headers: &[("Content-Type", "application/json")],
            body: body.as_bytes(),
        };
        let mut h =
            common::signers::tc3_headers(&req, ID, SECRET, "cvm", std::time::SystemTime::now());
        h.push(("Content-Type".into(), "application/json".into()));
        h.push(("X-TC-Action".into(), "LimitedCall".into()));
        (h, body)
    };
    for n in ["1", "2"] {
        let (h, body) = signed(n);
        let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = send(Method::POST, &s.kg.url("/"), &hs, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.header("x-ratelimit-limit").is_some(), "{:?}", r.headers);
        let j = r.json();
        if n == "1" {
            assert_eq!(j["Response"]["Backend"], "B", "{j}");
        } else {
            assert_eq!(
                j["Response"]["Error"]["Code"], "RequestLimitExceeded",
                "{j}"
            );
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        }
    }
    // A v1 form POST to the group is read for its Action, within tc1's 1 MB.
    let mut big = b"Action=DescribeInstances&Pad=".to_vec();
    big.resize(1024 * 1024 + 1, b'x');
    let form = [
        ("host", host.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let r = send(Method::POST, &s.kg.url("/"), &form, big).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["Response"]["Error"]["Code"],
        "InvalidParameter",
        "{}",
        r.text()
    );
    assert!(r.text().contains("too large"), "{}", r.text());
    // A CORS preflight names no action: the group's first API answers it.
    let r = send(
        Method::OPTIONS,
        &s.kg.url("/"),
        &[
            ("host", host.as_str()),
            ("origin", "https://console.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    // A preflight answer (allow-methods, no body), not an InvalidAction envelope.
    assert!(r.body.is_empty(), "{}", r.text());
    assert!(
        r.header("access-control-allow-methods").is_some(),
        "{:?}",
        r.headers
    );
    // `cloud_error_status = "http"`: the same envelope with the real status.
    let strict = [
        ("host", "strict.test"),
        ("content-type", "application/json"),
    ];
    let r = send(Method::POST, &s.kg.url("/"), &strict, "{}").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["Response"]["Error"]["Code"], "MissingParameter");
    // openapi follows the same setting: `ret` in a 200 body by default.
    let r = send(
        Method::GET,
        &s.kg.url("/v3/user/get_info?appid=x"),
        &[("host", "strict.test")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_ne!(r.json()["ret"], 0, "{}", r.text());
}

#[test]
fn action_and_error_status_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, toml: &str| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, toml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run keygate check");
        assert!(!out.status.success(), "{name} should be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let api = |name: &str, auth: &str, extra: &str| {
        format!(
            "[[services.apis]]\nname = \"{name}\"\npath = \"/\"\nauth = \"{auth}\"\n{extra}\n\
             backend = {{ type = \"mock\" }}\n"
        )
    };
    let err = check(
        "bad.toml",
        &format!(
            "[[services]]\nname = \"s\"\n{}{}{}{}",
            api("h", "hmac", "actions = [\"A\"]"),
            api("n", "none", "cloud_error_status = \"http\""),
            api("p", "tc3", "actions = [\"Bad*Glob\", \"\"]"),
            api("q", "tc1", "actions = [\"Q\"]"),
        ),
    );
    for want in [
        "apis (h): actions is only used with auth = \"tc3\" or \"tc1\"",
        "apis (n): cloud_error_status is only used with",
        "apis (p): action \"Bad*Glob\"",
        "apis (p): action \"\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Two APIs without actions on one rule remain a duplicate.
    let err = check(
        "dup.toml",
        &format!(
            "[[services]]\nname = \"s\"\n{}{}{}",
            api("a", "tc3", "actions = [\"A\"]"),
            api("b", "tc3", ""),
            api("c", "tc1", ""),
        ),
    );
    assert!(err.contains("same rule and method"), "{err}");
    let err = check(
        "status.toml",
        "[auth]\ncloud_error_status = \"401\"\n[[services]]\nname = \"s\"\n",
    );
    assert!(err.contains("expected `200` or `http`"), "{err}");
}
