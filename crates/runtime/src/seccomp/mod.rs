//! linux.seccomp: the spec's filter as a classic BPF program, prepared in
//! the parent and loaded by the container process right before exec with
//! seccomp(SECCOMP_SET_MODE_FILTER).
//!
//! libseccomp turns the profile into BPF (`compile.rs`), which costs
//! ~15 ms of CPU for a profile the size of containerd's default. The
//! program depends only on the profile, the architecture and libseccomp's
//! syscall table, so it is kept in a cache under the state root
//! (`cache.rs`) and the next container with the same profile loads the
//! cached program without calling libseccomp at all. The filter flags and
//! the listener are the load's business, not the program's: they are taken
//! from the spec on every create.

mod cache;
mod compile;

pub(crate) use cache::dir as cache_dir;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag};

use crate::error::{Error, Result};

/// A filter ready to load in a forked child: no allocation, no parsing
/// left to do there.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    program: Vec<libc::sock_filter>,
    /// SECCOMP_FILTER_FLAG_* for the load.
    flags: libc::c_ulong,
}

fn bad(msg: String) -> Error {
    Error::Config {
        path: "config.json".into(),
        msg,
    }
}

/// Whether any rule of `s`, or its default, is SCMP_ACT_NOTIFY.
fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The load flags `linux.seccomp.flags` asks for. TSYNC is accepted and
/// has nothing to do (the process loading the filter has one thread), as
/// in runc. WAIT_KILLABLE_RECV only means something for a filter with a
/// listener, and the kernel refuses it otherwise: without one it is left
/// out.
fn load_flags(s: &LinuxSeccomp) -> libc::c_ulong {
    let notify = uses_notify(s);
    let mut flags = if notify {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv
            | LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
        };
    }
    flags
}

impl Filter {
    /// The filter of `s`: its program from the cache under `cache_dir`
    /// when a valid entry is there, else compiled with libseccomp (and
    /// then cached; a cache that cannot be written is only a slower
    /// create, never an error).
    pub(crate) fn prepare(s: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter> {
        let key = cache::key(s);
        let program = match cache::read(cache_dir, &key) {
            Some(p) => p,
            None => {
                let bytes = compile::to_bpf(s)?;
                let program = cache::decode(&bytes).ok_or_else(|| {
                    bad(format!(
                        "linux.seccomp: libseccomp produced a program of {} bytes, not 1 to {} instructions",
                        bytes.len(),
                        cache::MAX_INSNS
                    ))
                })?;
                if let Err(e) = cache::write(cache_dir, &key, &bytes) {
                    tracing::debug!(
                        "cannot cache the seccomp program in {}: {e}",
                        cache_dir.display()
                    );
                }
                program
            }
        };
        Ok(Filter {
            program,
            flags: load_flags(s),
        })
    }

    /// In the child: installs the filter. Returns the listener's fd when
    /// the filter has SCMP_ACT_NOTIFY rules.
    pub(crate) fn load(&self) -> std::result::Result<Option<OwnedFd>, String> {
        let prog = libc::sock_fprog {
            // `prepare` keeps programs at MAX_INSNS (4096) or fewer.
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call;
        // the kernel copies the program and checks every instruction.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            let e = nix::errno::Errno::last();
            return Err(format!(
                "cannot load the seccomp filter (linux.seccomp, load flags {:#x}): {e}",
                self.flags
            ));
        }
        if self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
            // SAFETY: with NEW_LISTENER the kernel returns a new fd that
            // nothing else owns.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }));
        }
        Ok(None)
    }
}
