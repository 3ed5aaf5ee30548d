//! SCMP_ACT_NOTIFY: the listener fd a filter with notify rules gives the
//! container process goes to the seccomp agent at
//! `linux.seccomp.listenerPath`, as runc passes it.
//!
//! The process loading the filter tells its parent the fd's number on the
//! sync channel ([`Message::SeccompListener`]) and waits; the parent takes
//! a copy with pidfd_getfd (the process then needs no sendmsg of its own,
//! which a profile might route to the agent it has not reached yet),
//! answers [`Message::SeccompListenerTaken`], connects to `listenerPath`
//! (a unix stream socket) and sends one message: the fd in SCM_RIGHTS, and
//! as data the container process state of the Runtime Spec:
//!
//! ```json
//! {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 4242,
//!  "metadata": "<listenerMetadata>", "state": {<the container's state>}}
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::channel::Channel;
use crate::error::{io_err, Error, Result};
use crate::message::Message;
use crate::state::State;

/// In the child: hands `listener` over to the parent and closes it once
/// the parent has its copy. Fails the child if the channel does.
pub(crate) fn hand_over(ch: &Channel, listener: OwnedFd) {
    if ch
        .send(&Message::SeccompListener(listener.as_raw_fd()))
        .is_err()
    {
        crate::sys::exit_now(1);
    }
    ch.expect("seccomp listener taken", |m| {
        (m == Message::SeccompListenerTaken).then_some(())
    });
    drop(listener);
}

/// In the parent: a copy of fd `fd` of process `pid`.
pub(crate) fn take(pid: i32, fd: i32) -> Result<OwnedFd> {
    let pidfd = crate::sys::pidfd_open(pid).ok_or_else(|| {
        Error::Init(format!(
            "cannot open process {pid} to take its seccomp listener (pidfd_open)"
        ))
    })?;
    // SAFETY: pidfd_getfd takes a live pidfd and two integers and returns
    // a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if ret < 0 {
        let e = nix::errno::Errno::last();
        return Err(Error::Init(format!(
            "cannot take the seccomp listener (fd {fd} of process {pid}) with pidfd_getfd: {e}"
        )));
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// Sends `listener` of the container process `pid` and the container's
/// `state` to the agent listening at `path`.
pub(crate) fn send_to_agent(
    path: &Path,
    listener: &OwnedFd,
    pid: i32,
    metadata: &str,
    state: &State,
) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let what = || {
        format!(
            "cannot send the seccomp listener to linux.seccomp.listenerPath {} (is the seccomp agent listening there?)",
            path.display()
        )
    };
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(io_err(what()))?;
    let message = serde_json::json!({
        "ociVersion": state.oci_version,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata,
        "state": state,
    });
    let data = serde_json::to_vec(&message).unwrap_or_default();
    let fds = [listener.as_raw_fd()];
    let iov = [std::io::IoSlice::new(&data)];
    let sent = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::Init(format!("{}: {e}", what())))?;
    if sent != data.len() {
        return Err(Error::Init(format!(
            "{}: sent {sent} of {} bytes",
            what(),
            data.len()
        )));
    }
    Ok(())
}
