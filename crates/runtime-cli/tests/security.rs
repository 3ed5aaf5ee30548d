//! Security regression tests for the runtime binary, one per known runc
//! escape class:
//! - CVE-2019-5736: a container process must never get hold of the host's
//!   runtime binary through `/proc/<pid>/exe` while the runtime `exec`s into
//!   the container (an attacker that can open it can overwrite it once the
//!   runtime exits). The attack is driven deterministically: the exec'd
//!   program is a script whose interpreter is `/proc/self/exe`, which makes
//!   the kernel run the runtime's own binary inside the container, while an
//!   attacker (this test binary, copied into the rootfs) grabs every
//!   `/proc/<pid>/exe` it can open;
//! - CVE-2024-21626: no runtime descriptor is open in the container, and a
//!   `cwd` of `/proc/self/fd/N` cannot leave the container's root;
//! - CVE-2021-30465: a mount destination that is a symlink pointing outside
//!   the rootfs, and a maskedPath that is a symlink to a host file, stay
//!   inside the rootfs: the host is untouched.
//!
//! Checked against runc 1.1.5 with `BERTH_TEST_RUNTIME=/usr/sbin/runc`: all
//! pass (runc exposes its binary only through a read-only bind mount).
//!
//! History (all pass since): berth-runtime failed
//! `cve_2019_5736_runtime_binary_not_reachable_from_container` (the attacker
//! opened the host binary read-write through `/proc/<pid>/exe` of a
//! `#!/proc/self/exe` exec) until 01447db re-executed the runtime from a
//! read-only detached bind mount of itself; and both `cve_2024_21626_*cwd*`
//! tests (`exec --cwd /proc/self/fd/8` landed in the host's
//! `/sys/fs/cgroup/unified/<id>` through a cgroup directory fd still open at
//! chdir, and `cd ../..` reached the host's `/`) until 7e65475 closed host
//! directory fds before the chdir and checked getcwd() afterwards.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_testutil::runtime::*;

/// Env var that turns [`attacker_role`] on inside the container.
const ATTACKER_ENV: &str = "BERTH_SECURITY_ATTACKER";

/// Copies `exe` and the shared libraries it needs (from `ldd`) into `rootfs`
/// at the same paths, so it runs in a busybox rootfs.
fn install_with_libs(exe: &Path, rootfs: &Path, dest: &str) {
    fs::copy(exe, rootfs.join(dest.trim_start_matches('/'))).expect("copy test binary");
    let out = Command::new("ldd").arg(exe).output().expect("run ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(lib) = path {
            let target = rootfs.join(lib.trim_start_matches('/'));
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::copy(lib, &target).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

/// Not a test of its own: the attacker half of
/// [`cve_2019_5736_runtime_binary_not_reachable_from_container`], run by
/// that test inside the container (this binary is copied into the rootfs).
/// Outside that setting (the env var unset) it does nothing.
#[test]
fn attacker_role() {
    let Ok(target) = std::env::var(ATTACKER_ENV) else {
        return;
    };
    // target = "<dev>:<ino>" of the host runtime binary
    let (dev, ino) = target.split_once(':').expect("dev:ino");
    let (dev, ino): (u64, u64) = (dev.parse().unwrap(), ino.parse().unwrap());
    let me = std::process::id().to_string();
    let mut seen = std::collections::HashSet::new();
    let mut held = Vec::new();
    println!("READY");
    loop {
        let stop = Path::new("/dev/shm/stop").exists();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                continue;
            }
            // O_PATH is all the real exploit needs.
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags_path()
                .open(format!("/proc/{name}/exe"));
            if let Ok(f) = opened {
                let m = f.metadata().unwrap();
                if seen.insert((name.clone(), m.dev(), m.ino())) {
                    println!("CAUGHT {name} {}:{}", m.dev(), m.ino());
                    if m.dev() == dev && m.ino() == ino {
                        // runc hands out a read-only bind mount of its binary
                        // (or a sealed memfd): same inode, but not writable.
                        let mode = if mount_is_read_only(&f) { "ro" } else { "rw" };
                        println!("HOSTBIN {name} {mode}");
                        held.push(f);
                    }
                }
            }
        }
        if stop {
            break;
        }
    }
    // The second half of the exploit: reopen the held binary for writing
    // once nobody executes it. Never write: only report.
    for f in &held {
        let fd = std::os::fd::AsRawFd::as_raw_fd(f);
        match fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
        {
            Ok(_) => println!("WRITABLE {fd}"),
            Err(e) => println!("NOTWRITABLE {fd} {e}"),
        }
    }
    println!("DONE");
}

