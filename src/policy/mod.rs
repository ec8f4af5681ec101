//! Request policies: one check type per file.
pub mod acl;
pub mod concurrency;
pub mod cors;
pub mod expr;
pub mod headers;
pub mod inputs;
pub mod ip;
pub mod limits;
pub mod param;
pub mod qps;
pub mod quota;
pub mod traffic;
