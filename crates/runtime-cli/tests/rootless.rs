//! Rootless containers: a real unprivileged user (made with useradd) runs
//! `berth-runtime --rootless` through setpriv. Its state lives under its
//! XDG_RUNTIME_DIR, its container runs in a user namespace (one mapping of
//! its own ids written directly, several through newuidmap/newgidmap from
//! /etc/subuid and /etc/subgid), and without delegated cgroups (none on
//! these machines) a container runs without a cgroup while resource limits
//! are refused with an error naming the missing delegation.

use std::os::unix::fs::MetadataExt;
use std::process::{Output, Stdio};

use berth_testutil::runtime::{json, runtime_bin, Value};
use berth_testutil::user::TestUser;
use berth_testutil::{busybox_layout, require_peer, run_ok, unique_id, Bundle};

/// `runc spec --rootless` for `user`, running `args`, its rootfs the user's.
fn rootless_bundle(user: &TestUser, args: &[&str]) -> Bundle {
    let mut spec = berth_runtime::spec_template::default_spec_json(true);
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = json!(args);
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": user.uid, "size": 1}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": user.gid, "size": 1}]);
    let bundle = Bundle::new(&spec);
    user.chown(bundle.path());
    bundle
}

fn write_spec(user: &TestUser, bundle: &Bundle, spec: &Value) {
    bundle.write_config(spec);
    user.chown(&bundle.path().join("config.json"));
}

fn spec_of(bundle: &Bundle) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap()).unwrap()
}

