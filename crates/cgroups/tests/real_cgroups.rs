//! The manager against this machine's real cgroupfs, as root. Every test
//! uses its own uniquely named cgroup and removes it, so they run in parallel.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use berth_cgroups::{manager, Hierarchy, Manager};
use berth_testutil::{require_peer, require_root, BUSYBOX};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

/// A uniquely named cgroup plus a busybox shell parked on `read`, waiting
/// to be moved into it. Dropping it kills everything inside and removes the
/// cgroup.
struct Fixture {
    cg: Box<dyn Manager>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        require_root();
        let path = format!("/berth-test-{test}-{}", std::process::id());
        let cg = manager(&path, test).expect("manager");
        Fixture {
            cg,
            child: None,
            stdin: None,
            stdout: None,
        }
    }

    /// Starts `sh -c 'read go; SCRIPT'` and moves it into the cgroup; the
    /// script runs once [`Fixture::go`] is called.
    fn spawn(&mut self, script: &str) -> i32 {
        let busybox = require_peer(BUSYBOX);
        let mut child = Command::new(busybox)
            .args(["sh", "-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn busybox sh");
        let pid = child.id() as i32;
        self.stdin = child.stdin.take();
        self.stdout = child.stdout.take().map(BufReader::new);
        self.child = Some(child);
        self.cg.apply(pid).expect("apply");
        pid
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("spawned");
        stdin.write_all(b"go\n").expect("write to shell");
        stdin.flush().expect("flush");
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout
            .as_mut()
            .expect("spawned")
            .read_line(&mut s)
            .expect("read shell output");
        s.trim().to_string()
    }

    /// The container's directory in the hierarchy holding `file`.
    fn file(&self, file: &str) -> PathBuf {
        self.cg
            .paths()
            .into_iter()
            .map(|p| p.join(file))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no hierarchy of this cgroup has {file}"))
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.file(file))
            .expect("read cgroup file")
            .trim()
            .to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        let _ = self.cg.kill_all(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.destroy();
    }
}

fn state(pid: i32) -> char {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|s| s.trim().chars().next())
        .expect("State line")
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources json")
}

