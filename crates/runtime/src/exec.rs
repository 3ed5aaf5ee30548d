//! `exec`: a new process in a running container. The parent forks a child
//! into the container's cgroup; it joins the container's namespaces, forks
//! the process (so it enters the pid namespace) and exits; the process
//! takes the credentials, limits, seccomp filter and terminal, then execs.
//! The sync channel is close-on-exec: EOF after the pid means the exec
//! happened.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Process;

use crate::cgroup_join::CgroupJoin;
use crate::channel::{self, Channel};
use crate::console::TtySocket;
use crate::container::Container;
use crate::error::{io_err, sys_err, Error, Result};
use crate::foreground::{wait_exit, Foreground};
use crate::message::Message;
use crate::namespaces;
use crate::process::{self, Prepared};
use crate::state::{write_pid_file, Status};

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Write the process's host pid here (atomically).
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to when process.terminal is set.
    pub console_socket: Option<PathBuf>,
    /// Pass fds 3 .. 3+N of the caller on to the process.
    pub preserve_fds: u32,
    /// The process's stdin, stdout and stderr; None: it inherits the
    /// caller's. Ignored for a terminal, which gets the pty.
    pub stdio: Option<std::sync::Arc<[OwnedFd; 3]>>,
}

impl Container {
    /// Runs `process` inside the running container (joining its namespaces
    /// and cgroup). Returns the new process's host pid once it has exec'd;
    /// to wait for it the caller must be its parent or a subreaper.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        match self.status() {
            Status::Stopped => {
                return Err(Error::BadState("cannot exec in a stopped container".into()))
            }
            Status::Creating => {
                return Err(Error::BadState(
                    "cannot exec in a container that is still being created".into(),
                ))
            }
            // Its process would join the frozen cgroup and never run.
            Status::Paused => {
                return Err(Error::BadState(
                    "cannot exec in a paused container: resume it first".into(),
                ))
            }
            _ => {}
        }
        crate::spec::validate_process(process, Path::new("process.json"), "process")?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && opts.console_socket.is_none() {
            return Err(Error::BadState(
                "cannot allocate tty if runc will detach without setting console socket".into(),
            ));
        }
        let init = self.record.init_pid;
        if self.status() == Status::Created
            && has_sys_ptrace(process)
            && !crate::reexec::exe_is_read_only(&init.to_string())
        {
            return Err(Error::BadState(
                "cannot exec a process with CAP_SYS_PTRACE into this container before `start`: its init still runs the runtime's own (writable) binary, which that capability could reopen through /proc (CVE-2019-5736); start the container first".into(),
            ));
        }
        let joins = namespaces::container_joins(init)?;
        // A container without a mount namespace of its own is only
        // chroot'ed: the new process takes the init's root the same way.
        let chroot = if crate::spec::has_namespace(
            &self.record.config,
            oci_spec::runtime::LinuxNamespaceType::Mount,
        ) {
            None
        } else {
            Some(
                std::fs::File::open(format!("/proc/{init}/root"))
                    .map(OwnedFd::from)
                    .map_err(io_err("cannot open the container's root"))?,
            )
        };
        if !self.alive() {
            return Err(Error::BadState("cannot exec in a stopped container".into()));
        }
        let prepared = process::prepare(
            process,
            self.record.config.linux().as_ref(),
            opts.preserve_fds,
        )?;
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(crate::console::connect_console_socket(p)?),
            _ => None,
        };
        let cg = self.cgroup()?;
        let enters_user_or_cgroup_ns = joins
            .iter()
            .any(|(f, _)| f.intersects(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWCGROUP));
        let join = CgroupJoin::prepare(cg.as_ref(), false, !enters_user_or_cgroup_ns)?;
        let (parent, child) = channel::pair().map_err(sys_err("socketpair"))?;
        let seccomp = self
            .record
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| {
                crate::seccomp::Filter::prepare(
                    s,
                    &crate::seccomp::cache_dir(self.dir.parent().unwrap_or(&self.dir)),
                )
            })
            .transpose()?;
        let stdio = opts.stdio.as_deref();
        // This process's own execCPUAffinity, else the container's.
        let affinity = process.exec_cpu_affinity().clone().or_else(|| {
            self.record
                .config
                .process()
                .as_ref()
                .and_then(|p| p.exec_cpu_affinity().clone())
        });
        let pinned = crate::affinity::Pinned::initial(affinity.as_ref())?;
        let p1 = join.spawn(&parent, &child, |cgroup_v2| {
            if let Some(Err(e)) = stdio.map(crate::sys::dup_stdio) {
                child.fail(&e);
            }
            exec_p1(
                &child,
                cgroup_v2,
                joins,
                chroot.as_ref(),
                &prepared,
                seccomp.as_ref(),
                console.as_ref(),
            )
        })?;
        drop(pinned);
        drop(join);
        drop(child);
        drop(console);
        let setup = (|| -> Result<()> {
            crate::affinity::finish(p1, affinity.as_ref())?;
            if let Some(adj) = process.oom_score_adj() {
                std::fs::write(format!("/proc/{p1}/oom_score_adj"), adj.to_string())
                    .map_err(io_err(format!("cannot set oomScoreAdj {adj}")))?;
            }
            Ok(())
        })();
        if let Err(e) = setup {
            let _ = nix::sys::signal::kill(p1, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(p1, None);
            return Err(e);
        }
        let _ = parent.send(&Message::Go(Vec::new()));
        let mut pid = 0;
        let mut error = None;
        // The process's listener fd, held until P1's pid message came.
        let mut listener_fd = None;
        // Until EOF: the channel is close-on-exec, so EOF after the pid
        // means the process was exec'd.
        loop {
            let msg = match listener_fd {
                Some(fd) if pid > 0 => {
                    listener_fd = None;
                    Some(Message::SeccompListener(fd))
                }
                _ => parent.recv()?,
            };
            match msg {
                Some(Message::Pid(p)) => {
                    pid = p;
                    let _ = waitpid(p1, None);
                }
                Some(Message::SeccompListener(fd)) if pid <= 0 => listener_fd = Some(fd),
                Some(Message::SeccompListener(fd)) => {
                    if let Err(e) = self.pass_seccomp_listener(&parent, pid, fd) {
                        let _ = nix::sys::signal::kill(
                            Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        error.get_or_insert(e.to_string());
                    }
                }
                Some(Message::Error(msg)) => error = Some(msg),
                Some(other) => {
                    error
                        .get_or_insert(format!("unexpected message {other} from the exec process"));
                }
                None => break,
            }
        }
        if let Some(e) = error {
            let _ = waitpid(p1, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            return Err(Error::Init(e));
        }
        if pid <= 0 {
            let _ = waitpid(p1, None);
            return Err(Error::Init(
                "the exec process exited before it could run".into(),
            ));
        }
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }

    /// `exec` in the foreground (`berth-runtime exec` without `-d`): runs
    /// `process` under the foreground supervisor ([`crate::Foreground`]:
    /// signals forwarded, exit code returned, 128+signal when killed). With
    /// a terminal and no `--console-socket`, this process takes the pty
    /// master and proxies it to its own stdio, as `run` does (runc's
    /// behaviour). The caller must be a child subreaper (see
    /// [`crate::set_child_subreaper`]).
    pub fn exec_foreground(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let mut opts = opts.clone();
        let mut process = process.clone();
        let mut tty = None;
        if opts.console_socket.is_none() && process.terminal().unwrap_or(false) {
            let root = self.state_dir().parent().unwrap_or(Path::new("/"));
            let t = TtySocket::bind(root)?;
            opts.console_socket = Some(t.path.clone());
            tty = Some(t);
            // Our terminal's size, applied before the process runs.
            if let Some((rows, cols)) = crate::foreground::terminal_size() {
                let size = oci_spec::runtime::BoxBuilder::default()
                    .height(rows)
                    .width(cols)
                    .build()
                    .map_err(|e| Error::Init(format!("console size {rows}x{cols}: {e}")))?;
                process.set_console_size(Some(size));
            }
        }
        let pid = self.exec(&process, &opts)?;
        let master = tty.map(TtySocket::recv).transpose();
        let supervised = master.and_then(|master| {
            let fg = Foreground::catch_signals()?;
            fg.supervise(pid, master.as_ref().map(|m| m.as_fd()), true, None)
        });
        if supervised.is_err() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = wait_exit(pid);
        }
        supervised
    }
}

