//! Configuration: where it comes from (`source`), its raw TOML shape (`raw`,
//! with closed sets as `choice`s), the rules of each section (`compile`,
//! `cluster`, `bounds`, `preflight`) and reload (`watch`). Problems are
//! `error::ConfigError`s, located, each reported once.
//!
//! The runtime imports its settings from here. Only `compile` and `watch`,
//! which build and swap the runtime's snapshot, import the runtime's types;
//! `raw` borrows the few setting types still defined beside their runtime code
//! (replay mode, escaped-slash action, concurrency and parameter tables).
pub mod bounds;
pub mod choice;
pub mod cluster;
pub mod compile;
pub mod error;
pub mod locate;
pub mod preflight;
pub mod raw;
pub mod source;
pub mod watch;