#[test]
fn apply_moves_the_process_and_limits_read_back() {
    let mut f = Fixture::new("limits");
    let pid = f.spawn("sleep 1000");
    assert!(
        f.cg.pids().unwrap().contains(&pid),
        "pid {pid} not in {:?}",
        f.cg.pids()
    );
    for p in f.cg.paths() {
        let procs = fs::read_to_string(p.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            p.display()
        );
    }
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .reservation(32 << 20)
                .swappiness(10u64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(42).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    f.cg.set(&r).expect("set");
    match f.cg.hierarchy() {
        Hierarchy::V1 | Hierarchy::Hybrid => {
            assert_eq!(f.read("memory.limit_in_bytes"), (64u64 << 20).to_string());
            assert_eq!(
                f.read("memory.soft_limit_in_bytes"),
                (32u64 << 20).to_string()
            );
            assert_eq!(f.read("memory.swappiness"), "10");
            assert_eq!(f.read("cpu.shares"), "512");
            assert_eq!(f.read("cpu.cfs_quota_us"), "50000");
            assert_eq!(f.read("cpu.cfs_period_us"), "100000");
        }
        Hierarchy::V2 => {
            assert_eq!(f.read("memory.max"), (64u64 << 20).to_string());
            assert_eq!(f.read("cpu.max"), "50000 100000");
        }
    }
    assert_eq!(f.read("pids.max"), "42");
    assert_eq!(f.read("cpuset.cpus"), "0");

    let stats = f.cg.stats().expect("stats");
    assert_eq!(stats.pids.limit, 42);
    assert!(stats.pids.current >= 1, "{stats:?}");
    assert_eq!(stats.memory.usage.limit, 64 << 20);
    let json = serde_json::to_value(&stats).unwrap();
    for key in ["cpu", "memory", "pids", "blkio", "hugetlb"] {
        assert!(json.get(key).is_some(), "stats JSON lacks {key}: {json}");
    }
    assert!(json["cpu"]["throttling"].get("throttledPeriods").is_some());
}

#[test]
fn memory_swap_limit_is_memory_plus_swap() {
    let mut f = Fixture::new("swap");
    f.spawn("sleep 1000");
    let r = resources(r#"{"memory":{"limit":67108864,"swap":134217728}}"#);
    f.cg.set(&r).expect("set");
    if f.cg.hierarchy() == Hierarchy::V2 {
        assert_eq!(f.read("memory.swap.max"), "67108864");
    } else {
        assert_eq!(f.read("memory.memsw.limit_in_bytes"), "134217728");
    }
    // Growing both later must work whatever the order the kernel needs.
    let r = resources(r#"{"memory":{"limit":268435456,"swap":536870912}}"#);
    f.cg.set(&r).expect("raise limits");
    let r = resources(r#"{"memory":{"limit":16777216,"swap":33554432}}"#);
    f.cg.set(&r).expect("lower limits");
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let mut f = Fixture::new("forkbomb");
    f.spawn("i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done; echo finished");
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(8).build().unwrap())
        .build()
        .unwrap();
    f.cg.set(&r).expect("set pids");
    f.go();
    let mut child = f.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the shell forked 40 times under pids.max=8"
    );
    let pids = f.cg.pids().unwrap();
    assert!(
        !pids.is_empty() && pids.len() <= 8,
        "{} processes in a cgroup limited to 8",
        pids.len()
    );
    // The background sleeps hold stderr open: kill them before reading it.
    f.cg.kill_all(libc::SIGKILL).expect("kill_all");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("fork"), "stderr: {err}");
    f.cg.kill_all(libc::SIGKILL).expect("kill_all");
}

#[test]
fn freeze_and_thaw_change_process_state() {
    let mut f = Fixture::new("freeze");
    let pid = f.spawn("sleep 1000");
    assert!(!f.cg.is_frozen().unwrap());
    f.cg.freeze().expect("freeze");
    assert!(f.cg.is_frozen().unwrap());
    assert_eq!(state(pid), 'D', "a frozen task sleeps uninterruptibly");
    f.cg.thaw().expect("thaw");
    assert!(!f.cg.is_frozen().unwrap());
    assert_ne!(state(pid), 'D', "a thawed task is no longer frozen");
}

#[test]
fn frozen_shell_resumes_after_thaw() {
    let mut f = Fixture::new("resume");
    f.spawn("echo ran");
    f.cg.freeze().expect("freeze");
    f.go();
    f.cg.thaw().expect("thaw");
    assert_eq!(f.line(), "ran");
}

#[test]
fn stats_count_cpu_and_memory_use() {
    let mut f = Fixture::new("stats");
    f.spawn("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done; read x");
    f.go();
    assert_eq!(f.line(), "done");
    let s = f.cg.stats().expect("stats");
    assert!(s.cpu.usage.total > 0, "no cpu time counted: {s:?}");
    assert!(s.memory.usage.usage > 0, "no memory counted: {s:?}");
    assert_eq!(s.pids.current, 1, "{s:?}");
}

#[test]
fn device_rules_deny_unlisted_devices() {
    let mut f = Fixture::new("devices");
    f.spawn(
        "if (exec 3</dev/kmsg) 2>/dev/null; then echo kmsg-open; else echo kmsg-denied; fi; \
         echo x >/dev/null && echo null-ok",
    );
    let deny = deny_all();
    let r = LinuxResourcesBuilder::default()
        .devices(vec![deny])
        .build()
        .unwrap();
    f.cg.set(&r).expect("set devices");
    if f.cg.hierarchy() != Hierarchy::V2 {
        let list = f.read("devices.list");
        assert!(list.contains("c 1:3 rwm"), "{list}");
        assert!(!list.contains("a *:* rwm"), "{list}");
    }
    f.go();
    assert_eq!(f.line(), "kmsg-denied");
    assert_eq!(f.line(), "null-ok");

    // An explicit allow of the device opens it again.
    let mut g = Fixture::new("devices-allow");
    g.spawn("if (exec 3</dev/kmsg) 2>/dev/null; then echo kmsg-open; else echo kmsg-denied; fi");
    let kmsg = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(11)
        .access("r")
        .build()
        .unwrap();
    let deny = deny_all();
    g.cg.set(
        &LinuxResourcesBuilder::default()
            .devices(vec![deny, kmsg])
            .build()
            .unwrap(),
    )
    .expect("set devices");
    g.go();
    assert_eq!(g.line(), "kmsg-open");
}

#[test]
fn hugepage_limits_are_written() {
    let mut f = Fixture::new("hugetlb");
    f.spawn("sleep 1000");
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4 << 20)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    f.cg.set(&r).expect("set hugetlb");
    let v = if f.file_exists("hugetlb.2MB.max") {
        f.read("hugetlb.2MB.max")
    } else {
        f.read("hugetlb.2MB.limit_in_bytes")
    };
    assert_eq!(v, (4u64 << 20).to_string());
    assert!(f.cg.stats().unwrap().hugetlb.contains_key("2MB"));
}

