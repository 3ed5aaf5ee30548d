//! The container's seccomp filter (`linux.seccomp`): berth's default
//! profile, or none (`seccomp=unconfined`), or a profile file.
//!
//! The default profile has the effect of containerd's (and docker's):
//! every system call not named here fails with EPERM; a fixed list is
//! allowed, a few with argument checks (`personality`, `socket`, `clone`),
//! and more are allowed when the container's bounding set holds the
//! capability that governs them (`mount` and `unshare` with CAP_SYS_ADMIN,
//! `ptrace`'s relatives with CAP_SYS_PTRACE, ...). Names this machine's
//! libseccomp does not know are skipped by the runtime, so the list can
//! carry system calls of newer kernels.
//!
//! A profile file is either an OCI `LinuxSeccomp` object or a docker/podman
//! profile (`archMap`, per-rule `includes`/`excludes` by architecture,
//! capability and kernel version); the latter is resolved against the
//! container's bounding set the way docker and podman resolve it.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// System calls every container may make (as containerd's default
/// profile), whitespace-separated, in alphabetical order.
const ALLOWED: &str = "
_llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset
chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod
fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock
fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid
getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit getrusage
getsid getsockname getsockopt gettid gettimeofday getuid getuid32 getxattr getxattrat
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy
io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl ioprio_get
ioprio_set ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr lremovexattr
lseek lsetxattr lsm_get_self_attr lsm_list_modules lsm_set_self_attr lstat lstat64 madvise
map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock
mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv
recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat
rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min
sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write
writev
";

/// System calls allowed only when the container's bounding set holds the
/// capability (the kernel checks the same capability for most of them).
const BY_CAPABILITY: &[(&str, &str)] = &[
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount \
         mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname \
         sethostname setns syslog umount umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module finit_module init_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    ("CAP_SYS_RAWIO", "ioperm iopl"),
    (
        "CAP_SYS_TIME",
        "clock_settime clock_settime64 settimeofday stime",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// Allowed from Linux 4.8 on, whatever the capabilities: since 4.8 a
/// ptrace-based tracer can no longer bypass the filter of its tracee.
const SINCE_LINUX_4_8: &str = "process_vm_readv process_vm_writev ptrace";

/// The namespace flags of clone(2): without CAP_SYS_ADMIN, clone is
/// allowed only when none of them is set (CLONE_NEWNS | NEWCGROUP | NEWUTS
/// | NEWIPC | NEWUSER | NEWPID | NEWNET).
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// personality(2) values a container may set: PER_LINUX, PER_LINUX32,
/// each with UNAME26, and 0xffffffff (query only).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// socket(2) address families denied: AF_ALG (38, the kernel's crypto
/// API) and AF_VSOCK (40, the host/VM socket).
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

const ENOSYS: u32 = 38;

/// This machine's architecture: the libseccomp names the filter covers
/// (the native one and its compat ABIs), the name docker and podman
/// profiles use for it (Go's GOARCH), and its own extra system calls.
struct Arch {
    scmp: &'static [&'static str],
    go: &'static str,
    extra: &'static str,
}

#[cfg(target_arch = "x86_64")]
const ARCH: Arch = Arch {
    scmp: &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    go: "amd64",
    extra: "arch_prctl modify_ldt",
};

#[cfg(target_arch = "aarch64")]
const ARCH: Arch = Arch {
    scmp: &["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
    go: "arm64",
    extra: "arm_fadvise64_64 arm_sync_file_range breakpoint cacheflush set_tls sync_file_range2",
};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Arch = Arch {
    scmp: &[],
    go: std::env::consts::ARCH,
    extra: "",
};

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, Default)]
pub enum Seccomp {
    /// berth's default profile ([`default_profile`]).
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile file (`--security-opt seccomp=FILE`).
    Profile(Profile),
}

/// A seccomp profile read from a file: an OCI `LinuxSeccomp` object, or a
/// docker/podman profile resolved per container.
#[derive(Debug, Clone)]
pub struct Profile {
    path: PathBuf,
    json: Value,
    docker: bool,
}

/// Keys of a docker/podman profile that an OCI `LinuxSeccomp` never has.
const DOCKER_KEYS: [&str; 1] = ["archMap"];
const DOCKER_RULE_KEYS: [&str; 4] = ["includes", "excludes", "comment", "name"];
const OCI_KEYS: [&str; 7] = [
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
];

