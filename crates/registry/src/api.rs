//! HTTP handlers for the distribution-spec v1.1 API.
//!
//! Repository names contain `/`, so routing is done by hand on the path:
//! the last `/blobs/uploads/`, `/blobs/`, `/manifests/`, `/referrers/` or
//! `/tags/list` splits the name from the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use oci_spec::image::Digest;

use crate::auth::{Access, Action, Auth};
use crate::digest::{self, validate_name};
use crate::error::{Code, Error, Result};
use crate::lowat::{self, BodyLowat, ConnSocket};
use crate::metrics::Metrics;
use crate::store::{blob_too_large, Session, SharedSession, Store, MAX_MANIFEST};

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
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

enum Route {
    Base,
    Catalog,
    Metrics,
    Token,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

fn split_last<'a>(rest: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let (repo, tail) = rest.rsplit_once(sep)?;
    (!tail.is_empty() && !tail.contains('/') && !repo.is_empty()).then_some((repo, tail))
}

fn parse_route(path: &str) -> Option<Route> {
    match path {
        "/metrics" => return Some(Route::Metrics),
        "/token" => return Some(Route::Token),
        "/v2" | "/v2/" => return Some(Route::Base),
        "/v2/_catalog" => return Some(Route::Catalog),
        _ => {}
    }
    let rest = path.strip_prefix("/v2/")?;
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(repo.into()));
    }
    if let Some(repo) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(repo.into()));
    }
    if let Some((repo, id)) = split_last(rest, "/blobs/uploads/") {
        return Some(Route::Upload(repo.into(), id.into()));
    }
    if let Some((repo, r)) = split_last(rest, "/manifests/") {
        return Some(Route::Manifest(repo.into(), r.into()));
    }
    if let Some((repo, d)) = split_last(rest, "/blobs/") {
        return Some(Route::Blob(repo.into(), d.into()));
    }
    if let Some((repo, d)) = split_last(rest, "/referrers/") {
        return Some(Route::Referrers(repo.into(), d.into()));
    }
    None
}

fn query_all(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn query_one(query: &str, key: &str) -> Option<String> {
    query_all(query, key).into_iter().next()
}

/// The repository a blob mount (`?mount=…&from=REPO`) reads from.
fn mount_source(query: &str) -> Option<String> {
    query_one(query, "mount")?;
    query_one(query, "from").filter(|f| validate_name(f).is_ok())
}

fn reply(status: StatusCode) -> axum::http::response::Builder {
    Response::builder().status(status)
}

fn finish(b: axum::http::response::Builder, body: Body) -> Response {
    b.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn json_response(status: StatusCode, content_type: &str, value: &serde_json::Value) -> Response {
    let body = value.to_string();
    finish(
        reply(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len()),
        Body::from(body),
    )
}

fn error_response(e: &Error) -> Response {
    json_response(e.status(), "application/json", &e.body())
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let busy = app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let over_limit = app.max_in_flight.is_some_and(|max| busy >= max) && path != "/metrics";
    let result = if over_limit {
        Err(Error::new(
            Code::TooManyRequests,
            format!("the registry is serving {busy} requests, its limit; retry shortly"),
        ))
    } else {
        route(&app, req).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, Error::Io(_)) {
                tracing::error!(%method, %path, error = %e, "request failed");
            }
            error_response(&e)
        }
    };
    if over_limit {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    let sent = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| method != Method::HEAD)
        .unwrap_or(0);
    app.metrics.bytes_sent.fetch_add(sent, Ordering::Relaxed);
    app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    app.metrics
        .record(method.as_str(), status, elapsed.as_secs_f64());
    if let Some(log) = &app.access_log {
        let line = serde_json::json!({
            "time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            "method": method.as_str(),
            "path": path,
            "status": status,
            "bytes": sent,
            "micros": elapsed.as_micros() as u64,
        });
        let _ = log.send(line.to_string());
    }
    resp
}

fn needs(repo: &str, action: Action) -> Vec<Access> {
    vec![Access {
        repo: repo.to_string(),
        action,
    }]
}

