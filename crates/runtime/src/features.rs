//! `berth-runtime features`: the runtime-spec "features" document
//! (runtime-spec `features.md`, runc's `types/features`), which tells engines
//! such as containerd what this runtime recognizes.
//!
//! THE LISTS BELOW MUST FOLLOW THE CODE. A feature goes in only when the
//! runtime actually implements it; anything berth cannot vouch for is left
//! out, which the spec reads as "unknown" (not "unsupported"). When you add or
//! remove support for a namespace, a mount option, a hook stage, seccomp or a
//! cgroup mode, change this file in the same commit. The unit tests tie what
//! they can to the code (capabilities to the `caps` crate the runtime uses,
//! hook stages to oci-spec's `Hooks`).

use serde_json::{json, Value};

/// Lowest runtime-spec version berth accepts in `config.json`.
pub const OCI_VERSION_MIN: &str = "1.0.0";
/// Highest runtime-spec version berth recognizes (the one it writes, see
/// [`crate::spec_template::OCI_VERSION`]).
pub const OCI_VERSION_MAX: &str = crate::spec_template::OCI_VERSION;

/// The hook stages [`crate::hooks::run_hooks`] is called for, in lifecycle
/// order.
pub const HOOKS: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < names.len() {
        names[i] = crate::hooks::HookStage::ALL[i].name();
        i += 1;
    }
    names
};

