//! The API, auth, durability and limits suites again, with S3 storage on a
//! real SeaweedFS (`common::s3` starts one per test binary). `common`
//! chooses the backend from this binary's name.
//!
//! The suites' files are included as modules, so each brings its own copy
//! of `common`; that is intended.
#![allow(clippy::duplicate_mod)]

#[path = "api.rs"]
mod api;
#[path = "auth.rs"]
mod auth;
#[path = "durability.rs"]
mod durability;
#[path = "limits.rs"]
mod limits;
