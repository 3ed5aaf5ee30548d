//! The exec trampoline (trampoline/main.rs, built by build.rs): a ~1 KiB
//! static program, loaded into a sealed memfd, that the container's init
//! execs to exec the container's process. `/proc/self/exe` is then never
//! the host's runtime binary when the user's program is exec'd
//! (CVE-2019-5736 class), without re-executing the whole runtime from a
//! read-only mount first.
//!
//! Used for `create`/`run` when the container gets a new pid namespace and
//! runs no hooks inside it ([`protects`]): no other process can then reach
//! the init while it runs the runtime's code (it is non-dumpable pid 1 of
//! an empty namespace). Everything else re-executes the runtime.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::Result;
use crate::hooks::HookStage;

#[cfg(berth_trampoline)]
const IMAGE: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/trampoline")));
#[cfg(not(berth_trampoline))]
const IMAGE: Option<&[u8]> = None;

/// memfd_create flag asking for an executable memfd (Linux 6.3+; older
/// kernels reject it and make every memfd executable).
const MFD_EXEC: libc::c_uint = 0x0010;
/// The seal that freezes the memfd's mode (Linux 6.3+).
const F_SEAL_EXEC: libc::c_int = 0x0020;

/// Whether this build has an exec trampoline (x86_64 Linux).
pub fn available() -> bool {
    IMAGE.is_some()
}

/// Whether the trampoline alone keeps the host binary out of the container
/// described by `spec`: this build has one, the container gets a new pid
/// namespace (not joined by path, where other processes could see the
/// init), and no createContainer/startContainer hook runs inside it (the
/// init forks those itself).
pub fn protects(spec: &Spec) -> bool {
    let new_pid_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        });
    let in_container_hooks = [HookStage::CreateContainer, HookStage::StartContainer]
        .iter()
        .any(|stage| !stage.hooks(spec).is_empty());
    available() && new_pid_ns && !in_container_hooks
}

/// The trampoline in a sealed, close-on-exec memfd.
#[derive(Debug)]
pub(crate) struct Trampoline(OwnedFd);

impl Trampoline {
    /// Writes the trampoline into a new memfd and seals it against writes,
    /// resizing and mode changes.
    pub(crate) fn load() -> Result<Trampoline> {
        let image = IMAGE.ok_or_else(|| {
            crate::Error::Init("this build of berth-runtime has no exec trampoline".into())
        })?;
        let fd = sealed_memfd(c"berth-exec", |f| {
            use std::io::Write;
            f.write_all(image)
        })
        .map_err(crate::error::io_err(
            "loading the exec trampoline into a sealed memfd",
        ))?;
        Ok(Trampoline(fd))
    }

    /// Execs `program` with `argv`/`envp` through the trampoline, which
    /// marks `report` close-on-exec before the final exec and writes
    /// `X<errno>` to it if that fails. `first` is the lowest descriptor the
    /// process does not keep (3 + preserved fds). Returns only on failure.
    pub(crate) fn exec(
        &self,
        report: BorrowedFd<'_>,
        first: u32,
        program: &CStr,
        argv: &[CString],
        envp: &[CString],
    ) -> String {
        // A copy of `report` without close-on-exec, above the kept ones.
        // SAFETY: F_DUPFD only creates a new descriptor in this process.
        let dup = unsafe { libc::fcntl(report.as_raw_fd(), libc::F_DUPFD, first as libc::c_int) };
        if dup < 0 {
            return format!("cannot pass the start socket on: {}", Errno::last());
        }
        // SAFETY: F_DUPFD just returned this descriptor; we own it.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        let mut args = Vec::with_capacity(argv.len() + 3);
        args.push(c"berth-exec".to_owned());
        args.push(CString::new(dup.as_raw_fd().to_string()).unwrap_or_default());
        args.push(program.to_owned());
        args.extend(argv.iter().cloned());
        let Err(err) = nix::unistd::execveat(
            self.0.as_fd(),
            c"",
            &args,
            envp,
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        );
        match err {
            Errno::E2BIG => crate::process::exec_error(
                &program.to_string_lossy(),
                err,
                crate::process::strings_size(argv),
                crate::process::strings_size(envp),
            ),
            err => format!("cannot exec the exec trampoline (a seccomp profile that denies execveat, or vm.memfd_noexec=2?): {err}"),
        }
    }
}

fn memfd(name: &CStr, flags: libc::c_uint) -> nix::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns
    // a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec executable memfd named `name`, filled by `fill`, then
/// sealed against writes, resizing, mode changes and further seals: a
/// program exec'd from it has a `/proc/self/exe` nobody can rewrite.
pub(crate) fn sealed_memfd(
    name: &CStr,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let fd = memfd(name, base | MFD_EXEC).or_else(|e| {
        if e == Errno::EINVAL {
            memfd(name, base)
        } else {
            Err(e)
        }
    })?;
    let mut file = std::fs::File::from(fd);
    fill(&mut file)?;
    let fd = OwnedFd::from(file);
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS only changes the seals of our own memfd.
    let sealed = |s: libc::c_int| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, s) };
    if sealed(seals | F_SEAL_EXEC) < 0 && Errno::result(sealed(seals)).is_err() {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// The error message for the trampoline's report that exec'ing `process`
/// failed with `errno` (its `X<errno>` message on the start channel).
pub(crate) fn failure(errno: i32, process: &oci_spec::runtime::Process) -> String {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let size = |v: &[String]| v.iter().map(|s| s.len() + 1).sum();
    crate::process::exec_error(
        args.first().map_or("", |a| a.as_str()),
        Errno::from_raw(errno),
        size(&args),
        size(&env),
    )
}
