//! The `keygate` command line: check, sign, keygen, reload, completions, --version.

use std::process::Command;

fn keygate(args: &[&str]) -> (bool, String, String) {
    // The examples read their secrets from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_APP_SECRET", "app-secret")
        .env("KEYGATE_PARTNER_SECRET", "partner-secret")
        .env("KEYGATE_MOBILE_SECRET", "mobile-secret")
        .env("KEYGATE_KEY_MOBILE_SECRET", "mobile-secret")
        .env("KEYGATE_KEY_PARTNER_SECRET", "partner-secret")
        .output()
        .expect("run keygate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_bundled_examples() {
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).expect("config dir")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (ok, out, err) = keygate(&["check", "-c", path.to_str().expect("utf8")]);
            assert!(ok, "{}: {out}{err}", path.display());
        }
    }
}

/// The configs shipped in `deploy/`: the image's default file and every
/// `keygate.toml: |` block of the Kubernetes ConfigMaps.
#[test]
fn check_accepts_the_deploy_configs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files = vec![std::path::PathBuf::from(format!(
        "{root}/deploy/docker/keygate.toml"
    ))];
    let k8s = format!("{root}/deploy/kubernetes");
    for entry in std::fs::read_dir(&k8s).expect("kubernetes dir") {
        let path = entry.expect("entry").path();
        let yaml = std::fs::read_to_string(&path).expect("read yaml");
        let mut lines = yaml.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(indent) = line.find("keygate.toml: |") else {
                continue;
            };
            let body_indent = indent + 2;
            let mut toml = String::new();
            while let Some(l) = lines.peek() {
                let blank = l.trim().is_empty();
                if !blank && l.len() - l.trim_start().len() < body_indent {
                    break;
                }
                toml.push_str(l.get(body_indent..).unwrap_or(""));
                toml.push('\n');
                lines.next();
            }
            let out = tmp.path().join(format!("block{}.toml", files.len()));
            std::fs::write(&out, toml).expect("write");
            files.push(out);
        }
    }
    assert!(files.len() >= 2, "no ConfigMap block found in {k8s}");
    for f in files {
        let (ok, out, err) = keygate(&["check", "-c", f.to_str().expect("utf8")]);
        assert!(ok, "{}: {out}{err}", f.display());
    }
}

#[test]
fn check_lists_every_problem_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[keys]]
id = "k1"
secret = "${KEYGATE_TEST_SURELY_UNSET}"

[[usage_plans]]
name = "p1"
keys = ["k1", "ghost"]

[[services]]
name = "Bad Name"
usage_plans = ["nope"]

[[services.apis]]
name = "a"
path = "/a"
methods = ["FETCH"]
auth = "jwt"
[services.apis.backend]
type = "http"
url = "http://127.0.0.1:1"
timeout = "45s"
"#,
    )
    .expect("write");
    let (ok, _, err) = keygate(&["check", "-c", path.to_str().expect("utf8")]);
    assert!(!ok);
    for want in [
        "keys[0] (k1): environment variable KEYGATE_TEST_SURELY_UNSET is not set",
        "usage_plans (p1): key \"ghost\" is not defined",
        "services (Bad Name): name must be",
        "usage plan \"nope\" is not defined",
        "services (Bad Name) / apis (a): method \"FETCH\"",
        "needs jwt_provider",
        "timeout must be between",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_reports_unknown_fields_and_syntax_with_a_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_typo = 1\n",
    )
    .expect("write");
    let (ok, _, err) = keygate(&["check", "-c", path.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("listen_typo"),
        "{err}"
    );
    let (ok, _, err) = keygate(&["check", "-c", "/nonexistent/keygate.toml"]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn keygen_prints_an_id_and_a_secret() {
    let (ok, out, _) = keygate(&["keygen"]);
    assert!(ok);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id = "))
        .expect("id line");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .expect("secret line");
    assert!(id.len() > 10 && secret.len() > 30, "{out}");
    let (_, again, _) = keygate(&["keygen"]);
    assert_ne!(out, again);
}

fn check_file(dir: &std::path::Path, text: &str) -> (bool, String, String) {
    let path = dir.join("keygate.toml");
    std::fs::write(&path, text).expect("write");
    keygate(&["check", "-c", path.to_str().expect("utf8")])
}

/// `check` refuses what `run` would refuse: a TLS key of another certificate,
/// a state_dir that cannot be created, an access_file in a missing directory;
/// and warns about an admin listener off loopback.
#[test]
fn check_catches_what_run_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for name in ["a", "b"] {
        let ck = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).expect("cert");
        std::fs::write(d.join(format!("{name}.pem")), ck.cert.pem()).expect("write");
        std::fs::write(d.join(format!("{name}.key")), ck.key_pair.serialize_pem()).expect("write");
    }
    std::fs::write(d.join("plain"), "not a directory").expect("write");
    let (ok, _, err) = check_file(
        d,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"plain/state\"\n\
         [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         [[server.tls.certs]]\nhosts = [\"a.test\"]\ncert = \"a.pem\"\nkey = \"b.key\"\n\
         [log]\naccess_file = \"logs/access.log\"\n",
    );
    assert!(!ok);
    for want in [
        "does not match the certificate",
        "server.state_dir: cannot be created or written",
        "log.access_file: directory",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // Fixed: ok, with a warning for the admin listener.
    std::fs::create_dir(d.join("logs")).expect("mkdir");
    let (ok, out, err) = check_file(
        d,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"0.0.0.0:9901\"\nstate_dir = \"state\"\n\
         [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         [[server.tls.certs]]\nhosts = [\"a.test\"]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [log]\naccess_file = \"logs/access.log\"\n",
    );
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("warning: server.admin: 0.0.0.0:9901 is not a loopback address"),
        "{err}"
    );
}

