//! The body pump: streams a request body into an upload session.
//!
//! Chunks are gathered as received (no copy) into ~512 KiB pieces, each
//! handed to the session (hashed and written on the blocking pool while
//! the next one is received). A stalled body times out, one past the blob
//! size limit is cut off, and while a plain HTTP/1 body streams in, the
//! socket's `SO_RCVLOWAT` is raised (see [`crate::lowat`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use super::App;
use crate::error::{Code, Error, Result};
use crate::lowat::{self, BodyLowat, ConnSocket};
use crate::store::{blob_too_large, Session};

/// Streams a request body into an upload, writing in ~512 KiB pieces and
/// aborting if the client stalls for `app.body_idle_timeout`. A body that
/// grows past the blob size limit is cut off (413) and the session, which
/// can no longer become a blob, is dropped with its data.
pub(super) async fn pump(app: &App, session: &mut Session, req: Request) -> Result<()> {
    let received = pump_pieces(app, session, req).await;
    // Whatever happened, what was handed to storage is there before we answer.
    let settled = session.settle().await;
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
pub(super) fn check_declared_size(app: &App, req: &Request, held: u64, what: &str) -> Result<()> {
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
