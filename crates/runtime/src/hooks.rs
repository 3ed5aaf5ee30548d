//! OCI lifecycle hooks: run the hooks of one stage, in order, with the
//! container's state JSON on their stdin.
//!
//! Each hook is executed like `execve(path, args, env)`: `args[0]` is the
//! program's argv0, and the environment is exactly the hook's `env` (an empty
//! environment when it has none — runc would pass its own environment through,
//! berth does not leak the runtime's environment into hooks). A hook runs in
//! its own process group so that a timeout kills everything it started.
//!
//! The hook's stdout and stderr are captured (the last [`OUTPUT_LIMIT`] bytes
//! of each are kept) and stderr is quoted in the error when a hook fails.
//! Once the hook's own process has exited, output still buffered in the pipes
//! is collected, but the runtime does not wait for grandchildren that keep the
//! pipes open (a hook may start a daemon).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Spec};

/// How many bytes of a hook's stdout and of its stderr are kept for errors.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// The lifecycle stages at which the runtime spec runs hooks, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookStage {
    /// Deprecated by the spec (createRuntime replaces it); runs with it, in
    /// the runtime's namespaces, after the container's namespaces exist.
    Prestart,
    /// In the runtime's namespaces, after the container's namespaces exist.
    CreateRuntime,
    /// In the container's mount namespace, before pivot_root.
    CreateContainer,
    /// In the container, at `start`, before the process is exec'd.
    StartContainer,
    /// In the runtime's namespaces, after `start` exec'd the process.
    Poststart,
    /// In the runtime's namespaces, when `delete` has removed the container.
    Poststop,
}

impl HookStage {
    /// Every stage, in lifecycle order.
    pub const ALL: [HookStage; 6] = [
        HookStage::Prestart,
        HookStage::CreateRuntime,
        HookStage::CreateContainer,
        HookStage::StartContainer,
        HookStage::Poststart,
        HookStage::Poststop,
    ];

    /// The stage's name in config.json (`hooks.<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            HookStage::Prestart => "prestart",
            HookStage::CreateRuntime => "createRuntime",
            HookStage::CreateContainer => "createContainer",
            HookStage::StartContainer => "startContainer",
            HookStage::Poststart => "poststart",
            HookStage::Poststop => "poststop",
        }
    }

    /// The hooks `spec` lists for this stage (empty when none).
    pub fn hooks(self, spec: &Spec) -> &[Hook] {
        let Some(h) = spec.hooks().as_ref() else {
            return &[];
        };
        let list = match self {
            #[allow(deprecated)]
            HookStage::Prestart => h.prestart(),
            HookStage::CreateRuntime => h.create_runtime(),
            HookStage::CreateContainer => h.create_container(),
            HookStage::StartContainer => h.start_container(),
            HookStage::Poststart => h.poststart(),
            HookStage::Poststop => h.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }

    /// Whether a failing hook of this stage fails the operation (create,
    /// start) rather than being only a warning (poststart, poststop).
    pub const fn fails_operation(self) -> bool {
        match self {
            HookStage::Prestart
            | HookStage::CreateRuntime
            | HookStage::CreateContainer
            | HookStage::StartContainer => true,
            HookStage::Poststart | HookStage::Poststop => false,
        }
    }
}

