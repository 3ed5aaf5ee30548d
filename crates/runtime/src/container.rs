//! The container life cycle: create → start → (kill) → delete, exec, state.
//!
//! Process model (no re-exec of the runtime binary):
//! ```text
//! create ──fork──▶ P1: joins namespaces by path, unshares the user
//!                      namespace (the parent writes the id maps), then all
//!                      other new namespaces, then forks and exits
//!                  └──fork──▶ init: mounts, pivot_root, hostname, sysctls,
//!                             masked/readonly paths, rlimits, user, caps;
//!                             reports "ready", then blocks in accept() on
//!                             <root>/<id>/exec.sock
//! start  ──connect(exec.sock)──▶ init runs startContainer hooks, answers
//!                                "0" and execs the user process (through the
//!                                exec trampoline when the runtime binary is
//!                                writable); start reads until EOF (the
//!                                socket is close-on-exec)
//! ```
//! `create` returns as soon as the init is ready; the init is reparented to
//! the nearest subreaper (containerd's shim, conmon, or `run` itself).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{Hook, LinuxNamespaceType, Process, Spec};

use crate::channel::{self, Channel};
use crate::error::{io_err, sys_err, Error, Result};
use crate::mounts;
use crate::process::{self, Prepared};
use crate::state::{self, Record, State, Status};
use crate::trampoline::Trampoline;

const STATE_FILE: &str = "state.json";
const EXEC_SOCK: &str = "exec.sock";

/// Options of `create` (runc's flags).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Write the init's host pid here (atomically).
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to when process.terminal is set.
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not give the container a new session keyring.
    pub no_new_keyring: bool,
    /// Pass fds 3 .. 3+N of the caller on to the container process.
    pub preserve_fds: u32,
    /// The bundle's config.json when the caller has it already (read from
    /// the bundle otherwise); checked with [`crate::spec::validate`] either way.
    pub spec: Option<Spec>,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Write the process's host pid here (atomically).
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to when process.terminal is set.
    pub console_socket: Option<PathBuf>,
    /// Pass fds 3 .. 3+N of the caller on to the process.
    pub preserve_fds: u32,
}

/// A state root (runc's `--root`): the directory holding one state
/// directory per container.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// One container known to a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Container {
    dir: PathBuf,
    record: Record,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
}

/// Removes a half-created state directory unless disarmed.
struct DirGuard(Option<PathBuf>);
impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Binds a unix socket, going through /proc/self/fd for paths longer than
/// sun_path allows.
fn bind_unix(dir: &Path, name: &str) -> Result<UnixListener> {
    let path = dir.join(name);
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(&path)
            .map_err(io_err(format!("cannot listen on {}", path.display())));
    }
    let d = std::fs::File::open(dir).map_err(io_err(format!("cannot open {}", dir.display())))?;
    UnixListener::bind(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
        .map_err(io_err(format!("cannot listen on {}", path.display())))
}

fn connect_unix(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let path = dir.join(name);
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(&path);
    }
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
        other => CloneFlags::from_bits_retain(other as i32),
    }
}

fn ns_proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Which namespaces a child joins (by fd) and which it creates.
struct NsPlan {
    joins: Vec<(CloneFlags, OwnedFd)>,
    new_flags: CloneFlags,
    new_user: bool,
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(io_err(format!("cannot open namespace {}", path.display())))
}

fn order_joins(joins: &mut [(CloneFlags, OwnedFd)]) {
    // user first (it grants the rights to join the others), mount last.
    joins.sort_by_key(|(f, _)| {
        if f.contains(CloneFlags::CLONE_NEWUSER) {
            0
        } else if f.contains(CloneFlags::CLONE_NEWNS) {
            2
        } else {
            1
        }
    });
}

fn ns_plan(spec: &Spec) -> Result<NsPlan> {
    let mut joins = Vec::new();
    let mut new_flags = CloneFlags::empty();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let flag = ns_flag(ns.typ());
        match ns.path() {
            Some(p) => joins.push((flag, open_ns(p)?)),
            None => new_flags |= flag,
        }
    }
    order_joins(&mut joins);
    let new_user = new_flags.contains(CloneFlags::CLONE_NEWUSER);
    new_flags.remove(CloneFlags::CLONE_NEWUSER);
    Ok(NsPlan {
        joins,
        new_flags,
        new_user,
    })
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(io_err("cannot read the current directory"))?
            .join(path)
    };
    state::write_atomic(&path, pid.to_string().as_bytes())
}

fn hooks_of<'a>(spec: &'a Spec, stage: &str) -> &'a [Hook] {
    let Some(h) = spec.hooks().as_ref() else {
        return &[];
    };
    let v = match stage {
        #[allow(deprecated)]
        "prestart" => h.prestart(),
        "createRuntime" => h.create_runtime(),
        "createContainer" => h.create_container(),
        "startContainer" => h.start_container(),
        "poststart" => h.poststart(),
        "poststop" => h.poststop(),
        _ => return &[],
    };
    v.as_deref().unwrap_or(&[])
}

/// Runs every hook of a stage whose failure is only a warning.
/// The state is only computed when the stage has hooks.
fn run_hooks_warn(spec: &Spec, stage: &str, state_json: impl FnOnce() -> Vec<u8>) {
    let hooks = hooks_of(spec, stage);
    if hooks.is_empty() {
        return;
    }
    let state_json = state_json();
    for hook in hooks {
        if let Err(e) = crate::hooks::run_hooks(stage, std::slice::from_ref(hook), &state_json) {
            tracing::warn!("{e}");
        }
    }
}