impl Fixture {
    fn file_exists(&self, file: &str) -> bool {
        self.cg.paths().iter().any(|p| p.join(file).exists())
    }
}

#[test]
fn destroy_removes_every_directory_including_children() {
    let mut f = Fixture::new("destroy");
    f.spawn("sleep 1000");
    let paths = f.cg.paths();
    assert!(paths.len() >= 2 || f.cg.hierarchy() == Hierarchy::V2);
    for p in &paths {
        assert!(p.is_dir(), "{} not created", p.display());
        fs::create_dir(p.join("nested")).expect("child cgroup");
    }
    f.cg.kill_all(libc::SIGKILL).expect("kill_all");
    if let Some(mut c) = f.child.take() {
        let _ = c.wait();
    }
    f.cg.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} survived destroy", p.display());
    }
    assert!(f.cg.pids().unwrap().is_empty());
    f.cg.destroy().expect("destroying twice is fine");
}

#[test]
fn destroy_refuses_while_processes_remain() {
    let mut f = Fixture::new("busy");
    f.spawn("sleep 1000");
    let err = f.cg.destroy().expect_err("rmdir of a populated cgroup");
    let msg = err.to_string();
    assert!(msg.contains("/berth-test-busy-"), "{msg}");
    assert!(msg.contains("cgroup.procs"), "{msg}");
}

#[test]
fn systemd_and_root_paths_are_refused_clearly() {
    let err = manager("system.slice:docker:abc", "abc")
        .err()
        .expect("systemd path refused");
    let msg = err.to_string();
    assert!(
        msg.contains("systemd")
            && msg.contains("cgroupfs")
            && msg.contains("system.slice:docker:abc"),
        "{msg}"
    );
    let err = manager("/", "abc").err().expect("root refused");
    assert!(err.to_string().contains("root cgroup"), "{err}");
}

