//! Serde structs mirroring the TOML file of SPEC §7, one module per section.
//! They describe shape only: values, ranges and cross-references are checked
//! by the compiler (`compile/`). Closed sets of names are serde enums read as
//! [`Choice`](super::choice::Choice), so that a wrong name is reported with
//! every other problem instead of ending the parse.
//!
//! The runtime imports its settings from here. A few setting types still live
//! beside their runtime code and are borrowed here: the replay mode
//! (`auth/replay.rs`), the escaped-slash action (`path.rs`), the
//! `concurrency_control` table (`policy/`) and the hmac algorithm names
//! (`auth/mac.rs`).

mod auth;
mod backend;
mod cluster;
mod plugins;
mod server;
mod services;

pub use auth::*;
pub use backend::*;
pub use cluster::*;
pub use plugins::*;
pub use server::*;
pub use services::*;

use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub log: RawLog,
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub jwt_providers: Vec<RawJwtProvider>,
    #[serde(default)]
    pub usage_plans: Vec<RawUsagePlan>,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

fn default_true() -> bool {
    true
}

/// Durations are strings like `"500ms"`, `"15s"`, `"15m"`; a bare integer means seconds.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dur {
        Secs(u64),
        Text(String),
    }
    match Dur::deserialize(d)? {
        Dur::Secs(s) => Ok(Duration::from_secs(s)),
        Dur::Text(t) => humantime::parse_duration(t.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {t:?}: {e}"))),
    }
}

/// An optional duration, written as for [`de_duration`].
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests;
