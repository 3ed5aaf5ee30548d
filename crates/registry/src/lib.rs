//! Distribution-spec v1.1 registry server with filesystem storage, auth
//! (htpasswd Basic, Docker token flow), online GC, metrics and TLS.
//!
//! Start one with [`server::start`] on a tokio runtime; `berth registry
//! serve` is a thin wrapper around it.

pub mod api;
pub mod auth;
mod batch;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
mod lowat;
pub mod metrics;
pub mod server;
mod sha256_state;
pub mod storage;
pub mod store;

pub use config::Config;
pub use server::{start, Server, StartError};
