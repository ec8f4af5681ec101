//! The access log of the real binary: JSON lines in their own file, one per
//! request, with the documented fields and no secret.

mod common;
use common::signers::{self, Req};
use common::*;
use http::{Method, StatusCode};
use std::time::SystemTime;

const SECRET: &str = "access-log-secret-do-not-print";

#[tokio::test(flavor = "multi_thread")]
async fn json_access_log_has_one_line_per_request_and_no_secret() {
    let be = spawn_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[log]
format = "json"
access_file = "access.log"
[[keys]]
id = "AKIDlog"
secret = "{SECRET}"
app = "logger"
[[services]]
name = "s"
[[services.apis]]
name = "signed"
path = "/signed/"
auth = "hmac"
[services.apis.backend]
type = "http"
url = "http://{be}"
path = "/"
"#
        ),
    )
    .expect("write");
    let (mut child, addr) = spawn_binary(&path);
    let addr = addr.to_string();

    let req = Req::get(&addr, "/signed/orders");
    let signed = signers::hmac_headers(&req, "AKIDlog", SECRET, SystemTime::now());
    let mut hs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hs.push(("x-request-id", "req-signed-1"));
    let url = format!("http://{addr}/signed/orders?page=2");
    let ok = send(Method::GET, &url, &hs, "").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let refused = get(&format!("http://{addr}/signed/x")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let signature = signed
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone())
        .expect("authorization");

    // SIGTERM: the background writer is flushed on the way out.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success());

    let log = std::fs::read_to_string(dir.path().join("access.log")).expect("access.log");
    assert!(!log.contains(SECRET), "secret in the access log:\n{log}");
    let sig_value = signature
        .split("signature=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("signature value");
    assert!(!log.contains(sig_value), "signature in the access log");
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(entries.len(), 2, "one line per request:\n{log}");
    let first = &entries[0];
    assert!(first["timestamp"].as_str().is_some_and(|t| !t.is_empty()));
    let f = &first["fields"];
    assert_eq!(f["request_id"], "req-signed-1");
    assert_eq!(f["client_ip"], "127.0.0.1");
    assert_eq!(f["host"], addr.as_str());
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/signed/orders");
    assert_eq!(f["route"], "s/signed");
    assert_eq!(f["key_id"], "AKIDlog");
    assert_eq!(f["status"], 200);
    assert_eq!(f["upstream_status"], 200);
    assert!(f["bytes_out"].as_u64().is_some_and(|b| b > 0));
    assert!(f["latency_us"].as_u64().is_some());
    let second = &entries[1]["fields"];
    assert_eq!(second["status"], 401);
    assert_eq!(second["key_id"], "-");
    // The application log (start, shutdown lines) stays out of the access file.
    assert!(entries.iter().all(|e| e["target"] == "keygate::access"));
}
