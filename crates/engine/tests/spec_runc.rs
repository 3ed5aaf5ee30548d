//! The runtime spec built from an image config runs under a real runtime
//! (runc): containerd's defaults plus the image's User, Env, WorkingDir and
//! Cmd produce the process the image describes.

use std::process::Command;

use berth_engine::{spec_from_config, Overrides};
use berth_testutil::{busybox_rootfs, require_peer, require_root, unique_id};

/// Builds the spec for `config` (the image's `config` object) on a busybox
/// rootfs, runs it with runc and returns stdout.
fn run_image_config(config: serde_json::Value, overrides: &Overrides) -> String {
    require_root();
    let runc = require_peer("runc");
    let bundle = tempfile::Builder::new()
        .prefix("berth-spec-")
        .tempdir()
        .unwrap();
    let rootfs = bundle.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let config: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": config
    }))
    .unwrap();
    let spec = spec_from_config(&config, overrides, &rootfs).unwrap();
    spec.save(bundle.path().join("config.json")).unwrap();
    let id = unique_id("berth-spec");
    let out = Command::new(&runc)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .output()
        .expect("run runc");
    let _ = Command::new(&runc)
        .args(["delete", "--force", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "runc failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn image_user_env_workdir_and_cmd_reach_the_process() {
    let overrides = Overrides {
        env: vec!["EXTRA=from-override".into()],
        ..Default::default()
    };
    let stdout = run_image_config(
        serde_json::json!({
            "User": "daemon",
            "Env": ["GREETING=from-image"],
            "WorkingDir": "/tmp",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $(id -u):$(id -g) $(pwd) $GREETING $EXTRA; grep CapEff /proc/self/status"]
        }),
        &overrides,
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("1:1 /tmp from-image from-override"),
        "{stdout}"
    );
    // A non-root user keeps no effective capabilities.
    assert!(
        lines.next().unwrap_or("").ends_with("0000000000000000"),
        "{stdout}"
    );
}

#[test]
fn root_gets_containerds_default_capabilities_and_masked_paths() {
    let overrides = Overrides {
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "grep CapEff /proc/self/status; stat -c %t:%T /proc/keys; hostname".into(),
        ]),
        hostname: Some("spec-test".into()),
        ..Default::default()
    };
    let stdout = run_image_config(serde_json::json!({"Cmd": ["/bin/false"]}), &overrides);
    let lines: Vec<&str> = stdout.lines().collect();
    // The 14 default capabilities, as docker and containerd grant them.
    assert!(lines[0].ends_with("00000000a80425fb"), "{stdout}");
    assert_eq!(
        lines[1], "1:3",
        "/proc/keys is masked by /dev/null: {stdout}"
    );
    assert_eq!(lines[2], "spec-test");
}
