//! Small safe wrappers around the few system calls that need `unsafe`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::ForkResult;

/// `fork(2)`.
///
/// The child only runs the runtime's own setup code and then execs or
/// `_exit`s. berth-runtime is single-threaded when it forks; a library
/// caller with more threads gets glibc's fork, which keeps malloc usable in
/// the child, but must not hold other locks the child needs.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: see above: the child never relies on state another thread
    // could have left locked, other than malloc which glibc's fork resets.
    unsafe { nix::unistd::fork() }
}

/// `_exit(2)`: leaves the process at once, without running destructors or
/// atexit handlers (which belong to the parent's copy of the state).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Marks every descriptor from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`), so nothing of the runtime leaks into the
/// container process (CVE-2024-21626 class).
pub(crate) fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range only changes descriptor flags of this process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|_| Errno::last())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first as i32 {
            // SAFETY: F_SETFD only changes the flags of a descriptor number;
            // a number that was the directory iterator's is already closed.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Clears close-on-exec on `fd` (for --preserve-fds).
/// In a forked child: makes `fds` its stdin, stdout and stderr (dup2
/// clears close-on-exec on the copies).
pub(crate) fn dup_stdio(fds: &[std::os::fd::OwnedFd; 3]) -> std::result::Result<(), String> {
    use std::os::fd::AsRawFd;
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 onto a standard descriptor; `fd` is open (borrowed
        // from the caller's options) and the kernel closes the old target.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
            return Err(format!(
                "cannot make the given descriptor the process's fd {target}: {}",
                nix::errno::Errno::last()
            ));
        }
    }
    Ok(())
}

pub(crate) fn clear_cloexec(fd: i32) -> nix::Result<()> {
    // SAFETY: F_SETFD only changes the flags of the descriptor number.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    Errno::result(ret).map(drop)
}

/// `setdomainname(2)`.
pub(crate) fn setdomainname(name: &str) -> nix::Result<()> {
    let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the pointer and length describe a live buffer.
    let ret = unsafe { libc::setdomainname(c.as_ptr(), name.len()) };
    Errno::result(ret).map(drop)
}

/// `/proc/self/fd/N` for a descriptor: the path to hand to calls (mount)
/// that take a path, so they act on exactly the object the fd refers to.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `pidfd_open(2)`, or None on kernels without it.
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ret as i32) })
}

/// Sends `sig` through a pidfd (immune to pid reuse).
pub fn pidfd_send_signal(pidfd: impl AsFd, sig: i32) -> nix::Result<()> {
    // SAFETY: the pidfd is a live descriptor; no siginfo is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_fd().as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// Gives the process a new anonymous session keyring (what runc does unless
/// --no-new-keyring), so containers do not share the host's keys. Errors
/// (no keyring support, quota) are ignored like runc does.
pub(crate) fn join_session_keyring() {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for a new anonymous keyring; no memory of
    // ours is passed.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        );
    }
}

/// Makes the calling process a child subreaper, so orphans it created (a
/// container init whose intermediate parent exited) become its children and
/// can be waited for.
pub fn set_child_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Like [`fork`], but the child starts in the cgroup2 directory `cg`
/// (clone3 with CLONE_INTO_CGROUP): no migration, so none of the global
/// lock and RCU grace period a cgroup.procs write costs. Falls back to a
/// plain fork (returning `false`) on kernels without it. Only for a
/// single-threaded caller: a raw clone3 skips what glibc's fork does in a
/// multithreaded process, taking the malloc arena locks before the fork and
/// resetting them in the child, so a lock another thread held at that
/// moment would stay locked in the child, which allocates (and forks
/// again) before it execs, and would wait on it forever.
pub(crate) fn clone_into_cgroup(cg: BorrowedFd<'_>) -> nix::Result<(ForkResult, bool)> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork: the child gets a
    // copy of this address space and returns here with 0; see `fork` for
    // what the child may rely on.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => Ok((ForkResult::Child, true)),
        pid if pid > 0 => Ok((
            ForkResult::Parent {
                child: nix::unistd::Pid::from_raw(pid as i32),
            },
            true,
        )),
        _ => match Errno::last() {
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL => fork().map(|r| (r, false)),
            e => Err(e),
        },
    }
}

/// Whether this process runs one thread only (`num_threads` in
/// /proc/self/stat; false when unreadable). A single-threaded process
/// cannot gain a thread while it asks: only its own thread could start one.
pub(crate) fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/stat").is_ok_and(|stat| {
        // Fields after the command name, which ends at the last ')':
        // state is field 3, num_threads field 20.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(17))
            == Some("1")
    })
}

extern "C" fn exit_handler(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// Installs handlers that `_exit(128+sig)` on SIGTERM, SIGINT, SIGHUP,
/// SIGQUIT, SIGUSR1 and SIGUSR2 (execve resets them to the default).
pub(crate) fn exit_on_terminating_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(exit_handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only calls the async-signal-safe _exit.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Brings the loopback interface of the calling process's network
/// namespace up (runc does this for every new network namespace).
pub fn loopback_up() -> nix::Result<()> {
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS fills the live ifreq `req` points to.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS just set.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads the live ifreq `req` points to.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw clone3 is only used where it is safe: the test harness runs
    /// more than one thread, a forked child of it runs one.
    #[test]
    fn single_threaded_counts_the_threads_of_this_process() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || stopped.recv());
        assert!(!single_threaded(), "two threads run here");
        match fork().expect("fork") {
            ForkResult::Child => exit_now(if single_threaded() { 0 } else { 1 }),
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the forked child runs a single thread"
                );
            }
        }
        drop(stop);
        let _ = other.join();
    }
}