/// Waits until `pid` (started at `start_time`) has exited.
fn wait_gone(pid: i32, start_time: u64, timeout: Duration) -> Result<()> {
    let pidfd = crate::sys::pidfd_open(pid);
    if let Some(fd) = &pidfd {
        if state::proc_start_time(pid).is_some_and(|(t, _)| t == start_time) {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let _ = nix::poll::poll(
                &mut fds,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            );
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        match state::proc_start_time(pid) {
            Some((t, zombie)) if t == start_time && !zombie => {}
            _ => return Ok(()),
        }
        if Instant::now() > deadline {
            return Err(Error::Init(format!(
                "process {pid} did not exit within {timeout:?} of SIGKILL"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child (or adopted orphan, see `set_child_subreaper`) and
/// returns its exit code, 128+signal if it was killed.
pub fn wait_exit(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(sys_err(format!("cannot wait for process {pid}"))(e)),
        }
    }
}

/// What a forked child needs, prepared by the parent before the fork.
struct InitPlan<'a> {
    spec: &'a Spec,
    bundle: &'a Path,
    rootfs: &'a Path,
    ns: NsPlan,
    process: Prepared,
    cgroup_binds: Vec<(PathBuf, String)>,
    console: Option<UnixStream>,
    listener: Option<UnixListener>,
    no_pivot: bool,
    no_new_keyring: bool,
    time_offsets: String,
    seccomp: Option<libseccomp::ScmpFilterContext>,
    /// Set when the runtime's binary is writable: the init execs the
    /// process through it (CVE-2019-5736 class).
    trampoline: Option<Trampoline>,
}

impl Runtime {
    /// A runtime whose state lives under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads the container `id`.
    pub fn load(&self, id: &str) -> Result<Container> {
        if !valid_id(id) {
            return Err(Error::NotExist { id: id.to_string() });
        }
        let dir = self.root.join(id);
        if !dir.join(STATE_FILE).exists() {
            return Err(Error::NotExist { id: id.to_string() });
        }
        let record = state::read_record(&dir)?;
        Ok(Container { dir, record })
    }

    /// Every container under the root, sorted by id. Directories without a
    /// state file (a create that crashed) are skipped.
    pub fn list(&self) -> Result<Vec<Container>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot read {}", self.root.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str() {
                if let Ok(c) = self.load(id) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(out)
    }

    /// Creates container `id` from the bundle: the init runs set up and waits
    /// for [`Container::start`]. Nothing is left under the root on failure.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Container> {
        self.create_sized(id, bundle, opts, None)
    }

    /// `create`, with the pty's size (rows, columns) given by the caller
    /// (`run` proxying a terminal: its own terminal's size, applied before
    /// the process runs) instead of `process.consoleSize`.
    fn create_sized(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOptions,
        console_size: Option<(u16, u16)>,
    ) -> Result<Container> {
        if !valid_id(id) {
            return Err(Error::InvalidId { id: id.to_string() });
        }
        let bundle = std::fs::canonicalize(bundle).map_err(io_err(format!(
            "bundle {}: cannot open it (pass the directory holding config.json with --bundle)",
            bundle.display()
        )))?;
        // A spec handed in memory is checked like one read from the bundle.
        let spec = match &opts.spec {
            Some(s) => {
                crate::spec::validate(s, &bundle, &bundle.join("config.json"))?;
                s.clone()
            }
            None => crate::spec::load(&bundle)?,
        };
        let rootfs = std::fs::canonicalize(crate::spec::rootfs_path(&spec, &bundle))
            .map_err(io_err("cannot resolve root.path"))?;
        let Some(process_spec) = spec.process().as_ref() else {
            return Err(Error::Init("config has no process".into()));
        };
        if !crate::spec::has_namespace(&spec, LinuxNamespaceType::Mount) {
            return Err(Error::Config {
                path: bundle.join("config.json"),
                msg: "field `linux.namespaces`: a mount namespace is required".into(),
            });
        }
        let terminal = process_spec.terminal().unwrap_or(false);
        if terminal && opts.console_socket.is_none() {
            return Err(Error::BadState(
                "cannot allocate tty if runc will detach without setting console socket".into(),
            ));
        }
        std::fs::create_dir_all(&self.root).map_err(io_err(format!(
            "cannot create the state root {}",
            self.root.display()
        )))?;
        let dir = self.root.join(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists { id: id.to_string() })
            }
            Err(e) => return Err(io_err(format!("cannot create {}", dir.display()))(e)),
        }
        let mut guard = DirGuard(Some(dir.clone()));
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| Error::Init("config has no linux section".into()))?;
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cg = berth_cgroups::manager(&cgroups_path, id)?;
        let listener = bind_unix(&dir, EXEC_SOCK)?;
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(crate::console::connect_console_socket(p)?),
            _ => None,
        };
        let time_offsets = linux
            .time_offsets()
            .iter()
            .flatten()
            .map(|(clock, o)| {
                format!(
                    "{clock} {} {}\n",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                )
            })
            .collect();
        // The init's /proc/self/exe is this binary: unless that sits on a
        // read-only mount, the process must be exec'd via the trampoline.
        let trampoline = if crate::sys::exe_is_read_only("self") {
            None
        } else if crate::trampoline::protects(&spec) {
            Some(Trampoline::load()?)
        } else {
            return Err(Error::Init(
                "the runtime binary is writable and this container joins a pid namespace or runs hooks inside it: \
                 re-execute from a read-only mount first (berth_runtime::reexec_read_only)"
                    .into(),
            ));
        };
        let mut prepared = process::prepare(process_spec, opts.preserve_fds)?;
        if console_size.is_some() {
            prepared.console_size = console_size;
        }
        let plan = InitPlan {
            spec: &spec,
            bundle: &bundle,
            rootfs: &rootfs,
            ns: ns_plan(&spec)?,
            process: prepared,
            cgroup_binds: Vec::new(),
            console,
            listener: Some(listener),
            no_pivot: opts.no_pivot,
            no_new_keyring: opts.no_new_keyring,
            time_offsets,
            seccomp: linux
                .seccomp()
                .as_ref()
                .map(crate::seccomp::compile)
                .transpose()?,
            trampoline,
        };
        let mut init_pid = 0;
        let res = self.spawn_init(id, plan, cg.as_ref(), &mut init_pid, &dir);
        let record = match res {
            Ok(r) => r,
            Err(e) => {
                if init_pid > 0 {
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(init_pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    if let Some((t, _)) = state::proc_start_time(init_pid) {
                        let _ = wait_gone(init_pid, t, Duration::from_secs(10));
                    }
                }
                let _ = cg.destroy();
                return Err(e);
            }
        };
        let container = Container { dir, record };
        if let Some(p) = &opts.pid_file {
            if let Err(e) = write_pid_file(p, container.record.init_pid) {
                let _ = container.destroy_after_failure(cg.as_ref());
                return Err(e);
            }
        }
        guard.0 = None;
        Ok(container)
    }

    fn spawn_init(
        &self,
        id: &str,
        mut plan: InitPlan<'_>,
        cg: &dyn berth_cgroups::Manager,
        init_pid: &mut i32,
        dir: &Path,
    ) -> Result<Record> {
        let (parent, child) = channel::pair().map_err(sys_err("socketpair"))?;
        let linux = plan
            .spec
            .linux()
            .as_ref()
            .ok_or_else(|| Error::Init("no linux section".into()))?;
        let join = CgroupJoin::prepare(cg, true)?;
        let p1 = join.spawn(&parent, &child, || p1_main(&child, &mut plan))?;
        drop(join);
        drop(child);
        plan.listener = None;
        plan.console = None;
        let reap_p1 = || {
            let _ = waitpid(p1, None);
        };
        let setup = (|| -> Result<()> {
            if let Some(adj) = plan.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
                std::fs::write(format!("/proc/{p1}/oom_score_adj"), adj.to_string())
                    .map_err(io_err(format!("cannot set oomScoreAdj {adj}")))?;
            }
            Ok(())
        })();
        if let Err(e) = setup {
            let _ = nix::sys::signal::kill(p1, nix::sys::signal::Signal::SIGKILL);
            reap_p1();
            return Err(e);
        }
        // Every limit (device rules included) is written while the child is
        // in the cgroup but still blocked waiting for 'G', as runc sets the
        // cgroup before its init runs: in v1 the device rules start with a
        // deny-all, and a child creating /dev nodes meanwhile would get EPERM.
        if let Some(r) = linux.resources() {
            if let Err(e) = cg.set(r) {
                let _ = nix::sys::signal::kill(p1, nix::sys::signal::Signal::SIGKILL);
                reap_p1();
                return Err(e.into());
            }
        }
        // The init needs the binds computed from the cgroup it was put in.
        let binds = mounts::cgroup_binds(&cg.paths());
        let binds_json = serde_json::to_vec(&binds).unwrap_or_default();
        if let Err(e) = parent.send(b'G', &binds_json) {
            // P1 may have failed already (it creates namespaces early).
            if let Ok(Some((b'E', msg))) = parent.recv() {
                reap_p1();
                return Err(Error::Init(String::from_utf8_lossy(&msg).into_owned()));
            }
            return Err(sys_err("cannot release the container's first child")(e));
        }
        let created = Utc::now();
        // The init's 'H' or 'R' can overtake P1's 'P' (its host pid): the
        // hooks and the state need that pid, so an early one waits for it.
        let mut early = None;
        loop {
            let msg = match early.take() {
                Some(m) if *init_pid > 0 => m,
                held => {
                    early = held;
                    match parent.recv() {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            reap_p1();
                            return Err(Error::Init(
                                "container init exited before it was ready (see the runtime log)"
                                    .into(),
                            ));
                        }
                        Err(e) => return Err(sys_err("sync socket")(e)),
                    }
                }
            };
            if matches!(msg.0, b'H' | b'R') && *init_pid <= 0 {
                early = Some(msg);
                continue;
            }
            match msg {
                (b'U', _) => {
                    write_id_maps(p1.as_raw(), plan.spec)?;
                    parent.send(b'u', b"").map_err(sys_err("sync socket"))?;
                }
                (b'P', pid) => {
                    *init_pid = String::from_utf8_lossy(&pid).parse().unwrap_or(0);
                    reap_p1();
                }
                (b'H', _) => {
                    let st = State {
                        oci_version: plan.spec.version().clone(),
                        id: id.to_string(),
                        pid: *init_pid,
                        status: Status::Created,
                        bundle: plan.bundle.to_path_buf(),
                        rootfs: plan.rootfs.to_path_buf(),
                        created: state::rfc3339_nano(&created),
                        annotations: annotations(plan.spec),
                        owner: String::new(),
                    };
                    let mut json = serde_json::to_value(&st).unwrap_or_default();
                    json["status"] = "creating".into();
                    let json = serde_json::to_vec(&json).unwrap_or_default();
                    crate::hooks::run_hooks("prestart", hooks_of(plan.spec, "prestart"), &json)?;
                    crate::hooks::run_hooks(
                        "createRuntime",
                        hooks_of(plan.spec, "createRuntime"),
                        &json,
                    )?;
                    parent.send(b'h', &json).map_err(sys_err("sync socket"))?;
                }
                (b'R', _) => break,
                (b'E', msg) => {
                    reap_p1();
                    return Err(Error::Init(String::from_utf8_lossy(&msg).into_owned()));
                }
                (t, _) => {
                    return Err(Error::Init(format!(
                        "unexpected message {t:?} from the container init"
                    )))
                }
            }
        }
        let (start_time, _) = state::proc_start_time(*init_pid)
            .ok_or_else(|| Error::Init("container init exited right after it was ready".into()))?;
        let record = Record {
            id: id.to_string(),
            init_pid: *init_pid,
            init_start_time: start_time,
            bundle: plan.bundle.to_path_buf(),
            rootfs: plan.rootfs.to_path_buf(),
            created,
            cgroups_path: linux
                .cgroups_path()
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cgroup_paths: cg.paths(),
            config: plan.spec.clone(),
        };
        let data = serde_json::to_vec(&record)
            .map_err(|e| Error::Init(format!("cannot encode the state: {e}")))?;
        state::write_atomic(&dir.join(STATE_FILE), &data)?;
        Ok(record)
    }

    /// `run`: create, start, wait for the init and delete the container;
    /// returns the exit code (128+signal when killed). The calling process
    /// becomes a child subreaper so the init is its child.
    pub fn run(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<i32> {
        nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
        let mut opts = opts.clone();
        // A terminal without --console-socket: like runc, take the pty
        // master ourselves and copy between it and our stdio.
        let mut tty = None;
        let mut size = None;
        if opts.console_socket.is_none() && wants_terminal(bundle) {
            let t = TtySocket::bind(&self.root)?;
            opts.console_socket = Some(t.path.clone());
            tty = Some(t);
            // The pty gets our size before the process runs (a resize after
            // `start` would race with its first look at the size).
            size = crate::sys::terminal_size();
        }
        let c = self.create_sized(id, bundle, &opts, size)?;
        let master = match tty.map(TtySocket::recv).transpose() {
            Ok(m) => m,
            Err(e) => {
                let _ = c.delete(true);
                return Err(e);
            }
        };
        crate::sys::forward_signals(c.pid()).map_err(sys_err("cannot forward signals"))?;
        if let Err(e) = c.start() {
            let _ = c.delete(true);
            return Err(e);
        }
        if let Some(m) = &master {
            crate::sys::proxy_tty(m);
        }
        let code = wait_exit(c.pid())?;
        c.delete(true)?;
        Ok(code)
    }
}

