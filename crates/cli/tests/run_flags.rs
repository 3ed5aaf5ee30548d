//! `berth run`'s security and resource flags, each checked from inside the
//! container, the way a user would: /proc/self/status (Seccomp, CapEff,
//! NoNewPrivs), system calls the default seccomp profile denies, cgroup
//! files, `ulimit`, sysctls, `id -G`, the environment.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{require_peer, Env};

/// A busybox image `bb` in a fresh data root.
fn busybox() -> Env {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    env
}

/// `berth run --rm FLAGS... bb sh -c SCRIPT`.
fn run_sh(env: &Env, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["bb", "sh", "-c", script]);
    env.berth(&args)
}

/// Like [`run_sh`], asserting exit code 0; returns stdout.
fn sh_ok(env: &Env, flags: &[&str], script: &str) -> String {
    let out = run_sh(env, flags, script);
    env.stdout_of(&out, 0)
}

/// The value of `field` in the container's /proc/self/status.
fn status_field(env: &Env, flags: &[&str], field: &str) -> String {
    let out = sh_ok(env, flags, &format!("grep '^{field}:' /proc/self/status"));
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A berth error (exit 125, nothing run) whose message has every one of `says`.
fn assert_refused(env: &Env, out: &Output, says: &[&str]) {
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(out));
    let err = stderr(out);
    for s in says {
        assert!(err.contains(s), "the error should say {s:?}: {err}");
    }
    assert!(
        out.stdout.is_empty(),
        "the container ran: {}",
        env.describe(out)
    );
}

/// A static program that makes the system calls a shell cannot and prints
/// `NAME=ok` or `NAME=<errno name>` for each argument.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i];
        long rc = -1;
        errno = EINVAL;
        if (!strcmp(n, "keyctl")) /* KEYCTL_GET_KEYRING_ID of the session keyring */
            rc = syscall(SYS_keyctl, 0, -3, 0);
        else if (!strcmp(n, "unshare-user"))
            rc = unshare(CLONE_NEWUSER);
        else if (!strcmp(n, "clone3")) /* no arguments: EINVAL when allowed */
            rc = syscall(SYS_clone3, 0, 0);
        else if (!strcmp(n, "mount"))
            rc = mount("none", "/tmp", "tmpfs", 0, 0);
        else if (!strcmp(n, "vsock"))
            rc = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
        else if (!strcmp(n, "unix"))
            rc = socket(AF_UNIX, SOCK_STREAM, 0);
        else if (!strcmp(n, "personality"))
            rc = personality(ADDR_NO_RANDOMIZE);
        else if (!strcmp(n, "kcmp"))
            rc = syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 0, 0);
        printf("%s=%s\n", n, rc < 0 ? strerrorname_np(errno) : "ok");
    }
    return 0;
}
"#;

/// Builds the probe (static, so it runs in the busybox image) into a
/// directory of its own and returns the `-v` argument that mounts it at
/// /probe.
fn probe(env: &Env) -> String {
    let dir = env.path("probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("probe.c"), PROBE_C).unwrap();
    let out = Command::new(require_peer("gcc"))
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("probe"))
        .arg(dir.join("probe.c"))
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}:/probe:ro", dir.display())
}

/// The probe's `NAME=result` lines, run with `flags`.
fn probe_results(env: &Env, volume: &str, flags: &[&str], calls: &[&str]) -> Vec<String> {
    let mut args = vec!["run", "--rm", "-v", volume];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["bb", "/probe/probe"]);
    args.extend_from_slice(calls);
    let out = env.berth(&args);
    env.stdout_of(&out, 0).lines().map(String::from).collect()
}

#[test]
fn seccomp_filters_by_default_and_not_when_unconfined() {
    let env = busybox();
    assert_eq!(status_field(&env, &[], "Seccomp"), "2");
    assert_eq!(status_field(&env, &[], "Seccomp_filters"), "1");
    let unconfined = ["--security-opt", "seccomp=unconfined"];
    assert_eq!(status_field(&env, &unconfined, "Seccomp"), "0");
    // docker's older spelling works too.
    assert_eq!(
        status_field(&env, &["--security-opt", "seccomp:unconfined"], "Seccomp"),
        "0"
    );
    env.assert_no_containers_left();
}

