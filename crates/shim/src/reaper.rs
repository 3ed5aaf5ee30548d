//! The shim is a child subreaper: every container process (init and exec'd
//! ones) ends as its child. One thread reaps them on SIGCHLD and hands each
//! exit to the task service.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

use crate::service::Service;

/// Starts the reaping thread. SIGTERM and SIGINT are caught and only logged
/// (containerd stops the shim through `shutdown`), SIGPIPE is ignored.
pub fn start(service: Arc<Service>) -> Result<()> {
    let mut signals =
        Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGPIPE]).context("install signal handlers")?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig != SIGCHLD {
                log::debug!("received signal {sig}");
                continue;
            }
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => service.reaped(pid.as_raw(), code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        service.reaped(pid.as_raw(), 128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    });
    Ok(())
}
