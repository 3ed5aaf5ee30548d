//! How a new process (the container's first child, an exec'd process)
//! joins the container's cgroup without the global lock a `cgroup.procs`
//! write takes: it is cloned straight into the v2 cgroup and moves itself
//! into each v1 one by writing "0" to `tasks`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::unistd::{ForkResult, Pid};

use crate::channel::Channel;
use crate::error::{io_err, sys_err, Result};

/// The cgroup directories a child joins, opened by the parent.
pub(crate) struct CgroupJoin {
    v1: Vec<PathBuf>,
    v2: Option<(PathBuf, OwnedFd)>,
}

impl CgroupJoin {
    /// Creates the cgroup (if `create`) and opens what the child needs.
    pub(crate) fn prepare(cg: &dyn berth_cgroups::Manager, create: bool) -> Result<CgroupJoin> {
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
            .map_err(|e| match (&self.v2, e) {
                // The kernel's answer when the cgroup's parent holds processes.
                (Some((path, _)), nix::Error::EOPNOTSUPP | nix::Error::EBUSY) => {
                    sys_err(format!(
                    "cannot start a process in cgroup {}: its parent cgroup holds processes, and \
                     cgroup v2 lets only leaf cgroups hold them once controllers are enabled \
                     (the no internal processes rule): choose a cgroupsPath whose parent has no \
                     processes",
                    path.display()
                ))(e)
                }
                _ => sys_err("fork")(e),
            })?;
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
    pub(crate) fn spawn(
        &self,
        parent_end: &Channel,
        child_end: &Channel,
        body: impl FnOnce(),
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
