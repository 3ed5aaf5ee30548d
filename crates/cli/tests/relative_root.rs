//! A relative `--root` is taken from the working directory, for images and
//! for containers alike (a container's bundle names its rootfs by path).

use std::process::Command;

use berth_testutil::{busybox_layout, require_root, run_ok};

#[test]
fn a_relative_data_root_runs_containers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layout = busybox_layout(dir.path());
    let berth = |args: &[&str]| {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["--root", "data"])
                .args(args)
                // No bridge: the temporary data root goes without `network rm`.
                .env("BERTH_NETWORK", "none")
                .current_dir(dir.path()),
        )
    };
    berth(&["load", layout.to_str().unwrap(), "--name", "busybox"]);
    let out = berth(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(dir.path().join("data/snapshotter").is_dir());
}
