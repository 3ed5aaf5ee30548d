//! Building responses and reading query parameters, for every handler.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;

use crate::error::{Code, Error};

/// Every value of `key` in a query string.
pub(super) fn query_all(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The first value of `key` in a query string.
pub(super) fn query_one(query: &str, key: &str) -> Option<String> {
    query_all(query, key).into_iter().next()
}

/// A response builder with `status`.
pub(super) fn reply(status: StatusCode) -> axum::http::response::Builder {
    Response::builder().status(status)
}

/// The response `b` describes with `body` (a 500 if the builder was given
/// a bad header).
pub(super) fn finish(b: axum::http::response::Builder, body: Body) -> Response {
    b.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A JSON body with its type and length.
pub(super) fn json_response(
    status: StatusCode,
    content_type: &str,
    value: &serde_json::Value,
) -> Response {
    let body = value.to_string();
    finish(
        reply(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len()),
        Body::from(body),
    )
}

/// The spec's error body for `e`, with its status.
pub(super) fn error_response(e: &Error) -> Response {
    json_response(e.status(), "application/json", &e.body())
}

/// UNSUPPORTED: `method` on an endpoint (`what`) that has no such operation.
pub(super) fn unsupported(method: &Method, what: &str) -> Error {
    Error::new(
        Code::Unsupported,
        format!("{method} is not supported on {what}"),
    )
}