/// `spec` with `linux.resources` updated by `update`: every field set in
/// `update` replaces the saved one (objects merged field by field, lists
/// replaced whole), fields it leaves unset keep their saved value.
fn merge_resources(spec: &Spec, update: &oci_spec::runtime::LinuxResources) -> Result<Spec> {
    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (_, serde_json::Value::Null) => {}
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let encode = |e: serde_json::Error| Error::Init(format!("cannot record the update: {e}"));
    let mut config = serde_json::to_value(spec).map_err(encode)?;
    merge(
        &mut config["linux"]["resources"],
        serde_json::to_value(update).map_err(encode)?,
    );
    serde_json::from_value(config).map_err(encode)
}

/// A listening socket under the state root that receives the pty master
/// when a terminal is wanted without `--console-socket` (`run`, foreground
/// `exec`); the socket file is removed when it is dropped.
struct TtySocket {
    listener: UnixListener,
    path: PathBuf,
}

impl TtySocket {
    fn bind(root: &Path) -> Result<TtySocket> {
        std::fs::create_dir_all(root).map_err(io_err(format!(
            "cannot create the state root {}",
            root.display()
        )))?;
        let name = format!(".tty-{}.sock", std::process::id());
        let listener = bind_unix(root, &name)?;
        Ok(TtySocket {
            listener,
            path: root.join(name),
        })
    }

