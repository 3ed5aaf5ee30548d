//! The distribution-spec v1.1 HTTP API, one file per resource (as in
//! distribution's `registry/handlers`):
//!
//! - [`route`]: the way in for every request: accounting (metrics, access
//!   log, the in-flight limit), the route table, the auth gate, dispatch;
//! - [`base`]: `/v2/`, `/token` and `/metrics`;
//! - [`blobs`], [`uploads`] (with [`pump`], which streams a request body
//!   into an upload), [`manifests`], [`tags`], [`catalog`], [`referrers`];
//! - [`reply`]: building responses and reading query parameters.
//!
//! Handlers only parse and answer; the data model is [`crate::store`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::store::Store;

mod base;
mod blobs;
mod catalog;
mod manifests;
mod pump;
mod referrers;
mod reply;
mod route;
mod tags;
mod uploads;

/// Request parsing helpers exposed for the fuzz targets (not a stable API).
#[doc(hidden)]
pub mod fuzzing;

/// Everything a request handler needs.
pub struct App {
    /// Repository data.
    pub store: Store,
    /// Auth mode.
    pub auth: Auth,
    /// Counters.
    pub metrics: Metrics,
    /// Refuse writes.
    pub read_only: bool,
    /// Served over TLS (for the default token realm).
    pub tls: bool,
    /// Abort a request whose body stalls this long.
    pub body_idle_timeout: Duration,
    /// Total time limit for requests without a streamed body.
    pub request_timeout: Duration,
    /// Requests served at once before new ones get 429 TOOMANYREQUESTS.
    pub max_in_flight: Option<i64>,
    /// Where one JSON line per request goes, if access logging is on.
    pub access_log: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Bearer token `/metrics` requires, if any.
    pub metrics_token: Option<String>,
}

/// The axum router serving the whole API, `/token` and `/metrics`.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().fallback(route::handle).with_state(app)
}
