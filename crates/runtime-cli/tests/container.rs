//! What the process sees inside the container: namespaces, mounts, devices,
//! masked and read-only paths, hostname, ids, rlimits, capabilities,
//! cgroups, hooks — each checked from inside a real busybox container.

use berth_testutil::runtime::*;

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{key} missing in {status}"))
}

#[test]
fn process_user_groups_umask_rlimits_nnp_env_cwd_and_oom_score() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["process"]["user"] =
        json!({"uid": 1000, "gid": 100, "additionalGids": [5, 6], "umask": 63});
    spec["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}
    ]);
    spec["process"]["env"] = json!(["PATH=/bin", "FOO=bar baz"]);
    spec["process"]["cwd"] = json!("/tmp");
    spec["process"]["oomScoreAdj"] = json!(123);
    spec["root"]["readonly"] = json!(false);
    let out = rt.sh(spec, "id -u; id -g; id -G; umask; ulimit -n; ulimit -Hn; ulimit -c; echo \"$FOO\"; pwd; cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "100");
    let groups: Vec<_> = lines[2].split_whitespace().collect();
    assert!(
        groups.contains(&"5") && groups.contains(&"6"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "0077");
    assert_eq!(&lines[4..9], ["256", "512", "0", "bar baz", "/tmp"]);
    assert_eq!(lines[9], "123");
    assert_eq!(lines[10].split_whitespace().last(), Some("1"));
}

#[test]
fn all_five_capability_sets_are_applied() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    // CAP_CHOWN=0, CAP_KILL=5, CAP_NET_BIND_SERVICE=10, CAP_SYS_ADMIN=21.
    spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_KILL"]
    });
    spec["process"]["noNewPrivileges"] = json!(false);
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let out = rt.sh(spec, "cat /proc/self/status");
    // As uid 1000 after exec: ambient {KILL} becomes permitted+effective;
    // the bounding and inheritable sets are as configured.
    assert_eq!(
        status_field(&out, "CapBnd"),
        format!("{:016x}", (1u64 << 0) | (1 << 5) | (1 << 10) | (1 << 21))
    );
    assert_eq!(
        status_field(&out, "CapInh"),
        format!("{:016x}", (1u64 << 5) | (1 << 10))
    );
    assert_eq!(status_field(&out, "CapAmb"), format!("{:016x}", 1u64 << 5));
    assert_eq!(status_field(&out, "CapPrm"), format!("{:016x}", 1u64 << 5));
    assert_eq!(status_field(&out, "CapEff"), format!("{:016x}", 1u64 << 5));

    // As root, effective and permitted are kept as configured.
    let mut spec = default_spec(&[]);
    spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "effective": ["CAP_KILL"]
    });
    let out = rt.sh(spec, "cat /proc/self/status");
    assert_eq!(
        status_field(&out, "CapBnd"),
        format!("{:016x}", 1u64 | (1 << 5) | (1 << 21))
    );
    assert_eq!(
        status_field(&out, "CapPrm"),
        format!("{:016x}", 1u64 | (1 << 5))
    );
    // execve as root raises effective to permitted (as with runc).
    assert_eq!(
        status_field(&out, "CapEff"),
        format!("{:016x}", 1u64 | (1 << 5))
    );
}

#[test]
fn hostname_domainname_and_sysctl() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["hostname"] = json!("box-1");
    spec["domainname"] = json!("example.test");
    spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"});
    let out = rt.sh(spec, "hostname; cat /proc/sys/kernel/domainname; cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/shmmni");
    assert_eq!(out, "box-1\nexample.test\n1\n1234\n");
}

/// A new network namespace has its loopback interface up, as runc gives it
/// (operstate "unknown" is lo's when up; "down" before).
#[test]
fn a_new_network_namespace_has_loopback_up() {
    let rt = Rt::new();
    let out = rt.sh(default_spec(&[]), "cat /sys/class/net/lo/operstate");
    assert_eq!(out, "unknown\n");
}

/// A mount destination through a symlink to a missing path: the target is
/// created inside the rootfs and mounted there (as runc does); was ENOENT.
#[test]
fn a_mount_through_a_dangling_symlink_lands_at_its_target_inside_the_rootfs() {
    let rt = Rt::new();
    let mut spec = default_spec(&["sh", "-c", "echo data > /cache/f; cat /var/cache/app/f; grep -c ' /var/cache/app ' /proc/self/mountinfo"]);
    spec["root"]["readonly"] = json!(false);
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/cache", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
    let bundle = Bundle::new(&spec);
    std::os::unix::fs::symlink("/var/cache/app", bundle.rootfs().join("cache")).unwrap();
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!((code, out.as_str()), (0, "data\n1\n"), "{err}");
    assert!(bundle.rootfs().join("var/cache/app").is_dir());
    assert!(
        !bundle.rootfs().join("var/cache/app/f").exists(),
        "written to the tmpfs, not the rootfs"
    );
}