/// Mount options recognized in `mounts[].options` (by `mounts::parse_options`):
/// the mount(2) flags and propagation types. Not listed: the recursive
/// attribute forms (`rro`, `rnosuid`, ..., `idmap`), which need
/// mount_setattr and are refused; `tmpcopyup`, which is accepted but gives
/// an empty tmpfs; `defaults`, `iversion`, `nosymfollow`, which are not
/// recognized. Anything else is passed to the filesystem as data.
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// Namespace types berth can create or join.
pub const NAMESPACES: &[&str] = &[
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

/// `linux.memoryPolicy.mode` values berth passes to set_mempolicy.
pub const MEMORY_POLICY_MODES: &[&str] = &[
    "MPOL_BIND",
    "MPOL_DEFAULT",
    "MPOL_INTERLEAVE",
    "MPOL_LOCAL",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_WEIGHTED_INTERLEAVE",
];

/// `linux.memoryPolicy.flags` values berth passes to set_mempolicy.
pub const MEMORY_POLICY_FLAGS: &[&str] = &[
    "MPOL_F_NUMA_BALANCING",
    "MPOL_F_RELATIVE_NODES",
    "MPOL_F_STATIC_NODES",
];

/// Annotation under which berth reports its version.
pub const VERSION_ANNOTATION: &str = "org.berth.runtime.version";

/// The features document as `berth-runtime features` prints it.
pub fn features() -> Value {
    let mut capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    capabilities.sort();
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": capabilities,
            "cgroup": {
                // berth-cgroups drives cgroupfs directly (v1, v2 and hybrid);
                // there is no systemd cgroup driver.
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false
            },
            // linux.seccomp (seccomp/): every action, all operators, the
            // filter flags this kernel takes (probed).
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [
                    "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32",
                    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"
                ],
                "knownFlags": crate::seccomp::FLAGS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
                "supportedFlags": crate::seccomp::supported_flags()
            },
            // Labels are applied where the kernel runs the LSM and refused
            // otherwise (lsm.rs), so support follows the kernel.
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            // linux.memoryPolicy (process_attrs.rs), passed to set_mempolicy.
            "memoryPolicy": {
                "modes": MEMORY_POLICY_MODES,
                "flags": MEMORY_POLICY_FLAGS
            },
            // linux.netDevices (netdev.rs).
            "netDevices": {"enabled": true}
        },
        "annotations": {
            VERSION_ANNOTATION: env!("CARGO_PKG_VERSION")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_runcs_and_parses_as_oci_features() {
        let f = features();
        for key in [
            "ociVersionMin",
            "ociVersionMax",
            "hooks",
            "mountOptions",
            "linux",
            "annotations",
        ] {
            assert!(f.get(key).is_some(), "missing {key}");
        }
        // oci-spec's Features type (the same shape runc prints) accepts it.
        let parsed: oci_spec::runtime::Features = serde_json::from_value(f.clone()).unwrap();
        assert_eq!(parsed.oci_version_max(), OCI_VERSION_MAX);
        let ns = parsed
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert_eq!(ns.len(), NAMESPACES.len());
    }

    #[test]
    fn capabilities_follow_the_caps_crate() {
        let f = features();
        let listed = f["linux"]["capabilities"].as_array().unwrap();
        assert_eq!(listed.len(), caps::all().len());
        assert!(listed.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(listed
            .iter()
            .all(|c| c.as_str().unwrap().starts_with("CAP_")));
    }

    #[test]
    fn seccomp_reports_notify_and_the_flags_this_kernel_takes() {
        let f = features();
        let s = &f["linux"]["seccomp"];
        assert!(s["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("SCMP_ACT_NOTIFY")));
        assert_eq!(
            s["knownFlags"],
            json!([
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
            ])
        );
        // LOG (4.14) and SPEC_ALLOW (4.17) are older than any kernel berth
        // supports; a bogus bit is never reported.
        let supported = s["supportedFlags"].as_array().unwrap();
        assert!(
            supported.contains(&json!("SECCOMP_FILTER_FLAG_LOG")),
            "{supported:?}"
        );
        assert!(
            supported.contains(&json!("SECCOMP_FILTER_FLAG_SPEC_ALLOW")),
            "{supported:?}"
        );
    }

    #[test]
    fn hook_stages_are_the_specs() {
        // Every stage listed must be a field of the spec's hooks object.
        let mut all = serde_json::Map::new();
        for stage in HOOKS {
            all.insert(stage.to_string(), json!([{"path": "/bin/true"}]));
        }
        let hooks: oci_spec::runtime::Hooks = serde_json::from_value(Value::Object(all)).unwrap();
        let back = serde_json::to_value(hooks).unwrap();
        for stage in HOOKS {
            assert!(
                back.get(stage).is_some(),
                "{stage} is not a runtime-spec hook stage"
            );
        }
    }

    #[test]
    fn mount_options_are_the_ones_the_parser_knows() {
        for opt in MOUNT_OPTIONS {
            let parsed = crate::mounts::parse_options(&[opt.to_string()])
                .unwrap_or_else(|e| panic!("listed mount option {opt} is refused: {e}"));
            assert!(
                parsed.data.is_empty(),
                "listed mount option {opt} is not recognized (it would be passed as fs data)"
            );
        }
        for opt in ["rro", "idmap", "rnosuid"] {
            assert!(crate::mounts::parse_options(&[opt.to_string()]).is_err());
            assert!(!MOUNT_OPTIONS.contains(&opt));
        }
    }

    #[test]
    fn memory_policy_lists_are_the_specs_names() {
        // Each listed mode and flag parses as oci-spec's type, and every
        // mode oci-spec knows is listed.
        for mode in MEMORY_POLICY_MODES {
            let m: oci_spec::runtime::MemoryPolicyModeType =
                serde_json::from_value(json!(mode)).unwrap();
            assert_eq!(&m.to_string(), mode);
        }
        for flag in MEMORY_POLICY_FLAGS {
            let f: oci_spec::runtime::MemoryPolicyFlagType =
                serde_json::from_value(json!(flag)).unwrap();
            assert_eq!(&f.to_string(), flag);
        }
        let parsed: oci_spec::runtime::Features = serde_json::from_value(features()).unwrap();
        let linux = parsed.linux().as_ref().unwrap();
        assert_eq!(
            linux
                .memory_policy()
                .as_ref()
                .unwrap()
                .modes()
                .as_ref()
                .unwrap()
                .len(),
            MEMORY_POLICY_MODES.len()
        );
        assert_eq!(linux.net_devices().as_ref().unwrap().enabled(), &Some(true));
    }

    #[test]
    fn lists_are_sorted_and_unique() {
        for list in [
            MOUNT_OPTIONS,
            NAMESPACES,
            MEMORY_POLICY_MODES,
            MEMORY_POLICY_FLAGS,
        ] {
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, list);
        }
    }
}
