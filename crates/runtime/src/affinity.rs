//! CPU affinity of the container's processes (runc's rules): the init and
//! an exec'd process without `process.execCPUAffinity` get every CPU back
//! (they must not inherit a runtime pinned by its caller; the kernel then
//! narrows the mask to the cgroup's cpuset), and an exec'd process with it
//! is forked while the runtime's thread runs on `initial`, then moved to
//! `final` once it is in the container's cgroup (without `final` it keeps
//! what the kernel gives it).

use nix::unistd::Pid;
use oci_spec::runtime::ExecCPUAffinity;

use crate::error::{Error, Result};
use crate::idlist;

fn set(pid: i32, mask: &[libc::c_ulong]) -> std::io::Result<()> {
    // SAFETY: the kernel reads `size_of_val(mask)` bytes from `mask`, a
    // live slice; pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            pid as libc::c_long,
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_own() -> std::io::Result<Vec<libc::c_ulong>> {
    let mut mask = vec![0 as libc::c_ulong; (idlist::MAX_ID + 1) / libc::c_ulong::BITS as usize];
    // SAFETY: the kernel writes at most `size_of_val(mask)` bytes into the
    // live buffer `mask`; pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0 as libc::c_long,
            std::mem::size_of_val(mask.as_slice()),
            mask.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mask)
}

/// Gives `pid` every CPU the kernel and its cpuset allow (runc resets the
/// mask the same way); best effort, as a failure only leaves the mask the
/// runtime had.
pub(crate) fn reset(pid: Pid) {
    let all = vec![libc::c_ulong::MAX; (idlist::MAX_ID + 1) / libc::c_ulong::BITS as usize];
    if let Err(e) = set(pid.as_raw(), &all) {
        tracing::warn!("cannot reset the CPU affinity of pid {pid}: {e}");
    }
}

/// The calling thread pinned to `execCPUAffinity.initial` until dropped
/// (a child forked meanwhile inherits the mask).
pub(crate) struct Pinned(Option<Vec<libc::c_ulong>>);

impl Pinned {
    /// Pins the calling thread to `aff.initial`, if set.
    pub(crate) fn initial(aff: Option<&ExecCPUAffinity>) -> Result<Pinned> {
        let Some(list) = aff.and_then(|a| a.initial().as_deref()) else {
            return Ok(Pinned(None));
        };
        let mask = idlist::parse(list)
            .map_err(|e| Error::Init(format!("process.execCPUAffinity.initial {list:?}: {e}")))?;
        let saved = get_own().map_err(|e| Error::Init(format!("sched_getaffinity: {e}")))?;
        set(0, &mask).map_err(|e| {
            Error::Init(format!(
                "cannot run on process.execCPUAffinity.initial {list:?} (sched_setaffinity: {e}; the CPUs must be online and allowed to the runtime)"
            ))
        })?;
        Ok(Pinned(Some(saved)))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = set(0, &saved);
        }
    }
}

/// Sets the affinity of exec'd process `pid` (now in the container's
/// cgroup) to `aff.final`; with no affinity configured at all, resets it.
pub(crate) fn finish(pid: Pid, aff: Option<&ExecCPUAffinity>) -> Result<()> {
    let Some(aff) = aff.filter(|a| a.initial().is_some() || a.cpu_affinity_final().is_some())
    else {
        reset(pid);
        return Ok(());
    };
    let Some(list) = aff.cpu_affinity_final().as_deref() else {
        return Ok(());
    };
    let mask = idlist::parse(list)
        .map_err(|e| Error::Init(format!("process.execCPUAffinity.final {list:?}: {e}")))?;
    set(pid.as_raw(), &mask).map_err(|e| {
        Error::Init(format!(
            "cannot set process.execCPUAffinity.final {list:?} (sched_setaffinity: {e}; the CPUs must be online and in the container's cpuset)"
        ))
    })
}
