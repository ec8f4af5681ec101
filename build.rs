//! Build script: records the commit keygate is built from, for `--version` and
//! `keygate_build_info`. Without git (a source tarball, a Docker context
//! without `.git`) the commit is `unknown`; `KEYGATE_COMMIT` in the build's
//! environment overrides both.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEYGATE_COMMIT");
    let commit = std::env::var("KEYGATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .filter(|c| c.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KEYGATE_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout); in a worktree the git
    // directory is not `.git`, so ask git where it is.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "logs/HEAD"] {
            let p = std::path::Path::new(&dir).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
