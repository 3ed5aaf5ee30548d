//! Entry points for the fuzz targets of `berth-fuzz` (crates/fuzz). Not a
//! stable API: it exposes the request parsing helpers of [`crate::api`]
//! (routing, `Range`, `Content-Range`, query parameters) that run before
//! any storage is touched.

use super::route::Route;
use crate::error::Result;

/// What [`parse_route`] found in a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/metrics`.
    Metrics,
    /// `/token`.
    Token,
    /// `/v2/<repo>/tags/list`.
    Tags(String),
    /// `/v2/<repo>/manifests/<reference>`.
    Manifest(String, String),
    /// `/v2/<repo>/blobs/<digest>`.
    Blob(String, String),
    /// `/v2/<repo>/blobs/uploads/`.
    UploadStart(String),
    /// `/v2/<repo>/blobs/uploads/<id>`.
    Upload(String, String),
    /// `/v2/<repo>/referrers/<digest>`.
    Referrers(String, String),
}

/// Routes a request path as the server does (`None`: no such endpoint).
pub fn parse_route(path: &str) -> Option<Routed> {
    Some(match super::route::parse_route(path)? {
        Route::Base => Routed::Base,
        Route::Catalog => Routed::Catalog,
        Route::Metrics => Routed::Metrics,
        Route::Token => Routed::Token,
        Route::Tags(r) => Routed::Tags(r),
        Route::Manifest(r, t) => Routed::Manifest(r, t),
        Route::Blob(r, d) => Routed::Blob(r, d),
        Route::UploadStart(r) => Routed::UploadStart(r),
        Route::Upload(r, i) => Routed::Upload(r, i),
        Route::Referrers(r, d) => Routed::Referrers(r, d),
    })
}

/// Parses a `Range` header against a blob of `size` bytes: the first and
/// last byte served.
pub fn parse_range(value: &str, size: u64) -> Result<(u64, u64)> {
    super::blobs::parse_range(value, size)
}

/// Parses an upload chunk's `Content-Range`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    super::uploads::parse_content_range(value)
}

/// The source repository of a blob mount query (`mount=…&from=…`).
pub fn mount_source(query: &str) -> Option<String> {
    super::uploads::mount_source(query)
}

/// Paginates `all` with the `n` and `last` parameters of `query`, as the
/// tags list does; returns the response status and its `Link` header.
pub fn paginate(all: Vec<String>, query: &str) -> Result<(u16, Option<String>)> {
    let r = super::tags::paginate(all, query, "/v2/a/tags/list", "tags", Some("a"))?;
    let link = r
        .headers()
        .get(axum::http::header::LINK)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((r.status().as_u16(), link))
}