impl Profile {
    /// Reads and checks the profile at `path`.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let json: Value = serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(
                format!("seccomp profile {}", path.display()),
                format!("not valid JSON: {e}"),
            )
        })?;
        Profile::from_json(path, json)
    }

    /// Checks `json` (read from `path`) as a profile.
    pub fn from_json(path: &Path, json: Value) -> Result<Profile> {
        let bad =
            |reason: String| Error::invalid(format!("seccomp profile {}", path.display()), reason);
        let Some(top) = json.as_object() else {
            return Err(bad("expected a JSON object with defaultAction and syscalls (an OCI LinuxSeccomp or a docker/podman profile)".into()));
        };
        let rules = top.get("syscalls").and_then(Value::as_array);
        let docker = DOCKER_KEYS.iter().any(|k| top.contains_key(*k))
            || rules.into_iter().flatten().any(|r| {
                DOCKER_RULE_KEYS
                    .iter()
                    .any(|k| r.as_object().is_some_and(|o| o.contains_key(*k)))
            });
        for key in top.keys() {
            let known =
                OCI_KEYS.contains(&key.as_str()) || (docker && DOCKER_KEYS.contains(&key.as_str()));
            if !known {
                return Err(bad(format!(
                    "unknown field {key:?}: expected an OCI LinuxSeccomp (defaultAction, \
                     defaultErrnoRet, architectures, flags, syscalls) or a docker/podman \
                     profile (also archMap, per-rule includes/excludes)"
                )));
            }
        }
        if !top.contains_key("defaultAction") {
            return Err(bad("missing defaultAction".into()));
        }
        let profile = Profile {
            path: path.to_path_buf(),
            json,
            docker,
        };
        // Resolve once now, so a broken file is refused before anything runs.
        profile.resolve(&[])?;
        Ok(profile)
    }

    /// The file the profile came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The filter for a container whose bounding set is `bounding`.
    pub fn resolve(&self, bounding: &[String]) -> Result<LinuxSeccomp> {
        let bad = |reason: String| {
            Error::invalid(format!("seccomp profile {}", self.path.display()), reason)
        };
        let oci = if self.docker {
            resolve_docker(&self.json, bounding).map_err(bad)?
        } else {
            self.json.clone()
        };
        serde_json::from_value(oci).map_err(|e| bad(e.to_string()))
    }
}

/// A docker/podman profile made an OCI one for this machine, the
/// container's `bounding` set and this kernel, as docker and podman do:
/// `archMap` gives the architectures of the native one; a rule applies
/// when every `includes` condition holds (its `arches` name this machine,
/// every one of its `caps` is in the bounding set, the kernel is at least
/// `minKernel`) and no `excludes` condition does.
fn resolve_docker(json: &Value, bounding: &[String]) -> std::result::Result<Value, String> {
    let top = json.as_object().ok_or("not an object")?;
    let mut out = serde_json::Map::new();
    for (k, v) in top {
        if k != "archMap" && k != "syscalls" {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(map) = top.get("archMap").and_then(Value::as_array) {
        if top.contains_key("architectures") {
            return Err("give either architectures or archMap, not both".into());
        }
        let native = ARCH.scmp.first().copied().unwrap_or("");
        let mut arches = Vec::new();
        for entry in map {
            if entry.get("architecture").and_then(Value::as_str) == Some(native) {
                arches.push(Value::from(native));
                for sub in entry
                    .get("subArchitectures")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    arches.push(sub.clone());
                }
            }
        }
        out.insert("architectures".into(), Value::Array(arches));
    }
    let kernel = kernel_version();
    let mut rules = Vec::new();
    for (i, rule) in top
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let obj = rule
            .as_object()
            .ok_or_else(|| format!("syscalls[{i}]: expected an object"))?;
        let holds = |cond: &Value, which: &str| -> std::result::Result<Option<bool>, String> {
            let Some(c) = cond.as_object().filter(|c| !c.is_empty()) else {
                return Ok(None);
            };
            let mut all = true;
            let mut any = false;
            if let Some(arches) = c.get("arches").and_then(Value::as_array) {
                let hit = arches.iter().any(|a| a.as_str() == Some(ARCH.go));
                all &= hit;
                any |= hit;
            }
            if let Some(caps) = c.get("caps").and_then(Value::as_array) {
                let held = |cap: &Value| bounding.iter().any(|b| Some(b.as_str()) == cap.as_str());
                all &= caps.iter().all(held);
                any |= caps.iter().any(held);
            }
            if let Some(min) = c.get("minKernel") {
                let min = min.as_str().and_then(parse_kernel_version).ok_or_else(|| {
                    format!("syscalls[{i}].{which}.minKernel: expected \"major.minor\"")
                })?;
                let hit = kernel.is_some_and(|k| k >= min);
                all &= hit;
                any |= hit;
            }
            Ok(Some(if which == "includes" { all } else { any }))
        };
        if let Some(false) = holds(obj.get("includes").unwrap_or(&Value::Null), "includes")? {
            continue;
        }
        if let Some(true) = holds(obj.get("excludes").unwrap_or(&Value::Null), "excludes")? {
            continue;
        }
        let mut names: Vec<Value> = obj
            .get("names")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(name) = obj.get("name") {
            names.push(name.clone());
        }
        let mut oci = serde_json::Map::new();
        oci.insert("names".into(), Value::Array(names));
        for key in ["action", "errnoRet", "args"] {
            if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                oci.insert(key.into(), v.clone());
            }
        }
        rules.push(Value::Object(oci));
    }
    out.insert("syscalls".into(), Value::Array(rules));
    Ok(Value::Object(out))
}