    /// Waits for the master (sent by the process that allocated the pty).
    fn recv(self) -> Result<OwnedFd> {
        let _ = std::fs::remove_file(&self.path);
        Ok(crate::console::recv_master(&self.listener)?.0)
    }
}

impl Drop for TtySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the bundle's process asks for a terminal (false if unreadable:
/// create then reports the real problem).
fn wants_terminal(bundle: &Path) -> bool {
    crate::spec::load(bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

fn annotations(spec: &Spec) -> BTreeMap<String, String> {
    spec.annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    for (file, maps) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let text: String = maps
            .iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        if text.is_empty() {
            continue;
        }
        std::fs::write(format!("/proc/{pid}/{file}"), text.as_bytes()).map_err(io_err(format!(
            "cannot write {file} {:?} (check linux.{}Mappings)",
            text.trim(),
            &file[..3]
        )))?;
    }
    Ok(())
}

/// P1: joins and creates the namespaces, forks the init, exits.
fn p1_main(ch: &Channel, plan: &mut InitPlan<'_>) -> ! {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ch.fail(&format!("PR_SET_DUMPABLE: {e}"));
    }
    // New namespaces that need nothing from the parent are made while it
    // writes the cgroup limits (their kernel set-up, a network namespace
    // above all, then overlaps that work); joins and user namespaces wait.
    let early = plan.ns.joins.is_empty() && !plan.ns.new_user;
    if early {
        unshare_new(ch, plan.ns.new_flags);
    }
    match ch.recv() {
        Ok(Some((b'G', binds))) => {
            plan.cgroup_binds = serde_json::from_slice(&binds).unwrap_or_default();
        }
        _ => crate::sys::exit_now(1),
    }
    for (flag, fd) in std::mem::take(&mut plan.ns.joins) {
        if let Err(e) = nix::sched::setns(&fd, flag) {
            ch.fail(&format!("cannot join namespace {flag:?}: {e}"));
        }
        if flag.contains(CloneFlags::CLONE_NEWUSER) {
            become_ns_root(ch);
        }
    }
    if plan.ns.new_user {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
            ch.fail(&format!("cannot create a user namespace: {e}"));
        }
        if ch.send(b'U', b"").is_err() || !matches!(ch.recv(), Ok(Some((b'u', _)))) {
            crate::sys::exit_now(1);
        }
        become_ns_root(ch);
    }
    if !early {
        unshare_new(ch, plan.ns.new_flags);
    }
    if !plan.time_offsets.is_empty() {
        if let Err(e) = std::fs::write("/proc/self/timens_offsets", plan.time_offsets.as_bytes()) {
            ch.fail(&format!("cannot write linux.timeOffsets: {e}"));
        }
    }
    match crate::sys::fork() {
        Ok(ForkResult::Child) => init_main(ch, plan),
        Ok(ForkResult::Parent { child }) => {
            let _ = ch.send(b'P', child.as_raw().to_string().as_bytes());
            crate::sys::exit_now(0)
        }
        Err(e) => ch.fail(&format!("cannot fork the container init: {e}")),
    }
}

/// Creates the container's new namespaces (other than user) in P1.
fn unshare_new(ch: &Channel, flags: CloneFlags) {
    if let Err(e) = nix::sched::unshare(flags) {
        ch.fail(&format!("cannot create namespaces {flags:?}: {e}"));
    }
}

