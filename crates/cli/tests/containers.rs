//! End-to-end tests of detached containers: `berth run -d` under its
//! monitor, and ps, logs, exec, stop, kill, start, restart, rm, wait,
//! attach, inspect and container prune on them, with a busybox image made
//! with `berth import`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use common::{Env, Terminal};
use serde_json::Value;

/// Removes (killing) every container of the test's data root when the test
/// ends, passed or not, so no monitor or container outlives it.
struct Containers<'a>(&'a Env);

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for rec in self.0.container_records() {
            if let Some(id) = rec["id"].as_str() {
                let _ = self.0.berth(&["rm", "-f", id]);
            }
        }
    }
}

/// A data root with the busybox image `bb`.
fn setup() -> Env {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    env
}

/// `berth inspect NAME` as JSON.
fn inspect(env: &Env, name: &str) -> Value {
    let out = env.ok(&["inspect", name]);
    let list: Value = serde_json::from_str(&out).expect("inspect JSON");
    list[0].clone()
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    pid > 0
        && stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// A shell loop that runs until SIGTERM (pid 1 ignores it otherwise).
const SERVE: &str = "trap 'exit 3' TERM; echo hello; echo oops >&2; while true; do sleep 0.1; done";

#[test]
fn a_detached_container_outlives_its_cli_and_shows_in_ps_logs_and_inspect() {
    let env = setup();
    let _c = Containers(&env);
    // The CLI runs in a process group of its own, killed whole afterwards
    // (what closing its terminal does): the container must not notice.
    let out = env
        .command(&["run", "-d", "--name", "web", "bb", "sh", "-c", SERVE])
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .expect("run berth");
    let id = env.stdout_of(&out, 0).trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "run -d prints the id: {id:?}"
    );
    let pid = inspect(&env, "web")["State"]["Pid"].as_i64().unwrap();
    assert!(alive(pid), "the container's process runs");

    // An attached CLI killed with SIGKILL leaves it running too.
    let mut attach = env
        .command(&["attach", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn attach");
    attach.kill().expect("SIGKILL attach");
    attach.wait().unwrap();

    let ps = env.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains(&id[..12]), "{ps}");
    assert!(ps.contains("Up "), "{ps}");
    assert_eq!(env.ok(&["ps", "-q"]), format!("{}\n", &id[..12]));
    let json: Value = serde_json::from_str(&env.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(json[0]["State"], "running");
    assert_eq!(json[0]["Names"][0], "web");

    // run -d returns once the process started, not once it printed.
    eventually("both lines in the log", || {
        let logs = env.berth(&["logs", "web"]);
        !logs.stdout.is_empty() && !logs.stderr.is_empty()
    });
    let logs = env.berth(&["logs", "web"]);
    assert_eq!(env.stdout_of(&logs, 0), "hello\n");
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "oops\n");
    let stamped = env.ok(&["logs", "-t", &id[..6]]);
    assert!(
        stamped.ends_with(" hello\n") && stamped.starts_with("20"),
        "{stamped}"
    );

    let state = inspect(&env, &id[..8]);
    assert_eq!(state["Name"], "web");
    assert_eq!(state["State"]["Running"], true);

    assert_eq!(env.ok(&["stop", "web"]), "web\n");
    assert!(!alive(pid), "stop ended the process");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    assert_eq!(
        env.ok(&["ps", "-q"]),
        "",
        "ps without -a lists running ones"
    );
    assert_eq!(inspect(&env, "web")["State"]["ExitCode"], 3);
    env.ok(&["rm", "web"]);
    env.assert_no_containers_left();
}

#[test]
fn stop_kills_a_process_that_ignores_sigterm_after_the_timeout() {
    let env = setup();
    let _c = Containers(&env);
    let script = "trap '' TERM; while true; do sleep 0.1; done";
    env.ok(&["run", "-d", "--name", "stubborn", "bb", "sh", "-c", script]);
    env.ok(&["stop", "-t", "1", "stubborn"]);
    let ps = env.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited (137)"),
        "SIGKILL after the timeout: {ps}"
    );
    let state = inspect(&env, "stubborn")["State"].clone();
    assert_eq!(
        (state["ExitCode"].as_i64(), state["Running"].as_bool()),
        (Some(137), Some(false))
    );
    env.ok(&["rm", "stubborn"]);
    env.assert_no_containers_left();
}