fn exec_p1(
    ch: &Channel,
    cgroup_v2: Option<std::os::fd::RawFd>,
    joins: Vec<(CloneFlags, OwnedFd)>,
    chroot: Option<&OwnedFd>,
    p: &Prepared,
    seccomp: Option<&crate::seccomp::Filter>,
    console: Option<&UnixStream>,
) -> ! {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ch.fail(&format!("PR_SET_DUMPABLE: {e}"));
    }
    ch.expect("go", |m| matches!(m, Message::Go(_)).then_some(()));
    namespaces::join_all(ch, joins, "the container's namespace");
    if let Some(root) = chroot {
        if let Err(e) = nix::unistd::fchdir(root).and_then(|_| nix::unistd::chroot(".")) {
            ch.fail(&format!("cannot chroot into the container's root: {e}"));
        }
    }
    match crate::cgroup_join::fork_final(cgroup_v2) {
        Ok(ForkResult::Parent { child }) => {
            let _ = ch.send(&Message::Pid(child.as_raw()));
            crate::sys::exit_now(0)
        }
        Err(e) => ch.fail(&e),
        Ok(ForkResult::Child) => {}
    }
    if let Err(e) = nix::unistd::setsid() {
        ch.fail(&format!("setsid: {e}"));
    }
    let mut slave = None;
    if let Some(sock) = console {
        let pty = crate::console::new_pty().and_then(|(m, s)| {
            if let Some((rows, cols)) = p.console_size {
                crate::console::set_window_size(&m, rows, cols)?;
            }
            crate::console::send_master_on(sock.as_fd(), &m)?;
            Ok(s)
        });
        match pty {
            Ok(s) => slave = Some(s),
            Err(e) => ch.fail(&e.to_string()),
        }
    }
    let (program, seccomp_listener) =
        process::become_process(p, seccomp, slave).unwrap_or_else(|e| ch.fail(&e));
    if let Some(l) = seccomp_listener {
        crate::seccomp::notify::hand_over(ch, l);
    }
    // The sync socket is close-on-exec: the parent sees EOF once exec worked.
    let err = process::exec(p, &program);
    ch.fail(&err)
}

