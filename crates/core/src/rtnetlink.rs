//! A minimal rtnetlink client: one NETLINK_ROUTE socket, requests with an
//! ack, dumps read to their end. Enough for moving, renaming, setting up
//! and deleting links and copying addresses; the message bodies are built
//! by the callers with [`attr`] and [`ifinfo`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Length of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;

/// Appends a netlink attribute (type `typ`, `payload`), padded to 4 bytes.
pub fn attr(buf: &mut Vec<u8>, typ: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// `struct ifinfomsg` for link `index`, setting `flags` within `change`.
pub fn ifinfo(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

/// A NETLINK_ROUTE socket.
pub struct Rtnl(OwnedFd);

impl Rtnl {
    /// Opens a socket in the caller's network namespace.
    pub fn open() -> std::io::Result<Rtnl> {
        // SAFETY: socket takes integers and returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; we own it.
        Ok(Rtnl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens a socket in the network namespace `ns` (from a short-lived
    /// thread that enters it, so the caller never changes namespace; a
    /// netlink socket stays in the namespace it was made in).
    pub fn open_in(ns: &OwnedFd) -> std::io::Result<Rtnl> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                Rtnl::open()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
        })
    }

    /// Sends one request and reads the answers until its ack or the end of
    /// a dump; returns the payloads (after the netlink header) of the
    /// answers of type `want`. A refusal is the kernel's errno.
    pub fn request(
        &self,
        typ: u16,
        flags: u16,
        body: &[u8],
        want: u16,
    ) -> std::io::Result<Vec<Vec<u8>>> {
        let mut msg = Vec::with_capacity(NLMSG_HDR + body.len());
        msg.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&typ.to_ne_bytes());
        msg.extend_from_slice(
            &(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes(),
        );
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        nix::sys::socket::send(
            self.0.as_raw_fd(),
            &msg,
            nix::sys::socket::MsgFlags::empty(),
        )?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = nix::sys::socket::recv(
                self.0.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            )?;
            let mut off = 0;
            while off + NLMSG_HDR <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let t = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < NLMSG_HDR || off + len > n {
                    return Err(std::io::Error::other("malformed netlink answer"));
                }
                let payload = &buf[off + NLMSG_HDR..off + len];
                match t as libc::c_int {
                    libc::NLMSG_DONE => return Ok(out),
                    libc::NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or_default(),
                        );
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(std::io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ if t == want => out.push(payload.to_vec()),
                    _ => {}
                }
                off += len.next_multiple_of(4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut b = Vec::new();
        attr(&mut b, 3, b"eth0\0");
        assert_eq!(b.len(), 12);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 9);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 3);
    }

    #[test]
    fn deleting_a_link_that_does_not_exist_is_refused_with_enodev() {
        let rtnl = Rtnl::open().expect("netlink socket");
        let err = rtnl
            .request(libc::RTM_DELLINK, 0, &ifinfo(i32::MAX, 0, 0), 0)
            .expect_err("no link has index i32::MAX");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
