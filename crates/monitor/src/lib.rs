//! The per-container monitor (see README.md): [`main`] is the whole
//! program; `supervise` is its poll loop.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use berth_engine::logs::{LogWriter, Stream, DEFAULT_MAX_SIZE};
use berth_engine::{ContainerRecord, Engine, Status};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// What the monitor is asked to do.
struct Args {
    root: PathBuf,
    id: String,
    ready: Option<File>,
    mode: Mode,
}

/// The three lives of a monitor process (see the crate's README): berth
/// starts it in `Start`; once the container runs it re-executes itself in
/// `Watch`, which touches little memory while the container runs; at the
/// exit it re-executes itself in `Exited` to record it and restart it.
enum Mode {
    Start,
    Watch { pid: i32, lock: File, io: Io },
    Exited { code: i32, lock: File },
}

/// Takes the descriptor number `fd` handed over by the previous program
/// of this process.
fn inherited(fd: Option<i32>, what: &str) -> Result<OwnedFd, String> {
    let fd = fd
        .filter(|fd| *fd > 2)
        .ok_or(format!("{what}: expected a descriptor number above 2"))?;
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{what}: descriptor {fd} is not open"));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to
    // this process for its sole use by berth or by the monitor's previous
    // program; nothing else here owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The flags that hand a descriptor over.
const FD_FLAGS: [&str; 5] = [
    "--ready-fd",
    "--lock-fd",
    "--out-fd",
    "--err-fd",
    "--pty-fd",
];

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let (mut root, mut id) = (None, None);
    let mut fds: std::collections::HashMap<&'static str, i32> = Default::default();
    let (mut watch, mut pid, mut code) = (false, None, None);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<i32, String> {
            args.next()
                .and_then(|v| v.to_str()?.parse().ok())
                .ok_or(format!("{name}: expected a number"))
        };
        match arg.to_str() {
            Some("--root") => root = args.next().map(PathBuf::from),
            Some(flag) if FD_FLAGS.contains(&flag) => {
                let n = number(flag)?;
                let name = FD_FLAGS
                    .iter()
                    .find(|f| **f == flag)
                    .copied()
                    .unwrap_or_default();
                fds.insert(name, n);
            }
            Some("--watch") => watch = true,
            Some("--pid") => pid = Some(number("--pid")?),
            Some("--exit-code") => code = Some(number("--exit-code")?),
            Some(a) if !a.starts_with('-') && id.is_none() => id = Some(a.to_string()),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let root = root.ok_or("--root is required")?;
    let id = id.ok_or("the container id is required")?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("container id {id:?}: expected 32 hex digits"));
    }
    let fd = |name: &str| inherited(fds.get(name).copied(), name);
    let ready = match fds.contains_key("--ready-fd") {
        true => Some(File::from(fd("--ready-fd")?)),
        false => None,
    };
    let mode = match (watch, code) {
        (false, None) => Mode::Start,
        (true, None) => Mode::Watch {
            pid: pid.filter(|p| *p > 0).ok_or("--watch needs --pid")?,
            lock: File::from(fd("--lock-fd")?),
            io: match fds.contains_key("--pty-fd") {
                true => Io::Pty(fd("--pty-fd")?),
                false => Io::Pipes(fd("--out-fd")?, fd("--err-fd")?),
            },
        },
        (false, Some(code)) => Mode::Exited {
            code,
            lock: File::from(fd("--lock-fd")?),
        },
        (true, Some(_)) => return Err("--watch and --exit-code exclude each other".into()),
    };
    Ok(Args {
        root,
        id,
        ready,
        mode,
    })
}

/// The monitor program: returns its exit code (0 once it is detached; the
/// detached process's outcome goes to the record, the ready pipe and
/// stderr, which berth points at `monitor.log`).
pub fn main() -> i32 {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            return 2;
        }
    };
    let Args {
        root,
        id,
        mut ready,
        mode,
    } = args;
    let outcome = match mode {
        Mode::Start => {
            // CVE-2019-5736: the containers are forked from this process.
            if let Err(e) = berth_runtime::reexec_if_needed(berth_runtime::Intent::CreateIsolated) {
                fail(&mut ready, &format!("cannot seal the monitor binary: {e}"));
                return 1;
            }
            // Fork once more: the first process exits now, so the monitor
            // is nobody's child (its starter does not have to reap it).
            // SAFETY: no other thread exists yet; the child only continues
            // with this single-threaded program.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Parent { .. }) => return 0,
                Ok(ForkResult::Child) => {}
                Err(e) => {
                    fail(&mut ready, &format!("fork: {e}"));
                    return 1;
                }
            }
            run(&root, &id, &mut ready, None)
        }
        Mode::Watch { pid, lock, io } => watch(&root, &id, pid, lock, io),
        Mode::Exited { code, lock } => run(&root, &id, &mut ready, Some((code, lock))),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-monitor {id}: {e}");
            fail(&mut ready, &e);
            1
        }
    }
}

