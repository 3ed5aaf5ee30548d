//! The shim is a child subreaper: every container process (init and exec'd
//! ones) ends as its child. One thread reaps them on SIGCHLD and hands each
//! exit to the task service.
//!
//! The runtime library also forks children it waits for itself: OCI hooks
//! and the intermediate process of create and exec. Reaping any child
//! (`waitpid(-1)`) while such a call runs would take their exit status
//! away (a hook would then fail with ECHILD), so while one runs the reaper
//! reaps only the container processes the service knows, by pid, and
//! reaps everything once the last such call has returned.

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

use crate::service::Service;

/// Counts the calls into the runtime that wait for children of their own.
#[derive(Default)]
pub struct Gate(Mutex<GateState>);

#[derive(Default)]
struct GateState {
    /// Runtime calls in progress that wait for their own children.
    own_waits: usize,
    /// A SIGCHLD came while one ran: reap every child when the last ends.
    deferred: bool,
}

/// Held across a runtime call that forks and waits for children itself.
pub struct OwnWaits<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a runtime call that waits for its own children (hooks, the
    /// intermediate process of create and exec) until the guard drops.
    pub fn own_waits(&self) -> OwnWaits<'_> {
        self.lock().own_waits += 1;
        OwnWaits(self)
    }
}

impl Drop for OwnWaits<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.own_waits -= 1;
        if g.own_waits == 0 && std::mem::take(&mut g.deferred) {
            drop(g);
            // Wake the reaper for the children it left alone meanwhile.
            let _ = nix::sys::signal::kill(Pid::this(), nix::sys::signal::SIGCHLD);
        }
    }
}

/// Starts the reaping thread. SIGTERM and SIGINT are caught and only logged
/// (containerd stops the shim through `shutdown`), SIGPIPE is ignored.
pub fn start(service: Arc<Service>) -> Result<()> {
    let mut signals =
        Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGPIPE]).context("install signal handlers")?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig != SIGCHLD {
                // A SIGPIPE comes from a log line written after containerd
                // closed the log FIFO (the first container's bundle was
                // deleted): logging it would raise it again, for ever, and
                // no SIGCHLD would be handled any more.
                if sig != SIGPIPE {
                    log::debug!("received signal {sig}");
                }
                continue;
            }
            for (pid, code) in reap(&service) {
                service.reaped(pid, code);
            }
        }
    });
    Ok(())
}

/// The exits to report: of every child, or, while a runtime call waits for
/// children of its own, of the container processes only.
fn reap(service: &Service) -> Vec<(i32, i32)> {
    let mut exits = Vec::new();
    // Held while reaping, so no runtime call starts a child meanwhile.
    let mut gate = service.gate.lock();
    if gate.own_waits == 0 {
        while let Some(exit) = reap_one(None) {
            exits.extend(exit);
        }
    } else {
        gate.deferred = true;
        for pid in service.live_pids() {
            exits.extend(reap_one(Some(Pid::from_raw(pid))).flatten());
        }
    }
    exits
}

/// One `waitpid(pid or any, WNOHANG)`: None when nothing (more) is
/// waitable, Some(None) for a child that stopped or continued.
fn reap_one(pid: Option<Pid>) -> Option<Option<(i32, i32)>> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(pid, code)) => Some(Some((pid.as_raw(), code))),
        Ok(WaitStatus::Signaled(pid, sig, _)) => Some(Some((pid.as_raw(), 128 + sig as i32))),
        Ok(WaitStatus::StillAlive) | Err(_) => None,
        Ok(_) => Some(None),
    }
}
