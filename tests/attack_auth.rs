//! Attack suite, authentication part (issue 11 items 3, 4, 8; issue 10 item 4):
//! replay variants, pre-authentication memory, enforced signed headers.
//! Everything is spoken over loopback sockets, several vectors over raw TCP so
//! that the test controls exactly which bytes of a body are ever sent.

mod common;

use common::signers::{self, Req};
use common::{send, spawn_binary, Keygate, Reply};
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID: &str = "AKIDattack";
const SECRET: &str = "attack-secret-0123456789";
/// Guard against a hang (a gateway waiting for a body that never comes): not a
/// performance bound.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn config(server: &str, auth: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
watch = false
{server}

[auth]
{auth}

[[keys]]
id = "{ID}"
secret = "{SECRET}"

[[services]]
name = "svc"
[[services.apis]]
name = "hmac"
path = "/hmac/"
auth = "hmac"
[services.apis.backend]
type = "mock"
body = "ok"
[[services.apis]]
name = "enforced"
path = "/enforced/"
auth = "hmac"
hmac_enforce_headers = ["request-line", "host", "digest"]
[services.apis.backend]
type = "mock"
body = "ok"
[[services.apis]]
name = "tc3"
path = "/tc3/"
auth = "tc3"
tc3_service = "cvm"
[services.apis.backend]
type = "mock"
body = "ok"
[[services.apis]]
name = "tc1"
path = "/tc1/"
auth = "tc1"
[services.apis.backend]
type = "mock"
body = "ok"
"#
    )
}

async fn start(server: &str, auth: &str) -> Keygate {
    Keygate::start(&config(server, auth)).await
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// True when the mock back end answered (whatever status style a refusal uses).
fn forwarded(r: &Reply) -> bool {
    r.status == StatusCode::OK && r.text() == "ok"
}

fn refused_as_replay(r: &Reply) -> bool {
    !forwarded(r) && r.text().contains("replay")
}

/// The cloud API error code of a `tc3`/`tc1` refusal.
fn cloud_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["Response"]["Error"]["Code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn json_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn hmac_get(kg: &Keygate, path: &str, headers: &[(String, String)]) -> Reply {
    send(Method::GET, &kg.url(path), &pairs(headers), "").await
}

fn tc3_post(kg: &Keygate, body: &[u8]) -> Vec<(String, String)> {
    let host = kg.addr.to_string();
    let req = Req {
        method: "POST",
        body,
        ..Req::get(&host, "/tc3/")
    };
    signers::tc3_headers(&req, ID, SECRET, "cvm", SystemTime::now())
}

/// Rewrites the `signature="…"` (hmac) or `Signature=…` (tc3) of an
/// `Authorization` header.
fn resign(headers: &[(String, String)], f: impl Fn(&str) -> String) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            if !k.eq_ignore_ascii_case("authorization") {
                return (k.clone(), v.clone());
            }
            let v = if let Some((head, rest)) = v.split_once("signature=\"") {
                let sig = rest.trim_end_matches('"');
                format!("{head}signature=\"{}\"", f(sig))
            } else {
                let (head, sig) = v.rsplit_once("Signature=").expect("tc3 signature");
                format!("{head}Signature={}", f(sig))
            };
            (k.clone(), v)
        })
        .collect()
}

// ------------------------------------------------------------ replay variants

