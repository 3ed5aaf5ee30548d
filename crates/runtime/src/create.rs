//! The parent's side of `create` (and `run`): check the bundle, make the
//! state directory, the cgroup and the start socket, fork P1 into the
//! cgroup (see `init.rs` for the container's side), write the cgroup
//! limits, then answer P1's and the init's messages on the sync channel
//! until the init is ready, and record the container.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::cgroup_join::CgroupJoin;
use crate::channel;
use crate::console::TtySocket;
use crate::container::{bind_unix, valid_id, wait_gone, Container, Runtime, EXEC_SOCK};
use crate::error::{io_err, sys_err, Error, Result};
use crate::foreground::Foreground;
use crate::hooks::{run_hooks, HookStage};
use crate::init::{p1_main, InitPlan};
use crate::message::Message;
use crate::mounts;
use crate::namespaces::{ns_plan, write_id_maps};
use crate::process;
use crate::state::{self, annotations, write_pid_file, Record, State, Status};
use crate::trampoline::Trampoline;

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
    /// The container process's stdin, stdout and stderr (a shim handing
    /// over containerd's FIFOs); None: it inherits the caller's. Ignored
    /// for a terminal, which gets the pty.
    pub stdio: Option<std::sync::Arc<[std::os::fd::OwnedFd; 3]>>,
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

