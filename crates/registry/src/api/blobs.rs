//! `/v2/<name>/blobs/<digest>`: `GET`/`HEAD` with a single `Range`, and
//! `DELETE` (unlinks the blob from the repository; GC frees the content).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use oci_spec::image::Digest;

use super::reply::{error_response, finish, reply, unsupported};
use super::App;
use crate::digest;
use crate::error::{Error, Result};

/// Serves a request for blob `d` of `repo`.
pub(super) async fn serve(app: &App, repo: &str, d: &str, req: Request) -> Result<Response> {
    let d = digest::parse(d)?;
    match req.method().clone() {
        Method::GET | Method::HEAD => get(app, repo, &d, req).await,
        Method::DELETE => {
            app.store.blob_delete(repo, &d).await?;
            Ok(finish(reply(StatusCode::ACCEPTED), Body::empty()))
        }
        m => Err(unsupported(&m, "blobs")),
    }
}

/// Parses a `Range: bytes=…` header against a blob of `size` bytes.
pub(super) fn parse_range(v: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || Error::Range(format!("{v:?} for a blob of {size} bytes"));
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        if n == 0 || size == 0 {
            return Err(bad());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| bad())?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| bad())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || end < start {
        return Err(bad());
    }
    Ok((start, end))
}

/// `GET`/`HEAD` of the whole blob or one range of it (`416` with
/// `Content-Range: bytes */size` for a range that cannot be served).
async fn get(app: &App, repo: &str, d: &Digest, req: Request) -> Result<Response> {
    let size = app.store.blob_size(repo, d).await?;
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => match parse_range(v, size) {
            Ok(r) => Some(r),
            Err(e) => {
                let mut r = error_response(&e);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(r);
            }
        },
        None => None,
    };
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut b = reply(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    if let Some((s, e)) = range {
        b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
    }
    if req.method() == Method::HEAD || len == 0 {
        return Ok(finish(b, Body::empty()));
    }
    let stream = app.store.blob_reader(d, start, len).await?;
    Ok(finish(b, Body::from_stream(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10).unwrap(), (0, 0));
        assert_eq!(parse_range("bytes=5-", 10).unwrap(), (5, 9));
        assert_eq!(parse_range("bytes=-3", 10).unwrap(), (7, 9));
        assert_eq!(parse_range("bytes=2-100", 10).unwrap(), (2, 9));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            assert!(parse_range(bad, 10).is_err(), "{bad}");
        }
    }
}
