//! berth's registry client: the distribution spec's pull and push flows
//! over HTTP(S), on top of berth-engine.
//!
//! - [`client`]: one registry — the `/v2/` probe, Basic and Bearer
//!   authentication with tokens cached per scope, manifests with the OCI
//!   and Docker Accept list, blobs with redirects that never carry the
//!   `Authorization` header to another host, uploads.
//! - [`auth`]: `WWW-Authenticate` parsing; credentials from `berth login`,
//!   containers' `auth.json`, docker's `config.json` and credential helpers.
//! - [`pull`]: resolve, choose the platform, download config and layers
//!   concurrently (verified while streaming, resumed by Range) and unpack
//!   each layer as soon as it is in; the image record is written last.
//! - [`push`]: HEAD, cross-repository mount, monolithic or chunked upload,
//!   manifests and index, several tags.
//! - [`referrers`]: the referrers API with the tag schema's fallback, and
//!   artifacts attached to a manifest.
//! - `referrer_copy`: an image's referrers fetched with it by pull and
//!   sent after it by push.
//! - [`registries`]: registries.conf: insecure and blocked registries,
//!   mirrors, short-name search and aliases.
//! - [`progress`]: events for a progress display.
//!
//! Plain HTTP is used only for `localhost`, `127.0.0.0/8`, `[::1]` and
//! registries marked insecure.

pub mod auth;
pub mod client;
mod error;
pub mod progress;
pub mod pull;
pub mod push;
mod referrer_copy;
pub mod referrers;
pub mod registries;

pub use auth::Credentials;
pub use client::{Options, Registry};
pub use error::{Error, Result};
pub use progress::{Event, Progress, Silent, State};
pub use pull::{pull, pull_name, PullOptions, Pulled};
pub use push::{push, PushOptions};
