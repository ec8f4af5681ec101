//! Attack suite: path and host confusion, framing and smuggling, forged identity
//! headers (issue 11, findings 1, 2 and 7). Everything is spoken over raw loopback
//! sockets so that no client library tidies the request first, and the path vectors
//! run against a real nginx back end, which normalises paths itself.

mod common;
use common::signers::{hmac_headers, Req};
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY_ID: &str = "AKIDattack";
const SECRET: &str = "attack-secret";
const PRIVATE: &str = "PRIVATE-BODY";
const PUBLIC: &str = "PUBLIC-BODY";
const ROOT: &str = "ROOT-BODY";

// ------------------------------------------------------------------ nginx

/// An nginx serving distinct bodies under `/public/`, `/private/` and `/`, killed
/// on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed (.ci/test installs it): the path attack suite needs it as a normalising back end");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = format!(
            "worker_processes 1;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n default_type text/plain;\n\
             server {{\n  listen 127.0.0.1:{port};\n\
               location /public/ {{ return 200 \"{PUBLIC}\\n\"; }}\n\
               location /private/ {{ return 200 \"{PRIVATE}\\n\"; }}\n\
               location = /private {{ return 200 \"{PRIVATE}\\n\"; }}\n\
               location / {{ return 200 \"{ROOT}\\n\"; }}\n }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {d}/nginx.pid;"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut n = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = n.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("nginx exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "nginx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ raw HTTP

/// One parsed response off a raw socket.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Write `bytes`, read until the server closes (or a quiet second), and parse every
/// response found (Content-Length or chunked bodies).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<RawReply> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_responses(&buf)
}

fn parse_responses(mut buf: &[u8]) -> Vec<RawReply> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let len = len.min(buf.len());
            body.extend_from_slice(&buf[..len]);
            buf = &buf[len..];
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                    buf = &[];
                    break;
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&buf[..eol])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .unwrap_or(0);
                buf = &buf[eol + 2..];
                if size == 0 {
                    buf = buf.get(2..).unwrap_or(&[]);
                    break;
                }
                let size = size.min(buf.len());
                body.extend_from_slice(&buf[..size]);
                buf = buf.get(size + 2..).unwrap_or(&[]);
            }
        }
        out.push(RawReply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    out
}

async fn raw_get(addr: SocketAddr, target: &str, extra: &str) -> RawReply {
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: gw.local\r\n{extra}Connection: close\r\n\r\n");
    let mut r = exchange(addr, req.as_bytes()).await;
    assert_eq!(r.len(), 1, "one response for {target:?}");
    r.remove(0)
}

fn signed_headers(path: &str) -> String {
    let req = Req::get("gw.local", path);
    hmac_headers(&req, KEY_ID, SECRET, SystemTime::now())
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

fn keys() -> String {
    format!("[[keys]]\nid = \"{KEY_ID}\"\nsecret = \"{SECRET}\"\n")
}

fn http_api(name: &str, path: &str, auth: &str, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\nauth = \"{auth}\"\n{extra}\
         [services.apis.backend]\ntype = \"http\"\nurl = \"http://{backend}\"\npreserve_host = true\n"
    )
}

// ------------------------------------------------------------------ paths

/// Layouts of the same two APIs: the vectors below must never reach the private
/// body unsigned under any of them.
fn layouts(be: SocketAddr) -> Vec<(&'static str, String)> {
    let svc = "[[services]]\nname = \"s\"\n";
    vec![
        (
            "prefix",
            format!(
                "{svc}{}{}",
                http_api("public", "/public", "none", be, ""),
                http_api("private", "/private", "hmac", be, "")
            ),
        ),
        (
            "exact-and-pref-with-catch-all",
            format!(
                "{svc}{}{}{}{}",
                http_api("public", "^~/public/", "none", be, ""),
                http_api("private", "=/private/data", "hmac", be, ""),
                http_api("private-tree", "^~/private/", "hmac", be, ""),
                http_api("root", "/", "none", be, "")
            ),
        ),
        (
            "catch-all",
            format!(
                "{svc}{}{}{}",
                http_api("public", "/public/", "none", be, ""),
                http_api("private", "/private", "hmac", be, ""),
                http_api("root", "/", "none", be, "")
            ),
        ),
    ]
}

