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
//!
//! SIGPIPE is caught by a handler that does nothing, not iterated here: a
//! log line written after containerd stopped reading the log FIFO raises
//! it in the writing thread, and a reaper that logged each SIGPIPE raised
//! the next one itself, forever, while signal-hook hands out the lowest
//! pending signal first (13 before SIGCHLD's 17): exits were never reaped.

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
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
/// (containerd stops the shim through `shutdown`); SIGPIPE is caught and
/// does nothing (a write to a closed pipe or FIFO fails with EPIPE).
pub fn start(service: Arc<Service>) -> Result<()> {
    catch_sigpipe()?;
    let mut signals =
        Signals::new([SIGCHLD, SIGTERM, SIGINT]).context("install signal handlers")?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig != SIGCHLD {
                log::debug!("received signal {sig}");
            }
            // On every wakeup, not only for SIGCHLD: signals keep coming
            // lowest number first, so a SIGCHLD could wait behind others.
            for (pid, code) in reap(&service) {
                service.reaped(pid, code);
            }
        }
    });
    Ok(())
}

/// The SIGPIPE handler: nothing to do.
extern "C" fn on_sigpipe(_: libc::c_int) {}

/// Catches SIGPIPE with a handler that does nothing. Not SIG_IGN: an
/// ignored signal stays ignored across execve, so every container process
/// would start with SIGPIPE ignored; a caught one is back to its default.
fn catch_sigpipe() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigpipe),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGPIPE, &action) }.context("catch SIGPIPE")?;
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
