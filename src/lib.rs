//! keygate: an authenticating reverse proxy enforcing API-gateway policies.

pub mod admin;
pub mod auth;
pub mod authority;
pub mod balance;
pub mod body;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod grpc;
pub mod handler;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod reject;
pub mod reserved;
pub mod route;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod trace;
pub mod upstream;
