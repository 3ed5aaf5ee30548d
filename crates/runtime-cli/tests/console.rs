//! End-to-end console tests: `create --console-socket` with
//! `process.terminal: true` sends a pty master over the socket (runc's
//! protocol), the container's stdio is that terminal, and its I/O flows
//! through the master. Checked against runc 1.1.5 with
//! `BERTH_TEST_RUNTIME=/usr/sbin/runc`.
//!
//! `console_size_is_applied` failed until 30d8169 applied
//! `process.consoleSize` with `console::set_window_size`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use berth_runtime::console::{recv_master, ConsoleError};

use berth_testutil::runtime::*;

/// Reads from the master until `want` shows up or the slave side is gone
/// (EIO once every process holding it has exited).
fn read_until(master: &mut File, want: &str) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&all).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

type Receiver = std::thread::JoinHandle<Result<(OwnedFd, String), ConsoleError>>;

/// Listens on a fresh console socket in the background.
fn listen(rt: &Rt) -> (PathBuf, Receiver) {
    let sock = rt.path(&format!("console-{}.sock", berth_testutil::unique_id("s")));
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    (
        sock.clone(),
        std::thread::spawn(move || recv_master(&listener)),
    )
}

/// The master the runtime sent. It must have been sent by the time the
/// runtime command returned; if nothing connected, connect ourselves so the
/// receiver fails instead of hanging.
fn received(sock: &Path, receiver: Receiver) -> (OwnedFd, String) {
    if !receiver.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if !receiver.is_finished() {
            let _ = std::os::unix::net::UnixStream::connect(sock);
        }
    }
    receiver
        .join()
        .expect("receiver thread")
        .expect("the runtime sends a pty master with SCM_RIGHTS")
}

/// Creates a container running `spec` on a terminal with
/// `--console-socket`: returns its id, the pty master it sent (and the name
/// sent with it) and the bundle, which must outlive the container.
fn create_on_console(
    rt: &Rt,
    mut spec: serde_json::Value,
) -> (String, File, String, berth_testutil::Bundle) {
    spec["process"]["terminal"] = serde_json::json!(true);
    let bundle = berth_testutil::Bundle::new(&spec);
    let (sock, receiver) = listen(rt);
    let id = berth_testutil::unique_id("console");
    let out = rt.create(
        &id,
        bundle.path(),
        &["--console-socket", sock.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (master, name) = received(&sock, receiver);
    (id, File::from(master), name, bundle)
}

fn terminal_bundle(script: &str) -> berth_testutil::Bundle {
    let mut spec = berth_testutil::default_spec(&["sh", "-c", script]);
    spec["process"]["terminal"] = serde_json::json!(true);
    berth_testutil::Bundle::new(&spec)
}

#[test]
fn console_socket_receives_a_working_pty_master() {
    let rt = Rt::new();
    let (id, mut master, name, _bundle) = create_on_console(
        &rt,
        berth_testutil::default_spec(&[
            "sh",
            "-c",
            "if [ -t 0 ] && [ -t 1 ]; then echo STDIN_IS_A_TTY; else echo NOT_A_TTY; fi; \
             read line; echo \"got:$line\"",
        ]),
    );
    assert!(!name.is_empty(), "runc sends the master's name as payload");

    rt.ok(&["start", &id]);
    let first = read_until(&mut master, "TTY");
    assert!(
        first.contains("STDIN_IS_A_TTY"),
        "container output: {first:?}"
    );
    master.write_all(b"hello-through-the-pty\n").unwrap();
    let rest = read_until(&mut master, "got:hello-through-the-pty");
    assert!(
        rest.contains("got:hello-through-the-pty"),
        "container output: {rest:?}"
    );
    rt.wait_stopped(&id);
    rt.ok(&["delete", &id]);
}

#[test]
fn console_size_is_applied() {
    let rt = Rt::new();
    let mut spec = berth_testutil::default_spec(&["sh", "-c", "echo \"size=$(stty size)\""]);
    spec["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 100});
    let (id, mut master, _, _bundle) = create_on_console(&rt, spec);
    rt.ok(&["start", &id]);
    let output = read_until(&mut master, "size=");
    let output = output + &read_until(&mut master, "\n");
    assert!(
        output.contains("size=40 100"),
        "process.consoleSize 40x100 not applied to the pty: {output:?}"
    );
}

#[test]
fn exec_tty_sends_its_own_pty_master() {
    let rt = Rt::new();
    let bundle = berth_testutil::Bundle::new(&berth_testutil::default_spec(&["sleep", "1000"]));
    let id = berth_testutil::unique_id("console-exec");
    rt.start_new(&id, bundle.path());
    let (sock, receiver) = listen(&rt);
    let out = rt.output(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "if [ -t 0 ]; then echo EXEC_HAS_A_TTY; else echo EXEC_NO_TTY; fi; read l; echo \"exec-got:$l\"",
    ]);
    assert!(
        out.status.success(),
        "exec --tty: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (master, _) = received(&sock, receiver);
    let mut master = File::from(master);
    let first = read_until(&mut master, "TTY");
    assert!(first.contains("EXEC_HAS_A_TTY"), "exec output: {first:?}");
    master.write_all(b"typed-into-exec\n").unwrap();
    let rest = read_until(&mut master, "exec-got:typed-into-exec");
    assert!(
        rest.contains("exec-got:typed-into-exec"),
        "exec output: {rest:?}"
    );
}

#[test]
fn terminal_without_console_socket_is_refused() {
    let rt = Rt::new();
    let bundle = terminal_bundle("true");
    let id = berth_testutil::unique_id("console-nosock");
    let out = rt.create(&id, bundle.path(), &[]);
    assert!(
        !out.status.success(),
        "create with terminal=true and no --console-socket must fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("console"),
        "error should name the console socket: {stderr}"
    );
    assert!(rt.try_state(&id).is_none());
}

#[test]
fn missing_console_socket_is_named() {
    let rt = Rt::new();
    let bundle = terminal_bundle("true");
    let id = berth_testutil::unique_id("console-missing");
    let sock = rt.path("nobody-listens.sock");
    let out = rt.create(
        &id,
        bundle.path(),
        &["--console-socket", sock.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nobody-listens.sock"), "{stderr}");
    assert!(rt.try_state(&id).is_none());
}
