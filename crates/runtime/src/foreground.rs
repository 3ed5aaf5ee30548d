//! The foreground supervisor: what a caller does while the container
//! process it started runs in the foreground (`berth-runtime run`,
//! `berth-runtime exec` without `-d`, `berth run`).
//!
//! - **Signals** ([`FORWARDED_SIGNALS`]) are read from a signalfd and
//!   forwarded to the process; after SIGINT or SIGTERM an optional stop
//!   timeout sends SIGKILL if the process is still running then.
//! - **A terminal**: given the pty master, the host terminal is put in raw
//!   mode (when stdin is interactive and a terminal), its window size is
//!   copied to the pty at the start and on every SIGWINCH (the kernel then
//!   signals the container's foreground process group), stdin is copied to
//!   the pty (its end becomes the terminal's EOF character, ^D) and the
//!   pty's output to stdout; what is left in the pty when the process has
//!   exited is drained.
//! - **The exit**: the process is reaped; its exit code is returned,
//!   128+signal when it was killed.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (rt, bundle) = (berth_runtime::Runtime::new("/run/berth"), std::path::Path::new("."));
//! berth_runtime::set_child_subreaper()?;                // the init becomes our child
//! let c = rt.create("web", bundle, &Default::default())?;
//! let fg = berth_runtime::Foreground::catch_signals()?; // after the fork, before start
//! c.start()?;
//! let code = fg.supervise(c.pid(), None, true, None)?;
//! c.delete(true)?;
//! # Ok(()) }
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{sys_err, Result};

/// The terminating and job-control signals a foreground supervisor passes
/// on to its container process (what `runc run` forwards); SIGWINCH
/// resizes the pty instead when there is one.
pub const FORWARDED_SIGNALS: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The terminal's end-of-file character (^D), sent to the pty when stdin
/// ends so that a shell reading the terminal ends as it would at ^D.
const EOF_CHAR: &[u8] = b"\x04";

/// A foreground supervisor that has caught the signals it forwards; see
/// the module documentation.
#[derive(Debug)]
pub struct Foreground {
    signals: SignalFd,
}

