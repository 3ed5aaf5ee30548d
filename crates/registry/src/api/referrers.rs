//! `GET /v2/<name>/referrers/<digest>`: the manifests whose subject is the
//! digest, as an image index, optionally filtered by `artifactType`.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::reply::{json_response, query_one, unsupported};
use super::App;
use crate::digest;
use crate::error::Result;

/// Lists the referrers of `subject` in `repo` (an empty index for a subject
/// never pushed).
pub(super) async fn list(app: &App, repo: &str, subject: &str, req: Request) -> Result<Response> {
    let method = req.method();
    if method != Method::GET {
        return Err(unsupported(method, "referrers"));
    }
    let subject = digest::parse(subject)?;
    let at = query_one(req.uri().query().unwrap_or(""), "artifactType");
    let manifests = app.store.referrers(repo, &subject, at.as_deref()).await?;
    let mut r = json_response(
        StatusCode::OK,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }),
    );
    if at.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}
