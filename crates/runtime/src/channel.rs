//! The parent ↔ child synchronisation socket (SOCK_SEQPACKET: one message
//! per send, so no framing is needed). A message is a tag byte and a payload.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

/// One end of the socket pair.
pub(crate) struct Channel(pub OwnedFd);

/// Creates a connected pair (parent end, child end), both close-on-exec.
pub(crate) fn pair() -> nix::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    /// Sends one message.
    pub fn send(&self, tag: u8, payload: &[u8]) -> nix::Result<()> {
        let mut msg = Vec::with_capacity(payload.len() + 1);
        msg.push(tag);
        msg.extend_from_slice(payload);
        loop {
            match send(self.0.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                r => return r.map(drop),
            }
        }
    }

    /// Receives one message; None when the other side closed its end.
    pub fn recv(&self) -> nix::Result<Option<(u8, Vec<u8>)>> {
        // Peek at the length first: most messages are a few bytes, and a
        // large zeroed buffer per message costs page faults.
        let mut probe = [0u8; 1];
        let len = loop {
            match recv(
                self.0.as_raw_fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(0) => return Ok(None),
                Ok(n) => break n,
            }
        };
        let mut buf = vec![0u8; len];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(0) => return Ok(None),
                Ok(n) => {
                    buf.truncate(n);
                    let tag = buf[0];
                    buf.remove(0);
                    return Ok(Some((tag, buf)));
                }
            }
        }
    }

    /// Reports a failure to the parent (best effort) and exits the child.
    pub fn fail(&self, msg: &str) -> ! {
        let _ = self.send(b'E', msg.as_bytes());
        crate::sys::exit_now(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries_and_size() {
        let (a, b) = pair().unwrap();
        let big = vec![7u8; 100_000];
        a.send(b'X', b"small").unwrap();
        a.send(b'Y', &big).unwrap();
        assert_eq!(b.recv().unwrap(), Some((b'X', b"small".to_vec())));
        assert_eq!(b.recv().unwrap(), Some((b'Y', big)));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
