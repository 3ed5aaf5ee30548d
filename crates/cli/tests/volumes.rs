//! End-to-end tests of volumes with real containers: `berth volume
//! create/ls/inspect/rm/prune`, `-v NAME:/path`, `--mount`, `--tmpfs`, image
//! Volumes filled from the image, and which command removes which volume.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{tar_dir, Env};
use serde_json::Value;

/// Removes (killing) every container of the test's data root when the test
/// ends, passed or not, so no monitor or container outlives it.
struct Containers<'a>(&'a Env);

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for rec in self.0.container_records() {
            if let Some(id) = rec["id"].as_str() {
                let _ = self.0.berth(&["rm", "-f", id]);
            }
        }
    }
}

/// A data root with the busybox image `bb`.
fn setup() -> Env {
    let env = Env::new();
    env.import_busybox("bb", &[]);
    env
}

/// Imports image `vimg`: busybox with `VOLUME /data /empty` and, at /data,
/// a directory owned by 1234:5678 with mode 2750 holding `sub/file`
/// (owned by 42:43, mode 0640) and a symlink.
fn import_volume_image(env: &Env) {
    let rootfs = env.path("vimg-rootfs");
    berth_testutil::busybox_rootfs(&rootfs);
    let data = rootfs.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/file"), "from the image\n").unwrap();
    std::os::unix::fs::symlink("sub/file", data.join("link")).unwrap();
    std::os::unix::fs::chown(data.join("sub/file"), Some(42), Some(43)).unwrap();
    std::fs::set_permissions(data.join("sub/file"), PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&data, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o2750)).unwrap();
    let tar = env.path("vimg.tar");
    tar_dir(&rootfs, &tar);
    env.ok(&[
        "import",
        "--change",
        "VOLUME /data /empty",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "vimg",
    ]);
}

