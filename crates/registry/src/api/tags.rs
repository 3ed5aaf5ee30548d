//! `GET /v2/<name>/tags/list`, and the `n`/`last` pagination with `Link`
//! headers that the catalog shares.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::reply::{json_response, query_one, unsupported};
use super::App;
use crate::error::{Code, Error, Result};

/// Lists the tags of `repo` in lexical order.
pub(super) async fn list(app: &App, repo: &str, req: Request) -> Result<Response> {
    let method = req.method();
    if method != Method::GET {
        return Err(unsupported(method, "tags/list"));
    }
    let all = app.store.tags(repo).await?;
    let q = req.uri().query().unwrap_or("");
    paginate(all, q, &format!("/v2/{repo}/tags/list"), "tags", Some(repo))
}

/// Answers with the entries of `all` after the `last` parameter of `q`, at
/// most `n` of them, as `{field: [...]}` (with `name` when `repo` is
/// given) and a `Link` to the next page of `base` when there is one.
pub(super) fn paginate(
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