#[test]
fn set_before_apply_is_a_clear_error() {
    let f = Fixture::new("noapply");
    let r = resources(r#"{"pids":{"limit":5}}"#);
    let msg = f.cg.set(&r).expect_err("no cgroup yet").to_string();
    assert!(
        msg.contains("does not exist") && msg.contains("apply"),
        "{msg}"
    );
    assert!(!f.cg.paths()[0].exists(), "set must not create the cgroup");
}

#[test]
fn refused_limit_names_file_and_value() {
    let mut f = Fixture::new("refused");
    f.spawn("sleep 1000");
    let r = resources(r#"{"cpu":{"cpus":"4000-4001"}}"#);
    let err = f.cg.set(&r).expect_err("no such cpus");
    let msg = err.to_string();
    assert!(
        msg.contains("cpuset.cpus") && msg.contains("4000-4001"),
        "{msg}"
    );
    let r = resources(r#"{"memory":{"swappiness":500}}"#);
    let msg = f.cg.set(&r).expect_err("swappiness 500").to_string();
    assert!(msg.contains("swappiness") && msg.contains("500"), "{msg}");
}

#[test]
fn empty_and_relative_paths_are_under_our_own_cgroup() {
    require_root();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mem_own = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    let cg = manager("", "ctr-empty").expect("manager");
    let rel = manager("some/where", "ctr").expect("manager");
    let abs = manager("/abs/where", "ctr").expect("manager");
    for p in cg.paths() {
        assert!(p.ends_with("ctr-empty"), "{}", p.display());
    }
    for p in rel.paths() {
        assert!(p.ends_with("some/where"), "{}", p.display());
    }
    if let Some(mem_own) = mem_own {
        let mem = cg
            .paths()
            .into_iter()
            .find(|p| p.starts_with("/sys/fs/cgroup/memory"));
        if let Some(mem) = mem {
            let want = Path::new("/sys/fs/cgroup/memory")
                .join(mem_own.trim_start_matches('/'))
                .join("ctr-empty");
            assert_eq!(mem, want);
        }
    }
    for p in abs.paths() {
        let s = p.to_string_lossy();
        assert!(s.ends_with("/abs/where"), "{s}");
        assert!(
            !s.contains("process_api"),
            "absolute path placed under own cgroup: {s}"
        );
    }
    assert!(
        !cg.paths()[0].exists(),
        "manager() must not create anything"
    );
}

#[test]
fn manager_from_recorded_paths_controls_the_same_cgroup() {
    let mut f = Fixture::new("frompaths");
    let pid = f.spawn("sleep 1000");
    let again = berth_cgroups::manager_from_paths(&f.cg.paths()).expect("from paths");
    assert_eq!(again.paths(), f.cg.paths());
    assert_eq!(again.hierarchy(), f.cg.hierarchy());
    assert!(again.pids().unwrap().contains(&pid));
    again.freeze().expect("freeze via recorded paths");
    assert!(f.cg.is_frozen().unwrap());
    again.thaw().expect("thaw");
    let r = resources(r#"{"pids":{"limit":7}}"#);
    again.set(&r).expect("set via recorded paths");
    assert_eq!(f.read("pids.max"), "7");

    let err = berth_cgroups::manager_from_paths(&["/tmp/not-a-cgroup".into()])
        .err()
        .expect("a non-cgroup path is refused");
    assert!(err.to_string().contains("/tmp/not-a-cgroup"), "{err}");
}

#[test]
fn create_makes_every_directory_without_moving_a_process() {
    let f = Fixture::new("create");
    f.cg.create().expect("create");
    for p in f.cg.paths() {
        assert!(p.is_dir(), "{} not created", p.display());
        let procs = fs::read_to_string(p.join("cgroup.procs")).unwrap();
        assert_eq!(
            procs.trim(),
            "",
            "create moved a process into {}",
            p.display()
        );
    }
    if f.cg.hierarchy() != Hierarchy::V2 {
        assert_ne!(
            f.read("cpuset.cpus"),
            "",
            "cpuset.cpus not copied from the parent"
        );
        assert_ne!(
            f.read("cpuset.mems"),
            "",
            "cpuset.mems not copied from the parent"
        );
    }
    f.cg.set(&resources(r#"{"pids":{"limit":9}}"#))
        .expect("set after create");
    assert_eq!(f.read("pids.max"), "9");
    f.cg.destroy().expect("destroy");
    assert!(f.cg.paths().iter().all(|p| !p.exists()));
}

/// v1: re-setting device rules on a cgroup that already denies by default
/// writes only the difference, never a deny-all: nothing the container
/// keeps is denied meanwhile, and a cgroup with child cgroups (where the
/// kernel refuses a deny-all with EINVAL) can be updated. Failed before:
/// the second `set` wrote "a" to devices.deny and got EINVAL.
#[test]
fn v1_device_update_writes_only_the_difference() {
    let f = Fixture::new("devices-diff");
    f.cg.create().expect("create");
    if f.cg.hierarchy() == Hierarchy::V2 {
        return;
    }
    let rules = |access: &str| {
        let deny = deny_all();
        let kmsg = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(11)
            .access(access)
            .build()
            .unwrap();
        LinuxResourcesBuilder::default()
            .devices(vec![deny, kmsg])
            .build()
            .unwrap()
    };
    f.cg.set(&rules("r")).expect("first set");
    let first = f.read("devices.list");
    assert!(first.lines().any(|l| l == "c 1:11 r"), "{first}");
    // A nested cgroup, as a container running systemd or podman creates.
    let child = f.file("devices.list").parent().unwrap().join("nested");
    fs::create_dir(&child).expect("mkdir nested cgroup");
    let res = f.cg.set(&rules("rw"));
    let list = f.read("devices.list");
    fs::remove_dir(&child).expect("rmdir nested cgroup");
    res.expect("update of a cgroup with a child cgroup");
    assert!(list.lines().any(|l| l == "c 1:11 rw"), "{list}");
    assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
    assert!(!list.contains("a *:* rwm"), "{list}");
    // Dropping the rule removes the exception.
    let deny = deny_all();
    f.cg.set(
        &LinuxResourcesBuilder::default()
            .devices(vec![deny])
            .build()
            .unwrap(),
    )
    .expect("set without the rule");
    let list = f.read("devices.list");
    assert!(!list.contains("c 1:11"), "{list}");
    assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
}

/// The device rule denying every device (what runc's default spec starts with).
fn deny_all() -> oci_spec::runtime::LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap()
}