/// Without `-c`, `check` reads config/keygate.toml like `run`.
#[test]
fn check_defaults_to_config_keygate_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    std::fs::write(
        dir.path().join("config/keygate.toml"),
        "[server]\nworkers = 2000\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check")
        .current_dir(dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("config/keygate.toml"), "{err}");
    assert!(
        err.contains("workers = 2000 is over the maximum of 1024"),
        "{err}"
    );
}

/// Bounds: a back-end timeout under the documented 1 ms minimum is refused.
#[test]
fn check_refuses_durations_under_their_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = check_file(
        dir.path(),
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
         [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"1ns\"\n",
    );
    assert!(!ok);
    assert!(
        err.contains("services (s) / apis (a) / backend: timeout must be between 1ms and 30s"),
        "{err}"
    );
}

/// A problem in the second [[plugins]] item is reported at its line with its
/// name, with a suggestion; references to a plugin that failed are not
/// reported again; an unknown plugin name gets a suggestion.
#[test]
fn plugin_errors_are_located_named_and_not_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = check_file(
        dir.path(),
        "[[plugins]]\nname = \"cors1\"\ntype = \"cors\"\n\n\
         [[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"white\"\nipz = \"10.0.0.0/8\"\n",
    );
    assert!(!ok);
    assert!(
        err.contains("line 9: plugins (wall): unknown field `ipz`"),
        "{err}"
    );
    assert!(err.contains("did you mean \"ips\"?"), "{err}");

    let (ok, _, err) = check_file(
        dir.path(),
        "[[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"grey\"\nips = \"10.0.0.0/8\"\n\
         [[plugins]]\nname = \"ratelimit\"\ntype = \"traffic_control\"\nexpire_type = \"second\"\nip_rate_limit = 5\n\
         [[services]]\nname = \"s\"\nplugins = [\"wall\"]\n\
         [[services.apis]]\nname = \"a\"\npath = \"/a\"\nplugins = [\"wall\", \"ratelimits\"]\n\
         [services.apis.backend]\ntype = \"mock\"\n",
    );
    assert!(!ok);
    assert_eq!(
        err.matches("wall").count(),
        1,
        "one problem for wall, no follow-on:\n{err}"
    );
    assert!(err.contains("line 2: plugins (wall): "), "{err}");
    assert!(
        err.contains("line 15: services (s) / apis (a): plugin \"ratelimits\" is not defined; did you mean \"ratelimit\"?"),
        "{err}"
    );
    // traffic_control with a per-IP limit only is valid.
    assert!(!err.contains("plugins (ratelimit)"), "{err}");
}

fn keygate_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run keygate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The signature of `Authorization: hmac …, signature="…"`.
fn signature_of(authorization: &str) -> &str {
    authorization
        .split("signature=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no signature in {authorization}"))
}

