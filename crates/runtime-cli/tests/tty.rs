//! A terminal without `--console-socket`: `run` and foreground `exec -t`
//! take the pty master themselves and proxy it to their own stdio (runc's
//! behaviour), forwarding window resizes. The runtime's stdio here is the
//! slave of a pty this test holds the master of, as a user's shell would.

use berth_testutil::runtime::*;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};

/// A pty (master as a File) with the given window size, and its slave.
fn pty(rows: u16, cols: u16) -> (File, OwnedFd) {
    let (master, slave) = berth_runtime::console::new_pty().expect("pty");
    berth_runtime::console::set_window_size(&master, rows, cols).expect("TIOCSWINSZ");
    (File::from(master), slave)
}

/// Starts berth-runtime with the pty slave as stdin, stdout and stderr; the
/// test's copy of the slave is closed so reads of the master end (EIO) when
/// the runtime is gone.
fn spawn_on(rt: &Rt, slave: OwnedFd, args: &[&str]) -> Child {
    let dup = |f: &OwnedFd| Stdio::from(f.try_clone().expect("dup slave"));
    let child = rt
        .command(args)
        .stdin(dup(&slave))
        .stdout(dup(&slave))
        .stderr(dup(&slave))
        .spawn()
        .expect("spawn berth-runtime");
    drop(slave);
    child
}

/// Reads from the master until `want` shows up or the slave side is gone.
fn read_until(master: &mut File, seen: &mut String, want: &str) {
    let mut buf = [0u8; 1024];
    while !seen.contains(want) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// Issue 2.5: `run` proxies the pty and forwards resizes: on SIGWINCH it
/// copies its terminal's new size to the container's pty (the kernel then
/// signals the container's foreground process group). Without that the
/// container kept the initial size. Deterministic: the signal is sent before
/// the newline the container waits for, so the runtime handles it before it
/// can read and forward that newline.
#[test]
fn run_forwards_window_resizes_to_the_container_pty() {
    let rt = Rt::new();
    let mut spec = default_spec(&["sh", "-c", "stty size || exit 9; read x; stty size; exit 3"]);
    spec["process"]["terminal"] = json!(true);
    let bundle = Bundle::new(&spec);
    let (mut master, slave) = pty(24, 80);
    let id = unique_id("winch");
    let b = bundle.path().to_str().unwrap();
    let mut child = spawn_on(&rt, slave, &["run", "--bundle", b, &id]);
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "24 80");
    assert!(seen.contains("24 80"), "initial size not applied: {seen:?}");
    let m = OwnedFd::from(master.try_clone().unwrap());
    berth_runtime::console::set_window_size(&m, 50, 132).expect("resize");
    let kill = std::process::Command::new("kill")
        .args(["-WINCH", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    master.write_all(b"\n").unwrap();
    read_until(&mut master, &mut seen, "50 132");
    let status = child.wait().unwrap();
    assert!(seen.contains("50 132"), "resize not forwarded: {seen:?}");
    assert_eq!(status.code(), Some(3), "{seen}");
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

/// Issue 2.5: `exec -t` without `--console-socket` in the foreground gets a
/// terminal proxied to the caller's stdio, like runc (it was refused).
#[test]
fn exec_with_a_tty_and_no_console_socket_proxies_the_pty() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("exectty");
    rt.up(&bundle, &id, true);
    let (mut master, slave) = pty(30, 100);
    let mut child = spawn_on(
        &rt,
        slave,
        &["exec", "-t", &id, "sh", "-c", "tty; stty size; exit 5"],
    );
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "\u{0}never");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{seen}");
    assert!(seen.contains("/dev/pts/"), "not a terminal: {seen:?}");
    assert!(seen.contains("30 100"), "size not copied: {seen:?}");
    // Detached, a terminal still needs a console socket (runc's rule).
    let err = rt.fails_with(&["exec", "-d", "-t", &id, "true"], 255);
    assert!(err.contains("console socket"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

/// The end of the runtime's stdin reaches a process on a proxied terminal
/// as the terminal's EOF character (^D), so a program reading it ends (it
/// used to wait forever).
#[test]
fn the_end_of_stdin_reaches_a_terminal_container_as_eof() {
    let rt = Rt::new();
    let mut spec = default_spec(&["sh", "-c", "cat; echo after-eof; exit 6"]);
    spec["process"]["terminal"] = json!(true);
    let bundle = Bundle::new(&spec);
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 6, "{err}");
    assert_eq!(out, "after-eof\r\n");
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}
