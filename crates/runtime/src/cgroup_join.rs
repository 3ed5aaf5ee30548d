//! How a new process (the container's first child, an exec'd process)
//! joins the container's cgroup without the global lock a `cgroup.procs`
//! write takes: it is cloned straight into the v2 cgroup and moves itself
//! into each v1 one by writing "0" to `tasks`.
//!
//! The clone into the v2 cgroup is a raw clone3, safe only in a
//! single-threaded process (see [`crate::sys::clone_into_cgroup`]). A
//! multithreaded caller (the containerd shim) forks its child P1 with
//! glibc's fork instead, and P1, single-threaded, clones the process that
//! runs in the container into the v2 cgroup ([`fork_final`]): the lock and
//! its RCU grace period (about 20 ms here) are avoided there too. Where P1
//! could not (it enters a user or cgroup namespace first, whose view the
//! clone is checked against), the parent moves P1 with a write.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::unistd::{ForkResult, Pid};

use crate::channel::Channel;
use crate::error::{io_err, sys_err, Result};

/// The cgroup directories a child joins, opened by the parent.
pub(crate) struct CgroupJoin {
    v1: Vec<PathBuf>,
    v2: Option<(PathBuf, OwnedFd)>,
    how: V2Join,
}

/// How a new process gets into the v2 cgroup.
#[derive(Clone, Copy, PartialEq)]
enum V2Join {
    /// This process is single-threaded: P1 is cloned into it.
    Clone,
    /// P1 clones its own child into it (this process is multithreaded and
    /// P1 enters no user or cgroup namespace).
    Defer,
    /// The parent moves P1 with a cgroup.procs write (or there is no v2
    /// cgroup).
    Write,
}

impl CgroupJoin {
    /// Creates the cgroup (if `create`) and opens what the child needs.
    /// `deferrable`: P1 enters no user or cgroup namespace, so it may clone
    /// its child into the v2 cgroup itself.
    pub(crate) fn prepare(
        cg: &dyn berth_cgroups::Manager,
        create: bool,
        deferrable: bool,
    ) -> Result<CgroupJoin> {
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
        // /proc/self/stat is read only where there is a v2 cgroup.
        let how = match &v2 {
            Some(_) if crate::sys::single_threaded() => V2Join::Clone,
            Some(_) if deferrable => V2Join::Defer,
            _ => V2Join::Write,
        };
        Ok(CgroupJoin { v1, v2, how })
    }

    /// Forks the child into the v2 cgroup; after a fallback plain fork the
    /// parent moves it with a cgroup.procs write.
    fn fork(&self) -> Result<ForkResult> {
        let (r, into) = match (&self.v2, self.how) {
            (Some((_, fd)), V2Join::Clone) => crate::sys::clone_into_cgroup(fd.as_fd()),
            _ => crate::sys::fork().map(|r| (r, false)),
        }
        .map_err(|e| match (&self.v2, e) {
            // The kernel's answer when the cgroup's parent holds processes.
            (Some((path, _)), nix::Error::EOPNOTSUPP | nix::Error::EBUSY) => sys_err(format!(
                "cannot start a process in cgroup {}: its parent cgroup holds processes, and \
                     cgroup v2 lets only leaf cgroups hold them once controllers are enabled \
                     (the no internal processes rule): choose a cgroupsPath whose parent has no \
                     processes",
                path.display()
            ))(e),
            _ => sys_err("fork")(e),
        })?;
        // A deferred join is made by P1, for its own child.
        let moved_by_p1 = self.how == V2Join::Defer;
        if let (ForkResult::Parent { child }, false, Some((path, _)), false) =
            (&r, into, &self.v2, moved_by_p1)
        {
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
    /// open in the container), then runs `body`, which never returns. When
    /// the v2 join is deferred, `body` gets the v2 cgroup's descriptor for
    /// [`fork_final`], which closes it.
    pub(crate) fn spawn(
        &self,
        parent_end: &Channel,
        child_end: &Channel,
        body: impl FnOnce(Option<RawFd>),
    ) -> Result<Pid> {
        match self.fork()? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The child execs or _exits and never runs destructors, so
                // closing these descriptors by number cannot close twice.
                let _ = nix::unistd::close(parent_end.0.as_raw_fd());
                if let Err(e) = self.join_self() {
                    child_end.fail(&e);
                }
                let mut deferred = None;
                if let Some((_, fd)) = &self.v2 {
                    if self.how == V2Join::Defer {
                        deferred = Some(fd.as_raw_fd());
                    } else {
                        let _ = nix::unistd::close(fd.as_raw_fd());
                    }
                }
                body(deferred);
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

/// P1's fork of the process that runs in the container. With `v2` (a
/// deferred join, see [`CgroupJoin`]) the child is cloned into that cgroup
/// (P1 is single-threaded: the raw clone3 is safe), or, on a kernel without
/// CLONE_INTO_CGROUP, moved there by a cgroup.procs write before this
/// returns; `v2` is closed in both processes.
pub(crate) fn fork_final(v2: Option<RawFd>) -> std::result::Result<ForkResult, String> {
    let Some(fd) = v2 else {
        return crate::sys::fork().map_err(|e| format!("cannot fork: {e}"));
    };
    // SAFETY: `fd` is the v2 cgroup's descriptor, inherited from the parent
    // and open in this process until the close below.
    let cgroup = unsafe { BorrowedFd::borrow_raw(fd) };
    let forked = crate::sys::clone_into_cgroup(cgroup);
    let moved = match &forked {
        Ok((ForkResult::Parent { child }, false)) => {
            // By the descriptor: P1 may already see the container's /proc.
            nix::fcntl::openat(
                cgroup,
                "cgroup.procs",
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .and_then(|procs| nix::unistd::write(&procs, child.to_string().as_bytes()))
            .map(drop)
            .map_err(|e| format!("cannot move process {child} into its cgroup: {e}"))
        }
        _ => Ok(()),
    };
    let _ = nix::unistd::close(fd);
    let (r, _) = forked.map_err(|e| format!("cannot fork into the container's cgroup: {e}"))?;
    moved?;
    Ok(r)
}
