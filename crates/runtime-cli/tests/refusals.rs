//! What the runtime refuses because it would reach the host: sysctls outside
//! the namespaces the container owns, user or group ids the kernel would
//! read as "unchanged" (so the process would stay root), and device numbers
//! that would wrap to another device. Each test shows the
//! refusal names the field and that nothing changed on the host.
//!
//! History: before these checks a spec's `kernel.printk_ratelimit_burst`
//! changed the host's value, a `net.*` sysctl without a network namespace
//! changed the host's network stack, and a uid or gid of 4294967295
//! (`(uid_t)-1`) ran the process as uid 0 with the spec's capabilities, in
//! `process.user` and through `exec -u`.

use berth_testutil::runtime::*;

fn host_sysctl(key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .to_string()
}

/// Runs `spec` (a shell that would print "ran"), asserts it is refused
/// before anything runs, and returns the runtime's stderr.
fn refused(rt: &Rt, spec: Value) -> String {
    let mut spec = spec;
    spec["process"]["args"] = json!(["sh", "-c", "echo ran"]);
    let bundle = Bundle::new(&spec);
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_ne!(
        code, 0,
        "the spec should be refused; stdout {out} stderr {err}"
    );
    assert!(!out.contains("ran"), "the process ran: {out}");
    assert!(
        rt.leftovers().is_empty(),
        "a refused container left state: {:?}",
        rt.leftovers()
    );
    err
}

fn without_namespace(mut spec: Value, typ: &str) -> Value {
    if typ == "uts" {
        // A hostname needs a UTS namespace of its own.
        spec.as_object_mut().expect("spec").remove("hostname");
    }
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != typ);
    spec
}

#[test]
fn a_sysctl_the_kernel_does_not_namespace_is_refused_and_the_host_keeps_its_value() {
    let rt = Rt::new();
    let key = "kernel.printk_ratelimit_burst";
    let before = host_sysctl(key);
    let other = (before.parse::<u64>().expect("numeric sysctl") + 1).to_string();
    for form in [key.to_string(), key.replace('.', "/")] {
        let mut spec = default_spec(&[]);
        spec["linux"]["sysctl"] = json!({ form.clone(): other.clone() });
        let err = refused(&rt, spec);
        assert!(
            err.contains(&form) && err.contains("not in a separate kernel namespace"),
            "the error should name {form:?}: {err}"
        );
        assert_eq!(host_sysctl(key), before, "the host's {key} changed");
    }
}

#[test]
fn namespaced_sysctls_need_the_containers_own_namespace() {
    let rt = Rt::new();
    let net = "net.ipv4.ip_default_ttl";
    let before = host_sysctl(net);
    let other = if before == "77" { "78" } else { "77" };
    let cases = [
        // The network namespace left out: the container shares the host's.
        (without_namespace(default_spec(&[]), "network"), net, other),
        (
            without_namespace(default_spec(&[]), "ipc"),
            "kernel.shmmni",
            "1234",
        ),
        (
            without_namespace(default_spec(&[]), "ipc"),
            "fs.mqueue.msg_max",
            "11",
        ),
        (
            without_namespace(default_spec(&[]), "uts"),
            "kernel.domainname",
            "x",
        ),
    ];
    for (mut spec, key, value) in cases {
        spec["linux"]["sysctl"] = json!({ key: value });
        let err = refused(&rt, spec);
        assert!(
            err.contains(key) && err.contains("shares with the host"),
            "the error should name {key}: {err}"
        );
    }
    // Joining the host's own network namespace (this test's) by path is
    // sharing it too.
    let mut spec = without_namespace(default_spec(&[]), "network");
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": format!("/proc/{}/ns/net", std::process::id())}));
    spec["linux"]["sysctl"] = json!({ net: other });
    let err = refused(&rt, spec);
    assert!(err.contains(net) && err.contains("is the host's"), "{err}");
    assert_eq!(host_sysctl(net), before, "the host's {net} changed");

    // With its own namespaces the container sets them, the host keeps its own.
    let mut spec = default_spec(&[]);
    spec["linux"]["sysctl"] = json!({ net: other, "kernel.shmmni": "1234" });
    let out = rt.sh(
        spec,
        "cat /proc/sys/net/ipv4/ip_default_ttl /proc/sys/kernel/shmmni",
    );
    assert_eq!(out, format!("{other}\n1234\n"));
    assert_eq!(host_sysctl(net), before);
}