impl std::fmt::Display for HookStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook's `path` is not absolute (the runtime spec requires it).
    #[error(
        "{stage} hook {path:?}: path must be absolute; fix hooks.{stage}[].path in config.json"
    )]
    RelativePath {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
    },
    /// The hook's `timeout` is zero or negative.
    #[error("{stage} hook {path:?}: timeout must be greater than zero, got {timeout}; fix hooks.{stage}[].timeout in config.json")]
    InvalidTimeout {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
        /// The configured timeout.
        timeout: i64,
    },
    /// The hook's program could not be started.
    #[error("{stage} hook {path:?}: cannot execute: {source}")]
    Spawn {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Talking to the running hook (pipes, poll, wait) failed.
    #[error("{stage} hook {path:?}: {what}: {source}")]
    Io {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
        /// What the runtime was doing.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The hook ran longer than its `timeout` and was killed.
    #[error("{stage} hook {path:?}: killed after running past its timeout of {timeout}s")]
    Timeout {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
        /// The configured timeout in seconds.
        timeout: i64,
    },
    /// The hook exited unsuccessfully.
    #[error("{stage} hook {path:?} failed: {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// Hook stage.
        stage: HookStage,
        /// The hook's path.
        path: PathBuf,
        /// "exit status N" or "killed by signal N".
        status: String,
        /// What the hook wrote to stderr (trimmed, possibly truncated).
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

/// Runs the hooks of `stage` one after another, each with `state_json` (the
/// container's state as `runtime state` prints it) on stdin, and stops at
/// the first failure.
///
/// Failure semantics of the runtime spec are the caller's job (see
/// [`HookStage::fails_operation`]):
/// - `prestart`, `createRuntime`, `createContainer`, `startContainer`: an
///   error must abort the operation (create/start fails, the container is
///   destroyed and its state removed);
/// - `poststart`, `poststop`: an error must only be logged as a warning and
///   the operation carries on (the remaining hooks of the stage still run:
///   call this fn once per hook, e.g. `run_hooks(stage, std::slice::from_ref(h), ..)`,
///   if every hook must get its chance).
pub fn run_hooks(stage: HookStage, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    for hook in hooks {
        run_one(stage, hook, state_json)?;
    }
    Ok(())
}

fn run_one(stage: HookStage, hook: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    if !path.is_absolute() {
        return Err(HookError::RelativePath { stage, path });
    }
    let timeout = match hook.timeout() {
        Some(t) if t <= 0 => {
            return Err(HookError::InvalidTimeout {
                stage,
                path,
                timeout: t,
            })
        }
        Some(t) => Some(t),
        None => None,
    };
    let io_err = |what: &'static str| {
        let path = path.clone();
        move |source: io::Error| HookError::Io {
            stage,
            path,
            what,
            source,
        }
    };

    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for entry in hook.env().iter().flatten() {
        match entry.split_once('=') {
            Some((key, value)) => cmd.env(key, value),
            None => cmd.env(entry, ""),
        };
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // ETXTBSY: a hook script that was just written can still be open for
    // writing in a child another thread of the caller forked meanwhile
    // (until that child execs). It goes away by itself: retry briefly.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            r => {
                break r.map_err(|source| HookError::Spawn {
                    stage,
                    path: path.clone(),
                    source,
                })?
            }
        }
    };

    // A timeout past what a clock holds (i64::MAX seconds) has no deadline.
    let deadline =
        timeout.and_then(|t| Instant::now().checked_add(Duration::from_secs(t.unsigned_abs())));
    let outcome = pump(&mut child, state_json, deadline);
    let (stderr, timed_out) = match outcome {
        Ok(v) => v,
        Err(e) => {
            kill_group(&child);
            let _ = child.wait();
            return Err(io_err("talking to the hook")(e));
        }
    };
    if timed_out {
        kill_group(&child);
        let _ = child.wait();
        return Err(HookError::Timeout {
            stage,
            path,
            timeout: timeout.unwrap_or_default(),
        });
    }
    let status = child.wait().map_err(io_err("waiting for the hook"))?;
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        stage,
        path,
        status: describe_status(status),
        stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
    })
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {} ({})", sig, s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => format!("{status}"),
    }
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Opens a pidfd for `pid` (readable once the process has exited).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is shared with the kernel.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking<F: AsFd>(f: &F) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(f.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(f.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Keeps the tail of a stream in at most [`OUTPUT_LIMIT`] bytes.
fn keep_tail(buf: &mut Vec<u8>, chunk: &[u8]) {
    buf.extend_from_slice(chunk);
    if buf.len() > OUTPUT_LIMIT {
        let cut = buf.len() - OUTPUT_LIMIT;
        buf.drain(..cut);
    }
}

/// Reads whatever `r` has now; returns false at EOF or on a hard error.
fn drain<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => keep_tail(buf, &chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Feeds stdin, collects stdout/stderr and waits for the hook's exit or the
/// deadline, in one poll loop. Returns (stderr, timed_out).
fn pump(child: &mut Child, input: &[u8], deadline: Option<Instant>) -> io::Result<(Vec<u8>, bool)> {
    let pidfd = pidfd_open(child.id())?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    if let Some(s) = &stdin {
        set_nonblocking(s)?;
    }
    if let Some(s) = &stdout {
        set_nonblocking(s)?;
    }
    if let Some(s) = &stderr {
        set_nonblocking(s)?;
    }
    let mut written = 0usize;
    let mut out_buf = Vec::new();
    let mut err_buf = Vec::new();
    if input.is_empty() {
        stdin = None;
    }
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok((err_buf, true));
                }
                PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let in_idx = stdin.as_ref().map(|s| {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
            fds.len() - 1
        });
        let out_idx = stdout.as_ref().map(|s| {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_idx = stderr.as_ref().map(|s| {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let (in_ready, out_ready, err_ready) = (ready(in_idx), ready(out_idx), ready(err_idx));
        drop(fds);

        if in_ready {
            if let Some(s) = stdin.as_mut() {
                match s.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EPIPE and friends: the hook does not read its stdin.
                    Err(_) => written = input.len(),
                }
                if written >= input.len() {
                    stdin = None;
                }
            }
        }
        if out_ready {
            if let Some(s) = stdout.as_mut() {
                if !drain(s, &mut out_buf) {
                    stdout = None;
                }
            }
        }
        if err_ready {
            if let Some(s) = stderr.as_mut() {
                if !drain(s, &mut err_buf) {
                    stderr = None;
                }
            }
        }
        if exited {
            // Collect what is already in the pipes, but never wait for
            // grandchildren that inherited them.
            if let Some(s) = stdout.as_mut() {
                drain(s, &mut out_buf);
            }
            if let Some(s) = stderr.as_mut() {
                drain(s, &mut err_buf);
            }
            return Ok((err_buf, false));
        }
    }
}

/// Runs every hook of a stage whose failure is only a warning.
/// The state is only computed when the stage has hooks.
pub(crate) fn run_hooks_warn(spec: &Spec, stage: HookStage, state_json: impl FnOnce() -> Vec<u8>) {
    let hooks = stage.hooks(spec);
    if hooks.is_empty() {
        return;
    }
    let state_json = state_json();
    for hook in hooks {
        if let Err(e) = run_hooks(stage, std::slice::from_ref(hook), &state_json) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn each_stage_reads_its_own_list_of_the_spec() {
        let mut hooks = serde_json::Map::new();
        for stage in HookStage::ALL {
            hooks.insert(
                stage.name().into(),
                serde_json::json!([{"path": format!("/hooks/{stage}")}]),
            );
        }
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "hooks": hooks
        }))
        .unwrap();
        for stage in HookStage::ALL {
            let list = stage.hooks(&spec);
            assert_eq!(list.len(), 1, "{stage}");
            assert_eq!(list[0].path(), &PathBuf::from(format!("/hooks/{stage}")));
        }
        let none: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap();
        assert!(HookStage::ALL.iter().all(|s| s.hooks(&none).is_empty()));
        let fatal: Vec<&str> = HookStage::ALL
            .iter()
            .filter(|s| s.fails_operation())
            .map(|s| s.name())
            .collect();
        assert_eq!(
            fatal,
            [
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer"
            ]
        );
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn hook(path: &Path, args: &[&str], env: &[&str], timeout: Option<i64>) -> Hook {
        let mut h = Hook::default();
        h.set_path(path.to_path_buf());
        if !args.is_empty() {
            h.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        }
        if !env.is_empty() {
            h.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
        }
        h.set_timeout(timeout);
        h
    }

    #[test]
    fn hook_gets_state_args_argv0_and_only_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = script(
            dir.path(),
            "h.sh",
            &format!(
                "exec 3>{out}\necho \"argv0=$0\" >&3\necho \"args=$*\" >&3\necho \"foo=$FOO\" >&3\necho \"leak=${{BERTH_HOOK_TEST_LEAK-unset}}\" >&3\necho \"stdin=$(cat)\" >&3",
                out = out.display()
            ),
        );
        // `sh` is the interpreter here, so $0 is the script path it was given;
        // argv0 of the interpreter itself is checked in the next test.
        let h = hook(&s, &["ignored-argv0", "a", "b c"], &["FOO=bar"], None);
        std::env::set_var("BERTH_HOOK_TEST_LEAK", "runtime-env");
        run_hooks(
            HookStage::Prestart,
            &[h],
            br#"{"id":"x","status":"created"}"#,
        )
        .unwrap();
        let got = fs::read_to_string(&out).unwrap();
        assert!(got.contains("args=a b c"), "{got}");
        assert!(got.contains("foo=bar"), "{got}");
        assert!(
            got.contains("leak=unset"),
            "runtime env leaked into hook: {got}"
        );
        assert!(
            got.contains(r#"stdin={"id":"x","status":"created"}"#),
            "{got}"
        );
    }

    #[test]
    fn args0_is_argv0_of_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // /bin/sh -c 'echo $0' prints argv[0] of the -c script: we instead
        // exec busybox-style: run /bin/sh with argv0 "mysh" and print $0.
        let h = hook(
            Path::new("/bin/sh"),
            &["mysh", "-c", &format!("echo \"$0\" > {}", out.display())],
            &[],
            None,
        );
        run_hooks(HookStage::Poststop, &[h], b"{}").unwrap();
        // With -c, $0 of the script defaults to the shell's argv0.
        assert_eq!(fs::read_to_string(&out).unwrap().trim(), "mysh");
    }

    #[test]
    fn hooks_run_in_order_and_stop_at_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let one = script(
            dir.path(),
            "one.sh",
            &format!("echo one >> {}", log.display()),
        );
        let bad = script(
            dir.path(),
            "bad.sh",
            &format!(
                "echo bad >> {}; echo 'no GPU found' >&2; exit 3",
                log.display()
            ),
        );
        let three = script(
            dir.path(),
            "three.sh",
            &format!("echo three >> {}", log.display()),
        );
        let hooks = [
            hook(&one, &[], &[], None),
            hook(&bad, &[], &[], None),
            hook(&three, &[], &[], None),
        ];
        let err = run_hooks(HookStage::CreateRuntime, &hooks, b"{}").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("createRuntime"), "{msg}");
        assert!(msg.contains("bad.sh"), "{msg}");
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("no GPU found"), "{msg}");
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\nbad\n");
    }

    #[test]
    fn timeout_kills_the_hook_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let s = script(
            dir.path(),
            "slow.sh",
            &format!("sleep 30; touch {}", marker.display()),
        );
        let err =
            run_hooks(HookStage::Prestart, &[hook(&s, &[], &[], Some(1))], b"{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("prestart") && msg.contains("slow.sh") && msg.contains("1s"),
            "{msg}"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn hook_ignoring_stdin_and_big_state_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "quiet.sh", "exit 0");
        let big = vec![b'x'; 1 << 20];
        run_hooks(HookStage::Poststart, &[hook(&s, &[], &[], None)], &big).unwrap();
    }

    #[test]
    fn background_daemon_holding_pipes_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "daemon.sh", "sleep 5 & echo started");
        run_hooks(HookStage::CreateRuntime, &[hook(&s, &[], &[], None)], b"{}").unwrap();
    }

    #[test]
    fn bad_hook_definitions_name_the_field() {
        let rel = hook(Path::new("bin/true"), &[], &[], None);
        let msg = run_hooks(HookStage::Prestart, &[rel], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("must be absolute") && msg.contains("hooks.prestart"),
            "{msg}"
        );
        let zero = hook(Path::new("/bin/true"), &[], &[], Some(0));
        let msg = run_hooks(HookStage::Poststop, &[zero], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("timeout") && msg.contains("hooks.poststop"),
            "{msg}"
        );
        let missing = hook(Path::new("/nonexistent/hook"), &[], &[], None);
        let msg = run_hooks(HookStage::StartContainer, &[missing], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/nonexistent/hook") && msg.contains("cannot execute"),
            "{msg}"
        );
    }

    #[test]
    fn signal_death_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "kill.sh", "kill -TERM $$");
        let msg = run_hooks(HookStage::Poststop, &[hook(&s, &[], &[], None)], b"{}")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("killed by signal 15"), "{msg}");
    }
}