/// `(target, status under each of the three layouts)`; 200 answers are never the
/// private body (checked for every vector).
const PATH_VECTORS: &[(&str, [u16; 3])] = &[
    // Dot segments, plain and escaped: they resolve to the private path (401).
    ("/public/../private/data", [401, 401, 401]),
    ("/public/%2e%2e/private/data", [401, 401, 401]),
    ("/public/%2E%2E/private/data", [401, 401, 401]),
    ("/public/.%2e/private/data", [401, 401, 401]),
    ("/publicx/../private/data", [401, 401, 401]),
    ("/./private/data", [401, 401, 401]),
    ("/private/./data", [401, 401, 401]),
    ("/private/data/.", [401, 401, 401]),
    ("/private/x/../data", [401, 401, 401]),
    ("/%70rivate/data", [401, 401, 401]),
    ("/%70%72%69%76%61%74%65/data", [401, 401, 401]),
    ("/release/../private/data", [401, 401, 401]),
    ("/public/a/b/../../../private/data", [401, 401, 401]),
    // Refused outright (400): escaped slashes, NUL, above the root, `..;`.
    ("/public/..%2fprivate/data", [400, 400, 400]),
    ("/public/..%2Fprivate/data", [400, 400, 400]),
    ("/public/..%5cprivate/data", [400, 400, 400]),
    ("/public/%2e%2e%2fprivate/data", [400, 400, 400]),
    ("/public/%00/../private/data", [400, 400, 400]),
    ("/public/../../private/data", [400, 400, 400]),
    ("/../private/data", [400, 400, 400]),
    ("/public/..;/private/data", [400, 400, 400]),
    ("/public/.;x/../private/data", [400, 400, 400]),
    ("/public/%zz", [400, 400, 400]),
    ("/public/..\\private/data", [400, 400, 400]),
    ("/public/%u002e%u002e/private/data", [400, 400, 400]),
    ("/public/%2e%2e;/private/data", [400, 400, 400]),
    ("/private%2fdata", [400, 400, 400]),
    // Read as another API's once slashes are merged or `;` dropped: 400 when that
    // changes the API, else routed as written. `//../` removes the empty segment
    // (RFC 3986), so the last one stays under /public/.
    ("//private/data", [404, 400, 400]),
    ("/public//../private/data", [200, 200, 200]),
    ("/private;x/data", [401, 400, 401]),
    // Not decoded twice, overlong UTF-8 is not a dot, case is kept.
    ("/public/%252e%252e/private/data", [200, 200, 200]),
    ("/public/%c0%ae%c0%ae/private/data", [200, 200, 200]),
    ("/PRIVATE/data", [404, 200, 200]),
    // Fragments are not part of the path.
    ("/public/x#/../../private/data", [200, 200, 200]),
];

#[tokio::test(flavor = "multi_thread")]
async fn path_vectors_never_reach_the_private_body_unsigned() {
    let nginx = Nginx::start();
    // Today's bypass, for the record: nginx itself resolves these to /private/.
    let direct = raw_get(nginx.addr, "/public/%2e%2e/private/data", "").await;
    assert!(
        direct.body.contains(PRIVATE),
        "nginx normalises: {direct:?}"
    );

    for (i, (layout, services)) in layouts(nginx.addr).into_iter().enumerate() {
        let kg = Keygate::start(&format!("{}{services}", keys())).await;
        // The set-up can serve the private body, signed.
        let ok = raw_get(kg.addr, "/private/data", &signed_headers("/private/data")).await;
        assert_eq!(ok.status, 200, "{layout}: signed {ok:?}");
        assert!(ok.body.contains(PRIVATE), "{layout}: {ok:?}");
        let unsigned = raw_get(kg.addr, "/private/data", "").await;
        assert_eq!(unsigned.status, 401, "{layout}");

        let mut failures = vec![];
        for &(target, wants) in PATH_VECTORS {
            let r = raw_get(kg.addr, target, "").await;
            let want = wants[i];
            if r.body.contains(PRIVATE) || r.status != want {
                failures.push(format!(
                    "{target}: {} {:?} (want {want})",
                    r.status,
                    r.body.trim()
                ));
            }
        }
        assert!(failures.is_empty(), "{layout}:\n{}", failures.join("\n"));
    }
}

