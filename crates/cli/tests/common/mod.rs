//! Helpers shared by the `berth run` tests: a per-test data root (the
//! runtime state lives under it too), busybox images made with
//! `berth import`, and checks that nothing is left behind.

#![allow(dead_code)]

pub mod registry;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use berth_testutil::require_peer;
use berth_testutil::{busybox_rootfs, require_root};
use serde_json::Value;

/// A temporary data root for one test.
pub struct Env {
    dir: tempfile::TempDir,
}

/// A test that fails half-way (or a killed berth it abandoned on purpose)
/// can leave a container's overlay mounted: detach every mount under the
/// test's directory, deepest first, so the directory can be removed and the
/// machine stays clean.
impl Drop for Env {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Env {
    /// A fresh data root (the test must run as root).
    pub fn new() -> Env {
        require_root();
        Env {
            dir: tempfile::Builder::new()
                .prefix("berth-run-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A path inside the test's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The data root given to berth.
    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// `berth --root ROOT args...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root").arg(self.root()).args(args);
        cmd.env_remove("BERTH_STATE_ROOT");
        // Tests that do not ask for a network get a namespace with only lo:
        // each data root's default bridge network would take a host bridge.
        cmd.env("BERTH_NETWORK", "none");
        cmd
    }

    /// Runs berth (stdin /dev/null) and returns its output.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Runs berth, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_both(args).0
    }

    /// Runs berth, asserts success, returns stderr (where progress goes).
    pub fn ok_stderr(&self, args: &[&str]) -> String {
        self.ok_both(args).1
    }

    /// Runs berth, asserts success, returns (stdout, stderr).
    pub fn ok_both(&self, args: &[&str]) -> (String, String) {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            self.describe(&out)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs berth, asserts it failed, returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            !out.status.success(),
            "berth {args:?} should fail: {}",
            self.describe(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Exit status, stdout and stderr, for assertion messages.
    pub fn describe(&self, out: &Output) -> String {
        format!(
            "status {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Asserts the exit code and returns stdout.
    pub fn stdout_of(&self, out: &Output, code: i32) -> String {
        assert_eq!(out.status.code(), Some(code), "{}", self.describe(out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports a busybox rootfs as image `name` with `--change` entries.
    pub fn import_busybox(&self, name: &str, changes: &[&str]) {
        let rootfs = self.path(&format!("{name}-rootfs"));
        busybox_rootfs(&rootfs);
        let tar = self.path(&format!("{name}.tar"));
        tar_dir(&rootfs, &tar);
        let mut args = vec!["import".to_string()];
        for c in changes {
            args.push("--change".into());
            args.push(c.to_string());
        }
        args.push(tar.display().to_string());
        args.push(name.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// Names of every snapshot in the data root's snapshotter.
    pub fn snapshots(&self) -> Vec<String> {
        let dir = self.root().join("snapshotter");
        let snap = berth_snapshot::Snapshotter::open(&dir, None).expect("open snapshotter");
        let mut names = Vec::new();
        snap.walk(|i| names.push(i.name.clone())).expect("walk");
        names.sort();
        names
    }

    /// Every `containers/<id>/container.json`.
    pub fn container_records(&self) -> Vec<Value> {
        let dir = self.root().join("containers");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry
                .expect("read containers dir")
                .path()
                .join("container.json");
            if let Ok(data) = std::fs::read(&path) {
                out.push(serde_json::from_slice(&data).expect("container record JSON"));
            }
        }
        out
    }

    /// No container directory, runtime state, active snapshot or mount stays.
    pub fn assert_no_containers_left(&self) {
        assert!(
            self.container_records().is_empty(),
            "container records left"
        );
        let mut dirs = dir_names(&self.root().join("containers"));
        dirs.retain(|n| n != ".lock");
        assert!(dirs.is_empty(), "container directories left: {dirs:?}");
        let mut state = dir_names(&self.root().join("run"));
        state.retain(|n| n != "bundles" && n != "netns" && n != berth_runtime::CACHE_DIR);
        assert!(state.is_empty(), "runtime state left: {state:?}");
        let bundles = dir_names(&self.root().join("run/bundles"));
        assert!(bundles.is_empty(), "bundles left: {bundles:?}");
        let netns = dir_names(&self.root().join("run/netns"));
        assert!(netns.is_empty(), "network namespaces left: {netns:?}");
        let active: Vec<_> = self
            .snapshots()
            .into_iter()
            .filter(|n| !n.starts_with("sha256:"))
            .collect();
        assert!(active.is_empty(), "active snapshots left: {active:?}");
        self.assert_no_mounts();
    }

    /// Nothing is mounted under the test's directory.
    pub fn assert_no_mounts(&self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir = self.dir.path().display().to_string();
        let left: Vec<&str> = info.lines().filter(|l| l.contains(&dir)).collect();
        assert!(left.is_empty(), "mounts left: {left:#?}");
    }

    /// Spawns `berth ARGS` (stderr discarded, so a container left running
    /// cannot hold the test harness's output open) and waits until it prints
    /// "ready"; stdout is consumed up to there.
    pub fn spawn_until_ready(&self, args: &[&str]) -> std::process::Child {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berth run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        child
    }

    /// Runs `berth run --rm EXTRA bb CMD`, waits for it to print "ready",
    /// sends SIGTERM to berth and returns berth's exit code.
    pub fn run_then_signal(&self, cmd: &[&str], extra: &[&str]) -> Option<i32> {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.push("bb");
        args.extend_from_slice(cmd);
        let mut child = self.spawn_until_ready(&args);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill berth");
        child.wait().expect("wait berth").code()
    }
}

/// Names in `dir` (none if it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// `tar -C dir -cf tar .`
pub fn tar_dir(dir: &Path, tar: &Path) {
    let out = Command::new(require_peer("tar"))
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar of {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pty whose slave is the controlling terminal of a new session for a
/// command: what a user's terminal is to berth (`-t`, attach).
pub struct Terminal {
    master: std::fs::File,
    seen: String,
}

impl Terminal {
    /// Spawns `cmd` on a new pty of `rows` and `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> (Terminal, std::process::Child) {
        use std::os::unix::process::CommandExt;
        let size = winsize(rows, cols);
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = pty.slave;
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: between fork and exec the closure only calls the
        // async-signal-safe setsid and ioctl.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        drop(cmd);
        drop(slave);
        let master = std::fs::File::from(pty.master);
        (
            Terminal {
                master,
                seen: String::new(),
            },
            child,
        )
    }

    /// Types `text` on the terminal.
    pub fn type_in(&mut self, text: &[u8]) {
        use std::io::Write;
        self.master.write_all(text).expect("write the pty");
    }

    /// Reads the terminal until `want` shows (panics at its end first);
    /// what came after `want` is kept for the next call.
    pub fn expect(&mut self, want: &str) {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        while !self.seen.contains(want) {
            let n = self.master.read(&mut buf).unwrap_or(0);
            assert!(n > 0, "the terminal ended before {want:?}: {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        self.seen = self.seen.split_once(want).unwrap().1.to_string();
    }

    /// Resizes the terminal (its foreground process gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
        let rc = unsafe {
            libc::ioctl(
                self.master.as_raw_fd(),
                libc::TIOCSWINSZ,
                &winsize(rows, cols),
            )
        };
        assert_eq!(rc, 0, "TIOCSWINSZ");
    }
}

fn winsize(rows: u16, cols: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}