/// `OpenOptions` with O_PATH.
trait PathOpen {
    fn custom_flags_path(&mut self) -> &mut Self;
}

impl PathOpen for fs::OpenOptions {
    fn custom_flags_path(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_PATH)
    }
}

/// Whether the mount `f` was opened through is read-only (fstatvfs).
fn mount_is_read_only(f: &fs::File) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the statvfs it is given; `f` is an open fd.
    let ret = unsafe { libc::fstatvfs(std::os::fd::AsRawFd::as_raw_fd(f), st.as_mut_ptr()) };
    if ret != 0 {
        return false;
    }
    // SAFETY: fstatvfs succeeded, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    st.f_flag & libc::ST_RDONLY != 0
}

/// An attacker (this test binary in the rootfs, [`attacker_role`]) exec'd
/// into a container, scanning `/proc/*/exe` until told to stop.
struct Attacker {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    report: Vec<String>,
}

/// A bundle whose rootfs holds the attacker and `/evil`, a
/// `#!/proc/self/exe` script, running `args`.
fn attack_bundle(args: &[&str]) -> berth_testutil::Bundle {
    let mut spec = berth_testutil::default_spec(args);
    spec["root"]["readonly"] = json!(false);
    let bundle = berth_testutil::Bundle::new(&spec);
    let rootfs = bundle.rootfs();
    let me = std::env::current_exe().expect("current exe");
    install_with_libs(&me, &rootfs, "/attacker");
    // The runtime's libraries too, so its binary could run in there.
    install_with_libs(&runtime_bin(), &rootfs, "/runtime-copy");
    fs::write(rootfs.join("evil"), "#!/proc/self/exe\n").unwrap();
    fs::set_permissions(rootfs.join("evil"), fs::Permissions::from_mode(0o755)).unwrap();
    bundle
}

impl Attacker {
    /// Execs the attacker into container `id`, looking for the host binary
    /// `bin`; returns once it scans.
    fn start(rt: &Rt, id: &str, bin: &Path) -> Attacker {
        let meta = fs::metadata(bin).expect("runtime binary");
        let mut child = rt
            .command(&[])
            .args([
                "exec",
                "--env",
                &format!("{ATTACKER_ENV}={}:{}", meta.dev(), meta.ino()),
                id,
                "/attacker",
                "--exact",
                "attacker_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attacker exec");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut report = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            // libtest prints "test attacker_role ... " before the first line
            let ready = line.ends_with("READY");
            report.push(line);
            if ready {
                break;
            }
        }
        assert!(
            report.iter().any(|l| l.ends_with("READY")),
            "attacker did not start: {report:?}"
        );
        Attacker {
            child,
            lines,
            report,
        }
    }

    /// Stops the attacker (through another exec) and checks it never held
    /// the host binary writable.
    fn finish(mut self, rt: &Rt, id: &str, bin: &Path) {
        rt.ok(&["exec", id, "touch", "/dev/shm/stop"]);
        for line in self.lines {
            self.report.push(line.unwrap());
        }
        self.child.wait().unwrap();
        let report = self.report.join("\n");
        assert!(report.contains("DONE"), "attacker did not finish: {report}");
        assert!(
            !report
                .lines()
                .any(|l| l.starts_with("HOSTBIN") && l.ends_with(" rw")),
            "a container process opened the host runtime binary {} through /proc/<pid>/exe \
             (CVE-2019-5736): the runtime must not expose its own binary inside the container \
             (re-exec from a sealed memfd or read-only copy, stay non-dumpable until exec):\n{report}",
            bin.display()
        );
        assert!(
            !report.lines().any(|l| l.starts_with("WRITABLE")),
            "{report}"
        );
    }
}

