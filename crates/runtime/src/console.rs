//! Container consoles: allocate a pseudo-terminal, hand its master to the
//! caller's `--console-socket`, and make the slave the container process's
//! controlling terminal.
//!
//! The wire format is runc's: one `sendmsg` on a connected `SOCK_STREAM` unix
//! socket whose payload is the master's file name (runc sends
//! `pty.Name()`, which is `/dev/ptmx` — the name of the file it opened, not
//! the `/dev/pts/N` slave) and whose `SCM_RIGHTS` control message carries
//! exactly one fd, the pty master. Receivers (containerd's shim, conmon,
//! `runc`'s `recvtty`) take the first fd of the first `SCM_RIGHTS` message and
//! use the payload only as a name.
//!
//! Order of calls in the container's init, as in runc: after `pivot_root`
//! (so that `/dev/ptmx` is the container's devpts instance), call
//! [`new_pty`], bind-mount [`pty_slave_path`] onto `/dev/console` (the
//! caller's job), send the master with [`send_master_on`] over a socket
//! that was connected with [`connect_console_socket`] *before* pivot_root
//! (the socket path is a host path), close the master, then call
//! [`make_controlling_terminal`] right before exec.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{getpid, getsid, setsid};

/// The payload runc sends along with the master fd (the master's file name).
pub const MASTER_NAME: &str = "/dev/ptmx";

/// Why a console operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Allocating or unlocking the pseudo-terminal failed.
    #[error("cannot allocate a pseudo-terminal ({step}): {source}; is devpts mounted on /dev/pts with ptmxmode=0666?")]
    Pty {
        /// Which call failed (posix_openpt, grantpt, unlockpt, ptsname, open slave).
        step: &'static str,
        /// The errno.
        source: Errno,
    },
    /// Connecting to the console socket failed.
    #[error("cannot connect to console socket {path:?}: {source}; pass --console-socket the path of a listening unix socket")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Sending or receiving the master fd failed.
    #[error("console socket: cannot {what} the pty master: {source}")]
    Transfer {
        /// "send" or "receive".
        what: &'static str,
        /// The errno.
        source: Errno,
    },
    /// The peer sent a message without a file descriptor.
    #[error("console socket: the message carried no file descriptor (expected one pty master in SCM_RIGHTS)")]
    NoFd,
    /// Accepting a connection on the listener failed.
    #[error("console socket: cannot accept a connection: {0}")]
    Accept(io::Error),
    /// Making the slave the controlling terminal failed.
    #[error("cannot make the pty the controlling terminal ({step}): {source}")]
    Ctty {
        /// Which call failed (setsid, TIOCSCTTY, dup2).
        step: &'static str,
        /// The errno.
        source: Errno,
    },
}

/// Allocates a pseudo-terminal from `/dev/ptmx`: returns (master, slave).
/// Both fds are close-on-exec; the slave is opened without becoming the
/// caller's controlling terminal.
pub fn new_pty() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    let pty = |step| move |source| ConsoleError::Pty { step, source };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(pty("posix_openpt"))?;
    grantpt(&master).map_err(pty("grantpt"))?;
    unlockpt(&master).map_err(pty("unlockpt"))?;
    let name = ptsname_r(&master).map_err(pty("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(pty("open slave"))?;
    // SAFETY: PtyMaster owns its fd; into_raw_fd hands the ownership to us.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((master, slave))
}

/// The `/dev/pts/N` path of the slave belonging to `master` (for the
/// `/dev/console` bind mount).
pub fn pty_slave_path(master: &OwnedFd) -> Result<PathBuf, ConsoleError> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint through the pointer, which points to
    // a live local of that type.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    if ret < 0 {
        return Err(ConsoleError::Pty {
            step: "TIOCGPTN",
            source: Errno::last(),
        });
    }
    Ok(PathBuf::from(format!("/dev/pts/{n}")))
}