/// `berth volume ls -q`, one name per entry.
fn volume_names(env: &Env) -> Vec<String> {
    env.ok(&["volume", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect()
}

/// `berth volume inspect NAME` as JSON.
fn inspect_volume(env: &Env, name: &str) -> Value {
    let out = env.ok(&["volume", "inspect", name]);
    let list: Value = serde_json::from_str(&out).expect("volume inspect JSON");
    list[0].clone()
}

/// Runs `berth run --rm ARGS` and returns its stdout, asserting exit 0.
fn run_rm(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    env.ok(&all)
}

/// stderr of an output, as text.
fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_named_volume_is_shared_by_two_containers_and_survives_rm() {
    let env = setup();
    let _c = Containers(&env);
    assert_eq!(
        env.ok(&["volume", "create", "--label", "k=v", "shared"]),
        "shared\n"
    );
    let v = inspect_volume(&env, "shared");
    assert_eq!(v["Name"], "shared");
    assert_eq!(v["Labels"]["k"], "v");
    assert_eq!(v["Anonymous"], false);
    assert_eq!(
        env.ok(&["volume", "ls", "-q", "-f", "label=k=v"]),
        "shared\n"
    );
    assert_eq!(env.ok(&["volume", "ls", "-q", "-f", "label=k=w"]), "");
    let mountpoint = v["Mountpoint"].as_str().unwrap().to_string();
    assert!(
        mountpoint.starts_with(env.root().to_str().unwrap()),
        "{mountpoint}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(
        mode(&env.root().join("volumes")),
        0o700,
        "only root reaches volumes"
    );
    assert_eq!(mode(std::path::Path::new(&mountpoint)), 0o755);

    // One container writes and keeps running; a second one reads what it
    // wrote and answers through the same volume.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "shared:/data",
        "bb",
        "sh",
        "-c",
        "echo from-writer > /data/f; trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let out = run_rm(
        &env,
        &[
            "--mount", "type=volume,source=shared,target=/mnt/v", "bb", "sh", "-c",
            "i=0; while [ ! -s /mnt/v/f ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; cat /mnt/v/f; echo from-reader > /mnt/v/g",
        ],
    );
    assert_eq!(out, "from-writer\n");
    assert_eq!(
        env.ok(&["exec", "writer", "cat", "/data/g"]),
        "from-reader\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/f")).unwrap(),
        "from-writer\n"
    );

    let info: Value = serde_json::from_str(&env.ok(&["inspect", "writer"])).unwrap();
    let mount = info[0]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/data")
        .cloned()
        .expect("inspect shows the volume's mount");
    assert_eq!(
        (&mount["Type"], &mount["Name"]),
        (&"volume".into(), &"shared".into())
    );

    // rm, even with -v, leaves a named volume and its content.
    env.ok(&["rm", "-f", "-v", "writer"]);
    assert_eq!(volume_names(&env), ["shared"]);
    assert_eq!(
        run_rm(
            &env,
            &["-v", "shared:/data", "bb", "cat", "/data/f", "/data/g"]
        ),
        "from-writer\nfrom-reader\n"
    );
    // -v NAME makes a missing named volume.
    run_rm(&env, &["-v", "made-on-use:/x", "bb", "true"]);
    assert_eq!(volume_names(&env), ["made-on-use", "shared"]);
    let list: Value = serde_json::from_str(&env.ok(&["volume", "ls", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(env.ok(&["volume", "ls"]).starts_with("DRIVER"));
    env.assert_no_containers_left();
}

#[test]
fn read_only_mounts_refuse_writes() {
    let env = setup();
    env.ok(&["volume", "create", "ro"]);
    for args in [
        ["-v", "ro:/data:ro"],
        ["--mount", "type=volume,src=ro,dst=/data,readonly"],
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(&args);
        all.extend_from_slice(&["bb", "touch", "/data/x"]);
        let out = env.berth(&all);
        assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{}",
            env.describe(&out)
        );
    }
    // The same volume read-write.
    run_rm(&env, &["-v", "ro:/data:rw", "bb", "touch", "/data/x"]);
    assert!(env.root().join("volumes/ro/_data/x").exists());
    env.assert_no_containers_left();
}

#[test]
fn image_volumes_are_filled_from_the_image() {
    let env = Env::new();
    import_volume_image(&env);
    let stat = "stat -c '%n %u:%g %a' /data /data/sub/file; readlink /data/link; cat /data/link; ls -A /empty";
    let out = env.ok(&["run", "--name", "a", "vimg", "sh", "-c", stat]);
    assert_eq!(
        out, "/data 1234:5678 2750\n/data/sub/file 42:43 640\nsub/file\nfrom the image\n",
        "the anonymous volume holds the image's /data, owners and modes kept"
    );
    let names = volume_names(&env);
    assert_eq!(
        names.len(),
        2,
        "one anonymous volume per image Volume: {names:?}"
    );
    for name in &names {
        assert_eq!(name.len(), 64);
        assert_eq!(inspect_volume(&env, name)["Anonymous"], true);
    }
    let data = names
        .iter()
        .map(|n| env.root().join("volumes").join(n).join("_data"))
        .find(|d| d.join("sub/file").exists())
        .expect("a volume holds the image's /data");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o2750)
    );

    // An empty named volume is filled too (podman); one with content is
    // left alone; nocopy leaves it empty.
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-v",
            "named:/data",
            "vimg",
            "cat",
            "/data/sub/file"
        ]),
        "from the image\n"
    );
    env.ok(&[
        "run",
        "--rm",
        "-v",
        "named:/data",
        "vimg",
        "sh",
        "-c",
        "rm -r /data/*; echo mine > /data/own",
    ]);
    assert_eq!(
        env.ok(&["run", "--rm", "-v", "named:/data", "vimg", "ls", "/data"]),
        "own\n"
    );
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-v",
            "other:/data:nocopy",
            "vimg",
            "ls",
            "-A",
            "/data"
        ]),
        ""
    );
    // A bind or tmpfs at an image Volume's path replaces its volume.
    let host = env.path("host");
    std::fs::create_dir_all(&host).unwrap();
    let bind = format!("type=bind,source={},target=/data", host.display());
    let before = volume_names(&env);
    env.ok(&[
        "run",
        "--rm",
        "--mount",
        &bind,
        "--tmpfs",
        "/empty",
        "vimg",
        "sh",
        "-c",
        "echo via-bind > /data/b",
    ]);
    let entries: Vec<_> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["b"], "binds are never filled");
    assert_eq!(volume_names(&env), before, "no anonymous volume was made");
    env.ok(&["rm", "a"]);
}

