//! containerd drives `containerd-shim-berth-v2`: each test starts Debian's
//! containerd on a private socket, with the shim's directory first on its
//! PATH, and runs busybox through `ctr ... --runtime io.containerd.berth.v2`
//! as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_testutil::{
    default_spec, require_peer, require_root, run_ok, unique_id, Bundle, Containerd,
    ContainerdOptions,
};

const RUNTIME: &str = "io.containerd.berth.v2";

/// The directory holding the shim binary cargo built for these tests.
fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v2"))
        .parent()
        .expect("the shim's directory")
        .to_path_buf()
}

/// A private containerd that finds the shim, with busybox imported.
struct Setup {
    cd: Containerd,
    namespace: String,
    image: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        require_peer("ctr");
        let dir = tempfile::Builder::new()
            .prefix("berth-shim-")
            .tempdir()
            .expect("tempdir");
        let namespace = unique_id("shim");
        let cd = Containerd::start_with(
            dir.path(),
            ContainerdOptions {
                path_prefix: Some(shim_dir()),
                namespace: namespace.clone(),
                ..ContainerdOptions::default()
            },
        );
        let image = cd.import_busybox(dir.path());
        Setup {
            cd,
            namespace,
            image,
            _dir: dir,
        }
    }

    /// `ctr run --runtime io.containerd.berth.v2 [extra] IMAGE ID ARGS`.
    fn run(&self, extra: &[&str], id: &str, args: &[&str]) -> Command {
        let mut c = self.cd.ctr(&["run", "--runtime", RUNTIME]);
        c.args(extra).args([self.image.as_str(), id]).args(args);
        c
    }

    /// Runs `ctr ARGS` and returns its output, failing with the containerd
    /// log's problems when it fails.
    fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.cd.ctr(args).output().expect("run ctr");
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\n{}{}\ncontainerd log:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.problems()
        );
        out
    }

    fn problems(&self) -> String {
        self.cd
            .log_text()
            .lines()
            .filter(|l| {
                l.contains("level=error") || l.contains("level=warn") || l.contains("berth")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The task's line in `ctr task ls` (None when it is not listed).
    fn task_line(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .map(str::to_string)
    }

    /// Waits until the task's status is `status` (a readiness wait).
    fn wait_status(&self, id: &str, status: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self.task_line(id).unwrap_or_default();
            if line.split_whitespace().nth(2) == Some(status) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never became {status}: {line:?}\n{}",
                self.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The task's init pid from `ctr task ls`.
    fn task_pid(&self, id: &str) -> i32 {
        let line = self.task_line(id).expect("task listed");
        line.split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    /// Kills the task, waits for it to stop, deletes it and the container.
    fn kill_and_remove(&self, id: &str) {
        self.ctr_ok(&["task", "kill", "--signal", "SIGKILL", id]);
        self.wait_status(id, "STOPPED");
        self.ctr_ok(&["task", "delete", id]);
        self.ctr_ok(&["container", "rm", id]);
    }
}

impl Drop for Setup {
    /// After a failing test: kills and deletes what is left (containerd
    /// still runs here) and unmounts rootfs mounts under the directory.
    fn drop(&mut self) {
        if let Ok(out) = self.cd.ctr(&["task", "ls", "-q"]).output() {
            for id in text(&out.stdout).lines() {
                let _ = self.cd.ctr(&["task", "delete", "--force", id]).output();
                let _ = self.cd.ctr(&["container", "rm", id]).output();
            }
        }
        let dir = self._dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(dir.as_str()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        // containerd's cgroupsPath is /NAMESPACE/ID: the namespace's cgroup
        // stays behind in every hierarchy.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.namespace));
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with a terminal of its own (ctr -t needs one): under
/// script(1), which gives it a pty.
fn in_terminal(cmd: &Command) -> Output {
    require_peer("script");
    let quote = |a: &std::ffi::OsStr| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    // The terminal's input stays open until the command ends, as a user's
    // does: at an EOF on its stdin script ends the session early, and under
    // load that could come before the container's output had been copied.
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script");
    let input = child.stdin.take();
    let out = child.wait_with_output().expect("wait for script");
    drop(input);
    out
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

#[test]
fn ctr_run_in_the_foreground_prints_the_output_and_returns_the_exit_code() {
    let s = Setup::new();
    let id = unique_id("fg");
    let out = s
        .run(
            &["--rm"],
            &id,
            &[
                "sh",
                "-c",
                "echo hello from berth; echo to-stderr >&2; exit 3",
            ],
        )
        .output()
        .expect("run ctr");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {}\nstderr: {}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        s.problems()
    );
    assert_eq!(text(&out.stdout), "hello from berth\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );
    // --rm removed the task and the container; the shim left nothing behind.
    assert!(s.task_line(&id).is_none());
    let listed = s.ctr_ok(&["container", "ls", "-q"]);
    assert!(!text(&listed.stdout).contains(&id));
}

/// The shim catches SIGPIPE (a log line into a FIFO containerd no longer
/// reads raises it): a container's processes still start with SIGPIPE at
/// its default, not ignored, so a pipeline like `yes | head` ends as usual.
#[test]
fn container_processes_start_with_sigpipe_not_ignored() {
    let s = Setup::new();
    let id = unique_id("sigpipe");
    let out = s
        .run(&["--rm"], &id, &["grep", "SigIgn", "/proc/self/status"])
        .output()
        .expect("run ctr");
    let shown = text(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}\n{}",
        text(&out.stderr),
        s.problems()
    );
    let ignored = shown
        .split_whitespace()
        .nth(1)
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn mask in {shown:?}"));
    let sigpipe = 1u64 << (nix::sys::signal::Signal::SIGPIPE as i32 - 1);
    assert_eq!(
        ignored & sigpipe,
        0,
        "SIGPIPE is ignored in the container: {shown}"
    );
}

#[test]
fn stdin_reaches_the_process_and_its_end_is_an_eof() {
    let s = Setup::new();
    let id = unique_id("stdin");
    let mut child = s
        .run(&["--rm"], &id, &["sh", "-c", "cat; echo after-eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ctr");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"line one\nline two\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for ctr");
    assert!(
        out.status.success(),
        "{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        s.problems()
    );
    assert_eq!(text(&out.stdout), "line one\nline two\nafter-eof\n");
}

#[test]
fn a_detached_task_runs_execs_lists_pids_and_is_killed_and_deleted() {
    let s = Setup::new();
    let id = unique_id("detached");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let out =
        s.cd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in-exec $$; exit 5",
        ])
        .output()
        .expect("ctr task exec");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("in-exec "),
        "{}",
        text(&out.stdout)
    );
    // The exec'd process sees the container's pid namespace: not pid 1.
    assert_ne!(text(&out.stdout).trim(), "in-exec 1");
    // An exec'd process with a terminal of its own.
    let out = in_terminal(
        &s.cd
            .ctr(&["task", "exec", "-t", "--exec-id", "t1", &id, "tty"]),
    );
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );
    let ps = s.ctr_ok(&["task", "ps", &id]);
    let init = s.task_pid(&id);
    assert!(
        text(&ps.stdout).contains(&init.to_string()),
        "{}",
        text(&ps.stdout)
    );
    assert!(alive(init));
    s.kill_and_remove(&id);
    assert!(!alive(init), "the container's init {init} outlived delete");
}

/// containerd never sends a second create for a running task, but a direct
/// ttrpc caller can: it is refused before anything is mounted, and the
/// task's rootfs (which the failure path used to unmount) stays.
#[test]
fn a_second_create_of_a_running_task_is_refused_and_its_rootfs_stays() {
    use containerd_shim_protos::shim::shim::CreateTaskRequest;
    use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
    use containerd_shim_protos::ttrpc;
    use containerd_shim_protos::types::mount::Mount;
    let s = Setup::new();
    let id = unique_id("dup");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let bundle = s
        ._dir
        .path()
        .join("containerd-state/io.containerd.runtime.v2.task")
        .join(&s.namespace)
        .join(&id);
    let rootfs = bundle.join("rootfs").to_string_lossy().into_owned();
    let mounted = || {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(rootfs.as_str()))
    };
    assert!(mounted(), "the task's rootfs is not mounted at {rootfs}");
    let address = std::fs::read_to_string(bundle.join("address")).expect("shim address");
    let client = ttrpc::Client::connect(address.trim()).expect("connect to the shim");
    let task = TaskClient::new(client);
    let other = tempfile::tempdir().unwrap();
    let mut mount = Mount::new();
    mount.type_ = "bind".into();
    mount.source = other.path().to_string_lossy().into_owned();
    mount.options = vec!["rbind".into()];
    let mut req = CreateTaskRequest::new();
    req.id = id.clone();
    req.bundle = bundle.to_string_lossy().into_owned();
    req.rootfs.push(mount);
    let err = task
        .create(ttrpc::context::with_timeout(10_000_000_000), &req)
        .expect_err("a second create of a running task succeeded");
    assert!(format!("{err:?}").contains("exists"), "{err:?}");
    assert!(mounted(), "the running task's rootfs was unmounted");
    let out = s.ctr_ok(&["task", "exec", "--exec-id", "e1", &id, "ls", "/bin/sh"]);
    assert_eq!(text(&out.stdout), "/bin/sh\n");
    s.kill_and_remove(&id);
}

/// `kill` of an exec takes the raw signal number, as for the init: a
/// real-time signal (40 here), which nix's `Signal` does not name, reaches
/// the exec'd process.
#[test]
fn a_real_time_signal_reaches_an_exec() {
    let s = Setup::new();
    let id = unique_id("rtsig");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let script =
        "trap 'echo got > /tmp/rt; exit 0' 40; echo > /tmp/ready; while :; do sleep 0.1; done";
    s.ctr_ok(&[
        "task",
        "exec",
        "--detach",
        "--exec-id",
        "rt",
        &id,
        "sh",
        "-c",
        script,
    ]);
    let read = |file: &str| {
        let out =
            s.cd.ctr(&[
                "task",
                "exec",
                "--exec-id",
                &unique_id("cat"),
                &id,
                "cat",
                file,
            ])
            .output()
            .expect("ctr task exec");
        text(&out.stdout)
    };
    berth_testutil::runtime::wait_until("the exec's trap to be set", || read("/tmp/ready") == "\n");
    s.ctr_ok(&["task", "kill", "--exec-id", "rt", "-s", "40", &id]);
    berth_testutil::runtime::wait_until("the exec to catch signal 40", || {
        read("/tmp/rt") == "got\n"
    });
    s.kill_and_remove(&id);
}

#[test]
fn pause_freezes_and_resume_thaws_the_task() {
    let s = Setup::new();
    let id = unique_id("pause");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let pid = s.task_pid(&id);
    s.ctr_ok(&["task", "pause", &id]);
    s.wait_status(&id, "PAUSED");
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // A frozen task sleeps in the freezer (D or S), and exec is refused.
    assert!(state.contains("State:"), "{state}");
    let exec =
        s.cd.ctr(&["task", "exec", "--exec-id", "p1", &id, "true"])
            .output()
            .expect("ctr task exec");
    assert!(!exec.status.success(), "exec into a paused task succeeded");
    s.ctr_ok(&["task", "resume", &id]);
    s.wait_status(&id, "RUNNING");
    let out = s.ctr_ok(&["task", "exec", "--exec-id", "p2", &id, "echo", "thawed"]);
    assert_eq!(text(&out.stdout), "thawed\n");
    s.kill_and_remove(&id);
}

#[test]
fn metrics_report_the_memory_limit_set_with_memory_limit() {
    let s = Setup::new();
    let id = unique_id("metrics");
    let limit = 48 * 1024 * 1024;
    run_ok(&mut s.run(
        &["-d", "--memory-limit", &limit.to_string()],
        &id,
        &["sleep", "1000"],
    ));
    s.wait_status(&id, "RUNNING");
    let out = s.ctr_ok(&["task", "metrics", &id]);
    let t = text(&out.stdout);
    let value = |name: &str| {
        t.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {name} in ctr task metrics:\n{t}"))
            .to_string()
    };
    assert_eq!(value("memory.limit_in_bytes"), limit.to_string(), "{t}");
    assert_ne!(value("memory.usage_in_bytes"), "0", "{t}");
    assert_ne!(value("pids.current"), "0", "{t}");
    // The limit is the one on the container's cgroup.
    let pid = s.task_pid(&id);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    let memory = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| panic!("no v1 memory cgroup in {cgroups}"));
    let file = format!("/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes");
    let on_host = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(on_host.trim(), limit.to_string());
    s.kill_and_remove(&id);
}

#[test]
fn a_terminal_with_t_gives_the_process_a_pty() {
    let s = Setup::new();
    let id = unique_id("tty");
    let out = in_terminal(&s.run(&["--rm", "-t"], &id, &["sh", "-c", "tty; exit 7"]));
    let t = text(&out.stdout);
    assert!(
        t.contains("/dev/pts/"),
        "no pty in the container: {t}\n{}",
        s.problems()
    );
    assert_eq!(out.status.code(), Some(7), "{t}");
}

#[test]
fn a_task_is_still_managed_after_containerd_restarts() {
    let mut s = Setup::new();
    let id = unique_id("restart");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let pid = s.task_pid(&id);
    s.cd.restart();
    assert!(alive(pid), "the container died with containerd");
    s.wait_status(&id, "RUNNING");
    assert_eq!(s.task_pid(&id), pid);
    let out = s.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        &id,
        "echo",
        "still here",
    ]);
    assert_eq!(text(&out.stdout), "still here\n");
    s.kill_and_remove(&id);
    assert!(!alive(pid));
}

