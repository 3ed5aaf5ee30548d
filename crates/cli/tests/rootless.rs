//! `berth` as an unprivileged user (made with useradd, run through
//! setpriv): berth runs itself again as root of a user namespace mapping
//! the user's uid to root and its /etc/subuid range to ids 1.., loads an
//! image, unpacks its layers with their owners (stored as the mapped host
//! ids), mounts the overlay and runs the container under the user's ids;
//! resource limits without delegated cgroups and a missing subuid range
//! are clear errors.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_testutil::user::TestUser;
use berth_testutil::{busybox_layout, run_ok};

/// `berth --root DIR/data ARGS` as `user`, not yet run.
fn command(user: &TestUser, args: &[&str]) -> Command {
    let root = user.dir().join("data");
    // `run -d` starts the monitor found beside berth.
    user.program(Path::new(env!("CARGO_BIN_EXE_berth-monitor")));
    let mut cmd = user.command(Path::new(env!("CARGO_BIN_EXE_berth")));
    cmd.arg("--root").arg(&root).args(args).stdin(Stdio::null());
    cmd
}

fn berth(user: &TestUser, args: &[&str]) -> Output {
    command(user, args)
        .output()
        .expect("run berth as the test user")
}

fn ok(user: &TestUser, args: &[&str]) -> String {
    let out = berth(user, args);
    assert!(
        out.status.success(),
        "berth {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// busybox (one layer) plus a layer holding /home/u owned by 1000:1001,
/// in an OCI layout the user can read.
fn image(user: &TestUser) -> std::path::PathBuf {
    let dir = user.dir().join("image");
    std::fs::create_dir(&dir).unwrap();
    let layout = busybox_layout(&dir);
    let home = dir.join("u");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1000), Some(1001)).unwrap();
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&home)
            .arg("/home/u"),
    );
    user.chown(&layout);
    layout
}

#[test]
fn an_unprivileged_user_runs_a_loaded_image_in_a_user_namespace() {
    let user = TestUser::new(true);
    let (su, sg) = (user.subid_start(false), user.subid_start(true));
    let layout = image(&user);
    ok(
        &user,
        &["load", layout.to_str().unwrap(), "--name", "busybox"],
    );
    let out = ok(
        &user,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "id -u; stat -c '%u %g' /home/u; cat /proc/self/uid_map /proc/self/gid_map",
        ],
    );
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0".to_string(),
            "1000 1001".into(),
            format!("0 {} 1", user.uid),
            format!("1 {su} 65536"),
            format!("0 {} 1", user.gid),
            format!("1 {sg} 65536"),
        ]
    );
    // On the host the layer's files belong to the user's ids: root's to
    // the user, 1000:1001 to the mapped subordinate ids; and the
    // snapshotter runs overlay in the user namespace (Linux ≥ 5.11).
    let snapshots = user.dir().join("data/snapshotter");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshots.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["driver"], "Overlay");
    let found = run_ok(Command::new("find").arg(snapshots.join("snapshots")).args([
        "-path",
        "*/fs/home/u",
        "-printf",
        "%U %G\\n",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        format!("{} {}", su + 999, sg + 1000)
    );
    let found = run_ok(Command::new("find").arg(snapshots.join("snapshots")).args([
        "-path",
        "*/fs/bin/busybox",
        "-printf",
        "%U %G\\n",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        format!("{} {}", user.uid, user.gid)
    );
    // Without delegated cgroups, a limit is refused with what is missing.
    let out = berth(
        &user,
        &["run", "--rm", "--memory", "64m", "busybox", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "resource limits need a cgroup delegated to user {} (uid {})",
            user.name, user.uid
        )),
        "{err}"
    );
    // The image and the layers owned by subordinate ids go away too.
    ok(&user, &["rmi", "busybox"]);
    ok(&user, &["gc"]);
    let left = std::fs::read_dir(snapshots.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "snapshots left after rmi and gc");
}

#[test]
fn without_a_subuid_range_berth_says_what_to_add() {
    let user = TestUser::new(false);
    // Commands that touch no layer or container need no user namespace.
    ok(&user, &["images"]);
    let out = berth(&user, &["run", "--rm", "busybox", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "berth: no subuid range for user {0} in /etc/subuid: add one with `usermod --add-subuids 100000-165535 {0}` (as root)",
            user.name
        )),
        "{err}"
    );
}

#[test]
fn a_detached_rootless_container_is_listed_execed_into_stopped_and_removed() {
    let user = TestUser::new(true);
    let layout = image(&user);
    ok(
        &user,
        &["load", layout.to_str().unwrap(), "--name", "busybox"],
    );
    let id = ok(
        &user,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo up; while true; do sleep 1; done",
        ],
    );
    let id = id.trim();
    assert!(ok(&user, &["ps", "-q"]).contains(&id[..12]));
    // exec joins the container's user namespace from the host side.
    assert_eq!(ok(&user, &["exec", "web", "id", "-u"]).trim(), "0");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&user, &["inspect", "web"])).unwrap();
    let pid = inspect[0]["State"]["Pid"].as_i64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(user.uid.to_string().as_str())
    );
    assert_eq!(ok(&user, &["logs", "web"]).trim(), "up");
    ok(&user, &["stop", "web"]);
    ok(&user, &["rm", "web"]);
    assert!(ok(&user, &["ps", "-a", "-q"]).trim().is_empty());
}