/// `"6.18.44-foo"` → (6, 18).
fn parse_kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The running kernel's (major, minor), if uname says.
fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    parse_kernel_version(&uts.release().to_string_lossy())
}

fn allow(names: &str) -> Value {
    json!({"names": names.split_whitespace().collect::<Vec<_>>(), "action": "SCMP_ACT_ALLOW"})
}

fn allow_if(name: &str, index: u32, op: &str, value: u64, value_two: Option<u64>) -> Value {
    let mut arg = json!({"index": index, "value": value, "op": op});
    if let Some(v2) = value_two {
        arg["valueTwo"] = json!(v2);
    }
    json!({"names": [name], "action": "SCMP_ACT_ALLOW", "args": [arg]})
}

/// berth's default profile for a container whose bounding set is
/// `bounding`: everything not allowed fails with EPERM.
pub fn default_profile(bounding: &[String]) -> LinuxSeccomp {
    let mut rules = vec![allow(ALLOWED)];
    if !ARCH.extra.is_empty() {
        rules.push(allow(ARCH.extra));
    }
    if kernel_version().is_some_and(|k| k >= (4, 8)) {
        rules.push(allow(SINCE_LINUX_4_8));
    }
    // socket(2): every family below AF_ALG, AF_ALG+1, and above AF_VSOCK.
    // (Three single-condition rules: libseccomp treats two conditions on
    // one argument as OR, which would let both families through.)
    rules.push(allow_if("socket", 0, "SCMP_CMP_LT", AF_ALG, None));
    rules.push(allow_if("socket", 0, "SCMP_CMP_EQ", AF_ALG + 1, None));
    rules.push(allow_if("socket", 0, "SCMP_CMP_GT", AF_VSOCK, None));
    for p in PERSONALITIES {
        rules.push(allow_if("personality", 0, "SCMP_CMP_EQ", p, None));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.iter().any(|b| b == cap) {
            rules.push(allow(names));
        }
    }
    if !bounding.iter().any(|b| b == "CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3 (whose flags a filter
        // cannot read) fails with ENOSYS so that libcs fall back to clone.
        rules.push(allow_if(
            "clone",
            0,
            "SCMP_CMP_MASKED_EQ",
            CLONE_NAMESPACE_FLAGS,
            Some(0),
        ));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ARCH.scmp,
        "syscalls": rules,
    });
    serde_json::from_value(profile).expect("the default seccomp profile is a valid LinuxSeccomp")
}