/// The default profile denies unshare, mount and keyctl with EPERM (the
/// kernel alone would allow an unprivileged `unshare -U`), while ordinary
/// work goes on; unconfined, the same calls reach the kernel.
#[test]
fn default_profile_denies_unshare_mount_keyctl_but_a_shell_works() {
    let env = busybox();
    let out = run_sh(&env, &[], "unshare -U true");
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    assert!(
        stderr(&out).contains("unshare(0x10000000): Operation not permitted"),
        "{}",
        env.describe(&out)
    );
    let out = run_sh(&env, &[], "mount -t tmpfs none /tmp");
    assert_ne!(out.status.code(), Some(0), "{}", env.describe(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        env.describe(&out)
    );
    // A normal shell: pipes, forks, files, signals, sockets.
    let stdout = sh_ok(
        &env,
        &[],
        "echo hi | tr a-z A-Z; mkdir /tmp/d && echo x > /tmp/d/f && cat /tmp/d/f; \
         sleep 10 & kill $!; wait; ps -o pid,comm >/dev/null; ls /proc/self/fd >/dev/null; \
         date +%Y >/dev/null && echo done",
    );
    assert!(
        stdout.starts_with("HI\nx\n") && stdout.ends_with("done\n"),
        "{stdout}"
    );

    let volume = probe(&env);
    let calls = [
        "keyctl",
        "unshare-user",
        "mount",
        "clone3",
        "vsock",
        "unix",
        "personality",
    ];
    assert_eq!(
        probe_results(&env, &volume, &[], &calls),
        [
            "keyctl=EPERM",
            "unshare-user=EPERM",
            "mount=EPERM",
            "clone3=ENOSYS",
            "vsock=EPERM",
            "unix=ok",
            "personality=EPERM"
        ]
    );
    let out = run_sh(
        &env,
        &["--security-opt", "seccomp=unconfined"],
        "unshare -U true && echo unshared",
    );
    assert_eq!(env.stdout_of(&out, 0), "unshared\n");
    let unconfined = probe_results(
        &env,
        &volume,
        &["--security-opt", "seccomp=unconfined"],
        &calls,
    );
    assert_eq!(unconfined[0], "keyctl=ok");
    assert_eq!(unconfined[1], "unshare-user=ok");
    assert_eq!(
        unconfined[2], "mount=EPERM",
        "no CAP_SYS_ADMIN: the kernel says no"
    );
    assert_eq!(unconfined[3], "clone3=EINVAL");
    assert_ne!(unconfined[4], "vsock=EPERM");
    assert_eq!(unconfined[6], "personality=ok");
    env.assert_no_containers_left();
}

/// The profile follows the capabilities: with CAP_SYS_ADMIN mount, unshare
/// and clone3 are allowed (keyctl never is); with CAP_SYS_PTRACE, kcmp.
#[test]
fn the_default_profile_widens_with_capabilities() {
    let env = busybox();
    let volume = probe(&env);
    assert_eq!(
        probe_results(
            &env,
            &volume,
            &["--cap-add", "SYS_ADMIN"],
            &["mount", "unshare-user", "clone3", "keyctl"]
        ),
        [
            "mount=ok",
            "unshare-user=ok",
            "clone3=EINVAL",
            "keyctl=EPERM"
        ]
    );
    let out = sh_ok(
        &env,
        &["--cap-add", "sys_admin"],
        "mount -t tmpfs none /tmp && grep ' /tmp ' /proc/mounts | cut -d' ' -f3",
    );
    assert_eq!(out, "tmpfs\n");
    assert_eq!(probe_results(&env, &volume, &[], &["kcmp"]), ["kcmp=EPERM"]);
    assert_eq!(
        probe_results(&env, &volume, &["--cap-add", "CAP_SYS_PTRACE"], &["kcmp"]),
        ["kcmp=ok"]
    );
    env.assert_no_containers_left();
}

fn cap_eff(env: &Env, flags: &[&str]) -> u64 {
    u64::from_str_radix(&status_field(env, flags, "CapEff"), 16).unwrap()
}

const CAP_KILL: u64 = 1 << 5;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[test]
fn cap_add_and_cap_drop() {
    let env = busybox();
    let default = cap_eff(&env, &[]);
    assert_eq!(default, 0xa80425fb, "containerd's default set");
    assert_eq!(cap_eff(&env, &["--cap-drop", "ALL"]), 0);
    assert_eq!(
        cap_eff(
            &env,
            &["--cap-drop", "all", "--cap-add", "NET_ADMIN,cap_kill"]
        ),
        CAP_NET_ADMIN | CAP_KILL
    );
    assert_eq!(
        cap_eff(&env, &["--cap-add", "SYS_ADMIN", "--cap-drop", "net_raw"]),
        (default | CAP_SYS_ADMIN) & !CAP_NET_RAW
    );
    for (flags, says) in [
        (
            &["--cap-add", "NET_ADMINN"][..],
            &["--cap-add \"NET_ADMINN\"", "unknown capability"][..],
        ),
        (
            &["--cap-add", "KILL", "--cap-drop", "kill"][..],
            &["CAP_KILL", "both added"][..],
        ),
    ] {
        let out = run_sh(&env, flags, "echo ran");
        assert_refused(&env, &out, says);
    }
    env.assert_no_containers_left();
}

fn host_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn privileged_gets_all_capabilities_no_seccomp_no_masked_paths_and_host_devices() {
    let env = busybox();
    assert_eq!(cap_eff(&env, &["--privileged"]), host_bounding_set());
    assert_eq!(status_field(&env, &["--privileged"], "Seccomp"), "0");
    let script = "grep -c ' /proc/sys ' /proc/mounts; grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
                  test -c /dev/kmsg && echo kmsg";
    let out = run_sh(&env, &[], script);
    assert_eq!(
        env.stdout_of(&out, 1),
        "1\nro\n",
        "default: masked, read-only, no host devices"
    );
    let out = sh_ok(&env, &["--privileged"], script);
    assert_eq!(out, "0\nrw\nkmsg\n");
    // Privileged may mount and sees the devices cgroup allow everything.
    let out = sh_ok(
        &env,
        &["--privileged"],
        "mount -t tmpfs none /tmp && echo mounted",
    );
    assert_eq!(out, "mounted\n");
    // --cap-drop still applies; an explicit profile file still filters.
    assert_eq!(
        cap_eff(&env, &["--privileged", "--cap-drop", "SYS_ADMIN"]),
        host_bounding_set() & !CAP_SYS_ADMIN
    );
    let profile = write_profile(&env, "log.json", r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#);
    let opt = format!("seccomp={}", profile.display());
    assert_eq!(
        status_field(&env, &["--privileged", "--security-opt", &opt], "Seccomp"),
        "2"
    );
    env.assert_no_containers_left();
}

fn write_profile(env: &Env, name: &str, json: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn seccomp_profile_files_oci_and_docker_forms() {
    let env = busybox();
    // OCI LinuxSeccomp: allow everything but mkdir, which gets EACCES.
    let oci = write_profile(
        &env,
        "oci.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    );
    let opt = format!("seccomp={}", oci.display());
    let out = run_sh(
        &env,
        &["--security-opt", &opt],
        "touch /tmp/f && echo touched; mkdir /tmp/d",
    );
    assert_eq!(env.stdout_of(&out, 1), "touched\n");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        env.describe(&out)
    );
    // docker/podman form: mkdir denied unless CAP_SYS_ADMIN is in the set.
    let docker = write_profile(
        &env,
        "docker.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                          "comment": "", "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
    );
    let opt = format!("seccomp={}", docker.display());
    let out = run_sh(&env, &["--security-opt", &opt], "mkdir /tmp/d");
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        env.describe(&out)
    );
    let out = sh_ok(
        &env,
        &["--security-opt", &opt, "--cap-add", "SYS_ADMIN"],
        "mkdir /tmp/d && echo made",
    );
    assert_eq!(out, "made\n");
    // Anything else is refused before a container exists.
    let bad = write_profile(&env, "bad.json", r#"{"linux": {"seccomp": {}}}"#);
    let opt = format!("seccomp={}", bad.display());
    let out = run_sh(&env, &["--security-opt", &opt], "echo ran");
    assert_refused(
        &env,
        &out,
        &[&bad.display().to_string(), "unknown field \"linux\""],
    );
    let out = run_sh(
        &env,
        &["--security-opt", "seccomp=/no/such.json"],
        "echo ran",
    );
    assert_refused(&env, &out, &["/no/such.json"]);
    let out = run_sh(&env, &["--security-opt", "apparmor=myprofile"], "echo ran");
    assert_refused(&env, &out, &["apparmor=myprofile", "supported"]);
    env.assert_no_containers_left();
}

#[test]
fn no_new_privileges() {
    let env = busybox();
    assert_eq!(status_field(&env, &[], "NoNewPrivs"), "0");
    let nnp = ["--security-opt", "no-new-privileges"];
    assert_eq!(status_field(&env, &nnp, "NoNewPrivs"), "1");
    // Seccomp is loaded late with no_new_privs; the process runs the same.
    assert_eq!(status_field(&env, &nnp, "Seccomp"), "2");
    env.assert_no_containers_left();
}

/// The container's cgroup directory of `controller` on the host, from the
/// container's /proc/self/cgroup (no cgroup namespace: host paths).
fn cgroup_dir(proc_cgroup: &str, controller: &str) -> PathBuf {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, names, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if names.split(',').any(|n| n == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(names)
                .join(path.trim_start_matches('/'));
        }
    }
    // cgroup v2 only.
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup line");
    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The limits land in the container's cgroup: the container prints its
/// /proc/self/cgroup and waits on stdin while the test reads the files.
#[test]
fn memory_cpus_and_pids_limits_reach_the_cgroup() {
    let env = busybox();
    let mut child = env
        .command(&[
            "run",
            "--rm",
            "-i",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--pids-limit",
            "100",
            "bb",
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo ready; read x; echo bye",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut cgroup = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 || line == "ready\n" {
            break;
        }
        cgroup.push_str(&line);
    }
    let v1 = cgroup.lines().any(|l| l.contains(":memory:"));
    let mut seen = Vec::new();
    if v1 {
        let mem = cgroup_dir(&cgroup, "memory");
        seen.push(read_trimmed(&mem.join("memory.limit_in_bytes")));
        seen.push(read_trimmed(&mem.join("memory.memsw.limit_in_bytes")));
        let cpu = cgroup_dir(&cgroup, "cpu");
        seen.push(read_trimmed(&cpu.join("cpu.cfs_quota_us")));
        seen.push(read_trimmed(&cpu.join("cpu.cfs_period_us")));
        seen.push(read_trimmed(&cpu.join("cpu.shares")));
        seen.push(read_trimmed(
            &cgroup_dir(&cgroup, "cpuset").join("cpuset.cpus"),
        ));
        seen.push(read_trimmed(&cgroup_dir(&cgroup, "pids").join("pids.max")));
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success() && rest == "bye\n", "{status:?} {rest:?}");
    assert!(v1, "this machine's cgroups are v1 hybrid: {cgroup}");
    assert_eq!(
        seen,
        [
            "67108864",
            "134217728",
            "50000",
            "100000",
            "512",
            "0",
            "100"
        ]
    );
    // Refused before anything runs, naming the flag.
    for (flags, says) in [
        (
            &["--memory", "64x"][..],
            &["--memory \"64x\"", "expected a size"][..],
        ),
        (&["--memory", "1m"][..], &["--memory", "minimum"][..]),
        (
            &["--memory", "64m", "--memory-swap", "32m"][..],
            &["--memory-swap", "at least --memory"][..],
        ),
        (&["--cpus", "-1"][..], &["--cpus \"-1\""][..]),
        (
            &["--cpuset-cpus", "1-0"][..],
            &["--cpuset-cpus \"1-0\""][..],
        ),
    ] {
        let out = run_sh(&env, flags, "echo ran");
        assert_refused(&env, &out, says);
    }
    env.assert_no_containers_left();
}

#[test]
fn ulimit_sysctl_oom_score_and_shm_size() {
    let env = busybox();
    assert_eq!(sh_ok(&env, &[], "ulimit -n; ulimit -Hn"), "1024\n1024\n");
    let out = sh_ok(
        &env,
        &["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=64"],
        "ulimit -n; ulimit -Hn; ulimit -u",
    );
    assert_eq!(out, "1024\n2048\n64\n");
    let out = sh_ok(
        &env,
        &[
            "--sysctl",
            "kernel.shmmax=1048576",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--oom-score-adj",
            "500",
            "--shm-size",
            "128m",
        ],
        "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj; \
         grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'",
    );
    assert_eq!(out, "1048576\n1\n500\nsize=131072k\n");
    for (flags, says) in [
        (
            &["--sysctl", "kernel.pid_max=100"][..],
            &["kernel.pid_max", "not namespaced"][..],
        ),
        (
            &["--ulimit", "nofile=2048:1024"][..],
            &["--ulimit", "soft limit is above"][..],
        ),
        (&["--oom-score-adj", "-1001"][..], &["--oom-score-adj"][..]),
    ] {
        let out = run_sh(&env, flags, "echo ran");
        assert_refused(&env, &out, says);
    }
    env.assert_no_containers_left();
}

#[test]
fn group_add_env_file_and_labels() {
    let env = busybox();
    let out = sh_ok(
        &env,
        &["--group-add", "users", "--group-add", "4321"],
        "id -G",
    );
    assert_eq!(out, "0 100 4321\n");
    let out = sh_ok(
        &env,
        &["-u", "daemon", "--group-add", "users,nogroup"],
        "id -G",
    );
    assert_eq!(out, "1 100 65534\n");
    let out = run_sh(&env, &["--group-add", "nosuchgroup"], "id -G");
    assert_refused(&env, &out, &["nosuchgroup", "/etc/group"]);

    let file = env.path("vars.env");
    std::fs::write(
        &file,
        "# comment\n\nA=from file\nB=\"quoted\"\n  C=c\nPASSED\nUNSET_IN_HOST\nD=overridden\n",
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let out = env
        .command(&[
            "run",
            "--rm",
            "--env-file",
            &file_arg,
            "-e",
            "D=from -e",
            "bb",
            "sh",
            "-c",
            "echo \"$A|$B|$C|$PASSED|${UNSET_IN_HOST-unset}|$D\"",
        ])
        .env("PASSED", "host value")
        .env_remove("UNSET_IN_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        env.stdout_of(&out, 0),
        "from file|\"quoted\"|c|host value|unset|from -e\n"
    );
    std::fs::write(&file, "GOOD=1\nBAD NAME=2\n").unwrap();
    let out = run_sh(&env, &["--env-file", &file_arg], "echo ran");
    assert_refused(&env, &out, &[&file_arg, "line 2"]);

    // (Labels become the spec's annotations: see the engine's unit tests.)
    let out = run_sh(&env, &["--label", "=x"], "echo ran");
    assert_refused(&env, &out, &["--label \"=x\"", "KEY=VALUE"]);
    env.assert_no_containers_left();
}

/// `--device HOST[:CONTAINER][:PERMS]`: the host's node appears in the
/// container with its numbers, and only the permissions given reach the
/// device cgroup (a write open of an `r` device is refused).
#[test]
fn device_adds_a_host_device_with_its_permissions() {
    let env = busybox();
    assert_eq!(
        sh_ok(&env, &[], "test -e /dev/fuse || echo absent"),
        "absent\n"
    );
    assert_eq!(
        sh_ok(
            &env,
            &["--device", "/dev/fuse"],
            "stat -c '%t,%T %F' /dev/fuse; : > /dev/fuse && echo opened"
        ),
        "a,e5 character special file\nopened\n"
    );
    assert_eq!(
        sh_ok(
            &env,
            &["--device", "/dev/fuse:/dev/f:r"],
            ": < /dev/f && echo read; (: > /dev/f) 2>/dev/null || echo refused"
        ),
        "read\nrefused\n"
    );
    let out = run_sh(&env, &["--device", "/dev/fuse:/dev/f:rwx"], "true");
    assert_refused(&env, &out, &["--device \"/dev/fuse:/dev/f:rwx\"", "rwm"]);
    let out = run_sh(&env, &["--device", "/etc/passwd:/dev/p"], "true");
    assert_refused(
        &env,
        &out,
        &["/etc/passwd", "not a character or block device"],
    );
    let out = run_sh(&env, &["--device", "/dev/fuse:/etc/f"], "true");
    assert_refused(&env, &out, &["under /dev"]);
    env.assert_no_containers_left();
}

/// `--init`: berth's minimal init is pid 1 and the command its child; a
/// signal sent to pid 1 reaches the command, whose exit code is the
/// container's, and orphans are reaped (no zombie stays).
#[test]
fn init_is_pid_1_forwards_signals_and_reaps() {
    let env = busybox();
    assert_eq!(
        sh_ok(
            &env,
            &["--init"],
            "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo"
        ),
        "2\n/dev/init container-init -- sh -c echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo \n"
    );
    assert_eq!(sh_ok(&env, &[], "echo $$"), "1\n");
    let out = run_sh(
        &env,
        &["--init"],
        "trap 'echo got TERM; exit 3' TERM; kill -TERM 1; sleep 5 & wait",
    );
    assert_eq!(env.stdout_of(&out, 3), "got TERM\n");
    // An orphan that ends is reparented to pid 1 and reaped there.
    assert_eq!(
        sh_ok(
            &env,
            &["--init"],
            "(sleep 0.2 &); sleep 1; ps -o stat | grep -c '^Z' || true"
        ),
        "0\n"
    );
    env.assert_no_containers_left();
}
