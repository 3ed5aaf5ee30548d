//! End-to-end tests of `berth run`: a busybox image made with `berth import`,
//! run in real namespaces with the runtime library in-process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::Env;

#[test]
fn echo_prints_and_exit_codes_pass_through() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&["run", "--rm", "bb", "echo", "hi"]);
    assert_eq!(env.stdout_of(&out, 0), "hi\n");
    let out = env.berth(&["run", "--rm", "bb", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", env.describe(&out));
    env.assert_no_containers_left();
}

#[test]
fn rm_leaves_no_snapshot_state_or_mount() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&["run", "--rm", "bb", "touch", "/written"]);
    env.stdout_of(&out, 0);
    env.assert_no_containers_left();
    // The committed layer stays (the image needs it); nothing else.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "only the image's layer: {snaps:?}");
    assert!(snaps[0].starts_with("sha256:"), "{snaps:?}");
}

#[test]
fn env_user_workdir_hostname_entrypoint_overrides() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "bb",
        "sh",
        "-c",
        "echo $FOO",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "bar\n");
    // -e KEY passes berth's own value.
    let out = env
        .command(&[
            "run",
            "--rm",
            "-e",
            "PASSED",
            "bb",
            "sh",
            "-c",
            "echo $PASSED",
        ])
        .env("PASSED", "from-host")
        .output()
        .expect("run berth");
    assert_eq!(env.stdout_of(&out, 0), "from-host\n");
    let out = env.berth(&[
        "run",
        "--rm",
        "--user",
        "daemon",
        "bb",
        "sh",
        "-c",
        "id -un; id -u; id -g",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "daemon\n1\n1\n");
    let out = env.berth(&[
        "run",
        "--rm",
        "-u",
        "1234:4321",
        "bb",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "1234\n4321\n");
    let out = env.berth(&["run", "--rm", "--user", "nosuchuser", "bb", "id"]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchuser"),
        "the error names the user: {}",
        env.describe(&out)
    );
    let out = env.berth(&["run", "--rm", "--workdir", "/tmp", "bb", "pwd"]);
    assert_eq!(env.stdout_of(&out, 0), "/tmp\n");
    let out = env.berth(&["run", "--rm", "--hostname", "boxy", "bb", "hostname"]);
    assert_eq!(env.stdout_of(&out, 0), "boxy\n");
    let out = env.berth(&["run", "--rm", "--entrypoint", "/bin/echo", "bb", "a", "b"]);
    assert_eq!(env.stdout_of(&out, 0), "a b\n");
}

/// uid or gid 4294967295 is `(uid_t)-1`, "unchanged" to setresuid: it once
/// ran the process as root. An image's WorkingDir with `..` above the root
/// is refused too.
#[test]
fn out_of_range_users_and_escaping_workdirs_are_refused() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    for user in ["4294967295:4294967295", "4294967295", "0:2147483648"] {
        let out = env.berth(&["run", "--rm", "--user", user, "bb", "id", "-u"]);
        assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(user) && err.contains("out of range"), "{err}");
        assert!(out.stdout.is_empty(), "the process ran");
    }
    env.import_busybox("escape", &["WORKDIR /../../etc"]);
    let out = env.berth(&["run", "--rm", "escape", "pwd"]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WorkingDir") && err.contains("/../../etc"),
        "{err}"
    );
    env.assert_no_containers_left();
}

#[test]
fn image_config_env_workdir_user_entrypoint_cmd() {
    let env = Env::new();
    env.import_busybox(
        "conf",
        &[
            "ENV GREETING=hello",
            "WORKDIR /tmp",
            "USER daemon",
            r#"ENTRYPOINT ["/bin/sh","-c"]"#,
            r#"CMD ["echo $GREETING; pwd; id -un"]"#,
        ],
    );
    let out = env.berth(&["run", "--rm", "conf"]);
    assert_eq!(env.stdout_of(&out, 0), "hello\n/tmp\ndaemon\n");
    // A command replaces Cmd and keeps the Entrypoint; -e overrides Env.
    let out = env.berth(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hey",
        "conf",
        "echo $GREETING",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "hey\n");
    // --entrypoint drops the image's Cmd too (docker's rule).
    let out = env.berth(&["run", "--rm", "--entrypoint", "pwd", "conf"]);
    assert_eq!(env.stdout_of(&out, 0), "/tmp\n");
}

