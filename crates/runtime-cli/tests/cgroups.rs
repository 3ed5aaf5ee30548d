//! The runtime's use of cgroups as the peer tests (containerd, podman)
//! exercise it: when the limits are written relative to the container's
//! setup, which cgroup later commands act on, what `update` records and how
//! cgroup errors are reported.

mod common_rt;
use common_rt::*;

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