/// The container's init: builds the container around itself, waits for
/// `start`, execs the user process.
fn init_main(ch: &Channel, plan: &mut InitPlan<'_>) -> ! {
    let spec = plan.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Err(e) = nix::unistd::setsid() {
        ch.fail(&format!("setsid: {e}"));
    }
    let userns = crate::spec::has_namespace(spec, LinuxNamespaceType::User);
    let mounts_list = spec.mounts().clone().unwrap_or_default();
    let devices = linux.devices().clone().unwrap_or_default();
    let rplan = mounts::RootfsPlan {
        rootfs: plan.rootfs,
        bundle: plan.bundle,
        mounts: &mounts_list,
        devices: &devices,
        userns,
        cgroup_binds: &plan.cgroup_binds,
    };
    if let Err(e) = mounts::prepare_rootfs(&rplan) {
        ch.fail(&e);
    }
    // The parent runs the prestart and createRuntime hooks now and sends the
    // state the hooks get; without any such hook there is nothing to wait
    // for (one round trip less).
    let hooked = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
    ]
    .iter()
    .any(|stage| !hooks_of(spec, stage).is_empty());
    let mut state_json = Vec::new();
    if hooked {
        if ch.send(b'H', b"").is_err() {
            crate::sys::exit_now(1);
        }
        state_json = match ch.recv() {
            Ok(Some((b'h', json))) => json,
            _ => crate::sys::exit_now(1),
        };
    }
    if let Err(e) = crate::hooks::run_hooks(
        "createContainer",
        hooks_of(spec, "createContainer"),
        &state_json,
    ) {
        ch.fail(&e.to_string());
    }
    if let Err(e) = mounts::enter_rootfs(plan.rootfs, plan.no_pivot) {
        ch.fail(&e);
    }
    let mut slave = None;
    if let Some(sock) = &plan.console {
        match console_setup(sock, plan.process.console_size) {
            Ok(s) => slave = Some(s),
            Err(e) => ch.fail(&e),
        }
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if let Err(e) = nix::unistd::sethostname(h) {
            ch.fail(&format!("sethostname {h:?}: {e}"));
        }
    }
    if let Some(d) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        if let Err(e) = crate::sys::setdomainname(d) {
            ch.fail(&format!("setdomainname {d:?}: {e}"));
        }
    }
    let mut sysctls: Vec<_> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctls.sort();
    for (k, v) in &sysctls {
        if let Err(e) = mounts::write_sysctl(k, v) {
            ch.fail(&e);
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        if let Err(e) = mounts::readonly_path(p) {
            ch.fail(&e);
        }
    }
    for p in linux.masked_paths().iter().flatten() {
        if let Err(e) = mounts::mask_path(p) {
            ch.fail(&e);
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        if let Err(e) = mounts::remount_ro("/") {
            ch.fail(&e);
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if let Err(e) = mounts::set_root_propagation(p) {
            ch.fail(&e);
        }
    }
    if !plan.no_new_keyring {
        crate::sys::join_session_keyring();
    }
    let program = become_process(ch, &plan.process, plan.seccomp.as_ref(), slave);
    let listener = match plan.listener.take() {
        Some(l) => l,
        None => ch.fail("internal: no start socket"),
    };
    if ch.send(b'R', b"").is_err() {
        crate::sys::exit_now(1);
    }
    // Until `start` the init is this runtime: make the usual terminating
    // signals end it (a namespace init ignores signals it has no handler
    // for), as they end runc's init.
    crate::sys::exit_on_terminating_signals();
    // Wait for `start`.
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => crate::sys::exit_now(1),
        }
    };
    drop(listener);
    use std::io::Write;
    let start_hooks = hooks_of(spec, "startContainer");
    if !start_hooks.is_empty() {
        let mut running =
            serde_json::from_slice::<serde_json::Value>(&state_json).unwrap_or_default();
        running["status"] = "created".into();
        let running = serde_json::to_vec(&running).unwrap_or_default();
        if let Err(e) = crate::hooks::run_hooks("startContainer", start_hooks, &running) {
            let _ = conn.write_all(format!("E{e}").as_bytes());
            crate::sys::exit_now(1);
        }
    }
    let _ = conn.write_all(b"0");
    let err = match &plan.trampoline {
        Some(t) => process::exec_via_trampoline(&plan.process, &program, t, conn.as_fd()),
        None => process::exec(&plan.process, &program),
    };
    let _ = conn.write_all(format!("E{err}").as_bytes());
    crate::sys::exit_now(127)
}

/// Allocates the container's pty (after pivot_root, so it belongs to the
/// container's devpts), binds the slave on /dev/console and sends the master
/// over the console socket.
fn console_setup(
    sock: &UnixStream,
    size: Option<(u16, u16)>,
) -> std::result::Result<OwnedFd, String> {
    let (master, slave) = crate::console::new_pty().map_err(|e| e.to_string())?;
    if let Some((rows, cols)) = size {
        crate::console::set_window_size(&master, rows, cols).map_err(|e| e.to_string())?;
    }
    let slave_path = crate::console::pty_slave_path(&master).map_err(|e| e.to_string())?;
    if !Path::new("/dev/console").exists() {
        let _ = std::fs::File::create("/dev/console");
    }
    nix::mount::mount(
        Some(&slave_path),
        "/dev/console",
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("cannot bind {} on /dev/console: {e}", slave_path.display()))?;
    crate::console::send_master_on(sock.as_fd(), &master).map_err(|e| e.to_string())?;
    Ok(slave)
}

impl Container {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The init's host pid (also after it exited).
    pub fn pid(&self) -> i32 {
        self.record.init_pid
    }