/// Sets the terminal's window size (`process.consoleSize`: `rows` is its
/// height, `cols` its width), as runc does on the new pty when both are
/// non-zero. Works on the master or the slave.
pub fn set_window_size(pty: &OwnedFd, rows: u16, cols: u16) -> Result<(), ConsoleError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points
    // to a live local of that type.
    let ret = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret < 0 {
        return Err(ConsoleError::Pty {
            step: "TIOCSWINSZ",
            source: Errno::last(),
        });
    }
    Ok(())
}

/// Connects to the unix socket at `console_socket` (a `SOCK_STREAM`
/// listener, as containerd and conmon create).
pub fn connect_console_socket(console_socket: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(console_socket).map_err(|source| ConsoleError::Connect {
        path: console_socket.to_path_buf(),
        source,
    })
}

/// Sends `master` over the already connected `socket` exactly as runc does:
/// payload [`MASTER_NAME`], one fd in `SCM_RIGHTS`.
pub fn send_master_on(socket: BorrowedFd<'_>, master: &OwnedFd) -> Result<(), ConsoleError> {
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(MASTER_NAME.as_bytes())];
    loop {
        match sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(ConsoleError::Transfer {
                    what: "send",
                    source,
                })
            }
        }
    }
}

/// Connects to `console_socket` and sends `master` (see [`send_master_on`]).
pub fn send_master(console_socket: &Path, master: &OwnedFd) -> Result<(), ConsoleError> {
    let stream = connect_console_socket(console_socket)?;
    send_master_on(stream.as_fd(), master)
}

/// Receives one pty master from a connected socket: returns the fd and the
/// name the sender attached. The fd is close-on-exec.
pub fn recv_master_on(socket: BorrowedFd<'_>) -> Result<(OwnedFd, String), ConsoleError> {
    // runc's receiver reads up to 4096 bytes of name.
    let mut name = vec![0u8; 4096];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut name)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fd = None;
                let cmsgs = msg.cmsgs().map_err(|source| ConsoleError::Transfer {
                    what: "receive",
                    source,
                })?;
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            // SAFETY: the kernel installed these fds in our
                            // table for this message; we are their only owner.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                break (msg.bytes, fd);
            }
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(ConsoleError::Transfer {
                    what: "receive",
                    source,
                })
            }
        }
    };
    let fd = fd.ok_or(ConsoleError::NoFd)?;
    name.truncate(len);
    Ok((fd, String::from_utf8_lossy(&name).into_owned()))
}

/// Accepts one connection on `listener` and receives the pty master the
/// runtime sends on it (what `berth run -t` and the tests do).
pub fn recv_master(listener: &UnixListener) -> Result<(OwnedFd, String), ConsoleError> {
    let (stream, _) = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConsoleError::Accept(e)),
        }
    };
    recv_master_on(stream.as_fd())
}

/// Makes `slave` the calling process's controlling terminal and its stdin,
/// stdout and stderr: `setsid` unless already a session leader, then
/// `ioctl(TIOCSCTTY)`, then `dup2` onto 0, 1 and 2. Call it in the container
/// child right before exec; `slave` may be dropped afterwards.
pub fn make_controlling_terminal(slave: &OwnedFd) -> Result<(), ConsoleError> {
    let ctty = |step| move |source| ConsoleError::Ctty { step, source };
    let me = getpid();
    if getsid(None).map_err(ctty("getsid"))? != me {
        setsid().map_err(ctty("setsid"))?;
    }
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal from another
    // session) and touches no memory of ours.
    let ret = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(ConsoleError::Ctty {
            step: "TIOCSCTTY",
            source: Errno::last(),
        });
    }
    for target in 0..=2 {
        dup_onto(slave.as_fd(), target).map_err(ctty("dup2"))?;
    }
    Ok(())
}

