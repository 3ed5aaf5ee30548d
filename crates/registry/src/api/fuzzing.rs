//! Entry points for the fuzz targets of `berth-fuzz` (crates/fuzz). Not a
//! stable API: it exposes the request parsing helpers of [`crate::api`]
//! (routing, `Range`, `Content-Range`, query parameters) that run before
//! any storage is touched.

use crate::error::Result;

/// What [`parse_route`] found in a request path.
pub use super::route::Route as Routed;

/// Routes a request path as the server does (`None`: no such endpoint).
pub fn parse_route(path: &str) -> Option<Routed> {
    super::route::parse_route(path)
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
