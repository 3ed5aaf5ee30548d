//! The endpoints outside repositories: the `/v2/` version check, the
//! built-in token endpoint `/token`, `/metrics`, and the load balancer's
//! `/healthz` and `/readyz`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::reply::{error_response, finish, json_response, reply};
use super::App;
use crate::error::{Code, Error, Result};

/// `/v2/`: an empty JSON object (the client may talk to this registry).
pub(super) fn version() -> Response {
    json_response(StatusCode::OK, "application/json", &serde_json::json!({}))
}

/// `/healthz`: 200 while the process serves requests at all.
pub(super) fn health() -> Response {
    json_response(
        StatusCode::OK,
        "application/json",
        &serde_json::json!({"status": "ok"}),
    )
}

/// How long `/readyz` waits for the storage probe.
const READY_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// `/readyz`: 200 when a storage request succeeds within a few seconds,
/// else 503 naming the storage error, so a load balancer sends requests
/// to the other replicas.
pub(super) async fn ready(app: &App) -> Result<Response> {
    let probe = tokio::time::timeout(READY_PROBE, app.store.driver.stat("readyz")).await;
    let failed = match probe {
        Ok(Ok(_)) => {
            return Ok(json_response(
                StatusCode::OK,
                "application/json",
                &serde_json::json!({"status": "ready"}),
            ))
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", READY_PROBE.as_secs()),
    };
    Err(Error::Io(std::io::Error::other(
        crate::storage::Unavailable(failed),
    )))
}

/// `/metrics`: the Prometheus text, behind `metrics.token` when set.
pub(super) fn metrics(app: &App, req: Request) -> Result<Response> {
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

/// `/token`: a JWT for the requested scopes (query, or form on `POST`).
pub(super) async fn token(app: &App, req: Request) -> Result<Response> {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let params = if method == Method::POST {
        // Read within `request_timeout`, as a manifest is: anyone may
        // call this endpoint, and a trickled body would hold its slot.
        let body = tokio::time::timeout(
            app.request_timeout,
            axum::body::to_bytes(req.into_body(), 64 * 1024),
        )
        .await
        .map_err(|_| {
            Error::with_status(
                Code::Unsupported,
                StatusCode::REQUEST_TIMEOUT,
                "token request form was not received in time (limits.request_timeout_secs)",
            )
        })?
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
    match app.auth.issue_token(&headers, &params).await {
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
