//! Integration harness: keygate and real back ends on loopback port 0, spoken to
//! over real sockets.
#![allow(dead_code)]

pub mod signers;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::server::Running;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct Keygate {
    pub dir: tempfile::TempDir,
    pub running: Running,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Keygate {
    /// Start keygate on `toml`. Listeners and admin bind port 0 unless the text sets them.
    pub async fn start(toml: &str) -> Keygate {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, toml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> Keygate {
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, with_server(toml)).expect("write config");
        let running = keygate::server::start(&path)
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let addr = running.http[0];
        let admin = running.admin.expect("admin listener");
        Keygate {
            dir,
            running,
            addr,
            admin,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keygate.toml")
    }

    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.config_path(), with_server(toml)).expect("write config");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn reload(&self) -> (StatusCode, String) {
        let r = send(
            Method::POST,
            &format!("http://{}/-/reload", self.admin),
            &[],
            Bytes::new(),
        )
        .await;
        (r.status, r.text())
    }
}

/// Add a `[server]` table binding port 0 when the test's config has none.
fn with_server(toml: &str) -> String {
    if toml.contains("[server]") {
        toml.to_string()
    } else {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\n{toml}"
        )
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client()
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("request to {url}: {e:?}"));
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// A back end that echoes what it received as JSON. `/slow/<ms>` waits first,
/// `/status/<code>` answers that status.
pub async fn spawn_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service_fn(echo))
                    .await;
            });
        }
    });
    addr
}

async fn echo(req: Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let mut status = 200;
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.split('/').next()?.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        status = code;
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
        );
    }
    let out = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body_len": body.len(),
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = hyper::Response::new(Full::new(Bytes::from(out.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(r)
}

/// A port with nothing listening on it.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Run the real `keygate` binary on `config`; returns the child and its first
/// plain listener's address (read from the `listening on` line, text or JSON).
/// stdout keeps being drained so that later lines never meet a closed pipe.
pub fn spawn_binary(config: &std::path::Path) -> (std::process::Child, SocketAddr) {
    spawn_binary_with_env(config, &[])
}

/// [`spawn_binary`] with extra environment variables.
pub fn spawn_binary_with_env(
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn keygate");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            // Text (`keygate: listening on URL`) or, with `format = "json"`, JSON.
            let json = serde_json::from_str::<serde_json::Value>(&l).ok();
            let url = json.as_ref().and_then(|v| v["fields"]["url"].as_str());
            match url {
                Some(u) if l.contains("listening on") => u.strip_prefix("http://"),
                _ => l.strip_prefix("keygate: listening on http://"),
            }
            .map(str::to_string)
        })
        .expect("listening line")
        .parse()
        .expect("listening address");
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}
