//! Operations, against the real binary with real files: reloads of files
//! written in place or left broken, what each reload logs and counts, plain
//! (uncoloured) logs in files and pipes, JSON startup lines and error codes
//! in the access log.

mod common;
use common::*;
use http::StatusCode;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `keygate` binary on a config file in a temp dir; stderr goes to a file
/// (not a terminal), stdout lines are collected. Killed on drop.
struct Proc {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    admin: String,
    stdout: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    fn start(toml: &str) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, toml)
    }

    fn start_in(dir: tempfile::TempDir, toml: &str) -> Proc {
        let cfg = dir.path().join("keygate.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn keygate");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(std::sync::Mutex::new(vec![]));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().expect("lines").push(l.clone());
                let _ = tx.send(l);
            }
        });
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "keygate did not announce its listeners; stderr:\n{}",
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                )
            });
            let url = match serde_json::from_str::<serde_json::Value>(&l) {
                Ok(v) => v["fields"]["url"].as_str().unwrap_or("").to_string(),
                Err(_) => l.rsplit(' ').next().unwrap_or("").to_string(),
            };
            let host = url.trim_start_matches("http://").to_string();
            if l.contains("listening on http://") {
                addr = Some(host);
            } else if l.contains("admin on http://") {
                admin = Some(host);
            }
        }
        Proc {
            child,
            dir,
            addr: addr.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            stdout: lines,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("keygate.toml")
    }

    fn url(&self, p: &str) -> String {
        format!("http://{}{p}", self.addr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.stderr().lines().filter(|l| l.contains(needle)).count()
    }

    async fn config(&self) -> serde_json::Value {
        get(&format!("http://{}/-/config", self.admin)).await.json()
    }

    /// `keygate_reloads_total{result=...}` from /metrics.
    async fn reloads_metric(&self, result: &str) -> u64 {
        let text = get(&format!("http://{}/metrics", self.admin)).await.text();
        text.lines()
            .find(|l| l.starts_with("keygate_reloads_total") && l.contains(result))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Wait up to 5 s for `cond` on the stderr log.
    async fn wait_log(&self, what: &str, cond: impl Fn(&str) -> bool) {
        for _ in 0..100 {
            if cond(&self.stderr()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} not seen in the log:\n{}", self.stderr());
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(watch: bool, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = {watch}\n{extra}\n\
         [[keys]]\nid = \"k1\"\nsecret = \"s3cret\"\n\n"
    )
}

const PUBLIC: &str = "[[services]]\nname = \"s\"\n\
    [[services.apis]]\nname = \"public\"\npath = \"/public\"\nbackend = { type = \"mock\", body = \"open\" }\n";

/// The private API, `auth` last so that a half-written file lacks it.
fn private(body: &str) -> String {
    format!(
        "[[services.apis]]\nname = \"private\"\npath = \"/private\"\n\
         backend = {{ type = \"mock\", body = \"{body}\" }}\nauth = \"hmac\"\n"
    )
}

/// Issue 11 item 6: a file rewritten in place in two writes, whose first half
/// is valid (the private API without its `auth` line, i.e. `none`), is never
/// loaded: the watcher waits for the file to be quiet.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_file_is_never_loaded() {
    let kg = Proc::start(&format!("{}{PUBLIC}{}", server(true, ""), private("v1")));
    let v1 = kg.config().await["hash"].clone();
    assert_eq!(
        get(&kg.url("/private")).await.status,
        StatusCode::UNAUTHORIZED
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (leaked, tried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = vec![];
    for _ in 0..4 {
        let (stop, leaked, tried, url) = (
            stop.clone(),
            leaked.clone(),
            tried.clone(),
            kg.url("/private"),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&url).await;
                tried.fetch_add(1, Ordering::Relaxed);
                if r.status == StatusCode::OK {
                    leaked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let full = format!("{}{PUBLIC}{}", server(true, ""), private("v2"));
    let cut = full.find("auth = \"hmac\"").expect("auth line");
    let (first, second) = full.split_at(cut);
    assert!(
        keygate::config::compile::parse(first).is_ok(),
        "the first half alone is a valid config"
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(kg.path())
        .expect("open in place");
    f.write_all(first.as_bytes()).expect("first write");
    f.flush().expect("flush");
    // Shorter than the debounce, longer than the old 150 ms settle time.
    tokio::time::sleep(Duration::from_millis(250)).await;
    f.write_all(second.as_bytes()).expect("second write");
    drop(f);

    let mut reloaded = false;
    for _ in 0..100 {
        if kg.config().await["hash"] != v1 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert!(reloaded, "the complete file was loaded");
    assert!(tried.load(Ordering::Relaxed) > 20);
    assert_eq!(
        leaked.load(Ordering::Relaxed),
        0,
        "no unsigned request reached the hmac API"
    );
    let c = kg.config().await;
    assert_eq!(c["reloads_ok"], 1, "one reload, of the whole file: {c}");
    assert_eq!(c["reloads_failed"], 0, "{c}");
    assert_eq!(
        get(&kg.url("/private")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 14 items 2 and 3: a broken file is tried once per content (logged
/// once, counted once), again when it changes; explicit reloads always answer;
/// an unchanged SIGHUP says so; changed items are named.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_tried_once_per_content() {
    let good = format!("{}{PUBLIC}{}", server(true, ""), private("v1"));
    let kg = Proc::start(&good);
    let broken = "[[services]]\nname = \n";
    std::fs::write(kg.path(), broken).expect("write broken");
    kg.wait_log("the refusal", |l| l.contains("reload refused"))
        .await;
    // Quiet for 1.5 s: no retry of the same content.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(kg.count("reload refused"), 1, "{}", kg.stderr());
    assert_eq!(kg.config().await["reloads_failed"], 1);
    assert_eq!(kg.reloads_metric("failed").await, 1);
    // Rewriting the same bytes is the same content.
    std::fs::write(kg.path(), broken).expect("rewrite");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(kg.count("reload refused"), 1, "{}", kg.stderr());

    // Another broken content: tried once more.
    std::fs::write(
        kg.path(),
        "[[services]]\nname = \"s\"\nplugins = [\"nope\"]\n",
    )
    .expect("write");
    kg.wait_log("the second refusal", |l| {
        l.lines().filter(|l| l.contains("reload refused")).count() == 2
    })
    .await;
    // An explicit reload of it is answered (and counted).
    let r = send(
        http::Method::POST,
        &format!("http://{}/-/reload", kg.admin),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(kg.config().await["reloads_failed"], 3);
    assert_eq!(kg.count("reload refused"), 3);

    // Fixed, with a changed API and a changed key setting: named as changed.
    let fixed = good
        .replace("\"v1\"", "\"v2\"")
        .replace("secret = \"s3cret\"", "secret = \"n3w\"");
    std::fs::write(kg.path(), &fixed).expect("write fixed");
    kg.wait_log("the reload", |l| l.contains("configuration reloaded"))
        .await;
    let log = kg.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_default();
    assert!(
        line.contains("routes changed: s/private /private"),
        "{line}"
    );
    assert!(line.contains("keys changed: k1"), "{line}");
    assert!(!line.contains("s/public"), "{line}");
    assert!(!line.contains("n3w"), "no secret in the log: {line}");
    assert_eq!(kg.reloads_metric("ok").await, 1);

    // SIGHUP of the unchanged file: one line saying so, nothing counted.
    kg.signal("-HUP");
    kg.wait_log("the unchanged line", |l| {
        l.contains("configuration unchanged; nothing to reload")
    })
    .await;
    assert_eq!(kg.count("configuration unchanged"), 1);
    let c = kg.config().await;
    assert_eq!(
        (c["reloads_ok"].as_u64(), c["reloads_failed"].as_u64()),
        (Some(1), Some(3))
    );
}

/// Issue 14 item 1: text logs written to a file (stderr redirected) and the
/// access_file carry no ANSI escape.
#[tokio::test(flavor = "multi_thread")]
async fn logs_in_files_have_no_colour() {
    for access_file in [false, true] {
        let extra = if access_file {
            "[log]\naccess_file = \"access.log\"\n"
        } else {
            ""
        };
        let cfg = format!("{}{PUBLIC}{}", server(false, ""), private("v1")).replacen(
            "[[keys]]",
            &format!("{extra}[[keys]]"),
            1,
        );
        let kg = Proc::start(&cfg);
        assert_eq!(get(&kg.url("/public")).await.status, StatusCode::OK);
        assert_eq!(
            get(&kg.url("/private")).await.status,
            StatusCode::UNAUTHORIZED
        );
        let file = if access_file {
            kg.dir.path().join("access.log")
        } else {
            kg.dir.path().join("stderr.log")
        };
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&file).unwrap_or_default();
            if text.contains("/private") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            text.contains("/private"),
            "access line in {}: {text}",
            file.display()
        );
        assert!(
            !text.contains('\u{1b}'),
            "ANSI escape in {}: {text:?}",
            file.display()
        );
        assert!(!kg.stderr().contains('\u{1b}'), "ANSI escape in stderr");
        // Refusals carry their error code.
        let line = text
            .lines()
            .find(|l| l.contains("/private"))
            .unwrap_or_default();
        assert!(line.contains("error_code=\"MissingParameter\""), "{line}");
        let ok = text
            .lines()
            .find(|l| l.contains("/public"))
            .unwrap_or_default();
        assert!(ok.contains("error_code=\"-\""), "{ok}");
    }
}

/// Issue 14 item 8: with `format = "json"` the listening lines on stdout are
/// JSON, one startup line names version, config, hash, listeners and runtime,
/// and a refusal's access line carries its error code.
#[tokio::test(flavor = "multi_thread")]
async fn json_startup_lines_and_error_codes() {
    let cfg = format!(
        "{}{PUBLIC}{}",
        server(false, "[log]\nformat = \"json\"\n"),
        private("v1")
    );
    let kg = Proc::start(&cfg);
    let out = kg.stdout.lock().expect("lines").clone();
    assert!(out.len() >= 2, "{out:?}");
    for l in &out {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["fields"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://")),
            "{l}"
        );
    }
    assert_eq!(
        get(&kg.url("/private")).await.status,
        StatusCode::UNAUTHORIZED
    );
    kg.wait_log("the access line", |l| l.contains("\"path\":\"/private\""))
        .await;
    let log = kg.stderr();
    let mut started = 0;
    let mut code = None;
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let f = &v["fields"];
        if f["message"] == "keygate started" {
            started += 1;
            assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(f["hash"], kg.config().await["hash"]);
            assert!(
                f["config"]
                    .as_str()
                    .is_some_and(|c| c.ends_with("keygate.toml")),
                "{l}"
            );
            assert!(
                f["listeners"]
                    .as_str()
                    .is_some_and(|s| s.contains(&kg.addr)),
                "{l}"
            );
            assert_eq!(f["runtime"], "per-core", "the default runtime");
        }
        if f["path"] == "/private" {
            code = f["error_code"].as_str().map(str::to_string);
        }
    }
    assert_eq!(started, 1, "{log}");
    let code = code.expect("access line");
    assert!(code != "-" && !code.is_empty(), "{code}");
}

/// `workers` is bounded before any thread is started, so the binary exits
/// with the problem instead of hanging.
#[test]
fn unbounded_workers_are_refused_before_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("keygate.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nworkers = 100000\n",
    )
    .expect("write");
    let out = run_with_timeout(&cfg, Duration::from_secs(10));
    assert!(
        out.contains("workers = 100000 is over the maximum of 1024"),
        "{out}"
    );
}

fn run_with_timeout(cfg: &Path, limit: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success());
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return err;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 14 item 3: a changed plugin, usage plan, key setting or API is named
/// as changed (not only added and removed ones), and nothing else is.
#[test]
fn inventory_names_changed_items() {
    use keygate::config::compile::{compile, parse};
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = keygate::policy::limits::LimitState::in_memory();
    let state = keygate::state::State::new(dir.path(), 16, limits);
    let text = |ips: &str, qps: u32, enabled: bool, body: &str| {
        format!(
            "[[keys]]\nid = \"k1\"\nsecret = \"s\"\nenabled = {enabled}\n\
             [[keys]]\nid = \"k2\"\nsecret = \"s\"\n\
             [[usage_plans]]\nname = \"gold\"\nqps = {qps}\nkeys = [\"k1\"]\n\
             [[usage_plans]]\nname = \"free\"\nkeys = [\"k2\"]\n\
             [[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"white\"\nips = \"{ips}\"\n\
             [[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"minute\"\nip_rate_limit = 5\n\
             [[services]]\nname = \"s\"\nusage_plans = [\"gold\", \"free\"]\nplugins = [\"flow\"]\n\
             [[services.apis]]\nname = \"a\"\npath = \"/a\"\nauth = \"hmac\"\nplugins = [\"wall\"]\n\
             backend = {{ type = \"mock\", body = \"{body}\" }}\n\
             [[services.apis]]\nname = \"b\"\npath = \"/b\"\nbackend = {{ type = \"mock\" }}\n"
        )
    };
    let build = |t: String| {
        let raw = parse(&t).expect("parses");
        compile(&raw, "h".into(), &state)
            .expect("compiles")
            .inventory
    };
    let old = build(text("10.0.0.0/8", 10, true, "x"));
    assert!(build(text("10.0.0.0/8", 10, true, "x"))
        .diff(&old)
        .is_empty());
    let new = build(text("10.0.0.0/16", 20, false, "y"));
    assert_eq!(
        new.diff(&old),
        vec![
            "routes changed: s/a /a",
            "keys changed: k1",
            "plugins changed: wall",
            "usage plans changed: gold",
        ]
    );
}

/// Issue 14 item 6: a traffic_control plugin with a per-IP limit only.
#[tokio::test(flavor = "multi_thread")]
async fn traffic_control_with_a_per_ip_limit_only() {
    let kg = Keygate::start(
        "[[plugins]]\nname = \"per-ip\"\ntype = \"traffic_control\"\nexpire_type = \"day\"\nip_rate_limit = 2\n\
         [[services]]\nname = \"s\"\nplugins = [\"per-ip\"]\n\
         [[services.apis]]\nname = \"a\"\npath = \"/a\"\nbackend = { type = \"mock\", body = \"A\" }\n",
    )
    .await;
    let mut statuses = vec![];
    for _ in 0..3 {
        statuses.push(get(&kg.url("/a")).await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}

/// On a terminal the text log is coloured, unless `NO_COLOR` is set. The
/// terminal is a pty from util-linux `script`; keygate runs under `timeout`
/// so that it stops by itself (SIGTERM: drain and exit).
#[test]
fn colour_on_a_terminal_unless_no_color() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("keygate.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n",
    )
    .expect("write");
    let cmd = format!(
        "timeout 2 {} run -c {}",
        env!("CARGO_BIN_EXE_keygate"),
        cfg.display()
    );
    let on_pty = |no_color: bool| {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().unwrap_or_else(|e| {
            panic!("this test needs `script` (util-linux) to run keygate on a pty: {e}")
        });
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_pty(false);
    assert!(coloured.contains("keygate started"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = on_pty(true);
    assert!(plain.contains("keygate started"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}
