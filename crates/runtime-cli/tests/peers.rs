//! Real callers drive `berth-runtime`: containerd (through `ctr` and the
//! io.containerd.runc.v2 shim, with `--runc-binary`) and podman (through
//! conmon, with `--runtime`). Each test runs its own private containerd or
//! podman storage in a scratch directory, so tests run in parallel and
//! leave the machine's own containerd/podman state alone.
//!
//! The image is built with umoci from the host's busybox-static: an OCI
//! layout (podman reads it as `oci:DIR:TAG`) and a tarball of it (for
//! `ctr images import`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testutil::runtime::runtime_bin;
use berth_testutil::{busybox_rootfs, require_peer, require_root, run_ok, unique_id};

/// The runtime the peers are given (the one the harness tests).
fn runtime() -> String {
    runtime_bin().display().to_string()
}

/// A scratch directory with a lowercase path (podman turns `oci:` paths into
/// image names, which must be lowercase). Dropping it kills every process
/// still referring to it (containerd, shims, conmon), unmounts whatever is
/// mounted below it and removes it.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        require_root();
        let dir = std::env::temp_dir().join(unique_id(&format!("berth-peer-{name}")));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Pids of processes whose command line or cwd mentions this directory.
    fn processes(&self) -> Vec<String> {
        let needle = self.dir.to_string_lossy().into_owned();
        let me = std::process::id().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&needle) || cwd.starts_with(&self.dir)
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let pids = self.processes();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
        // Unmount deepest first whatever is still mounted in the scratch dir.
        let needle = self.dir.to_string_lossy().into_owned();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(needle.as_str()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Builds a busybox image with umoci: returns the OCI layout directory; the
/// image is tagged `latest` and runs `sh` by default.
fn busybox_layout(s: &Scratch) -> PathBuf {
    let umoci = require_peer("umoci");
    let layout = s.path("oci");
    let image = format!("{}:latest", layout.display());
    let bundle = s.path("umoci-bundle");
    run_ok(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run_ok(Command::new(&umoci).args(["new", "--image", &image]));
    run_ok(
        Command::new(&umoci)
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    busybox_rootfs(&bundle.join("rootfs"));
    run_ok(
        Command::new(&umoci)
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    run_ok(Command::new(&umoci).args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin:/sbin:/usr/bin",
    ]));
    let _ = fs::remove_dir_all(&bundle);
    layout
}

/// A private containerd on a scratch root, state and socket, with CRI and
/// the snapshotters it does not need disabled. Killed on drop (the scratch
/// dir's guard kills its shims).
struct Containerd {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    ns: String,
}

impl Containerd {
    fn start(s: &Scratch) -> Containerd {
        let containerd = require_peer("containerd");
        require_peer("ctr");
        require_peer("containerd-shim-runc-v2");
        let d = s.dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        fs::write(s.path("containerd.toml"), config).expect("write containerd config");
        let log = s.path("containerd.log");
        let logfile = fs::File::create(&log).expect("create containerd log");
        let child = Command::new(containerd)
            .arg("--config")
            .arg(s.path("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("dup log"))
            .stderr(logfile)
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            child,
            sock: s.path("c.sock"),
            log,
            ns: unique_id("berthpeer"),
        };
        // Wait until it answers (a readiness wait, not a timing assertion).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = c
                .ctr()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!(
                    "containerd exited ({status}) before serving:\n{}",
                    c.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 60 s:\n{}",
                c.sock.display(),
                c.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// `ctr` talking to this containerd, in this test's namespace.
    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.sock)
            .args(["--namespace", &self.ns]);
        cmd
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the containerd log (daemon, shim and runtime messages) that
    /// are warnings or errors, for failure messages.
    fn problems(&self) -> String {
        self.log_text()
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("level=warning"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A scratch dir, a containerd on it and the busybox image imported.
    fn with_busybox(name: &str) -> (Scratch, Containerd, String) {
        let s = Scratch::new(name);
        let c = Containerd::start(&s);
        let image = c.import_busybox(&s);
        (s, c, image)
    }

    /// `ctr run [extra] --runc-binary berth-runtime --runc-root SCRATCH IMAGE ID ARGS`.
    fn run(&self, s: &Scratch, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Command {
        let mut cmd = self.ctr();
        cmd.arg("run")
            .args(extra)
            .args(["--runc-binary", runtime().as_str(), "--runc-root"])
            .arg(s.path("runc-root"))
            .args([image, id])
            .args(args);
        cmd
    }

    /// SIGKILLs task `id`, waits for the shim to report it stopped, then
    /// deletes the task (the runtime's `delete`) and the container.
    fn kill_and_remove(&self, id: &str) {
        run_ok(
            self.ctr()
                .args(["tasks", "kill", "--signal", "SIGKILL", id]),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ls = run_ok(self.ctr().args(["tasks", "ls"]));
            let t = text(&ls.stdout);
            if t.lines()
                .any(|l| l.starts_with(id) && l.contains("STOPPED"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task never stopped: {t}\n{}",
                self.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        run_ok(self.ctr().args(["tasks", "delete", id]));
        run_ok(self.ctr().args(["containers", "rm", id]));
    }

    /// Imports the umoci layout as `berth.test/busybox:latest`.
    fn import_busybox(&self, s: &Scratch) -> String {
        let layout = busybox_layout(s);
        let tarball = s.path("busybox-oci.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&layout)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        );
        let out = run_ok(
            self.ctr()
                .args(["images", "import", "--base-name", "berth.test/busybox"])
                .arg(&tarball),
        );
        let name = "berth.test/busybox:latest".to_string();
        let listed = run_ok(self.ctr().args(["images", "ls", "-q"]));
        assert!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == name),
            "ctr images import did not create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&listed.stdout)
        );
        name
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // containerd puts containers under a cgroup named after the
        // namespace. After a passing test only the empty namespace parent is
        // left; after a failing one, containers may still run in it: kill
        // them and remove the whole subtree.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dirs: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| {
                let (pre, post) = line.split_once(" - ")?;
                let cgroupfs = post.starts_with("cgroup ") || post.starts_with("cgroup2 ");
                let mnt = pre.split(' ').nth(4)?;
                cgroupfs.then(|| Path::new(mnt).join(&self.ns))
            })
            .collect();
        for dir in &dirs {
            kill_cgroup_tree(dir);
        }
        for _ in 0..50 {
            for dir in &dirs {
                remove_cgroup_tree(dir);
            }
            if dirs.iter().all(|d| !d.exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// SIGKILLs every process in the cgroup `dir` and its children.
fn kill_cgroup_tree(dir: &Path) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
    for sub in fs::read_dir(dir).into_iter().flatten().flatten() {
        if sub.file_type().is_ok_and(|t| t.is_dir()) {
            kill_cgroup_tree(&sub.path());
        }
    }
}

/// Removes the cgroup `dir` and its (empty) children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    for sub in fs::read_dir(dir).into_iter().flatten().flatten() {
        if sub.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&sub.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn containerd_ctr_run_prints_output_and_exits_with_container_code() {
    let (s, c, image) = Containerd::with_busybox("ctrd-run");
    let id = unique_id("berth-ctr");
    let out = c
        .run(
            &s,
            &["--rm"],
            &image,
            &id,
            &["sh", "-c", "echo hi from berth; exit 3"],
        )
        .output()
        .expect("run ctr");
    assert_eq!(
        text(&out.stdout),
        "hi from berth\n",
        "ctr run output; stderr: {}\ncontainerd problems:\n{}",
        text(&out.stderr),
        c.problems()
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "ctr run must exit with the container's code; stderr: {}\ncontainerd problems:\n{}",
        text(&out.stderr),
        c.problems()
    );
    // --rm removed the container and the runtime's state.
    let left = run_ok(c.ctr().args(["containers", "ls", "-q"]));
    assert_eq!(text(&left.stdout).trim(), "", "container left behind");
    let state_dir = s.path("runc-root").join(&c.ns).join(&id);
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
}

#[test]
fn containerd_detached_task_exec_kill_and_delete() {
    let (s, c, image) = Containerd::with_busybox("ctrd-task");
    let id = unique_id("berth-task");
    let root = s.path("runc-root");
    run_ok(&mut c.run(&s, &["-d"], &image, &id, &["sleep", "1000"]));
    assert!(
        root.join(&c.ns).join(&id).is_dir(),
        "the shim did not pass --root {}/{} to the runtime",
        root.display(),
        c.ns
    );
    let tasks = run_ok(c.ctr().args(["tasks", "ls"]));
    let line = text(&tasks.stdout)
        .lines()
        .find(|l| l.starts_with(&id))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("RUNNING"),
        "task list: {}",
        text(&tasks.stdout)
    );

    // exec through the shim: output and exit code come back.
    let exec = c
        .ctr()
        .args([
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in-exec; exit 4",
        ])
        .output()
        .expect("ctr tasks exec");
    assert_eq!(
        text(&exec.stdout),
        "in-exec\n",
        "stderr: {}\n{}",
        text(&exec.stderr),
        c.problems()
    );
    assert_eq!(exec.status.code(), Some(4), "{}", c.problems());

    // `ctr tasks ps` is the shim calling the runtime's `ps --format json`.
    let ps = run_ok(c.ctr().args(["tasks", "ps", &id]));
    let pids: Vec<String> = text(&ps.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(pids.len(), 1, "one process expected: {}", text(&ps.stdout));
    let comm = fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap_or_default();
    assert_eq!(comm.trim(), "sleep", "ctr tasks ps: {}", text(&ps.stdout));

    // pause/resume go through the runtime's pause and resume.
    run_ok(c.ctr().args(["tasks", "pause", &id]));
    let paused = run_ok(c.ctr().args(["tasks", "ls"]));
    assert!(
        text(&paused.stdout).contains("PAUSED"),
        "{}",
        text(&paused.stdout)
    );
    run_ok(c.ctr().args(["tasks", "resume", &id]));

    c.kill_and_remove(&id);
    assert!(
        !root.join(&c.ns).join(&id).exists(),
        "runtime state left after task delete"
    );
}

/// podman with everything private: storage, run root, tmp dir, events file,
/// cgroupfs manager, no network config outside the scratch dir.
struct Podman {
    base: Vec<String>,
    env: Vec<(String, PathBuf)>,
}

impl Drop for Podman {
    /// Removes whatever containers a failing test left (through conmon and
    /// the runtime, like a user would).
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--force", "--all", "--time", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Podman {
    fn new(s: &Scratch) -> Podman {
        require_peer("podman");
        require_peer("conmon");
        for d in ["proot", "prunroot", "ptmp", "pnet"] {
            fs::create_dir_all(s.path(d)).expect("create podman dir");
        }
        fs::write(
            s.path("containers.conf"),
            // runtime_supports_json: podman then passes `--log-format=json
            // --log FILE` to berth-runtime, as it does for runc, and reads
            // the error message of a failed create from that JSON log.
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
             runtime_supports_json = [\"berth-runtime\", \"runc\"]\n",
        )
        .expect("write containers.conf");
        fs::write(
            s.path("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                s.path("proot").display(),
                s.path("prunroot").display()
            ),
        )
        .expect("write storage.conf");
        let p = |d: &str| s.path(d).to_string_lossy().into_owned();
        Podman {
            base: vec![
                "--root".into(),
                p("proot"),
                "--runroot".into(),
                p("prunroot"),
                "--tmpdir".into(),
                p("ptmp"),
                "--network-config-dir".into(),
                p("pnet"),
                "--storage-driver".into(),
                "vfs".into(),
                "--cgroup-manager".into(),
                "cgroupfs".into(),
                "--events-backend".into(),
                "file".into(),
                "--runtime".into(),
                runtime(),
            ],
            env: vec![
                ("CONTAINERS_CONF".into(), s.path("containers.conf")),
                ("CONTAINERS_STORAGE_CONF".into(), s.path("storage.conf")),
            ],
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(&self.base);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// A scratch dir, a private podman on it and the busybox image as an
    /// `oci:` reference to its umoci layout.
    fn with_busybox(name: &str) -> (Scratch, Podman, String) {
        let s = Scratch::new(name);
        let layout = busybox_layout(&s);
        let p = Podman::new(&s);
        (s, p, format!("oci:{}:latest", layout.display()))
    }

    /// `podman run [extra] --net=none --ulimit... IMAGE ARGS`.
    fn run(&self, extra: &[&str], image: &str, args: &[&str]) -> Command {
        let mut cmd = self.cmd();
        cmd.arg("run")
            .args(extra)
            .args(Podman::run_args())
            .arg(image)
            .args(args);
        cmd
    }

    /// `podman run` arguments every container here needs. The rlimits are
    /// explicit because podman's defaults (nofile/nproc 1048576/4194304)
    /// exceed what a process without CAP_SYS_RESOURCE (this sandbox) may
    /// set; runc fails the same way without them.
    fn run_args() -> [&'static str; 5] {
        [
            "--net=none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]
    }
}

#[test]
fn podman_run_rm_prints_output_and_exits_with_container_code() {
    let (_s, p, image) = Podman::with_busybox("podman-run");
    let out = p
        .run(
            &["--rm"],
            &image,
            &["sh", "-c", "echo hi from berth; exit 3"],
        )
        .output()
        .expect("run podman");
    assert_eq!(
        text(&out.stdout),
        "hi from berth\n",
        "podman run output; stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "podman run must exit with the container's code; stderr: {}",
        text(&out.stderr)
    );
    let left = run_ok(p.cmd().args(["ps", "-a", "-q"]));
    assert_eq!(text(&left.stdout).trim(), "", "--rm left a container");
}

#[test]
fn podman_limits_reach_the_container_cgroup() {
    let (_s, p, image) = Podman::with_busybox("podman-limits");
    let out = run_ok(&mut p.run(
        &["--rm", "--memory", "64m", "--pids-limit", "50"],
        &image,
        &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                 || cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max",
        ],
    ));
    assert_eq!(text(&out.stdout), "50\n67108864\n", "{}", text(&out.stderr));
}

#[test]
fn podman_detached_exec_stop_and_rm() {
    let (_s, p, image) = Podman::with_busybox("podman-detached");
    let name = unique_id("berth-pd");
    run_ok(&mut p.run(&["-d", "--name", &name], &image, &["sleep", "1000"]));
    let status = |p: &Podman| {
        let out = run_ok(
            p.cmd()
                .args(["inspect", "--format", "{{.State.Status}}", &name]),
        );
        text(&out.stdout).trim().to_string()
    };
    assert_eq!(status(&p), "running");
    let exec = p
        .cmd()
        .args(["exec", &name, "sh", "-c", "echo in-exec; exit 4"])
        .output()
        .expect("podman exec");
    assert_eq!(text(&exec.stdout), "in-exec\n", "{}", text(&exec.stderr));
    assert_eq!(exec.status.code(), Some(4), "{}", text(&exec.stderr));
    run_ok(p.cmd().args(["pause", &name]));
    assert_eq!(status(&p), "paused");
    run_ok(p.cmd().args(["unpause", &name]));
    assert_eq!(status(&p), "running");
    // sleep as pid 1 ignores SIGTERM, so podman escalates to SIGKILL.
    run_ok(p.cmd().args(["stop", "-t", "1", &name]));
    assert_eq!(status(&p), "exited");
    let code = run_ok(
        p.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &name]),
    );
    assert_eq!(text(&code.stdout).trim(), "137");
    run_ok(p.cmd().args(["rm", &name]));
    let left = run_ok(p.cmd().args(["ps", "-a", "-q"]));
    assert_eq!(text(&left.stdout).trim(), "");
}

#[test]
fn podman_missing_command_exits_127_with_the_runtime_message() {
    let (_s, p, image) = Podman::with_busybox("podman-enoent");
    let out = p
        .run(&["--rm"], &image, &["nosuchcmd"])
        .output()
        .expect("run podman");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr: {err}");
    assert!(
        err.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "podman did not get the runtime's message: {err}"
    );
    assert!(
        !err.contains("level=error"),
        "podman showed a raw log line instead of the parsed JSON log: {err}"
    );
    let left = run_ok(p.cmd().args(["ps", "-a", "-q"]));
    assert_eq!(text(&left.stdout).trim(), "", "--rm left a container");
}

#[test]
fn containerd_reports_the_runtime_error_for_a_missing_command() {
    let (s, c, image) = Containerd::with_busybox("ctrd-enoent");
    let id = unique_id("berth-enoent");
    let out = c
        .run(&s, &["--rm"], &image, &id, &["nosuchcmd"])
        .output()
        .expect("run ctr");
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "ctr run of a missing command succeeded"
    );
    assert!(
        err.contains("OCI runtime create failed")
            && err.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "containerd did not relay the runtime's message: {err}\n{}",
        c.problems()
    );
    assert!(
        !s.path("runc-root").join(&c.ns).join(&id).exists(),
        "a failed create left runtime state"
    );
}

#[test]
fn podman_stdin_reaches_the_container() {
    let (_s, p, image) = Podman::with_busybox("podman-stdin");
    let mut child = p
        .run(&["--rm", "-i"], &image, &["tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run podman");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello from stdin\n").expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait podman");
    assert_eq!(
        text(&out.stdout),
        "HELLO FROM STDIN\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn podman_kill_delivers_the_signal_to_the_container() {
    let (_s, p, image) = Podman::with_busybox("podman-kill");
    let name = unique_id("berth-pk");
    run_ok(&mut p.run(
        &["-d", "--name", &name],
        &image,
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 7' USR1; echo ready; while true; do sleep 1; done",
        ],
    ));
    // Wait until the trap is installed (a readiness wait, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = run_ok(p.cmd().args(["logs", &name]));
        if text(&logs.stdout).contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "container never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    run_ok(p.cmd().args(["kill", "--signal", "USR1", &name]));
    let wait = run_ok(p.cmd().args(["wait", &name]));
    assert_eq!(text(&wait.stdout).trim(), "7", "exit code after SIGUSR1");
    let logs = run_ok(p.cmd().args(["logs", &name]));
    assert!(
        text(&logs.stdout).contains("got-usr1"),
        "{}",
        text(&logs.stdout)
    );
    run_ok(p.cmd().args(["rm", &name]));
}

/// Runs `argv` under `script` so it gets a terminal on stdin/stdout, as
/// `-t` needs; returns the terminal's output and the exit code.
fn on_a_terminal(argv: &[String]) -> (String, Option<i32>) {
    let script = require_peer("script");
    let line = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    (text(&out.stdout) + &text(&out.stderr), out.status.code())
}

fn argv(cmd: &Command) -> Vec<String> {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn containerd_tty_run_and_exec_get_a_console_through_the_socket() {
    let (s, c, image) = Containerd::with_busybox("ctrd-tty");
    let id = unique_id("berth-tty");
    let (out, code) = on_a_terminal(&argv(&c.run(
        &s,
        &["--rm", "-t"],
        &image,
        &id,
        &["sh", "-c", "tty; exit 5"],
    )));
    assert!(
        out.contains("/dev/pts/0"),
        "no pty in the container: {out}\n{}",
        c.problems()
    );
    assert_eq!(code, Some(5), "{out}");

    let id = unique_id("berth-ttyexec");
    run_ok(&mut c.run(&s, &["-d"], &image, &id, &["sleep", "1000"]));
    let mut exec = c.ctr();
    exec.args([
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &id,
        "sh",
        "-c",
        "tty; exit 6",
    ]);
    let (out, code) = on_a_terminal(&argv(&exec));
    assert!(
        out.contains("/dev/pts/"),
        "no pty for the exec: {out}\n{}",
        c.problems()
    );
    assert_eq!(code, Some(6), "{out}");
    c.kill_and_remove(&id);
}

#[test]
fn podman_tty_run_gets_a_console_from_conmon() {
    let (_s, p, image) = Podman::with_busybox("podman-tty");
    let (out, code) = on_a_terminal(&argv(&p.run(
        &["--rm", "-t"],
        &image,
        &["sh", "-c", "tty; exit 4"],
    )));
    assert!(out.contains("/dev/pts/0"), "no pty in the container: {out}");
    assert_eq!(code, Some(4), "{out}");
}

#[test]
fn scratch_guard_kills_and_unmounts() {
    // The harness itself: a process referring to the scratch dir dies with it.
    let s = Scratch::new("guard");
    let dir = s.dir.clone();
    let mut child = Command::new("sleep")
        .arg("1000")
        .current_dir(&dir)
        .spawn()
        .expect("spawn sleep");
    assert!(s.processes().contains(&child.id().to_string()));
    drop(s);
    let status = child.wait().expect("wait");
    assert!(!status.success(), "sleep survived the guard");
    assert!(!Path::new(&dir).exists());
}
