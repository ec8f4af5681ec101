//! The `keygate` command line: check, sign, keygen.

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