#[test]
fn cve_2019_5736_runtime_binary_not_reachable_from_container() {
    let rt = Rt::new();
    let bundle = attack_bundle(&["sleep", "1000"]);
    let bin = runtime_bin();
    let before = fs::read(&bin).unwrap();
    let id = berth_testutil::unique_id("sec-5736");
    rt.start_new(&id, bundle.path());
    let attacker = Attacker::start(&rt, &id, &bin);
    // Make the runtime exec into the container, including through a
    // `#!/proc/self/exe` script, several times.
    for _ in 0..10 {
        let _ = rt.output(&["exec", &id, "/evil"]);
        let _ = rt.output(&["exec", &id, "true"]);
    }
    attacker.finish(&rt, &id, &bin);
    assert!(
        fs::read(&bin).unwrap() == before,
        "the runtime binary changed"
    );
}

/// A created container's init runs the runtime's code until `start` (with
/// berth-runtime's exec trampoline, from the host binary itself): a process
/// exec'd into the container meanwhile must not get hold of that binary.
#[test]
fn cve_2019_5736_created_init_not_reachable_from_container() {
    let rt = Rt::new();
    let bundle = attack_bundle(&["sleep", "1000"]);
    let bin = runtime_bin();
    let id = berth_testutil::unique_id("sec-5736c");
    rt.create_ok(&id, bundle.path());
    let attacker = Attacker::start(&rt, &id, &bin);
    // Let it scan the waiting init for a while.
    for _ in 0..5 {
        rt.ok(&["exec", &id, "true"]);
    }
    attacker.finish(&rt, &id, &bin);
    rt.ok(&["start", &id]);
    let state = rt.try_state(&id).expect("state");
    assert_eq!(state["status"], "running", "{state}");
}

