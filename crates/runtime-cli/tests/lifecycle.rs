//! The container life cycle through the CLI, as containerd and podman drive
//! it: create → state → start → exec → kill → delete, `run`, `list`, and
//! runc's error wording and exit codes for bad input.

use berth_testutil::runtime::*;

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&[
        "sh",
        "-c",
        "echo hello from berth; exit 3",
    ]));
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 3, "stderr: {err}");
    assert_eq!(out, "hello from berth\n");
    assert!(
        rt.leftovers().is_empty(),
        "run left state behind: {:?}",
        rt.leftovers()
    );
}

#[test]
fn run_reports_a_signal_death_as_128_plus_signal() {
    let rt = Rt::new();
    // Without a pid namespace: the shell is not a namespace init, which
    // could not be killed from inside.
    let mut spec = default_spec(&["sh", "-c", "kill -KILL $$"]);
    spec["linux"]["namespaces"] =
        json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]);
    let bundle = Bundle::new(&spec);
    let (code, _, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 137, "stderr: {err}");
}

#[test]
fn create_start_kill_delete_with_state_in_every_phase() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("life");
    let pid_file = bundle.path().join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);

    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.0.2");
    assert_eq!(
        st["bundle"],
        bundle.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        st["rootfs"],
        bundle.rootfs().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(st["owner"], "");
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // The init is the runtime itself until start: not yet the sleep.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("sleep"));
    // No temp file of the atomic pid-file write is left.
    let names: Vec<_> = std::fs::read_dir(bundle.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    rt.ok(&["start", &id]);
    let st = rt.state(&id);
    assert_eq!(st["status"], "running");
    assert_eq!(st["pid"].as_i64().unwrap(), pid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x001000\x00");
    assert!(rt
        .fails(&["start", &id])
        .contains("cannot start an already running container"));

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    let st = rt.state(&id);
    assert_eq!(st["pid"], 0);
    assert!(rt
        .fails(&["kill", &id, "KILL"])
        .contains("container not running"));
    assert!(rt
        .fails(&["start", &id])
        .contains("cannot start a container that has stopped"));

    rt.ok(&["delete", &id]);
    assert!(rt
        .fails(&["state", &id])
        .contains("container does not exist"));
    assert!(rt.leftovers().is_empty());
}

#[test]
fn exit_of_the_init_is_seen_as_stopped() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&["true"]));
    let id = unique_id("exit");
    rt.up(&bundle, &id, false);
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

/// While `create` runs, `state` and `list` report the container as
/// `creating` (runc's status), and operations that need it created are
/// refused; then it is `created`. A createRuntime hook asks the runtime
/// while create waits for it.
#[test]
fn state_says_creating_while_create_runs() {
    let rt = Rt::new();
    let id = unique_id("creating");
    let mut spec = sleeper();
    let bundle = Bundle::new(&spec);
    let out = bundle.path().join("seen");
    let hook = bundle.path().join("hook.sh");
    let root = rt.root().display().to_string();
    let bin = rt.bin().display().to_string();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n{bin} --root {root} state {id} > {o}.state\n\
             {bin} --root {root} list --format json > {o}.list\n\
             {bin} --root {root} start {id} 2> {o}.start\n\
             exit 0\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    spec["hooks"] = json!({"createRuntime": [{"path": hook}]});
    bundle.write_config(&spec);
    rt.up(&bundle, &id, false);
    let read = |ext: &str| std::fs::read_to_string(out.with_extension(ext)).unwrap();
    let state: Value = serde_json::from_str(&read("state")).expect("state JSON from the hook");
    assert_eq!(state["status"], "creating", "{state}");
    assert_eq!(state["id"], id.as_str());
    let list: Value = serde_json::from_str(&read("list")).expect("list JSON from the hook");
    assert_eq!(list[0]["status"], "creating", "{list}");
    assert!(
        read("start").contains("still being created"),
        "{}",
        read("start")
    );
    assert_eq!(rt.state(&id)["status"], "created");
    rt.ok(&["delete", &id]);
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

#[test]
fn delete_of_a_running_container_needs_force_and_removes_its_cgroup() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("del");
    rt.up(&bundle, &id, true);
    let cgroup = std::path::Path::new("/sys/fs/cgroup/pids").join(&id);
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_pids = own
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
        .unwrap_or_default();
    let cgroup = if own_pids.is_empty() || own_pids == "/" {
        cgroup
    } else {
        std::path::Path::new("/sys/fs/cgroup/pids")
            .join(own_pids.trim_start_matches('/'))
            .join(&id)
    };
    assert!(cgroup.is_dir(), "{} missing", cgroup.display());
    let err = rt.fails(&["delete", &id]);
    assert!(
        err.contains(&format!(
            "cannot delete container {id} that is not stopped: running"
        )),
        "{err}"
    );
    rt.ok(&["delete", "--force", &id]);
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    assert!(rt.leftovers().is_empty());
}

