//! The container's side of `create`: P1, the intermediate child that joins
//! and creates the namespaces, and the init it forks, which builds the
//! container around itself, reports ready and waits for `start`.
//!
//! ```text
//! create ──fork──▶ P1: joins namespaces by path, unshares the user
//!                      namespace (the parent writes the id maps), then all
//!                      other new namespaces, then forks and exits
//!                  └──fork──▶ init: mounts, pivot_root (without a mount
//!                             namespace of its own: chroot only), hostname, sysctls,
//!                             masked/readonly paths, rlimits, user, caps;
//!                             reports "ready", then blocks in accept() on
//!                             <root>/<id>/exec.sock
//! start  ──connect(exec.sock)──▶ init runs startContainer hooks, answers
//!                                and execs the user process (through the
//!                                exec trampoline when the runtime binary is
//!                                writable); start reads until EOF (the
//!                                socket is close-on-exec)
//! ```
//! Both run in forked children: they report failures over the sync channel
//! and `_exit`, never return.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::channel::Channel;
use crate::hooks::{run_hooks, HookStage};
use crate::message::Message;
use crate::mounts;
use crate::namespaces::{self, NsPlan};
use crate::process::{self, Prepared};
use crate::trampoline::Trampoline;

/// What a forked child needs, prepared by the parent before the fork.
pub(crate) struct InitPlan<'a> {
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub ns: NsPlan,
    pub process: Prepared,
    pub cgroup_binds: Vec<(PathBuf, String)>,
    pub console: Option<UnixStream>,
    pub listener: Option<UnixListener>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub time_offsets: String,
    pub seccomp: Option<crate::seccomp::Filter>,
    /// Set when the runtime's binary is writable: the init execs the
    /// process through it (CVE-2019-5736 class).
    pub trampoline: Option<Trampoline>,
    /// In P1: the v2 cgroup to clone the init into (a deferred join, see
    /// `cgroup_join`).
    pub cgroup_v2: Option<std::os::fd::RawFd>,
}