#[test]
fn stop_with_a_timeout_too_long_for_a_clock_waits_without_a_deadline() {
    let env = setup();
    let _c = Containers(&env);
    let script = "trap 'exit 7' TERM; while true; do sleep 0.1; done";
    env.ok(&["run", "-d", "--name", "patient", "bb", "sh", "-c", script]);
    env.ok(&["stop", "-t", "18446744073709551615", "patient"]);
    assert_eq!(inspect(&env, "patient")["State"]["ExitCode"], 7);
    env.ok(&["rm", "patient"]);
    env.assert_no_containers_left();
}

#[test]
fn logs_follow_new_lines_and_exec_runs_in_the_container() {
    let env = setup();
    let _c = Containers(&env);
    let script = "echo one; while [ ! -e /go ]; do sleep 0.05; done; echo two";
    env.ok(&["run", "-d", "--name", "f", "bb", "sh", "-c", script]);
    let mut follow = env
        .command(&["logs", "-f", "f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn logs -f");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "one");
    // exec shares the container's filesystem and sees its process.
    let out = env.berth(&[
        "exec",
        "f",
        "sh",
        "-c",
        // /go last: the container's init exits after it, killing the
        // exec'd process if it still ran.
        "echo $HOSTNAME; ps -o comm | head -3; touch /go",
    ]);
    let text = env.stdout_of(&out, 0);
    assert!(text.contains("sh"), "{text}");
    assert_eq!(lines.next().unwrap().unwrap(), "two");
    assert!(
        lines.next().is_none(),
        "logs -f ends when the container does"
    );
    assert!(follow.wait().unwrap().success());
    assert_eq!(env.ok(&["wait", "f"]), "0\n");
    assert_eq!(env.ok(&["logs", "--tail", "1", "f"]), "two\n");
    env.ok(&["rm", "f"]);
}

