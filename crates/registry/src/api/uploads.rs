//! `/v2/<name>/blobs/uploads/`: starting uploads (cross-repository and
//! anonymous mounts, monolithic `POST ?digest=`, sessions), chunks in
//! order (`Content-Range`), status, commit with `PUT ?digest=`, cancel.
//! Bodies go through [`super::pump`].

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use oci_spec::image::Digest;

use super::pump::{check_declared_size, pump};
use super::reply::{error_response, finish, query_one, reply, unsupported};
use super::route::{check_auth, needs};
use super::App;
use crate::auth::Action;
use crate::digest::{self, validate_name};
use crate::error::{Code, Error, Result};
use crate::store::Session;

/// The repository a blob mount (`?mount=…&from=REPO`) reads from.
pub(super) fn mount_source(query: &str) -> Option<String> {
    query_one(query, "mount")?;
    query_one(query, "from").filter(|f| validate_name(f).is_ok())
}

/// Where the client continues upload `id`.
fn upload_location(repo: &str, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The `Range` header of an upload holding `offset` bytes.
fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// `201 Created` for blob `d`, now in `repo`.
fn created_blob(repo: &str, d: &Digest) -> Response {
    finish(
        reply(StatusCode::CREATED)
            .header(header::LOCATION, format!("/v2/{repo}/blobs/{d}"))
            .header(header::CONTENT_LENGTH, 0)
            .header("docker-content-digest", d.to_string()),
        Body::empty(),
    )
}

/// `POST /v2/<name>/blobs/uploads/`: a mount (falling back to a session
/// when the blob is not there), a monolithic upload with `?digest=`, or a
/// new session.
pub(super) async fn start(app: &App, repo: &str, req: Request) -> Result<Response> {
    let method = req.method();
    if method != Method::POST {
        return Err(unsupported(method, "blobs/uploads/"));
    }
    let q = req.uri().query().unwrap_or("").to_string();
    if let Some(mount) = query_one(&q, "mount") {
        let d = digest::parse(&mount)?;
        let from = query_one(&q, "from");
        let from_ok = match &from {
            Some(f) => {
                validate_name(f).is_ok()
                    && check_auth(app, req.headers(), &needs(f, Action::Pull), &[])
                        .await
                        .is_ok()
            }
            // The automatic cross-mount: any repository holding the blob.
            None => app.auth.grants_every_pull(),
        };
        if from_ok && app.store.mount(repo, &d, from.as_deref()).await? {
            return Ok(created_blob(repo, &d));
        }
        // Not mountable: fall through to a normal upload session (spec).
    }
    let digest = query_one(&q, "digest")
        .map(|d| digest::parse(&d))
        .transpose()?;
    if digest.is_some() {
        check_declared_size(app, &req, 0, &format!("monolithic upload to {repo}"))?;
    }
    let mut s = app.store.upload_start(repo, digest.is_none()).await?;
    if let Some(d) = digest {
        let pushed = async {
            pump(app, &mut s, req).await?;
            app.store.upload_finish(&mut s, &d).await
        }
        .await;
        if let Err(e) = pushed {
            // The client never learned this session's location: drop it.
            if !s.is_closed() {
                if let Err(c) = app.store.upload_cancel(&mut s).await {
                    tracing::warn!(upload = %s.id, error = %c, "dropping a failed monolithic upload");
                }
            }
            return Err(e);
        }
        app.metrics.blobs_committed.fetch_add(1, Ordering::Relaxed);
        return Ok(created_blob(repo, &d));
    }
    Ok(finish(
        reply(StatusCode::ACCEPTED)
            .header(header::LOCATION, upload_location(repo, &s.id))
            .header(header::RANGE, "0-0")
            .header(header::CONTENT_LENGTH, 0)
            .header("docker-upload-uuid", s.id.clone())
            .header("oci-chunk-min-length", 0),
        Body::empty(),
    ))
}

/// Parses a `Content-Range` of an upload chunk: `start-end` or
/// `bytes start-end/total`.
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Refuses a chunk whose `Content-Range` does not start where the upload
/// ends (416, answered with the upload's current `Range`).
fn check_chunk(req: &Request, s: &Session) -> Result<()> {
    let Some(v) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let text = v.to_str().unwrap_or("");
    let Some((start, end)) = parse_content_range(text) else {
        return Err(Error::Range(format!(
            "Content-Range {text:?} of upload {} is not start-end",
            s.id
        )));
    };
    if start != s.offset || end < start {
        return Err(Error::Range(format!(
            "chunk {start}-{end} of upload {} is out of order: the next chunk must start at {}",
            s.id, s.offset
        )));
    }
    Ok(())
}

/// The upload's `Location` and `Range`, with `status`.
fn upload_status(repo: &str, s: &Session, status: StatusCode) -> Response {
    finish(
        reply(status)
            .header(header::LOCATION, upload_location(repo, &s.id))
            .header(header::RANGE, range_header(s.offset))
            .header(header::CONTENT_LENGTH, 0)
            .header("docker-upload-uuid", s.id.clone()),
        Body::empty(),
    )
}

/// A response carrying the upload's `Location` and its current `Range`
/// (an out-of-order chunk, or a race lost to a request on another replica).
fn with_upload_headers(e: &Error, repo: &str, s: &Session) -> Response {
    let mut r = error_response(e);
    for (k, v) in [
        (header::LOCATION, upload_location(repo, &s.id)),
        (header::RANGE, range_header(s.offset)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// `/v2/<name>/blobs/uploads/<id>`: `GET` status, `PATCH` a chunk, `PUT`
/// the last one and commit, `DELETE` to cancel. The session's state is
/// loaded from storage for each request, so each may land on any replica.
pub(super) async fn serve(app: &App, repo: &str, id: &str, req: Request) -> Result<Response> {
    let mut s = app.store.upload_get(repo, id).await?;
    match serve_loaded(app, repo, id, &mut s, req).await {
        Err(e @ Error::Range(_)) => Ok(with_upload_headers(&e, repo, &s)),
        other => other,
    }
}

/// Records what a request appended even when its body failed part way
/// (a stalled or broken-off body keeps what arrived, so the client can
/// resume), then reports the body's failure if any.
async fn save_after(app: &App, s: &mut Session, pumped: Result<()>) -> Result<()> {
    if s.is_closed() {
        return pumped; // dropped with its data (413)
    }
    let saved = app.store.upload_save(s).await;
    pumped.and(saved)
}

/// One operation on a loaded session.
async fn serve_loaded(
    app: &App,
    repo: &str,
    id: &str,
    s: &mut Session,
    req: Request,
) -> Result<Response> {
    match req.method().clone() {
        Method::GET => {
            // Using the session restarts its idle clock.
            app.store.upload_save(s).await?;
            Ok(upload_status(repo, s, StatusCode::NO_CONTENT))
        }
        Method::DELETE => {
            app.store.upload_cancel(s).await?;
            Ok(finish(reply(StatusCode::NO_CONTENT), Body::empty()))
        }
        Method::PATCH => {
            check_chunk(&req, s)?;
            check_declared_size(app, &req, s.offset, &format!("upload {id}"))?;
            let pumped = pump(app, s, req).await;
            save_after(app, s, pumped).await?;
            Ok(upload_status(repo, s, StatusCode::ACCEPTED))
        }
        Method::PUT => {
            let q = req.uri().query().unwrap_or("").to_string();
            let d = query_one(&q, "digest").ok_or_else(|| {
                Error::new(
                    Code::DigestInvalid,
                    format!("PUT to finish upload {id} needs a ?digest= parameter"),
                )
            })?;
            let d = digest::parse(&d)?;
            check_chunk(&req, s)?;
            check_declared_size(app, &req, s.offset, &format!("upload {id}"))?;
            if let Err(e) = pump(app, s, req).await {
                save_after(app, s, Err(e)).await?;
            }
            app.store.upload_finish(s, &d).await?;
            app.metrics.blobs_committed.fetch_add(1, Ordering::Relaxed);
            Ok(created_blob(repo, &d))
        }
        m => Err(unsupported(&m, "blob uploads")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9)));
    }
}
