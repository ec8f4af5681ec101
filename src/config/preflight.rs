//! What `keygate run` would refuse or regret beyond the config's own validity:
//! the file system it writes to and where its admin listener is reachable.
//! `keygate check` runs these after compiling, so that a file it calls ok
//! also starts.

use super::error::ConfigError;
use super::raw::RawConfig;
use std::net::SocketAddr;
use std::path::Path;

/// Problems (`run` would refuse to start) and warnings (it would start).
#[derive(Debug, Default)]
pub struct Preflight {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

fn writable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// A directory keygate creates on start (`state_dir`): either it is a writable
/// directory, or its nearest existing ancestor is one.
fn creatable_dir(dir: &Path) -> Result<(), String> {
    let mut p = dir;
    loop {
        if p.exists() {
            if !p.is_dir() {
                return Err(format!("{} is not a directory", p.display()));
            }
            if !writable(p) {
                return Err(format!("{} is not writable", p.display()));
            }
            return Ok(());
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return Ok(()),
        }
    }
}

pub fn check(raw: &RawConfig, base: &Path) -> Preflight {
    let mut out = Preflight::default();
    let state_dir = base.join(&raw.server.state_dir);
    if let Err(m) = creatable_dir(&state_dir) {
        out.errors.push(ConfigError {
            location: "server.state_dir".into(),
            message: format!("cannot be created or written: {m}"),
        });
    }
    if let Some(f) = &raw.log.access_file {
        let path = base.join(f);
        let dir = path.parent().unwrap_or(base);
        let problem = if path.is_dir() {
            Some(format!("{} is a directory", path.display()))
        } else if !dir.is_dir() {
            Some(format!("directory {} does not exist", dir.display()))
        } else if path.exists() && !writable_file(&path) {
            Some(format!("{} is not writable", path.display()))
        } else if !path.exists() && !writable(dir) {
            Some(format!("directory {} is not writable", dir.display()))
        } else {
            None
        };
        if let Some(m) = problem {
            out.errors.push(ConfigError {
                location: "log.access_file".into(),
                message: m,
            });
        }
    }
    if let Some(a) = raw.server.admin.as_deref() {
        if let Ok(addr) = a.parse::<SocketAddr>() {
            if !addr.ip().is_loopback() {
                out.warnings.push(format!(
                    "server.admin: {addr} is not a loopback address; the admin listener has no \
                     authentication (anyone who reaches it can POST /-/reload and read /metrics)"
                ));
            }
        }
    }
    out
}

fn writable_file(p: &Path) -> bool {
    std::fs::OpenOptions::new().append(true).open(p).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::parse;

    #[test]
    fn state_dir_under_a_file_and_missing_log_directory_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("plain"), "x").expect("write");
        let raw = parse(
            "[server]\nstate_dir = \"plain/state\"\nadmin = \"0.0.0.0:9901\"\n\
             [log]\naccess_file = \"nope/access.log\"\n",
        )
        .expect("parses");
        let p = check(&raw, dir.path());
        let errors: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("server.state_dir: cannot be created"),
            "{errors:?}"
        );
        assert!(errors[0].contains("is not a directory"), "{errors:?}");
        assert!(
            errors[1].starts_with("log.access_file: directory"),
            "{errors:?}"
        );
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("not a loopback address"));

        let ok = parse("[server]\nstate_dir = \"a/b/c\"\n[log]\naccess_file = \"access.log\"\n")
            .expect("parses");
        let p = check(&ok, dir.path());
        assert!(p.errors.is_empty() && p.warnings.is_empty(), "{p:?}");
    }
}
