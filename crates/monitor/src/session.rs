//! One run of the container under the monitor: the poll loop that logs
//! its output, serves attach clients (see `berth_engine::attach`: output
//! to every client, their input to the container's stdin, resizes to its
//! pty) and reaps it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use berth_engine::attach::{self, Decoder, Kind};
use berth_engine::logs::{LogWriter, Stream};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where the container's output comes from.
pub(crate) enum Io {
    /// stdout and stderr pipes.
    Pipes(OwnedFd, OwnedFd),
    /// A pty master (`-t`): output, input and window size.
    Pty(OwnedFd),
}

/// The container's stdin as the monitor holds it.
pub(crate) enum Stdin {
    /// /dev/null (no `-i`), or closed after a client's end of input.
    Closed,
    /// The write end of its stdin pipe (`-i`).
    Pipe(OwnedFd),
    /// Its pty (`-it`): input goes to the master.
    Pty,
}

/// Output a slow client may fall behind by before it is dropped (the
/// container never waits for a client).
const MAX_BEHIND: usize = 4 << 20;

/// How long the last frames may take to reach a client.
const EXIT_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// An attached client.
struct Client {
    sock: UnixStream,
    decoder: Decoder,
    /// Frames not yet sent.
    out: Vec<u8>,
    gone: bool,
}

impl Client {
    fn new(sock: UnixStream) -> Client {
        let _ = sock.set_nonblocking(true);
        Client {
            sock,
            decoder: Decoder::default(),
            out: Vec::new(),
            gone: false,
        }
    }

    /// Sends what it can of the pending frames without waiting.
    fn flush(&mut self) {
        while !self.out.is_empty() && !self.gone {
            match self.sock.write(&self.out) {
                Ok(0) => self.gone = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.gone = true,
            }
        }
    }
}

/// The attach side of a monitor: its listening socket, the clients and the
/// container's stdin.
pub(crate) struct Server {
    listener: UnixListener,
    clients: Vec<Client>,
    stdin: Stdin,
    /// Input read from clients, not yet taken by the container.
    pending: Vec<u8>,
    /// Close the stdin pipe once `pending` is written.
    eof_after_pending: bool,
}

impl Server {
    /// A server on `listener` (non-blocking from here on) with the clients
    /// that attached before the container started.
    pub(crate) fn new(listener: UnixListener, stdin: Stdin, clients: Vec<UnixStream>) -> Server {
        let _ = listener.set_nonblocking(true);
        if let Stdin::Pipe(fd) = &stdin {
            let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        Server {
            listener,
            clients: clients.into_iter().map(Client::new).collect(),
            stdin,
            pending: Vec::new(),
            eof_after_pending: false,
        }
    }

    fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => Kind::Stdout,
            Stream::Stderr => Kind::Stderr,
        };
        for c in &mut self.clients {
            if c.out.len() + data.len() > MAX_BEHIND {
                c.gone = true;
                continue;
            }
            attach::encode(kind, data, &mut c.out);
            c.flush();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => self.clients.push(Client::new(sock)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads what client `i` sent and acts on its frames.
    fn read_client(&mut self, i: usize, pty: Option<&OwnedFd>) {
        let mut buf = [0u8; 16 << 10];
        let c = &mut self.clients[i];
        match c.sock.read(&mut buf) {
            Ok(0) => c.gone = true,
            Ok(n) => c.decoder.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => c.gone = true,
        }
        loop {
            let frame = match self.clients[i].decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("berth-monitor: dropping an attach client: {e}");
                    self.clients[i].gone = true;
                    break;
                }
            };
            match frame {
                (Kind::Stdin, data) => match self.stdin {
                    Stdin::Closed => {}
                    _ if self.eof_after_pending => {}
                    _ => self.pending.extend_from_slice(&data),
                },
                (Kind::StdinEof, _) => match self.stdin {
                    // The terminal's end-of-file character, as a terminal sends.
                    Stdin::Pty => self.pending.push(0x04),
                    Stdin::Pipe(_) => self.eof_after_pending = true,
                    Stdin::Closed => {}
                },
                (Kind::Resize, data) => {
                    if let (Some(m), Some((rows, cols))) = (pty, attach::window_size(&data)) {
                        let ws = libc::winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ only reads the live winsize.
                        unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                    }
                }
                _ => {}
            }
        }
    }

    /// Where pending input goes, while there is some.
    fn stdin_target<'a>(&'a self, pty: Option<&'a OwnedFd>) -> Option<BorrowedFd<'a>> {
        if self.pending.is_empty() {
            return None;
        }
        match &self.stdin {
            Stdin::Pipe(fd) => Some(fd.as_fd()),
            Stdin::Pty => pty.map(|m| m.as_fd()),
            Stdin::Closed => None,
        }
    }

    /// Writes what the container's stdin takes of the pending input;
    /// closes the pipe after it when a client ended its input.
    fn write_stdin(&mut self, pty: Option<&OwnedFd>) {
        let written = match self.stdin_target(pty) {
            Some(fd) => nix::unistd::write(fd, &self.pending),
            None => Ok(0),
        };
        match written {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            // The container closed its stdin: what is left is dropped.
            Err(_) => {
                self.pending.clear();
                self.stdin = Stdin::Closed;
            }
        }
        if self.eof_after_pending && self.pending.is_empty() {
            self.stdin = Stdin::Closed;
            self.eof_after_pending = false;
        }
    }