#[test]
fn masked_and_readonly_paths_and_readonly_root() {
    let rt = Rt::new();
    let out = rt.sh(
        default_spec(&[]),
        "wc -c < /proc/timer_list; wc -c < /proc/keys; ls /sys/firmware | wc -l; \
         (echo 1 > /proc/sys/kernel/shmmni) 2>/dev/null && echo sys-writable || echo sys-ro; \
         touch /newfile 2>/dev/null && echo root-writable || echo root-ro; \
         touch /dev/shm/ok && echo shm-writable",
    );
    assert_eq!(out, "0\n0\n0\nsys-ro\nroot-ro\nshm-writable\n");
}

#[test]
fn mounts_in_order_with_their_options_and_propagation() {
    let rt = Rt::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data"), "host data").unwrap();
    let mut spec = default_spec(&[]);
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=700"]}));
    mounts.push(json!({"destination": "/scratch/inner", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]}));
    mounts.push(json!({"destination": "/hostro", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "rprivate"]}));
    mounts.push(json!({"destination": "/etc/hostdata", "type": "bind", "source": host.path().join("data"), "options": ["bind", "nosuid"]}));
    mounts.push(json!({"destination": "/shared", "type": "tmpfs", "source": "tmpfs", "options": ["shared"]}));
    let out = rt.sh(spec, "cat /proc/self/mountinfo; echo ---; cat /etc/hostdata; echo; stat -c %a /scratch; touch /hostro/x 2>/dev/null || echo bind-ro");
    let (info, rest) = out.split_once("---\n").unwrap();
    let line = |mp: &str| {
        info.lines()
            .find(|l| l.split(' ').nth(4) == Some(mp))
            .unwrap_or_else(|| panic!("{mp} not mounted:\n{info}"))
            .to_string()
    };
    let scratch = line("/scratch");
    assert!(
        scratch.contains("nosuid,nodev,noexec")
            && scratch.contains("size=1024k")
            && scratch.contains("mode=700"),
        "{scratch}"
    );
    assert!(line("/scratch/inner").contains("size=2048k"));
    // Order: the inner mount is on top of the outer one.
    let id_of = |l: &str| l.split(' ').next().unwrap().to_string();
    let parent_of = |l: &str| l.split(' ').nth(1).unwrap().to_string();
    assert_eq!(parent_of(&line("/scratch/inner")), id_of(&scratch));
    let hostro = line("/hostro");
    assert!(
        hostro.split(' ').nth(5).unwrap().starts_with("ro"),
        "{hostro}"
    );
    assert!(
        !hostro.contains("shared:") && !hostro.contains("master:"),
        "rprivate not applied: {hostro}"
    );
    assert!(line("/shared").contains("shared:"), "{}", line("/shared"));
    assert!(line("/etc/hostdata").contains("nosuid"));
    assert!(
        line("/dev/pts").contains("ptmxmode=666"),
        "{}",
        line("/dev/pts")
    );
    assert!(line("/dev/mqueue").contains("mqueue"));
    assert!(line("/sys").split(' ').nth(5).unwrap().starts_with("ro"));
    assert!(line("/sys/fs/cgroup").contains("tmpfs") || line("/sys/fs/cgroup").contains("cgroup2"));
    assert_eq!(rest, "host data\n700\nbind-ro\n");
}

#[test]
fn default_devices_symlinks_and_configured_devices() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["linux"]["devices"] = json!([
        {"path": "/dev/fuse-test", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 7, "gid": 8},
        {"path": "/dev/sub/blk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600, "uid": 0, "gid": 0}
    ]);
    let out = rt.sh(
        spec,
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do echo $l $(readlink /dev/$l); done; \
         stat -c '%n %F %t:%T %a %u:%g' /dev/fuse-test /dev/sub/blk; \
         echo hi > /dev/null && head -c 4 /dev/zero | wc -c",
    );
    let expect = "/dev/null character special file 1:3 666
/dev/zero character special file 1:5 666
/dev/full character special file 1:7 666
/dev/random character special file 1:8 666
/dev/urandom character special file 1:9 666
/dev/tty character special file 5:0 666
fd /proc/self/fd
stdin /proc/self/fd/0
stdout /proc/self/fd/1
stderr /proc/self/fd/2
ptmx pts/ptmx
/dev/fuse-test character special file a:e5 640 7:8
/dev/sub/blk block special file 7:0 600 0:0
4
";
    assert_eq!(out, expect);
}