/// A service under an environment prefix: the prefix is matched after the path is
/// made canonical, so `..` cannot step out of it or into it unnoticed.
#[tokio::test(flavor = "multi_thread")]
async fn environment_prefix_vectors() {
    let nginx = Nginx::start();
    let cfg = format!(
        "{}[[services]]\nname = \"r\"\nenvironment = \"release\"\n{}{}",
        keys(),
        http_api("public", "/public", "none", nginx.addr, ""),
        http_api("private", "/private", "hmac", nginx.addr, "")
    );
    let kg = Keygate::start(&cfg).await;
    let target = "/release/private/data";
    let ok = raw_get(kg.addr, target, &signed_headers(target)).await;
    assert!(ok.status == 200 && ok.body.contains(PRIVATE), "{ok:?}");
    let public = raw_get(kg.addr, "/release/public/x", "").await;
    assert!(
        public.status == 200 && public.body.contains(PUBLIC),
        "{public:?}"
    );
    for (target, want) in [
        ("/release/private/data", 401),
        ("/release/public/../private/data", 401),
        ("/release/public/%2e%2e/private/data", 401),
        ("/release/../release/private/data", 401),
        ("/release/public/../../release/private/data", 401),
        ("/%72elease/private/data", 401),
        ("/release/public/../../private/data", 404),
        ("/release/%2e%2e/private/data", 404),
        ("/release/..", 404),
        ("/release//private/data", 404),
        ("/release/public/../../../private/data", 400),
        ("/release/public/..%2f..%2fprivate/data", 400),
    ] {
        let r = raw_get(kg.addr, target, "").await;
        assert!(!r.body.contains(PRIVATE), "{target}: {r:?}");
        assert_eq!(r.status, want, "{target}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn canonical_path_is_forwarded_and_settings_apply() {
    let be = spawn_backend().await;
    let svc = format!(
        "{}[[services]]\nname = \"s\"\n{}",
        keys(),
        http_api("open", "/", "none", be, "")
    );
    // Default: the back end sees the canonical path, the query untouched.
    let kg = Keygate::start(&svc).await;
    let r = raw_get(kg.addr, "/a/./b/../%63%7e/%c3%a9?q=%2e%2e/x", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "/a/c~/%C3%A9");
    assert_eq!(j["query"], "q=%2e%2e/x");
    // Empty segments that do not change the API are forwarded as written.
    let r = raw_get(kg.addr, "//a///b", "").await;
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "//a///b", "{r:?}");
    drop(kg);

    // merge_slashes and unescape.
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         merge_slashes = true\npath_with_escaped_slashes_action = \"unescape\"\n{svc}"
    );
    let kg = Keygate::start(&cfg).await;
    let r = raw_get(kg.addr, "//a///b/..%2fc", "").await;
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "/a/c", "{r:?}");
    drop(kg);

    // keep: the escape is forwarded, upper-cased.
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         path_with_escaped_slashes_action = \"KEEP_UNCHANGED\"\n{svc}"
    );
    let kg = Keygate::start(&cfg).await;
    let r = raw_get(kg.addr, "/a%2fb", "").await;
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "/a%2Fb", "{r:?}");
    drop(kg);

    // normalize_path = false: dot segments pass as written.
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         normalize_path = false\n{svc}"
    );
    let kg = Keygate::start(&cfg).await;
    let r = raw_get(kg.addr, "/a/../%62", "").await;
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "/a/../%62", "{r:?}");
    assert_eq!(raw_get(kg.addr, "/a%2fb", "").await.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_still_cover_the_path_the_client_sent() {
    let nginx = Nginx::start();
    let cfg = format!(
        "{}[[services]]\nname = \"s\"\n{}",
        keys(),
        http_api("private", "/private", "hmac", nginx.addr, "")
    );
    let kg = Keygate::start(&cfg).await;
    // hmac-sha1 here signs the date only; the request line is whatever was sent.
    let target = "/private/x/../data";
    let r = raw_get(kg.addr, target, &signed_headers(target)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(PRIVATE));
}

// ------------------------------------------------------------------ hosts

/// A back end that records each request's method, path and headers and echoes
/// them as JSON.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request the recorder saw: its path and its headers (repeats kept).
type Seen = (String, HashMap<String, Vec<String>>);

impl Recorder {
    async fn spawn(&self) -> SocketAddr {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let mut headers: HashMap<String, Vec<String>> = HashMap::new();
                            for (k, v) in &parts.headers {
                                headers
                                    .entry(k.to_string())
                                    .or_default()
                                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                            }
                            let out = serde_json::json!({
                                "path": parts.uri.path(),
                                "headers": headers,
                                "body": String::from_utf8_lossy(&body),
                            });
                            seen.lock()
                                .expect("lock")
                                .push((parts.uri.path().to_string(), headers));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(out.to_string()),
                            )))
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

    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

