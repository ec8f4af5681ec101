//! One problem of a config file and where it is. Every layer of the config
//! (parsing, compiling, bounds, preflight) reports in this one shape, so that
//! `keygate check`, start and reload print the same lines.

/// One problem of a config file and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

/// A problem at `location`.
pub fn err(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        location: location.into(),
        message: message.into(),
    }
}
