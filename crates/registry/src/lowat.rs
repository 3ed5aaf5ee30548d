//! Batched wake-ups for large request bodies (`SO_RCVLOWAT`).
//!
//! A client pushing a layer writes it in small pieces (skopeo: 32 KiB). A
//! server that keeps up wakes once per piece: ~1 500 wake-ups, `epoll_wait`
//! returns and context switches for a 50 MB layer. While a plain-TCP
//! HTTP/1 body with a `Content-Length` streams in, the upload handler
//! raises the connection's receive low-water mark so the kernel wakes it
//! once per [`LOWAT`] bytes instead.
//!
//! The mark never exceeds what is still to come: when hyper goes back to
//! the socket its buffer holds no body bytes (it hands them over first),
//! so the socket owes exactly the body bytes the handler has not seen
//! yet. A mark set above that would wait forever; the guard lowers it as
//! the end nears and resets it to 1 when the body ends or the handler
//! stops, so the next request's headers wake the server at once. A client
//! sending slower than [`LOWAT`] per [`PATIENCE`] gets the default mark
//! back for the rest of its body (see [`BodyLowat::give_up`]).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Low-water mark while a large body streams in.
pub const LOWAT: u64 = 256 * 1024;

/// How long to wait for [`LOWAT`] bytes before treating the client as
/// slow and waking for every byte again.
pub const PATIENCE: Duration = Duration::from_millis(100);

/// A plain-TCP connection's socket, attached to each of its requests (a
/// duplicate of the connection's descriptor, so it stays valid as long as
/// a request holds it).
#[derive(Clone, Debug)]
pub struct ConnSocket(Arc<OwnedFd>);

impl ConnSocket {
    /// Duplicates the descriptor of `socket`; `None` if that fails (the
    /// connection is then served without the optimisation).
    pub fn of(socket: &impl AsFd) -> Option<ConnSocket> {
        socket
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(|fd| ConnSocket(Arc::new(fd)))
    }

    /// Sets `SO_RCVLOWAT`; false if the kernel refused.
    fn set_lowat(&self, bytes: u64) -> bool {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live
        // local; the descriptor is owned by `self` and therefore open.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
}

/// Keeps a connection's low-water mark in step with one request body;
/// resets it to 1 when dropped.
pub struct BodyLowat {
    socket: Option<ConnSocket>,
    /// Body bytes the handler has not received yet.
    remaining: u64,
    /// The mark currently set (1 = the kernel's default).
    current: u64,
}

impl BodyLowat {
    /// Tracks a body of `length` bytes on `socket`. `None` for either
    /// leaves the mark alone (TLS, HTTP/2 and chunked bodies, whose socket
    /// bytes are not body bytes).
    pub fn new(socket: Option<ConnSocket>, length: Option<u64>) -> BodyLowat {
        match (socket, length) {
            (Some(socket), Some(remaining)) if remaining > LOWAT => BodyLowat {
                socket: Some(socket),
                remaining,
                current: 1,
            },
            _ => BodyLowat {
                socket: None,
                remaining: 0,
                current: 1,
            },
        }
    }

    /// True while a raised mark may delay the next wake-up.
    pub fn raised(&self) -> bool {
        self.current > 1
    }

    /// Sets the mark for the next wait: [`LOWAT`], or what is left of the
    /// body when that is less.
    pub fn before_wait(&mut self) {
        let Some(socket) = &self.socket else {
            return;
        };
        let want = self.remaining.clamp(1, LOWAT);
        if want != self.current {
            if socket.set_lowat(want) {
                self.current = want;
            } else {
                self.give_up();
            }
        }
    }

    /// Records `n` body bytes received.
    pub fn received(&mut self, n: u64) {
        self.remaining = self.remaining.saturating_sub(n);
    }

    /// Back to waking for every byte for the rest of this body (a slow
    /// client, or the kernel refused the option).
    pub fn give_up(&mut self) {
        if let Some(socket) = self.socket.take() {
            if self.current != 1 {
                socket.set_lowat(1);
            }
        }
        self.current = 1;
    }
}

impl Drop for BodyLowat {
    fn drop(&mut self) {
        self.give_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn lowat_of(s: &TcpStream) -> i32 {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the local.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    #[test]
    fn mark_follows_the_body_and_is_reset_when_dropped() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let body = LOWAT * 3 + 100;
        let mut g = BodyLowat::new(ConnSocket::of(&server), Some(body));
        g.before_wait();
        assert_eq!(lowat_of(&server) as u64, LOWAT);
        assert!(g.raised());
        g.received(LOWAT * 3);
        g.before_wait();
        assert_eq!(lowat_of(&server), 100, "never above what is still owed");
        drop(g);
        assert_eq!(lowat_of(&server), 1, "reset for the next request");

        let mut g = BodyLowat::new(ConnSocket::of(&server), Some(body));
        g.before_wait();
        g.give_up();
        assert_eq!(lowat_of(&server), 1);
        g.before_wait();
        assert_eq!(lowat_of(&server), 1, "a slow client keeps the default");
    }

    #[test]
    fn small_unknown_length_or_no_socket_bodies_leave_the_mark_alone() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut server, _) = l.accept().unwrap();
        for mut g in [
            BodyLowat::new(ConnSocket::of(&server), Some(1000)),
            BodyLowat::new(ConnSocket::of(&server), None),
            BodyLowat::new(None, Some(LOWAT * 10)),
        ] {
            g.before_wait();
            assert!(!g.raised());
            assert_eq!(lowat_of(&server), 1);
        }
        // The duplicated descriptor outlives nothing it should not: the
        // connection still works after the guards are gone.
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
