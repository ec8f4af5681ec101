//! Reload, TLS with SNI, websocket pass-through and graceful shutdown.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn mock_api(name: &str, path: &str, body: &str) -> String {
    format!("[[services.apis]]\nname = \"{name}\"\npath = \"{path}\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"{body}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_a_route_while_traffic_flows() {
    let v1 = format!("[[services]]\nname = \"s\"\n{}", mock_api("a", "/a", "A"));
    let kg = Keygate::start(&v1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = vec![];
    for _ in 0..4 {
        let (stop, ok, bad, url) = (stop.clone(), ok.clone(), bad.clone(), kg.url("/a"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&url).await;
                if r.status == StatusCode::OK && r.text() == "A" {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&kg.url("/b")).await.status, StatusCode::NOT_FOUND);
    kg.write_config(&format!("{v1}{}", mock_api("b", "/b", "B")));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("routes added"), "{body}");
    assert_eq!(get(&kg.url("/b")).await.text(), "B");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "no request failed during the reload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_file_keeps_the_running_config() {
    let v1 = format!("[[services]]\nname = \"s\"\n{}", mock_api("a", "/a", "A"));
    let kg = Keygate::start(&v1).await;
    let before = get(&format!("http://{}/-/config", kg.admin)).await.json();
    // Syntax error, then a semantic error (undefined plugin).
    kg.write_config("[[services]\nname = ");
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("line"), "parse errors say where: {body}");
    kg.write_config(&format!(
        "[[services]]\nname = \"s\"\nplugins = [\"nope\"]\n{}",
        mock_api("a", "/a", "A2")
    ));
    let (status, body) = kg.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("services (s)") && body.contains("nope"),
        "{body}"
    );
    assert_eq!(get(&kg.url("/a")).await.text(), "A");
    let after = get(&format!("http://{}/-/config", kg.admin)).await.json();
    assert_eq!(after["hash"], before["hash"]);
    assert_eq!(after["reloads_failed"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_is_picked_up_by_the_watcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = true\n[[services]]\nname = \"s\"\n{}",
        mock_api("a", "/a", "A")
    );
    let kg = Keygate::start_in(dir, &v1).await;
    kg.write_config(&format!("{v1}{}", mock_api("b", "/b", "B")));
    let mut seen = false;
    for _ in 0..100 {
        if get(&kg.url("/b")).await.status == StatusCode::OK {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the watcher reloaded the file within 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificate_by_sni_and_no_sni_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ders = vec![];
    for name in ["a.test", "b.test"] {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        std::fs::write(dir.path().join(format!("{name}.pem")), ck.cert.pem()).expect("write");
        std::fs::write(
            dir.path().join(format!("{name}.key")),
            ck.key_pair.serialize_pem(),
        )
        .expect("write");
        ders.push(ck.cert.der().to_vec());
    }
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
         [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         [[server.tls.certs]]\nhosts = [\"a.test\"]\ncert = \"a.test.pem\"\nkey = \"a.test.key\"\n\
         [[server.tls.certs]]\nhosts = [\"b.test\"]\ncert = \"b.test.pem\"\nkey = \"b.test.key\"\n\
         [[services]]\nname = \"s\"\n{}",
        mock_api("a", "/", "secure")
    );
    let kg = Keygate::start_in(dir, &cfg).await;
    let tls_addr = kg.running.https[0];
    for (i, name) in ["a.test", "b.test"].iter().enumerate() {
        let (der, alpn, body) = tls_get(tls_addr, Some(name), &ders[i])
            .await
            .expect("handshake");
        assert_eq!(der, ders[i], "{name} got its own certificate");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN offers h2");
        assert!(body.contains("secure"), "{body}");
    }
    // An IP-address server name makes rustls send no SNI: refused, no default cert.
    assert!(tls_get(tls_addr, None, &ders[0]).await.is_err());
}

/// Handshake (with or without SNI), then an HTTP/1.1 GET; returns the server's
/// leaf certificate, the ALPN protocol and the response text.
async fn tls_get(
    addr: std::net::SocketAddr,
    sni: Option<&str>,
    root: &[u8],
) -> Result<(Vec<u8>, Option<Vec<u8>>, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg.clone()));
    let name = match sni {
        Some(n) => {
            rustls::pki_types::ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?
        }
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = s.get_ref();
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    drop(s);
    // A second connection speaking HTTP/1.1 only, for the body.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("a.test").to_string())
        .map_err(|e| e.to_string())?;
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    Ok((der, alpn, out))
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_the_proxy() {
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ws_addr = ws.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = ws.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    let cfg = format!(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"ws\"\npath = \"/ws\"\n\
         [services.apis.backend]\ntype = \"websocket\"\nurl = \"http://{ws_addr}\"\n"
    );
    let kg = Keygate::start(&cfg).await;
    let (mut client, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", kg.addr))
        .await
        .expect("websocket handshake through keygate");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        let text = format!("hello {i}");
        client
            .send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .expect("send");
        let back = client.next().await.expect("frame").expect("ok");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_request() {
    let be = spawn_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
             [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"slow\"\npath = \"/\"\n\
             [services.apis.backend]\ntype = \"http\"\nurl = \"http://{be}\"\n"
        ),
    )
    .expect("write");
    let (mut child, addr) = spawn_binary(&path);
    let url = format!("http://{addr}/slow/1500");
    let inflight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let r = inflight.await.expect("request task");
    assert_eq!(r.status, StatusCode::OK, "the in-flight request finished");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "exit 0 after draining: {status:?}");
}

/// kubelet's atomic writer: the file is a symlink through `..data` to a
/// timestamped directory, and an update renames a new `..data` link over the old.
#[tokio::test(flavor = "multi_thread")]
async fn configmap_style_symlink_swap_is_picked_up_by_the_watcher() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let v1 = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = true\n[[services]]\nname = \"s\"\n{}",
        mock_api("a", "/a", "A")
    );
    let write_version = |name: &str, text: &str| {
        std::fs::create_dir(d.join(name)).expect("mkdir");
        std::fs::write(d.join(name).join("keygate.toml"), text).expect("write");
    };
    write_version("..2026_11_23_v1", &v1);
    symlink("..2026_11_23_v1", d.join("..data")).expect("..data");
    symlink("..data/keygate.toml", d.join("keygate.toml")).expect("keygate.toml");
    let running = keygate::server::start(&d.join("keygate.toml"))
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let addr = running.http[0];
    assert_eq!(
        get(&format!("http://{addr}/b")).await.status,
        StatusCode::NOT_FOUND
    );

    write_version(
        "..2026_11_23_v2",
        &format!("{v1}{}", mock_api("b", "/b", "B")),
    );
    symlink("..2026_11_23_v2", d.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(d.join("..2026_11_23_v1")).expect("old version");
    let mut seen = false;
    for _ in 0..100 {
        if get(&format!("http://{addr}/b")).await.status == StatusCode::OK {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the watcher followed the ..data swap within 5 s");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_core_runtime_proxies_from_every_worker_and_stops() {
    let be = spawn_backend().await;
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\nruntime = \"per-core\"\nworkers = 2\n\n[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/\"\n[services.apis.backend]\ntype = \"http\"\nurl = \"http://{be}\"\n"
    );
    let kg = Keygate::start(&cfg).await;
    // A new connection per request: the kernel spreads them over both
    // workers' SO_REUSEPORT listeners, each with its own upstream pool.
    for i in 0..20 {
        let r = get(&kg.url(&format!("/item/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["path"], format!("/item/{i}"));
    }
    let (status, _) = kg.reload().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&kg.url("/after-reload")).await.status, StatusCode::OK);
    kg.running.shutdown().await;
}

/// SO_REUSEPORT would let a second per-core keygate join the first one's
/// listener and take half its traffic; the port in use is refused instead, with
/// either runtime, as it is for any other program's listener.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_in_use_is_refused_with_either_runtime() {
    let cfg = |port: u16, runtime: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\nruntime = \"{runtime}\"\n\n[[services]]\nname = \"s\"\n{}",
            mock_api("a", "/", "first")
        )
    };
    // The default runtime (per-core) holds the port.
    let first = Keygate::start(&cfg(0, "per-core").replace("runtime = \"per-core\"\n", "")).await;
    let port = first.addr.port();
    for runtime in ["per-core", "multi"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, cfg(port, runtime)).expect("write");
        match keygate::server::start(&path).await {
            Ok(r) => {
                r.shutdown().await;
                panic!("a second keygate ({runtime}) started on port {port} in use");
            }
            Err(e) => assert!(e.to_string().contains("cannot listen"), "{e}"),
        }
    }
    // Every request still reaches the first one.
    for _ in 0..10 {
        assert_eq!(get(&first.url("/")).await.text(), "first");
    }
    // Another program's listener too.
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = other.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, cfg(port, "per-core")).expect("write");
    assert!(keygate::server::start(&path).await.is_err());
    first.running.shutdown().await;
}
