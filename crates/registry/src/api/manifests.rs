//! `/v2/<name>/manifests/<reference>`: `GET`/`HEAD` (with `Accept`
//! negotiation on tags), `PUT` (size limit, `?tag=`, `OCI-Subject`) and
//! `DELETE`, by tag or digest.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

use super::reply::{finish, query_all, reply, unsupported};
use super::App;
use crate::error::{Code, Error, Result};
use crate::store::MAX_MANIFEST;

/// Serves a request for manifest `reference` (a tag or a digest) of `repo`.
pub(super) async fn serve(
    app: &App,
    repo: &str,
    reference: &str,
    req: Request,
) -> Result<Response> {
    match req.method().clone() {
        Method::GET | Method::HEAD => get(app, repo, reference, req).await,
        Method::PUT => put(app, repo, reference, req).await,
        Method::DELETE => {
            app.store.manifest_delete(repo, reference).await?;
            Ok(finish(reply(StatusCode::ACCEPTED), Body::empty()))
        }
        m => Err(unsupported(&m, "manifests")),
    }
}

/// Whether the request's `Accept` headers allow `media_type` (no header
/// allows anything).
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            any = true;
            let t = t.split(';').next().unwrap_or("").trim();
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
        }
    }
    !any
}

/// `GET`/`HEAD`: a manifest fetched by tag must be of a type the client
/// accepts; by digest it is served as stored.
async fn get(app: &App, repo: &str, reference: &str, req: Request) -> Result<Response> {
    let m = app.store.manifest_get(repo, reference).await?;
    if !reference.contains(':') && !accepts(req.headers(), &m.media_type) {
        return Err(Error::new(
            Code::ManifestUnknown,
            format!(
                "manifest {repo}:{reference} is {}, which the request's Accept header does not list",
                m.media_type
            ),
        ));
    }
    let b = reply(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.body.len())
        .header("docker-content-digest", m.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", m.digest));
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(m.body)
    };
    Ok(finish(b, body))
}

/// `PUT`: the body (at most [`MAX_MANIFEST`] bytes, in
/// `request_timeout`) stored under `reference` and the `?tag=` parameters.
async fn put(app: &App, repo: &str, reference: &str, req: Request) -> Result<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tags = query_all(req.uri().query().unwrap_or(""), "tag");
    let too_big = || {
        Error::with_status(
            Code::SizeInvalid,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("manifest for {repo}:{reference} is larger than the {MAX_MANIFEST}-byte (4 MiB) limit"),
        )
    };
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_MANIFEST)
    {
        return Err(too_big());
    }
    let body = tokio::time::timeout(
        app.request_timeout,
        axum::body::to_bytes(req.into_body(), MAX_MANIFEST),
    )
    .await
    .map_err(|_| {
        Error::with_status(
            Code::ManifestInvalid,
            StatusCode::REQUEST_TIMEOUT,
            "manifest body was not received in time",
        )
    })?
    .map_err(|_| too_big())?;
    let put = app
        .store
        .manifest_put(repo, reference, content_type.as_deref(), body, &tags)
        .await?;
    let mut b = reply(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{repo}/manifests/{}", put.digest),
        )
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", put.digest.to_string());
    if let Some(s) = put.subject {
        b = b.header("oci-subject", s);
    }
    Ok(finish(b, Body::empty()))
}
