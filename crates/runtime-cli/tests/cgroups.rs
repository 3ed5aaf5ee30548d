//! The runtime's use of cgroups as the peer tests (containerd, podman)
//! exercise it: when the limits are written relative to the container's
//! setup, which cgroup later commands act on, what `update` records and how
//! cgroup errors are reported.

use berth_testutil::runtime::*;

/// Issue 2.1: the limits (device rules included) must be written before the
/// child that builds the container runs, as runc writes them before its init
/// starts: in cgroup v1 a deny-all rule denies every device until the
/// allows follow, and a child creating /dev nodes meanwhile got EPERM.
///
/// Deterministic argument: the child is blocked on the sync socket until the
/// parent releases it. Here `set` writes 40000 device rules (hundreds of
/// milliseconds) and then fails on a hugepage size the kernel does not have.
/// With the limits written before the release, the child never ran, so the
/// mount point it would create in the rootfs never appears. When the
/// release came first (the bug), the child built the rootfs while the rules
/// were being written and the directory was there.
#[test]
fn limits_are_written_before_the_child_starts_building_the_container() {
    let rt = Rt::new();
    let mut spec = sleeper();
    let rule = json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"});
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    rules.extend(std::iter::repeat_n(rule, 40_000));
    spec["linux"]["resources"] = json!({
        "devices": rules,
        "hugepageLimits": [{"pageSize": "3MB", "limit": 4194304}],
    });
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/made-by-the-child", "type": "tmpfs", "source": "tmpfs"}));
    let bundle = Bundle::new(&spec);
    let id = unique_id("order");
    let err = rt.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(err.contains("3MB"), "{err}");
    assert!(
        !bundle.rootfs().join("made-by-the-child").exists(),
        "the child built the rootfs before the cgroup limits were written"
    );
    assert!(rt.leftovers().is_empty(), "{:?}", rt.leftovers());
}

/// Issue 2.2: a cgroups error was printed twice (once in the runtime's
/// message and again as its source in the `{:#}` chain).
#[test]
fn a_cgroups_error_is_printed_once() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["linux"]["cgroupsPath"] = json!("system.slice:berth:twice");
    let bundle = Bundle::new(&spec);
    let id = unique_id("twice");
    let err = rt.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(
        err.matches("systemd cgroup driver is not supported")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("cgroups:").count(), 1, "{err}");
}

/// This process's cgroup in the v1 hierarchy mounted at
/// /sys/fs/cgroup/<controller>, as a host directory.
fn own_cgroup_dir(controller: &str) -> std::path::PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let rel = own
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrls, path) = rest.split_once(':')?;
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no v1 {controller} hierarchy in /proc/self/cgroup: {own}"));
    std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(rel.trim_start_matches('/'))
}

/// Removes the test's sub-cgroups (after the container's are gone).
struct SubCgroups(Vec<std::path::PathBuf>);
impl Drop for SubCgroups {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Issue 2.3: with an empty (or relative) cgroupsPath the container's cgroup
/// is below the cgroup of the process that ran `create`. Later commands run
/// from other cgroups (containerd's shim, podman, a shell) must act on that
/// same cgroup, not re-resolve the path against their own: here `create`
/// runs in a sub-cgroup of the pids and freezer hierarchies, and `ps`,
/// `pause`, `resume`, `update`, `events`, `kill --all` and `delete` run
/// from this test's cgroup. Nothing may leak.
#[test]
fn commands_from_another_cgroup_act_on_the_cgroup_create_made() {
    let rt = Rt::new();
    let id = unique_id("relcg");
    let mut subs = SubCgroups(Vec::new());
    let mut moves = String::new();
    for ctrl in ["pids", "freezer"] {
        let sub = own_cgroup_dir(ctrl).join(format!("sub-{id}"));
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("mkdir {}: {e}", sub.display()));
        moves.push_str(&format!("echo $$ > {}/cgroup.procs && ", sub.display()));
        subs.0.push(sub);
    }
    let mut spec = sleeper();
    spec["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    let bundle = Bundle::new(&spec);
    let script = format!(
        "{moves}exec {} --root {} create --bundle {} {id}",
        rt.bin().display(),
        rt.root().display(),
        bundle.path().display()
    );
    let out = tempfile::tempfile().unwrap();
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create from a sub-cgroup failed: {status}"
    );
    let container_cgroups: Vec<_> = subs.0.iter().map(|s| s.join(&id)).collect();
    for cg in &container_cgroups {
        assert!(cg.is_dir(), "{} missing", cg.display());
    }
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["start", &id]);
    let ps = rt.ok(&["ps", "--format", "json", &id]);
    assert_eq!(ps.trim(), format!("[{pid}]"));
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["update", "--pids-limit", "5", &id]);
    let pids_max = std::fs::read_to_string(container_cgroups[0].join("pids.max")).unwrap();
    assert_eq!(pids_max, "5\n");
    let line = rt.ok(&["events", "--stats", &id]);
    let ev: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(ev["data"]["pids"]["current"], 1, "{ev}");
    assert_eq!(ev["data"]["pids"]["limit"], 5, "{ev}");
    rt.ok(&["kill", "--all", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    for cg in &container_cgroups {
        assert!(!cg.exists(), "cgroup {} leaked", cg.display());
    }
    for sub in &subs.0 {
        std::fs::remove_dir(sub).unwrap_or_else(|e| panic!("rmdir {}: {e}", sub.display()));
    }
}

/// The saved config's `linux.resources` (state.json).
fn saved_resources(rt: &Rt, id: &str) -> Value {
    let path = rt.root().join(id).join("state.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["config"]["linux"]["resources"].clone()
}

/// Issue 2.4: like runc (which saves the updated config in its state),
/// `update` records the new limits, keeping the fields it did not change.
#[test]
fn update_records_the_new_limits_in_the_state() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["linux"]["resources"] = json!({
        "pids": {"limit": 100},
        "memory": {"limit": 256 << 20, "reservation": 128 << 20},
    });
    let bundle = Bundle::new(&spec);
    let id = unique_id("upsave");
    rt.up(&bundle, &id, true);
    rt.ok(&["update", "--pids-limit", "7", "--memory", "64m", &id]);
    let res = saved_resources(&rt, &id);
    assert_eq!(res["pids"]["limit"], 7, "{res}");
    assert_eq!(res["memory"]["limit"], 64 << 20, "{res}");
    assert_eq!(res["memory"]["reservation"], 128 << 20, "{res}");
    let file = bundle.path().join("res.json");
    std::fs::write(&file, r#"{"cpu": {"shares": 512}}"#).unwrap();
    rt.ok(&["update", "--resources", file.to_str().unwrap(), &id]);
    let res = saved_resources(&rt, &id);
    assert_eq!(res["cpu"]["shares"], 512, "{res}");
    assert_eq!(res["pids"]["limit"], 7, "{res}");
    // A refused update changes nothing.
    let err = rt.fails(&["update", "--cpuset-cpus", "4096", &id]);
    assert!(err.contains("cpuset.cpus"), "{err}");
    assert_eq!(saved_resources(&rt, &id), res);
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["delete", "--force", &id]);
}