/// `sign` reads the secret from argv, a file or the environment, prints only
/// real headers (the `request-line` pseudo-header is signed, not printed), and
/// `--print-string-to-sign` shows what was signed: the test recomputes the MAC
/// over it.
#[test]
fn sign_secret_sources_string_to_sign_and_no_pseudo_headers() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let secret = "cli-sign-secret";
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{secret}\n")).expect("write secret");
    let file = file.to_str().expect("utf8").to_string();
    let common = [
        "sign",
        "--id",
        "AKIDcli",
        "--algorithm",
        "hmac-sha256",
        "-H",
        "request-line: GET /orders?a=1 HTTP/1.1",
        "-H",
        "X-Trace: 7",
        "--print-string-to-sign",
    ];
    for source in [
        vec!["--secret", secret],
        vec!["--secret-file", file.as_str()],
        vec!["--secret-env", "CLI_SIGN_SECRET"],
    ] {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(&source);
        let (ok, out, err) = keygate_env(&args, &[("CLI_SIGN_SECRET", secret)]);
        assert!(ok, "{source:?}: {out}{err}");
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
            .collect();
        assert_eq!(names, ["Date", "X-Trace", "Authorization"], "{out}");
        assert!(!out.to_ascii_lowercase().contains("request-line:"), "{out}");
        let authorization = out
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: "))
            .expect("Authorization");
        assert!(
            authorization.contains("headers=\"date request-line x-trace\""),
            "{authorization}"
        );
        let date = out
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .expect("Date");
        let sts = err
            .split("string to sign:\n")
            .nth(1)
            .and_then(|s| s.split("\n\n").next())
            .unwrap_or_else(|| panic!("no string to sign in {err}"));
        assert_eq!(
            sts,
            format!("date: {date}\nrequest-line: GET /orders?a=1 HTTP/1.1\nx-trace: 7")
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("mac");
        mac.update(sts.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature_of(authorization), expected, "{source:?}");
        assert!(!out.contains(secret) && !err.contains(secret));
    }
}

#[test]
fn sign_needs_exactly_one_secret_source() {
    let (ok, _, err) = keygate_env(&["sign", "--id", "AKIDcli"], &[]);
    assert!(!ok);
    assert!(err.contains("--secret"), "{err}");
    let (ok, _, err) = keygate_env(
        &["sign", "--id", "a", "--secret", "x", "--secret-env", "X"],
        &[("X", "y")],
    );
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = keygate_env(
        &["sign", "--id", "a", "--secret-env", "KEYGATE_CLI_UNSET_VAR"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("KEYGATE_CLI_UNSET_VAR is not set"), "{err}");
    let (ok, _, err) = keygate_env(
        &[
            "sign",
            "--id",
            "a",
            "--secret-file",
            "/nonexistent/keygate-secret",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("cannot read the secret file"), "{err}");
}

#[test]
fn completions_and_version_with_commit() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = keygate_env(&["completions", shell], &[]);
        assert!(ok, "{shell}: {err}");
        for word in ["keygate", "reload", "secret-file", "completions"] {
            assert!(out.contains(word), "{shell} script lacks {word}");
        }
    }
    let (ok, _, _) = keygate_env(&["completions", "tcsh-or-so"], &[]);
    assert!(!ok);
    let (ok, out, _) = keygate_env(&["--version"], &[]);
    assert!(ok);
    let line = out.trim();
    assert!(
        line.starts_with(&format!("keygate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let commit = line
        .split("(commit ")
        .nth(1)
        .and_then(|c| c.strip_suffix(')'))
        .expect("commit");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
}

/// A `keygate run` child, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `keygate run -c config` and waits for its admin announcement.
fn run_server(config: &std::path::Path) -> Server {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "-c"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn keygate");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.expect("stdout line").contains("admin on") {
            // Keep draining stdout so that later lines never meet a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return server;
        }
    }
    panic!("keygate run ended without announcing its admin listener");
}

/// `keygate reload` calls the admin listener named by the config (or
/// `--admin`): an unchanged file is reported as such, a changed one reloaded
/// with what changed, a broken one refused with its errors (exit 1).
#[test]
fn reload_calls_the_admin_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("keygate.toml");
    let admin = format!("127.0.0.1:{}", free_port());
    let base = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"{admin}\"\nwatch = false\n\n[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"a\"\n"
    );
    std::fs::write(&config, &base).expect("write config");
    let _server = run_server(&config);
    let c = config.to_str().expect("utf8");

    let (ok, out, err) = keygate_env(&["reload", "-c", c], &[]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("configuration unchanged"), "{out}");

    std::fs::write(
        &config,
        format!("{base}[[services.apis]]\nname = \"b\"\npath = \"/b\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"b\"\n"),
    )
    .expect("write config");
    let (ok, out, err) = keygate_env(&["reload", "--admin", &admin], &[]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("configuration reloaded"), "{out}");
    assert!(out.contains("s/b"), "{out}");

    std::fs::write(
        &config,
        format!("{base}[[services.apis]]\nname = \"bad\"\n"),
    )
    .expect("write");
    // The broken file names no readable admin address: ask by address.
    let (ok, out, err) = keygate_env(&["reload", "--admin", &admin], &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("reload refused"), "{err}");
    assert!(err.contains("missing field `path`"), "{err}");

    let (ok, _, err) = keygate_env(
        &["reload", "--admin", &format!("127.0.0.1:{}", free_port())],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("cannot reach the admin listener"), "{err}");
}
