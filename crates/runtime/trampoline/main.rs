//! The exec trampoline: a libc-free static program of about 1 KiB that the
//! container's init execs, from a sealed memfd, to exec the container's
//! process (the CVE-2019-5736 defence without re-executing the runtime).
//!
//! While the init runs the runtime's code its `/proc/self/exe` is the host's
//! runtime binary. If it exec'd the user's program directly, a program that
//! is a `#!/proc/self/exe` script would make the kernel run the host binary
//! as the container's process, where the container could reopen it for
//! writing once it exits. Exec'ing this trampoline first makes
//! `/proc/self/exe` a sealed, per-container memfd at the moment the user's
//! program is exec'd. It costs one exec of a tiny static file instead of a
//! second start of the runtime (dynamic loader and glibc's CPU probing).
//!
//! Protocol: `argv = [name, REPORT_FD, PROGRAM, ARGV0, ARGS...]`, the
//! environment is the program's. The trampoline marks REPORT_FD
//! close-on-exec (so nothing of the runtime reaches the program) and execs
//! PROGRAM with `[ARGV0, ARGS...]`. If that fails it writes `X<errno>` to
//! REPORT_FD and exits 127. Any other argv (e.g. run as a script
//! interpreter) exits 127 at once.
//!
//! Built by crates/runtime/build.rs with `rustc`, not cargo: x86_64 only.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

const SYS_WRITE: usize = 1;
const SYS_FCNTL: usize = 72;
const SYS_EXECVE: usize = 59;
const SYS_EXIT: usize = 60;
const F_SETFD: usize = 2;
const FD_CLOEXEC: usize = 1;

// The kernel enters at _start with argc at the stack pointer, then argv,
// NULL, envp, NULL: hand that pointer to `start` on an aligned stack.
global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

/// A raw system call with up to three arguments; returns -errno on failure.
unsafe fn syscall3(nr: usize, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    // SAFETY (caller): the arguments are valid for the system call `nr`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn exit(code: usize) -> ! {
    // SAFETY: exit takes a plain integer and does not return.
    unsafe { syscall3(SYS_EXIT, code, 0, 0) };
    loop {}
}

/// Parses a NUL-terminated decimal descriptor number.
///
/// # Safety
/// `s` points to a NUL-terminated string.
unsafe fn parse_fd(s: *const u8) -> Option<usize> {
    let mut n: usize = 0;
    let mut i = 0;
    loop {
        // SAFETY: the string is NUL-terminated and we stop at the NUL.
        let c = unsafe { *s.add(i) };
        if c == 0 {
            return if i > 0 { Some(n) } else { None };
        }
        if !(b'0'..=b'9').contains(&c) || i >= 9 {
            return None;
        }
        n = n * 10 + (c - b'0') as usize;
        i += 1;
    }
}

/// # Safety
/// `sp` is the initial stack pointer the kernel set up for this process.
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the initial stack holds argc, then argc argv pointers and a
    // NULL, then the environment pointers and a NULL.
    unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let envp = argv.add(argc + 1);
        if argc < 4 {
            exit(127);
        }
        let Some(fd) = parse_fd(*argv.add(1)) else {
            exit(127);
        };
        if syscall3(SYS_FCNTL, fd, F_SETFD, FD_CLOEXEC) < 0 {
            exit(127);
        }
        let err = -syscall3(
            SYS_EXECVE,
            *argv.add(2) as usize,
            argv.add(3) as usize,
            envp as usize,
        );
        // "X" and the errno in decimal (errno is at most 4095).
        let err = err as usize;
        let msg = [
            b'X',
            b'0' + (err / 1000 % 10) as u8,
            b'0' + (err / 100 % 10) as u8,
            b'0' + (err / 10 % 10) as u8,
            b'0' + (err % 10) as u8,
        ];
        let len = msg.len();
        syscall3(SYS_WRITE, fd, msg.as_ptr() as usize, len);
        exit(127)
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(127)
}