/// A process with CAP_SYS_PTRACE could open even a non-dumpable init's
/// exe: exec'ing one before `start` (while the init still runs the host
/// binary) is refused with a clear error, and allowed once started.
#[test]
fn cve_2019_5736_no_ptrace_capable_exec_into_a_created_container() {
    let rt = Rt::new();
    let mut spec = berth_testutil::default_spec(&["sleep", "1000"]);
    spec["root"]["readonly"] = json!(false);
    let bundle = berth_testutil::Bundle::new(&spec);
    let id = berth_testutil::unique_id("sec-5736p");
    rt.create_ok(&id, bundle.path());
    rt.ok(&["exec", &id, "true"]);
    let out = rt.output(&["exec", "--cap", "CAP_SYS_PTRACE", &id, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // runc's init is a sealed copy already, so runc allows this exec.
    if runtime_bin().ends_with("berth-runtime") {
        assert!(
            !out.status.success() && err.contains("CAP_SYS_PTRACE") && err.contains("start"),
            "exec with CAP_SYS_PTRACE into a created container: {:?} {err}",
            out.status
        );
    }
    rt.ok(&["start", &id]);
    rt.ok(&["exec", "--cap", "CAP_SYS_PTRACE", &id, "true"]);
}

/// The container's own process is a `#!/proc/self/exe` script: the kernel
/// resolves the interpreter in the init at its final exec. berth-runtime
/// execs through its sealed trampoline, which refuses to run as an
/// interpreter (exit 127, no output); were it the runtime binary, that
/// binary would run as the container's pid 1 (with runc: its read-only
/// copy, which prints its usage).
#[test]
fn cve_2019_5736_proc_self_exe_entrypoint_does_not_run_the_runtime() {
    let rt = Rt::new();
    let bundle = attack_bundle(&["/evil", "--version"]);
    let id = berth_testutil::unique_id("sec-5736e");
    let out = rt.output(&["run", "-b", bundle.path().to_str().unwrap(), &id]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(127), "{text}");
    assert!(
        text.is_empty(),
        "the runtime binary ran as the container's process: {text}"
    );
}

/// Lists `/proc/self/fd` of a process in the container as "fd target" lines,
/// and fails on any descriptor other than stdio and the listing's own.
fn assert_no_leaked_fds(listing: &str, what: &str) {
    let mut fds = 0;
    for line in listing.lines().filter(|l| l.contains("->")) {
        fds += 1;
        // busybox ls -l: "lrwx------ 1 0 0 64 Nov 27 21:00 3 -> /proc/5/fd"
        let (left, target) = line.split_once(" -> ").unwrap();
        let fd: u32 = left.split_whitespace().last().unwrap().parse().unwrap();
        let ok = fd <= 2 || (target.starts_with("/proc/") && target.ends_with("/fd"));
        assert!(
            ok,
            "{what}: descriptor {fd} -> {target} is open in the container (CVE-2024-21626 class):\n{listing}"
        );
    }
    assert!(fds >= 3, "{what}: unexpected listing:\n{listing}");
}

#[test]
fn cve_2024_21626_no_runtime_fds_in_container() {
    let rt = Rt::new();
    let out_dir = rt.path("out");
    fs::create_dir(&out_dir).unwrap();
    let listing = out_dir.join("init-fds");
    let cmd = format!(
        "ls -l /proc/self/fd > {l}.tmp; mv {l}.tmp {l}; exec sleep 1000",
        l = listing.display()
    );
    let mut spec = berth_testutil::default_spec(&["sh", "-c", &cmd]);
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(same_path_bind(&out_dir));
    let bundle = berth_testutil::Bundle::new(&spec);
    let id = berth_testutil::unique_id("sec-fds");
    rt.start_new(&id, bundle.path());
    wait_until("the init to list its fds", || listing.exists());
    assert_no_leaked_fds(&fs::read_to_string(&listing).unwrap(), "container init");

    let out = rt.ok(&["exec", &id, "ls", "-l", "/proc/self/fd"]);
    assert_no_leaked_fds(&out, "exec'd process");
}

#[test]
fn cve_2024_21626_cwd_cannot_escape_through_a_leaked_fd() {
    let rt = Rt::new();
    let out_dir = rt.path("out");
    fs::create_dir(&out_dir).unwrap();
    // busybox's rootfs has no /etc/debian_version; the host (Debian) does.
    assert!(
        Path::new("/etc/debian_version").exists(),
        "this test tells host from container by /etc/debian_version"
    );
    for n in 3..=9 {
        let result = out_dir.join(format!("cwd-{n}"));
        let cmd = format!(
            "cd ../../../../../../../../..; \
             if [ -e etc/debian_version ]; then echo ESCAPED; else echo CONFINED; fi > {r}",
            r = result.display()
        );
        let mut spec = berth_testutil::default_spec(&["sh", "-c", &cmd]);
        spec["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(same_path_bind(&out_dir));
        let bundle = berth_testutil::Bundle::new(&spec);
        let id = berth_testutil::unique_id("sec-cwd");
        let out = rt.create(&id, bundle.path(), &[]);
        if !out.status.success() {
            // Refusing the cwd is a correct answer.
            continue;
        }
        if !rt.output(&["start", &id]).status.success() {
            continue;
        }
        rt.wait_stopped(&id);
        if let Ok(r) = fs::read_to_string(&result) {
            assert_eq!(
                r.trim(),
                "CONFINED",
                "cwd /proc/self/fd/{n} reached the host's root (CVE-2024-21626)"
            );
        }
        let _ = rt.output(&["delete", "--force", &id]);
    }
}

#[test]
fn cve_2024_21626_exec_cwd_cannot_escape_through_a_leaked_fd() {
    let rt = Rt::new();
    assert!(
        Path::new("/etc/debian_version").exists(),
        "this test tells host from container by /etc/debian_version"
    );
    let bundle = berth_testutil::Bundle::new(&berth_testutil::default_spec(&["sleep", "1000"]));
    let id = berth_testutil::unique_id("sec-execcwd");
    rt.start_new(&id, bundle.path());
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = rt.output(&[
            "exec",
            "--cwd",
            &cwd,
            &id,
            "sh",
            "-c",
            "cd ../../../../../../../../..; \
             if [ -e etc/debian_version ]; then echo ESCAPED; else echo CONFINED; fi",
        ]);
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "CONFINED",
                "exec --cwd {cwd} reached the host's root (CVE-2024-21626)"
            );
        }
    }
}

/// Host paths a symlinked mount destination or masked path could reach.
struct HostTargets {
    dir: PathBuf,
    file: PathBuf,
}

fn host_targets(rt: &Rt) -> HostTargets {
    let dir = rt.path("host-dir");
    fs::create_dir(&dir).unwrap();
    let file = rt.path("host-file");
    fs::write(&file, "host secret\n").unwrap();
    HostTargets { dir, file }
}