#[test]
fn exec_flags_a_pty_and_podmans_exit_codes() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "--name", "x", "bb", "sleep", "1000"]);
    let out = env.berth(&[
        "exec",
        "-u",
        "1000:1000",
        "-e",
        "A=b",
        "-w",
        "/tmp",
        "x",
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $A $(pwd)",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "1000:1000 b /tmp\n");
    let out = env.berth(&[
        "exec",
        "-it",
        "x",
        "sh",
        "-c",
        "test -t 0 && echo tty $TERM",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "tty xterm\r\n");
    let out = env.berth(&["exec", "x", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", env.describe(&out));
    let out = env.berth(&["exec", "x", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", env.describe(&out));
    env.ok(&["exec", "-d", "x", "touch", "/detached"]);
    env.ok(&["kill", "x"]);
    assert_eq!(env.ok(&["wait", "x"]), "137\n");
    let out = env.berth(&["exec", "x", "true"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "not running: {}",
        env.describe(&out)
    );
    env.ok(&["rm", "x"]);
}

#[test]
fn rm_frees_the_name_and_the_snapshot() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "--name", "keep", "bb", "sh", "-c", "exit 3"]);
    assert_eq!(env.ok(&["wait", "keep"]), "3\n");
    let ps = env.ok(&["ps", "-a", "--format", "json"]);
    let json: Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(
        (json[0]["State"].as_str(), json[0]["ExitCode"].as_i64()),
        (Some("exited"), Some(3))
    );
    let again = env.berth(&["run", "-d", "--name", "keep", "bb", "true"]);
    assert_eq!(
        again.status.code(),
        Some(125),
        "the name is taken: {}",
        env.describe(&again)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already in use"));
    env.ok(&["rm", "keep"]);
    env.assert_no_containers_left();
    env.ok(&["run", "-d", "--name", "keep", "bb", "sleep", "1000"]);
    let out = env.berth(&["rm", "keep"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "running needs -f: {}",
        env.describe(&out)
    );
    env.ok(&["rm", "-f", "keep"]);
    env.assert_no_containers_left();
    let out = env.berth(&["rm", "keep"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
}

#[test]
fn a_killed_monitor_leaves_an_honest_record_and_rm_f_cleans_up() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "--name", "m", "bb", "sleep", "1000"]);
    let rec = env.container_records().pop().unwrap();
    let monitor = rec["owner"][0].as_i64().unwrap();
    let pid = rec["pid"].as_i64().unwrap();
    assert!(alive(monitor) && alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while alive(monitor) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (exit code unknown)"), "{ps}");
    let state = inspect(&env, "m")["State"].clone();
    assert_eq!(state["Running"], false);
    assert!(state["ExitCode"].is_null(), "{state}");
    assert!(
        !alive(pid),
        "the container is not left running unsupervised"
    );
    env.ok(&["rm", "-f", "m"]);
    env.assert_no_containers_left();
}

#[test]
fn start_runs_it_again_and_on_failure_2_restarts_exactly_twice() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "bb",
        "sh",
        "-c",
        "echo run >> /count; wc -l < /count; exit 4",
    ]);
    assert_eq!(env.ok(&["wait", "s"]), "4\n");
    let out = env.berth(&["start", "-a", "s"]);
    assert_eq!(
        env.stdout_of(&out, 4),
        "2\n",
        "the same snapshot: the file grew"
    );
    assert_eq!(env.ok(&["logs", "s"]), "1\n2\n");
    env.ok(&["restart", "s"]);
    assert_eq!(env.ok(&["wait", "s"]), "4\n");

    env.ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo x; exit 1",
    ]);
    assert_eq!(env.ok(&["wait", "r"]), "1\n");
    assert_eq!(env.ok(&["logs", "r"]), "x\nx\nx\n");
    assert_eq!(inspect(&env, "r")["RestartCount"], 2);
    let out = env.berth(&["run", "-d", "--restart", "sometimes", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"sometimes\""));

    env.ok(&["run", "-d", "--name", "up", "bb", "sleep", "1000"]);
    let pruned = env.ok(&["container", "prune"]);
    assert_eq!(pruned.lines().count(), 2, "{pruned}");
    let ps = env.ok(&["ps", "-a", "-q"]);
    assert_eq!(ps.lines().count(), 1, "the running one stays: {ps}");
    env.ok(&["rm", "-f", "up"]);
    env.assert_no_containers_left();
}

#[test]
fn tty_term_workdir_creation_command_not_found_and_loopback() {
    let env = setup();
    let out = env.berth(&["run", "--rm", "-t", "bb", "sh", "-c", "echo $TERM"]);
    assert_eq!(env.stdout_of(&out, 0), "xterm\r\n");
    let out = env.berth(&["run", "--rm", "-w", "/new/dir", "bb", "pwd"]);
    assert_eq!(env.stdout_of(&out, 0), "/new/dir\n");
    let out = env.berth(&["run", "--rm", "bb", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", env.describe(&out));
    let out = env.berth(&["run", "--rm", "bb", "cat", "/sys/class/net/lo/operstate"]);
    assert_eq!(
        env.stdout_of(&out, 0),
        "unknown\n",
        "lo is up (its operstate is unknown)"
    );
    env.assert_no_containers_left();
}

#[test]
fn gc_frees_the_snapshot_of_a_container_whose_record_is_gone() {
    let env = setup();
    let _c = Containers(&env);
    let id = env.ok(&["run", "-d", "--name", "lost", "bb", "true"]);
    let id = id.trim();
    assert_eq!(env.ok(&["wait", "lost"]), "0\n");
    // What a crash between the record's removal and the snapshot's leaves.
    std::fs::remove_dir_all(env.root().join("containers").join(id)).unwrap();
    let out = env.ok(&["gc"]);
    assert!(
        out.contains(&format!(
            "deleted snapshot of a removed container: container-{id}"
        )),
        "{out}"
    );
    env.assert_no_containers_left();
}

#[test]
fn attach_forwards_stdin_of_a_detached_i_container_and_streams_its_output() {
    use std::io::Write;
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "-i", "--name", "cat", "bb", "cat"]);
    let mut attach = env
        .command(&["attach", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attach");
    let mut input = attach.stdin.take().unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    input.write_all(b"first line\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "first line");
    input.write_all(b"second\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    // The end of attach's input ends the container's: cat exits 0, and
    // attach with it, with its exit code.
    drop(input);
    assert!(lines.next().is_none());
    let status = attach.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.ok(&["wait", "cat"]), "0\n");
    assert_eq!(env.ok(&["logs", "cat"]), "first line\nsecond\n");
    // start -a attaches before the container starts: stdin again, and
    // attach's exit code is the container's.
    let mut start = env
        .command(&["start", "-a", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start -a");
    start.stdin.take().unwrap().write_all(b"again\n").unwrap();
    let out = start.wait_with_output().unwrap();
    assert_eq!(env.stdout_of(&out, 0), "again\n");
    // Without -i nothing is forwarded: attach only streams.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "noin",
        "bb",
        "sh",
        "-c",
        "cat; echo done; exit 4",
    ]);
    assert_eq!(env.ok(&["wait", "noin"]), "4\n");
    let mut start = env
        .command(&["start", "-a", "noin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start -a");
    start
        .stdin
        .take()
        .unwrap()
        .write_all(b"not for it\n")
        .unwrap();
    let out = start.wait_with_output().unwrap();
    assert_eq!(
        env.stdout_of(&out, 4),
        "done\n",
        "stdin was /dev/null, not attach's"
    );
    env.ok(&["rm", "cat", "noin"]);
    env.assert_no_containers_left();
}

#[test]
fn attach_to_an_it_container_is_a_terminal_and_ctrl_p_ctrl_q_detaches() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "-it", "--name", "sh", "bb", "sh"]);
    let (mut term, mut attach) = Terminal::spawn(env.command(&["attach", "sh"]), 24, 80);
    // The size of attach's terminal reaches the container's.
    term.type_in(b"stty size; echo x$((6*7))\r");
    term.expect("24 80");
    term.expect("x42");
    // ctrl-p ctrl-q: attach ends, the container runs on.
    term.type_in(b"\x10\x11");
    assert_eq!(attach.wait().unwrap().code(), Some(0));
    let json: Value = serde_json::from_str(&env.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(json[0]["State"], "running");
    // Attach again: the same shell; its exit is attach's exit code.
    let (mut term, mut attach) = Terminal::spawn(env.command(&["attach", "sh"]), 24, 80);
    term.type_in(b"echo again$((1+1)); exit 7\r");
    term.expect("again2");
    assert_eq!(attach.wait().unwrap().code(), Some(7));
    assert_eq!(env.ok(&["wait", "sh"]), "7\n");
    env.ok(&["rm", "sh"]);
    env.assert_no_containers_left();
}

/// SIGKILL to `pid`, then waits until it is gone (reaped by its parent).
fn kill_and_wait(pid: i64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    while alive(pid) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn after_a_simulated_reboot_records_say_exited_and_nothing_stays_mounted() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "--name", "boot", "bb", "sleep", "1000"]);
    env.ok(&["run", "-d", "--name", "crash", "bb", "sleep", "1000"]);
    let records = env.container_records();
    let rec = |name: &str| records.iter().find(|r| r["name"] == name).unwrap().clone();
    let (boot, crash) = (rec("boot"), rec("crash"));
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();
    let rootfs = |r: &Value| env.root().join("run/bundles").join(id(r)).join("rootfs");

    // A reboot: every process gone, every mount gone, the runtime's state
    // (on a tmpfs) gone.
    kill_and_wait(boot["owner"][0].as_i64().unwrap());
    kill_and_wait(boot["pid"].as_i64().unwrap());
    nix::mount::umount2(&rootfs(&boot), nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir_all(env.root().join("run").join(id(&boot))).unwrap();
    // A killed monitor whose runtime state was lost too: its container
    // still runs, its rootfs is still mounted.
    let crash_pid = crash["pid"].as_i64().unwrap();
    kill_and_wait(crash["owner"][0].as_i64().unwrap());
    std::fs::remove_dir_all(env.root().join("run").join(id(&crash))).unwrap();
    assert!(alive(crash_pid));

    let ps = env.ok(&["ps", "-a"]);
    assert_eq!(ps.matches("Exited (exit code unknown)").count(), 2, "{ps}");
    let json: Value = serde_json::from_str(&env.ok(&["ps", "-a", "--format", "json"])).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["State"] == "exited"));
    assert!(
        !alive(crash_pid),
        "the unsupervised container was killed through its cgroup"
    );
    env.assert_no_mounts();
    let cgroup = std::path::Path::new("/sys/fs/cgroup/pids").join(id(&crash));
    assert!(!cgroup.exists(), "its cgroup is gone: {}", cgroup.display());

    // They start again on their snapshots, and rm cleans up.
    env.ok(&["start", "boot"]);
    assert_eq!(inspect(&env, "boot")["State"]["Running"], true);
    env.ok(&["rm", "-f", "boot", "crash"]);
    env.assert_no_containers_left();
}

