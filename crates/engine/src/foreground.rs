//! Running a container in the foreground of this process: the host
//! terminal in raw mode with the pty proxied both ways, signals relayed
//! through a signalfd (SIGINT/SIGTERM followed by SIGKILL after the stop
//! timeout), and the init reaped for its exit code.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The host terminal in raw mode while a `-t` container runs; restored on drop.
pub(crate) struct Terminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl Terminal {
    pub(crate) fn enter(interactive: bool) -> Terminal {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = if interactive {
            termios::tcgetattr(&stdin).ok()
        } else {
            None
        };
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        Terminal { saved }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Copies the host terminal's window size (stdin, else stdout) to the pty.
pub(crate) fn copy_window_size(master: &OwnedFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which we own.
        if unsafe { get_winsize(fd, &mut ws) }.is_ok() {
            // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
            let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
            return;
        }
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies what the pty has for us to stdout; false at EOF/EIO.
fn pump_master(master: &OwnedFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(master, buf) {
        Ok(0) | Err(Errno::EIO) => false,
        Ok(n) => write_all(std::io::stdout().as_fd(), &buf[..n]).is_ok(),
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// The container's exit code if its init has exited (reaped here).
fn reap(pid: i32) -> Result<Option<i32>> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("waiting for the container's init {pid}"),
                    e,
                ))
            }
        }
    }
}

/// The event loop: signals from the signalfd, the pty both ways, until the
/// init exits. SIGINT/SIGTERM are forwarded and, if the container is still
/// running `stop_timeout` later, followed by SIGKILL.
pub(crate) fn supervise(
    pid: i32,
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    interactive: bool,
    stop_timeout: Duration,
) -> Result<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut kill_at: Option<Instant> = None;
    let mut master_open = master.is_some();
    let mut stdin_open = master.is_some() && interactive;
    let mut buf = vec![0u8; 32 * 1024];
    let code = loop {
        if let Some(code) = reap(pid)? {
            break code;
        }
        let timeout = match kill_at {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    kill_at = None;
                    PollTimeout::NONE
                } else {
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
            }
            None => PollTimeout::NONE,
        };
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let master_idx = match (master, master_open) {
            (Some(m), true) => {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_idx = if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents()).is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (sig_ready, master_ready, stdin_ready) =
            (ready(Some(0)), ready(master_idx), ready(stdin_idx));
        drop(fds);
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    continue;
                }
                if signo == libc::SIGWINCH {
                    if let Some(m) = master {
                        copy_window_size(m);
                    }
                    continue;
                }
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM) && kill_at.is_none() {
                        kill_at = Some(Instant::now() + stop_timeout);
                    }
                }
            }
        }
        if master_ready {
            if let Some(m) = master {
                master_open = pump_master(m, &mut buf);
            }
        }
        if stdin_ready {
            if let Some(m) = master {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(0) | Err(_) => {
                        // End of input: the terminal's EOF character, so a
                        // shell reading the pty ends as it would at ^D.
                        let _ = write_all(m.as_fd(), b"\x04");
                        stdin_open = false;
                    }
                    Ok(n) => {
                        if write_all(m.as_fd(), &buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                }
            }
        }
    };
    // Drain what the container wrote to its terminal before it exited.
    if let (Some(m), true) = (master, master_open) {
        nix::fcntl::fcntl(
            m,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .ok();
        loop {
            match nix::unistd::read(m, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_all(std::io::stdout().as_fd(), &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    Ok(code)
}