#[test]
fn volumes_rw_and_ro_and_read_only_root() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let rw = env.path("rw");
    let ro = env.path("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("in"), "host data\n").unwrap();
    let vrw = format!("{}:/data", rw.display());
    let vro = format!("{}:/ro:ro", ro.display());
    let out = env.berth(&[
        "run",
        "--rm",
        "-v",
        &vrw,
        "-v",
        &vro,
        "bb",
        "sh",
        "-c",
        "cat /ro/in; echo out > /data/out",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "host data\n");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "out\n");
    let out = env.berth(&["run", "--rm", "-v", &vro, "bb", "touch", "/ro/new"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    assert!(!ro.join("new").exists(), "a :ro volume must not be written");
    let out = env.berth(&["run", "--rm", "--read-only", "bb", "touch", "/new"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        env.describe(&out)
    );
    let out = env.berth(&["run", "--rm", "-v", "./relative:/x", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("./relative:/x"));
    env.assert_no_containers_left();
}

#[test]
fn without_rm_the_container_is_kept_and_names_are_unique() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&[
        "run",
        "--name",
        "keeper",
        "bb",
        "sh",
        "-c",
        "echo kept > /f; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", env.describe(&out));
    let records = env.container_records();
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec["name"], "keeper");
    assert_eq!(rec["status"], "exited");
    assert_eq!(rec["exit_code"], 3);
    let key = rec["snapshot"].as_str().unwrap().to_string();
    assert!(env.snapshots().contains(&key), "snapshot {key} is kept");
    // The container's changes are in its snapshot's upper directory.
    let upper = env.root().join("snapshotter/snapshots");
    let found = std::fs::read_dir(&upper).unwrap().any(|d| {
        std::fs::read_to_string(d.unwrap().path().join("fs/f")).is_ok_and(|s| s == "kept\n")
    });
    assert!(found, "the kept container's write is in its snapshot");
    let out = env.berth(&["run", "--name", "keeper", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"keeper\" is already in use") && err.contains(rec["id"].as_str().unwrap()),
        "the conflict names the existing container: {err}"
    );
    env.assert_no_mounts();
}

#[test]
fn sigterm_to_berth_stops_the_container() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    // A process that handles SIGTERM gets it.
    let code = env.run_then_signal(
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        &[],
    );
    assert_eq!(code, Some(42));
    // An init that ignores SIGTERM (pid 1 without a handler) is killed after
    // --stop-timeout.
    let code = env.run_then_signal(
        &["sh", "-c", "echo ready; exec sleep 1000"],
        &["--stop-timeout", "1"],
    );
    assert_eq!(code, Some(137));
    // A timeout past what a clock holds means no deadline, not a panic.
    let code = env.run_then_signal(
        &[
            "sh",
            "-c",
            "trap 'exit 43' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        &["--stop-timeout", "18446744073709551615"],
    );
    assert_eq!(code, Some(43));
    env.assert_no_containers_left();
}

#[test]
fn gc_during_a_run_keeps_the_running_containers_snapshots() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let mut child = env
        .command(&[
            "run",
            "--rm",
            "-i",
            "bb",
            "sh",
            "-c",
            "echo ready; read x; ls /bin/busybox",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // Remove the image and collect: its blobs go, the container's layers stay.
    env.ok(&["rmi", "bb"]);
    let gc = env.ok(&["gc"]);
    assert!(gc.contains("removed 3 blobs"), "gc output: {gc}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "layer + container snapshot kept: {snaps:?}");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "/bin/busybox\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // With the container gone, the next gc removes the unneeded layer.
    let gc = env.ok(&["gc"]);
    assert!(gc.contains("1 snapshots"), "gc output: {gc}");
    assert!(env.snapshots().is_empty());
    env.assert_no_containers_left();
}

#[test]
fn gc_keeps_snapshots_of_kept_containers() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&["run", "--name", "k", "bb", "true"]);
    env.stdout_of(&out, 0);
    env.ok(&["rmi", "bb"]);
    env.ok(&["gc"]);
    assert_eq!(env.snapshots().len(), 2, "{:?}", env.snapshots());
}

#[test]
fn tty_gives_the_container_a_terminal_with_the_hosts_size() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let script = common::require_peer("script");
    let cmd = format!(
        "stty rows 33 cols 77; {} --root {} run --rm -t bb sh -c 'test -t 0 && test -t 1 && echo tty-yes; stty size'",
        env!("CARGO_BIN_EXE_berth"),
        env.root().display()
    );
    let out = Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        // As Env's commands: no bridge left behind by a temporary data root.
        .env("BERTH_NETWORK", "none")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("tty-yes"),
        "the container sees a tty: {text:?}"
    );
    assert!(text.contains("33 77"), "the host's window size: {text:?}");
    // Without -t the container has no terminal, and stdin is /dev/null.
    let out = env.berth(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "test -t 1 || echo no-tty; cat",
    ]);
    assert_eq!(env.stdout_of(&out, 0), "no-tty\n");
    env.assert_no_containers_left();
}

