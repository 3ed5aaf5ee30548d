//! berth-runtime on a pure cgroup v2 machine, for real: these VMs are
//! hybrid (v1 controllers plus a cgroup2 mount with only hugetlb), so the
//! test boots a guest that mounts nothing but cgroup2 and has every v2
//! controller (cpuset cpu io memory hugetlb pids rdma misc).
//!
//! The guest is QEMU in software emulation (`-accel tcg`: a KVM guest hangs
//! at boot on these VMs) booting Debian's kernel (`/boot/vmlinuz-*` from
//! linux-image-amd64; every cgroup controller is built in, the one module
//! loaded is brd from /lib/modules/VERSION, a ramdisk for the io checks)
//! with an initramfs the test builds with cpio: busybox-static, the
//! static berth-runtime cargo built (stripped), the guest's init
//! (`tests/v2-guest/init.sh`) and one bundle per check group, all sharing a
//! busybox root filesystem. The init checks each resource twice, the value
//! in the kernel's file and the behaviour (OOM kill, refused fork,
//! throttling, freezing, device opens, `update`, `events --stats`, `ps`,
//! podman's `--memory 64m --pids-limit 20 --cpus 0.5` as its spec), and
//! reports `BERTH-V2 ok NAME` / `BERTH-V2 fail NAME: REASON` lines on the
//! serial console, which this test parses. It fails with the whole console
//! log when a check fails or is missing, or when the guest cannot boot or
//! does not power off within the (generous) time limit.
//!
//! Run it alone (as root, after `scripts/install-test-deps`):
//! `cargo test -p berth-runtime-cli --test cgroup_v2_guest`.
//! `BERTH_V2_KERNEL=/path/vmlinuz` picks another kernel; the guest's
//! console log is kept in the test's temporary directory only while it runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testutil::{busybox_rootfs, default_spec, require_peer, require_root, run_ok};
use serde_json::{json, Value};

/// The guest's init script.
const INIT: &str = include_str!("v2-guest/init.sh");

/// How long the guest may take to boot, check and power off. TCG on two
/// busy cores is slow; a normal run takes well under a minute.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Every check the guest must report ok, in its order.
const EXPECTED: &[&str] = &[
    "only-cgroup2-mounted",
    "controllers-available",
    "controllers-enabled",
    "memory-up",
    "memory-max-file",
    "memory-max-inside",
    "exec-cgroup-namespace",
    "memory-oom-kill",
    "memory-oom-in-stats",
    "memory-down",
    "pids-up",
    "pids-max-file",
    "pids-fork-refused",
    "pids-update-allows-fork",
    "kill-all",
    "pids-down",
    "cpu-up",
    "cpu-max-file",
    "cpu-weight-file",
    "cpu-quota-throttles",
    "cpuset-file",
    "cpuset-affinity",
    "events-stats",
    "update-files",
    "update-affinity",
    "cpu-down",
    "freeze-up",
    "freeze-counting",
    "pause-stops-progress",
    "exec-paused-refused",
    "resume-restarts-progress",
    "ps-lists-the-container",
    "stats-unlimited",
    "delete-paused",
    "devices-up",
    "device-rules-enforced",
    "devices-down",
    "podman-up",
    "podman-memory-max",
    "podman-memory-swap-max",
    "podman-pids-max",
    "podman-cpu-max",
    "podman-limits-inside",
    "update-period-keeps-quota",
    "update-swap-alone",
    "update-memory-keeps-swap",
    "podman-down",
    "files-up",
    "hugetlb-max-file",
    "io-weight-file",
    "io-max-file",
    "block-device-rule",
    "io-accounted",
    "memory-low-file",
    "memory-swap-max-file",
    "cpu-idle-file",
    "cpu-burst-file",
    "io-stats",
    "hugetlb-limit-enforced",
    "hugetlb-stats",
    "unified-file",
    "controllers-delegated",
    "files-down",
    "run-foreground",
    "relative-cgroups-path",
    "relative-down",
    "busy-parent-refused-clearly",
    "rootless-delegation",
    "rootless-delegated-limits",
    "rootless-undelegated-refused",
];