#[test]
fn gc_unmounts_what_a_killed_monitor_left_of_an_exited_container() {
    let env = setup();
    let _c = Containers(&env);
    env.ok(&["run", "-d", "--name", "left", "bb", "sleep", "1000"]);
    let rec = env.container_records().pop().unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    kill_and_wait(rec["owner"][0].as_i64().unwrap());
    kill_and_wait(rec["pid"].as_i64().unwrap());
    // What a monitor killed between recording the exit and unmounting
    // leaves: an exited record and a mounted rootfs.
    let path = env
        .root()
        .join("containers")
        .join(&id)
        .join("container.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["status"] = "exited".into();
    json["exit_code"] = 0.into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(env.root().join("run").join(&id)).unwrap();
    let out = env.ok(&["gc"]);
    assert!(
        out.contains(&format!(
            "unmounted the rootfs of a stopped container: {id}"
        )),
        "{out}"
    );
    env.assert_no_mounts();
    assert_eq!(inspect(&env, "left")["State"]["ExitCode"], 0);
    env.ok(&["rm", "left"]);
    let cgroup = std::path::Path::new("/sys/fs/cgroup/pids").join(&id);
    assert!(
        !cgroup.exists(),
        "rm removed its cgroup: {}",
        cgroup.display()
    );
    env.assert_no_containers_left();
}

/// Polls `cond` (every 20 ms, at most 30 s) until it holds; the test
/// fails with `what` otherwise.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{what} did not happen within 30 s");
}