/// The filter for `choice` and a container whose bounding set is
/// `bounding` (None: no filter).
pub(crate) fn filter_for(choice: &Seccomp, bounding: &[String]) -> Result<Option<LinuxSeccomp>> {
    Ok(match choice {
        Seccomp::Default => Some(default_profile(bounding)),
        Seccomp::Unconfined => None,
        Seccomp::Profile(p) => Some(p.resolve(bounding)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompOperator};

    fn names(s: &LinuxSeccomp, action: LinuxSeccompAction) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == action && r.args().as_ref().is_none_or(|a| a.is_empty()))
            .flat_map(|r| r.names().clone())
            .collect()
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_allow_list_is_sorted_and_unique() {
        let all: Vec<&str> = ALLOWED.split_whitespace().collect();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted);
        assert!(all.len() > 350, "{}", all.len());
        for denied in [
            "mount",
            "unshare",
            "keyctl",
            "add_key",
            "request_key",
            "setns",
            "reboot",
        ] {
            assert!(
                !all.contains(&denied),
                "{denied} must not be allowed by default"
            );
        }
    }

    #[test]
    fn default_denies_with_eperm_and_capabilities_widen_it() {
        let base = default_profile(&caps(&crate::spec::DEFAULT_CAPS));
        assert_eq!(base.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            base.default_errno_ret(),
            None,
            "EPERM, the runtime's default"
        );
        let allowed = names(&base, LinuxSeccompAction::ScmpActAllow);
        assert!(
            allowed.contains(&"chroot".to_string()),
            "CAP_SYS_CHROOT is a default"
        );
        assert!(allowed.contains(&"ptrace".to_string()), "Linux >= 4.8");
        for denied in ["mount", "unshare", "setns", "keyctl", "clone", "bpf"] {
            assert!(!allowed.contains(&denied.to_string()), "{denied}");
        }
        // clone only without namespace flags; clone3 gives ENOSYS.
        let clone = base
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone".to_string()])
            .unwrap();
        let arg = &clone.args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(arg.value(), 0x7e02_0000);
        assert_eq!(arg.value_two(), Some(0));
        let clone3 = base
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));

        let admin = default_profile(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]));
        let allowed = names(&admin, LinuxSeccompAction::ScmpActAllow);
        for name in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "kcmp",
            "pidfd_getfd",
        ] {
            assert!(allowed.contains(&name.to_string()), "{name}");
        }
        assert!(
            !allowed.contains(&"chroot".to_string()),
            "no CAP_SYS_CHROOT"
        );
        assert!(names(&admin, LinuxSeccompAction::ScmpActErrno).is_empty());
        #[cfg(target_arch = "x86_64")]
        {
            assert!(allowed.contains(&"arch_prctl".to_string()));
            assert_eq!(admin.architectures().as_ref().unwrap().len(), 3);
        }
    }

    fn profile(json: Value) -> Result<Profile> {
        Profile::from_json(Path::new("/p.json"), json)
    }

    #[test]
    fn oci_profiles_are_taken_as_they_are() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        }))
        .unwrap();
        let s = p.resolve(&caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(s.syscalls().as_ref().unwrap()[0].errno_ret(), Some(13));
    }

    #[test]
    fn docker_profiles_are_resolved_per_container() {
        let json = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
                {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
                {"name": "write", "action": "SCMP_ACT_ALLOW"}
            ]
        });
        let p = profile(json).unwrap();
        let plain = p.resolve(&caps(&["CAP_CHOWN"])).unwrap();
        let admin = p.resolve(&caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(plain.default_errno_ret(), Some(38));
        let all = |s: &LinuxSeccomp| {
            s.syscalls()
                .iter()
                .flatten()
                .map(|r| (r.names().join(","), r.action()))
                .collect::<Vec<_>>()
        };
        let plain_rules = all(&plain);
        assert!(plain_rules.contains(&("mount".into(), LinuxSeccompAction::ScmpActErrno)));
        assert!(!plain_rules.contains(&("mount".into(), LinuxSeccompAction::ScmpActAllow)));
        assert!(all(&admin).contains(&("mount".into(), LinuxSeccompAction::ScmpActAllow)));
        assert!(!plain_rules.iter().any(|(n, _)| n == "new_call"));
        assert!(plain_rules.iter().any(|(n, _)| n == "write"));
        #[cfg(target_arch = "x86_64")]
        {
            assert!(plain_rules.iter().any(|(n, _)| n == "arch_prctl"));
            assert_eq!(plain.architectures().as_ref().unwrap().len(), 3);
        }
    }

    #[test]
    fn other_files_are_refused_clearly() {
        for (json, says) in [
            (json!([1, 2]), "JSON object"),
            (json!({"syscalls": []}), "missing defaultAction"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "seccomp": {}}),
                "unknown field \"seccomp\"",
            ),
            (json!({"defaultAction": "SCMP_ACT_NOPE"}), "SCMP_ACT_NOPE"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "new"}}]}),
                "minKernel",
            ),
        ] {
            let err = profile(json.clone()).unwrap_err().to_string();
            assert!(
                err.contains("/p.json") && err.contains(says),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version("x"), None);
    }
}
