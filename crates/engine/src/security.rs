//! What a container may do: its capabilities (`--cap-add`, `--cap-drop`),
//! its seccomp filter (`--security-opt seccomp=...`), no_new_privs
//! (`--security-opt no-new-privileges`) and `--privileged`, with podman's
//! names and meanings.
//!
//! - Capabilities start from containerd's default set ([`DEFAULT_CAPS`]);
//!   names are taken with or without `CAP_`, in any case. `--cap-drop ALL`
//!   leaves only the added ones; `--cap-add ALL` gives every capability
//!   berth itself holds (its bounding set), minus the dropped ones; a name
//!   both added and dropped is refused.
//! - `--privileged`: every capability of berth's bounding set (minus
//!   `--cap-drop`), no seccomp filter unless a profile file is given, no
//!   masked or read-only /proc and /sys paths, /sys writable, every host
//!   device under /dev created in the container and allowed by the devices
//!   cgroup.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::seccomp::{filter_for, Profile, Seccomp};
use crate::spec::DEFAULT_CAPS;

/// Linux capabilities by number (`capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A container's security settings. The default is an unprivileged
/// container with containerd's capabilities and berth's seccomp profile.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `--privileged` (see the module documentation).
    pub privileged: bool,
    /// `--cap-add`: names with or without `CAP_`, or `ALL`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`: names with or without `CAP_`, or `ALL`.
    pub cap_drop: Vec<String>,
    /// The seccomp filter. With `privileged`, [`Seccomp::Default`] means
    /// none (podman's rule: only an explicit profile file is applied).
    pub seccomp: Seccomp,
    /// Set no_new_privs: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// `--device`: host devices made in the container and allowed by its
    /// device cgroup.
    pub devices: Vec<Device>,
}

/// `--device HOST[:CONTAINER][:PERMS]`: the host's device node `host`
/// (symlinks followed), made at `container` (default: the same path) with
/// the host's type, numbers, mode and owner, and `perms` (a non-empty
/// subset of `rwm`, default `rwm`) allowed in the device cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device node on the host.
    pub host: PathBuf,
    /// Where it appears in the container (under /dev).
    pub container: PathBuf,
    /// Read, write, mknod: the device cgroup's access string.
    pub perms: String,
}

/// Parses `--device HOST[:CONTAINER][:PERMS]` as podman does: a second
/// field made only of `r`, `w`, `m` is the permissions.
pub fn parse_device(text: &str) -> Result<Device> {
    let what = || format!("--device {text:?}");
    let is_perms = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| "rwm".contains(c))
            && p.chars().collect::<HashSet<_>>().len() == p.len()
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(Error::invalid(what(), "expected HOST[:CONTAINER][:PERMS]")),
    };
    if !is_perms(perms) {
        return Err(Error::invalid(
            what(),
            format!("permissions {perms:?} must be letters of rwm (read, write, mknod), each once"),
        ));
    }
    let container_path = Path::new(container);
    if !Path::new(host).is_absolute()
        || !container_path.is_absolute()
        || !container_path.starts_with("/dev")
        || container_path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::invalid(
            what(),
            "the host path must be absolute and the container path absolute under /dev, without `..`",
        ));
    }
    Ok(Device {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        perms: perms.to_string(),
    })
}

/// The `linux.devices` entry for device node `meta` at `path` in the
/// container, or None when `meta` is no character or block device.
fn device_entry(path: &Path, meta: &std::fs::Metadata) -> Option<Value> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(json!({
        "path": path,
        "type": typ,
        "major": nix::sys::stat::major(rdev),
        "minor": nix::sys::stat::minor(rdev),
        "fileMode": meta.mode() & 0o7777,
        "uid": meta.uid(),
        "gid": meta.gid(),
    }))
}