/// P1: joins and creates the namespaces, forks the init, exits.
pub(crate) fn p1_main(ch: &Channel, plan: &mut InitPlan<'_>) -> ! {
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
    plan.cgroup_binds = ch.expect("go", |m| match m {
        Message::Go(binds) => Some(binds),
        _ => None,
    });
    namespaces::join_all(ch, std::mem::take(&mut plan.ns.joins), "namespace");
    if plan.ns.new_user {
        // An unprivileged parent (or newuidmap running as it) opens our
        // /proc files: only while we are dumpable are they its own.
        let unprivileged = !nix::unistd::Uid::effective().is_root();
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
            ch.fail(&format!("cannot create a user namespace: {e}"));
        }
        if unprivileged {
            if let Err(e) = nix::sys::prctl::set_dumpable(true) {
                ch.fail(&format!("PR_SET_DUMPABLE: {e}"));
            }
        }
        if ch.send(&Message::UserNsCreated).is_err() {
            crate::sys::exit_now(1);
        }
        ch.expect("id maps written", |m| {
            (m == Message::IdMapsWritten).then_some(())
        });
        if unprivileged {
            if let Err(e) = nix::sys::prctl::set_dumpable(false) {
                ch.fail(&format!("PR_SET_DUMPABLE: {e}"));
            }
        }
        namespaces::become_ns_root(ch);
    }
    if !early {
        unshare_new(ch, plan.ns.new_flags);
    }
    if !plan.time_offsets.is_empty() {
        if let Err(e) = std::fs::write("/proc/self/timens_offsets", plan.time_offsets.as_bytes()) {
            ch.fail(&format!("cannot write linux.timeOffsets: {e}"));
        }
    }
    match crate::cgroup_join::fork_final(plan.cgroup_v2.take()) {
        Ok(ForkResult::Child) => init_main(ch, plan),
        Ok(ForkResult::Parent { child }) => {
            let _ = ch.send(&Message::Pid(child.as_raw()));
            crate::sys::exit_now(0)
        }
        Err(e) => ch.fail(&format!("the container init: {e}")),
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
    // A new user namespace, or one inherited from a rootless caller: no
    // device nodes can be made, the host's are bound instead.
    let userns = crate::spec::has_namespace(spec, LinuxNamespaceType::User)
        || berth_rootless::in_user_namespace();
    // Without a mount namespace of its own (inherited: the runtime's) the
    // container is chroot'ed into its rootfs, and its mounts are made under
    // the rootfs in the runtime's namespace.
    let own_mount_ns = crate::spec::has_namespace(spec, LinuxNamespaceType::Mount);
    let mounts_list = spec.mounts().clone().unwrap_or_default();
    let devices = linux.devices().clone().unwrap_or_default();
    let rplan = mounts::RootfsPlan {
        rootfs: plan.rootfs,
        bundle: plan.bundle,
        mounts: &mounts_list,
        devices: &devices,
        userns,
        cgroup_binds: &plan.cgroup_binds,
        mount_label: linux.mount_label().as_deref(),
    };
    let prepared = if own_mount_ns {
        mounts::prepare_rootfs(&rplan)
    } else if !mounts_list.is_empty() {
        // In the runtime's namespace, under the rootfs; `create` records
        // them for `delete` (host_mounts.rs).
        mounts::make_mounts(&rplan)
    } else {
        Ok(())
    };
    if let Err(e) = prepared {
        ch.fail(&e);
    }
    // The parent runs the prestart and createRuntime hooks now and sends the
    // state the hooks get; without any such hook there is nothing to wait
    // for (one round trip less).
    let hooked = [
        HookStage::Prestart,
        HookStage::CreateRuntime,
        HookStage::CreateContainer,
        HookStage::StartContainer,
    ]
    .iter()
    .any(|stage| !stage.hooks(spec).is_empty());
    let mut state_json = Vec::new();
    if hooked {
        if ch.send(&Message::HooksWanted).is_err() {
            crate::sys::exit_now(1);
        }
        state_json = ch.expect("hook state", |m| match m {
            Message::HookState(json) => Some(json),
            _ => None,
        });
    }
    if let Err(e) = run_hooks(
        HookStage::CreateContainer,
        HookStage::CreateContainer.hooks(spec),
        &state_json,
    ) {
        ch.fail(&e.to_string());
    }
    let entered = if own_mount_ns {
        mounts::enter_rootfs(plan.rootfs, plan.no_pivot)
    } else {
        mounts::chroot_into(plan.rootfs)
    };
    if let Err(e) = entered {
        ch.fail(&e);
    }
    let mut slave = None;
    if let Some(sock) = &plan.console {
        match console_setup(sock, plan.process.console_size, own_mount_ns) {
            Ok(s) => slave = Some(s),
            Err(e) => ch.fail(&e),
        }
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if let Err(e) = nix::unistd::sethostname(h) {
            ch.fail(&format!("sethostname {h:?}: {e}"));
        }
    }
    let new_netns =
        linux.namespaces().iter().flatten().any(|n| {
            n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none()
        });
    if new_netns {
        if let Err(e) = crate::sys::loopback_up() {
            ch.fail(&format!("bringing the loopback interface up: {e}"));
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
    let (program, seccomp_listener) =
        process::become_process(&plan.process, plan.seccomp.as_ref(), slave)
            .unwrap_or_else(|e| ch.fail(&e));
    if let Some(l) = seccomp_listener {
        crate::seccomp::notify::hand_over(ch, l);
    }
    let listener = match plan.listener.take() {
        Some(l) => l,
        None => ch.fail("internal: no start socket"),
    };
    if ch.send(&Message::Ready).is_err() {
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
    let start_hooks = HookStage::StartContainer.hooks(spec);
    if !start_hooks.is_empty() {
        let mut running =
            serde_json::from_slice::<serde_json::Value>(&state_json).unwrap_or_default();
        running["status"] = "created".into();
        let running = serde_json::to_vec(&running).unwrap_or_default();
        if let Err(e) = run_hooks(HookStage::StartContainer, start_hooks, &running) {
            let _ = conn.write_all(&Message::Error(e.to_string()).encode());
            crate::sys::exit_now(1);
        }
    }
    let _ = conn.write_all(&Message::Exec.encode());
    let err = match &plan.trampoline {
        Some(t) => process::exec_via_trampoline(&plan.process, &program, t, conn.as_fd()),
        None => process::exec(&plan.process, &program),
    };
    let _ = conn.write_all(&Message::Error(err).encode());
    crate::sys::exit_now(127)
}

/// Allocates the container's pty (after pivot_root, so it belongs to the
/// container's devpts), binds the slave on /dev/console (with a mount
/// namespace of the container's own: a bind would be the host's otherwise)
/// and sends the master over the console socket.
fn console_setup(
    sock: &UnixStream,
    size: Option<(u16, u16)>,
    bind_console: bool,
) -> std::result::Result<OwnedFd, String> {
    let (master, slave) = crate::console::new_pty().map_err(|e| e.to_string())?;
    if let Some((rows, cols)) = size {
        crate::console::set_window_size(&master, rows, cols).map_err(|e| e.to_string())?;
    }
    if !bind_console {
        crate::console::send_master_on(sock.as_fd(), &master).map_err(|e| e.to_string())?;
        return Ok(slave);
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