#[test]
fn a_store_made_with_the_copy_driver_works_rootless_too() {
    // Where overlay cannot be mounted in a user namespace (Linux < 5.11),
    // the store's trial mount picks the copy driver; made so here.
    let user = TestUser::new(true);
    let su = user.subid_start(false);
    let layout = image(&user);
    let snapshots = berth_engine::Layout::new(user.dir().join("data")).snapshotter();
    berth_snapshot::Snapshotter::open(&snapshots, Some(berth_snapshot::Driver::Copy))
        .expect("make a copy-driver store");
    user.chown(&user.dir().join("data"));
    ok(
        &user,
        &["load", layout.to_str().unwrap(), "--name", "busybox"],
    );
    let out = ok(
        &user,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "stat -c '%u %g' /home/u && touch /new && stat -c %u /new",
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1001", "0"]
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshots.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["driver"], "Copy");
    let found = run_ok(Command::new("find").arg(snapshots.join("snapshots")).args([
        "-path",
        "*/fs/home/u",
        "-printf",
        "%U\\n",
    ]));
    let owners = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        !owners.is_empty() && owners.lines().all(|o| o == (su + 999).to_string()),
        "{owners}"
    );
}

#[test]
fn a_signal_sent_to_a_rootless_berth_reaches_the_container() {
    use std::io::BufRead;
    let user = TestUser::new(true);
    let layout = image(&user);
    ok(
        &user,
        &["load", layout.to_str().unwrap(), "--name", "busybox"],
    );
    // setpriv execs berth: this pid is the user's berth, the parent of the
    // one in the user namespace.
    let mut child = command(
        &user,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 3' TERM; echo up; while true; do sleep 1; done",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("start berth as the test user");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n");
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn a_data_root_refuses_changed_subordinate_ranges() {
    let user = TestUser::new(true);
    let su = user.subid_start(false);
    ok(&user, &["ps"]);
    let recorded = std::fs::read_to_string(user.dir().join("data/userns-maps")).unwrap();
    assert!(
        recorded.contains(&format!("uid_map 1 {su} 65536")),
        "{recorded}"
    );
    // The administrator moves the user's uid range elsewhere.
    let new = su + 3_000_000;
    run_ok(
        Command::new("usermod")
            .arg("--del-subuids")
            .arg(format!("{su}-{}", su + 65535))
            .arg("--add-subuids")
            .arg(format!("{new}-{}", new + 65535))
            .arg(&user.name),
    );
    let out = berth(&user, &["ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("uid_map 1 {su} 65536"))
            && err.contains(&format!("uid_map 1 {new} 65536"))
            && err.contains("the user's ranges in /etc/subuid or /etc/subgid changed"),
        "{err}"
    );
}
