//! Helpers shared by berth's integration tests: busybox root filesystems,
//! OCI bundles, and loud checks for the peers (runc, skopeo, containerd, ...)
//! a test needs. A missing peer is a test failure with a clear message, never
//! a silent skip.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod runtime;
pub mod user;

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Panics with a clear message unless `program` is found on PATH (or is an
/// existing absolute path). Returns its full path.
pub fn require_peer(program: &str) -> PathBuf {
    let candidate = Path::new(program);
    if candidate.is_absolute() && candidate.exists() {
        return candidate.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let full = dir.join(program);
        if full.is_file() {
            return full;
        }
    }
    panic!("this test needs `{program}`, which is not installed: run scripts/install-test-deps as root");
}

/// Panics with a clear message unless the test runs as root.
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test needs root (namespaces, mounts, cgroups): run the suite as root");
    }
}

/// Fills `rootfs` with a minimal busybox-static userland: /bin/busybox, one
/// symlink per applet in /bin, and the usual empty directories and /etc files.
pub fn busybox_rootfs(rootfs: &Path) {
    let busybox = require_peer(BUSYBOX);
    for dir in [
        "bin", "dev", "etc", "proc", "sys", "tmp", "root", "home", "var", "run",
    ] {
        fs::create_dir_all(rootfs.join(dir)).expect("create rootfs directory");
    }
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox into rootfs");
    let listing = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("run busybox --list");
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    fs::create_dir_all(rootfs.join("usr")).expect("create usr");
    let _ = symlink("../bin", rootfs.join("usr/bin"));
    let _ = symlink("../bin", rootfs.join("sbin"));
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nusers:x:100:\nnogroup:x:65534:\n",
    )
    .expect("write group");
    fs::set_permissions(
        rootfs.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod tmp");
}

/// A temporary OCI bundle: `dir/rootfs` holds busybox and `dir/config.json`
/// is the runtime spec. Dropping it removes the directory.
pub struct Bundle {
    /// The temporary directory holding the bundle.
    pub dir: tempfile::TempDir,
}

impl Bundle {
    /// Creates a busybox bundle whose config.json is `config` (a runtime spec
    /// as JSON, usually from [`default_spec`] adjusted by the test).
    pub fn new(config: &serde_json::Value) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .expect("tempdir");
        busybox_rootfs(&dir.path().join("rootfs"));
        let bundle = Bundle { dir };
        bundle.write_config(config);
        bundle
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Replaces config.json.
    pub fn write_config(&self, config: &serde_json::Value) {
        fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(config).expect("serialize config"),
        )
        .expect("write config.json");
    }
}

/// A runtime spec like `runc spec` writes (berth-runtime's template, not
/// rootless), running `args` without a terminal.
pub fn default_spec(args: &[&str]) -> serde_json::Value {
    let mut spec = berth_runtime::spec_template::default_spec_json(false);
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec
}

/// Runs `cmd` to completion and panics with its status, stdout and stderr
/// unless it exits 0; returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An OCI layout at `dir/layout` holding `busybox:latest`, built with umoci
/// from the host's busybox-static (`dir/rootfs`).
pub fn busybox_layout(dir: &Path) -> PathBuf {
    require_peer("umoci");
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let layout = dir.join("layout");
    let image = format!("{}:latest", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&rootfs)
            .arg("/"),
    );
    layout
}

/// A private containerd for one test, on its own socket and directories
/// (under the directory given to [`Containerd::start`]); killed on drop.
pub struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd (its CRI plugin off) with its state under `dir`
    /// and waits for its socket.
    pub fn start(dir: &Path) -> Containerd {
        require_peer("containerd");
        fs::create_dir_all(dir).expect("create the containerd directory");
        let root = dir.join("containerd-root");
        let state = dir.join("containerd-state");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root.display(),
                state.display(),
                socket.display(),
                socket.display()
            ),
        )
        .expect("write containerd config");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start containerd");
        let d = Containerd { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !d.socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not create {}",
                d.socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }

    /// A `ctr` command against this daemon, in the namespace `berth-test`.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require_peer("ctr"));
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth-test"])
            .args(args);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, unique container id for a test.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
