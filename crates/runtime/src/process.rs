//! The container process's credentials and environment: rlimits, user and
//! groups, the five capability sets, no_new_privs, cwd, executable lookup
//! and the final execve. Prepared in the parent, applied in the child.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::error::{Error, Result};
use crate::seccomp::Filter;

/// The five capability sets of the process.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub permitted: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// A process ready to be applied in a forked child without further parsing.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_env: String,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub caps: Option<CapSets>,
    pub no_new_privs: bool,
    /// process.consoleSize as (rows, cols), when both are non-zero.
    pub console_size: Option<(u16, u16)>,
    pub preserve_fds: u32,
    /// I/O priority, scheduler, personality, memory policy, LSM labels.
    pub attrs: crate::process_attrs::Attrs,
}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Init(format!("{what} {s:?} contains a NUL byte")))
}

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

fn capset(set: &Option<oci_spec::runtime::Capabilities>, field: &str) -> Result<CapsHashSet> {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: Capability = name.parse().map_err(|_| {
            Error::Init(format!(
                "{field}: capability {name} is not known to this kernel interface"
            ))
        })?;
        out.insert(cap);
    }
    Ok(out)
}

/// Turns a spec process (in a container configured by `linux`) into what
/// the child applies.
pub(crate) fn prepare(
    p: &Process,
    linux: Option<&oci_spec::runtime::Linux>,
    preserve_fds: u32,
) -> Result<Prepared> {
    let args = p.args().clone().unwrap_or_default();
    let env = p.env().clone().unwrap_or_default();
    let path_env = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let caps = match p.capabilities() {
        None => None,
        Some(c) => Some(CapSets {
            bounding: capset(c.bounding(), "process.capabilities.bounding")?,
            effective: capset(c.effective(), "process.capabilities.effective")?,
            inheritable: capset(c.inheritable(), "process.capabilities.inheritable")?,
            permitted: capset(c.permitted(), "process.capabilities.permitted")?,
            ambient: capset(c.ambient(), "process.capabilities.ambient")?,
        }),
    };
    Ok(Prepared {
        argv: args
            .iter()
            .map(|a| cstr(a, "process.args"))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|e| cstr(e, "process.env"))
            .collect::<Result<_>>()?,
        path_env,
        cwd: p.cwd().clone(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        groups: p.user().additional_gids().clone().unwrap_or_default(),
        umask: p.user().umask(),
        rlimits: p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (resource(r.typ()), r.soft(), r.hard()))
            .collect(),
        caps,
        console_size: p
            .console_size()
            .as_ref()
            .map(|b| {
                (
                    b.height().min(u16::MAX as u64) as u16,
                    b.width().min(u16::MAX as u64) as u16,
                )
            })
            .filter(|(r, c)| *r > 0 && *c > 0),
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        preserve_fds,
        attrs: crate::process_attrs::Attrs::prepare(p, linux),
    })
}

type CResult<T> = std::result::Result<T, String>;

/// Applies the scheduling and LSM attributes (see `process_attrs.rs`), the
/// rlimits, then the bounding set, groups, gid, uid, the other
/// capability sets, umask, no_new_privs and the cwd (in that order: each
/// step needs the privileges the next one drops). Returns the seccomp
/// listener when the filter has SCMP_ACT_NOTIFY rules.
pub(crate) fn apply(p: &Prepared, seccomp: Option<&Filter>) -> CResult<Option<OwnedFd>> {
    let mut listener = None;
    p.attrs.apply()?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it
    // while the capabilities are still there (as runc does).
    if let (Some(f), false) = (seccomp, p.no_new_privs) {
        listener = f.load()?;
    }
    for (r, soft, hard) in &p.rlimits {
        setrlimit(*r, *soft, *hard)
            .map_err(|e| format!("setrlimit {r:?} soft {soft} hard {hard}: {e}"))?;
    }
    if let Some(c) = &p.caps {
        for cap in caps::all() {
            if !c.bounding.contains(&cap) {
                match caps::drop(None, CapSet::Bounding, cap) {
                    Ok(()) => {}
                    // A capability newer than this kernel: nothing to drop.
                    Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
                    Err(e) => return Err(format!("cannot drop {cap} from the bounding set: {e}")),
                }
            }
        }
        nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    }
    let groups: Vec<Gid> = p.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        // setgroups is denied in a user namespace with "deny" in setgroups.
        Err(nix::errno::Errno::EPERM) if groups.is_empty() => {}
        Err(e) => return Err(format!("setgroups {:?}: {e}", p.groups)),
    }
    let gid = Gid::from_raw(p.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", p.gid))?;
    let uid = Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", p.uid))?;
    if let Some(c) = &p.caps {
        caps::set(None, CapSet::Inheritable, &c.inheritable)
            .map_err(|e| format!("cannot set the inheritable capabilities: {e}"))?;
        // Effective before permitted: the kernel wants effective ⊆ permitted
        // after every capset.
        caps::set(None, CapSet::Effective, &c.effective)
            .map_err(|e| format!("cannot set the effective capabilities: {e}"))?;
        caps::set(None, CapSet::Permitted, &c.permitted).map_err(|e| {
            format!("cannot set the permitted capabilities (effective ones must also be permitted): {e}")
        })?;
        let _ = caps::clear(None, CapSet::Ambient);
        for cap in &c.ambient {
            // Like runc: an ambient capability also needs to be permitted and
            // inheritable; the kernel refuses the others, which are skipped.
            let _ = caps::raise(None, CapSet::Ambient, *cap);
        }
        let _ = nix::sys::prctl::set_keepcaps(false);
    }
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    }
    nix::unistd::chdir(&p.cwd)
        .map_err(|e| format!("cannot chdir to the process cwd {}: {e}", p.cwd.display()))?;
    // The cwd must be inside the container's root (CVE-2024-21626 class: a
    // cwd like /proc/self/fd/N could name a directory outside it). getcwd
    // fails with ENOENT for a directory unreachable from the root.
    match nix::unistd::getcwd() {
        Ok(_) => {}
        Err(Errno::ENOENT) => {
            return Err(format!(
                "process cwd {} is outside the container's root filesystem",
                p.cwd.display()
            ))
        }
        // Without no_new_privs the seccomp filter is already loaded here.
        Err(e) => {
            return Err(format!(
                "cannot check the process cwd {} with getcwd: {e} (without process.noNewPrivileges the seccomp filter is loaded before this check: a profile denying getcwd needs noNewPrivileges)",
                p.cwd.display()
            ))
        }
    }
    // With no_new_privs: as late as possible, so the profile needs to allow
    // few of the runtime's own syscalls.
    if let (Some(f), true) = (seccomp, p.no_new_privs) {
        listener = f.load()?;
    }
    Ok(listener)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the program of argv[0] like execvp, with the container's PATH.
