//! `GET /v2/_catalog`: the repositories, paginated like tags.

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::reply::unsupported;
use super::tags::paginate;
use super::App;
use crate::error::Result;

/// Lists every repository with manifests, in lexical order.
pub(super) async fn list(app: &App, req: Request) -> Result<Response> {
    let method = req.method();
    if method != Method::GET {
        return Err(unsupported(method, "/v2/_catalog"));
    }
    let all = app.store.catalog().await?;
    let q = req.uri().query().unwrap_or("");
    paginate(all, q, "/v2/_catalog", "repositories", None)
}
