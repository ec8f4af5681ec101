//! Configuration: raw TOML shape, compilation into a snapshot, reload.
pub mod bounds;
pub mod compile;
pub mod locate;
pub mod preflight;
pub mod raw;
pub mod watch;
