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
