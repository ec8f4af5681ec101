//! Configuration: raw TOML shape, compilation into a snapshot, reload.
pub mod compile;
pub mod raw;
pub mod watch;