#[test]
fn a_task_whose_shim_is_killed_is_reported_exited() {
    let s = Setup::new();
    let id = unique_id("shimkill");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let pid = s.task_pid(&id);
    let shims = s.cd.shim_pids();
    assert!(!shims.is_empty(), "no shim process found");
    for shim in shims {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the shim");
    }
    // containerd notices the dead shim, runs its `delete` cleanup (which
    // kills the container) and reports the task gone or stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = s.task_line(&id);
        let stopped = line
            .as_deref()
            .is_none_or(|l| l.split_whitespace().nth(2) == Some("STOPPED"));
        // The cleanup (the shim binary's `delete`) has finished too.
        if stopped && !alive(pid) && s.cd.shim_pids().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} still {line:?} (init alive: {}) after its shim died\n{}",
            alive(pid),
            s.problems()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if s.task_line(&id).is_some() {
        s.ctr_ok(&["task", "delete", &id]);
    }
    s.ctr_ok(&["container", "rm", &id]);
}

#[test]
fn the_oom_killer_in_a_task_is_published_as_a_task_oom_event() {
    let s = Setup::new();
    let id = unique_id("oom");
    let events_file = s._dir.path().join("events.txt");
    let mut events =
        s.cd.ctr(&["events"])
            .stdout(std::fs::File::create(&events_file).expect("create the events file"))
            .spawn()
            .expect("start ctr events");
    // `tail` holds a line of 64 MiB in memory: the OOM killer kills it.
    let out = s
        .run(
            &["--rm", "--memory-limit", &(16 * 1024 * 1024).to_string()],
            &id,
            &["sh", "-c", "head -c 67108864 /dev/zero | tail"],
        )
        .output()
        .expect("run ctr");
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let t = std::fs::read_to_string(&events_file).unwrap_or_default();
        if t.contains("/tasks/oom") || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        seen.contains("/tasks/oom"),
        "no /tasks/oom event:\n{seen}\n{}",
        s.problems()
    );
    let oom = seen.lines().position(|l| l.contains("/tasks/oom"));
    let exit = seen.lines().position(|l| l.contains("/tasks/exit"));
    assert!(oom < exit, "the OOM event came after the exit:\n{seen}");
}

