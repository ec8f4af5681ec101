//! A real browser against keygate: headless Chromium (Debian's `chromium`,
//! installed by `.ci/test`) loads a page through keygate's TLS listener, so the
//! page itself, its same-origin calls and its cross-origin calls all travel the
//! way a browser user's do: HTTP/2 over TLS by ALPN, CORS preflights sent by the
//! browser's own rules, answers read (or refused) by the browser's own CORS check.
//!
//! The page reports what it saw with a same-origin POST that keygate forwards to
//! the page's back end, so the test depends on nothing but the network.
//! Chromium resolves only the two test names (to 127.0.0.1) and nothing else, and
//! its background services are switched off: traffic stays on loopback.

mod common;

use bytes::Bytes;
use common::{spawn_backend, Keygate};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The page: every check is one `fetch`, its outcome recorded as the browser saw
/// it (status, readable body and headers, or the TypeError of a CORS refusal).
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>keygate browser check</title></head>
<body><pre id="out">running</pre>
<script>
const OTHER = "https://other.test:__PORT__";
async function attempt(name, f) {
  try { return await f(); } catch (e) { return { error: String(e) }; }
}
function proto(url) {
  const e = performance.getEntriesByName(url);
  return e.length ? e[e.length - 1].nextHopProtocol : "";
}
async function run() {
  const out = {};
  const nav = performance.getEntriesByType("navigation")[0];
  out.page_protocol = nav ? nav.nextHopProtocol : "";
  out.same = await attempt("same", async () => {
    const url = location.origin + "/page/data.json";
    const r = await fetch(url);
    return { status: r.status, body: await r.text(), protocol: proto(url) };
  });
  // Cross-origin PUT with a custom header and a JSON body: the browser sends a
  // preflight first, then the request only if the grant covers it.
  out.cors_put = await attempt("cors_put", async () => {
    const r = await fetch(OTHER + "/cors/echo?x=1", {
      method: "PUT",
      headers: { "Content-Type": "application/json", "X-Custom": "yes" },
      body: JSON.stringify({ hello: "browser" }),
    });
    return {
      status: r.status,
      body: await r.text(),
      exposed: r.headers.get("x-ratelimit-remaining"),
      hidden: r.headers.get("x-not-exposed"),
    };
  });
  // A gateway refusal (no credentials on an hmac API) must still be readable.
  out.cors_refused = await attempt("cors_refused", async () => {
    const r = await fetch(OTHER + "/cors/secure");
    return { status: r.status, body: await r.text() };
  });
  // An origin the plugin does not list: the browser must refuse to hand over
  // the answer (TypeError), and the preflighted PUT must never reach the back end.
  out.denied_get = await attempt("denied_get", async () => {
    const r = await fetch(OTHER + "/deny/echo");
    return { status: r.status, body: await r.text() };
  });
  out.denied_put = await attempt("denied_put", async () => {
    const r = await fetch(OTHER + "/deny/echo", {
      method: "PUT", headers: { "X-Custom": "yes" }, body: "x" });
    return { status: r.status };
  });
  document.getElementById("out").textContent = JSON.stringify(out);
  await fetch("/page/result", { method: "POST", body: JSON.stringify(out) });
}
run();
</script></body></html>
"#;

fn chromium() -> &'static str {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("a headless Chromium (/usr/bin/chromium) is needed for this test (.ci/test installs Debian's `chromium`)");
}

