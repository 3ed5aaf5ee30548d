//! The CVE-2019-5736 defence at the top of a process: a container process
//! must never reach the host's runtime binary writable through
//! `/proc/<pid>/exe`. Either the exec trampoline covers the container
//! ([`crate::trampoline::protects`]), or the program re-executes from a
//! private read-only bind mount of its own binary before it forks
//! ([`reexec_read_only`]). [`reexec_if_needed`] makes that decision once,
//! for every caller (`berth-runtime`, `berth run`).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use oci_spec::runtime::Spec;

/// What the calling process is about to do with the runtime library, for
/// [`reexec_if_needed`].
#[derive(Debug, Clone, Copy)]
pub enum Intent<'a> {
    /// Create (or run) the container of this spec. None when the spec
    /// could not be read: `create` then refuses it with the real error, and
    /// until then the binary is sealed to be safe.
    Create(Option<&'a Spec>),
    /// Create containers whose specs always have a new pid namespace (not
    /// joined by path) and no createContainer or startContainer hooks, not
    /// known yet: what `berth run` builds from an image config.
    CreateIsolated,
    /// Run a process in a container (`exec`).
    Exec,
    /// Nothing is forked into a container (state, list, kill, delete, ...).
    Other,
}

/// Whether `intent` needs the binary sealed: true unless nothing enters a
/// container or the exec trampoline covers every container created.
pub fn needs_reexec(intent: Intent<'_>) -> bool {
    match intent {
        Intent::Create(Some(spec)) => !crate::trampoline::protects(spec),
        Intent::Create(None) | Intent::Exec => true,
        Intent::CreateIsolated => !crate::trampoline::available(),
        Intent::Other => false,
    }
}

/// Makes the CVE-2019-5736 decision for `intent` and acts on it: when the
/// exec trampoline does not cover what is about to be forked into a
/// container ([`needs_reexec`]), re-executes the running program from a
/// read-only bind mount of its binary ([`reexec_read_only`]) — the
/// process starts again from `main` with the same arguments and
/// environment, and this call then returns `Ok(())` at once.
///
/// Call it first thing in `main`, before other threads or side effects
/// (they would happen twice). Returns `Ok(())` when nothing had to be done
/// (or the binary already runs from a read-only mount), an error when the
/// kernel cannot make the read-only copy (open_tree/mount_setattr: Linux
/// 5.12+); the caller should then stop rather than fork containers.
pub fn reexec_if_needed(intent: Intent<'_>) -> std::io::Result<()> {
    if needs_reexec(intent) {
        reexec_read_only()?;
    }
    Ok(())
}

/// Whether the binary process `pid` (or "self") runs cannot be rewritten:
/// it is on a read-only mount (re-executed by [`reexec_read_only`],
/// installed that way, or a child's copy of either) or is a memfd sealed
/// against writes (the unprivileged fallback).
pub(crate) fn exe_is_read_only(pid: &str) -> bool {
    let exe = format!("/proc/{pid}/exe");
    if nix::sys::statvfs::statvfs(exe.as_str())
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    {
        return true;
    }
    let Ok(file) = std::fs::File::open(&exe) else {
        return false;
    };
    // SAFETY: F_GET_SEALS only reads the seals of a file we opened; it
    // fails (EINVAL) on files that are not memfds.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

const SEALED_ENV: &str = "_BERTH_RUNTIME_EXE_RO";

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Re-executes the running program from a private, read-only bind mount of
/// its own binary (CVE-2019-5736 class), unless that was already done. A
/// caller without the right to mount (an unprivileged user: open_tree
/// fails with EPERM) re-executes from a sealed memfd copy of the binary
/// instead, as runc 1.0 did.
///
/// Every process the runtime forks into a container then has a
/// `/proc/self/exe` on a read-only mount: a container process that gets
/// hold of it (e.g. by exec'ing a `#!/proc/self/exe` script) can never
/// reopen the host's binary for writing. This is the act alone: callers
/// use [`reexec_if_needed`], which decides whether it is needed. Returns
/// only when the binary already runs from a read-only mount (then nothing
/// is re-executed), or with an error when the kernel lacks
/// open_tree/mount_setattr.
pub fn reexec_read_only() -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let read_only = exe_is_read_only("self");
    let reexecuted = std::env::var_os(SEALED_ENV).is_some();
    if reexecuted {
        std::env::remove_var(SEALED_ENV);
    }
    if read_only {
        // Already sealed (re-executed, or installed on a read-only mount).
        return Ok(());
    }
    if reexecuted {
        return Err(std::io::Error::other(
            "re-executed from a read-only bind mount or sealed memfd, but /proc/self/exe is still writable",
        ));
    }
    let fd = match read_only_exe() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            crate::trampoline::sealed_memfd(c"berth-runtime", |f| {
                std::io::copy(&mut std::fs::File::open("/proc/self/exe")?, f).map(drop)
            })?
        }
        other => other?,
    };
    let cstrs = |it: Vec<std::ffi::OsString>| -> Vec<CString> {
        it.into_iter()
            .filter_map(|s| CString::new(s.as_bytes()).ok())
            .collect()
    };
    let argv = cstrs(std::env::args_os().collect());
    let mut env: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut s = k;
            s.push("=");
            s.push(v);
            s
        })
        .collect();
    env.push(format!("{SEALED_ENV}=1").into());
    let envp = cstrs(env);
    let err = nix::unistd::execveat(
        fd.as_fd(),
        c"",
        &argv,
        &envp,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    );
    Err(std::io::Error::from(err.unwrap_err()))
}

/// A private, read-only, nosuid, nodev bind mount of the running binary
/// (detached, close-on-exec): exec'ing it (`execveat` on it, or the path
/// `/proc/self/fd/N`) starts the program with a read-only `/proc/self/exe`,
/// as [`reexec_read_only`] does for the calling process itself. Needs
/// open_tree/mount_setattr (Linux 5.12+).
pub fn read_only_exe() -> std::io::Result<OwnedFd> {
    let path = c"/proc/self/exe";
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path and flags, and
    // returns a new descriptor (a detached bind mount of the binary).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: 0x1 | 0x2 | 0x4, // MOUNT_ATTR_RDONLY | NOSUID | NODEV
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (size given) and the empty path.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_trampoline_does_not_cover_is_re_executed() {
        let mut json = crate::spec_template::default_spec_json(false);
        let spec: Spec = serde_json::from_value(json.clone()).unwrap();
        let covered = crate::trampoline::available();
        assert_eq!(needs_reexec(Intent::Create(Some(&spec))), !covered);
        assert_eq!(needs_reexec(Intent::CreateIsolated), !covered);
        json["hooks"] = serde_json::json!({"startContainer": [{"path": "/bin/true"}]});
        let hooked: Spec = serde_json::from_value(json).unwrap();
        assert!(needs_reexec(Intent::Create(Some(&hooked))));
        assert!(needs_reexec(Intent::Create(None)));
        assert!(needs_reexec(Intent::Exec));
        assert!(!needs_reexec(Intent::Other));
    }
}