fn hosts_config(be: SocketAddr) -> String {
    format!(
        "{}[[services]]\nname = \"b\"\nhosts = [\"b.local\"]\n{}\
         [[services]]\nname = \"c\"\nhosts = [\"c.local\"]\n{}\
         [[services]]\nname = \"any\"\n{}",
        keys(),
        http_api("open", "/", "none", be, ""),
        http_api("signed", "/", "hmac", be, ""),
        http_api("fallback", "/fallback", "none", be, "")
    )
}

async fn raw_one(addr: SocketAddr, req: &str) -> RawReply {
    let mut r = exchange(addr, req.as_bytes()).await;
    assert_eq!(r.len(), 1, "one response to {req:?}: {r:?}");
    r.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_authority_per_request() {
    let rec = Recorder::default();
    let be = rec.spawn().await;
    let kg = Keygate::start(&hosts_config(be)).await;

    // Absolute form names the signed host, Host the open one: the target wins.
    let r = raw_one(
        kg.addr,
        "GET http://c.local/x HTTP/1.1\r\nHost: b.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    // The other way round: routed to b.local, and b.local is what is forwarded.
    let r = raw_one(
        kg.addr,
        "GET http://b.local/x HTTP/1.1\r\nHost: c.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["headers"]["host"], serde_json::json!(["b.local"]));
    assert_eq!(
        j["headers"]["x-forwarded-host"],
        serde_json::json!(["b.local"])
    );

    // Duplicate Host (same or different values), missing Host, user info: 400.
    for req in [
        "GET /x HTTP/1.1\r\nHost: b.local\r\nHost: c.local\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: c.local\r\nHost: b.local\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: b.local\r\nHost: b.local\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://b.local/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://u@b.local/x HTTP/1.1\r\nHost: b.local\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: u@b.local\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_one(kg.addr, req).await;
        assert_eq!(r.status, 400, "{req:?}: {r:?}");
    }
    // HTTP/1.0 may omit Host: it reaches the services without hosts.
    let r = raw_one(kg.addr, "GET /fallback HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(j["path"], "/fallback");
    // Nothing unsigned ever reached the signed host's back end.
    let seen = rec.seen.lock().expect("lock");
    for (path, headers) in seen.iter() {
        let host = headers.get("host").cloned().unwrap_or_default();
        assert!(
            !host.iter().any(|h| h.contains("c.local")),
            "{path} {headers:?}"
        );
        assert_eq!(host.len(), 1, "{headers:?}");
    }
}

/// HTTP/2: `:authority` decides, a `host` header that differs does not. Mock back
/// ends answer which service was chosen (forwarding h2 requests to an HTTP/1.1
/// back end is the h2 work's; the forwarded `Host` is the one of
/// `crate::authority::settle`, checked over HTTP/1.1 above).
#[tokio::test(flavor = "multi_thread")]
async fn h2_authority_beats_host() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mock = |name: &str, path: &str, auth: &str, body: &str| {
        format!(
            "[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\nauth = \"{auth}\"\n\
             [services.apis.backend]\ntype = \"mock\"\nbody = \"{body}\"\n"
        )
    };
    let cfg = format!(
        "{}[[services]]\nname = \"b\"\nhosts = [\"b.local\"]\n{}\
         [[services]]\nname = \"c\"\nhosts = [\"c.local\"]\n{}",
        keys(),
        mock("open", "/", "none", "service-b"),
        mock("signed", "/", "hmac", "service-c"),
    );
    let kg = Keygate::start(&cfg).await;
    let io = TokioIo::new(TcpStream::connect(kg.addr).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    for (authority, host, want, body) in [
        ("c.local", "b.local", 401, None),
        ("b.local", "c.local", 200, Some("service-b")),
    ] {
        let req = http::Request::builder()
            .uri(format!("http://{authority}/x"))
            .header("host", host)
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 request");
        assert_eq!(resp.status().as_u16(), want, ":authority {authority}");
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        if let Some(b) = body {
            assert_eq!(got, b.as_bytes(), ":authority {authority}");
        }
    }
}

// ------------------------------------------------------------------ framing

fn framing_config(be: SocketAddr) -> String {
    format!(
        "{}[[services]]\nname = \"s\"\n{}{}",
        keys(),
        http_api("public", "/public", "none", be, ""),
        http_api("private", "/private", "hmac", be, "")
    )
}

/// Each vector smuggles `GET /private/x` after a request to the open API. What is
/// accepted: a 400, or exactly one response (the first request, safely framed),
/// the smuggled request never parsed as a request of its own.
const SMUGGLED: &str = "GET /private/x HTTP/1.1\r\nHost: gw.local\r\n\r\n";

fn framing_vectors() -> Vec<(&'static str, String, Option<u16>)> {
    let h = "POST /public/x HTTP/1.1\r\nHost: gw.local\r\n";
    vec![
        // CL.TE and TE.CL: Transfer-Encoding wins, Content-Length is dropped, and the
        // connection is closed after the answer (RFC 9112 §6.3).
        (
            "CL then TE",
            format!("{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(200),
        ),
        (
            "TE then CL",
            format!("{h}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(200),
        ),
        (
            "duplicate CL, different",
            format!("{h}Content-Length: 0\r\nContent-Length: 44\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "chunked, identity",
            format!("{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "two TE lines, identity last",
            format!("{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "TE on HTTP/1.0",
            format!("POST /public/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "obs-fold",
            format!("{h}Content-Length: 0\r\nX-A: a\r\n b\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "obs-fold on TE",
            format!("{h}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "space before colon",
            format!("{h}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "invalid CL",
            format!("{h}Content-Length: +4\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            Some(400),
        ),
        (
            "bad chunk size",
            format!("{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n{SMUGGLED}"),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_and_smuggling_vectors() {
    let rec = Recorder::default();
    let be = rec.spawn().await;
    let kg = Keygate::start(&framing_config(be)).await;
    for (name, bytes, want) in framing_vectors() {
        let replies = exchange(kg.addr, bytes.as_bytes()).await;
        assert!(!replies.is_empty() || want.is_none(), "{name}: no answer");
        // Never a second answer: the smuggled request is not read as a request.
        assert!(replies.len() <= 1, "{name}: {replies:?}");
        if let (Some(want), Some(r)) = (want, replies.first()) {
            assert_eq!(r.status, want, "{name}: {r:?}");
            if want == 200 {
                let j: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                assert_eq!(j["path"], "/public/x", "{name}");
                assert_eq!(j["body"], "", "{name}: body framed as chunked");
                assert!(j["headers"].get("content-length").is_none(), "{name}: {j}");
                assert_eq!(r.header("connection"), Some("close"), "{name}: {r:?}");
            }
        }
        if let Some(r) = replies.first() {
            assert!(r.status != 401, "{name}: the smuggled request was answered");
        }
    }
    // Bare LF line ends are read as line ends, and the request is re-framed.
    let replies = exchange(
        kg.addr,
        b"GET /public/lf HTTP/1.1\nHost: gw.local\nConnection: close\n\n",
    )
    .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(matches!(replies[0].status, 200 | 400), "{replies:?}");
    // A duplicate Content-Length of the same value is framed once.
    let replies = exchange(
        kg.addr,
        b"POST /public/dup HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(matches!(replies[0].status, 200 | 400), "{replies:?}");
    if replies[0].status == 200 {
        let j: serde_json::Value = serde_json::from_str(&replies[0].body).expect("json");
        assert_eq!(j["body"], "ok");
        assert_eq!(j["headers"]["content-length"], serde_json::json!(["2"]));
    }
    let paths = rec.paths();
    assert!(
        paths.iter().all(|p| !p.starts_with("/private")),
        "a smuggled request reached the private API: {paths:?}"
    );
}

// ------------------------------------------------------------------ headers

#[tokio::test(flavor = "multi_thread")]
async fn our_headers_never_reach_the_back_end_in_any_spelling() {
    let rec = Recorder::default();
    let be = rec.spawn().await;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keypair");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwt.pem"), kp.public_key_pem()).expect("write");
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n{}\
         [[jwt_providers]]\nname = \"corp\"\npem_file = \"jwt.pem\"\n\
         claims_to_headers = {{ \"email\" = \"x-user-email\" }}\n\
         [[services]]\nname = \"s\"\n{}{}",
        keys(),
        http_api("open", "/open", "none", be, ""),
        http_api("signed", "/signed", "hmac", be, "")
    );
    let kg = Keygate::start_in(dir, &cfg).await;
    let forged = "X_Keygate_Key_Id: evil\r\nx-keygate_app: evil\r\nX-Keygate-Usage-Plan: evil\r\n\
                  X_KEYGATE_USAGE_PLAN: evil\r\nX-UsagePlan-ID: evil\r\nx_usageplan_id: evil\r\n\
                  X-Keygate-Debug: evil\r\nX-User-Email: evil@x\r\nx_user_email: evil@x\r\n\
                  X-Kept: yes\r\nx_kept_too: yes\r\n";
    // Open API: every forged header is gone, others are kept.
    let r = raw_get(kg.addr, "/open/x", forged).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Signed API: the gateway's own identity headers are the only ones.
    let r2 = raw_get(
        kg.addr,
        "/signed/x",
        &format!("{forged}{}", signed_headers("/signed/x")),
    )
    .await;
    assert_eq!(r2.status, 200, "{r2:?}");
    let seen = rec.seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    for (path, headers) in seen.iter() {
        for name in headers.keys() {
            let folded = name.replace('_', "-");
            let ours = folded.starts_with("x-keygate-")
                || folded == "x-usageplan-id"
                || folded == "x-user-email";
            if ours {
                assert!(
                    path == "/signed/x"
                        && ["x-keygate-key-id", "x-keygate-app"].contains(&name.as_str()),
                    "{path}: {name} reached the back end: {headers:?}"
                );
                assert_eq!(headers[name], vec![KEY_ID.to_string()], "{path}: {name}");
            }
        }
        assert_eq!(headers["x-kept"], vec!["yes".to_string()]);
        assert_eq!(headers["x_kept_too"], vec!["yes".to_string()]);
    }
    assert!(seen[1].1.contains_key("x-keygate-key-id"), "{:?}", seen[1]);
}