/// `berth-runtime ARGS` as `user`, stdin closed.
fn runtime(user: &TestUser, args: &[&str]) -> Output {
    user.command(&runtime_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run berth-runtime as the test user")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_single_mapping_makes_the_user_root_inside_and_leaves_it_itself_outside() {
    let user = TestUser::new(false);
    let bundle = rootless_bundle(&user, &["sh", "-c", "whoami; cat /proc/self/uid_map"]);
    let bpath = bundle.path().to_str().unwrap();
    let id = unique_id("rootless");
    let out = runtime(&user, &["--rootless", "run", "--bundle", bpath, &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let uid = user.uid.to_string();
    assert_eq!(lines, [vec!["root"], vec!["0", uid.as_str(), "1"]]);

    // Detached (and runc's spelling `--rootless true`): the state is under
    // XDG_RUNTIME_DIR and the container's process runs under the user's uid
    // on the host.
    let mut spec = spec_of(&bundle);
    spec["process"]["args"] = json!(["sleep", "600"]);
    write_spec(&user, &bundle, &spec);
    let out = user
        .command(&runtime_bin())
        .args(["--rootless", "true", "run", "-d", "--bundle", bpath, &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    let state_dir = user.runtime_dir().join("berth").join(&id);
    assert_eq!(std::fs::metadata(&state_dir).unwrap().uid(), user.uid);
    let state: Value =
        serde_json::from_slice(&runtime(&user, &["state", &id]).stdout).expect("state JSON");
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        host_uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        [uid.as_str(); 4]
    );
    // exec re-executes the runtime from a sealed memfd copy (a user may not
    // make the read-only bind mount root's exec uses) and joins the
    // container's user namespace.
    let out = runtime(
        &user,
        &["exec", &id, "sh", "-c", "id -u; cat /proc/self/uid_map"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["0", "0", uid.as_str(), "1"]
    );
    let ps = runtime(&user, &["ps", "--format", "json", &id]);
    assert_eq!(
        serde_json::from_slice::<Vec<i64>>(&ps.stdout).unwrap(),
        [pid]
    );
    let out = runtime(&user, &["kill", &id, "KILL"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    berth_testutil::runtime::wait_until("the rootless container stops", || {
        !berth_testutil::runtime::alive(pid)
    });
    let out = runtime(&user, &["delete", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!state_dir.exists());
}

#[test]
fn several_mappings_go_through_newuidmap_and_newgidmap() {
    let user = TestUser::new(true);
    let (su, sg) = (user.subid_start(false), user.subid_start(true));
    let bundle = rootless_bundle(
        &user,
        &[
            "sh",
            "-c",
            "touch /tmp/f && chown 1000:1001 /tmp/f && stat -c '%u %g' /tmp/f && cat /proc/self/uid_map /proc/self/gid_map",
        ],
    );
    let mut spec = spec_of(&bundle);
    spec["root"]["readonly"] = false.into();
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push("CAP_CHOWN".into());
    }
    spec["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": su, "size": 65536}
    ]);
    spec["linux"]["gidMappings"] = json!([
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": sg, "size": 65536}
    ]);
    write_spec(&user, &bundle, &spec);
    let id = unique_id("rootless");
    let out = runtime(
        &user,
        &[
            "--rootless",
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "1000 1001".to_string(),
            format!("0 {} 1", user.uid),
            format!("1 {su} 65536"),
            format!("0 {} 1", user.gid),
            format!("1 {sg} 65536"),
        ]
    );
    // Outside, the file belongs to the mapped host ids.
    let meta = std::fs::metadata(bundle.rootfs().join("tmp/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (su + 999, sg + 1000));

    // Host ids beyond the user's range are refused before newuidmap runs.
    spec["linux"]["uidMappings"][1]["size"] = json!(65537);
    write_spec(&user, &bundle, &spec);
    let out = runtime(
        &user,
        &[
            "--rootless",
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let want = format!(
        "subuid mapping 1 {su} 65537: host ids {su}..{} are neither your own id {} nor in user {}'s ranges in /etc/subuid ({su}-{})",
        su + 65536,
        user.uid,
        user.name,
        su + 65535
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn without_a_subuid_range_several_mappings_are_a_clear_error() {
    let user = TestUser::new(false);
    let bundle = rootless_bundle(&user, &["true"]);
    let mut spec = spec_of(&bundle);
    spec["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": 100000, "size": 65536}
    ]);
    write_spec(&user, &bundle, &spec);
    let id = unique_id("rootless");
    let out = runtime(
        &user,
        &[
            "--rootless",
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "no subuid range for user {0} in /etc/subuid: add one with `usermod --add-subuids 100000-165535 {0}`",
            user.name
        )),
        "{err}"
    );
    assert!(!user.runtime_dir().join("berth").join(&id).exists());
}

#[test]
fn resource_limits_without_a_delegated_cgroup_are_refused() {
    let user = TestUser::new(false);
    let bundle = rootless_bundle(&user, &["true"]);
    let mut spec = spec_of(&bundle);
    spec["linux"]["resources"] = json!({"pids": {"limit": 20}});
    write_spec(&user, &bundle, &spec);
    let id = unique_id("rootless");
    let out = runtime(
        &user,
        &[
            "--rootless",
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "linux.resources: resource limits need a cgroup delegated to user {} (uid {})",
            user.name, user.uid
        )) && err.contains("/sys/fs/cgroup"),
        "{err}"
    );
    // Without limits the same container runs, without a cgroup, and says so
    // in the debug log.
    spec["linux"].as_object_mut().unwrap().remove("resources");
    write_spec(&user, &bundle, &spec);
    let out = runtime(
        &user,
        &[
            "--debug",
            "--rootless",
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("container {id} runs without a cgroup")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_xdg_runtime_dir_the_state_root_is_a_clear_error() {
    let user = TestUser::new(false);
    let out = user
        .command(&runtime_bin())
        .env_remove("XDG_RUNTIME_DIR")
        .args(["--rootless", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "XDG_RUNTIME_DIR is not set and /run/user/{} is not a directory of yours",
            user.uid
        )),
        "{err}"
    );
}

#[test]
fn rootless_podman_runs_its_containers_with_berth_runtime() {
    let podman = require_peer("podman");
    let user = TestUser::new(true);
    let dir = user.dir().join("image");
    std::fs::create_dir(&dir).unwrap();
    let layout = busybox_layout(&dir);
    let archive = user.dir().join("busybox.tar");
    run_ok(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    user.chown(&archive);
    let runtime = user.program(&runtime_bin());
    let podman_out = |args: &[&str]| -> String {
        let out = user
            .run_as(&podman)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&runtime)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman as the test user");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let pulled = podman_out(&["pull", "-q", &format!("oci-archive:{}", archive.display())]);
    let image = pulled
        .lines()
        .last()
        .expect("podman pull prints the image id");
    let out = podman_out(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    // podman's rootless pause process holds its user namespace: end it so
    // the user can be removed.
    let pause = user.runtime_dir().join("libpod/tmp/pause.pid");
    if let Some(pid) = std::fs::read_to_string(&pause)
        .ok()
        .and_then(|p| p.trim().parse::<i64>().ok())
    {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        berth_testutil::runtime::wait_until("podman's pause process exits", || {
            !berth_testutil::runtime::alive(pid)
        });
    }
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "0", "{out}");
    assert!(lines.contains(&format!("0 {} 1", user.uid)), "{out}");
}