/// The page's own back end: serves the page and a JSON document, and passes the
/// page's report to the test.
async fn spawn_page_server(port: u16, report: mpsc::Sender<String>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let page = PAGE.replace("__PORT__", &port.to_string());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let page = page.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let page = page.clone();
                    let report = report.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let (ctype, text) = match path.as_str() {
                            "/page/index.html" => ("text/html; charset=utf-8", page),
                            "/page/data.json" => ("application/json", "{\"ok\":true}".into()),
                            "/page/result" => {
                                let b = body.unwrap_or_default();
                                let _ = report.send(String::from_utf8_lossy(&b).into()).await;
                                ("text/plain", "thanks".into())
                            }
                            _ => ("text/plain", "not here".into()),
                        };
                        let mut r = Response::new(Full::new(Bytes::from(text)));
                        r.headers_mut()
                            .insert("content-type", ctype.parse().expect("ctype"));
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

/// A loopback port free right now (keygate's TLS listener takes it next: the
/// CORS origin must name it before keygate starts).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(url: &str, profile: &Path) -> Browser {
    let child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--metrics-recording-only",
            "--ignore-certificate-errors",
            "--host-resolver-rules=MAP kg.test 127.0.0.1, MAP other.test 127.0.0.1, MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    Browser(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_over_h2_and_obeys_keygates_cors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["kg.test".into(), "other.test".into()])
        .expect("cert");
    std::fs::write(dir.path().join("kg.pem"), ck.cert.pem()).expect("write");
    std::fs::write(dir.path().join("kg.key"), ck.key_pair.serialize_pem()).expect("write");

    let port = free_port();
    let (tx, mut rx) = mpsc::channel(4);
    let page = spawn_page_server(port, tx).await;
    let echo = spawn_backend().await;
    let origin = format!("https://kg.test:{port}");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
watch = false
[server.tls]
listen = ["127.0.0.1:{port}"]
[[server.tls.certs]]
hosts = ["kg.test", "other.test"]
cert = "kg.pem"
key = "kg.key"

[[keys]]
id = "AKIDbrowser"
secret = "browser-secret"

[[plugins]]
name = "web"
type = "cors"
allow_origin = ["{origin}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["content-type", "x-custom"]
expose_headers = ["x-ratelimit-remaining"]
max_age = 60

[[plugins]]
name = "elsewhere"
type = "cors"
allow_origin = ["https://nobody.example"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-custom"]

[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "minute"
expire = 1
api_rate_limit = 1000

[[services]]
name = "site"

[[services.apis]]
name = "page"
path = "/page/"
methods = ["GET", "POST"]
[services.apis.backend]
url = "http://{page}"
path = "/page/"

[[services.apis]]
name = "cors-echo"
path = "/cors/echo"
methods = ["GET", "PUT"]
plugins = ["web", "flow"]
[services.apis.backend]
url = "http://{echo}"
path = "/cors/echo"
const_headers = {{ "x-not-exposed" = "1" }}

[[services.apis]]
name = "cors-secure"
path = "/cors/secure"
methods = ["GET"]
auth = "hmac"
plugins = ["web"]
[services.apis.backend]
url = "http://{echo}"

[[services.apis]]
name = "deny-echo"
path = "/deny/echo"
methods = ["GET", "PUT"]
plugins = ["elsewhere"]
[services.apis.backend]
url = "http://{echo}"
"#
    );
    let kg = Keygate::start_in(dir, &toml).await;
    assert_eq!(
        kg.running.https[0].port(),
        port,
        "TLS listener on the reserved port"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    let _browser = launch(&format!("{origin}/page/index.html"), profile.path());
    let report = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the page reported within 60 s (chromium started? page loaded through keygate?)")
        .expect("report");
    let v: serde_json::Value = serde_json::from_str(&report).expect("report is JSON");
    eprintln!("browser report: {v:#}");

    // The page and its same-origin call came over HTTP/2 (ALPN on keygate's TLS
    // listener), forwarded to an HTTP/1.1 back end.
    assert_eq!(v["page_protocol"], "h2", "page loaded over h2: {v}");
    assert_eq!(v["same"]["status"], 200, "{v}");
    assert_eq!(v["same"]["body"], "{\"ok\":true}", "{v}");
    assert_eq!(v["same"]["protocol"], "h2", "{v}");

    // Preflighted cross-origin PUT: granted, forwarded once, answer readable,
    // exposed header visible, unexposed one hidden by the browser.
    let put = &v["cors_put"];
    assert_eq!(put["status"], 200, "cross-origin PUT: {v}");
    let echoed: serde_json::Value =
        serde_json::from_str(put["body"].as_str().expect("body")).expect("echo JSON");
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["body"], "{\"hello\":\"browser\"}");
    assert_eq!(echoed["headers"]["x-custom"], "yes");
    assert_eq!(echoed["headers"]["origin"], origin.as_str());
    assert!(
        put["exposed"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "x-ratelimit-remaining exposed to the page: {v}"
    );
    assert!(put["hidden"].is_null(), "unexposed header hidden: {v}");

    // A gateway refusal is readable by the page (CORS headers on the 401).
    let refused = &v["cors_refused"];
    assert_eq!(refused["status"], 401, "refusal readable: {v}");
    assert!(
        refused["body"]
            .as_str()
            .is_some_and(|b| b.contains("\"code\"") || b.contains("Code")),
        "refusal body readable: {v}"
    );

    // Origins the plugin does not list get nothing the browser will hand over.
    for k in ["denied_get", "denied_put"] {
        assert!(
            v[k]["error"]
                .as_str()
                .is_some_and(|e| e.contains("TypeError")),
            "{k} refused by the browser: {v}"
        );
    }
    // ... and keygate refused the PUT's preflight itself (never forwarded).
    let metrics = common::get(&format!("http://{}/metrics", kg.admin))
        .await
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keygate_frontend_errors_total")
                && l.contains("deny-echo")
                && l.contains("reason=\"cors\"")),
        "refused preflight counted: {metrics}"
    );
}