#[test]
fn ids_the_kernel_reads_as_unchanged_are_refused_in_the_spec() {
    let rt = Rt::new();
    let users = [
        (json!({"uid": 4294967295u32, "gid": 0}), "process.user.uid"),
        (json!({"uid": 0, "gid": 4294967295u32}), "process.user.gid"),
        (json!({"uid": 2147483648u32, "gid": 0}), "process.user.uid"),
        (
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 4294967295u32]}),
            "process.user.additionalGids[1]",
        ),
    ];
    for (user, field) in users {
        let mut spec = default_spec(&[]);
        spec["process"]["user"] = user.clone();
        let err = refused(&rt, spec);
        assert!(
            err.contains(field) && err.contains("out of range"),
            "{user}: the error should name {field}: {err}"
        );
    }
    // The top of the range still works.
    let mut spec = default_spec(&[]);
    spec["process"]["user"] = json!({"uid": 2147483647u32, "gid": 2147483647u32});
    assert_eq!(rt.sh(spec, "id -u; id -g"), "2147483647\n2147483647\n");
}

#[test]
fn device_numbers_beyond_the_kernels_range_are_refused() {
    let rt = Rt::new();
    // 4294967297:1 would wrap to 1:1, /dev/mem, in mknod's 32-bit number.
    let devices = [
        (
            json!({"major": 4294967297u64, "minor": 1}),
            "linux.devices[0].major",
        ),
        (json!({"major": 4096, "minor": 0}), "linux.devices[0].major"),
        (json!({"major": -1, "minor": 3}), "linux.devices[0].major"),
        (
            json!({"major": 1, "minor": 1048576}),
            "linux.devices[0].minor",
        ),
    ];
    for (numbers, field) in devices {
        let mut spec = default_spec(&[]);
        let mut device = json!({"path": "/dev/x", "type": "c"});
        device["major"] = numbers["major"].clone();
        device["minor"] = numbers["minor"].clone();
        spec["linux"]["devices"] = json!([device]);
        let err = refused(&rt, spec);
        assert!(
            err.contains(field) && err.contains("out of range"),
            "{numbers}: the error should name {field}: {err}"
        );
    }
    // The top of the range is made as given.
    let mut spec = default_spec(&[]);
    spec["linux"]["devices"] =
        json!([{"path": "/dev/x", "type": "c", "major": 4095, "minor": 1048575}]);
    let out = rt.sh(spec, "stat -c '%t %T' /dev/x");
    assert_eq!(out, "fff fffff\n");
}

#[test]
fn exec_refuses_ids_the_kernel_reads_as_unchanged() {
    let rt = Rt::new();
    let bundle = Bundle::new(&sleeper());
    let id = unique_id("ids");
    rt.up(&bundle, &id, true);
    for args in [
        vec!["-u", "4294967295:4294967295"],
        vec!["-u", "4294967295"],
        vec!["-u", "1000:4294967295"],
        vec!["-g", "4294967295"],
    ] {
        let mut all = vec!["exec"];
        all.extend(&args);
        all.extend([id.as_str(), "id", "-u"]);
        let out = rt.output(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran: {stdout}");
        assert!(!stdout.contains('0'), "{args:?} printed a uid: {stdout}");
        assert!(
            stderr.contains("4294967295"),
            "{args:?}: the error should name the id: {stderr}"
        );
    }
    assert_eq!(
        rt.ok(&["exec", "-u", "1000:1000", &id, "id", "-u"]),
        "1000\n"
    );
    rt.ok(&["delete", "--force", &id]);
}

/// An environment too large for execve is named as such (E2BIG), not
/// blamed on seccomp or the exec trampoline as it once was.
#[test]
fn a_too_large_environment_says_so() {
    let rt = Rt::new();
    let mut spec = default_spec(&["true"]);
    spec["process"]["env"] = json!(["PATH=/bin", format!("BIG={}", "x".repeat(200 << 10))]);
    let bundle = Bundle::new(&spec);
    let (code, _, err) = rt.run_bundle(&bundle);
    assert_ne!(code, 0);
    assert!(
        err.contains("E2BIG") && err.contains("process.env") && !err.contains("seccomp"),
        "{err}"
    );
}