/// The guest's bundles: name, process args, `linux.resources` added to the
/// template's (whose device rules deny everything but runc's defaults) and
/// other `linux` fields.
fn bundles() -> Vec<(&'static str, Vec<&'static str>, Value, Value)> {
    let idle = vec!["sleep", "100000"];
    let none = json!({});
    vec![
        (
            "memory",
            idle.clone(),
            json!({"memory": {"limit": 32 << 20}}),
            none.clone(),
        ),
        (
            "pids",
            idle.clone(),
            json!({"pids": {"limit": 8}}),
            none.clone(),
        ),
        (
            "cpu",
            vec!["sh", "-c", "while :; do :; done"],
            json!({"cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0"}}),
            none.clone(),
        ),
        (
            "freeze",
            vec![
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i >/tmp/freeze.count; usleep 20000; done",
            ],
            json!({}),
            none.clone(),
        ),
        (
            "devices",
            idle.clone(),
            json!({"devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"},
            ]}),
            none.clone(),
        ),
        // podman run --memory 64m --pids-limit 20 --cpus 0.5: podman sets
        // memory+swap to twice the memory when --memory-swap is not given.
        (
            "podman",
            idle.clone(),
            json!({
                "memory": {"limit": 64 << 20, "swap": 128 << 20},
                "pids": {"limit": 20},
                "cpu": {"quota": 50000, "period": 100000},
            }),
            none.clone(),
        ),
        // /dev/ram0 (brd, loaded by the guest): created from linux.devices
        // and, as with runc, readable only through an explicit rule.
        (
            "files",
            idle,
            json!({
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "b", "major": 1, "minor": 0, "access": "r"},
                ],
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
                "blockIO": {
                    "weight": 500,
                    "throttleReadBpsDevice": [{"major": 1, "minor": 0, "rate": 10 << 20}],
                },
                "memory": {"reservation": 16 << 20, "swap": -1},
                "cpu": {"idle": 1, "burst": 1000},
                "unified": {"memory.high": "52428800"},
            }),
            json!({"devices": [{"path": "/dev/ram0", "type": "b", "major": 1, "minor": 0}]}),
        ),
        (
            "run",
            vec!["cat", "/sys/fs/cgroup/pids.max"],
            json!({"pids": {"limit": 7}}),
            none,
        ),
        // No cgroupsPath: the container id, beside the caller's own cgroup.
        (
            "relative",
            vec!["sleep", "100000"],
            json!({"pids": {"limit": 9}}),
            json!({"cgroupsPath": ""}),
        ),
    ]
}

/// The runtime spec of bundle `name`: the template with a cgroup namespace,
/// hugetlbfs on /huge, a writable shared root filesystem, its cgroup at /berth/NAME, and the
/// given resources and `linux` fields.
fn spec(name: &str, args: &[&str], resources: &Value, linux: &Value) -> Value {
    let mut spec = default_spec(args);
    spec["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/huge", "type": "hugetlbfs", "source": "hugetlbfs",
        "options": ["pagesize=2M"],
    }));
    spec["root"] = json!({"path": "/rootfs", "readonly": false});
    spec["linux"]["cgroupsPath"] = json!(format!("/berth/{name}"));
    for (k, v) in linux.as_object().expect("linux fields") {
        spec["linux"][k] = v.clone();
    }
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "cgroup"}));
    let res = spec["linux"]["resources"]
        .as_object_mut()
        .expect("the template has resources");
    for (k, v) in resources.as_object().expect("resources object") {
        res.insert(k.clone(), v.clone());
    }
    spec
}

/// A rootless bundle (`runc spec --rootless` mapping root to uid and gid
/// 1000) with a pids limit of 8 and its cgroup at `cgroups_path`, printing
/// the limit and its uid map.
fn rootless_spec(cgroups_path: &str) -> Value {
    let mut spec = berth_runtime::spec_template::default_spec_json(true);
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = json!(["sh", "-c", "cat /sys/fs/cgroup/pids.max /proc/self/uid_map"]);
    spec["root"] = json!({"path": "/rootfs", "readonly": true});
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    spec["linux"]["cgroupsPath"] = json!(cgroups_path);
    spec["linux"]["resources"] = json!({"pids": {"limit": 8}});
    spec
}

/// The kernel to boot: `$BERTH_V2_KERNEL`, else the newest /boot/vmlinuz-*.
fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("BERTH_V2_KERNEL") {
        return PathBuf::from(k);
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "this test boots Debian's kernel and found no /boot/vmlinuz-*: \
             run scripts/install-test-deps (it installs linux-image-amd64) or set BERTH_V2_KERNEL"
        )
    })
}

/// The modules of `kernel` (/boot/vmlinuz-VERSION): /lib/modules/VERSION.
fn modules(kernel: &Path) -> PathBuf {
    let name = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let version = name.strip_prefix("vmlinuz-").unwrap_or_else(|| {
        panic!(
            "{}: the kernel's file must be named vmlinuz-VERSION, for its modules in /lib/modules/VERSION",
            kernel.display()
        )
    });
    Path::new("/lib/modules").join(version)
}