impl Foreground {
    /// Blocks [`FORWARDED_SIGNALS`] and SIGCHLD in the calling thread and
    /// reads them from a signalfd from now on: call it after the container
    /// process was forked (`create`, `exec`: it would inherit the blocked
    /// mask) and before `start`, so that no signal between the two is lost.
    /// Other threads of the caller must have them blocked too. They stay
    /// blocked after [`Foreground::supervise`] returns (a late SIGINT then
    /// cannot interrupt the clean-up that follows).
    pub fn catch_signals() -> Result<Foreground> {
        let mut mask = SigSet::empty();
        for s in FORWARDED_SIGNALS {
            mask.add(s);
        }
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(sys_err("cannot block the signals to forward"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(sys_err("cannot create a signalfd"))?;
        Ok(Foreground { signals })
    }

    /// Supervises `pid` until it exits and returns its exit code (128+signal
    /// when it was killed). `pid` must be a child of this process (for a
    /// container init: make this process a subreaper with
    /// [`crate::set_child_subreaper`] before `create`).
    ///
    /// - `pty_master`: the container's terminal, proxied to this process's
    ///   stdio; None when the process has its own stdio.
    /// - `interactive`: with a pty, copy stdin to it and put stdin in raw
    ///   mode while it is a terminal (`-i`; `berth-runtime` always does).
    /// - `stop_timeout`: after forwarding SIGINT or SIGTERM, SIGKILL the
    ///   process if it still runs this much later (None: only forward).
    pub fn supervise(
        &self,
        pid: i32,
        pty_master: Option<BorrowedFd<'_>>,
        interactive: bool,
        stop_timeout: Option<Duration>,
    ) -> Result<i32> {
        let _raw = match pty_master {
            Some(m) => {
                copy_window_size(m);
                interactive.then(RawMode::enter)
            }
            None => None,
        };
        let mut pty = pty_master.map(|master| Pump {
            master,
            master_open: true,
            stdin_open: interactive,
            buf: vec![0u8; 32 * 1024],
        });
        // The process's exit wakes the loop through its pidfd (SIGCHLD can
        // go to another thread of the caller) or, without one, SIGCHLD.
        let pidfd = crate::sys::pidfd_open(pid);
        let mut kill_at: Option<Instant> = None;
        let code = loop {
            if let Some(code) = reap(pid)? {
                break code;
            }
            let timeout = match kill_at {
                Some(t) if t <= Instant::now() => {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    kill_at = None;
                    PollTimeout::NONE
                }
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (sig_ready, master_ready, stdin_ready) =
                self.wait_ready(pidfd.as_ref().map(|fd| fd.as_fd()), pty.as_ref(), timeout)?;
            if sig_ready {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match (sig, &pty) {
                        (Signal::SIGCHLD, _) => {}
                        (Signal::SIGWINCH, Some(p)) => {
                            copy_window_size(p.master);
                        }
                        (sig, _) => {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                            if matches!(sig, Signal::SIGINT | Signal::SIGTERM) && kill_at.is_none()
                            {
                                // A timeout past what an Instant holds never kills.
                                kill_at = stop_timeout.and_then(|t| Instant::now().checked_add(t));
                            }
                        }
                    }
                }
            }
            if let Some(p) = &mut pty {
                if master_ready {
                    p.master_open = p.master_to_stdout();
                }
                if stdin_ready {
                    p.stdin_open = p.stdin_to_master();
                }
            }
        };
        if let Some(p) = &mut pty {
            p.drain();
        }
        Ok(code)
    }

    /// Polls the signalfd, the process's pidfd, the pty master and stdin
    /// (those still open); returns whether the signalfd, the master and
    /// stdin are ready.
    fn wait_ready(
        &self,
        pidfd: Option<BorrowedFd<'_>>,
        pty: Option<&Pump<'_>>,
        timeout: PollTimeout,
    ) -> Result<(bool, bool, bool)> {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = pidfd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let mut master_idx = None;
        let mut stdin_idx = None;
        if let Some(p) = pty {
            if p.master_open {
                fds.push(PollFd::new(p.master, PollFlags::POLLIN));
                master_idx = Some(fds.len() - 1);
            }
            if p.stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
                stdin_idx = Some(fds.len() - 1);
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_err("poll")(e)),
        }
        // A closed or invalid descriptor counts as ready: its read then
        // fails and it is dropped from the set (no busy loop on POLLNVAL).
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents()).is_some_and(|r| {
                r.intersects(
                    PollFlags::POLLIN
                        | PollFlags::POLLHUP
                        | PollFlags::POLLERR
                        | PollFlags::POLLNVAL,
                )
            })
        };
        Ok((ready(Some(0)), ready(master_idx), ready(stdin_idx)))
    }
}

/// The copying between the pty master and this process's stdio.
struct Pump<'a> {
    master: BorrowedFd<'a>,
    master_open: bool,
    stdin_open: bool,
    buf: Vec<u8>,
}