pub(crate) fn lookup(p: &Prepared) -> CResult<CString> {
    let arg0 = p.argv.first().ok_or("process.args is empty")?;
    let name = Path::new(std::ffi::OsStr::from_bytes(arg0.as_bytes()));
    if arg0.as_bytes().contains(&b'/') {
        if is_executable(name) {
            return Ok(arg0.clone());
        }
        return Err(format!("exec: {:?}: no such executable file", name));
    }
    for dir in p.path_env.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(name);
        if is_executable(&candidate) {
            return CString::new(candidate.as_os_str().as_bytes()).map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "exec: {:?}: executable file not found in $PATH",
        name.display().to_string()
    ))
}

/// In a forked child: applies the process's credentials and limits, finds
/// its program and makes the pty slave (if any) the controlling terminal.
/// Returns the program to exec (see [`exec`]) and the seccomp listener, if
/// any (see `seccomp::notify`).
pub(crate) fn become_process(
    p: &Prepared,
    seccomp: Option<&Filter>,
    slave: Option<OwnedFd>,
) -> CResult<(CString, Option<OwnedFd>)> {
    let listener = apply(p, seccomp)?;
    let program = lookup(p)?;
    if let Some(s) = &slave {
        crate::console::make_controlling_terminal(s).map_err(|e| e.to_string())?;
    }
    Ok((program, listener))
}

/// Marks every runtime fd close-on-exec (keeping 0-2 and the preserved
/// ones) and execs. Returns only on failure.
pub(crate) fn exec(p: &Prepared, program: &CString) -> String {
    if let Err(e) = keep_only_preserved_fds(p) {
        return e;
    }
    match nix::unistd::execve(program, &p.argv, &p.envp) {
        Ok(never) => match never {},
        Err(e) => exec_error(
            &program.to_string_lossy(),
            e,
            strings_size(&p.argv),
            strings_size(&p.envp),
        ),
    }
}

/// The bytes `strings` take on the new process's stack (each with its NUL).
pub(crate) fn strings_size(strings: &[CString]) -> usize {
    strings.iter().map(|s| s.as_bytes_with_nul().len()).sum()
}

/// The message for an execve of `program` that failed with `err`, given
/// the size in bytes of its arguments and environment. E2BIG is the
/// kernel's limit on those two together (a quarter of the stack rlimit,
/// and 128 KiB for any one string), so it is said in those terms.
pub(crate) fn exec_error(program: &str, err: Errno, args: usize, env: usize) -> String {
    match err {
        Errno::E2BIG => format!(
            "exec {program:?}: the arguments ({args} bytes) and environment ({env} bytes) are too large for the kernel (E2BIG: together at most a quarter of the stack limit, at most 128 KiB for one string); shorten process.args or process.env"
        ),
        err => format!("exec {program:?}: {err}"),
    }
}

/// [`exec`] through the exec trampoline, which reports a failed exec of
/// `program` on `report`.
pub(crate) fn exec_via_trampoline(
    p: &Prepared,
    program: &CString,
    trampoline: &crate::trampoline::Trampoline,
    report: std::os::fd::BorrowedFd<'_>,
) -> String {
    if let Err(e) = keep_only_preserved_fds(p) {
        return e;
    }
    trampoline.exec(report, 3 + p.preserve_fds, program, &p.argv, &p.envp)
}

/// Marks every descriptor but stdio and the preserved ones close-on-exec.
fn keep_only_preserved_fds(p: &Prepared) -> std::result::Result<(), String> {
    let first = 3 + p.preserve_fds;
    crate::sys::cloexec_from(first)
        .map_err(|e| format!("cannot mark runtime descriptors close-on-exec: {e}"))?;
    for fd in 3..first {
        let _ = crate::sys::clear_cloexec(fd as i32);
    }
    Ok(())
}
