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
pub(crate) mod notify;

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

/// The filter flags of `linux.seccomp.flags` berth knows, by spec name,
/// with their SECCOMP_FILTER_FLAG_* bits (in the `features` order).
pub(crate) const FLAGS: &[(&str, libc::c_ulong)] = &[
    ("SECCOMP_FILTER_FLAG_LOG", libc::SECCOMP_FILTER_FLAG_LOG),
    (
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    ),
    ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ),
];

/// The flags of [`FLAGS`] this kernel takes: a load with the flag and no
/// program fails with EFAULT (EACCES without CAP_SYS_ADMIN) when the flag
/// is known, EINVAL when it is not (WAIT_KILLABLE_RECV is asked with
/// NEW_LISTENER, which it needs).
pub(crate) fn supported_flags() -> Vec<&'static str> {
    FLAGS
        .iter()
        .filter(|(_, bit)| {
            let bit = match *bit {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV => {
                    bit | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                }
                b => b,
            };
            // SAFETY: a null program makes the kernel fail the call
            // (EFAULT) after checking the flags; nothing is installed.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    bit,
                    std::ptr::null::<libc::sock_fprog>(),
                )
            };
            ret < 0
                && matches!(
                    nix::errno::Errno::last(),
                    nix::errno::Errno::EFAULT | nix::errno::Errno::EACCES
                )
        })
        .map(|(name, _)| *name)
        .collect()
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

/// SCMP_ACT_NOTIFY needs an agent to answer, and cannot be the default:
/// the few system calls the runtime makes between loading the filter and
/// the exec would wait for an agent that has no listener yet.
fn check_notify(s: &LinuxSeccomp) -> Result<()> {
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(bad(
            "field `linux.seccomp.defaultAction`: SCMP_ACT_NOTIFY cannot be the default action (name the system calls to notify in linux.seccomp.syscalls)".into(),
        ));
    }
    if uses_notify(s) && s.listener_path().is_none() {
        return Err(bad(
            "field `linux.seccomp.listenerPath`: missing; SCMP_ACT_NOTIFY rules need the unix socket of a seccomp agent to send the listener to".into(),
        ));
    }
    Ok(())
}

impl Filter {
    /// The filter of `s`: its program from the cache under `cache_dir`
    /// when a valid entry is there, else compiled with libseccomp (and
    /// then cached; a cache that cannot be written is only a slower
    /// create, never an error).
    pub(crate) fn prepare(s: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter> {
        check_notify(s)?;
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