#[test]
fn stdin_reaches_the_container_with_i() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let mut child = env
        .command(&["run", "--rm", "-i", "bb", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
}

#[test]
fn unknown_image_is_a_clear_error() {
    let env = Env::new();
    let out = env.berth(&["run", "--rm", "--pull", "never", "nosuchimage", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchimage"),
        "{}",
        env.describe(&out)
    );
}

#[test]
fn tty_window_size_changes_reach_the_container() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let cmd = env.command(&[
        "run",
        "--rm",
        "-t",
        "bb",
        "sh",
        "-c",
        // Bounded, so a missed resize fails the test instead of hanging it.
        "trap 'stty size; exit 0' WINCH; stty size; echo ready; i=0; \
         while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 9",
    ]);
    let (mut term, mut child) = common::Terminal::spawn(cmd, 20, 50);
    term.expect("20 50");
    term.expect("ready");
    // Resizing the terminal sends SIGWINCH to berth, which resizes the
    // container's pty: the container's trap prints the new size.
    term.resize(30, 70);
    term.expect("30 70");
    let status = child.wait().expect("wait berth");
    assert_eq!(status.code(), Some(0));
    env.assert_no_containers_left();
}

#[test]
fn concurrent_runs_of_a_fresh_image_share_one_unpacked_layer() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.command(&["run", "--rm", "bb", "echo", &format!("run-{i}")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn berth run")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait berth run");
        assert_eq!(env.stdout_of(&out, 0), format!("run-{i}\n"));
    }
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "one layer snapshot: {snaps:?}");
    env.assert_no_containers_left();
}

#[test]
fn the_next_run_cleans_up_after_a_killed_berth() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let abandon = |args: &[&str]| {
        let mut child = env.spawn_until_ready(args);
        child.kill().expect("SIGKILL berth");
        child.wait().expect("wait berth");
    };
    // Bounded, so a failed cleanup cannot leave it running for long.
    let script = "echo ready; exec sleep 60";
    abandon(&["run", "--rm", "--name", "gone", "bb", "sh", "-c", script]);
    let records = env.container_records();
    assert_eq!(records.len(), 1);
    // berth records "running" just after start returns, so the container may
    // print before the record says so: either live status is right here.
    let status = records[0]["status"].as_str().unwrap_or_default();
    assert!(status == "running" || status == "created", "{records:?}");
    // The next run kills the abandoned --rm container and removes it
    // entirely (so its name is free again) ...
    abandon(&["run", "--name", "gone", "bb", "sh", "-c", script]);
    let records = env.container_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["auto_remove"], false, "{records:?}");
    // ... and a kept one is killed and marked exited.
    let out = env.berth(&["run", "--rm", "bb", "echo", "again"]);
    assert_eq!(env.stdout_of(&out, 0), "again\n");
    let records = env.container_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["name"], "gone");
    assert_eq!(records[0]["status"], "exited");
    let mut state = std::fs::read_dir(env.root().join("run")).unwrap();
    assert!(
        state.all(|e| {
            let name = e.unwrap().file_name();
            name == "bundles" || name == berth_runtime::CACHE_DIR
        }),
        "no runtime state left"
    );
    let bundles = std::fs::read_dir(env.root().join("run/bundles"))
        .unwrap()
        .count();
    assert_eq!(bundles, 0, "no bundle left");
    env.assert_no_mounts();
}