/// Tells the waiting starter (if it still waits) why the start failed.
fn fail(ready: &mut Option<File>, msg: &str) {
    if let Some(mut f) = ready.take() {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// Takes the container's monitor lock, or says it has a monitor already.
fn take_lock(path: &std::path::Path) -> Result<File, String> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err("the container already has a monitor (it is running)".into());
    }
    Ok(file)
}

/// Starts the container (after recording the previous run's exit `code`
/// and applying the restart policy, when resumed with one) and re-executes
/// into the watch mode; returns when the container is done for good.
fn run(
    root: &std::path::Path,
    id: &str,
    ready: &mut Option<File>,
    resumed: Option<(i32, File)>,
) -> Result<(), String> {
    let engine = Engine::open(root).map_err(|e| e.to_string())?;
    let layout = engine.layout();
    let (exited, lock) = match resumed {
        Some((code, lock)) => (Some(code), lock),
        None => (None, take_lock(&layout.monitor_lock(id))?),
    };
    berth_runtime::set_child_subreaper().map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let mut rec = engine.container_record(id).map_err(|e| e.to_string())?;
    let spec = engine.container_spec(id).map_err(|e| e.to_string())?;
    rec.owner = berth_engine::this_process();
    let marker = layout.stop_marker(id);
    if let Some(code) = exited {
        if let Ok(c) = berth_runtime::Runtime::new(&rec.state_root).load(id) {
            let _ = c.delete(true);
        }
        rec.status = Status::Exited;
        rec.exit_code = Some(code);
        rec.pid = 0;
        rec.finished = Some(chrono::Utc::now().to_rfc3339());
        engine
            .save_container(&rec, true)
            .map_err(|e| e.to_string())?;
        if marker.exists() || !rec.restart.restarts(code, rec.restart_count) {
            return finish(&engine, &rec, lock);
        }
        // docker's back-off: 100 ms, doubling, at most 6.4 s.
        std::thread::sleep(Duration::from_millis(100 << rec.restart_count.min(6)));
        if marker.exists() {
            return finish(&engine, &rec, lock);
        }
        rec.restart_count += 1;
    }
    let (container, io) = match start(&engine, &mut rec, &spec) {
        Ok(s) => s,
        Err(e) => {
            rec.status = Status::Exited;
            rec.exit_code = if ready.is_some() { Some(127) } else { None };
            rec.pid = 0;
            rec.finished = Some(chrono::Utc::now().to_rfc3339());
            let _ = engine.save_container(&rec, true);
            let _ = engine.release_rootfs(&rec);
            return Err(e);
        }
    };
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"ok");
    }
    let mut args = vec![
        "--watch".to_string(),
        "--pid".into(),
        container.pid().to_string(),
    ];
    let mut keep = vec![lock.as_fd()];
    match &io {
        Io::Pipes(out, err) => {
            args.extend(["--out-fd".into(), out.as_raw_fd().to_string()]);
            args.extend(["--err-fd".into(), err.as_raw_fd().to_string()]);
            keep.extend([out.as_fd(), err.as_fd()]);
        }
        Io::Pty(m) => {
            args.extend(["--pty-fd".into(), m.as_raw_fd().to_string()]);
            keep.push(m.as_fd());
        }
    }
    let e = reexec(root, id, &lock, &keep, &args);
    // Without the watch mode, watch here (more memory, same outcome).
    eprintln!("berth-monitor {id}: {e}; watching without re-executing");
    let mut log =
        LogWriter::open(&layout.container_log(id), DEFAULT_MAX_SIZE).map_err(|e| e.to_string())?;
    let code = supervise(container.pid(), io, &mut log);
    run(root, id, ready, Some((code, lock)))
}

/// Re-executes this process's program (`/proc/self/exe`, so the same
/// binary) with `args`, keeping the lock and the descriptors in `keep`
/// open across the exec; returns only when that fails.
fn reexec(
    root: &std::path::Path,
    id: &str,
    lock: &File,
    keep: &[std::os::fd::BorrowedFd<'_>],
    args: &[String],
) -> String {
    use std::os::unix::process::CommandExt;
    for fd in keep {
        if let Err(e) = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        ) {
            return format!("keeping descriptor {} open: {e}", fd.as_raw_fd());
        }
    }
    let err = std::process::Command::new("/proc/self/exe")
        .arg0("berth-monitor")
        .arg("--root")
        .arg(root)
        .arg("--lock-fd")
        .arg(lock.as_raw_fd().to_string())
        .args(args)
        .arg(id)
        .exec();
    format!("re-executing the monitor: {err}")
}