#[test]
fn rm_v_removes_anonymous_volumes_and_plain_rm_keeps_them() {
    let env = Env::new();
    import_volume_image(&env);
    env.ok(&["volume", "create", "named"]);
    env.ok(&["run", "--name", "keep", "-v", "named:/n", "vimg", "true"]);
    let kept = volume_names(&env);
    assert_eq!(kept.len(), 3, "{kept:?}");
    env.ok(&["rm", "keep"]);
    assert_eq!(volume_names(&env), kept, "plain rm keeps every volume");

    env.ok(&[
        "run", "--name", "gone", "-v", "named:/n", "-v", "/anon", "vimg", "true",
    ]);
    assert_eq!(volume_names(&env).len(), 6);
    env.ok(&["rm", "-v", "gone"]);
    assert_eq!(
        volume_names(&env),
        kept,
        "rm -v removes only its anonymous volumes"
    );

    // --rm takes its anonymous volumes along, as docker and podman do.
    env.ok(&["run", "--rm", "vimg", "true"]);
    assert_eq!(volume_names(&env), kept);
    // container prune too.
    env.ok(&["run", "--name", "pruned", "vimg", "true"]);
    assert_eq!(volume_names(&env).len(), 5);
    env.ok(&["container", "prune"]);
    assert_eq!(volume_names(&env), kept);

    // gc removes the anonymous volumes no container uses any more; named
    // ones stay until volume rm or prune.
    let out = env.ok(&["gc"]);
    assert!(out.contains("deleted anonymous volume"), "{out}");
    assert_eq!(volume_names(&env), ["named"]);
    assert_eq!(env.ok(&["volume", "prune"]), "named\n");
    assert!(volume_names(&env).is_empty());
    env.assert_no_containers_left();
}

#[test]
fn a_volume_in_use_is_not_removed() {
    let env = setup();
    env.ok(&["volume", "create", "busy"]);
    env.ok(&["volume", "create", "idle"]);
    env.ok(&["run", "--name", "user", "-v", "busy:/b", "bb", "true"]);
    let out = env.berth(&["volume", "rm", "busy"]);
    assert_eq!(out.status.code(), Some(2), "{}", env.describe(&out));
    assert!(
        stderr(&out).contains("\"busy\" is being used by container(s) user"),
        "{}",
        env.describe(&out)
    );
    let ls = |filter: &str| env.ok(&["volume", "ls", "-q", "--filter", filter]);
    assert_eq!(ls("dangling=true"), "idle\n");
    assert_eq!(ls("dangling=false"), "busy\n");
    assert_eq!(ls("name=dl"), "idle\n");
    assert_eq!(ls("label=none"), "");
    assert_eq!(
        env.ok(&["volume", "prune"]),
        "idle\n",
        "prune keeps used volumes"
    );
    assert_eq!(volume_names(&env), ["busy"]);
    let out = env.berth(&["volume", "rm", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.describe(&out));
    assert!(stderr(&out).contains("no volume with name \"nosuch\""));

    // -f removes the containers using it, as podman's.
    assert_eq!(env.ok(&["volume", "rm", "-f", "busy"]), "busy\n");
    assert!(volume_names(&env).is_empty());
    env.assert_no_containers_left();
}

#[test]
fn tmpfs_mounts_have_their_size_and_options() {
    let env = setup();
    let mounts = run_rm(
        &env,
        &[
            "--tmpfs",
            "/scratch:size=1m,mode=700",
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=64k",
            "bb",
            "grep",
            "-E",
            " /(scratch|t) ",
            "/proc/mounts",
        ],
    );
    assert_eq!(mounts.lines().count(), 2, "{mounts}");
    let line = |target: &str| {
        mounts
            .lines()
            .find(|l| l.starts_with(&format!("tmpfs {target} tmpfs ")))
            .unwrap_or_else(|| panic!("no tmpfs at {target}: {mounts}"))
    };
    let scratch = line("/scratch");
    assert!(
        scratch.contains(" rw,nosuid,nodev,noexec,"),
        "podman's defaults: {scratch}"
    );
    assert!(
        scratch.contains("size=1024k") && scratch.contains("mode=700"),
        "{scratch}"
    );
    assert!(line("/t").contains("size=64k"), "{mounts}");
    // A tmpfs at a default mount's place replaces it.
    let run = run_rm(
        &env,
        &[
            "--tmpfs",
            "/run:size=2m",
            "bb",
            "grep",
            " /run ",
            "/proc/mounts",
        ],
    );
    assert_eq!(run.lines().count(), 1, "{run}");
    assert!(run.contains("size=2048k"), "{run}");
    env.assert_no_containers_left();
}

#[test]
fn bad_names_targets_and_options_are_clear_errors() {
    let env = setup();
    for (args, says) in [
        (
            vec!["volume", "create", "bad/name"],
            "volume name \"bad/name\"",
        ),
        (
            vec!["volume", "create", ".hidden"],
            "starting with a letter or digit",
        ),
        (
            vec!["volume", "inspect", "../../etc"],
            "volume name \"../../etc\"",
        ),
        (
            vec!["run", "--rm", "-v", "v:/x/../etc", "bb", "true"],
            "must not contain `..`",
        ),
        (
            vec!["run", "--rm", "-v", "v:/", "bb", "true"],
            "cannot mount over the container's root",
        ),
        (
            vec!["run", "--rm", "-v", "v:rel", "bb", "true"],
            "must be an absolute path",
        ),
        (
            vec!["run", "--rm", "-v", "./rel:/x", "bb", "true"],
            "a host path must start with /",
        ),
        (
            vec!["run", "--rm", "-v", "v:/x:bogus", "bb", "true"],
            "unknown option \"bogus\"",
        ),
        (
            vec!["run", "--rm", "--mount", "type=nfs,target=/x", "bb", "true"],
            "use volume, bind or tmpfs",
        ),
        (
            vec![
                "run",
                "--rm",
                "--mount",
                "type=bind,target=/x",
                "bb",
                "true",
            ],
            "needs source=/host/path",
        ),
        (
            vec!["run", "--rm", "--tmpfs", "/t:size=huge", "bb", "true"],
            "expected a size",
        ),
        (
            vec!["run", "--rm", "-v", "a:/x", "--tmpfs", "/x", "bb", "true"],
            "is given more than once",
        ),
    ] {
        let out = env.berth(&args);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            env.describe(&out)
        );
        assert!(
            stderr(&out).contains(says),
            "{args:?}: {}",
            env.describe(&out)
        );
    }
    env.ok(&["volume", "create", "taken"]);
    let out = env.berth(&["volume", "create", "taken"]);
    assert!(
        stderr(&out).contains("already exists"),
        "{}",
        env.describe(&out)
    );
    assert_eq!(
        env.ok(&["volume", "create", "--ignore", "taken"]),
        "taken\n"
    );
    let out = env.berth(&["volume", "create", "--driver", "nfs", "x"]);
    assert!(
        stderr(&out).contains("only the local driver"),
        "{}",
        env.describe(&out)
    );
    assert_eq!(
        env.berth(&["volume", "exists", "taken"]).status.code(),
        Some(0)
    );
    assert_eq!(env.berth(&["volume", "exists", "x"]).status.code(), Some(1));
    assert_eq!(
        volume_names(&env),
        ["taken"],
        "nothing made by a refused command"
    );
    env.assert_no_containers_left();
}