impl Security {
    /// Applies one `--security-opt` value: `seccomp=unconfined`,
    /// `seccomp=FILE`, `no-new-privileges[=true|false]`; `label=disable`
    /// and `apparmor=unconfined` are accepted and change nothing (berth
    /// applies neither SELinux labels nor AppArmor profiles). `:` works in
    /// place of `=`, as in docker's older syntax.
    pub fn security_opt(&mut self, opt: &str) -> Result<()> {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => self.seccomp = Seccomp::Unconfined,
            ("seccomp", Some(file)) if !file.is_empty() => {
                self.seccomp = Seccomp::Profile(Profile::load(Path::new(file))?)
            }
            ("no-new-privileges", None | Some("true")) => self.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => self.no_new_privileges = false,
            ("label", Some("disable")) | ("apparmor", Some("unconfined")) => {}
            _ => {
                return Err(Error::invalid(
                    format!("--security-opt {opt:?}"),
                    "supported: seccomp=unconfined, seccomp=/path/to/profile.json, \
                     no-new-privileges[=true|false] (label=disable and apparmor=unconfined \
                     are accepted: berth applies neither)",
                ))
            }
        }
        Ok(())
    }

    /// The capabilities the container gets (sorted by number).
    pub fn capabilities(&self) -> Result<Vec<String>> {
        let drop = normalize_all("--cap-drop", &self.cap_drop)?;
        if self.privileged {
            return Ok(bounding_set()
                .into_iter()
                .filter(|c| !drop.contains(c))
                .collect());
        }
        let base: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        merge_capabilities(&base, &normalize_all("--cap-add", &self.cap_add)?, &drop)
    }

    /// Sets the process's capabilities, no_new_privs, the seccomp filter
    /// and `--privileged`'s paths and devices in `spec` (the JSON of a
    /// runtime spec).
    pub(crate) fn apply(&self, spec: &mut Value) -> Result<()> {
        let caps = self.capabilities()?;
        let process = &mut spec["process"];
        process["capabilities"] = json!({
            "bounding": caps, "permitted": caps, "effective": caps,
        });
        process["noNewPrivileges"] = json!(self.no_new_privileges);
        let seccomp = match (&self.seccomp, self.privileged) {
            (Seccomp::Default, true) => None,
            (choice, _) => filter_for(choice, &caps)?,
        };
        let linux = &mut spec["linux"];
        match seccomp {
            Some(s) => {
                linux["seccomp"] = serde_json::to_value(s)
                    .map_err(|e| Error::invalid("linux.seccomp", e.to_string()))?
            }
            None => {
                if let Some(l) = linux.as_object_mut() {
                    l.remove("seccomp");
                }
            }
        }
        if self.privileged {
            linux["maskedPaths"] = json!([]);
            linux["readonlyPaths"] = json!([]);
            linux["devices"] = json!(host_devices(Path::new("/dev")));
            linux["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
            for m in spec["mounts"].as_array_mut().into_iter().flatten() {
                if m["destination"] == "/sys" {
                    if let Some(opts) = m["options"].as_array_mut() {
                        opts.retain(|o| o != "ro");
                    }
                }
            }
        }
        for d in &self.devices {
            let what = format!("--device {}", d.host.display());
            let meta = std::fs::metadata(&d.host).map_err(|e| Error::io(&d.host, e))?;
            let entry = device_entry(&d.container, &meta).ok_or_else(|| {
                Error::invalid(
                    what.as_str(),
                    "not a character or block device on this host",
                )
            })?;
            let rule = json!({
                "allow": true,
                "type": entry["type"],
                "major": entry["major"],
                "minor": entry["minor"],
                "access": d.perms,
            });
            let devices = &mut spec["linux"]["devices"];
            if !devices.is_array() {
                *devices = json!([]);
            }
            if let Some(list) = devices.as_array_mut() {
                list.retain(|e| e["path"] != entry["path"]);
                list.push(entry);
            }
            let rules = &mut spec["linux"]["resources"]["devices"];
            if !rules.is_array() {
                *rules = json!([]);
            }
            if let Some(list) = rules.as_array_mut() {
                list.push(rule);
            }
        }
        Ok(())
    }
}

/// `name` as the kernel's `CAP_` name: `net_admin`, `NET_ADMIN` and
/// `CAP_NET_ADMIN` all become `CAP_NET_ADMIN`; `all` becomes `ALL`.
pub fn normalize_capability(what: &str, name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid(
            format!("{what} {name:?}"),
            "unknown capability: use a name from capabilities(7), with or without CAP_ (e.g. NET_ADMIN), or ALL",
        ))
    }
}

fn normalize_all(what: &str, names: &[String]) -> Result<Vec<String>> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| normalize_capability(what, n))
        .collect()
}

