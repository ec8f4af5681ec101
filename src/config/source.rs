//! Where a config comes from: the file, its version hash, its TOML parse,
//! `${ENV}` expansion and the directory relative paths are resolved against.
//! Shared by the compiler, the reloader and the runtime parts that read
//! settings (the Redis client expands `${ENV}` too).

use super::error::ConfigError;
use super::raw::RawConfig;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Read and parse a config file (no compilation).
pub fn read_file(path: &Path) -> Result<(RawConfig, String), Vec<ConfigError>> {
    let (text, hash) = read_text(path)?;
    Ok((parse_file(path, &text)?, hash))
}

/// A config file's text and the hex SHA-256 of its bytes (the config version).
pub fn read_text(path: &Path) -> Result<(String, String), Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok((text, hash))
}

/// Parse the text of the file at `path`; errors are located in that file.
pub fn parse_file(path: &Path, text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    parse(text).map_err(|e| {
        vec![ConfigError {
            location: format!("{} {}", path.display(), e.location),
            message: e.message,
        }]
    })
}

/// Parse TOML text into the raw shape. Only shape errors (syntax, unknown
/// fields, wrong types) stop here; values are checked by the compiler, so
/// that one run reports every problem.
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        // A problem inside one [[plugins]] item: its own line and name.
        if let Some(p) = super::locate::plugin_problem(text) {
            return p;
        }
        let location = match e.span() {
            Some(span) => {
                let line = text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                format!("line {line}")
            }
            None => "config".into(),
        };
        ConfigError {
            location,
            message: super::locate::suggest_in_message(e.message()),
        }
    })
}

/// Expand `${VAR}` from the environment; an unset variable is an error.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid variable name {name:?}"));
        }
        let v =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Relative paths in the config (certs, secret files, state_dir) are resolved
/// against the config file's directory.
pub fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A secret read from a file relative to `base`, without its final line break.
pub fn read_secret_file(base: &Path, file: &str) -> Result<String, String> {
    std::fs::read_to_string(base.join(file))
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|err| format!("cannot read secret_file {file:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        // PATH is set wherever tests run; no test sets variables (racy).
        let path = std::env::var("PATH").expect("PATH");
        assert_eq!(expand_env("a${PATH}b"), Ok(format!("a{path}b")));
        assert!(expand_env("${KEYGATE_SOURCE_SURELY_UNSET}")
            .unwrap_err()
            .contains("is not set"));
        assert!(expand_env("${oops").is_err());
        assert!(expand_env("${a b}").is_err());
    }

    #[test]
    fn base_dir_of_a_bare_file_name_is_the_current_directory() {
        assert_eq!(base_dir(Path::new("k.toml")), PathBuf::from("."));
        assert_eq!(base_dir(Path::new("/etc/k.toml")), PathBuf::from("/etc"));
    }
}
