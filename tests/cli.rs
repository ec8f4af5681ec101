//! The `keygate` command line: check, sign, keygen.

use std::process::Command;

fn keygate(args: &[&str]) -> (bool, String, String) {
    // The examples read their secrets from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_APP_SECRET", "app-secret")
        .env("KEYGATE_PARTNER_SECRET", "partner-secret")
        .env("KEYGATE_MOBILE_SECRET", "mobile-secret")
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