/// The watch mode: logs the output of the container's process `pid` until
/// it exits, then re-executes into the exited mode with its exit code.
fn watch(root: &std::path::Path, id: &str, pid: i32, lock: File, io: Io) -> Result<(), String> {
    let layout = berth_engine::Layout::new(root);
    let mut log =
        LogWriter::open(&layout.container_log(id), DEFAULT_MAX_SIZE).map_err(|e| e.to_string())?;
    let code = supervise(pid, io, &mut log);
    drop(log);
    let args = ["--exit-code".to_string(), code.to_string()];
    Err(reexec(root, id, &lock, &[lock.as_fd()], &args))
}

/// Removes the container's rootfs mount and bundle, lets go of the lock,
/// and removes a `--rm` container.
fn finish(engine: &Engine, rec: &ContainerRecord, lock: File) -> Result<(), String> {
    engine.release_rootfs(rec).map_err(|e| e.to_string())?;
    drop(lock);
    if rec.auto_remove {
        engine
            .remove_container(rec, false)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where the container's output comes from.
enum Io {
    /// stdout and stderr pipes.
    Pipes(OwnedFd, OwnedFd),
    /// A pty master (`-t`).
    Pty(OwnedFd),
}

/// Mounts the rootfs if needed, creates the container with its output
/// going to new pipes (or a pty) and starts it; records it running.
fn start(
    engine: &Engine,
    rec: &mut ContainerRecord,
    spec: &oci_spec::runtime::Spec,
) -> Result<(berth_runtime::Container, Io), String> {
    let bundle = engine.mount_rootfs(rec).map_err(|e| e.to_string())?;
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let created = if tty {
        berth_engine::create_in_runtime(rec, spec, &bundle)
            .map(|(c, m)| (c, m.map(Io::Pty)))
            .map_err(|e| e.to_string())?
    } else {
        // The init inherits fds 1 and 2 at its fork: point them at new
        // pipes for the create, then back (stdout at /dev/null, stderr at
        // the monitor's log).
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let saved_err =
            nix::unistd::dup(std::io::stderr().as_fd()).map_err(|e| format!("dup stderr: {e}"))?;
        redirect(&out_w, 1)?;
        redirect(&err_w, 2)?;
        let created = berth_engine::create_in_runtime(rec, spec, &bundle);
        let null = File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        redirect(&null, 1)?;
        redirect(&saved_err, 2)?;
        let (c, _) = created.map_err(|e| e.to_string())?;
        (c, Some(Io::Pipes(out_r, err_r)))
    };
    let (container, io) = created;
    let io = io.ok_or("the runtime gave the container no terminal")?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    rec.status = Status::Running;
    rec.pid = container.pid();
    rec.exit_code = None;
    rec.started = Some(chrono::Utc::now().to_rfc3339());
    rec.finished = None;
    engine
        .save_container(rec, false)
        .map_err(|e| e.to_string())?;
    Ok((container, io))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn redirect(fd: &impl AsFd, target: i32) -> Result<(), String> {
    // SAFETY: dup2 onto a standard descriptor; both are valid here and
    // the standard descriptor's previous file is closed by the kernel.
    if unsafe { libc::dup2(fd.as_fd().as_raw_fd(), target) } < 0 {
        return Err(format!("dup2 onto fd {target}: {}", Errno::last()));
    }
    Ok(())
}

/// Logs the output of process `pid` (this process's child) until it
/// exits; reaps it and every other child that ends meanwhile. Returns its
/// exit code, 128+signal when it was killed.
fn supervise(pid: i32, io: Io, log: &mut LogWriter) -> i32 {
    let mut sources = match io {
        Io::Pipes(out, err) => vec![(out, Stream::Stdout), (err, Stream::Stderr)],
        Io::Pty(m) => vec![(m, Stream::Stdout)],
    };
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
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        let ready: Vec<bool> = fds[..sources.len()]
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        sources.retain(|(fd, stream)| {
            let keep = !ready[i] || copy(fd, *stream, &mut buf, log);
            i += 1;
            keep
        });
    };
    // What the container left in its pipes or pty.
    for (fd, stream) in &sources {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while copy(fd, *stream, &mut buf, log) {}
    }
    let _ = log.flush_partial();
    code
}

/// Copies one read of `fd` to the log; false at its end (EOF, EIO: no pty
/// slave left) or when nothing is left to read without waiting.
fn copy(fd: &OwnedFd, stream: Stream, buf: &mut [u8], log: &mut LogWriter) -> bool {
    match nix::unistd::read(fd, buf) {
        Ok(0) => false,
        Ok(n) => {
            if let Err(e) = log.write(stream, &buf[..n]) {
                eprintln!("berth-monitor: {e}");
            }
            true
        }
        Err(Errno::EINTR) => true,
        Err(_) => false,
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