impl Runtime {
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
        let cg = crate::rootless::container_cgroup(
            berth_cgroups::manager(&cgroups_path, id)?,
            id,
            linux.resources().as_ref(),
        )?;
        // From here on `state` and `list` show the container as creating.
        // Not fsynced: after a crash there is nothing to come back to.
        let me = std::process::id() as i32;
        let (my_start, _) = state::proc_start_time(me)
            .ok_or_else(|| Error::Init("cannot read this process's start time in /proc".into()))?;
        let mut record = Record {
            id: id.to_string(),
            init_pid: 0,
            init_start_time: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: Utc::now(),
            cgroups_path,
            cgroup_paths: cg.paths(),
            no_cgroup: cg.paths().is_empty(),
            config: spec.clone(),
            creator: Some((me, my_start)),
            host_mounts: Vec::new(),
        };
        record.save(&dir, false)?;
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
        let trampoline = if crate::reexec::exe_is_read_only("self") {
            None
        } else if crate::trampoline::protects(&spec) {
            Some(Trampoline::load()?)
        } else {
            return Err(Error::Init(
                "the runtime binary is writable and this container joins a pid namespace or runs hooks inside it: \
                 re-execute from a read-only mount first (berth_runtime::reexec_if_needed)"
                    .into(),
            ));
        };
        let mut prepared = process::prepare(process_spec, Some(linux), opts.preserve_fds)?;
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
                .map(|s| crate::seccomp::Filter::prepare(s, &crate::seccomp::cache_dir(&self.root)))
                .transpose()?,
            trampoline,
            cgroup_v2: None,
        };
        // Without a mount namespace of its own the container's mounts are
        // made in this one: note what is there, to record what it adds.
        let host_mounts =
            (!crate::spec::has_namespace(&spec, oci_spec::runtime::LinuxNamespaceType::Mount))
                .then(|| crate::host_mounts::Before::take(&rootfs));
        let mut init_pid = 0;
        let stdio = opts.stdio.clone();
        let spawned = self
            .spawn_init(
                &mut record,
                plan,
                cg.as_ref(),
                &mut init_pid,
                &dir,
                stdio.as_deref(),
            )
            .and_then(|()| match &host_mounts {
                Some(before) => {
                    record.host_mounts = before.new_mounts();
                    record.save(&dir, true)
                }
                None => Ok(()),
            });
        if let Err(e) = spawned {
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
            if let Some(before) = &host_mounts {
                crate::host_mounts::unmount_all(&before.new_mounts(), &rootfs);
            }
            return Err(e);
        }
        let container = Container::new(dir, record);
        if let Some(p) = &opts.pid_file {
            if let Err(e) = write_pid_file(p, container.pid()) {
                let _ = container.destroy_after_failure(cg.as_ref());
                return Err(e);
            }
        }
        guard.0 = None;
        Ok(container)
    }

    /// Forks P1, answers it and the init until the init is ready, then
    /// saves `record` (in the creating state until then) as created.
    fn spawn_init(
        &self,
        record: &mut Record,
        mut plan: InitPlan<'_>,
        cg: &dyn berth_cgroups::Manager,
        init_pid: &mut i32,
        dir: &Path,
        stdio: Option<&[std::os::fd::OwnedFd; 3]>,
    ) -> Result<()> {
        let (parent, child) = channel::pair().map_err(sys_err("socketpair"))?;
        let linux = plan
            .spec
            .linux()
            .as_ref()
            .ok_or_else(|| Error::Init("no linux section".into()))?;
        let enters_user_or_cgroup_ns = plan.ns.new_user
            || plan.ns.new_flags.contains(CloneFlags::CLONE_NEWCGROUP)
            || plan.ns.joins.iter().any(|(f, _)| {
                f.intersects(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWCGROUP)
            });
        let join = CgroupJoin::prepare(cg, true, !enters_user_or_cgroup_ns)?;
        let p1 = join.spawn(&parent, &child, |cgroup_v2| {
            if let Some(Err(e)) = stdio.map(crate::sys::dup_stdio) {
                child.fail(&e);
            }
            plan.cgroup_v2 = cgroup_v2;
            p1_main(&child, &mut plan)
        })?;
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
        // in the cgroup but still blocked waiting for Go, as runc sets the
        // cgroup before its init runs: in v1 the device rules start with a
        // deny-all, and a child creating /dev nodes meanwhile would get EPERM.
        if let Some(r) = linux.resources() {
            if let Err(e) = cg.set(r) {
                let _ = nix::sys::signal::kill(p1, nix::sys::signal::Signal::SIGKILL);
                reap_p1();
                return Err(e.into());
            }
        }
        // Not the runtime's own affinity, which its caller may have pinned:
        // every CPU the container's cpuset allows (runc's reset).
        crate::affinity::reset(p1);
        // The init needs the binds computed from the cgroup it was put in.
        let binds = mounts::cgroup_binds(&cg.paths());
        if let Err(e) = parent.send(&Message::Go(binds)) {
            // P1 may have failed already (it creates namespaces early).
            if let Ok(Some(Message::Error(msg))) = parent.recv() {
                reap_p1();
                return Err(Error::Init(msg));
            }
            return Err(sys_err("cannot release the container's first child")(e));
        }
        // The state hooks and a seccomp agent get while the init sets up.
        let creating = |pid: i32| State {
            oci_version: plan.spec.version().clone(),
            id: record.id.clone(),
            pid,
            status: Status::Creating,
            bundle: plan.bundle.to_path_buf(),
            rootfs: plan.rootfs.to_path_buf(),
            created: state::rfc3339_nano(&record.created),
            annotations: annotations(plan.spec),
            owner: String::new(),
        };
        // The init's HooksWanted, SeccompListener or Ready can overtake P1's Pid: the
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
                        Err(e) => return Err(e),
                    }
                }
            };
            if matches!(
                msg,
                Message::HooksWanted | Message::Ready | Message::SeccompListener(_)
            ) && *init_pid <= 0
            {
                early = Some(msg);
                continue;
            }
            match msg {
                Message::UserNsCreated => {
                    write_id_maps(p1.as_raw(), plan.spec)?;
                    parent
                        .send(&Message::IdMapsWritten)
                        .map_err(sys_err("sync channel"))?;
                }
                Message::Pid(pid) => {
                    *init_pid = pid;
                    reap_p1();
                    // In the init's network namespace before the hooks run
                    // and before `create` returns.
                    crate::netdev::move_all(linux, pid)?;
                }
                Message::HooksWanted => {
                    let json = serde_json::to_vec(&creating(*init_pid)).unwrap_or_default();
                    for stage in [HookStage::Prestart, HookStage::CreateRuntime] {
                        run_hooks(stage, stage.hooks(plan.spec), &json)?;
                    }
                    parent
                        .send(&Message::HookState(json))
                        .map_err(sys_err("sync channel"))?;
                }
                Message::SeccompListener(fd) => {
                    let listener = crate::seccomp::notify::take(*init_pid, fd)?;
                    parent
                        .send(&Message::SeccompListenerTaken)
                        .map_err(sys_err("sync channel"))?;
                    let seccomp = linux.seccomp().clone().unwrap_or_default();
                    crate::seccomp::notify::send_to_agent(
                        &seccomp.listener_path().clone().unwrap_or_default(),
                        &listener,
                        *init_pid,
                        &seccomp.listener_metadata().clone().unwrap_or_default(),
                        &creating(*init_pid),
                    )?;
                }
                Message::Ready => break,
                Message::Error(msg) => {
                    reap_p1();
                    return Err(Error::Init(msg));
                }
                other => {
                    return Err(Error::Init(format!(
                        "unexpected message {other} from the container init"
                    )))
                }
            }
        }
        let (start_time, _) = state::proc_start_time(*init_pid)
            .ok_or_else(|| Error::Init("container init exited right after it was ready".into()))?;
        record.init_pid = *init_pid;
        record.init_start_time = start_time;
        record.creator = None;
        // Not fsynced either: the state of a container dies with the
        // machine (runc keeps it on a tmpfs), and after a crash the engine
        // finds the container dead whatever the file holds.
        record.save(dir, false)
    }

    /// `run`: create, start, supervise the init in the foreground
    /// ([`crate::Foreground`]) and delete the container; returns the exit
    /// code (128+signal when killed). The calling process becomes a child
    /// subreaper so the init is its child.
    pub fn run(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<i32> {
        nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
        let mut opts = opts.clone();
        // A terminal without --console-socket: like runc, take the pty
        // master ourselves and copy between it and our stdio.
        let mut tty = None;
        let mut size = None;
        // The bundle's config is read once: by the caller, or here for
        // create (unreadable: create reads it again and reports why).
        if opts.spec.is_none() {
            opts.spec = crate::spec::read(bundle).ok();
        }
        let terminal = opts
            .spec
            .as_ref()
            .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
            .unwrap_or(false);
        if opts.console_socket.is_none() && terminal {
            let t = TtySocket::bind(&self.root)?;
            opts.console_socket = Some(t.path.clone());
            tty = Some(t);
            // The pty gets our size before the process runs (a resize after
            // `start` would race with its first look at the size).
            size = crate::foreground::terminal_size();
        }
        let c = self.create_sized(id, bundle, &opts, size)?;
        let master = match tty.map(TtySocket::recv).transpose() {
            Ok(m) => m,
            Err(e) => {
                let _ = c.delete(true);
                return Err(e);
            }
        };
        // After the init was forked (it must not inherit the blocked
        // signals), before start (no signal to forward is lost).
        let supervised = Foreground::catch_signals().and_then(|fg| {
            c.start()?;
            fg.supervise(c.pid(), master.as_ref().map(|m| m.as_fd()), true, None)
        });
        let code = match supervised {
            Ok(code) => code,
            Err(e) => {
                let _ = c.delete(true);
                return Err(e);
            }
        };
        c.delete(true)?;
        Ok(code)
    }
}