/// Builds the guest's initramfs (a newc cpio archive) in `dir`.
fn initramfs(dir: &Path, kernel: &Path) -> PathBuf {
    let stage = dir.join("stage");
    busybox_rootfs(&stage);
    busybox_rootfs(&stage.join("rootfs"));
    run_ok(
        Command::new(require_peer("strip"))
            .arg("-o")
            .arg(stage.join("bin/berth-runtime"))
            .arg(env!("CARGO_BIN_EXE_berth-runtime")),
    );
    let brd = modules(kernel).join("kernel/drivers/block/brd.ko");
    fs::create_dir_all(stage.join("lib")).expect("create lib");
    fs::copy(&brd, stage.join("lib/brd.ko")).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} (the ramdisk module, a block device for io.max): {e}: \
             run scripts/install-test-deps",
            brd.display()
        )
    });
    let init = stage.join("init");
    fs::write(&init, INIT).expect("write the guest's init");
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).expect("chmod init");
    for (name, args, resources, linux) in bundles() {
        let bundle = stage.join("bundles").join(name);
        fs::create_dir_all(&bundle).expect("create bundle");
        let config =
            serde_json::to_vec_pretty(&spec(name, &args, &resources, &linux)).expect("json");
        fs::write(bundle.join("config.json"), config).expect("write config.json");
    }
    for (name, path) in [
        ("rootless", "/user1000/c"),
        ("rootless-elsewhere", "/rl-elsewhere"),
    ] {
        let bundle = stage.join("bundles").join(name);
        fs::create_dir_all(&bundle).expect("create bundle");
        let config = serde_json::to_vec_pretty(&rootless_spec(path)).expect("json");
        fs::write(bundle.join("config.json"), config).expect("write config.json");
    }
    let cpio = dir.join("initramfs.cpio");
    let out = fs::File::create(&cpio).expect("create initramfs.cpio");
    let files = run_ok(Command::new("find").arg(".").current_dir(&stage)).stdout;
    let mut child = Command::new(require_peer("cpio"))
        .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .expect("run cpio");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("cpio stdin");
        stdin.write_all(&files).expect("feed cpio");
    }
    assert!(
        child.wait().expect("wait for cpio").success(),
        "cpio failed"
    );
    cpio
}

/// Boots the guest and returns its console log; panics (with the log) if
/// it does not power off within [`GUEST_TIMEOUT`].
fn boot(kernel: &Path, initrd: &Path, log: &Path) -> String {
    let mut qemu = Command::new(require_peer("qemu-system-x86_64"));
    qemu.args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = qemu.spawn().expect("start qemu-system-x86_64");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if start.elapsed() > GUEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the guest did not power off within {GUEST_TIMEOUT:?}; its console:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    let console = fs::read_to_string(log).unwrap_or_default();
    assert!(
        status.success(),
        "qemu exited with {status}: {stderr}\nthe guest's console:\n{console}"
    );
    eprintln!(
        "the guest ran for {:?}; its console:\n{console}",
        start.elapsed()
    );
    console
}

#[test]
fn pure_cgroup_v2_guest_checks_every_resource() {
    require_root();
    let kernel = kernel();
    assert!(
        fs::File::open(&kernel).is_ok(),
        "cannot read the kernel {}: run as root (Debian's vmlinuz is mode 0600)",
        kernel.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("berth-v2-guest-")
        .tempdir()
        .expect("tempdir");
    let initrd = initramfs(dir.path(), &kernel);
    let console = boot(&kernel, &initrd, &dir.path().join("console.log"));

    let reports: Vec<&str> = console
        .lines()
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .split_once("BERTH-V2 ")
                .map(|x| x.1)
        })
        .collect();
    let failed: Vec<&str> = reports
        .iter()
        .copied()
        .filter(|r| r.starts_with("fail "))
        .collect();
    let missing: Vec<&str> = EXPECTED
        .iter()
        .copied()
        .filter(|name| !reports.contains(&format!("ok {name}").as_str()))
        .collect();
    let done = reports.iter().any(|r| r.starts_with("done"));
    assert!(
        failed.is_empty() && missing.is_empty() && done,
        "the v2 guest reported failures: {failed:#?}\nmissing: {missing:?}\nfinished: {done}\n\
         the guest's console:\n{console}"
    );
}