fn host_mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn cve_2021_30465_symlinked_mount_destination_stays_in_rootfs() {
    let rt = Rt::new();
    let host = host_targets(&rt);
    let out_dir = rt.path("out");
    fs::create_dir(&out_dir).unwrap();
    let seen = out_dir.join("seen");
    let cmd = format!("echo started > {}; exec sleep 1000", seen.display());
    let mut spec = berth_testutil::default_spec(&["sh", "-c", &cmd]);
    spec["root"]["readonly"] = json!(false);
    let marker = format!("berth-escape-{}", std::process::id());
    let mounts = spec["mounts"].as_array_mut().unwrap();
    // absolute symlink to a host directory
    mounts.push(json!({"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"}));
    // relative symlink climbing out of the rootfs
    mounts.push(json!({"destination": "/rel/sub", "type": "tmpfs", "source": "tmpfs"}));
    // symlink to / : a mount "under /" must land in the container's /
    mounts.push(json!({"destination": format!("/rootlink/tmp/{marker}"), "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(same_path_bind(&out_dir));
    let bundle = berth_testutil::Bundle::new(&spec);
    let rootfs = bundle.rootfs();
    symlink(&host.dir, rootfs.join("escape")).unwrap();
    let up = "../".repeat(rootfs.components().count() + 2);
    symlink(
        format!("{up}{}", host.dir.to_str().unwrap().trim_start_matches('/')),
        rootfs.join("rel"),
    )
    .unwrap();
    symlink("/", rootfs.join("rootlink")).unwrap();

    let id = berth_testutil::unique_id("sec-mountlink");
    let out = rt.create(&id, bundle.path(), &[]);
    let created = out.status.success();
    if created {
        rt.ok(&["start", &id]);
        wait_until("the container to report its mounts", || seen.exists());
    }
    // Whether the runtime refused or confined the mounts, the host is untouched.
    let entries: Vec<_> = fs::read_dir(&host.dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        entries.is_empty(),
        "the runtime created {entries:?} on the host through a symlinked mount destination (CVE-2021-30465)"
    );
    assert!(
        host_mounts_under(&host.dir).is_empty(),
        "mount on the host: {:?}",
        host_mounts_under(&host.dir)
    );
    let host_tmp = Path::new("/tmp").join(&marker);
    assert!(
        !host_tmp.exists(),
        "{} was created on the host",
        host_tmp.display()
    );
    if created {
        // The mounts landed inside the rootfs instead.
        assert!(
            rootfs
                .join(host.dir.strip_prefix("/").unwrap())
                .join("sub")
                .is_dir(),
            "the symlinked destination should resolve inside the rootfs"
        );
        assert!(rootfs.join("tmp").join(&marker).is_dir());
    }
}

#[test]
fn cve_2021_30465_symlinked_masked_path_stays_in_rootfs() {
    let rt = Rt::new();
    let host = host_targets(&rt);
    let out_dir = rt.path("out");
    fs::create_dir(&out_dir).unwrap();
    let seen = out_dir.join("seen");
    let cmd = format!(
        "cat /masklink > {s}.tmp 2>&1; mv {s}.tmp {s}; exec sleep 1000",
        s = seen.display()
    );
    let mut spec = berth_testutil::default_spec(&["sh", "-c", &cmd]);
    spec["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .extend([json!("/masklink"), json!("/maskdir")]);
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(same_path_bind(&out_dir));
    let bundle = berth_testutil::Bundle::new(&spec);
    symlink(&host.file, bundle.rootfs().join("masklink")).unwrap();
    symlink(&host.dir, bundle.rootfs().join("maskdir")).unwrap();

    let id = berth_testutil::unique_id("sec-masklink");
    let out = rt.create(&id, bundle.path(), &[]);
    if out.status.success() {
        rt.ok(&["start", &id]);
        wait_until("the container to read the masked path", || seen.exists());
        let inside = fs::read_to_string(&seen).unwrap();
        assert!(
            !inside.contains("host secret"),
            "the container read the host file through a masked symlink: {inside}"
        );
    }
    assert_eq!(fs::read_to_string(&host.file).unwrap(), "host secret\n");
    assert!(host_mounts_under(&host.file).is_empty());
    assert!(host_mounts_under(&host.dir).is_empty());
    assert_eq!(fs::read_dir(&host.dir).unwrap().count(), 0);
}
