//! The per-container monitor (see README.md): [`main`] is the whole
//! program; `session` is its poll loop and attach server.

mod session;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use berth_engine::logs::{LogWriter, DEFAULT_MAX_SIZE};
use berth_engine::{ContainerRecord, Engine, Status};
use nix::errno::Errno;
use nix::unistd::ForkResult;

use session::{handover_args, send_exit, supervise, Io, Server, Stdin};

/// What the monitor is asked to do.
struct Args {
    root: PathBuf,
    id: String,
    ready: Option<File>,
    mode: Mode,
}

/// The three lives of a monitor process (see the crate's README): berth
/// starts it in `Start` (with the client of `start -a`, if any); once the
/// container runs it re-executes itself in `Watch`, which touches little
/// memory while the container runs; at the exit it re-executes itself in
/// `Exited` to record it, tell the attached clients and restart it.
enum Mode {
    Start {
        clients: Vec<UnixStream>,
    },
    Watch {
        pid: i32,
        max_size: Option<u64>,
        lock: File,
        io: Io,
        server: Server,
    },
    Exited {
        code: i32,
        lock: File,
        listener: UnixListener,
        clients: Vec<UnixStream>,
    },
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

/// The flags that hand a descriptor over (`--client-fd` may repeat).
const FD_FLAGS: [&str; 8] = [
    "--ready-fd",
    "--lock-fd",
    "--out-fd",
    "--err-fd",
    "--pty-fd",
    "--listen-fd",
    "--stdin-fd",
    "--client-fd",
];

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let (mut root, mut id) = (None, None);
    let mut fds: std::collections::HashMap<&'static str, i32> = Default::default();
    let mut clients = Vec::new();
    let (mut watch, mut stdin_pty, mut pid, mut code) = (false, false, None, None);
    let mut max_size = None;
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
                if name == "--client-fd" {
                    clients.push(UnixStream::from(inherited(Some(n), name)?));
                } else if fds.insert(name, n).is_some() {
                    return Err(format!("{flag} given twice"));
                }
            }
            Some("--watch") => watch = true,
            Some("--stdin-pty") => stdin_pty = true,
            Some("--pid") => pid = Some(number("--pid")?),
            Some("--exit-code") => code = Some(number("--exit-code")?),
            Some("--log-max-size") => {
                let n = args.next().and_then(|v| v.to_str()?.parse().ok());
                max_size = Some(n.ok_or("--log-max-size: expected a number of bytes")?);
            }
            Some(a) if !a.starts_with('-') && id.is_none() => id = Some(a.to_string()),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let root = root.ok_or("--root is required")?;
    let id = id.ok_or("the container id is required")?;
    if !berth_engine::valid_id(&id) {
        return Err(format!("container id {id:?}: expected 32 hex digits"));
    }
    let fd = |name: &str| inherited(fds.get(name).copied(), name);
    let optional = |name: &str| fds.contains_key(name).then(|| fd(name)).transpose();
    let ready = optional("--ready-fd")?.map(File::from);
    let mode = match (watch, code) {
        (false, None) => Mode::Start { clients },
        (true, None) => {
            let io = match fds.contains_key("--pty-fd") {
                true => Io::Pty(fd("--pty-fd")?),
                false => Io::Pipes(fd("--out-fd")?, fd("--err-fd")?),
            };
            let stdin = match (optional("--stdin-fd")?, stdin_pty) {
                (Some(pipe), _) => Stdin::Pipe(pipe),
                (None, true) => Stdin::Pty,
                (None, false) => Stdin::Closed,
            };
            let listener = UnixListener::from(fd("--listen-fd")?);
            Mode::Watch {
                pid: pid.filter(|p| *p > 0).ok_or("--watch needs --pid")?,
                max_size,
                lock: File::from(fd("--lock-fd")?),
                io,
                server: Server::new(listener, stdin, clients),
            }
        }
        (false, Some(code)) => Mode::Exited {
            code,
            lock: File::from(fd("--lock-fd")?),
            listener: UnixListener::from(fd("--listen-fd")?),
            clients,
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
        Mode::Start { clients } => {
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
            run(&root, &id, &mut ready, Resume::Start(clients))
        }
        Mode::Watch {
            pid,
            max_size,
            lock,
            io,
            server,
        } => watch(&root, &id, pid, max_size, lock, io, server),
        Mode::Exited {
            code,
            lock,
            listener,
            clients,
        } => {
            let exited = Exited {
                code,
                lock,
                listener,
                clients,
            };
            run(&root, &id, &mut ready, Resume::Exited(exited))
        }
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

/// Where [`run`] begins: a new monitor (with the client that attached
/// before the start, if any), or the exit of the previous run.
enum Resume {
    Start(Vec<UnixStream>),
    Exited(Exited),
}

/// A run that ended: its exit code, the monitor's lock, the attach socket
/// and the clients attached at the exit.
struct Exited {
    code: i32,
    lock: File,
    listener: UnixListener,
    clients: Vec<UnixStream>,
}

/// Starts the container (after recording the previous run's exit code and
/// applying the restart policy, when resumed after one) and re-executes
/// into the watch mode; returns when the container is done for good.
fn run(
    root: &std::path::Path,
    id: &str,
    ready: &mut Option<File>,
    resume: Resume,
) -> Result<(), String> {
    let engine = Engine::open(root).map_err(|e| e.to_string())?;
    let layout = engine.layout();
    let (exited, lock, listener, mut clients) = match resume {
        Resume::Exited(e) => (Some(e.code), e.lock, e.listener, e.clients),
        Resume::Start(clients) => {
            let lock = take_lock(&layout.monitor_lock(id))?;
            let listener = berth_engine::attach::listen(&layout.attach_socket(id))
                .map_err(|e| e.to_string())?;
            (None, lock, listener, clients)
        }
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
        // A `--rm` container's record goes at once (it never restarts).
        engine
            .save_container(&rec, !rec.auto_remove)
            .map_err(|e| e.to_string())?;
        if marker.exists() || !rec.restart.restarts(code, rec.restart_count) {
            let done = finish(&engine, &rec, lock);
            send_exit(clients, code);
            return done;
        }
        // Attach ends at each exit, as podman's.
        send_exit(std::mem::take(&mut clients), code);
        // docker's back-off: 100 ms, doubling, at most 6.4 s.
        std::thread::sleep(Duration::from_millis(100 << rec.restart_count.min(6)));
        if marker.exists() {
            return finish(&engine, &rec, lock);
        }
        rec.restart_count += 1;
    }
    let (container, io, stdin) = match start(&engine, &mut rec, &spec) {
        Ok(s) => s,
        Err(e) => {
            rec.status = Status::Exited;
            rec.exit_code = if ready.is_some() { Some(127) } else { None };
            rec.pid = 0;
            rec.finished = Some(chrono::Utc::now().to_rfc3339());
            let _ = engine.save_container(&rec, true);
            let _ = engine.release_rootfs(&rec);
            let _ = std::fs::remove_file(layout.attach_socket(id));
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
    if let Some(max) = rec.log_max_size {
        args.extend(["--log-max-size".into(), max.to_string()]);
    }
    args.extend(handover_args(&listener, &clients, &stdin));
    let mut keep = vec![lock.as_fd(), listener.as_fd()];
    if let Stdin::Pipe(fd) = &stdin {
        keep.push(fd.as_fd());
    }
    keep.extend(clients.iter().map(|c| c.as_fd()));
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
    let mut server = Server::new(listener, stdin, clients);
    let log = layout.container_log(id);
    let code = run_once(&log, rec.log_max_size, container.pid(), io, &mut server)?;
    let (listener, clients) = server.hand_over();
    let exited = Exited {
        code,
        lock,
        listener,
        clients,
    };
    run(root, id, ready, Resume::Exited(exited))
}

/// Supervises one run of the container (process `pid`) with its log at
/// `log` and the attach `server`; returns its exit code.
fn run_once(
    log: &std::path::Path,
    max_size: Option<u64>,
    pid: i32,
    io: Io,
    server: &mut Server,
) -> Result<i32, String> {
    let mut log =
        LogWriter::open(log, max_size.unwrap_or(DEFAULT_MAX_SIZE)).map_err(|e| e.to_string())?;
    Ok(supervise(pid, io, &mut log, server))
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

/// The watch mode: logs the output of the container's process `pid` and
/// serves attach clients until it exits, then re-executes into the exited
/// mode with its exit code.
fn watch(
    root: &std::path::Path,
    id: &str,
    pid: i32,
    max_size: Option<u64>,
    lock: File,
    io: Io,
    mut server: Server,
) -> Result<(), String> {
    let layout = berth_engine::Layout::new(root);
    let code = run_once(&layout.container_log(id), max_size, pid, io, &mut server)?;
    let mut args = vec!["--exit-code".to_string(), code.to_string()];
    let (listener, clients) = server.hand_over();
    args.extend(handover_args(&listener, &clients, &Stdin::Closed));
    let mut keep = vec![lock.as_fd(), listener.as_fd()];
    keep.extend(clients.iter().map(|c| c.as_fd()));
    Err(reexec(root, id, &lock, &keep, &args))
}

/// Removes the container's rootfs mount, bundle and attach socket, lets
/// go of the lock, and removes a `--rm` container.
fn finish(engine: &Engine, rec: &ContainerRecord, lock: File) -> Result<(), String> {
    engine.release_rootfs(rec).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(engine.layout().attach_socket(&rec.id));
    drop(lock);
    if rec.auto_remove {
        engine
            .remove_container(rec, false)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Mounts the rootfs if needed, creates the container with its output
/// going to new pipes (or a pty) and its stdin from a new pipe (`-i`) or
/// /dev/null, and starts it; records it running.
fn start(
    engine: &Engine,
    rec: &mut ContainerRecord,
    spec: &oci_spec::runtime::Spec,
) -> Result<(berth_runtime::Container, Io, Stdin), String> {
    let bundle = engine.mount_rootfs(rec).map_err(|e| e.to_string())?;
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let created = if tty {
        let stdin = match rec.stdin_open {
            true => Stdin::Pty,
            false => Stdin::Closed,
        };
        berth_engine::create_in_runtime(rec, spec, &bundle)
            .map(|(c, m)| (c, m.map(Io::Pty), stdin))
            .map_err(|e| e.to_string())?
    } else {
        // The init inherits fds 0-2 at its fork: point them at new pipes
        // for the create, then back (stdin and stdout at /dev/null, stderr
        // at the monitor's log).
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin = match rec.stdin_open {
            true => Some(pipe()?),
            false => None,
        };
        let saved_err =
            nix::unistd::dup(std::io::stderr().as_fd()).map_err(|e| format!("dup stderr: {e}"))?;
        if let Some((r, _)) = &stdin {
            redirect(r, 0)?;
        }
        redirect(&out_w, 1)?;
        redirect(&err_w, 2)?;
        let created = berth_engine::create_in_runtime(rec, spec, &bundle);
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        if stdin.is_some() {
            redirect(&null, 0)?;
        }
        redirect(&null, 1)?;
        redirect(&saved_err, 2)?;
        let (c, _) = created.map_err(|e| e.to_string())?;
        let stdin = match stdin {
            Some((_, w)) => Stdin::Pipe(w),
            None => Stdin::Closed,
        };
        (c, Some(Io::Pipes(out_r, err_r)), stdin)
    };
    let (container, io, stdin) = created;
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
    Ok((container, io, stdin))
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