impl Pump<'_> {
    /// Copies what the pty has to stdout; false at its end (EOF, EIO: no
    /// slave left open) or when stdout is gone.
    fn master_to_stdout(&mut self) -> bool {
        match nix::unistd::read(self.master, &mut self.buf) {
            Ok(0) | Err(Errno::EIO) => false,
            Ok(n) => write_all(std::io::stdout().as_fd(), &self.buf[..n]).is_ok(),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
            Err(_) => false,
        }
    }

    /// Copies what stdin has to the pty; at its end sends ^D and returns
    /// false.
    fn stdin_to_master(&mut self) -> bool {
        match nix::unistd::read(std::io::stdin().as_fd(), &mut self.buf) {
            Ok(0) | Err(_) => {
                let _ = write_all(self.master, EOF_CHAR);
                false
            }
            Ok(n) => write_all(self.master, &self.buf[..n]).is_ok(),
        }
    }

    /// After the process exited: copies what it left in the pty to stdout.
    fn drain(&mut self) {
        if !self.master_open {
            return;
        }
        let _ = nix::fcntl::fcntl(
            self.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        loop {
            match nix::unistd::read(self.master, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_all(std::io::stdout().as_fd(), &self.buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// The host terminal (stdin) in raw mode; restored on drop. Nothing
/// happens when stdin is not a terminal.
#[derive(Debug)]
pub struct RawMode {
    saved: Option<termios::Termios>,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal.
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, t);
        }
    }
}

/// The window size of this process's terminal (stdin, else stdout), if
/// either is one with a non-zero size.
fn own_winsize() -> Option<libc::winsize> {
    for fd in [0, 1] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills the live winsize `ws` points to.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(ws);
        }
    }
    None
}

/// (rows, columns) of this process's terminal (stdin, else stdout): the
/// size a pty it proxies should have from the start, before the container
/// process first looks.
pub fn terminal_size() -> Option<(u16, u16)> {
    own_winsize().map(|ws| (ws.ws_row, ws.ws_col))
}

/// Copies the window size of this process's terminal (stdin, else stdout)
/// to the pty `master`; false when neither is a terminal. Call it before
/// `start` too, so the process sees the size from its first look.
pub fn copy_window_size(master: BorrowedFd<'_>) -> bool {
    match own_winsize() {
        // SAFETY: TIOCSWINSZ only reads the live winsize `ws` points to.
        Some(ws) => unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) == 0 },
        None => false,
    }
}

/// The exit code of `pid` if it has exited (reaped here).
fn reap(pid: i32) -> Result<Option<i32>> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(128 + sig as i32)),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys_err(format!("cannot wait for process {pid}"))(e)),
        }
    }
}

/// Waits for a child (or adopted orphan, see [`crate::set_child_subreaper`])
/// and returns its exit code, 128+signal if it was killed.
pub fn wait_exit(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys_err(format!("cannot wait for process {pid}"))(e)),
        }
    }
}

/// Writes all of `data`, waiting while a non-blocking `fd` is full.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child running `script`, reaped by the supervisor (not by std).
    fn spawn(script: &str) -> i32 {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        // Dropping a Child neither waits nor kills: the tests reap it.
        std::mem::forget(child);
        pid
    }

    #[test]
    fn the_exit_code_is_returned_and_a_killed_process_gives_128_plus_the_signal() {
        let fg = Foreground::catch_signals().unwrap();
        assert_eq!(fg.supervise(spawn("exit 7"), None, false, None).unwrap(), 7);
        assert_eq!(
            fg.supervise(spawn("kill -KILL $$"), None, false, None)
                .unwrap(),
            128 + libc::SIGKILL
        );
        assert_eq!(wait_exit(spawn("exit 3")).unwrap(), 3);
    }

    #[test]
    fn sigterm_is_forwarded_then_sigkill_follows_after_the_stop_timeout() {
        use std::os::unix::process::CommandExt;
        let fg = Foreground::catch_signals().unwrap();
        let mut cmd = std::process::Command::new("/bin/sleep");
        cmd.arg("60");
        // SAFETY: between fork and exec the closure only calls signal(2),
        // which is async-signal-safe; an ignored signal stays ignored
        // across exec, so the forwarded SIGTERM has no effect.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sleep");
        let pid = child.id() as i32;
        std::mem::forget(child);
        // SIGTERM to this thread only (the test harness's other threads
        // do not block it): the signalfd reads it like a process signal.
        // SAFETY: tgkill takes three integers.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGTERM,
            )
        };
        assert_eq!(sent, 0);
        let started = Instant::now();
        let code = fg
            .supervise(pid, None, false, Some(Duration::from_millis(100)))
            .unwrap();
        assert_eq!(code, 128 + libc::SIGKILL);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