    /// The listening socket and the clients still attached, their queued
    /// output sent (each may take [`EXIT_SEND_TIMEOUT`]), for the next
    /// program of this process, which tells them the exit code.
    pub(crate) fn hand_over(self) -> (UnixListener, Vec<UnixStream>) {
        let clients = self
            .clients
            .into_iter()
            .filter(|c| !c.gone)
            .filter_map(|mut c| {
                c.sock.set_nonblocking(false).ok()?;
                c.sock.set_write_timeout(Some(EXIT_SEND_TIMEOUT)).ok()?;
                c.sock.write_all(&c.out).ok()?;
                Some(c.sock)
            })
            .collect();
        (self.listener, clients)
    }
}

/// Sends each client the container's exit `code`, its last frame.
pub(crate) fn send_exit(clients: Vec<UnixStream>, code: i32) {
    let mut frame = Vec::new();
    attach::encode(Kind::Exit, &code.to_be_bytes(), &mut frame);
    for mut c in clients {
        let _ = c.set_nonblocking(false);
        let _ = c.set_write_timeout(Some(EXIT_SEND_TIMEOUT));
        let _ = c.write_all(&frame);
    }
}

/// What one read of an output source gave.
enum Read1 {
    Data,
    Empty,
    End,
}

/// Logs (and sends to the attach clients) the output of process `pid`
/// (this process's child) until it exits; reaps it and every other child
/// that ends meanwhile. Returns its exit code, 128+signal when it was
/// killed.
pub(crate) fn supervise(pid: i32, io: Io, log: &mut LogWriter, server: &mut Server) -> i32 {
    let (mut sources, pty) = match io {
        Io::Pipes(out, err) => (vec![(out, Stream::Stdout), (err, Stream::Stderr)], None),
        Io::Pty(m) => {
            let dup = m.try_clone().ok();
            if let Some(d) = &dup {
                // Input must never block the loop (reads follow poll).
                let _ = fcntl(d, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            }
            (vec![(m, Stream::Stdout)], dup)
        }
    };
    if matches!(server.stdin, Stdin::Pty) && pty.is_none() {
        server.stdin = Stdin::Closed;
    }
    let pidfd = berth_runtime::pidfd_open(pid);
    // Without a pidfd (Linux < 5.3) the loop looks for the exit 10 times
    // a second.
    let timeout = match pidfd {
        Some(_) => PollTimeout::NONE,
        None => PollTimeout::from(100u16),
    };
    let mut buf = vec![0u8; 32 << 10];
    let code = loop {
        if let Some(code) = reap(pid) {
            break code;
        }
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let listener_at = fds.len();
        fds.push(PollFd::new(server.listener.as_fd(), PollFlags::POLLIN));
        let clients_at = fds.len();
        for c in &server.clients {
            let mut flags = PollFlags::empty();
            // Input waits in the socket while the container has not taken
            // the previous input.
            if server.pending.is_empty() {
                flags |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.sock.as_fd(), flags));
        }
        let stdin_at = fds.len();
        if let Some(fd) = server.stdin_target(pty.as_ref()) {
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        sources.retain(|(fd, stream)| {
            let keep = !ready[i] || !matches!(copy(fd, *stream, &mut buf, log, server), Read1::End);
            i += 1;
            keep
        });
        if ready[listener_at] {
            server.accept();
        }
        for (c, &r) in ready[clients_at..stdin_at].iter().enumerate() {
            if r {
                server.read_client(c, pty.as_ref());
                server.clients[c].flush();
            }
        }
        server.clients.retain(|c| !c.gone);
        if ready.get(stdin_at).copied().unwrap_or(false)
            || !server.pending.is_empty()
            || server.eof_after_pending
        {
            server.write_stdin(pty.as_ref());
        }
    };
    // What the container left in its pipes or pty.
    for (fd, stream) in &sources {
        let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        while let Read1::Data = copy(fd, *stream, &mut buf, log, server) {}
    }
    let _ = log.flush_partial();
    code
}

/// Copies one read of `fd` to the log and the attach clients.
fn copy(
    fd: &OwnedFd,
    stream: Stream,
    buf: &mut [u8],
    log: &mut LogWriter,
    server: &mut Server,
) -> Read1 {
    match nix::unistd::read(fd, buf) {
        // EOF, or EIO: no pty slave left.
        Ok(0) => Read1::End,
        Ok(n) => {
            if let Err(e) = log.write(stream, &buf[..n]) {
                eprintln!("berth-monitor: {e}");
            }
            server.broadcast(stream, &buf[..n]);
            Read1::Data
        }
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => Read1::Empty,
        Err(_) => Read1::End,
    }
}

/// The exit code of `pid` if it has exited; other children that exited
/// (the container's orphans, handed to this subreaper) are reaped too.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => code = Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => code = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}

/// The descriptors of the attach side, by number, for the next program
/// of this process (which must keep them open): the listener, the
/// clients, the stdin pipe or `--stdin-pty` for a pty.
pub(crate) fn handover_args(
    listener: &UnixListener,
    clients: &[UnixStream],
    stdin: &Stdin,
) -> Vec<String> {
    let mut args = vec!["--listen-fd".to_string(), listener.as_raw_fd().to_string()];
    for c in clients {
        args.extend(["--client-fd".into(), c.as_raw_fd().to_string()]);
    }
    match stdin {
        Stdin::Pipe(fd) => args.extend(["--stdin-fd".into(), fd.as_raw_fd().to_string()]),
        Stdin::Pty => args.push("--stdin-pty".into()),
        Stdin::Closed => {}
    }
    args
}
