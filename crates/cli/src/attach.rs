//! The client side of `berth attach` and `berth start -a`: this
//! terminal connected to a detached container through its monitor's
//! socket ([`berth_engine::attach`]'s protocol). Output is streamed to
//! stdout and stderr; stdin is forwarded when the container keeps its
//! stdin open (`-i`). With a terminal (`-t`) this terminal is put in raw
//! mode, its size follows SIGWINCH, and ctrl-p ctrl-q detaches (podman's
//! default keys) leaving the container running.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use berth_engine::attach::{self, Decoder, Kind};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// podman's default detach keys: ctrl-p, ctrl-q.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// How an attachment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys; the container runs on.
    Detached,
    /// The monitor closed the connection without an exit code (it was
    /// killed, or dropped this client for reading too slowly).
    Lost,
}

/// Recognises the detach keys in terminal input: the bytes to forward,
/// or None once the keys were typed. A first key waits for the next read.
#[derive(Debug, Default)]
struct DetachKeys {
    held: bool,
}

impl DetachKeys {
    fn filter(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.held {
                self.held = false;
                if b == DETACH_KEYS[1] {
                    return None;
                }
                out.push(DETACH_KEYS[0]);
            }
            if b == DETACH_KEYS[0] {
                self.held = true;
            } else {
                out.push(b);
            }
        }
        Some(out)
    }
}

fn send(sock: &mut UnixStream, kind: Kind, data: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(data.len() + attach::HEADER);
    attach::encode(kind, data, &mut frame);
    sock.write_all(&frame)
        .context("writing to the container's monitor")
}

fn send_size(sock: &mut UnixStream) -> Result<()> {
    match berth_runtime::foreground::terminal_size() {
        Some((rows, cols)) => send(sock, Kind::Resize, &attach::resize_payload(rows, cols)),
        None => Ok(()),
    }
}

/// Connects this process's stdio to the container behind `sock` until it
/// exits or the user detaches. `tty`: the container has a terminal;
/// `stdin`: forward this process's stdin (its end ends the container's
/// input: the pipe is closed, a terminal gets ^D).
pub(crate) fn attach(mut sock: UnixStream, tty: bool, stdin: bool) -> Result<Outcome> {
    let terminal = tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let winch = if tty {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        mask.thread_block().context("blocking SIGWINCH")?;
        Some(
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .context("a signalfd for SIGWINCH")?,
        )
    } else {
        None
    };
    let _raw = (terminal && stdin).then(berth_runtime::foreground::RawMode::enter);
    if tty {
        send_size(&mut sock)?;
    }
    let mut keys = DetachKeys::default();
    let mut stdin_open = stdin;
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 32 << 10];
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let console = std::io::stdin();
    loop {
        let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(console.as_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = &winch {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the container's output"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            let n = match sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                return Ok(Outcome::Lost);
            }
            decoder.push(&buf[..n]);
            while let Some((kind, data)) = decoder.next_frame()? {
                match kind {
                    Kind::Stdout => {
                        stdout.write_all(&data)?;
                        stdout.flush()?;
                    }
                    Kind::Stderr => stderr.write_all(&data)?,
                    Kind::Exit => {
                        let code = attach::exit_code(&data)
                            .context("the monitor sent a malformed exit code")?;
                        return Ok(Outcome::Exited(code));
                    }
                    _ => {}
                }
            }
        }
        if stdin_open && ready[1] {
            match nix::unistd::read(&console, &mut buf) {
                Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => {
                    send(&mut sock, Kind::StdinEof, &[])?;
                    stdin_open = false;
                }
                Ok(n) => {
                    let input = match tty {
                        true => keys.filter(&buf[..n]),
                        false => Some(buf[..n].to_vec()),
                    };
                    match input {
                        Some(data) if !data.is_empty() => send(&mut sock, Kind::Stdin, &data)?,
                        Some(_) => {}
                        None => return Ok(Outcome::Detached),
                    }
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e).context("reading stdin"),
            }
        }
        if let Some(w) = &winch {
            if ready.last().copied().unwrap_or(false) {
                while let Ok(Some(_)) = w.read_signal() {}
                send_size(&mut sock)?;
            }
        }
    }
}

/// Waits for the exit code the monitor behind `sock` sends when its
/// container exits (output is skipped); None when it closes without one.
pub(crate) fn exit_code(mut sock: UnixStream) -> Result<Option<i32>> {
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            return Ok(None);
        }
        decoder.push(&buf[..n]);
        while let Some((kind, data)) = decoder.next_frame()? {
            if kind == Kind::Exit {
                return Ok(attach::exit_code(&data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_found_across_reads_and_lone_ctrl_p_passes() {
        let mut k = DetachKeys::default();
        assert_eq!(k.filter(b"ab\x10c"), Some(b"ab\x10c".to_vec()));
        assert_eq!(k.filter(b"x\x10"), Some(b"x".to_vec()), "held");
        assert_eq!(k.filter(b"\x10"), Some(b"\x10".to_vec()), "ctrl-p ctrl-p");
        assert_eq!(k.filter(b"\x11"), None, "ctrl-p (held) then ctrl-q");
    }
}
