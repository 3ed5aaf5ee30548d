//! The harness of the `berth-runtime` CLI tests: a private state root
//! (`--root`) and scratch directory per test, runners that keep the
//! runtime's output in files (a container inherits its stdio, so a pipe
//! would only end when the container does), state queries, waits, and the
//! clean-up of every container a test leaves behind.
//!
//! ```no_run
//! use berth_testutil::runtime::*;
//!
//! let rt = Rt::new();
//! let bundle = Bundle::new(&sleeper());
//! let id = unique_id("demo");
//! rt.up(&bundle, &id, false);                      // create
//! assert_eq!(rt.state(&id)["status"], "created");
//! rt.ok(&["start", &id]);
//! ```
//!
//! The runtime under test is the `berth-runtime` that cargo built next to
//! the test binary; `BERTH_TEST_RUNTIME=/usr/sbin/runc` runs the same tests
//! against runc (how the hooks, console and security expectations were
//! checked).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use crate::{default_spec, require_root, unique_id, Bundle};
pub use serde_json::{json, Value};

/// The runtime binary under test: `$BERTH_TEST_RUNTIME`, else the
/// `berth-runtime` cargo built for these tests (in the directory above the
/// test binary's `deps/`).
pub fn runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_RUNTIME") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("berth-runtime"))
        .filter(|p| p.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "no berth-runtime binary beside {} (run the tests with `cargo test -p berth-runtime-cli`, or set BERTH_TEST_RUNTIME)",
            exe.display()
        )
    })
}

/// A private state root plus a scratch directory for one test. Dropping it
/// force-deletes every container left under the root.
pub struct Rt {
    /// `--root` of the runtime.
    pub root: tempfile::TempDir,
    /// Scratch space on the host (hook output, sockets, markers).
    pub scratch: tempfile::TempDir,
    bin: PathBuf,
}

impl Default for Rt {
    fn default() -> Rt {
        Rt::new()
    }
}

impl Rt {
    /// A fresh root; the test must run as root.
    pub fn new() -> Rt {
        require_root();
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("tempdir")
        };
        Rt {
            root: tmp("berth-root-"),
            scratch: tmp("berth-scratch-"),
            bin: runtime_bin(),
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The runtime binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A host path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// `runtime --root <root> <args>`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// Runs `runtime --root <root> <args>` to completion with stdin from
    /// /dev/null and stdout and stderr in files, not pipes: a container the
    /// command starts inherits them (as with runc), and a pipe would only
    /// reach EOF when that container dies.
    pub fn output(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("temp stdout");
        let err = tempfile::tempfile().expect("temp stderr");
        let status = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("run the runtime");
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.rewind().expect("rewind");
            f.read_to_end(&mut v).expect("read output");
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "`{} {}` failed ({}): stdout: {} stderr: {}",
            self.bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts exit status 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with(args, 1)
    }

    /// Runs and asserts exit status `code`; returns stderr.
    pub fn fails_with(&self, args: &[&str], code: i32) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "`{} {}` should fail with {code}; stdout {} stderr {}",
            self.bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `create --bundle <bundle> [extra...] <id>`; its output, not checked.
    pub fn create(&self, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["create", "--bundle", bundle.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        args.push(id);
        self.output(&args)
    }

    /// [`Rt::create`] that must succeed.
    pub fn create_ok(&self, id: &str, bundle: &Path) {
        let out = self.create(id, bundle, &[]);
        assert!(
            out.status.success(),
            "create {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates and starts `id`; both must succeed.
    pub fn start_new(&self, id: &str, bundle: &Path) {
        self.create_ok(id, bundle);
        self.ok(&["start", id]);
    }

    /// `create` (or `run -d` with `detach`) of `bundle` as `id`, asserting
    /// success.
    pub fn up(&self, bundle: &Bundle, id: &str, detach: bool) {
        if detach {
            let b = bundle.path().to_str().expect("utf-8 bundle path");
            self.ok(&["run", "-d", "--bundle", b, id]);
        } else {
            self.create_ok(id, bundle.path());
        }
    }

    /// `run` of a bundle under a fresh id; returns (exit code, stdout,
    /// stderr).
    pub fn run_bundle(&self, bundle: &Bundle) -> (i32, String, String) {
        let id = unique_id("run");
        let b = bundle.path().to_str().expect("utf-8 bundle path");
        let out = self.output(&["run", "--bundle", b, &id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `sh -c script` in a container built from `spec` (its args are
    /// replaced) and returns stdout, asserting exit 0.
    pub fn sh(&self, mut spec: Value, script: &str) -> String {
        spec["process"]["args"] = json!(["sh", "-c", script]);
        let bundle = Bundle::new(&spec);
        let (code, out, err) = self.run_bundle(&bundle);
        assert_eq!(
            code, 0,
            "container script failed: stdout {out} stderr {err}"
        );
        out
    }

    /// `state id` parsed; panics unless the runtime prints it.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state prints JSON")
    }

    /// `state id` parsed, or None when the runtime says it does not exist.
    pub fn try_state(&self, id: &str) -> Option<Value> {
        let out = self.output(&["state", id]);
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("state prints JSON"))
    }

    /// Waits until `id` reports `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        wait_until(&format!("container {id} to become {status}"), || {
            self.state(id)["status"] == status
        });
    }

    /// Waits until `id` is stopped (or gone).
    pub fn wait_stopped(&self, id: &str) {
        wait_until(&format!("container {id} to stop"), || {
            self.try_state(id).is_none_or(|s| s["status"] == "stopped")
        });
    }

    /// Entries left under the root (state directories, sockets), the
    /// runtime's cache aside.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name() != berth_runtime::CACHE_DIR)
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Best-effort clean-up of the containers a failed test left behind.
        for path in self.leftovers() {
            if let Some(id) = path.file_name().and_then(|n| n.to_str()) {
                let _ = self
                    .command(&["delete", "--force", id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A spec running `sleep 1000` (for create/start/exec tests).
pub fn sleeper() -> Value {
    default_spec(&["sleep", "1000"])
}

/// Writes an executable `/bin/sh` script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// A bind mount of host `dir` at the same path inside the container, so
/// paths resolve identically in both mount namespaces.
pub fn same_path_bind(dir: &Path) -> Value {
    json!({
        "destination": dir,
        "type": "bind",
        "source": dir,
        "options": ["rbind", "rw"]
    })
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised comm.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Polls until `cond` holds; panics naming `what` if it never does (the
/// 60 s bound only turns a hang into a clear failure, it times nothing).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