/// A program the kernel refuses only at the final exec (not an ELF, no
/// `#!`): `start` fails with the errno, named, and the container stops.
#[test]
fn start_reports_an_exec_the_kernel_refuses() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&["/not-a-program"]));
    std::fs::write(bundle.rootfs().join("not-a-program"), "plain text\n").unwrap();
    std::fs::set_permissions(
        bundle.rootfs().join("not-a-program"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let id = unique_id("enoexec");
    rt.up(&bundle, &id, false);
    let err = rt.fails(&["start", &id]);
    assert!(
        err.contains("/not-a-program") && err.contains("Exec format error"),
        "{err}"
    );
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    // `run` reports it too (the exec trampoline's errno report), exit 1.
    let (code, _, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Exec format error"), "{err}");
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

#[test]
fn a_created_container_can_be_deleted_without_force() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("cdel");
    rt.up(&bundle, &id, false);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", &id]);
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false);
    assert!(!alive, "init {pid} survived delete");
}

#[test]
fn list_prints_runc_table_json_and_quiet() {
    let rt = Rt::new();
    assert_eq!(rt.ok(&["list", "--format", "json"]), "null\n");
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("list");
    rt.up(&bundle, &id, false);
    assert_eq!(rt.ok(&["list", "-q"]), format!("{id}\n"));
    let table = rt.ok(&["list"]);
    let mut lines = table.lines();
    let header: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    );
    let row: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], id);
    assert_eq!(row[2], "created");
    assert_eq!(row[5], "root");
    let json: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["status"], "created");
    assert_eq!(json[0]["owner"], "root");
    rt.ok(&["delete", &id]);
}

#[test]
fn exec_runs_inline_args_with_env_cwd_user_and_returns_the_exit_code() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("exec");
    rt.up(&bundle, &id, true);
    let out = rt.output(&[
        "exec",
        "-e",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        "-u",
        "1000:100",
        &id,
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; id -g; cat /proc/1/cmdline; exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n/tmp\n1000\n100\nsleep\u{0}1000\u{0}"
    );

    // --process file, detached, with a pid file.
    let process = json!({
        "args": ["sh", "-c", "echo from-process > /dev/shm/marker; sleep 1000"],
        "cwd": "/", "user": {"uid": 0, "gid": 0},
        "env": ["PATH=/bin"]
    });
    let pfile = bundle.path().join("process.json");
    std::fs::write(&pfile, process.to_string()).unwrap();
    let pid_file = bundle.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--process",
        pfile.to_str().unwrap(),
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&pid), "exec pid {pid} not in ps {ps:?}");
    let table = rt.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert!(table.contains("sleep 1000"), "{table}");
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "while [ ! -s /dev/shm/marker ]; do sleep 0.01; done; cat /dev/shm/marker",
    ]);
    assert_eq!(out, "from-process\n");
    // Unknown program: a clear error, like runc's.
    // runc's status for a failed exec: 255.
    let err = rt.fails_with(&["exec", &id, "no-such-program"], 255);
    assert!(err.contains("exec failed"), "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn kill_accepts_names_and_numbers_and_all() {
    let rt = Rt::new();
    let mut spec = default_spec(&[
        "sh",
        "-c",
        "trap 'echo got-usr1 > /tmp/sig' USR1; while true; do sleep 0.01; done",
    ]);
    spec["root"]["readonly"] = json!(false);
    let bundle = Bundle::new(&spec);
    let id = unique_id("kill");
    rt.up(&bundle, &id, true);
    rt.ok(&["kill", &id, "SIGUSR1"]);
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "while [ ! -s /tmp/sig ]; do sleep 0.01; done; cat /tmp/sig",
    ]);
    assert_eq!(out, "got-usr1\n");
    let err = rt.fails(&["kill", &id, "SIGNOPE"]);
    assert!(err.contains("SIGNOPE"), "{err}");
    rt.ok(&["kill", "--all", &id, "9"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

#[test]
fn unknown_containers_do_not_exist() {
    let rt = Rt::new();
    for args in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope"],
        &["delete", "nope"],
        &["ps", "nope"],
    ] {
        let err = rt.fails(args);
        assert!(err.contains("container does not exist"), "{args:?}: {err}");
    }
    let err = rt.fails_with(&["exec", "nope", "true"], 255);
    assert!(err.contains("container does not exist"), "{err}");
    rt.ok(&["delete", "--force", "nope"]);
}

#[test]
fn duplicate_ids_are_refused_and_the_first_container_survives() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("dup");
    rt.up(&bundle, &id, false);
    let err = rt.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(
        err.contains(&format!("container with given ID already exists: {id}")),
        "{err}"
    );
    assert_eq!(rt.state(&id)["status"], "created");
    rt.ok(&["delete", &id]);
}