fn check_auth(
    app: &App,
    headers: &HeaderMap,
    needed: &[Access],
    wanted: &[Access],
) -> Result<(), Box<Response>> {
    let scheme = if app.tls { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    app.auth
        .check(headers, needed, wanted, &format!("{scheme}://{host}"))
        .map_err(|d| {
            let (code, status) = if d.denied && d.challenge.is_none() {
                (Code::Denied, StatusCode::FORBIDDEN)
            } else {
                (Code::Unauthorized, StatusCode::UNAUTHORIZED)
            };
            let mut r = error_response(&Error::with_status(code, status, d.message));
            if let Some(c) = d.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
            }
            Box::new(r)
        })
}

fn unsupported(method: &Method, what: &str) -> Error {
    Error::new(
        Code::Unsupported,
        format!("{method} is not supported on {what}"),
    )
}

async fn route(app: &Arc<App>, req: Request) -> Result<Response> {
    let Some(route) = parse_route(req.uri().path()) else {
        return Err(Error::with_status(
            Code::NameUnknown,
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", req.uri().path()),
        ));
    };
    let method = req.method().clone();
    let writes = matches!(
        method,
        Method::PUT | Method::POST | Method::PATCH | Method::DELETE
    );
    // Authorisation first, so an anonymous client learns nothing else.
    let needed = match &route {
        Route::Metrics | Route::Token => None,
        Route::Base => Some(vec![]),
        Route::Catalog => Some(vec![Access {
            repo: String::new(),
            action: Action::Catalog,
        }]),
        Route::Tags(r) | Route::Referrers(r, _) => Some(needs(r, Action::Pull)),
        Route::Manifest(r, _) | Route::Blob(r, _) => Some(match method {
            Method::DELETE => needs(r, Action::Delete),
            Method::PUT => needs(r, Action::Push),
            _ => needs(r, Action::Pull),
        }),
        Route::UploadStart(r) | Route::Upload(r, _) => Some(needs(r, Action::Push)),
    };
    if let Some(needed) = needed {
        // A cross-repository mount can use pull access on its source: the
        // token challenge asks for it too, and without it the mount
        // becomes a normal upload (202) rather than a refusal.
        let wanted = match &route {
            Route::UploadStart(_) => mount_source(req.uri().query().unwrap_or(""))
                .map(|from| needs(&from, Action::Pull))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if let Err(resp) = check_auth(app, req.headers(), &needed, &wanted) {
            return Ok(*resp);
        }
        if app.read_only && writes {
            return Err(Error::new(
                Code::Unsupported,
                "this registry is read-only: pushes and deletes are refused",
            ));
        }
    }
    match route {
        Route::Metrics => {
            if let Some(token) = &app.metrics_token {
                if !crate::auth::bearer_is(req.headers(), token) {
                    let mut r = error_response(&Error::new(
                        Code::Unauthorized,
                        "/metrics needs `Authorization: Bearer TOKEN` with the token of `metrics.token` in the registry's config",
                    ));
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"metrics\""),
                    );
                    return Ok(r);
                }
            }
            Ok(finish(
                reply(StatusCode::OK).header(header::CONTENT_TYPE, "text/plain; version=0.0.4"),
                Body::from(app.metrics.render()),
            ))
        }
        Route::Token => {
            let headers = req.headers().clone();
            let params = if method == Method::POST {
                let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                    .await
                    .map_err(|_| {
                        Error::with_status(
                            Code::Unsupported,
                            StatusCode::BAD_REQUEST,
                            "token request form is larger than 64 KiB",
                        )
                    })?;
                String::from_utf8_lossy(&body).into_owned()
            } else {
                req.uri().query().unwrap_or("").to_string()
            };
            match app.auth.issue_token(&headers, &params) {
                Ok(v) => Ok(json_response(StatusCode::OK, "application/json", &v)),
                Err(d) => {
                    let mut r = error_response(&Error::with_status(
                        Code::Unauthorized,
                        StatusCode::UNAUTHORIZED,
                        d.message,
                    ));
                    if let Some(c) = d.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
                        r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                    }
                    Ok(r)
                }
            }
        }
        Route::Base => Ok(json_response(
            StatusCode::OK,
            "application/json",
            &serde_json::json!({}),
        )),
        Route::Catalog => {
            if method != Method::GET {
                return Err(unsupported(&method, "/v2/_catalog"));
            }
            let all = app.store.catalog().await?;
            let q = req.uri().query().unwrap_or("");
            paginate(all, q, "/v2/_catalog", "repositories", None)
        }
        Route::Tags(repo) => {
            validate_name(&repo)?;
            if method != Method::GET {
                return Err(unsupported(&method, "tags/list"));
            }
            let all = app.store.tags(&repo).await?;
            let q = req.uri().query().unwrap_or("");
            paginate(
                all,
                q,
                &format!("/v2/{repo}/tags/list"),
                "tags",
                Some(&repo),
            )
        }
        Route::Referrers(repo, d) => {
            validate_name(&repo)?;
            if method != Method::GET {
                return Err(unsupported(&method, "referrers"));
            }
            let subject = digest::parse(&d)?;
            let at = query_one(req.uri().query().unwrap_or(""), "artifactType");
            let manifests = app.store.referrers(&repo, &subject, at.as_deref()).await?;
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
        Route::Manifest(repo, reference) => {
            validate_name(&repo)?;
            match method {
                Method::GET | Method::HEAD => manifest_get(app, &repo, &reference, req).await,
                Method::PUT => manifest_put(app, &repo, &reference, req).await,
                Method::DELETE => {
                    app.store.manifest_delete(&repo, &reference).await?;
                    Ok(finish(reply(StatusCode::ACCEPTED), Body::empty()))
                }
                m => Err(unsupported(&m, "manifests")),
            }
        }
        Route::Blob(repo, d) => {
            validate_name(&repo)?;
            let d = digest::parse(&d)?;
            match method {
                Method::GET | Method::HEAD => blob_get(app, &repo, &d, req).await,
                Method::DELETE => {
                    app.store.blob_delete(&repo, &d).await?;
                    Ok(finish(reply(StatusCode::ACCEPTED), Body::empty()))
                }
                m => Err(unsupported(&m, "blobs")),
            }
        }
        Route::UploadStart(repo) => {
            validate_name(&repo)?;
            if method != Method::POST {
                return Err(unsupported(&method, "blobs/uploads/"));
            }
            upload_post(app, &repo, req).await
        }
        Route::Upload(repo, id) => {
            validate_name(&repo)?;
            upload_op(app, &repo, &id, req).await
        }
    }
}