#[test]
fn containers_of_one_sandbox_share_one_shim() {
    let s = Setup::new();
    let pod = unique_id("pod");
    let annotation = format!("io.kubernetes.cri.sandbox-id={pod}");
    let (a, b) = (unique_id("pod-a"), unique_id("pod-b"));
    for id in [&a, &b] {
        run_ok(&mut s.run(&["-d", "--annotation", &annotation], id, &["sleep", "1000"]));
        s.wait_status(id, "RUNNING");
    }
    let shims = s.cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the sandbox, not {shims:?}");
    // An exec in B, then deleting its sibling A, leaves the shim serving B.
    let out = s.ctr_ok(&["task", "exec", "--exec-id", "e1", &b, "echo", "in b"]);
    assert_eq!(text(&out.stdout), "in b\n");
    s.kill_and_remove(&a);
    assert_eq!(s.cd.shim_pids(), shims);
    // The shim was started for A and logs into A's log FIFO, which
    // containerd stops reading once A is gone: what the shim logs from now
    // on (C's create and start) must not keep it from recording exits.
    let c = unique_id("pod-c");
    run_ok(&mut s.run(&["-d", "--annotation", &annotation], &c, &["sleep", "1000"]));
    s.wait_status(&c, "RUNNING");
    assert_eq!(s.cd.shim_pids(), shims, "C is served by the sandbox's shim");
    s.kill_and_remove(&c);
    let out = s.ctr_ok(&["task", "exec", "--exec-id", "e2", &b, "echo", "in b"]);
    assert_eq!(text(&out.stdout), "in b\n");
    assert_eq!(
        s.task_line(&b)
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            .as_deref(),
        Some("RUNNING")
    );
    s.kill_and_remove(&b);
    // With its last container gone, containerd shuts the shim down.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.cd.shim_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shim outlived its last container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime waits for its hook processes itself while the shim reaps
/// every child it has: each hook must still get its own exit status, on
/// every run (a hook reaped by the shim first failed with ECHILD).
#[test]
fn hooks_run_under_the_shim_get_their_own_exit_status() {
    let s = Setup::new();
    let mut spec = default_spec(&["echo", "hooked"]);
    let bundle = Bundle::new(&spec);
    let log = bundle.path().join("hooks.log");
    let hook = |stage: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("sleep 0.05; echo {stage} >> {}", log.display())],
        })
    };
    spec["root"]["path"] = bundle.rootfs().to_string_lossy().into_owned().into();
    spec["hooks"] = serde_json::json!({
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    let config = bundle.path().join("ctr-spec.json");
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    for round in 0..5 {
        let id = unique_id("hooks");
        let out =
            s.cd.ctr(&["run", "--rm", "--runtime", RUNTIME, "--config"])
                .arg(&config)
                .arg(&id)
                .output()
                .expect("run ctr");
        assert!(
            out.status.success(),
            "round {round}: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            s.problems()
        );
        assert_eq!(text(&out.stdout), "hooked\n");
    }
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        ran,
        "createRuntime\npoststart\npoststop\n".repeat(5),
        "every hook of every round ran, in order"
    );
}