#[test]
fn namespaces_are_new_or_joined_by_path() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("nsowner");
    rt.up(&bundle, &id, true);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let ns = |p: &str, n: &str| {
        std::fs::read_link(format!("/proc/{p}/ns/{n}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for n in ["pid", "net", "ipc", "uts", "mnt"] {
        assert_ne!(
            ns(&pid.to_string(), n),
            ns("self", n),
            "{n} namespace not new"
        );
    }
    let mut spec = default_spec(&[]);
    spec["linux"]["namespaces"] = json!([
        {"type": "mount"}, {"type": "pid"}, {"type": "uts"},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "cgroup"}
    ]);
    let out = rt.sh(spec, "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; echo $$; cat /proc/self/cgroup | grep -c ':/$'");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[0], ns(&pid.to_string(), "net"));
    assert_eq!(lines[1], ns(&pid.to_string(), "ipc"));
    assert_eq!(lines[2], "1", "not pid 1 in a new pid namespace");
    assert_ne!(
        lines[3], "0",
        "cgroup namespace does not root the container's cgroup"
    );
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn user_namespace_with_id_mappings() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // The mapped root must be able to reach the bundle.
    spec["process"]["args"] = json!([
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; echo ok > /dev/null && echo dev-ok"
    ]);
    let bundle = Bundle::new(&spec);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bundle.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 0, "{err}");
    let norm: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(norm, ["0 200000 65536", "0 200000 65536", "0", "dev-ok"]);
}

#[test]
fn time_namespace_offsets_apply() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    let out = rt.sh(spec, "cut -d. -f1 /proc/uptime");
    let up: u64 = out.trim().parse().unwrap();
    assert!(
        up >= 864000,
        "uptime {up} does not include the boottime offset"
    );
}

#[test]
fn cgroup_limits_apply_inside_the_container() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "pids": {"limit": 42},
        "memory": {"limit": 67108864}
    });
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/sys/fs/cgroup");
    spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    let out = rt.sh(spec, "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max");
    assert_eq!(out, "42\n67108864\n");
}

#[test]
fn no_pivot_moves_the_rootfs() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&[
        "sh",
        "-c",
        "ls /bin/busybox && awk '$5 == \"/\"' /proc/self/mountinfo | wc -l",
    ]));
    let id = unique_id("nopivot");
    let out = rt.output(&[
        "run",
        "--no-pivot",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin/busybox\n1\n");
}

#[test]
fn preserve_fds_passes_fds_to_the_container() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&[
        "sh",
        "-c",
        "cat <&3; ls /proc/self/fd | wc -l",
    ]));
    let data = bundle.path().join("fd3.txt");
    std::fs::write(&data, "through fd 3\n").unwrap();
    let id = unique_id("pfd");
    let script = format!(
        "exec 3<{} 4</dev/null; exec {} --root {} run --preserve-fds 1 --bundle {} {}",
        data.display(),
        rt.bin().display(),
        rt.root().display(),
        bundle.path().display(),
        id
    );
    let out = berth_testutil::run_ok(std::process::Command::new("bash").arg("-c").arg(&script));
    // fd 3 passed; fd 4 (not preserved) closed: ls sees 0,1,2,3 and its own dir fd.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through fd 3\n5\n");
}

#[test]
fn lifecycle_hooks_get_the_state_and_a_failing_hook_aborts_create() {
    let rt = Rt::new();
    let bundle = Bundle::new(&default_spec(&["true"]));
    let log = bundle.path().join("hooks.log");
    let hook = |stage: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo \"{stage} $s\" >> {}", log.display())]});
    let mut spec = default_spec(&["true"]);
    spec["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    bundle.write_config(&spec);
    let (code, _, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let stages: Vec<_> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        stages,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ]
    );
    for l in text.lines() {
        let (stage, json) = l.split_once(' ').unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        assert!(v["pid"].as_i64().unwrap() > 0 || stage == "poststop", "{l}");
        let want = match stage {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "creating",
        };
        assert_eq!(v["status"], want, "{l}");
    }

    spec["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    bundle.write_config(&spec);
    let id = unique_id("hookfail");
    let err = rt.fails(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(err.contains("createRuntime"), "{err}");
    assert!(rt.leftovers().is_empty());
}

#[test]
fn rootfs_propagation_is_applied_to_the_root_mount() {
    let rt = Rt::new();
    let mut spec = default_spec(&[]);
    spec["linux"]["rootfsPropagation"] = json!("shared");
    let out = rt.sh(spec, "awk '$5 == \"/\"' /proc/self/mountinfo");
    assert!(out.contains(" shared:"), "{out}");
    let mut spec = default_spec(&[]);
    spec["linux"]["rootfsPropagation"] = json!("private");
    let out = rt.sh(spec, "awk '$5 == \"/\"' /proc/self/mountinfo");
    assert!(
        !out.contains("shared:") && !out.contains("master:"),
        "{out}"
    );
}

#[test]
fn cgroups_path_places_the_container_and_delete_removes_it() {
    let rt = Rt::new();
    let name = unique_id("berth-cgpath");
    let mut spec = default_spec(&[]);
    spec["linux"]["cgroupsPath"] = json!(format!("/{name}/ctr"));
    let out = rt.sh(spec, "grep ':pids:' /proc/self/cgroup");
    assert_eq!(
        out.trim().rsplit(':').next().unwrap(),
        format!("/{name}/ctr")
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/pids/{name}/ctr")).exists(),
        "the container's cgroup was not removed"
    );
    // The parent the path named is not the runtime's to remove; clean up.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(&name));
    }
}

