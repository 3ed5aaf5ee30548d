//! linux.seccomp through berth-runtime: filtering of the process and of
//! `exec`, and the cache of compiled programs under the state root.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use berth_testutil::runtime::*;

#[test]
fn seccomp_filters_the_process_and_exec() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_name"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let bundle = Bundle::new(&spec);
    let id = unique_id("seccomp");
    rt.up(&bundle, &id, true);
    let out = rt.ok(&[
        "exec", &id, "sh", "-c",
        "grep Seccomp: /proc/1/status /proc/self/status | awk '{print $2}'; \
         mkdir /dev/shm/d 2>&1 | grep -c 'not permitted'; \
         touch /dev/shm/f; chmod 777 /dev/shm/f 2>&1 | grep -c 'denied'; chmod 700 /dev/shm/f && echo chmod-700-ok",
    ]);
    assert_eq!(out, "2\n2\n1\n1\nchmod-700-ok\n");
    rt.ok(&["delete", "--force", &id]);

    let mut spec = sleeper();
    spec["linux"]["seccomp"] =
        json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/nowhere"});
    let bundle = Bundle::new(&spec);
    let err = rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &unique_id("seccomp"),
    ]);
    assert!(
        err.contains("SCMP_ACT_NOTIFY cannot be the default action"),
        "{err}"
    );
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]});
    let bundle = Bundle::new(&spec);
    let err = rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &unique_id("seccomp"),
    ]);
    assert!(
        err.contains("field `linux.seccomp.listenerPath`: missing"),
        "{err}"
    );
    assert!(rt.leftovers().is_empty());
}

/// A profile allowing everything but mkdir, which fails with `errno`.
fn mkdir_fails_with(errno: u32) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
    })
}

/// What `mkdir` says in a container run with `profile`.
fn mkdir_under(rt: &Rt, profile: &Value) -> String {
    let mut spec = default_spec(&["true"]);
    spec["linux"]["seccomp"] = profile.clone();
    rt.sh(spec, "mkdir /tmp/d 2>&1 || true").trim().to_string()
}

/// The cache entries under the runtime's root.
fn cache_entries(rt: &Rt) -> Vec<PathBuf> {
    let dir = rt.root().join(berth_runtime::CACHE_DIR).join("seccomp");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seccomp cache at {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

const EPERM: &str = "mkdir: can't create directory '/tmp/d': Operation not permitted";
const EACCES: &str = "mkdir: can't create directory '/tmp/d': Permission denied";

/// The program compiled for a profile is cached and the next container
/// with that profile loads it from there; a cache entry is used only whole
/// and under its own key, so a corrupt or mislabelled one costs a compile,
/// never a wrong filter.
#[test]
fn compiled_filters_are_cached_and_a_bad_entry_never_loads() {
    let rt = Rt::new();
    let eperm = mkdir_fails_with(1);
    let eacces = mkdir_fails_with(13);
    assert_eq!(mkdir_under(&rt, &eperm), EPERM);
    let entries = cache_entries(&rt);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let eperm_entry = entries[0].clone();
    let eperm_bytes = std::fs::read(&eperm_entry).unwrap();
    assert_eq!(mkdir_under(&rt, &eacces), EACCES);
    let eacces_entry = cache_entries(&rt)
        .into_iter()
        .find(|p| *p != eperm_entry)
        .expect("a second entry");
    let eacces_bytes = std::fs::read(&eacces_entry).unwrap();

    // A hit is used: EPERM's entry rewritten (by its owner, validly) with
    // EACCES's program makes the EPERM profile deny with EACCES.
    let header = |b: &[u8]| {
        b.iter()
            .enumerate()
            .filter(|(_, c)| **c == b'\n')
            .nth(2)
            .unwrap()
            .0
            + 1
    };
    let (h1, h2) = (header(&eperm_bytes), header(&eacces_bytes));
    let mut forged = eperm_bytes[..h1].to_vec();
    let digest_at = h1 - 65;
    let program = &eacces_bytes[h2..];
    forged[digest_at..h1 - 1]
        .copy_from_slice(berth_core::digest::sha256_of(program).digest().as_bytes());
    forged.extend_from_slice(program);
    std::fs::write(&eperm_entry, &forged).unwrap();
    assert_eq!(
        mkdir_under(&rt, &eperm),
        EACCES,
        "the cached program was not used"
    );

    // Another profile's entry under this profile's name: the key differs.
    std::fs::write(&eperm_entry, &eacces_bytes).unwrap();
    assert_eq!(mkdir_under(&rt, &eperm), EPERM);
    assert_eq!(
        std::fs::read(&eperm_entry).unwrap(),
        eperm_bytes,
        "entry not rewritten"
    );

    // A flipped bit in the program, or a torn file: compiled again.
    let mut corrupt = eperm_bytes.clone();
    *corrupt.last_mut().unwrap() ^= 0x10;
    for bad in [corrupt, eperm_bytes[..eperm_bytes.len() - 3].to_vec()] {
        std::fs::write(&eperm_entry, &bad).unwrap();
        assert_eq!(mkdir_under(&rt, &eperm), EPERM);
        assert_eq!(std::fs::read(&eperm_entry).unwrap(), eperm_bytes);
    }
}

/// What `sh -c script` prints in a container whose mkdir takes `action`.
fn under_action(rt: &Rt, action: &str, flags: &[&str]) -> String {
    let mut spec = default_spec(&["true"]);
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": flags,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]
    });
    rt.sh(spec, "sh -c 'mkdir /dev/shm/d 2>&1'; echo \"status $?\"")
}

