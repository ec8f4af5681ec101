//! HTTP interop with clients and back ends written by others: the real `curl`
//! (HTTP/1.1, h2c prior knowledge, h2 over TLS) through keygate to a real nginx
//! (HTTP/1.1 and h2c back end), an HTTP/1.0 back end (`python3 -m http.server`),
//! a gRPC-like exchange with trailers, and client faults that must not be blamed
//! on the back end. nginx, curl and python3 are installed by `.ci/test`; a
//! missing one fails the test with its name.

mod common;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not listen on port {port} within 5 s");
}

/// Deterministic, non-repeating-looking bytes.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1] ^ seed)
        .collect()
}

/// nginx on a loopback port, serving `www/` with WebDAV PUT under `/files/`, a
/// POST to a static file answered with the file (405 → 200), and `/headers`
/// echoing what it was sent. `h2c` makes it an HTTP/2-only (prior knowledge) server.
/// One process (`master_process off`), so that killing it leaves no worker behind.
struct Nginx {
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(h2c: bool) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("www/files")).expect("www");
        std::fs::write(dir.path().join("www/files/big.bin"), pattern(2 << 20, 7)).expect("file");
        let port = free_port();
        let user = if is_root() { "user root;" } else { "" };
        let http2 = if h2c { " http2" } else { "" };
        let conf = format!(
            r#"{user}
master_process off;
worker_processes 1;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 50m;
    server {{
        listen 127.0.0.1:{port}{http2};
        root {d}/www;
        add_header X-Proto $server_protocol always;
        location /files/ {{
            dav_methods PUT;
            create_full_put_path on;
            error_page 405 =200 $uri;
        }}
        location = /headers {{
            return 200 "host=$http_host te=$http_te xfh=$http_x_forwarded_host proto=$server_protocol\n";
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        // Debian's nginx lives in /usr/sbin, often not on a user's PATH.
        let bin = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "nginx (/usr/sbin/nginx) is needed for this test (.ci/test installs it): {e}"
                )
            });
        let proc = Proc(child);
        wait_listening(port, "nginx").await;
        Nginx {
            _proc: proc,
            port,
            dir,
        }
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("www/files").join(name)).expect("nginx file")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Run the real curl; returns (stdout, stderr) and fails on a non-zero exit.
async fn curl(args: &[String]) -> (Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is needed for this test (.ci/test installs it): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {args:?} failed: {stderr}");
    (out.stdout, stderr)
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Self-signed certificate for `kg.test`, written as `kg.pem`/`kg.key` in `dir`.
fn write_cert(dir: &Path) -> PathBuf {
    let ck = rcgen::generate_simple_self_signed(vec!["kg.test".to_string()]).expect("cert");
    std::fs::write(dir.join("kg.pem"), ck.cert.pem()).expect("write");
    std::fs::write(dir.join("kg.key"), ck.key_pair.serialize_pem()).expect("write");
    dir.join("kg.pem")
}

const TLS_SERVER: &str =
    "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
    [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
    [[server.tls.certs]]\nhosts = [\"kg.test\"]\ncert = \"kg.pem\"\nkey = \"kg.key\"\n";

fn nginx_apis(port: u16, http2: bool) -> String {
    format!(
        r#"
[[services]]
name = "s"

[[services.apis]]
name = "files"
path = "/files/"
[services.apis.backend]
url = "http://127.0.0.1:{port}"
path = "/files/"
http2 = {http2}

[[services.apis]]
name = "headers"
path = "/headers"
[services.apis.backend]
url = "http://127.0.0.1:{port}"
path = "/headers"
http2 = {http2}
"#
    )
}

/// The three ways curl reaches keygate: (label, expected `%{http_version}`,
/// curl flags, base URL).
fn client_modes(
    kg: &Keygate,
    cert: &Path,
) -> Vec<(&'static str, &'static str, Vec<String>, String)> {
    let tls = kg.running.https[0];
    vec![
        (
            "h1",
            "1.1",
            vec![s("--http1.1")],
            format!("http://{}", kg.addr),
        ),
        (
            "h2c",
            "2",
            vec![s("--http2-prior-knowledge")],
            format!("http://{}", kg.addr),
        ),
        (
            "h2-tls",
            "2",
            vec![
                s("--http2"),
                s("--cacert"),
                cert.display().to_string(),
                s("--resolve"),
                format!("kg.test:{}:127.0.0.1", tls.port()),
            ],
            format!("https://kg.test:{}", tls.port()),
        ),
    ]
}

/// For each client mode: a streamed PUT stored by nginx byte for byte, a GET of
/// it back, a streamed POST answered with a 2 MiB file, in the client's version.
async fn round_trips(kg: &Keygate, ngx: &Nginx, cert: &Path, backend_proto: &str) {
    let upload = pattern(1_500_000, 3);
    let up_path = kg.dir.path().join("upload.bin");
    std::fs::write(&up_path, &upload).expect("upload");
    let big = ngx.file("big.bin");
    for (label, version, flags, base) in client_modes(kg, cert) {
        let name = format!("up-{label}-{}.bin", backend_proto.replace('/', ""));
        // Streamed upload: chunked on HTTP/1.1, DATA frames on h2.
        let mut args = flags.clone();
        args.extend([s("-H"), s("Expect:")]);
        if version == "1.1" {
            args.extend([s("-H"), s("Transfer-Encoding: chunked")]);
        }
        args.extend([
            s("-T"),
            up_path.display().to_string(),
            s("-o"),
            s("/dev/null"),
            s("-w"),
            s("%{http_code} %{http_version}"),
            format!("{base}/files/{name}"),
        ]);
        let (out, _) = curl(&args).await;
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("201 {version}"),
            "{label}: PUT through keygate to nginx"
        );
        assert!(
            ngx.file(&name) == upload,
            "{label}: nginx stored the exact body"
        );

        let mut args = flags.clone();
        args.extend([format!("{base}/files/{name}")]);
        let (out, _) = curl(&args).await;
        assert!(out == upload, "{label}: GET returns the stored body");

        // A POST answered with a 2 MiB file. nginx answers a POST to a static
        // file before it has read the body. curl 7.88 over h2 cannot take an
        // early answer to a long upload (it stops reading the connection while
        // its upload waits for window; and it fails on the RST_STREAM(NO_ERROR)
        // RFC 9113 §8.1 prescribes for it, which nginx h2 sends), so h2 clients
        // send a body within the initial window, and the h2 back end gets a GET.
        let (method, post) = match (version, backend_proto) {
            ("1.1", "HTTP/1.1") => ("POST", up_path.clone()),
            (_, "HTTP/1.1") => {
                let small = kg.dir.path().join("small.bin");
                std::fs::write(&small, &upload[..16_000]).expect("write");
                ("POST", small)
            }
            _ => ("GET", up_path.clone()),
        };
        let mut args = flags.clone();
        if method == "POST" {
            args.extend([s("--data-binary"), format!("@{}", post.display())]);
        }
        args.extend([
            s("-H"),
            s("Expect:"),
            s("-D"),
            s("-"),
            format!("{base}/files/big.bin"),
        ]);
        let (out, _) = curl(&args).await;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head and body");
        let head = String::from_utf8_lossy(&out[..split]).to_lowercase();
        let status_line = if version == "1.1" {
            "http/1.1 200"
        } else {
            "http/2 200"
        };
        assert!(head.starts_with(status_line), "{label}: {head}");
        assert!(
            head.contains(&format!("x-proto: {}", backend_proto.to_lowercase())),
            "{label}: nginx spoke {backend_proto}: {head}"
        );
        assert!(
            out[split + 4..] == big[..],
            "{label}: 2 MiB body streamed back"
        );

        let mut args = flags.clone();
        args.extend([s("-H"), s("TE: trailers"), format!("{base}/headers")]);
        let (out, _) = curl(&args).await;
        let text = String::from_utf8_lossy(&out);
        let authority = base.split("://").nth(1).unwrap_or("");
        assert!(
            text.contains(&format!("xfh={authority} ")),
            "{label}: Host / :authority reaches X-Forwarded-Host: {text}"
        );
        assert!(
            text.contains(&format!("proto={backend_proto}")),
            "{label}: {text}"
        );
        if backend_proto == "HTTP/1.1" {
            assert!(text.contains("te= "), "{label}: no TE to HTTP/1.1: {text}");
        } else {
            assert!(
                text.contains("te=trailers "),
                "{label}: te: trailers to h2: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_h1_h2c_and_h2_tls_through_keygate_to_nginx_http1() {
    let ngx = Nginx::start(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = write_cert(dir.path());
    let cfg = format!("{TLS_SERVER}{}", nginx_apis(ngx.port, false));
    let kg = Keygate::start_in(dir, &cfg).await;
    round_trips(&kg, &ngx, &cert, "HTTP/1.1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_backend_nginx_h2c_serves_h1_and_h2_clients() {
    let ngx = Nginx::start(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = write_cert(dir.path());
    let cfg = format!("{TLS_SERVER}{}", nginx_apis(ngx.port, true));
    let kg = Keygate::start_in(dir, &cfg).await;
    round_trips(&kg, &ngx, &cert, "HTTP/2.0").await;
}

/// `python3 -m http.server` answers HTTP/1.0 and closes after each response;
/// keygate's clients keep their version and their keep-alive connection.
#[tokio::test(flavor = "multi_thread")]
async fn http10_backend_does_not_downgrade_keepalive_clients() {
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::write(www.path().join("hello.txt"), "hello from python\n").expect("write");
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(www.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is needed for this test (.ci/test installs it): {e}"));
    let _py = Proc(child);
    wait_listening(port, "python3 -m http.server").await;
    let kg = Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "py"
path = "/py/"
[services.apis.backend]
url = "http://127.0.0.1:{port}"
path = "/"
"#
    ))
    .await;
    let url = kg.url("/py/hello.txt");
    // (curl 7.88 cannot reuse an h2c prior-knowledge connection for a second
    // transfer, whatever the server: the h2 client below does that part.)
    for (flag, version) in [("--http1.1", "1.1")] {
        let (out, _) = curl(&[
            s(flag),
            s("-o"),
            s("/dev/null"),
            s("-o"),
            s("/dev/null"),
            s("-w"),
            s("%{http_code} %{http_version} %{num_connects}\n"),
            url.clone(),
            url.clone(),
        ])
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("200 {version} 1\n200 {version} 0\n"),
            "{flag}: both answers in the client's version on one connection"
        );
    }
    let (out, _) = curl(&[
        s("--http2-prior-knowledge"),
        s("-w"),
        s(" %{http_code} %{http_version}"),
        url.clone(),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&out), "hello from python\n 200 2");
    let sock = TcpStream::connect(kg.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = Request::get(url.clone())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello from python\n");
    }
    // And on a raw HTTP/1.1 socket: no `Connection: close`, no HTTP/1.0.
    let mut sock = TcpStream::connect(kg.addr).await.expect("connect");
    for _ in 0..2 {
        sock.write_all(b"GET /py/hello.txt HTTP/1.1\r\nHost: kg\r\n\r\n")
            .await
            .expect("write");
        let head = read_head(&mut sock).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.to_lowercase().contains("connection: close"), "{head}");
        let len: usize = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        let mut body = vec![0; len];
        sock.read_exact(&mut body).await.expect("body");
        assert_eq!(body, b"hello from python\n");
    }
}

async fn read_head(sock: &mut TcpStream) -> String {
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut b))
            .await
            .expect("head within 10 s")
            .expect("read");
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

type GrpcBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A gRPC-like h2c back end: checks `te: trailers` and the gRPC content type,
/// echoes the message and ends with `grpc-status` trailers (3 when a check failed).
async fn spawn_grpc_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                    let ct_ok = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v == "application/grpc");
                    let v2 = req.version() == http::Version::HTTP_2;
                    let msg = req.into_body().collect().await.map(|c| c.to_bytes());
                    let (status, message) = match (te_ok, ct_ok, v2, msg) {
                        (true, true, true, Ok(m)) => ("0", m),
                        (te, ct, v2, _) => {
                            ("3", Bytes::from(format!("te_ok={te} ct_ok={ct} h2={v2}")))
                        }
                    };
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", status.parse().expect("value"));
                    trailers.insert("grpc-message", "done".parse().expect("value"));
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                        vec![Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
                    let body: GrpcBody = StreamBody::new(futures_util::stream::iter(frames));
                    let mut r = Response::new(body);
                    r.headers_mut()
                        .insert("content-type", "application/grpc".parse().expect("value"));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

/// gRPC through keygate over h2c both sides: `te: trailers` and the content type
/// reach the back end, the trailers come back, `grpc-status` is in the access log.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_like_exchange_keeps_te_trailers_and_returns_trailers() {
    let be = spawn_grpc_backend().await;
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
[[services]]
name = "g"
[[services.apis]]
name = "greeter"
path = "/helloworld.Greeter/"
[services.apis.backend]
url = "http://{be}"
path = "/helloworld.Greeter/"
http2 = true
"#
        ),
    )
    .expect("write");
    let (child, addr) = spawn_binary(&path);
    let _kg = Proc(child);

    let sock = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let msg = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    for i in 0..3 {
        let req = Request::post(format!("http://{addr}/helloworld.Greeter/SayHello"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request-id", format!("grpc-{i}"))
            .body(Full::new(msg.clone()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers passed back");
        let body = collected.to_bytes();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "back end's checks: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, msg);
    }
    let log = dir.path().join("access.log");
    let mut seen = false;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if (0..3).all(|i| {
            text.lines().any(|l| {
                l.contains(&format!("\"request_id\":\"grpc-{i}\""))
                    && l.contains("\"grpc_status\":\"0\"")
            })
        }) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen,
        "grpc_status 0 logged for each call: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Send raw bytes, half-close, and return whatever answer came (maybe none).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(bytes).await.expect("write");
    if close_write {
        let _ = sock.shutdown().await;
    }
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Client faults (aborted body, broken chunked framing, over h1 and h2) are the
/// client's: 400 or 499, never 502; the back-end counters do not move and no
/// target is ejected (both targets still answer afterwards, max_fails = 1).
#[tokio::test(flavor = "multi_thread")]
async fn client_body_faults_are_not_blamed_on_the_back_end() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let kg = Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "echo"
path = "/echo/"
[services.apis.backend]
urls = ["http://{a}", "http://{b}"]
path = "/"
max_fails = 1
fail_timeout = "60s"
"#
    ))
    .await;
    for _ in 0..3 {
        let broken = raw_exchange(
            kg.addr,
            b"POST /echo/x HTTP/1.1\r\nHost: kg\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ-not-hex\r\n\r\n",
            false,
        )
        .await;
        assert!(
            broken.starts_with("HTTP/1.1 400"),
            "broken chunked: {broken:?}"
        );
        let aborted = raw_exchange(
            kg.addr,
            b"POST /echo/x HTTP/1.1\r\nHost: kg\r\nContent-Length: 100000\r\n\r\nonly a few bytes",
            true,
        )
        .await;
        assert!(!aborted.contains(" 502 "), "aborted body: {aborted:?}");
        if !aborted.is_empty() {
            assert!(
                aborted.starts_with("HTTP/1.1 499"),
                "aborted body: {aborted:?}"
            );
        }
    }
    // h2: the client resets its stream in the middle of the body.
    let sock = TcpStream::connect(kg.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..3 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(Box::pin(tokio_stream_from(rx)));
        let req = Request::post(format!("http://{}/echo/h2", kg.addr))
            .header("content-length", "100000")
            .body(body)
            .expect("request");
        let pending = tokio::spawn(sender.send_request(req));
        tx.send(Ok(Frame::data(Bytes::from_static(b"partial"))))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(Err(std::io::Error::other("client gives up")))
            .await
            .expect("send");
        match pending.await.expect("join") {
            Ok(resp) => assert_ne!(resp.status(), StatusCode::BAD_GATEWAY),
            Err(e) => assert!(!format!("{e:?}").contains("502"), "{e:?}"),
        }
    }

    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = get(&kg.url("/echo/after")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        hosts.insert(
            r.json()["headers"]["host"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(
        hosts,
        [a.to_string(), b.to_string()].into_iter().collect(),
        "no target was ejected"
    );
    let m = get(&format!("http://{}/metrics", kg.admin)).await.text();
    assert!(
        !m.contains("keygate_backend_responses_total{route=\"s/echo\",code=\"502\"}"),
        "{m}"
    );
    assert!(
        m.contains("keygate_backend_errors_total{route=\"s/echo\",class=\"5xx\"} 0\n"),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l
            .starts_with("keygate_frontend_errors_total{route=\"s/echo\",reason=\"request\"}")
            && !l.ends_with(" 0")),
        "client faults are counted as the request's: {m}"
    );
}

/// A receiver as a stream, without a dependency on tokio-stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// A back end that answers every request head with `answer`, then closes.
async fn raw_backend(answer: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = vec![];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// A back end whose chunked body is broken from its first byte, and one whose
/// head is larger than the limit: both a 502 to the client, not an empty reply.
#[tokio::test(flavor = "multi_thread")]
async fn broken_backend_responses_are_502() {
    let chunked = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\nxx\r\n".to_vec(),
    )
    .await;
    let mut huge = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("x-filler-{i}: {}\r\n", "f".repeat(60)).as_bytes());
    }
    huge.extend_from_slice(b"\r\nok");
    let huge = raw_backend(huge).await;
    let kg = Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "chunked"
path = "/chunked/"
[services.apis.backend]
url = "http://{chunked}"
path = "/"
[[services.apis]]
name = "huge"
path = "/huge/"
[services.apis.backend]
url = "http://{huge}"
path = "/"
"#
    ))
    .await;
    for path in ["/chunked/x", "/huge/x"] {
        let r = get(&kg.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {}", r.text());
    }
}

/// An HTTP/1.1 back end answering a chunked body with a declared trailer: the
/// trailer reaches an HTTP/1.1 client that accepts trailers and an h2 client.
#[tokio::test(flavor = "multi_thread")]
async fn http1_backend_trailers_reach_h1_and_h2_clients() {
    // Trailers are sent whatever the request's TE said (hyper's server would
    // want `TE: trailers`, which is not passed to HTTP/1.1 back ends).
    let be = raw_backend(
        b"HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\npart one, \r\n8\r\npart two\r\n0\r\nx-checksum: abc123\r\n\r\n"
            .to_vec(),
    )
    .await;
    let kg = Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "t"
path = "/t/"
[services.apis.backend]
url = "http://{be}"
path = "/"
"#
    ))
    .await;
    let mut sock = TcpStream::connect(kg.addr).await.expect("connect");
    sock.write_all(b"GET /t/x HTTP/1.1\r\nHost: kg\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = vec![];
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(
        text.contains("\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{text}"
    );

    let sock = TcpStream::connect(kg.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(kg.url("/t/x"))
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.expect("body");
    assert_eq!(
        collected.trailers().and_then(|t| t.get("x-checksum")),
        Some(&http::HeaderValue::from_static("abc123"))
    );
    assert_eq!(collected.to_bytes(), "part one, part two");
}

/// `http2 = true` on an `https://` target negotiates `h2` by ALPN (the target
/// offers nothing else); without it keygate offers only `http/1.1`, which this
/// target refuses: a 502, not a silent HTTP/2.
#[tokio::test(flavor = "multi_thread")]
async fn http2_backend_over_tls_negotiates_h2_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("be.pem"), ck.cert.pem()).expect("write");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server cert");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h2_conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = h2_conns.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let text = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let kg = Keygate::start_in(
        dir,
        &format!(
            r#"
[[services]]
name = "s"
[[services.apis]]
name = "h2"
path = "/h2/"
[services.apis.backend]
url = "https://localhost:{port}"
path = "/"
ca_file = "be.pem"
http2 = true
[[services.apis]]
name = "h1"
path = "/h1/"
[services.apis.backend]
url = "https://localhost:{port}"
path = "/"
ca_file = "be.pem"
"#
        ),
    )
    .await;
    for _ in 0..3 {
        let r = get(&kg.url("/h2/grpc")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.text(), "HTTP/2.0 /grpc");
    }
    // Concurrent requests are multiplexed on the pooled connection.
    let url = kg.url("/h2/many");
    let all = futures_util::future::join_all((0..10).map(|_| get(&url))).await;
    assert!(all.iter().all(|r| r.status == StatusCode::OK));
    // One connection per worker at most: with the default per-core runtime
    // each worker thread keeps its own pool.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let conns = h2_conns.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=workers).contains(&conns), "{conns} connections");
    let r = get(&kg.url("/h1/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
}

/// A client that stalls in the middle of its body past the back end's timeout
/// gets 408 (its slowness), not 504, and the targets stay in (max_fails = 1).
/// A back end that is slow by itself is still a 504 and counted.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_client_body_is_408_and_slow_backend_is_504() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let kg = Keygate::start(&format!(
        r#"
[[services]]
name = "s"
[[services.apis]]
name = "echo"
path = "/echo/"
[services.apis.backend]
urls = ["http://{a}", "http://{b}"]
path = "/"
timeout = "300ms"
max_fails = 1
fail_timeout = "60s"
"#
    ))
    .await;
    for _ in 0..2 {
        let mut sock = TcpStream::connect(kg.addr).await.expect("connect");
        sock.write_all(
            b"POST /echo/x HTTP/1.1\r\nHost: kg\r\nContent-Length: 100\r\n\r\nten bytes.",
        )
        .await
        .expect("write");
        let head = read_head(&mut sock).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = get(&kg.url("/echo/after")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        hosts.insert(
            r.json()["headers"]["host"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(hosts.len(), 2, "no target was ejected: {hosts:?}");
    let m = get(&format!("http://{}/metrics", kg.admin)).await.text();
    // Exported from the start, and still 0: no client fault counted as the back end's.
    assert!(
        m.contains("keygate_backend_errors_total{route=\"s/echo\",class=\"5xx\"} 0\n"),
        "{m}"
    );
    let slow = get(&kg.url("/echo/slow/1000")).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    let m = get(&format!("http://{}/metrics", kg.admin)).await.text();
    assert!(
        m.contains("keygate_backend_errors_total{route=\"s/echo\",class=\"5xx\"} 1"),
        "{m}"
    );
}

/// An h2 client that resets its stream while keygate waits for a slow back end
/// is logged as 499 (nginx's client-closed), with its request id.
#[tokio::test(flavor = "multi_thread")]
async fn client_gone_while_waiting_for_the_back_end_is_logged_499() {
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
[[services]]
name = "s"
[[services.apis]]
name = "slow"
path = "/slow/"
[services.apis.backend]
url = "http://{be}"
"#
        ),
    )
    .expect("write");
    let (child, addr) = spawn_binary(&path);
    let _kg = Proc(child);
    let sock = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}/slow/3000"))
        .header("x-request-id", "gone-1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    // Dropping the pending response resets the stream (RST_STREAM CANCEL).
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sender.send_request(req)).await;
    assert!(gave_up.is_err(), "the back end answers only after 3 s");
    let log = dir.path().join("access.log");
    let mut line = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .find(|l| l.contains("\"request_id\":\"gone-1\""))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.expect("an access line for the abandoned request");
    assert!(line.contains("\"status\":499"), "{line}");
}

/// `http2 = true` is a backend field `keygate check` knows; it cannot carry
/// websocket upgrades, which is a configuration error with its location.
#[test]
fn check_knows_http2_and_refuses_it_for_websockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, kind: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/\"\n\
                 [services.apis.backend]\ntype = \"{kind}\"\nurl = \"http://127.0.0.1:1\"\nhttp2 = true\n"
            ),
        )
        .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run keygate check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check("h2.toml", "http");
    assert!(ok, "{text}");
    let (ok, text) = check("ws.toml", "websocket");
    assert!(!ok, "{text}");
    assert!(
        text.contains("http2 = true cannot carry websocket upgrades"),
        "{text}"
    );
}