/// `berth gc` reaps what a SIGKILLed `berth run` left: the container
/// process, its runtime state and cgroup, its bundle and overlay mount; a
/// kept container is marked exited, a `--rm` one loses its record and
/// snapshot. (Before, only the next `berth run` did this.)
#[test]
fn gc_reaps_the_containers_of_a_killed_berth() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let script = "echo ready; exec sleep 60";
    // Each case is reaped by gc before the next run (which would reap it too).
    let cases: [(&str, &[&str]); 2] = [
        ("kept", &["run", "--name", "kept", "bb", "sh", "-c", script]),
        (
            "gone",
            &["run", "--rm", "--name", "gone", "bb", "sh", "-c", script],
        ),
    ];
    for (name, args) in cases {
        let mut child = env.spawn_until_ready(args);
        // The container's init, from the one runtime state there is.
        let pids: Vec<i64> = std::fs::read_dir(env.root().join("run"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
            .filter_map(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            .filter_map(|v| v["init_pid"].as_i64())
            .collect();
        assert_eq!(pids.len(), 1, "one container runs");
        child.kill().expect("SIGKILL berth");
        child.wait().expect("wait berth");

        let out = env.berth(&["gc"]);
        let printed = env.stdout_of(&out, 0);
        assert!(
            printed.contains(&format!("reaped abandoned container: {name}")),
            "{printed}"
        );
        let proc_dir = format!("/proc/{}", pids[0]);
        let mut alive = true;
        for _ in 0..500 {
            alive = std::path::Path::new(&proc_dir).exists();
            if !alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive, "{name}: the container's init still runs after gc");
        let mut state: Vec<_> = std::fs::read_dir(env.root().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        state.retain(|n| n != "bundles" && n != berth_runtime::CACHE_DIR);
        assert!(state.is_empty(), "{name}: runtime state left: {state:?}");
        let bundles = std::fs::read_dir(env.root().join("run/bundles"))
            .unwrap()
            .count();
        assert_eq!(bundles, 0, "{name}: bundle left");
        env.assert_no_mounts();
    }
    // The kept container is exited, with its snapshot; the --rm one is gone.
    let records = env.container_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["name"], "kept");
    assert_eq!(records[0]["status"], "exited");
    let kept = format!("container-{}", records[0]["id"].as_str().unwrap());
    let snaps = env.snapshots();
    let containers: Vec<_> = snaps
        .iter()
        .filter(|s| s.starts_with("container-"))
        .collect();
    assert_eq!(containers, [&kept], "only the kept container's snapshot");
    // A second gc has nothing to reap, and the --rm container's name is free.
    let out = env.berth(&["gc"]);
    assert!(!env.stdout_of(&out, 0).contains("reaped"));
    let out = env.berth(&["run", "--rm", "--name", "gone", "bb", "true"]);
    env.stdout_of(&out, 0);
}

#[test]
fn the_harness_detaches_mounts_a_failed_test_left() {
    let env = Env::new();
    let target = env.path("left/rootfs");
    std::fs::create_dir_all(&target).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a tmpfs");
    let dir = env.path("");
    drop(env);
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !info.contains(dir.to_str().unwrap()),
        "mount left under {dir:?}"
    );
    assert!(!dir.exists(), "{dir:?} not removed");
}

/// Makes the data root look as after a crash and a new boot: the layers
/// committed unsynced in this boot are from an earlier one. Returns how
/// many there were.
fn crash_and_reboot(env: &Env) -> usize {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let path = env.root().join("snapshotter/metadata.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(boot.trim(), "an-earlier-boot")).unwrap();
    text.matches(boot.trim()).count()
}

#[test]
fn after_a_crash_layers_are_unpacked_again_and_kept_containers_keep_theirs() {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    let out = env.berth(&["run", "--rm", "bb", "echo", "first"]);
    assert_eq!(env.stdout_of(&out, 0), "first\n");
    let layers = env.snapshots();
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert_eq!(crash_and_reboot(&env), 1, "the layer is committed unsynced");
    assert_eq!(env.snapshots(), Vec::<String>::new(), "lost in the crash");
    let out = env.berth(&["run", "--rm", "bb", "echo", "again"]);
    assert_eq!(env.stdout_of(&out, 0), "again\n", "unpacked again");
    assert_eq!(env.snapshots(), layers);

    // A container kept across boots makes its image's layers durable.
    env.ok(&["run", "--name", "kept", "bb", "true"]);
    assert_eq!(crash_and_reboot(&env), 0, "nothing unsynced left");
    let snapshots = env.snapshots();
    assert_eq!(
        snapshots.len(),
        2,
        "the layer and the container's: {snapshots:?}"
    );
    assert!(snapshots.contains(&layers[0]), "{snapshots:?}");
    env.ok(&["rm", "kept"]);
}