/// Every action but NOTIFY (below), seen from inside: the kill actions and
/// TRAP end the process with SIGSYS (128+31), TRACE without a tracer fails
/// the call with ENOSYS, LOG and ALLOW let it through; with the filter
/// flags LOG and SPEC_ALLOW the filter still loads and acts.
#[test]
fn every_action_does_what_it_says() {
    let rt = Rt::new();
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
    ] {
        assert_eq!(under_action(&rt, action, &[]), "status 159\n", "{action}");
    }
    assert_eq!(
        under_action(&rt, "SCMP_ACT_TRACE", &[]),
        "mkdir: can't create directory '/dev/shm/d': Function not implemented\nstatus 1\n"
    );
    for action in ["SCMP_ACT_LOG", "SCMP_ACT_ALLOW"] {
        assert_eq!(under_action(&rt, action, &[]), "status 0\n", "{action}");
    }
    let flags = [
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
    ];
    assert_eq!(
        under_action(&rt, "SCMP_ACT_KILL_PROCESS", &flags),
        "status 159\n"
    );
}

/// `struct seccomp_notif` and `struct seccomp_notif_resp` (linux/seccomp.h).
#[repr(C)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}
#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// A seccomp agent: takes one connection, returns the JSON and the fd it
/// carried.
fn agent_receive(listener: &UnixListener) -> (Value, OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r);
        }
    }
    let len = msg.bytes;
    assert_eq!(fds.len(), 1, "one fd in SCM_RIGHTS");
    let json = serde_json::from_slice(&buf[..len]).expect("the container process state");
    // SAFETY: the fd was just received and is owned by nobody else.
    (json, unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

/// Answers notifications on `fd`: each gets the next of `answers` (an
/// errno, or 0 for success).
fn agent_answer(fd: &OwnedFd, answers: &[i32]) {
    for &errno in answers {
        let mut n = Notif {
            id: 0,
            pid: 0,
            flags: 0,
            nr: 0,
            arch: 0,
            ip: 0,
            args: [0; 6],
        };
        // SAFETY: NOTIF_RECV fills the zeroed struct of the kernel's size.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_RECV, &mut n as *mut Notif) };
        assert_eq!(
            r,
            0,
            "SECCOMP_IOCTL_NOTIF_RECV: {}",
            std::io::Error::last_os_error()
        );
        let mut resp = NotifResp {
            id: n.id,
            val: 0,
            error: -errno,
            flags: 0,
        };
        // SAFETY: NOTIF_SEND reads the response struct.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_SEND, &mut resp as *mut NotifResp) };
        assert_eq!(
            r,
            0,
            "SECCOMP_IOCTL_NOTIF_SEND: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// SCMP_ACT_NOTIFY: the listener goes to the agent at listenerPath with
/// the container process state and listenerMetadata, and the agent's
/// answers are what the container's system calls return; `exec` does the
/// same for its process.
#[test]
fn a_notify_listener_reaches_the_agent_and_answers_for_the_container() {
    let rt = Rt::new();
    let sock = rt.path("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut spec = sleeper();
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "answer-mkdir",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let bundle = Bundle::new(&spec);
    let id = unique_id("notify");
    let agent = std::thread::spawn(move || {
        let (state, fd) = agent_receive(&listener);
        // `exec`'s process gets its own listener.
        let (exec_state, exec_fd) = agent_receive(&listener);
        agent_answer(&exec_fd, &[libc::EXDEV, 0]);
        drop(fd);
        (state, exec_state)
    });
    rt.up(&bundle, &id, true);
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /tmp/a 2>&1; mkdir /tmp/b && echo 'b made'; test -d /tmp/b || echo 'b absent'",
    ]);
    assert_eq!(
        out,
        "mkdir: can't create directory '/tmp/a': Invalid cross-device link\nb made\nb absent\n"
    );
    let (state, exec_state) = agent.join().unwrap();
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "answer-mkdir");
    assert_eq!(state["pid"], init);
    assert_eq!(state["state"]["id"], id.as_str());
    assert_eq!(state["state"]["status"], "creating");
    assert_eq!(
        state["state"]["bundle"],
        bundle.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(exec_state["state"]["status"], "running");
    assert_ne!(exec_state["pid"], init, "exec's process is not the init");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn a_profile_denying_getcwd_without_no_new_privileges_is_named_not_called_an_escape() {
    // runtime-tools' linux_seccomp: without noNewPrivileges the filter is
    // loaded before the runtime checks the cwd (CVE-2024-21626) with getcwd.
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    spec["process"]["noNewPrivileges"] = json!(false);
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let (code, _, err) = rt.run_bundle(&Bundle::new(&spec));
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot check the process cwd / with getcwd: EPERM")
            && err.contains("needs noNewPrivileges"),
        "{err}"
    );
    assert!(!err.contains("outside the container's root"), "{err}");
    spec["process"]["noNewPrivileges"] = json!(true);
    let (code, _, err) = rt.run_bundle(&Bundle::new(&spec));
    assert_eq!(code, 0, "{err}");
}
