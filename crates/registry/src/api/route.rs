//! Every request's way in: accounting, the route table and the auth gate.
//!
//! Repository names contain `/`, so routing is done by hand on the path:
//! the last `/blobs/uploads/`, `/blobs/`, `/manifests/`, `/referrers/` or
//! `/tags/list` splits the name from the rest. The repository name is
//! checked first, then authorisation and the read-only check, then the
//! resource's handler.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::reply::error_response;
use super::{base, blobs, catalog, manifests, referrers, tags, uploads, App};
use crate::auth::{Access, Action};
use crate::digest::validate_name;
use crate::error::{Code, Error, Result};

/// What a request path names (public for the fuzz targets, through
/// [`super::fuzzing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/metrics`.
    Metrics,
    /// `/token`.
    Token,
    /// `/healthz`: the process serves (liveness).
    Health,
    /// `/readyz`: the process can use its storage (readiness).
    Ready,
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

impl Route {
    /// The repository a route is about, if any.
    fn repository(&self) -> Option<&str> {
        match self {
            Route::Base
            | Route::Catalog
            | Route::Metrics
            | Route::Token
            | Route::Health
            | Route::Ready => None,
            Route::Tags(r)
            | Route::Manifest(r, _)
            | Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Referrers(r, _) => Some(r),
        }
    }
}

/// Splits `rest` at the last `sep` into a repository and a final path
/// segment, both non-empty.
fn split_last<'a>(rest: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let (repo, tail) = rest.rsplit_once(sep)?;
    (!tail.is_empty() && !tail.contains('/') && !repo.is_empty()).then_some((repo, tail))
}

/// The route table: which endpoint `path` names (`None`: no such endpoint).
pub(crate) fn parse_route(path: &str) -> Option<Route> {
    match path {
        "/metrics" => return Some(Route::Metrics),
        "/token" => return Some(Route::Token),
        "/healthz" => return Some(Route::Health),
        "/readyz" => return Some(Route::Ready),
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

/// Serves one request and accounts for it: the in-flight limit, the
/// distribution API version header, metrics and the access log line.
pub(super) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let busy = app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let over_limit = app.max_in_flight.is_some_and(|max| busy >= max)
        && !matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz");
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

/// `action` on `repo`, as a list of accesses to check.
pub(super) fn needs(repo: &str, action: Action) -> Vec<Access> {
    vec![Access {
        repo: repo.to_string(),
        action,
    }]
}

/// Checks that the request's credentials grant `needed` (and asks for
/// `wanted` too in a token challenge); the refusal is the response to send.
pub(super) async fn check_auth(
    app: &App,
    headers: &HeaderMap,
    needed: &[Access],
    wanted: &[Access],
) -> Result<(), Box<Response>> {
    let scheme = if app.tls { "https" } else { "http" };
    // The default realm is built from the Host header: one that is not
    // host[:port] (a `"` in it would add parameters to the challenge) is
    // not used.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    app.auth
        .check(headers, needed, wanted, &format!("{scheme}://{host}"))
        .await
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

/// The auth gate, then the resource's handler.
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
    // The name first: its validity says nothing about what is stored, and
    // an invalid one must not reach the token challenge's `scope` (a `"`
    // in it would add parameters to the challenge).
    if let Some(repo) = route.repository() {
        validate_name(repo)?;
    }
    // Authorisation next, so an anonymous client learns nothing else.
    let needed = match &route {
        Route::Metrics | Route::Token | Route::Health | Route::Ready => None,
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
            Route::UploadStart(_) => uploads::mount_source(req.uri().query().unwrap_or(""))
                .map(|from| needs(&from, Action::Pull))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if let Err(resp) = check_auth(app, req.headers(), &needed, &wanted).await {
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
        Route::Metrics => base::metrics(app, req),
        Route::Token => base::token(app, req).await,
        Route::Health => Ok(base::health()),
        Route::Ready => base::ready(app).await,
        Route::Base => Ok(base::version()),
        Route::Catalog => catalog::list(app, req).await,
        Route::Tags(repo) => tags::list(app, &repo, req).await,
        Route::Referrers(repo, d) => referrers::list(app, &repo, &d, req).await,
        Route::Manifest(repo, reference) => manifests::serve(app, &repo, &reference, req).await,
        Route::Blob(repo, d) => blobs::serve(app, &repo, &d, req).await,
        Route::UploadStart(repo) => uploads::start(app, &repo, req).await,
        Route::Upload(repo, id) => uploads::serve(app, &repo, &id, req).await,
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
}
