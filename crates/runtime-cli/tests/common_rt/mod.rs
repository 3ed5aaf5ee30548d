//! Shared helpers of the core lifecycle tests: a private `--root` per test,
//! busybox bundles, and runners that fail with the runtime's stderr.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use berth_testutil::{default_spec, require_root, unique_id, Bundle};
pub use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

/// A private state root.
pub struct Rt {
    pub root: tempfile::TempDir,
}

impl Default for Rt {
    fn default() -> Rt {
        Rt::new()
    }
}

impl Rt {
    pub fn new() -> Rt {
        require_root();
        Rt {
            root: tempfile::Builder::new()
                .prefix("berth-root-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// Runs berth-runtime with stdout and stderr going to files, not pipes:
    /// the container init of `create` inherits them (as with runc), so a
    /// pipe would only reach EOF when the container dies.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("temp stdout");
        let err = tempfile::tempfile().expect("temp stderr");
        let status = self
            .command(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("run berth-runtime");
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
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "berth-runtime {args:?} failed ({:?}): {}",
            out.status.code(),
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
        let out = self.cmd(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "berth-runtime {args:?} should fail with {code}; stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `create` (or `run -d` with `detach`) of `bundle` as `id`, asserting success.
    pub fn up(&self, bundle: &Bundle, id: &str, detach: bool) {
        let b = bundle.path().to_str().expect("utf-8 bundle path");
        if detach {
            self.ok(&["run", "-d", "--bundle", b, id]);
        } else {
            self.ok(&["create", "--bundle", b, id]);
        }
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    /// `run` of a bundle; returns (exit code, stdout, stderr).
    pub fn run(&self, bundle: &Bundle) -> (i32, String, String) {
        let id = unique_id("run");
        let out = self.cmd(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
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
        let (code, out, err) = self.run(&bundle);
        assert_eq!(
            code, 0,
            "container script failed: stdout {out} stderr {err}"
        );
        out
    }

    /// Waits (bounded by iterations, not time) until `id` reports `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..2000 {
            if self.state(id)["status"] == status {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("container {id} never became {status}: {}", self.state(id));
    }

    /// Entries left under the root.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Best-effort cleanup of containers a failed test left behind.
        if let Ok(d) = std::fs::read_dir(self.root.path()) {
            for e in d.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = Command::new(BIN)
                    .arg("--root")
                    .arg(self.root.path())
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
    }
}

/// A spec running `sleep 1000` (for create/start/exec tests).
pub fn sleeper() -> Value {
    default_spec(&["sleep", "1000"])
}