#[test]
fn bad_bundles_name_the_problem_and_leave_nothing_behind() {
    let rt = Rt::new();
    // Missing rootfs.
    let bundle = Bundle::new(&sleeper());
    std::fs::remove_dir_all(bundle.rootfs()).unwrap();
    let err = create_fails(&rt, &bundle);
    assert!(
        err.contains("root.path") && err.contains("does not exist"),
        "{err}"
    );

    // Malformed JSON.
    let bundle = Bundle::new(&sleeper());
    std::fs::write(bundle.path().join("config.json"), "{\"ociVersion\": ").unwrap();
    let err = create_fails(&rt, &bundle);
    assert!(
        err.contains("config.json") && err.contains("malformed JSON"),
        "{err}"
    );

    // A field of the wrong kind is named by its path.
    let mut spec = sleeper();
    spec["process"]["capabilities"]["bounding"] = json!(["CAP_NOT_A_THING"]);
    bundle.write_config(&spec);
    let err = create_fails(&rt, &bundle);
    assert!(err.contains("process.capabilities.bounding"), "{err}");

    // Empty args.
    let mut spec = sleeper();
    spec["process"]["args"] = json!([]);
    bundle.write_config(&spec);
    let err = create_fails(&rt, &bundle);
    assert!(err.contains("process.args"), "{err}");

    // Hostname without a UTS namespace.
    let mut spec = sleeper();
    spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "pid"}]);
    bundle.write_config(&spec);
    let err = create_fails(&rt, &bundle);
    assert!(err.contains("hostname") && err.contains("UTS"), "{err}");

    // Failure inside the init (a mount that cannot be made) is reported and
    // cleaned up too.
    let mut spec = sleeper();
    spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/no/such/source", "options": ["bind"]}));
    bundle.write_config(&spec);
    let err = create_fails(&rt, &bundle);
    assert!(err.contains("/no/such/source"), "{err}");

    assert!(
        rt.leftovers().is_empty(),
        "left behind: {:?}",
        rt.leftovers()
    );
    let err = rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "bad/id",
    ]);
    assert!(err.contains("invalid container ID format"), "{err}");
}

#[test]
fn systemd_cgroup_is_a_clear_error() {
    let rt = Rt::new();
    let err = rt.fails(&["--systemd-cgroup", "list"]);
    assert!(err.contains("systemd"), "{err}");
}

#[test]
fn spec_writes_a_config_that_runs_and_refuses_to_overwrite() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    std::fs::remove_file(bundle.path().join("config.json")).unwrap();
    rt.ok(&["spec", "--bundle", bundle.path().to_str().unwrap()]);
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap()).unwrap();
    assert!(rt
        .fails(&["spec", "--bundle", bundle.path().to_str().unwrap()])
        .contains("exists"));
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["echo", "spec-ok"]);
    bundle.write_config(&spec);
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!((code, out.as_str()), (0, "spec-ok\n"), "{err}");
    let features: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert!(features["ociVersionMax"].is_string(), "{features}");
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("pause");
    rt.up(&bundle, &id, true);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn a_created_container_dies_on_sigterm_like_runcs_init() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("term");
    rt.up(&bundle, &id, false);
    rt.ok(&["kill", &id, "TERM"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

#[test]
fn run_with_a_terminal_and_no_console_socket_proxies_the_pty() {
    let rt = Rt::new();
    let mut spec = default_spec(&["sh", "-c", "tty; echo on-a-tty; exit 4"]);
    spec["process"]["terminal"] = json!(true);
    let bundle = Bundle::new(&spec);
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 4, "{err}");
    assert_eq!(out, "/dev/pts/0\r\non-a-tty\r\n");
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

/// `create` of `bundle` under a fresh id, which must fail; returns stderr.
fn create_fails(rt: &Rt, bundle: &Bundle) -> String {
    rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &unique_id("bad"),
    ])
}