#[test]
fn concurrent_creates_of_one_volume_do_not_race() {
    let env = setup();
    let creates: Vec<_> = (0..8)
        .map(|_| {
            env.command(&["volume", "create", "one"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = creates
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(
        outs.iter().filter(|o| o.status.success()).count(),
        1,
        "exactly one create wins"
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("already exists"), "{}", env.describe(o));
    }
    // Containers that make the same missing volume on first use all get it,
    // filled once.
    let runs: Vec<_> = (0..4)
        .map(|i| {
            env.command(&[
                "run",
                "--rm",
                "-v",
                "lazy:/d",
                "bb",
                "sh",
                "-c",
                &format!("echo {i} > /d/$HOSTNAME"),
            ])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", env.describe(&out));
    }
    assert_eq!(volume_names(&env), ["lazy", "one"]);
    let files = std::fs::read_dir(env.root().join("volumes/lazy/_data"))
        .unwrap()
        .count();
    assert_eq!(files, 4);
    env.assert_no_containers_left();
}

/// A SIGKILLed `berth run --rm` leaves its container to be reaped by the
/// next command; reaping removes its anonymous volumes as `--rm` would
/// have, and keeps those of a kept container.
#[test]
fn reaping_a_killed_run_rm_removes_its_anonymous_volumes() {
    let env = Env::new();
    import_volume_image(&env);
    let script = "echo ready; exec sleep 60";
    let mut kept = env.spawn_until_ready(&["run", "--name", "kept", "vimg", "sh", "-c", script]);
    kept.kill().expect("SIGKILL berth");
    kept.wait().expect("wait berth");
    env.ok(&["ps", "-a"]);
    let names = volume_names(&env);
    assert_eq!(
        names.len(),
        2,
        "a kept container keeps its volumes: {names:?}"
    );

    let mut gone = env.spawn_until_ready(&["run", "--rm", "vimg", "sh", "-c", script]);
    assert_eq!(volume_names(&env).len(), 4);
    gone.kill().expect("SIGKILL berth");
    gone.wait().expect("wait berth");
    env.ok(&["ps", "-a"]);
    assert_eq!(
        volume_names(&env),
        names,
        "the --rm container's volumes went with it"
    );
    env.ok(&["rm", "-v", "kept"]);
    assert!(volume_names(&env).is_empty());
    env.assert_no_containers_left();
}
