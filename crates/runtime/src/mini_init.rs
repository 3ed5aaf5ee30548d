//! A minimal init for pid 1 of a container (`berth run --init`): it forks
//! and execs the container's command, forwards every signal it gets to that
//! child, reaps every process that ends under it (orphans are reparented to
//! pid 1), and exits with the child's exit code (128+signal when it was
//! killed) once the child has ended.
//!
//! A process that is pid 1 of a pid namespace gets no signal it has no
//! handler for; a shell or a server there would ignore `berth stop`'s
//! SIGTERM and leave the zombies of its orphans. This init blocks every
//! signal and takes them with sigwait, so none is lost.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// Runs `argv` (the program, found in PATH, and its arguments) under the
/// init and returns the exit code for this process. Errors before the
/// program runs are printed and give 127 (126 when the program exists but
/// cannot be executed), as a shell does.
pub fn run(argv: &[OsString]) -> i32 {
    let Some(program) = argv.first() else {
        eprintln!("berth init: no command to run");
        return 127;
    };
    let args: Vec<CString> = match argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(_) => {
            eprintln!("berth init: an argument contains a NUL byte");
            return 127;
        }
    };
    let all = SigSet::all();
    let mut old = SigSet::empty();
    if let Err(e) =
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old))
    {
        eprintln!("berth init: cannot block signals: {e}");
        return 127;
    }
    let child = match crate::sys::fork() {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let err = nix::unistd::execvp(&args[0], &args).unwrap_err();
            eprintln!(
                "berth init: cannot run {}: {err}",
                program.to_string_lossy()
            );
            crate::sys::exit_now(if err == Errno::ENOENT { 127 } else { 126 })
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("berth init: cannot fork: {e}");
            return 127;
        }
    };
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        if let Some(code) = reap_all(child) {
            return code;
        }
    }
}

/// Reaps every ended process; the exit code of `child` once it is one.
fn reap_all(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, c)) if pid == child => code = Some(c),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => code = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return code,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return code,
        }
    }
}