fn paginate(
    mut all: Vec<String>,
    q: &str,
    base: &str,
    field: &str,
    repo: Option<&str>,
) -> Result<Response> {
    if let Some(last) = query_one(q, "last") {
        all.retain(|t| *t > last);
    }
    let mut link = None;
    if let Some(n) = query_one(q, "n") {
        let n: usize = n.parse().map_err(|_| {
            Error::with_status(
                Code::Unsupported,
                StatusCode::BAD_REQUEST,
                format!("query parameter n={n:?} is not a non-negative integer"),
            )
        })?;
        if all.len() > n {
            all.truncate(n);
            if let Some(last) = all.last() {
                link = Some(format!("<{base}?n={n}&last={last}>; rel=\"next\""));
            }
        }
    }
    let mut body = serde_json::json!({ field: all });
    if let Some(r) = repo {
        body["name"] = r.into();
    }
    let mut resp = json_response(StatusCode::OK, "application/json", &body);
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

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

async fn manifest_get(app: &App, repo: &str, reference: &str, req: Request) -> Result<Response> {
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

async fn manifest_put(app: &App, repo: &str, reference: &str, req: Request) -> Result<Response> {
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

/// Parses a `Range: bytes=…` header against a blob of `size` bytes.
fn parse_range(v: &str, size: u64) -> Result<(u64, u64)> {
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

async fn blob_get(app: &App, repo: &str, d: &Digest, req: Request) -> Result<Response> {
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

/// Streams a request body into an upload, writing in ~512 KiB pieces and
/// aborting if the client stalls for `app.body_idle_timeout`. A body that
/// grows past the blob size limit is cut off (413) and the session, which
/// can no longer become a blob, is dropped with its data.
async fn pump(app: &App, session: &mut Session, req: Request) -> Result<()> {
    let received = pump_pieces(app, session, req).await;
    // Whatever happened, what was handed to storage is there before we answer.
    let settled = session.settle(&app.store).await;
    if received
        .as_ref()
        .is_err_and(|e| e.status() == StatusCode::PAYLOAD_TOO_LARGE)
    {
        app.store.upload_cancel(session).await?;
    }
    received.and(settled)
}

/// The body length a request declares in `Content-Length`, if any.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Refuses a request whose declared body would take `what`, holding
/// `held` bytes already, past the blob size limit. It runs before the body
/// is touched: hyper sends `100 Continue` only when a handler first reads
/// the body, so a client that asked for it never sends the body at all.
fn check_declared_size(app: &App, req: &Request, held: u64, what: &str) -> Result<()> {
    let (Some(max), Some(len)) = (app.store.max_blob_size, declared_length(req)) else {
        return Ok(());
    };
    if held.saturating_add(len) > max {
        let on_top = match held {
            0 => String::new(),
            n => format!(" on top of the {n} bytes it holds"),
        };
        return Err(blob_too_large(
            &format!("{what}: its declared Content-Length of {len} bytes{on_top}"),
            max,
        ));
    }
    Ok(())
}

/// The chunks of a request body received but not yet handed to storage.
/// They are kept as received (no copy) and written with one vectored write
/// once they add up to [`Pending::PIECE`] bytes.
#[derive(Default)]
struct Pending {
    parts: Vec<Bytes>,
    len: usize,
}

impl Pending {
    /// Bytes gathered before a write.
    const PIECE: usize = 512 * 1024;

    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.parts.push(chunk);
    }

    fn full(&self) -> bool {
        self.len >= Self::PIECE
    }

    /// Hands what was gathered to the session (nothing if empty).
    async fn flush(&mut self, app: &App, session: &mut Session) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.len = 0;
        session
            .append(&app.store, std::mem::take(&mut self.parts))
            .await
    }
}

/// The body length a plain HTTP/1 request announces (`None` for HTTP/2,
/// chunked bodies, or no `Content-Length`).
fn http1_body_length(req: &Request) -> Option<u64> {
    let h = req.headers();
    if req.version() > axum::http::Version::HTTP_11 || h.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn pump_pieces(app: &App, session: &mut Session, req: Request) -> Result<()> {
    let mut lowat = BodyLowat::new(
        req.extensions().get::<ConnSocket>().cloned(),
        http1_body_length(&req),
    );
    let mut stream = req.into_body().into_data_stream();
    let mut pending = Pending::default();
    let mut last_data = Instant::now();
    loop {
        lowat.before_wait();
        let wait = match lowat.raised() {
            true => lowat::PATIENCE,
            false => app.body_idle_timeout.saturating_sub(last_data.elapsed()),
        };
        let next = match tokio::time::timeout(wait, stream.next()).await {
            Ok(next) => next,
            Err(_) if lowat.raised() => {
                // A slow client: wake for every byte again.
                lowat.give_up();
                continue;
            }
            Err(_) => {
                // Keep what arrived, so the client can resume after it.
                pending.flush(app, session).await?;
                return Err(Error::with_status(
                    Code::BlobUploadInvalid,
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                    "upload {}: no data for {}s; resume from the offset GET on the upload reports",
                    session.id,
                    app.body_idle_timeout.as_secs()
                ),
                ));
            }
        };
        match next {
            None => break,
            Some(Err(e)) => {
                pending.flush(app, session).await?;
                return Err(Error::new(
                    Code::BlobUploadInvalid,
                    format!("upload {}: request body broke off: {e}", session.id),
                ));
            }
            Some(Ok(chunk)) => {
                last_data = Instant::now();
                // Bodies without a declared length (chunked transfer, HTTP/2)
                // are checked as they grow.
                if let Some(max) = app.store.max_blob_size {
                    let total = session.offset + (pending.len + chunk.len()) as u64;
                    if total > max {
                        return Err(blob_too_large(
                            &format!("upload {} ({total} bytes received so far)", session.id),
                            max,
                        ));
                    }
                }
                lowat.received(chunk.len() as u64);
                app.metrics
                    .bytes_received
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                pending.push(chunk);
                if pending.full() {
                    pending.flush(app, session).await?;
                }
            }
        }
    }
    pending.flush(app, session).await
}

fn upload_location(repo: &str, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn created_blob(repo: &str, d: &Digest) -> Response {
    finish(
        reply(StatusCode::CREATED)
            .header(header::LOCATION, format!("/v2/{repo}/blobs/{d}"))
            .header(header::CONTENT_LENGTH, 0)
            .header("docker-content-digest", d.to_string()),
        Body::empty(),
    )
}

async fn upload_post(app: &App, repo: &str, req: Request) -> Result<Response> {
    let q = req.uri().query().unwrap_or("").to_string();
    if let Some(mount) = query_one(&q, "mount") {
        let d = digest::parse(&mount)?;
        let from = query_one(&q, "from");
        let from_ok = match &from {
            Some(f) => {
                validate_name(f).is_ok()
                    && check_auth(app, req.headers(), &needs(f, Action::Pull), &[]).is_ok()
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
    let session = app.store.upload_start(repo).await?;
    let mut s = session.lock().await;
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
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

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

/// Locks session `id` of `repo` for one request. A session finished,
/// cancelled or expired while the request waited for it is unknown; one
/// dropped from memory after a failed write is reloaded from storage.
async fn lock_upload(
    app: &App,
    repo: &str,
    id: &str,
) -> Result<tokio::sync::OwnedMutexGuard<Session>> {
    loop {
        let session: SharedSession = app.store.upload_get(repo, id).await?;
        let mut s = session.clone().lock_owned().await;
        if app.store.is_current(id, &session) {
            s.touch();
            return Ok(s);
        }
        if s.is_closed() {
            return Err(Error::new(
                Code::BlobUploadUnknown,
                format!("upload {id} in repository {repo} was finished, cancelled or expired: start a new one"),
            ));
        }
    }
}

async fn upload_op(app: &App, repo: &str, id: &str, req: Request) -> Result<Response> {
    let mut s = lock_upload(app, repo, id).await?;
    let result = upload_op_locked(app, repo, id, &mut s, req).await;
    // Idle time counts from the end of the last request.
    s.touch();
    result
}

async fn upload_op_locked(
    app: &App,
    repo: &str,
    id: &str,
    s: &mut Session,
    req: Request,
) -> Result<Response> {
    match req.method().clone() {
        Method::GET => Ok(upload_status(repo, s, StatusCode::NO_CONTENT)),
        Method::DELETE => {
            app.store.upload_cancel(s).await?;
            Ok(finish(reply(StatusCode::NO_CONTENT), Body::empty()))
        }
        Method::PATCH => {
            if let Err(e) = check_chunk(&req, s) {
                let mut r = error_response(&e);
                for (k, v) in [
                    (header::LOCATION, upload_location(repo, &s.id)),
                    (header::RANGE, range_header(s.offset)),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        r.headers_mut().insert(k, v);
                    }
                }
                return Ok(r);
            }
            check_declared_size(app, &req, s.offset, &format!("upload {id}"))?;
            pump(app, s, req).await?;
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
            pump(app, s, req).await?;
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
    fn routes_split_on_the_last_keyword() {
        assert!(
            matches!(parse_route("/v2/a/b/manifests/latest"), Some(Route::Manifest(r, t)) if r == "a/b" && t == "latest")
        );
        assert!(
            matches!(parse_route("/v2/blobs/blobs/uploads/x1"), Some(Route::Upload(r, i)) if r == "blobs" && i == "x1")
        );
        assert!(
            matches!(parse_route("/v2/a/blobs/uploads/"), Some(Route::UploadStart(r)) if r == "a")
        );
        assert!(matches!(parse_route("/v2/a/tags/list"), Some(Route::Tags(r)) if r == "a"));
        assert!(parse_route("/v3/x").is_none());
    }

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
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9)));
    }
}
