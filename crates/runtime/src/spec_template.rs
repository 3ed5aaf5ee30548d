//! The runtime spec `berth-runtime spec` writes: the same template as
//! `runc spec` (and `runc spec --rootless`), field for field.
//!
//! Documented differences from runc 1.1.5's output (the test
//! `matches_runc_spec` checks that these are the only ones):
//! - `hostname` is `"berth"` instead of `"runc"`;
//! - `ociVersion` is [`OCI_VERSION`] (`"1.0.2"`, the runtime-spec release
//!   berth implements) instead of runc 1.1.5's `"1.0.2-dev"`.
//!
//! The rootless variant applies runc's `specconv.ToRootless`: no network
//! namespace, a user namespace mapping container root to the caller's
//! effective uid/gid, `/sys` bind-mounted from the host instead of a new
//! sysfs, no `gid=5` on devpts, and no `linux.resources`.
//!
//! oci-spec keeps capability sets in hash sets, so a [`Spec`] serializes its
//! capabilities in arbitrary order. `berth-runtime spec` should write
//! [`default_spec_json`], which keeps runc's order, byte-stable output.

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

/// The runtime-spec version berth writes into new specs.
pub const OCI_VERSION: &str = "1.0.2";

/// The `config.json` template, as `runc spec` (or `runc spec --rootless`
/// when `rootless`) writes it; see the module docs for the differences.
pub fn default_spec(rootless: bool) -> Spec {
    let value = default_spec_json(rootless);
    // The template is a constant shape checked by the unit tests below, so a
    // failure here is a bug in this file, not bad input.
    serde_json::from_value(value)
        .expect("spec_template: the built-in template is a valid runtime spec")
}

/// The same template as JSON, in runc's field and list order (what
/// `berth-runtime spec` writes to config.json).
pub fn default_spec_json(rootless: bool) -> Value {
    template_json(
        rootless,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// The template as JSON; `uid`/`gid` are the host ids container root maps to
/// in the rootless variant.
fn template_json(rootless: bool, uid: u32, gid: u32) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut devpts_options = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !rootless {
        devpts_options.push("gid=5");
    }
    let sys_mount = if rootless {
        json!({"destination": "/sys", "type": "none", "source": "/sys",
               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    let mut namespaces = vec![json!({"type": "pid"})];
    if !rootless {
        namespaces.push(json!({"type": "network"}));
    }
    namespaces.extend([
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ]);
    if rootless {
        namespaces.push(json!({"type": "user"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi"
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
        ]
    });
    if rootless {
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    } else {
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    }
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": devpts_options},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            sys_mount,
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": linux
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `runc spec [--rootless]` in a fresh directory and returns the JSON.
    fn runc_spec(rootless: bool) -> Value {
        let runc = berth_testutil::require_peer("runc");
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(runc);
        cmd.arg("spec").current_dir(dir.path());
        if rootless {
            cmd.arg("--rootless");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "runc spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap()
    }

    /// Sorts the capability lists (oci-spec stores them as sets).
    fn sort_caps(v: &mut Value) {
        if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
            for list in caps.values_mut() {
                if let Some(a) = list.as_array_mut() {
                    a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
                }
            }
        }
    }

    fn check(rootless: bool) {
        let theirs = runc_spec(rootless);
        // What `spec` writes: identical JSON, same order.
        compare(theirs.clone(), default_spec_json(rootless));
        // The typed Spec: identical up to capability order.
        let mut typed = serde_json::to_value(default_spec(rootless)).unwrap();
        let mut theirs_sorted = theirs;
        sort_caps(&mut typed);
        sort_caps(&mut theirs_sorted);
        compare(theirs_sorted, typed);
    }

    fn compare(mut theirs: Value, mut mine: Value) {
        // The documented differences, and only those.
        assert_eq!(mine["hostname"], "berth");
        assert_eq!(mine["ociVersion"], OCI_VERSION);
        assert!(theirs["ociVersion"].as_str().unwrap().starts_with("1.0.2"));
        for v in [&mut theirs, &mut mine] {
            v.as_object_mut().unwrap().remove("hostname");
            v.as_object_mut().unwrap().remove("ociVersion");
        }
        assert_eq!(
            mine,
            theirs,
            "berth's template differs from runc's:\nberth: {}\nrunc: {}",
            serde_json::to_string_pretty(&mine).unwrap(),
            serde_json::to_string_pretty(&theirs).unwrap()
        );
    }

    #[test]
    fn matches_runc_spec() {
        check(false);
    }

    #[test]
    fn matches_runc_spec_rootless() {
        check(true);
    }

    #[test]
    fn rootless_maps_root_to_the_given_ids() {
        let v = template_json(true, 1000, 1001);
        assert_eq!(v["linux"]["uidMappings"][0]["hostID"], 1000);
        assert_eq!(v["linux"]["gidMappings"][0]["hostID"], 1001);
        let spec: Spec = serde_json::from_value(v).unwrap();
        assert!(spec.linux().as_ref().unwrap().resources().is_none());
    }
}