/// The shim logs into the first container's bundle (its working
/// directory); once that container is deleted containerd stops reading
/// it. A log line then fails with EPIPE and raises SIGPIPE: the reaper
/// must not log that signal (which raised it again, for ever, so that no
/// exit was reaped any more: a task killed then never stopped).
#[test]
fn the_shim_still_reaps_after_its_first_containers_log_is_closed() {
    let s = Setup::new();
    let pod = unique_id("pod");
    let annotation = format!("io.kubernetes.cri.sandbox-id={pod}");
    let (a, b) = (unique_id("first"), unique_id("second"));
    for id in [&a, &b] {
        run_ok(&mut s.run(&["-d", "--annotation", &annotation], id, &["sleep", "1000"]));
        s.wait_status(id, "RUNNING");
    }
    let shims = s.cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the sandbox, not {shims:?}");
    s.kill_and_remove(&a);
    // containerd closes its reader of the first bundle's log when it drops
    // that task's connection (a readiness wait).
    let closed = format!("msg=\"shim disconnected\" id={a}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.cd.log_text().contains(&closed) {
        assert!(
            Instant::now() < deadline,
            "containerd kept {a}'s connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A signal the shim logs (SIGTERM is only logged) writes a log line.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the shim");
    s.kill_and_remove(&b);
}

/// The shim is multithreaded, so its runtime forks with glibc's fork and
/// the process that runs in the container is cloned into the cgroup v2
/// directory by the runtime's single-threaded child: the init and an exec'd
/// process must both end up in the container's cgroup in every hierarchy,
/// the unified one included.
#[test]
fn the_task_and_its_execs_are_in_the_containers_cgroup_in_every_hierarchy() {
    let s = Setup::new();
    let id = unique_id("cgroups");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let want = format!("/{}/{}", s.namespace, id);
    let check = |what: &str, lines: &str| {
        let lines: Vec<&str> = lines.lines().filter(|l| !l.is_empty()).collect();
        assert!(
            lines.iter().any(|l| l.starts_with("0::")),
            "{what}: no cgroup v2 line in {lines:?}"
        );
        for l in &lines {
            assert!(
                l.ends_with(&want),
                "{what}: {l:?} is not in the container's cgroup {want}\n{}",
                s.problems()
            );
        }
    };
    let pid = s.task_pid(&id);
    check(
        "the init",
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read the init's cgroups"),
    );
    let out =
        s.cd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "cg",
            &id,
            "cat",
            "/proc/self/cgroup",
        ])
        .output()
        .expect("ctr task exec");
    assert!(out.status.success(), "{}", text(&out.stderr));
    check("an exec'd process", &text(&out.stdout));
    s.kill_and_remove(&id);
}