impl Container {
    /// Takes the seccomp listener (fd `fd`) of the exec'd process `pid`,
    /// lets it go on and passes the listener to the container's agent.
    fn pass_seccomp_listener(&self, ch: &Channel, pid: i32, fd: i32) -> Result<()> {
        let listener = crate::seccomp::notify::take(pid, fd)?;
        ch.send(&Message::SeccompListenerTaken)
            .map_err(sys_err("sync channel"))?;
        let seccomp = self
            .record
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .unwrap_or_default();
        let path = seccomp.listener_path().clone().unwrap_or_default();
        let metadata = seccomp.listener_metadata().clone().unwrap_or_default();
        crate::seccomp::notify::send_to_agent(&path, &listener, pid, &metadata, &self.state())
    }
}

/// Whether any capability set of `p` holds CAP_SYS_PTRACE.
fn has_sys_ptrace(p: &Process) -> bool {
    use oci_spec::runtime::Capability;
    p.capabilities().as_ref().is_some_and(|c| {
        [
            c.bounding(),
            c.effective(),
            c.permitted(),
            c.inheritable(),
            c.ambient(),
        ]
        .iter()
        .any(|set| {
            set.as_ref()
                .is_some_and(|s| s.contains(&Capability::SysPtrace))
        })
    })
}