#[tokio::test(flavor = "multi_thread")]
async fn identical_sdk_style_tc3_calls_in_one_second_both_pass() {
    let kg = start("", "").await;
    let body = br#"{"Limit":1}"#;
    let h = tc3_post(&kg, body);
    for i in 0..3 {
        let r = send(Method::POST, &kg.url("/tc3/"), &pairs(&h), &body[..]).await;
        assert!(forwarded(&r), "call {i}: {} {}", r.status, r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn same_hmac_get_twice_passes_by_default_and_a_signed_nonce_is_checked() {
    let kg = start("", "replay = true").await;
    let host = kg.addr.to_string();
    let h = signers::hmac_headers(&Req::get(&host, "/hmac/a"), ID, SECRET, SystemTime::now());
    for i in 0..2 {
        let r = hmac_get(&kg, "/hmac/a", &h).await;
        assert!(forwarded(&r), "call {i}: {} {}", r.status, r.text());
    }

    // A signed X-Nonce makes the request unique: its replay is refused.
    let nonce = format!("n-{}", signers::nonce());
    let extra = [("X-Nonce", nonce.as_str())];
    let req = Req {
        headers: &extra,
        ..Req::get(&host, "/hmac/a")
    };
    let mut h = signers::hmac_headers(&req, ID, SECRET, SystemTime::now());
    h.push(("X-Nonce".into(), nonce.clone()));
    assert!(forwarded(&hmac_get(&kg, "/hmac/a", &h).await));
    let r = hmac_get(&kg, "/hmac/a", &h).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(refused_as_replay(&r), "{}", r.text());
    // Same nonce on another path (a new signature): still the same nonce.
    let req2 = Req {
        headers: &extra,
        ..Req::get(&host, "/hmac/b")
    };
    let mut h2 = signers::hmac_headers(&req2, ID, SECRET, SystemTime::now());
    h2.push(("X-Nonce".into(), nonce));
    let r = hmac_get(&kg, "/hmac/b", &h2).await;
    assert!(refused_as_replay(&r), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tc1_nonce_replay_is_refused_by_default() {
    let kg = start("", "").await;
    let host = kg.addr.to_string();
    let req = Req::get(&host, "/tc1/");
    let q = signers::tc1_params(
        &req,
        &[("Action", "DescribeInstances")],
        ID,
        SECRET,
        SystemTime::now(),
        signers::nonce(),
        true,
    );
    let first = common::get(&kg.url(&format!("/tc1/?{q}"))).await;
    assert!(forwarded(&first), "{} {}", first.status, first.text());
    let again = common::get(&kg.url(&format!("/tc1/?{q}"))).await;
    assert!(refused_as_replay(&again), "{}", again.text());
    assert_eq!(
        cloud_code(&again.text()),
        "AuthFailure.SignatureFailure",
        "{}",
        again.text()
    );
    // The signature re-encoded (padding removed, '+' unescaped): the same nonce.
    let (head, sig) = q.rsplit_once("Signature=").expect("signature");
    let plain = sig
        .replace("%3D", "")
        .replace("%2B", "+")
        .replace("%2F", "/");
    let again = common::get(&kg.url(&format!("/tc1/?{head}Signature={plain}"))).await;
    assert!(refused_as_replay(&again), "{}", again.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_off_accepts_a_replayed_nonce() {
    let kg = start("", "replay = \"off\"").await;
    let host = kg.addr.to_string();
    let q = signers::tc1_params(
        &Req::get(&host, "/tc1/"),
        &[("Action", "DescribeInstances")],
        ID,
        SECRET,
        SystemTime::now(),
        signers::nonce(),
        false,
    );
    for _ in 0..2 {
        let r = common::get(&kg.url(&format!("/tc1/?{q}"))).await;
        assert!(forwarded(&r), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_mode_refuses_reencoded_hmac_signatures() {
    let kg = start("", "replay = \"strict\"").await;
    let host = kg.addr.to_string();
    for (i, alg) in ["hmac-sha1", "hmac-sha256", "hmac-sha512"]
        .into_iter()
        .enumerate()
    {
        let path = format!("/hmac/{i}");
        let h = signers::hmac_headers_with(
            &Req::get(&host, &path),
            ID,
            SECRET,
            alg,
            "X-Date",
            SystemTime::now(),
        );
        assert!(forwarded(&hmac_get(&kg, &path, &h).await), "{alg}");
        let r = hmac_get(&kg, &path, &h).await;
        assert!(refused_as_replay(&r), "{alg}: {}", r.text());
        // Padding removed: the same MAC bytes, the same identity.
        let stripped = resign(&h, |s| s.trim_end_matches('=').to_string());
        assert_ne!(stripped, h);
        let r = hmac_get(&kg, &path, &stripped).await;
        assert!(refused_as_replay(&r), "{alg} unpadded: {}", r.text());
        // Padding shortened (sha512 has two '='), URL-safe alphabet, trailing
        // garbage: refused, never accepted as a new request.
        let variants = [
            resign(&h, |s| s.replacen("==", "=", 1)),
            resign(&h, |s| s.replace('+', "-").replace('/', "_")),
            resign(&h, |s| format!("{s}A")),
            resign(&h, |s| format!(" {s}")),
        ];
        for v in variants {
            let r = hmac_get(&kg, &path, &v).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{alg}: {}", r.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_mode_refuses_tc3_signature_in_other_hex_case() {
    let kg = start("", "replay = \"strict\"").await;
    let body = br#"{"Offset":0}"#;
    let h = tc3_post(&kg, body);
    let r = send(Method::POST, &kg.url("/tc3/"), &pairs(&h), &body[..]).await;
    assert!(forwarded(&r), "{}", r.text());
    let r = send(Method::POST, &kg.url("/tc3/"), &pairs(&h), &body[..]).await;
    assert!(refused_as_replay(&r), "{}", r.text());
    let upper = resign(&h, |s| s.to_ascii_uppercase());
    assert_ne!(upper, h);
    let r = send(Method::POST, &kg.url("/tc3/"), &pairs(&upper), &body[..]).await;
    assert!(refused_as_replay(&r), "upper-case hex: {}", r.text());
    assert_eq!(cloud_code(&r.text()), "AuthFailure.SignatureFailure");
}

// ------------------------------------------------------------ enforce_headers

#[tokio::test(flavor = "multi_thread")]
async fn enforced_headers_must_be_signed() {
    let kg = start("", "").await;
    let host = kg.addr.to_string();
    // Date only: the documented minimal client is refused on this API...
    let h = signers::hmac_headers(
        &Req::get(&host, "/enforced/x"),
        ID,
        SECRET,
        SystemTime::now(),
    );
    let r = hmac_get(&kg, "/enforced/x", &h).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("request-line"), "{}", r.text());
    // ...and accepted on the API with the default (empty) list.
    assert!(forwarded(&hmac_get(&kg, "/hmac/x", &h).await));

    // request-line and host signed; no body, so no digest needed.
    let date = signers::http_date(SystemTime::now());
    let line = "GET /enforced/x HTTP/1.1";
    let auth = signers::hmac_authorization(
        ID,
        SECRET,
        "hmac-sha256",
        &[("date", &date), ("request-line", line), ("host", &host)],
    );
    let h = vec![
        ("Date".to_string(), date.clone()),
        ("Authorization".to_string(), auth),
    ];
    let r = hmac_get(&kg, "/enforced/x", &h).await;
    assert!(forwarded(&r), "{} {}", r.status, r.text());

    // A body without a signed digest: refused, as the signature cannot cover it.
    let line = "POST /enforced/x HTTP/1.1";
    let auth = signers::hmac_authorization(
        ID,
        SECRET,
        "hmac-sha256",
        &[("date", &date), ("request-line", line), ("host", &host)],
    );
    let h = [("Date", date.as_str()), ("Authorization", auth.as_str())];
    let r = send(Method::POST, &kg.url("/enforced/x"), &h, "tampered?").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("digest"), "{}", r.text());

    // Everything signed, digest included: forwarded.
    let body = b"{\"amount\":1}";
    let extra = [("host", host.as_str())];
    let req = Req {
        method: "POST",
        path: "/enforced/x",
        headers: &extra,
        body,
        ..Req::get(&host, "/enforced/x")
    };
    let h = signers::hmac_headers_full(&req, ID, SECRET, SystemTime::now());
    let r = send(Method::POST, &kg.url("/enforced/x"), &pairs(&h), &body[..]).await;
    assert!(forwarded(&r), "{} {}", r.status, r.text());
}

// ------------------------------------------------------ pre-auth memory (raw)

/// Sends `head` (and `body_part`), then reads one response: status, headers
/// (lower-case names) and body. Panics if nothing comes back before the guard.
async fn raw_exchange(addr: SocketAddr, head: &str, body_part: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    if !body_part.is_empty() {
        s.write_all(body_part).await.expect("write body part");
    }
    let resp = tokio::time::timeout(HANG_GUARD, read_response(&mut s))
        .await
        .expect("keygate answered without waiting for the body");
    resp.expect("a response")
}

async fn read_response(s: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    Some((status, head, body))
}

fn raw_head(
    method: &str,
    path: &str,
    host: &str,
    len: u64,
    headers: &[(String, String)],
) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// hmac headers signing the date, the request line and a `Digest` (of a body
/// that is never sent in full).
fn hmac_digest_headers(host: &str, path: &str, id: &str, at: SystemTime) -> Vec<(String, String)> {
    let req = Req {
        method: "POST",
        body: b"not the body",
        ..Req::get(host, path)
    };
    signers::hmac_headers_full(&req, id, SECRET, at)
}

const NINE_MIB: u64 = 9 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn bad_heads_with_huge_declared_bodies_are_refused_before_the_body() {
    let kg = start("", "").await;
    let host = kg.addr.to_string();
    let now = SystemTime::now();

    // hmac with a signed digest: unknown key, expired date, malformed credential.
    let h = hmac_digest_headers(&host, "/hmac/up", "AKIDnobody", now);
    let (st, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/hmac/up", &host, NINE_MIB, &h),
        b"",
    )
    .await;
    assert_eq!(
        (st, json_code(&body).as_str()),
        (401, "AuthFailure.SecretIdNotFound"),
        "{body}"
    );

    let old = now - Duration::from_secs(3600);
    let h = hmac_digest_headers(&host, "/hmac/up", ID, old);
    let (st, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/hmac/up", &host, NINE_MIB, &h),
        b"",
    )
    .await;
    assert_eq!(
        (st, json_code(&body).as_str()),
        (401, "AuthFailure.SignatureExpire"),
        "{body}"
    );

    let mut h = hmac_digest_headers(&host, "/hmac/up", ID, now);
    for (k, v) in &mut h {
        if k == "Authorization" {
            *v = v.replace("id=", "id=\"x\", id=");
        }
    }
    let (st, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/hmac/up", &host, NINE_MIB, &h),
        b"",
    )
    .await;
    assert_eq!(
        (st, json_code(&body).as_str()),
        (401, "InvalidParameter"),
        "{body}"
    );

    // A wrong signature over a good head: the hmac MAC covers the head, so it is
    // refused before the body too.
    let h = resign(&hmac_digest_headers(&host, "/hmac/up", ID, now), |s| {
        let mut b = s.as_bytes().to_vec();
        b[0] = if b[0] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap_or_default()
    });
    let (st, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/hmac/up", &host, NINE_MIB, &h),
        b"",
    )
    .await;
    assert_eq!(
        (st, json_code(&body).as_str()),
        (401, "AuthFailure.SignatureFailure"),
        "{body}"
    );

    // tc3 with a signed payload: unknown key, expired timestamp, malformed.
    let good = tc3_post(&kg, b"{}");
    let unknown: Vec<(String, String)> = good
        .iter()
        .map(|(k, v)| (k.clone(), v.replace(ID, "AKIDnobody")))
        .collect();
    let (_, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/tc3/", &host, NINE_MIB, &unknown),
        b"",
    )
    .await;
    assert_eq!(cloud_code(&body), "AuthFailure.SecretIdNotFound", "{body}");

    let expired: Vec<(String, String)> = good
        .iter()
        .map(|(k, v)| {
            if k == "X-TC-Timestamp" {
                let ts: u64 = v.parse().unwrap_or(0);
                (k.clone(), (ts - 3600).to_string())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let (_, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/tc3/", &host, NINE_MIB, &expired),
        b"",
    )
    .await;
    assert_eq!(cloud_code(&body), "AuthFailure.SignatureExpire", "{body}");

    let malformed: Vec<(String, String)> = good
        .iter()
        .map(|(k, v)| {
            if k == "Authorization" {
                (k.clone(), "TC3-HMAC-SHA256 Credential=garbage".to_string())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let (_, _, body) = raw_exchange(
        kg.addr,
        &raw_head("POST", "/tc3/", &host, NINE_MIB, &malformed),
        b"",
    )
    .await;
    let code = cloud_code(&body);
    assert!(
        code == "InvalidParameter" || code == "MissingParameter",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_body_budget_answers_503_and_is_returned() {
    let kg = start("max_buffered_bytes = 65536", "").await;
    let host = kg.addr.to_string();
    let body = vec![b'x'; 60 * 1024];
    let req = Req {
        method: "POST",
        body: &body,
        ..Req::get(&host, "/hmac/up")
    };
    let h = signers::hmac_headers_full(&req, ID, SECRET, SystemTime::now());
    let head = raw_head("POST", "/hmac/up", &host, body.len() as u64, &h);

    // A stalled upload holds 60 KiB of the 64 KiB budget.
    let mut staller = TcpStream::connect(kg.addr).await.expect("connect");
    staller.write_all(head.as_bytes()).await.expect("head");
    staller.write_all(&body[..1024]).await.expect("part");
    staller.flush().await.expect("flush");
    // Its room is taken before any other upload asks: an upload read first
    // would hold the budget and the staller would be the one refused.
    let budget = &kg.running.state.body_budget;
    for _ in 0..2000 {
        if budget.available() < body.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Another upload of the same size finds no room: 503 with Retry-After.
    // (Polled for up to 20 s: on a loaded 2-core CI machine the staller's head
    // may be read late.)
    let mut refused = None;
    for _ in 0..400 {
        let (st, hd, b) = raw_exchange(kg.addr, &head, &body).await;
        if st == 503 {
            refused = Some((hd, b));
            break;
        }
        assert_eq!(st, 200, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (hd, b) = refused.expect("a 503 while the budget is held");
    assert!(hd.contains("retry-after:"), "{hd}");
    assert_eq!(json_code(&b), "RequestLimitExceeded", "{b}");

    // A chunked upload takes room chunk by chunk: its first 8 KiB do not fit.
    let chunked_head = head.replace(
        &format!("Content-Length: {}\r\n", body.len()),
        "Transfer-Encoding: chunked\r\n",
    );
    assert_ne!(chunked_head, head);
    let mut chunked = format!("{:x}\r\n", 8192).into_bytes();
    chunked.extend_from_slice(&body[..8192]);
    chunked.extend_from_slice(b"\r\n");
    let (st, hd, b) = raw_exchange(kg.addr, &chunked_head, &chunked).await;
    assert_eq!(st, 503, "{b}");
    assert!(hd.contains("retry-after:"), "{hd}");

    // The stalled client goes away: its reservation is given back.
    drop(staller);
    let mut ok = false;
    for _ in 0..100 {
        let (st, _, b) = raw_exchange(kg.addr, &head, &body).await;
        if st == 200 {
            assert_eq!(b, "ok");
            ok = true;
            break;
        }
        assert_eq!(st, 503, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the budget came back after the stalled client closed");

    // Requests whose bodies are not buffered (a GET) never touch the budget.
    let h = signers::hmac_headers(&Req::get(&host, "/hmac/g"), ID, SECRET, SystemTime::now());
    assert!(forwarded(&hmac_get(&kg, "/hmac/g", &h).await));
}

// --------------------------------------------- pre-auth memory: RSS measured

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 64 connections each declare a 10 MiB body for a `tc3` API with a valid head
/// and send 2 MiB of it, then stall. The budget (64 MiB by default) admits six;
/// the others get 503 at once. Figures are printed for the README.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_stay_within_the_budget_rss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config("", "")).expect("write config");
    let (child, addr) = spawn_binary(&path);
    let child = Child(child);
    let pid = child.0.id();
    let host = addr.to_string();
    let declared: u64 = 10 * 1024 * 1024;
    let sent = 2 * 1024 * 1024;

    // Warm up (one full signed request) before the baseline.
    let body = br#"{"warm":1}"#;
    let req = Req {
        method: "POST",
        body,
        ..Req::get(&host, "/tc3/")
    };
    let h = signers::tc3_headers(&req, ID, SECRET, "cvm", SystemTime::now());
    let (st, _, b) = raw_exchange(
        addr,
        &raw_head("POST", "/tc3/", &host, body.len() as u64, &h),
        body,
    )
    .await;
    assert_eq!((st, b.as_str()), (200, "ok"));
    let before = vm_rss_kib(pid);

    let h = signers::tc3_headers(
        &Req {
            method: "POST",
            body: b"the real body is never sent",
            ..Req::get(&host, "/tc3/")
        },
        ID,
        SECRET,
        "cvm",
        SystemTime::now(),
    );
    let head = raw_head("POST", "/tc3/", &host, declared, &h);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(head.as_bytes()).await.expect("head");
            let part = vec![b'{'; sent];
            // A refused connection stops reading: do not wait forever on it.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&part)).await;
            let status = tokio::time::timeout(Duration::from_secs(3), read_response(&mut s))
                .await
                .ok()
                .flatten()
                .map(|(_, _, body)| body);
            (s, status)
        }));
    }
    let mut conns = Vec::new();
    let mut refused = 0;
    let mut stalled = 0;
    for t in tasks {
        let (s, status) = t.await.expect("task");
        match status {
            // 503, or 200 where the API answers cloud errors with 200: the code tells.
            Some(body) => {
                assert_eq!(cloud_code(&body), "RequestLimitExceeded", "{body}");
                refused += 1
            }
            None => stalled += 1,
        }
        conns.push(s);
    }
    let during = vm_rss_kib(pid);
    drop(conns);
    // The gateway notices the closed sockets and unmaps the buffered bodies:
    // RSS comes back near the baseline (polled, not timed).
    let mut after = vm_rss_kib(pid);
    for _ in 0..100 {
        if after <= before + 8 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = vm_rss_kib(pid);
    }
    println!(
        "pre-auth RSS: before {} MiB, 64 stalled 10 MiB uploads ({stalled} held, {refused} refused 503) {} MiB, after close {} MiB",
        before / 1024,
        during / 1024,
        after / 1024
    );
    assert!(before > 0 && during > 0 && after > 0, "VmRSS readable");
    assert!(
        stalled <= 6,
        "at most 64 MiB / 10 MiB uploads admitted: {stalled}"
    );
    assert!(refused >= 58, "the rest refused at once: {refused}");
    // Well under what 64 fully buffered bodies would take (640 MiB).
    assert!(
        during.saturating_sub(before) < 160 * 1024,
        "RSS grew by {} KiB",
        during - before
    );
    assert!(
        after <= before + 8 * 1024,
        "memory returned after the sockets closed: {after} KiB vs {before} KiB before"
    );
    let _ = dir;
}

// ------------------------------------- parser fuzzing (seeded, bounded cases)

mod fuzz {
    use super::{signers, Req, ID, SECRET};
    use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
    use keygate::auth::hmac::{self as kg_hmac, HmacSettings};
    use keygate::auth::replay::ReplayToken;
    use keygate::auth::tc1::{self, Tc1Settings};
    use keygate::auth::tc3::{self, Tc3Settings};
    use keygate::auth::{openapi, AuthError, Key, Keys, RequestParts, Verified};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    use std::time::SystemTime;

    /// Mutations per scheme: enough to reach every branch of the parsers many
    /// times, small enough for CI (well under a second each in a debug build).
    const CASES: usize = 3000;
    const HOST: &str = "api.example.com";
    /// Bytes that matter to the parsers.
    const SPICE: &[u8] = b"\"=,; \t/%+-_:.0aZ\\\x7f\xff";

    fn keys() -> Keys {
        let mut k = Keys::new();
        k.insert(
            ID.into(),
            Arc::new(Key::new(ID.into(), SECRET.into(), None, true)),
        );
        k
    }

    fn mutate(rng: &mut StdRng, s: &[u8]) -> Vec<u8> {
        let mut v = s.to_vec();
        for _ in 0..rng.gen_range(1..4) {
            let i = if v.is_empty() {
                0
            } else {
                rng.gen_range(0..v.len())
            };
            match rng.gen_range(0..6) {
                0 if !v.is_empty() => v[i] = SPICE[rng.gen_range(0..SPICE.len())],
                1 if !v.is_empty() => v[i] = rng.gen(),
                2 => v.insert(i, SPICE[rng.gen_range(0..SPICE.len())]),
                3 if !v.is_empty() => {
                    let end = (i + rng.gen_range(1..8)).min(v.len());
                    v.drain(i..end);
                }
                4 if !v.is_empty() => {
                    let end = (i + rng.gen_range(1..16)).min(v.len());
                    let dup = v[i..end].to_vec();
                    v.splice(i..i, dup);
                }
                _ => v.truncate(i),
            }
        }
        v
    }

    struct Owned {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Owned {
        fn new(method: Method, uri: &str, headers: &[(String, String)], body: &[u8]) -> Owned {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, HeaderValue::from_static(HOST));
            for (n, v) in headers {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            Owned {
                method,
                uri: uri.parse().expect("uri"),
                headers: h,
                body: body.to_vec(),
            }
        }
        fn parts(&self) -> RequestParts<'_> {
            RequestParts {
                method: &self.method,
                uri: &self.uri,
                version: Version::HTTP_11,
                headers: &self.headers,
                body: Some(&self.body),
            }
        }
        /// A copy with header `name` replaced by `value` (`None` when the bytes
        /// are not a valid header value: hyper would not deliver them either).
        fn with_header(&self, name: &str, value: &[u8]) -> Option<Owned> {
            let v = HeaderValue::from_bytes(value).ok()?;
            let mut o = Owned {
                method: self.method.clone(),
                uri: self.uri.clone(),
                headers: self.headers.clone(),
                body: self.body.clone(),
            };
            o.headers
                .insert(HeaderName::from_bytes(name.as_bytes()).ok()?, v);
            Some(o)
        }
    }

    fn token(v: &Result<Verified, AuthError>) -> Option<ReplayToken> {
        v.as_ref().ok().and_then(|v| v.replay.clone())
    }

    /// Every accepted mutation of a signed header is the same request: the same
    /// replay identity as the original. Nothing panics.
    fn fuzz_header(
        seed: u64,
        original: &Owned,
        header: &str,
        verify: &impl Fn(&RequestParts<'_>) -> Result<Verified, AuthError>,
    ) -> (usize, usize) {
        let want = token(&verify(&original.parts()));
        assert!(want.is_some(), "the original verifies");
        let value = original
            .headers
            .get(header)
            .expect("header")
            .as_bytes()
            .to_vec();
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut tried, mut accepted) = (0, 0);
        for _ in 0..CASES {
            let m = mutate(&mut rng, &value);
            if m == value {
                continue;
            }
            let Some(req) = original.with_header(header, &m) else {
                continue;
            };
            tried += 1;
            let got = verify(&req.parts());
            if got.is_ok() {
                accepted += 1;
                assert_eq!(
                    token(&got),
                    want,
                    "accepted variant {:?} is a new identity",
                    String::from_utf8_lossy(&m)
                );
            }
        }
        (tried, accepted)
    }

    #[test]
    fn hmac_authorization_mutations() {
        let now = SystemTime::now();
        let extra = [("x-nonce", "abc"), ("source", "app")];
        let req = Req {
            headers: &extra,
            ..Req::get(HOST, "/p")
        };
        let mut h = signers::hmac_headers_with(&req, ID, SECRET, "hmac-sha256", "X-Date", now);
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let o = Owned::new(Method::GET, "/p", &h, b"");
        let s = HmacSettings::default();
        let k = keys();
        let verify = |p: &RequestParts<'_>| kg_hmac::verify(&s, p, &k, now);
        let (tried, _) = fuzz_header(11, &o, "authorization", &verify);
        assert!(tried > CASES / 2, "{tried}");
        let (tried, accepted) = fuzz_header(12, &o, "x-date", &verify);
        assert!(tried > CASES / 2 && accepted < tried, "{tried} {accepted}");
        // Signed nonce: any change of it is refused (it is signed).
        let (_, accepted) = fuzz_header(13, &o, "x-nonce", &verify);
        assert_eq!(accepted, 0);
    }

    #[test]
    fn tc3_authorization_and_timestamp_mutations() {
        let now = SystemTime::now();
        let body = br#"{"Limit":1}"#;
        let req = Req {
            method: "POST",
            body,
            ..Req::get(HOST, "/")
        };
        let h = signers::tc3_headers(&req, ID, SECRET, "cvm", now);
        let o = Owned::new(Method::POST, "/", &h, body);
        let s = Tc3Settings::default();
        let k = keys();
        let verify = |p: &RequestParts<'_>| tc3::verify(&s, Some("cvm"), false, p, &k, now);
        let (tried, _) = fuzz_header(21, &o, "authorization", &verify);
        assert!(tried > CASES / 2, "{tried}");
        let (_, accepted) = fuzz_header(22, &o, "x-tc-timestamp", &verify);
        assert_eq!(accepted, 0, "the timestamp is signed");
        // Head-only verification never panics either and never accepts a
        // body it has not seen.
        let mut rng = StdRng::seed_from_u64(23);
        let auth = o
            .headers
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        for _ in 0..CASES {
            let m = mutate(&mut rng, auth.as_deref().unwrap_or_default());
            let Some(req) = o.with_header("authorization", &m) else {
                continue;
            };
            let mut p = req.parts();
            p.body = None;
            assert!(verify(&p).is_err());
        }
    }

    #[test]
    fn tc1_and_openapi_query_mutations() {
        let now = SystemTime::now();
        let req = Req::get(HOST, "/");
        let q = signers::tc1_params(
            &req,
            &[("Action", "DescribeInstances"), ("Limit", "10")],
            ID,
            SECRET,
            now,
            4242,
            true,
        );
        let s = Tc1Settings::default();
        let k = keys();
        let mut rng = StdRng::seed_from_u64(31);
        let good = Owned::new(Method::GET, &format!("/?{q}"), &[], b"");
        let want = token(&tc1::verify(&s, &good.parts(), &k, now));
        assert!(want.is_some());
        let mut tried = 0;
        for _ in 0..CASES {
            let m = mutate(&mut rng, q.as_bytes());
            let Ok(uri) = format!("/?{}", String::from_utf8_lossy(&m)).parse::<Uri>() else {
                continue;
            };
            tried += 1;
            let mut o = Owned::new(Method::GET, "/", &[], b"");
            o.uri = uri;
            let got = tc1::verify(&s, &o.parts(), &k, now);
            if got.is_ok() {
                assert_eq!(token(&got), want, "{:?}", String::from_utf8_lossy(&m));
            }
            // The same bytes as an open-platform query or a form body: no panic.
            let _ = openapi::verify(&o.parts(), &k);
            let mut form = Owned::new(
                Method::POST,
                "/",
                &[(
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                )],
                &m,
            );
            form.uri = "/".parse().expect("uri");
            let _ = tc1::verify(&s, &form.parts(), &k, now);
            let _ = openapi::verify(&form.parts(), &k);
        }
        assert!(tried > CASES / 2, "{tried}");
    }

    #[test]
    fn random_garbage_credentials_never_panic() {
        let now = SystemTime::now();
        let k = keys();
        let mut rng = StdRng::seed_from_u64(41);
        for _ in 0..CASES {
            let len = rng.gen_range(0..200);
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.5) {
                        SPICE[rng.gen_range(0..SPICE.len())]
                    } else {
                        rng.gen_range(0x20..0x7f)
                    }
                })
                .collect();
            let prefix: &[u8] = match rng.gen_range(0..3) {
                0 => b"hmac ",
                1 => b"TC3-HMAC-SHA256 ",
                _ => b"",
            };
            v.splice(0..0, prefix.iter().copied());
            let o = Owned::new(
                Method::POST,
                "/",
                &[("content-length".into(), "3".into())],
                b"abc",
            );
            let Some(o) = o.with_header("authorization", &v) else {
                continue;
            };
            let mut p = o.parts();
            for body in [None, Some(&b"abc"[..])] {
                p.body = body;
                assert!(kg_hmac::verify(&HmacSettings::default(), &p, &k, now).is_err());
                assert!(tc3::verify(&Tc3Settings::default(), None, false, &p, &k, now).is_err());
            }
        }
    }
}

// ------------------------------------------------------- config validation

/// `keygate check` on `toml`: (valid, stdout + stderr).
fn check(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.toml");
    std::fs::write(&path, toml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run keygate check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn new_auth_settings_are_validated() {
    for replay in ["true", "false", "\"off\"", "\"nonce\"", "\"strict\""] {
        let (ok, out) = check(&config("", &format!("replay = {replay}")));
        assert!(ok, "replay = {replay}: {out}");
    }
    let (ok, out) = check(&config("", "replay = \"sometimes\""));
    assert!(!ok && out.contains("strict"), "{out}");

    let (ok, out) = check(&config(
        "",
        "[auth.hmac]\nenforce_headers = [\"request-line\", \"bad name\"]",
    ));
    assert!(!ok && out.contains("enforce_headers"), "{out}");
    let (ok, out) = check(&config("", "[auth.hmac]\nnonce_headers = [\"date\"]"));
    assert!(!ok && out.contains("nonce_headers"), "{out}");

    // hmac_enforce_headers belongs to hmac APIs only.
    let cfg = config("", "").replace(
        "tc3_service = \"cvm\"",
        "tc3_service = \"cvm\"\nhmac_enforce_headers = [\"host\"]",
    );
    let (ok, out) = check(&cfg);
    assert!(!ok && out.contains("hmac_enforce_headers"), "{out}");

    let (ok, out) = check(&config("max_buffered_bytes = 1000", ""));
    assert!(!ok && out.contains("max_buffered_bytes"), "{out}");
}