/// `dup2(fd, target)`; the new descriptor is not close-on-exec.
fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> Result<(), Errno> {
    if fd.as_raw_fd() == target {
        // dup2 onto itself keeps CLOEXEC; clear it so exec keeps the fd.
        // SAFETY: F_SETFD with 0 only changes this fd's flags.
        let ret = unsafe { libc::fcntl(target, libc::F_SETFD, 0) };
        return if ret < 0 { Err(Errno::last()) } else { Ok(()) };
    }
    loop {
        // SAFETY: dup2 on a valid fd; `target` is one of the standard fds,
        // which the caller means to replace.
        let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
        if ret >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// A listening socket under the state root that receives the pty master
/// when a terminal is wanted without `--console-socket` (`run`, foreground
/// `exec`); the socket file is removed when it is dropped.
pub(crate) struct TtySocket {
    listener: UnixListener,
    /// Where the socket is bound (to pass as the console socket).
    pub path: PathBuf,
}

impl TtySocket {
    pub(crate) fn bind(root: &Path) -> crate::Result<TtySocket> {
        std::fs::create_dir_all(root).map_err(crate::error::io_err(format!(
            "cannot create the state root {}",
            root.display()
        )))?;
        let name = format!(".tty-{}.sock", std::process::id());
        let listener = crate::container::bind_unix(root, &name)?;
        Ok(TtySocket {
            listener,
            path: root.join(name),
        })
    }

    /// Waits for the master (sent by the process that allocated the pty).
    pub(crate) fn recv(self) -> crate::Result<OwnedFd> {
        let _ = std::fs::remove_file(&self.path);
        Ok(recv_master(&self.listener)?.0)
    }
}

impl Drop for TtySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn pty_master_round_trips_over_a_socketpair() {
        let (master, slave) = new_pty().unwrap();
        let path = pty_slave_path(&master).unwrap();
        assert!(path.starts_with("/dev/pts/"), "{path:?}");
        let (a, b) = UnixStream::pair().unwrap();
        send_master_on(a.as_fd(), &master).unwrap();
        drop(master);
        let (received, name) = recv_master_on(b.as_fd()).unwrap();
        assert_eq!(name, MASTER_NAME);

        let mut slave = File::from(slave);
        slave.write_all(b"hello from the slave\n").unwrap();
        let mut master = File::from(received);
        let mut buf = [0u8; 64];
        let n = master.read(&mut buf).unwrap();
        // the line discipline turns \n into \r\n
        assert_eq!(&buf[..n], b"hello from the slave\r\n");
    }

    #[test]
    fn send_master_over_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (master, slave) = new_pty().unwrap();
        let sender = std::thread::spawn(move || send_master(&sock, &master));
        let (received, name) = recv_master(&listener).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(name, "/dev/ptmx");
        let mut m = File::from(received);
        m.write_all(b"typed\n").unwrap();
        let mut s = File::from(slave);
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed\n");
    }

    #[test]
    fn window_size_is_seen_on_the_slave() {
        let (master, slave) = new_pty().unwrap();
        set_window_size(&master, 40, 100).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the local.
        let ret = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(ret, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (40, 100));
    }

    #[test]
    fn connect_error_names_the_socket() {
        let msg = send_master(
            Path::new("/nonexistent/console.sock"),
            &new_pty().unwrap().0,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("/nonexistent/console.sock"), "{msg}");
    }

    #[test]
    fn controlling_terminal_in_a_child() {
        // Fork a child that takes the slave as its terminal and execs a shell
        // testing `[ -t 0 ]`; its output must arrive on the master.
        let (master, slave) = new_pty().unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "if [ -t 0 ] && [ -t 1 ]; then echo tty-ok; else echo no-tty; fi",
        ]);
        let slave_raw = slave.as_raw_fd();
        // SAFETY: the closure only calls async-signal-safe syscalls.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let s = BorrowedFd::borrow_raw(slave_raw);
                let owned = s.try_clone_to_owned()?;
                make_controlling_terminal(&owned).map_err(io::Error::other)
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(slave);
        let status = child.wait().unwrap();
        assert!(status.success());
        let mut m = File::from(master);
        let mut buf = [0u8; 64];
        let n = m.read(&mut buf).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "tty-ok");
    }
}
