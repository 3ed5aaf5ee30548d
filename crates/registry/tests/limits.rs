//! Limits against slow clients, and graceful shutdown.

mod common;

use std::time::Duration;

use common::TestRegistry;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (a 60 s safety net keeps a
/// broken server from hanging the suite; no timing is asserted).
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let reg = TestRegistry::start_with(|c| c.limits.header_timeout_secs = 1).await;
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn a_stalled_upload_body_is_aborted_and_keeps_what_arrived() {
    let reg = TestRegistry::start_with(|c| c.limits.body_idle_timeout_secs = 1).await;
    let r = reg.post("/v2/slow/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(
        format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["range"],
        "0-9",
        "the 10 bytes that arrived are kept for a resume"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_a_request_in_flight_finish() {
    let mut reg = TestRegistry::start().await;
    let r = reg.post("/v2/g/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n01234").as_bytes())
        .await
        .unwrap();
    // Make sure the request is being served before shutting down.
    let server = reg.server.take().unwrap();
    while server
        .app()
        .metrics
        .in_flight
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = server.addr();
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(30)));
    // New connections are refused once the listener is closed...
    let mut refused = false;
    for _ in 0..1000 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener stays open during shutdown");
    // ...while the request in flight completes.
    s.write_all(b"56789").await.unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    stopping.await.unwrap();
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_get_429() {
    let reg = TestRegistry::start_with(|c| c.limits.max_in_flight = Some(1)).await;
    let r = reg.post("/v2/busy/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    // Hold one request open: a PATCH whose body has not all arrived.
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nab"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let app = reg.server.as_ref().unwrap().app().clone();
    while app
        .metrics
        .in_flight
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(common::error_code(r).await, "TOOMANYREQUESTS");
    s.write_all(b"cd").await.unwrap();
    assert!(read_until_closed(&mut s).await.starts_with("HTTP/1.1 202"));
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Reads one response with a `Content-Length` body from a kept-alive
/// connection (a 60 s safety net keeps a hung server from hanging the suite).
async fn read_response(s: &mut TcpStream) -> String {
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        head + &String::from_utf8_lossy(&body)
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("no response from the server")
}

/// Large plain-TCP bodies are read with a raised receive low-water mark
/// (src/lowat.rs). A client that sends slower than the mark fills, and
/// the next request on the same connection, must still be served.
#[tokio::test]
async fn large_bodies_slow_or_fast_are_received_whole_and_the_connection_stays_usable() {
    let reg = TestRegistry::start().await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    // Fast: the whole body at once, then a second request on the connection.
    let r = reg.post("/v2/lowat/blobs/uploads/").await;
    let fast = r.headers()["location"].to_str().unwrap().to_string();
    let head = format!(
        "PATCH {fast} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(&[head.as_bytes(), &body].concat())
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("range: 0-2999999"), "{answer}");
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Slow: 700 kB in small pieces with pauses longer than the low-water
    // mark's patience, on the same connection.
    let r = reg.post("/v2/lowat/blobs/uploads/").await;
    let slow = r.headers()["location"].to_str().unwrap().to_string();
    let part = &body[..700_000];
    s.write_all(
        format!(
            "PATCH {slow} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            part.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for piece in part.chunks(100_000) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("range: 0-699999"), "{answer}");
    let d = common::sha256(part);
    let r = reg.finish_upload(&slow, &d, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/lowat/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), part);
}

/// Reads the server's first response (head and `Content-Length` body) on
/// a raw connection, within `within` (no idle timeout of the server's may
/// be what answers).
async fn first_response(s: &mut TcpStream, within: Duration) -> String {
    tokio::time::timeout(within, read_response(s))
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
}

/// A request declaring a body larger than the blob size limit (16 GiB by
/// default) is refused at once with 413 SIZE_INVALID naming the limit and
/// its config key — before `100 Continue`, so the client never sends the
/// body — for a monolithic POST, a PATCH and a PUT. The refused POST
/// leaves no session; the PATCH and PUT leave theirs as it was.
#[tokio::test]
async fn a_declared_body_over_the_blob_size_limit_is_refused_before_100_continue() {
    let reg = TestRegistry::start().await;
    let limit = berth_registry::Config::default()
        .limits
        .max_blob_size
        .expect("a blob size limit by default");
    assert_eq!(limit, 16 << 30);
    let r = reg.post("/v2/big/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.patch_chunk(&loc, None, "abc").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = common::sha256(b"x");
    for (method, path, length) in [
        (
            "POST",
            format!("/v2/big/blobs/uploads/?digest={d}"),
            limit + 1,
        ),
        ("PATCH", loc.clone(), limit - 2),
        ("PUT", format!("{loc}?digest={d}"), limit - 2),
    ] {
        let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
            .await
            .unwrap();
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
                 Content-Length: {length}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let answer = first_response(&mut s, Duration::from_secs(15)).await;
        let first = answer.lines().next().unwrap_or("");
        assert!(first.starts_with("HTTP/1.1 413"), "{method}: {answer}");
        assert!(answer.contains("SIZE_INVALID"), "{method}: {answer}");
        assert!(
            answer.contains(&limit.to_string()) && answer.contains("limits.max_blob_size"),
            "{method}: the message names the limit and its key: {answer}"
        );
    }
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["range"],
        "0-2",
        "the refused requests changed nothing"
    );
    let driver = &reg.server.as_ref().unwrap().app().store.driver;
    assert_eq!(
        driver.list("uploads").await.unwrap().len(),
        1,
        "the refused POST left no session"
    );
}

/// Sends `head` and then a chunked body of `len` bytes in 64 KiB pieces,
/// without the final chunk, and returns the server's answer. The last
/// piece is one byte, so that a server refusing the body when it passes
/// `len - 1` bytes has read everything sent (closing a connection with
/// unread data would reset it, and the answer could be lost).
async fn chunked_request(reg: &TestRegistry, head: &str, len: usize) -> String {
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut sizes: Vec<usize> = (0..(len - 1) / (64 << 10)).map(|_| 64 << 10).collect();
    sizes.extend([(len - 1) % (64 << 10), 1].into_iter().filter(|&n| n > 0));
    for size in sizes {
        let chunk = [
            format!("{size:x}\r\n").as_bytes(),
            &vec![b'z'; size],
            b"\r\n",
        ]
        .concat();
        if s.write_all(&chunk).await.is_err() {
            break; // the server stopped reading: its answer follows
        }
    }
    first_response(&mut s, Duration::from_secs(15)).await
}

/// A body without a `Content-Length` (chunked transfer) that grows past
/// the blob size limit is cut off with 413, and its session is dropped
/// with the data it had: for a PATCH and for a monolithic POST.
#[tokio::test]
async fn a_chunked_body_growing_past_the_blob_size_limit_is_cut_off_and_dropped() {
    let reg = TestRegistry::start_with(|c| c.limits.max_blob_size = Some(1 << 20)).await;
    let r = reg.post("/v2/grow/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.patch_chunk(&loc, None, vec![b'a'; 600 << 10]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // 600 KiB held, then a body one byte longer than what is left.
    let answer = chunked_request(
        &reg,
        &format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (1 << 20) - (600 << 10) + 1,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("SIZE_INVALID") && answer.contains("limits.max_blob_size"),
        "{answer}"
    );
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the session is dropped");
    assert_eq!(common::error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    let d = common::sha256(&vec![b'z'; (1 << 20) + 1]);
    let answer = chunked_request(
        &reg,
        &format!(
            "POST /v2/grow/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        ),
        (1 << 20) + 1,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let driver = &reg.server.as_ref().unwrap().app().store.driver;
    assert_eq!(
        driver.list("uploads").await.unwrap(),
        Vec::<String>::new(),
        "no upload data is left"
    );
    // Blobs up to the limit still go through.
    reg.push_blob("grow", &vec![b'y'; 1 << 20]).await;
}

async fn open(reg: &TestRegistry) -> String {
    let r = reg.post("/v2/many/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// A repository may hold `limits.max_uploads_per_repo` open sessions; a
/// POST beyond gets 429 TOOMANYREQUESTS naming the limit, other
/// repositories are not affected, and finished or cancelled sessions
/// free their slot (monolithic pushes hold one only while they run).
#[tokio::test]
async fn open_upload_sessions_per_repository_are_limited() {
    let reg = TestRegistry::start_with(|c| c.limits.max_uploads_per_repo = 2).await;
    assert_eq!(
        berth_registry::Config::default()
            .limits
            .max_uploads_per_repo,
        1000
    );
    let first = open(&reg).await;
    let second = open(&reg).await;
    let r = reg.post("/v2/many/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("many")
            && message.contains("limits.max_uploads_per_repo")
            && message.contains('2'),
        "{message}"
    );
    let d = common::sha256(b"blocked");
    let r = reg
        .client
        .post(reg.url(&format!("/v2/many/blobs/uploads/?digest={d}")))
        .body("blocked")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a monolithic POST opens a session too"
    );
    assert_eq!(
        reg.post("/v2/other/blobs/uploads/").await.status(),
        StatusCode::ACCEPTED
    );

    // Cancelling frees a slot.
    assert_eq!(reg.delete(&first).await.status(), StatusCode::NO_CONTENT);
    let third = open(&reg).await;
    assert_eq!(
        reg.post("/v2/many/blobs/uploads/").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // So does finishing.
    let d = common::sha256(b"done");
    assert_eq!(
        reg.finish_upload(&second, &d, "done").await.status(),
        StatusCode::CREATED
    );
    let _fourth = open(&reg).await;
    // A failed finish (wrong digest) discards the session and its slot.
    let r = reg
        .finish_upload(&third, &common::sha256(b"other"), "done")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // One slot free: monolithic pushes, one after another, each hold it
    // only while they run.
    for i in 0..3 {
        reg.push_blob("many", format!("monolithic {i}").as_bytes())
            .await;
    }
}

/// Polls `done` every 100 ms for up to `secs` seconds.
async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upload session no request uses for `limits.upload_idle_timeout_secs`
/// is removed by the serving process itself (GC is off here), from
/// storage and memory: a later PATCH or PUT gets 404 BLOB_UPLOAD_UNKNOWN
/// and its slot is free. A session a request keeps streaming into for
/// longer than the timeout is not idle and stays.
#[tokio::test]
async fn abandoned_upload_sessions_expire_while_serving() {
    assert_eq!(
        berth_registry::Config::default()
            .limits
            .upload_idle_timeout_secs,
        3600
    );
    let reg = TestRegistry::start_with(|c| {
        c.limits.upload_idle_timeout_secs = 2;
        c.limits.max_uploads_per_repo = 2;
        assert!(!c.gc.enabled);
    })
    .await;
    let r = reg.post("/v2/idle/blobs/uploads/").await;
    let abandoned = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.patch_chunk(&abandoned, None, "abc").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = abandoned.rsplit('/').next().unwrap().to_string();

    // A slow PATCH: 10 bytes over ~5 s, longer than the idle timeout.
    let r = reg.post("/v2/idle/blobs/uploads/").await;
    let busy = r.headers()["location"].to_str().unwrap().to_string();
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(
        format!("PATCH {busy} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let answer = first_response(&mut s, Duration::from_secs(15)).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let d = common::sha256(b"0123456789");
    let r = reg.finish_upload(&busy, &d, Vec::new()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the streamed-into session stayed"
    );

    let app = reg.server.as_ref().unwrap().app().clone();
    // Listed, not stat'ed: some S3 servers keep emptied "directories".
    wait_for(
        "the abandoned session is removed from storage",
        30,
        async || {
            !app.store
                .driver
                .list("uploads")
                .await
                .unwrap()
                .contains(&id)
        },
    )
    .await;
    assert!(
        app.metrics
            .uploads_expired
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let r = reg.patch_chunk(&abandoned, None, "def").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(common::error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = reg
        .finish_upload(&abandoned, &common::sha256(b"abc"), Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(common::error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Both slots are free again.
    for _ in 0..2 {
        assert_eq!(
            reg.post("/v2/idle/blobs/uploads/").await.status(),
            StatusCode::ACCEPTED
        );
    }
}

/// A session left in storage by an earlier run of the registry (never
/// loaded into memory by this one) expires too.
#[tokio::test]
async fn an_upload_session_left_from_before_a_restart_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::config_for(dir.path());
    let mut reg = TestRegistry::start_in(dir, c.clone()).await;
    let r = reg.post("/v2/left/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = reg.patch_chunk(&loc, None, "abc").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    reg.stop().await;

    let dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
    let mut c = c;
    c.limits.upload_idle_timeout_secs = 1;
    let reg = TestRegistry::start_in(dir, c).await;
    let app = reg.server.as_ref().unwrap().app().clone();
    wait_for("the old session is removed from storage", 30, async || {
        app.store.driver.list("uploads").await.unwrap().is_empty()
    })
    .await;
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(common::error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

/// The token endpoint's form body is read within `request_timeout` like a
/// manifest's: an anonymous client trickling it cannot hold a request
/// slot (and, under `max_in_flight`, lock everyone out) for ever.
#[tokio::test]
async fn a_stalled_token_form_is_answered_408() {
    let reg = TestRegistry::start_with(|c| c.limits.request_timeout_secs = 1).await;
    let mut s = TcpStream::connect(reg.server.as_ref().unwrap().addr())
        .await
        .unwrap();
    s.write_all(
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 100\r\n\r\ngrant_type",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("token request form"), "{answer}");
}
