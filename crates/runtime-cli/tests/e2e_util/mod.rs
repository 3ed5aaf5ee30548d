//! Helpers for the hooks, console and security end-to-end tests: drive the
//! runtime binary with a private `--root`, and clean up containers.
//!
//! The binary is `berth-runtime` (CARGO_BIN_EXE_berth-runtime); set
//! `BERTH_TEST_RUNTIME=/usr/sbin/runc` to run the same tests against runc,
//! which is how their expectations were checked.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The runtime under test.
pub fn runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_RUNTIME") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_berth-runtime") {
        Some(p) => PathBuf::from(p),
        None => panic!("set BERTH_TEST_RUNTIME to the runtime binary to test"),
    }
}

/// A private state root plus a scratch directory for one test; dropping it
/// force-deletes every container created through it.
pub struct Rt {
    /// `--root` of the runtime.
    pub root: tempfile::TempDir,
    /// Scratch space on the host (hook output, sockets, markers).
    pub scratch: tempfile::TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Rt {
    /// A fresh root; checks root privileges and the peers the tests use.
    pub fn new() -> Rt {
        berth_testutil::require_root();
        let root = tempfile::Builder::new()
            .prefix("berth-e2e-root-")
            .tempdir()
            .expect("tempdir");
        let scratch = tempfile::Builder::new()
            .prefix("berth-e2e-scratch-")
            .tempdir()
            .expect("tempdir");
        Rt {
            root,
            scratch,
            ids: Default::default(),
        }
    }

    /// `runtime --root <root> <args>`, not yet run.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Runs `runtime --root <root> <args>` to completion, stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn the runtime")
    }

    /// Like [`Rt::run`] but panics with the runtime's stderr on failure.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`{} {}` failed ({}): stdout: {} stderr: {}",
            runtime_bin().display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Remembers `id` for cleanup and runs `create --bundle <bundle> id`.
    /// The container inherits create's stdio, so stdout and stderr go to
    /// files (a pipe would stay open as long as the container lives); the
    /// returned output holds their contents.
    pub fn create(&self, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        self.ids.borrow_mut().push(id.to_string());
        let mut args = vec!["create", "--bundle", bundle.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        args.push(id);
        self.run_detached(&args)
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

    /// Polls until `id` is stopped (or gone).
    pub fn wait_stopped(&self, id: &str) {
        wait_until(&format!("container {id} to stop"), || {
            self.state(id).is_none_or(|s| s["status"] == "stopped")
        });
    }

    /// Runs a command whose children may outlive it (create, run -d,
    /// exec -d) with stdout/stderr in files, stdin from /dev/null.
    pub fn run_detached(&self, args: &[&str]) -> Output {
        let out_path = self.path(&format!("stdout-{}", unique()));
        let err_path = self.path(&format!("stderr-{}", unique()));
        let status = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("spawn the runtime");
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// `state id` parsed, or None when the runtime says it does not exist.
    pub fn state(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.run(&["state", id]);
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("state prints JSON"))
    }

    /// Entries under `--root` (runtime state directories).
    pub fn root_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A host path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self
                .cmd()
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Writes an executable `/bin/sh` script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// A bind mount of host `dir` at the same path inside the container, so
/// paths resolve identically in both mount namespaces.
pub fn same_path_bind(dir: &Path) -> serde_json::Value {
    serde_json::json!({
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
            // state is the field after the parenthesised comm
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Polls until `cond` holds; panics naming `what` if it never does (the
/// 60 s bound only turns a hang into a clear failure, it times nothing).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