/// How many threads process `pid` has.
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn execs_that_fail_to_start_leave_no_shim_thread_behind() {
    let s = Setup::new();
    let id = unique_id("execfail");
    run_ok(&mut s.run(&["-d"], &id, &["sleep", "1000"]));
    s.wait_status(&id, "RUNNING");
    let shims = s.cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    // ctr waits for an exec before it starts it and deletes it when the
    // start fails: that wait must end then, and the thread that would copy
    // its stdin FIFO (whose writer never comes) too, not wait forever.
    let fail = |n: usize| {
        let out =
            s.cd.ctr(&[
                "task",
                "exec",
                "--exec-id",
                &format!("bad{n}"),
                &id,
                "/no/such/program",
            ])
            .output()
            .expect("ctr task exec");
        assert!(!out.status.success(), "{}", text(&out.stdout));
    };
    fail(0);
    let before = threads(shims[0]);
    for n in 1..=12 {
        fail(n);
    }
    let after = threads(shims[0]);
    eprintln!("shim threads: {before} -> {after}");
    assert!(
        after < before + 6,
        "the shim went from {before} to {after} threads over 12 failed execs"
    );
    let out = s.ctr_ok(&["task", "exec", "--exec-id", "good", &id, "true"]);
    assert!(out.status.success());
    s.kill_and_remove(&id);
}