/// podman's capability arithmetic on normalized names: `ALL` in `drop`
/// leaves only `add` (which may not hold `ALL` then); `ALL` in `add`
/// starts from berth's bounding set; a capability both added and dropped
/// is refused. Sorted by capability number.
pub fn merge_capabilities(base: &[String], add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let all = |list: &[String]| list.iter().any(|c| c == "ALL");
    let mut caps: Vec<String> = if all(drop) {
        if all(add) {
            return Err(Error::invalid(
                "--cap-add ALL with --cap-drop ALL",
                "adding and dropping every capability contradict each other; give one",
            ));
        }
        add.to_vec()
    } else {
        if let Some(both) = add.iter().find(|c| drop.contains(c)) {
            return Err(Error::invalid(
                format!("capability {both}"),
                "is both added (--cap-add) and dropped (--cap-drop); give one",
            ));
        }
        let start = if all(add) {
            bounding_set()
        } else {
            base.to_vec()
        };
        start
            .into_iter()
            .chain(add.iter().filter(|c| *c != "ALL").cloned())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    caps.sort_by_key(|c| CAPABILITIES.iter().position(|k| k == c));
    caps.dedup();
    Ok(caps)
}

/// The capabilities of this process's bounding set (what a privileged
/// container can get), by name.
pub fn bounding_set() -> Vec<String> {
    let bits = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Directories under /dev that are per-container (or not devices) and
/// never copied from the host, as podman skips them.
const SKIP_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every character and block device under `dir` (recursively), as
/// `linux.devices` entries with the host's mode and owner. /dev/console
/// and /dev/ptmx stay the container's own.
fn host_devices(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    pending.push(path);
                }
                continue;
            }
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            out.extend(device_entry(&path, &meta));
        }
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn security(add: &[&str], drop: &[&str]) -> Security {
        Security {
            cap_add: strings(add),
            cap_drop: strings(drop),
            ..Default::default()
        }
    }

    #[test]
    fn capability_names_are_normalized() {
        for name in ["net_admin", "NET_ADMIN", "cap_net_admin", " CAP_NET_ADMIN "] {
            assert_eq!(
                normalize_capability("--cap-add", name).unwrap(),
                "CAP_NET_ADMIN"
            );
        }
        assert_eq!(normalize_capability("--cap-add", "all").unwrap(), "ALL");
        let err = normalize_capability("--cap-add", "NET_ADMINN")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cap-add \"NET_ADMINN\"") && err.contains("unknown capability"),
            "{err}"
        );
    }

    #[test]
    fn adds_and_drops_follow_podman() {
        let caps = security(&["net_admin"], &["CHOWN", "cap_kill"])
            .capabilities()
            .unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".into()));
        assert!(!caps.contains(&"CAP_CHOWN".into()) && !caps.contains(&"CAP_KILL".into()));
        assert_eq!(caps.len(), DEFAULT_CAPS.len() - 1);
        assert_eq!(
            security(&["SYS_ADMIN", "NET_RAW"], &["ALL"])
                .capabilities()
                .unwrap(),
            strings(&["CAP_NET_RAW", "CAP_SYS_ADMIN"]),
            "drop ALL keeps only the added ones, by number"
        );
        assert!(security(&[], &["all"]).capabilities().unwrap().is_empty());
        let all = security(&["ALL"], &["SYS_ADMIN"]).capabilities().unwrap();
        assert!(!all.contains(&"CAP_SYS_ADMIN".into()));
        assert_eq!(all.len(), bounding_set().len() - 1);
        for (add, drop, says) in [
            (&["ALL"][..], &["ALL"][..], "contradict"),
            (&["KILL"][..], &["kill"][..], "CAP_KILL"),
        ] {
            let err = security(add, drop).capabilities().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn privileged_gets_everything_but_the_dropped() {
        let mut s = Security {
            privileged: true,
            cap_drop: strings(&["NET_RAW"]),
            ..Default::default()
        };
        let caps = s.capabilities().unwrap();
        assert_eq!(caps.len(), bounding_set().len() - 1);
        let mut spec = json!({
            "process": {},
            "mounts": [{"destination": "/sys", "type": "sysfs", "options": ["nosuid", "ro"]}],
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                      "resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        });
        s.apply(&mut spec).unwrap();
        assert!(spec["linux"].get("seccomp").is_none());
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(spec["linux"]["readonlyPaths"], json!([]));
        assert_eq!(spec["mounts"][0]["options"], json!(["nosuid"]));
        assert_eq!(
            spec["linux"]["resources"]["devices"][0]["allow"],
            json!(true)
        );
        let devices = spec["linux"]["devices"].as_array().unwrap();
        assert!(devices
            .iter()
            .any(|d| d["path"] == "/dev/null" && d["major"] == 1 && d["minor"] == 3));
        assert!(!devices
            .iter()
            .any(|d| d["path"] == "/dev/console" || d["path"] == "/dev/ptmx"));
        assert!(!devices
            .iter()
            .any(|d| d["path"].as_str().unwrap().starts_with("/dev/pts/")));
        // An explicit profile file still applies.
        s.seccomp = Seccomp::Profile(
            Profile::from_json(Path::new("/p"), json!({"defaultAction": "SCMP_ACT_LOG"})).unwrap(),
        );
        s.apply(&mut spec).unwrap();
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_LOG");
    }

    #[test]
    fn security_opts_parse() {
        let mut s = Security::default();
        s.security_opt("no-new-privileges").unwrap();
        assert!(s.no_new_privileges);
        s.security_opt("no-new-privileges:false").unwrap();
        assert!(!s.no_new_privileges);
        s.security_opt("seccomp=unconfined").unwrap();
        assert!(matches!(s.seccomp, Seccomp::Unconfined));
        s.security_opt("label=disable").unwrap();
        for bad in [
            "seccomp=",
            "apparmor=docker-default",
            "mask=/proc",
            "nonsense",
        ] {
            let err = s.security_opt(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("supported"), "{err}");
        }
        let err = s
            .security_opt("seccomp=/no/such/profile.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/profile.json"), "{err}");
    }
}