#[test]
fn restart_always_and_unless_stopped_restart_after_exits_but_not_after_stop() {
    let env = setup();
    let _c = Containers(&env);
    // always: a clean exit restarts it too.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "echo run; exit 0",
    ]);
    eventually("three runs of --restart always", || {
        inspect(&env, "a")["RestartCount"].as_i64() >= Some(2)
    });
    env.ok(&["stop", "a"]);
    let state = inspect(&env, "a");
    assert_eq!(state["State"]["Status"], "exited");
    let count = state["RestartCount"].clone();
    // stop returns once the monitor is gone: nothing can restart it now.
    assert_eq!(env.ok(&["wait", "a"]), "0\n");
    assert_eq!(inspect(&env, "a")["RestartCount"], count);
    assert_eq!(env.ok(&["ps", "-q"]), "", "not restarted after stop");

    // unless-stopped: a process killed from outside comes back, a stopped
    // container does not.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "u",
        "--restart",
        "unless-stopped",
        "bb",
        "sleep",
        "1000",
    ]);
    let first = inspect(&env, "u")["State"]["Pid"].as_i64().unwrap();
    kill_and_wait(first);
    eventually("the restart after a kill", || {
        let s = inspect(&env, "u");
        s["RestartCount"] == 1 && s["State"]["Running"] == true
    });
    let second = inspect(&env, "u")["State"]["Pid"].as_i64().unwrap();
    assert_ne!(first, second);
    assert!(alive(second));
    env.ok(&["stop", "-t", "0", "u"]);
    assert!(!alive(second));
    let s = inspect(&env, "u");
    assert_eq!(
        (s["State"]["Status"].as_str(), s["RestartCount"].as_i64()),
        (Some("exited"), Some(1))
    );
    assert_eq!(env.ok(&["ps", "-q"]), "", "not restarted after stop");
    env.ok(&["rm", "a", "u"]);
    env.assert_no_containers_left();
}

