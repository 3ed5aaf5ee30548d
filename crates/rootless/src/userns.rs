//! Re-running the current command as root of a new user and mount
//! namespace, the way `podman unshare` does: the namespace maps root to
//! the user's own id and ids 1.. to the user's subordinate ranges
//! ([`crate::idmap::default_maps`]), so the command can give unpacked
//! files any owner an image asks for (stored on disk as the mapped host
//! ids), mount overlays (Linux ≥ 5.11) and create a container's other
//! namespaces, while every host process stays under the user's ids.
//!
//! [`reenter`] is called first thing in `main`, while the process has one
//! thread: the parent (the user's process) starts the same command again
//! with a marker in its environment and waits; the child unshares the two
//! namespaces and stops itself; the parent writes the maps with
//! newuidmap/newgidmap and lets it go on; the child drops the marker and
//! carries on as root of the namespace. The parent forwards the signals
//! other processes send it and exits with the child's exit code.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::idmap::{self, Kind};
use crate::Error;

/// The environment variable marking the child (internal): the parent's
/// pid, so a stray copy of it in some other process's environment is
/// ignored.
const MARK: &str = "_BERTH_USERNS_PARENT";

/// Where the command runs after [`reenter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reentered {
    /// This process is root of the new namespaces: carry on.
    Inside,
    /// This process was the parent; the child exited with this code
    /// (128+signal when killed): exit with it.
    Exited(i32),
}

/// Runs the current command again as root of a new user and mount
/// namespace (see the module docs). Call it only while the process has a
/// single thread, and only when the caller is not root.
pub fn reenter() -> Result<Reentered, Error> {
    if let Some(parent) = std::env::var_os(MARK) {
        // SAFETY: called while the process has one thread (see above), so
        // no other thread reads the environment meanwhile.
        unsafe { std::env::remove_var(MARK) };
        let ppid = nix::unistd::getppid().as_raw().to_string();
        if parent.to_str() == Some(ppid.as_str()) {
            enter_as_child()?;
            return Ok(Reentered::Inside);
        }
    }
    let uid_maps = idmap::default_maps(Kind::Uid)?;
    let gid_maps = idmap::default_maps(Kind::Gid)?;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let child = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(MARK, std::process::id().to_string())
        .spawn()
        .map_err(|e| Error::Io {
            what: "cannot start this command again in a user namespace".into(),
            source: e,
        })?;
    let pid = Pid::from_raw(child.id() as i32);
    forward_signals(pid);
    let wait_err = |what: &str| {
        let what = what.to_string();
        move |e| Error::Sys { what, source: e }
    };
    // The child stops itself once it has unshared (or exits on failure).
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED))
        .map_err(wait_err("waiting for the user namespace child"))?
    {
        WaitStatus::Stopped(..) => {}
        other => return Ok(Reentered::Exited(exit_code(other))),
    }
    if let Err(e) = idmap::write(pid.as_raw(), &uid_maps, &gid_maps) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    nix::sys::signal::kill(pid, Signal::SIGCONT)
        .map_err(wait_err("cannot continue the user namespace child"))?;
    loop {
        match waitpid(pid, None) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(wait_err("waiting for the user namespace child")(e)),
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return Ok(Reentered::Exited(exit_code(s)))
            }
            Ok(_) => continue,
        }
    }
}

fn exit_code(s: WaitStatus) -> i32 {
    match s {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 1,
    }
}

/// The child's side: unshare, wait for the maps, become root.
fn enter_as_child() -> Result<(), Error> {
    let sys = |what: &'static str| {
        move |e| Error::Sys {
            what: what.into(),
            source: e,
        }
    };
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(sys(
        "cannot create a user namespace (is kernel.unprivileged_userns_clone or user.max_user_namespaces 0?)",
    ))?;
    // Stopped without a parent to continue it, it would wait forever.
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("PR_SET_PDEATHSIG"))?;
    if nix::unistd::getppid() != parent {
        std::process::exit(1);
    }
    nix::sys::signal::raise(Signal::SIGSTOP).map_err(sys("cannot stop for the id maps"))?;
    nix::sys::prctl::set_pdeathsig(None).map_err(sys("PR_SET_PDEATHSIG"))?;
    // The parent has written the maps: our ids are root's now.
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)
        .and_then(|_| nix::unistd::setresuid(root_u, root_u, root_u))
        .map_err(sys("cannot become root of the new user namespace"))?;
    // Host groups are unmapped there; newgidmap leaves setgroups allowed.
    let _ = nix::unistd::setgroups(&[]);
    // Mounts made here (overlays, binds) stay in this mount namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("cannot make the new mount namespace private"))?;
    Ok(())
}

/// The file in a data root that records the id maps of the user namespace
/// its files were made in.
pub const MAPS_FILE: &str = "userns-maps";

/// This user namespace's uid and gid maps, one normalised line per range.
fn current_maps() -> Result<String, Error> {
    let mut out = String::new();
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/self/{file}");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            what: format!("cannot read {path}"),
            source: e,
        })?;
        for line in text.lines() {
            out.push_str(file);
            for field in line.split_whitespace() {
                out.push(' ');
                out.push_str(field);
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// Checks, inside the namespace [`reenter`] made, that data root `root`
/// is used with the id maps it was first used with (recorded in
/// `root/userns-maps` then): its files are stored under the mapped host
/// ids, so after a change of the user's ranges in /etc/subuid or
/// /etc/subgid they would belong to ids the user no longer has (or that
/// another user now has). A change is an error naming both maps.
pub fn check_data_root(root: &std::path::Path) -> Result<(), Error> {
    let now = current_maps()?;
    let file = root.join(MAPS_FILE);
    let io = |what: String| move |e| Error::Io { what, source: e };
    match std::fs::read_to_string(&file) {
        Ok(then) if then == now => Ok(()),
        Ok(then) => Err(Error::MapsChanged {
            root: root.to_path_buf(),
            then: then.trim().replace('\n', "; "),
            now: now.trim().replace('\n', "; "),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)
                .map_err(io(format!("cannot create {}", root.display())))?;
            let tmp = root.join(format!(".{MAPS_FILE}.{}", std::process::id()));
            std::fs::write(&tmp, &now).map_err(io(format!("cannot write {}", tmp.display())))?;
            std::fs::rename(&tmp, &file).map_err(io(format!("cannot write {}", file.display())))
        }
        Err(e) => Err(io(format!("cannot read {}", file.display()))(e)),
    }
}

/// The child to forward signals to (0 until it runs).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let child = CHILD.load(Ordering::Relaxed);
    // A signal the kernel sent (a terminal's ^C) reached the child's
    // process group already; one another process sent us is passed on.
    if code <= 0 && child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

fn forward_signals(child: Pid) {
    CHILD.store(child.as_raw(), Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: a zeroed sigaction is valid; `forward` only calls
        // async-signal-safe functions and reads an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
