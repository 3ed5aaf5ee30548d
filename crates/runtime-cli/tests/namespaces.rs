//! Namespaces per the Runtime Spec: a type left out of linux.namespaces is
//! inherited from the runtime (no new namespace), the mount namespace
//! included: such a container is chroot'ed into its rootfs, and its mounts
//! are made under the rootfs in the runtime's namespace and removed at
//! delete.

use std::os::unix::fs::MetadataExt;

use berth_testutil::runtime::*;

/// `spec` with only a pid namespace and nothing that needs a mount.
fn pid_ns_only(mut spec: Value) -> Value {
    spec["linux"]["namespaces"] = json!([{"type": "pid"}]);
    for field in ["mounts", "hostname"] {
        spec.as_object_mut().unwrap().remove(field);
    }
    let linux = spec["linux"].as_object_mut().unwrap();
    for field in ["maskedPaths", "readonlyPaths", "devices"] {
        linux.remove(field);
    }
    spec["root"]["readonly"] = false.into();
    spec
}

/// The namespace `name` of process `pid`, as (device, inode).
fn ns_of(pid: &str, name: &str) -> (u64, u64) {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{name}")).unwrap();
    (m.dev(), m.ino())
}

#[test]
fn namespaces_left_out_are_the_runtimes_own_mount_included() {
    let rt = Rt::new();
    let bundle = berth_testutil::Bundle::new(&pid_ns_only(sleeper()));
    std::fs::write(bundle.rootfs().join("marker"), "inside the rootfs\n").unwrap();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let id = unique_id("inherit");
    rt.up(&bundle, &id, false);
    let pid = rt.state(&id)["pid"].to_string();
    for name in ["mnt", "net", "uts", "ipc", "cgroup"] {
        assert_eq!(
            ns_of(&pid, name),
            ns_of("self", name),
            "{name} namespace is not inherited"
        );
    }
    assert_ne!(
        ns_of(&pid, "pid"),
        ns_of("self", "pid"),
        "no new pid namespace"
    );
    // Its root is the rootfs, for the process and for exec.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        bundle.rootfs().canonicalize().unwrap()
    );
    rt.ok(&["start", &id]);
    assert_eq!(
        rt.ok(&["exec", &id, "cat", "/marker"]),
        "inside the rootfs\n"
    );
    rt.ok(&["delete", "--force", &id]);
    // No mount was made on the host for it.
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = bundle.path().to_str().unwrap();
    assert!(
        !mounts_after.contains(root),
        "mounts left under the bundle: {mounts_after}"
    );
    assert_eq!(
        mounts_before.lines().filter(|l| l.contains(root)).count(),
        0
    );
}

#[test]
fn without_a_mount_namespace_mounts_go_under_the_rootfs_and_leave_with_the_container() {
    let rt = Rt::new();
    let mut spec = pid_ns_only(sleeper());
    spec["mounts"] = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
    ]);
    spec["linux"]["maskedPaths"] = json!(["/proc/timer_list"]);
    let bundle = berth_testutil::Bundle::new(&spec);
    let id = unique_id("inherit");
    rt.up(&bundle, &id, false);
    let pid = rt.state(&id)["pid"].to_string();
    assert_eq!(
        ns_of(&pid, "mnt"),
        ns_of("self", "mnt"),
        "mount namespace not inherited"
    );
    rt.ok(&["start", &id]);
    // The container's proc (of its pid namespace), its tmpfs, the mask.
    assert_eq!(
        rt.ok(&[
            "exec",
            &id,
            "sh",
            "-c",
            "cat /proc/1/comm; stat -f -c %T /tmp; wc -c < /proc/timer_list"
        ]),
        "sleep\ntmpfs\n0\n"
    );
    let root = bundle.rootfs().canonicalize().unwrap();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(root.to_str().unwrap()))
            .count()
    };
    assert_eq!(mounted(), 3, "proc, tmpfs and the mask on the host");
    rt.ok(&["delete", "--force", &id]);
    assert_eq!(mounted(), 0, "mounts left under the rootfs after delete");

    // What would reach beyond the rootfs is still refused.
    spec["linux"]["devices"] =
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    let bundle = berth_testutil::Bundle::new(&spec);
    let err = rt.fails(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &unique_id("inherit"),
    ]);
    assert!(
        err.contains("field `linux.devices`: needs a mount namespace of the container's own"),
        "{err}"
    );
    assert!(rt.leftovers().is_empty());
}