#[test]
fn exec_adds_capabilities_and_no_new_privs() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["process"]["noNewPrivileges"] = json!(false);
    let bundle = Bundle::new(&spec);
    let id = unique_id("execcap");
    rt.up(&bundle, &id, true);
    let plain = rt.ok(&["exec", &id, "cat", "/proc/self/status"]);
    assert_eq!(status_field(&plain, "NoNewPrivs"), "0");
    let eff: u64 = u64::from_str_radix(&status_field(&plain, "CapEff"), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN without --cap");
    let more = rt.ok(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        "--no-new-privs",
        &id,
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(status_field(&more, "NoNewPrivs"), "1");
    let eff: u64 = u64::from_str_radix(&status_field(&more, "CapEff"), 16).unwrap();
    assert_ne!(
        eff & (1 << 21),
        0,
        "--cap CAP_SYS_ADMIN not in CapEff: {eff:x}"
    );
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn update_changes_limits_and_events_reports_stats() {
    let rt = Rt::new();
    let mut spec = sleeper();
    spec["linux"]["resources"] = json!({"pids": {"limit": 100}});
    let bundle = Bundle::new(&spec);
    let id = unique_id("update");
    rt.up(&bundle, &id, true);
    let pids_max = || rt.ok(&["exec", &id, "cat", "/sys/fs/cgroup/pids/pids.max"]);
    assert_eq!(pids_max(), "100\n");
    rt.ok(&["update", "--pids-limit", "7", "--memory", "64m", &id]);
    assert_eq!(pids_max(), "7\n");
    let mem = rt.ok(&[
        "exec",
        &id,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(mem, format!("{}\n", 64 << 20));
    let res = bundle.path().join("res.json");
    std::fs::write(&res, r#"{"pids": {"limit": 9}}"#).unwrap();
    rt.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert_eq!(pids_max(), "9\n");
    std::fs::write(&res, r#"{"pids": {"limit": "nine"}}"#).unwrap();
    let err = rt.fails(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert!(err.contains("pids.limit"), "{err}");

    let line = rt.ok(&["events", "--stats", &id]);
    let ev: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    // An interval past what a clock holds: the stats once, then it keeps
    // watching for OOM kills (no overflow).
    let mut events = rt
        .command(&["events", "--interval", "18446744073709551615s", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(events.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains(r#""type":"stats""#), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        events.try_wait().unwrap().is_none(),
        "events stopped: {:?}",
        events.wait_with_output()
    );
    events.kill().unwrap();
    events.wait().unwrap();
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn a_user_namespace_can_be_joined_by_path() {
    use std::os::unix::fs::PermissionsExt;
    let rt = Rt::new();
    let mut owner = sleeper();
    owner["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    owner["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    owner["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    let bundle = Bundle::new(&owner);
    std::fs::set_permissions(bundle.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = unique_id("userns-owner");
    rt.up(&bundle, &id, true);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();

    let mut joiner = default_spec(&[]);
    joiner["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user", "path": format!("/proc/{pid}/ns/user")}));
    joiner["process"]["args"] = json!([
        "sh",
        "-c",
        "readlink /proc/self/ns/user; cat /proc/self/uid_map"
    ]);
    let bundle2 = Bundle::new(&joiner);
    std::fs::set_permissions(bundle2.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = rt.run_bundle(&bundle2);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<_> = out.lines().collect();
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_eq!(lines[0], theirs.to_str().unwrap());
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "300000", "65536"]
    );
    // exec joins the user namespace first and runs as its root.
    assert_eq!(
        rt.ok(&[
            "exec",
            &id,
            "sh",
            "-c",
            "id -u; touch /dev/shm/x && echo wrote"
        ]),
        "0\nwrote\n"
    );
    rt.ok(&["delete", "--force", &id]);
}