#[test]
fn rm_d_removes_record_and_snapshot_when_the_container_exits() {
    let env = setup();
    let _c = Containers(&env);
    let script = "trap 'exit 6' HUP; while true; do sleep 0.1; done";
    env.ok(&[
        "run", "-d", "--rm", "--name", "gone", "bb", "sh", "-c", script,
    ]);
    let records = env.container_records();
    assert_eq!(records.len(), 1, "it runs: its record stays");
    // wait tells the exit code of a container whose record goes with it,
    // when it waited before the exit (as podman's).
    let monitor = records[0]["owner"][0].as_i64().unwrap();
    let sockets = || {
        std::fs::read_dir(format!("/proc/{monitor}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let before = sockets();
    let wait = env
        .command(&["wait", "gone"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wait");
    eventually("wait's connection to the monitor", || sockets() > before);
    env.ok(&["kill", "-s", "HUP", "gone"]);
    let out = wait.wait_with_output().unwrap();
    assert_eq!(env.stdout_of(&out, 0), "6\n");
    env.assert_no_containers_left();
    let out = env.berth(&["inspect", "gone"]);
    assert_ne!(out.status.code(), Some(0), "{}", env.describe(&out));
}

#[test]
fn logs_rotate_past_max_size_and_still_give_the_tail() {
    let env = setup();
    let _c = Containers(&env);
    let script = "i=0; while [ $i -lt 600 ]; do echo line-$i; i=$((i+1)); done";
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "big",
        "--log-opt",
        "max-size=4k",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(env.ok(&["wait", "big"]), "0\n");
    let log = env
        .root()
        .join("containers")
        .join(id.trim())
        .join("ctr.log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(
        size <= 4096,
        "the current file stays under the limit: {size}"
    );
    assert!(
        env.root()
            .join("containers")
            .join(id.trim())
            .join("ctr.log.1")
            .exists(),
        "a rotated file"
    );
    assert_eq!(
        env.ok(&["logs", "--tail", "3", "big"]),
        "line-597\nline-598\nline-599\n"
    );
    // All that is kept is the end of the output, without a gap.
    let all = env.ok(&["logs", "big"]);
    let lines: Vec<&str> = all.lines().collect();
    let first: usize = lines[0].strip_prefix("line-").unwrap().parse().unwrap();
    assert!(first > 0, "the oldest output was dropped");
    let want: Vec<String> = (first..600).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want);
    let out = env.berth(&["run", "-d", "--log-opt", "max-size=1", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-size=1"));
    env.ok(&["rm", "big"]);
    env.assert_no_containers_left();
}
