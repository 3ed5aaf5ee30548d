//! The sync channel between the parent and the children it forks: a
//! SOCK_SEQPACKET pair (one message per send, so no framing is needed)
//! carrying [`Message`]s (see `message.rs` for the wire table).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::error::{sys_err, Error, Result};
use crate::message::Message;

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
    pub fn send(&self, msg: &Message) -> nix::Result<()> {
        let data = msg.encode();
        loop {
            match send(self.0.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                r => return r.map(drop),
            }
        }
    }

    /// Receives one message; None when the other side closed its end. A
    /// packet that does not decode is an error naming its tag.
    pub fn recv(&self) -> Result<Option<Message>> {
        let Some(packet) = self.recv_packet().map_err(sys_err("sync channel"))? else {
            return Ok(None);
        };
        Message::decode(&packet)
            .map(Some)
            .map_err(|e| Error::Init(format!("sync channel: {e}")))
    }

    fn recv_packet(&self) -> nix::Result<Option<Vec<u8>>> {
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
                    return Ok(Some(buf));
                }
            }
        }
    }

    /// In a child: receives the next message and returns it if `want`
    /// accepts it; otherwise reports what came instead (unless the parent
    /// is gone) and exits.
    pub fn expect<T>(&self, what: &str, want: impl FnOnce(Message) -> Option<T>) -> T {
        match self.recv() {
            Ok(Some(msg)) => {
                let shown = msg.to_string();
                match want(msg) {
                    Some(v) => v,
                    None => self.fail(&format!("expected the {what} message, got {shown}")),
                }
            }
            Ok(None) => crate::sys::exit_now(1),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// Reports a failure to the parent (best effort) and exits the child.
    pub fn fail(&self, msg: &str) -> ! {
        let _ = self.send(&Message::Error(msg.to_string()));
        crate::sys::exit_now(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries_and_size() {
        let (a, b) = pair().unwrap();
        let big = Message::HookState(vec![7u8; 100_000]);
        a.send(&Message::Pid(12)).unwrap();
        a.send(&big).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::Pid(12)));
        assert_eq!(b.recv().unwrap(), Some(big));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn an_unknown_tag_on_the_wire_is_an_error_naming_it() {
        let (a, b) = pair().unwrap();
        send(a.0.as_raw_fd(), b"Q", MsgFlags::empty()).unwrap();
        let err = b.recv().unwrap_err().to_string();
        assert_eq!(err, "sync channel: unknown message tag 0x51 'Q'");
    }
}