    /// The saved record (config, bundle, cgroups path, ...).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The state directory under the root.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    fn alive(&self) -> bool {
        matches!(state::proc_start_time(self.record.init_pid),
            Some((t, zombie)) if t == self.record.init_start_time && !zombie)
    }

    /// The container's cgroup: the directories `create` recorded (so a
    /// relative cgroupsPath is not re-resolved against this caller's own
    /// cgroup), or for an older state the cgroupsPath resolved again.
    fn cgroup(&self) -> Result<Box<dyn berth_cgroups::Manager>> {
        if !self.record.cgroup_paths.is_empty() {
            return Ok(berth_cgroups::manager_from_paths(
                &self.record.cgroup_paths,
            )?);
        }
        Ok(berth_cgroups::manager(
            &self.record.cgroups_path,
            &self.record.id,
        )?)
    }

    /// The current status, derived from the init process, the start socket
    /// and the freezer.
    pub fn status(&self) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if self.dir.join(EXEC_SOCK).exists() {
            return Status::Created;
        }
        if self
            .cgroup()
            .and_then(|c| Ok(c.is_frozen()?))
            .unwrap_or(false)
        {
            return Status::Paused;
        }
        Status::Running
    }

    /// The state as `state` prints it (runc's shape; owner empty).
    pub fn state(&self) -> State {
        let status = self.status();
        State {
            oci_version: self.record.config.version().clone(),
            id: self.record.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.record.init_pid
            },
            status,
            bundle: self.record.bundle.clone(),
            rootfs: self.record.rootfs.clone(),
            created: state::rfc3339_nano(&self.record.created),
            annotations: annotations(&self.record.config),
            owner: String::new(),
        }
    }

    /// The owner's user name (of the state directory), for `list`.
    pub fn owner(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir)
            .map(|m| state::user_name(m.uid()))
            .unwrap_or_default()
    }

    /// The state handed to hooks: `status` as the stage implies, and the
    /// init's pid even if it has already exited.
    fn state_json(&self, status: &str) -> Vec<u8> {
        let mut v = serde_json::to_value(self.state()).unwrap_or_default();
        v["status"] = status.into();
        v["pid"] = self.record.init_pid.into();
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Releases the init so it execs the user process, then runs the
    /// poststart hooks (failures are warnings).
    pub fn start(&self) -> Result<()> {
        match self.status() {
            Status::Created => {}
            Status::Stopped => {
                return Err(Error::BadState(
                    "cannot start a container that has stopped".into(),
                ))
            }
            _ => {
                return Err(Error::BadState(
                    "cannot start an already running container".into(),
                ))
            }
        }
        let mut conn = connect_unix(&self.dir, EXEC_SOCK).map_err(|e| {
            Error::Init(format!(
                "cannot reach the container init (it may have died): {e}"
            ))
        })?;
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        let _ = std::fs::remove_file(self.dir.join(EXEC_SOCK));
        match reply.first() {
            Some(b'0') if reply.len() == 1 => {}
            Some(b'0') if reply.get(1) == Some(&b'X') => {
                let process = self.record.config.process().clone().unwrap_or_default();
                return Err(Error::Init(
                    crate::trampoline::failure(&reply[1..], &process)
                        .unwrap_or_else(|| String::from_utf8_lossy(&reply[1..]).into_owned()),
                ));
            }
            Some(b'0') => {
                return Err(Error::Init(
                    String::from_utf8_lossy(&reply[2..]).into_owned(),
                ))
            }
            Some(b'E') => {
                return Err(Error::Init(
                    String::from_utf8_lossy(&reply[1..]).into_owned(),
                ))
            }
            _ => {
                return Err(Error::Init(
                    "the container init exited before it could start the process".into(),
                ))
            }
        }
        run_hooks_warn(&self.record.config, "poststart", || {
            self.state_json("running")
        });
        Ok(())
    }

    /// Sends `signal` to the init, or with `all` to every process of the
    /// container's cgroup.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        if self.status() == Status::Stopped {
            return Err(Error::NotRunning {
                id: self.record.id.clone(),
            });
        }
        if all {
            return Ok(self.cgroup()?.kill_all(signal)?);
        }
        self.signal_init(signal)
    }

    fn signal_init(&self, signal: i32) -> Result<()> {
        let pid = self.record.init_pid;
        let ctx = || format!("cannot send signal {signal} to the container init (pid {pid})");
        if let Some(fd) = crate::sys::pidfd_open(pid) {
            if !self.alive() {
                return Err(Error::NotRunning {
                    id: self.record.id.clone(),
                });
            }
            return crate::sys::pidfd_send_signal(&fd, signal).map_err(sys_err(ctx()));
        }
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(sys_err(ctx()))?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(sys_err(ctx()))
    }

    /// Freezes every process of the container.
    pub fn pause(&self) -> Result<()> {
        match self.status() {
            Status::Running => Ok(self.cgroup()?.freeze()?),
            Status::Stopped => Err(Error::NotRunning {
                id: self.record.id.clone(),
            }),
            s => Err(Error::BadState(format!(
                "cannot pause a container that is {s}"
            ))),
        }
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        match self.status() {
            Status::Paused => Ok(self.cgroup()?.thaw()?),
            _ => Err(Error::BadState("container not paused".into())),
        }
    }

    /// Writes new resource limits to the container's cgroup (`update`) and,
    /// as runc does, records them in the saved config (state.json): the
    /// fields given replace the saved ones, the others are kept.
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        if self.status() == Status::Stopped {
            return Err(Error::NotRunning {
                id: self.record.id.clone(),
            });
        }
        self.cgroup()?.set(resources)?;
        let mut record = self.record.clone();
        record.config = merge_resources(&record.config, resources)?;
        let data = serde_json::to_vec(&record)
            .map_err(|e| Error::Init(format!("cannot encode the state: {e}")))?;
        state::write_atomic(&self.dir.join(STATE_FILE), &data)
    }

    /// Usage counters of the container's cgroup (`events --stats`).
    pub fn stats(&self) -> Result<berth_cgroups::Stats> {
        if self.status() == Status::Stopped {
            return Err(Error::NotRunning {
                id: self.record.id.clone(),
            });
        }
        Ok(self.cgroup()?.stats()?)
    }

    /// Host pids of every process in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup()?.pids()?)
    }

    /// Deletes the container: a created one is killed; a running or paused
    /// one only with `force`. Removes the cgroup, runs poststop hooks
    /// (failures are warnings) and removes the state directory.
    pub fn delete(&self, force: bool) -> Result<()> {
        let status = self.status();
        match status {
            Status::Stopped => {}
            Status::Created => self.kill_and_wait()?,
            Status::Running | Status::Paused if force => self.kill_and_wait()?,
            s => {
                return Err(Error::BadState(format!(
                    "cannot delete container {} that is not stopped: {s}",
                    self.record.id
                )))
            }
        }
        let cg = self.cgroup()?;
        cg.destroy()?;
        run_hooks_warn(&self.record.config, "poststop", || {
            self.state_json("stopped")
        });
        std::fs::remove_dir_all(&self.dir)
            .map_err(io_err(format!("cannot remove {}", self.dir.display())))
    }

    fn kill_and_wait(&self) -> Result<()> {
        let cg = self.cgroup()?;
        if self.status() == Status::Paused {
            let _ = cg.thaw();
        }
        let _ = self.signal_init(libc::SIGKILL);
        if !crate::spec::has_namespace(&self.record.config, LinuxNamespaceType::Pid) {
            let _ = cg.kill_all(libc::SIGKILL);
        }
        wait_gone(
            self.record.init_pid,
            self.record.init_start_time,
            Duration::from_secs(10),
        )
    }

    fn destroy_after_failure(&self, cg: &dyn berth_cgroups::Manager) -> Result<()> {
        let _ = self.kill_and_wait();
        let _ = cg.destroy();
        std::fs::remove_dir_all(&self.dir).map_err(io_err("cannot remove the state directory"))
    }

    /// Runs `process` inside the running container (joining its namespaces
    /// and cgroup). Returns the new process's host pid once it has exec'd;
    /// to wait for it the caller must be its parent or a subreaper.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        if self.status() == Status::Stopped {
            return Err(Error::BadState("cannot exec in a stopped container".into()));
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
            && !crate::sys::exe_is_read_only(&init.to_string())
        {
            return Err(Error::BadState(
                "cannot exec a process with CAP_SYS_PTRACE into this container before `start`: its init still runs the runtime's own (writable) binary, which that capability could reopen through /proc (CVE-2019-5736); start the container first".into(),
            ));
        }
        let mut joins = Vec::new();
        for t in [
            LinuxNamespaceType::User,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Time,
            LinuxNamespaceType::Mount,
        ] {
            let name = ns_proc_name(t);
            let theirs = format!("/proc/{init}/ns/{name}");
            let same = match (
                std::fs::metadata(&theirs),
                std::fs::metadata(format!("/proc/self/ns/{name}")),
            ) {
                (Ok(a), Ok(b)) => {
                    use std::os::unix::fs::MetadataExt;
                    a.ino() == b.ino() && a.dev() == b.dev()
                }
                (Err(_), _) => continue,
                _ => false,
            };
            if !same {
                joins.push((ns_flag(t), open_ns(Path::new(&theirs))?));
            }
        }
        if !self.alive() {
            return Err(Error::BadState("cannot exec in a stopped container".into()));
        }
        let prepared = process::prepare(process, opts.preserve_fds)?;
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(crate::console::connect_console_socket(p)?),
            _ => None,
        };
        let cg = self.cgroup()?;
        let join = CgroupJoin::prepare(cg.as_ref(), false)?;
        let (parent, child) = channel::pair().map_err(sys_err("socketpair"))?;
        let seccomp = self
            .record
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(crate::seccomp::compile)
            .transpose()?;
        let p1 = join.spawn(&parent, &child, || {
            exec_p1(&child, joins, &prepared, seccomp.as_ref(), console.as_ref())
        })?;
        drop(join);
        drop(child);
        drop(console);
        let setup = (|| -> Result<()> {
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
        let _ = parent.send(b'G', b"");
        let mut pid = 0;
        let mut error = None;
        loop {
            match parent.recv() {
                Ok(Some((b'P', p))) => {
                    pid = String::from_utf8_lossy(&p).parse().unwrap_or(0);
                    let _ = waitpid(p1, None);
                }
                Ok(Some((b'E', msg))) => error = Some(String::from_utf8_lossy(&msg).into_owned()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(sys_err("sync socket")(e)),
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
}

impl Container {
    /// `exec` in the foreground (`berth-runtime exec` without `-d`): runs
    /// `process`, forwards this process's signals to it and returns its
    /// exit code (128+signal when killed). With a terminal and no
    /// `--console-socket`, this process takes the pty master and proxies it
    /// to its own stdio, as `run` does (runc's behaviour). The caller must
    /// be a child subreaper (see [`crate::set_child_subreaper`]).
    pub fn exec_foreground(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let mut opts = opts.clone();
        let mut process = process.clone();
        let mut tty = None;
        if opts.console_socket.is_none() && process.terminal().unwrap_or(false) {
            let root = self.dir.parent().unwrap_or(Path::new("/"));
            let t = TtySocket::bind(root)?;
            opts.console_socket = Some(t.path.clone());
            tty = Some(t);
            // Our terminal's size, applied before the process runs.
            if let Some((rows, cols)) = crate::sys::terminal_size() {
                let size = oci_spec::runtime::BoxBuilder::default()
                    .height(rows)
                    .width(cols)
                    .build()
                    .map_err(|e| Error::Init(format!("console size {rows}x{cols}: {e}")))?;
                process.set_console_size(Some(size));
            }
        }
        let pid = self.exec(&process, &opts)?;
        let master = match tty.map(TtySocket::recv).transpose() {
            Ok(m) => m,
            Err(e) => {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                let _ = wait_exit(pid);
                return Err(e);
            }
        };
        crate::sys::forward_signals(pid).map_err(sys_err("cannot forward signals"))?;
        if let Some(m) = &master {
            crate::sys::proxy_tty(m);
        }
        wait_exit(pid)
    }
}

fn exec_p1(
    ch: &Channel,
    joins: Vec<(CloneFlags, OwnedFd)>,
    p: &Prepared,
    seccomp: Option<&libseccomp::ScmpFilterContext>,
    console: Option<&UnixStream>,
) -> ! {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        ch.fail(&format!("PR_SET_DUMPABLE: {e}"));
    }
    if !matches!(ch.recv(), Ok(Some((b'G', _)))) {
        crate::sys::exit_now(1);
    }
    for (flag, fd) in joins {
        if let Err(e) = nix::sched::setns(&fd, flag) {
            ch.fail(&format!(
                "cannot join the container's namespace {flag:?}: {e}"
            ));
        }
        if flag.contains(CloneFlags::CLONE_NEWUSER) {
            become_ns_root(ch);
        }
    }
    match crate::sys::fork() {
        Ok(ForkResult::Parent { child }) => {
            let _ = ch.send(b'P', child.as_raw().to_string().as_bytes());
            crate::sys::exit_now(0)
        }
        Err(e) => ch.fail(&format!("cannot fork: {e}")),
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
    let program = become_process(ch, p, seccomp, slave);
    // The sync socket is close-on-exec: the parent sees EOF once exec worked.
    let err = process::exec(p, &program);
    ch.fail(&err)
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

/// How a new process joins the container's cgroup without the global
/// lock a `cgroup.procs` write takes: it is cloned straight into the v2
/// cgroup and moves itself into each v1 one by writing "0" to `tasks`.
struct CgroupJoin {
    v1: Vec<PathBuf>,
    v2: Option<(PathBuf, OwnedFd)>,
}

impl CgroupJoin {
    /// Creates the cgroup (if `create`) and opens what the child needs.
    fn prepare(cg: &dyn berth_cgroups::Manager, create: bool) -> Result<CgroupJoin> {
        if create {
            cg.create()?;
        }
        let mut v1 = Vec::new();
        let mut v2 = None;
        for p in cg.paths() {
            let is_v2 = nix::sys::statfs::statfs(&p)
                .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                .unwrap_or(false);
            if is_v2 {
                let fd = std::fs::File::open(&p)
                    .map_err(io_err(format!("cannot open cgroup {}", p.display())))?;
                v2 = Some((p, OwnedFd::from(fd)));
            } else {
                v1.push(p);
            }
        }
        Ok(CgroupJoin { v1, v2 })
    }

    /// Forks the child into the v2 cgroup; after a fallback plain fork the
    /// parent moves it with a cgroup.procs write.
    fn fork(&self) -> Result<ForkResult> {
        let (r, into) = crate::sys::fork_into_cgroup(self.v2.as_ref().map(|(_, fd)| fd.as_fd()))
            .map_err(sys_err("fork"))?;
        if let (ForkResult::Parent { child }, false, Some((path, _))) = (&r, into, &self.v2) {
            std::fs::write(path.join("cgroup.procs"), child.as_raw().to_string()).map_err(
                io_err(format!(
                    "cannot move process {child} into {}",
                    path.display()
                )),
            )?;
        }
        Ok(r)
    }

    /// Forks a child that joins the cgroup, closes the parent's end of the
    /// sync socket and the cgroup descriptors (no host directory may stay
    /// open in the container), then runs `body`, which never returns.
    fn spawn(&self, parent_end: &Channel, child_end: &Channel, body: impl FnOnce()) -> Result<Pid> {
        match self.fork()? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The child execs or _exits and never runs destructors, so
                // closing these descriptors by number cannot close twice.
                let _ = nix::unistd::close(parent_end.0.as_raw_fd());
                if let Err(e) = self.join_self() {
                    child_end.fail(&e);
                }
                if let Some((_, fd)) = &self.v2 {
                    let _ = nix::unistd::close(fd.as_raw_fd());
                }
                body();
                crate::sys::exit_now(1)
            }
        }
    }

    /// In the child: moves the calling (single-threaded) process into every
    /// v1 cgroup.
    fn join_self(&self) -> std::result::Result<(), String> {
        for p in &self.v1 {
            let tasks = p.join("tasks");
            std::fs::write(&tasks, "0")
                .map_err(|e| format!("cannot join cgroup {}: {e}", tasks.display()))?;
        }
        Ok(())
    }
}

/// In a child: applies the process's credentials and limits, finds its
/// program and makes the pty slave (if any) the controlling terminal.
/// Returns the program to exec; reports failures over `ch` and exits.
fn become_process(
    ch: &Channel,
    p: &Prepared,
    seccomp: Option<&libseccomp::ScmpFilterContext>,
    slave: Option<OwnedFd>,
) -> std::ffi::CString {
    if let Err(e) = process::apply(p, seccomp) {
        ch.fail(&e);
    }
    let program = match process::lookup(p) {
        Ok(prog) => prog,
        Err(e) => ch.fail(&e),
    };
    if let Some(s) = &slave {
        if let Err(e) = crate::console::make_controlling_terminal(s) {
            ch.fail(&e.to_string());
        }
    }
    program
}

/// After entering a user namespace: become its root (container uid/gid 0),
/// so files the setup creates get a mapped owner.
fn become_ns_root(ch: &Channel) {
    let root_u = nix::unistd::Uid::from_raw(0);
    let root_g = nix::unistd::Gid::from_raw(0);
    if let Err(e) = nix::unistd::setresgid(root_g, root_g, root_g)
        .and_then(|_| nix::unistd::setresuid(root_u, root_u, root_u))
    {
        ch.fail(&format!(
            "cannot become root in the user namespace (map container id 0): {e}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_replaces_the_fields_it_sets_and_keeps_the_others() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {
                "memory": {"limit": 1000000, "reservation": 500000},
                "pids": {"limit": 10},
                "devices": [{"allow": false, "access": "rwm"}]
            }}
        }))
        .unwrap();
        let update: oci_spec::runtime::LinuxResources = serde_json::from_value(
            serde_json::json!({"memory": {"limit": 2000000}, "cpu": {"shares": 512}}),
        )
        .unwrap();
        let merged = merge_resources(&spec, &update).unwrap();
        let r = merged
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap();
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(2000000));
        assert_eq!(mem.reservation(), Some(500000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.devices().as_ref().unwrap().len(), 1);
        assert_eq!(merged.root().as_ref().unwrap().path(), Path::new("rootfs"));
    }
}
