//! Helpers shared by berth's integration tests: busybox root filesystems,
//! OCI bundles, and loud checks for the peers (runc, skopeo, containerd, ...)
//! a test needs. A missing peer is a test failure with a clear message, never
//! a silent skip.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod registry;
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
/// (under the directory given to [`Containerd::start`]); killed on drop,
/// with the shims it started.
pub struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
    dir: PathBuf,
    opts: ContainerdOptions,
}

/// How [`Containerd::start_with`] sets containerd up.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// A directory put first on containerd's PATH (where it finds shims).
    pub path_prefix: Option<PathBuf>,
    /// The namespace `ctr` works in.
    pub namespace: String,
    /// With `Some(toml)`, containerd's CRI plugin is on and `toml` (its
    /// `[plugins."io.containerd.grpc.v1.cri"]` tables) ends the config;
    /// with `None` (the default) the CRI plugin is disabled.
    pub cri: Option<String>,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        ContainerdOptions {
            path_prefix: None,
            namespace: "berth-test".into(),
            cri: None,
        }
    }
}

impl Containerd {
    /// Starts containerd (its CRI plugin off) with its state under `dir`
    /// and waits for its socket.
    pub fn start(dir: &Path) -> Containerd {
        Containerd::start_with(dir, ContainerdOptions::default())
    }

    /// [`Containerd::start`] with `opts`; containerd logs at debug level
    /// to `dir/containerd.log` (see [`Containerd::log_text`]).
    pub fn start_with(dir: &Path, opts: ContainerdOptions) -> Containerd {
        require_peer("containerd");
        fs::create_dir_all(dir).expect("create the containerd directory");
        let root = dir.join("containerd-root");
        let state = dir.join("containerd-state");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        // With the CRI plugin on, the snapshotters it cannot use here are
        // left out (each would only probe the machine and fail to load).
        let disabled = match opts.cri {
            None => "\"io.containerd.grpc.v1.cri\"",
            Some(_) => "\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\"",
        };
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [{disabled}]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n[debug]\n  address = \"\"\n  level = \"debug\"\n[metrics]\n  address = \"\"\n{}",
                root.display(),
                state.display(),
                socket.display(),
                socket.display(),
                opts.cri.as_deref().unwrap_or("")
            ),
        )
        .expect("write containerd config");
        let child = Containerd::spawn(dir, &opts);
        let mut d = Containerd {
            child,
            socket,
            dir: dir.to_path_buf(),
            opts,
        };
        d.wait_ready();
        d
    }

    fn spawn(dir: &Path, opts: &ContainerdOptions) -> std::process::Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .expect("open the containerd log");
        let mut cmd = Command::new(require_peer("containerd"));
        cmd.arg("--config")
            .arg(dir.join("containerd.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log);
        if let Some(prefix) = &opts.path_prefix {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let dirs = std::iter::once(prefix.clone()).chain(std::env::split_paths(&path));
            cmd.env(
                "PATH",
                std::env::join_paths(dirs).expect("PATH with the prefix"),
            );
        }
        cmd.spawn().expect("start containerd")
    }

    /// Waits until containerd answers (a readiness wait, not a timing
    /// assertion).
    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ok = self
                .ctr(&["version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited ({status}) before serving:\n{}",
                    self.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not answer on {} within 60 s:\n{}",
                self.socket.display(),
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills containerd (its shims and containers live on) and starts it
    /// again on the same state.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Containerd::spawn(&self.dir, &self.opts);
        self.wait_ready();
    }

    /// The socket containerd serves its gRPC API on (the CRI's too).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's log so far (its own lines and its shims').
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A `ctr` command against this daemon, in its namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require_peer("ctr"));
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.opts.namespace])
            .args(args);
        c
    }

    /// Imports a busybox image (built with umoci under `dir`, running `sh`
    /// with PATH set) as `berth.test/busybox:latest` and returns its name.
    pub fn import_busybox(&self, dir: &Path) -> String {
        let umoci = require_peer("umoci");
        let layout = busybox_layout(dir);
        let image = format!("{}:latest", layout.display());
        run_ok(Command::new(&umoci).args([
            "config",
            "--image",
            &image,
            "--config.cmd",
            "sh",
            "--config.env",
            "PATH=/bin:/sbin:/usr/bin",
        ]));
        let tarball = dir.join("busybox-oci.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&layout)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        );
        run_ok(
            self.ctr(&["images", "import", "--base-name", "berth.test/busybox"])
                .arg(&tarball),
        );
        "berth.test/busybox:latest".to_string()
    }

    /// Pids of the shims this containerd started (their command line names
    /// its socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.socket.to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != self.child.id() as i32)
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("containerd-shim") && cmdline.contains(&needle)
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
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
