//! Loading and checking a bundle's config.json.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::error::{Error, Result};

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Parses JSON into `T`, naming the field path of any error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, data: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." || field.is_empty() || inner.is_syntax() || inner.is_eof() {
            bad(path, format!("malformed JSON: {inner}"))
        } else {
            bad(path, format!("field `{field}`: {inner}"))
        }
    })
}

/// Reads `bundle/config.json` and checks it (see [`validate`]).
pub fn load(bundle: &Path) -> Result<Spec> {
    let spec = read(bundle)?;
    validate(&spec, bundle, &bundle.join("config.json"))?;
    Ok(spec)
}

/// Reads and parses `bundle/config.json` without checking it: for a caller
/// that hands the spec to `create`, which checks it once (see [`validate`]).
pub fn read(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| {
        bad(
            &path,
            format!("cannot read the bundle's config: {e} (create one with `berth-runtime spec --bundle {}`)", bundle.display()),
        )
    })?;
    parse_json(&path, &data)
}

/// The absolute path of the root filesystem of `spec` in `bundle`.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let rel = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if rel.is_absolute() {
        rel
    } else {
        bundle.join(rel)
    }
}

/// Whether `spec` asks for a new or joined namespace of type `t`.
pub fn has_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
}

/// The highest uid or gid a container process may run as (runc's limit).
/// Above it ids are negative as the kernel's signed `int`; 4294967295 is
/// `(uid_t)-1`, which setresuid and setresgid read as "leave unchanged",
/// so the process would keep the runtime's root identity.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Checks `process.user`: uid, gid and additionalGids within 0..=[`MAX_ID`].
fn validate_user(user: &oci_spec::runtime::User, path: &Path, field: &str) -> Result<()> {
    let ids = [("uid", user.uid()), ("gid", user.gid())]
        .into_iter()
        .map(|(name, id)| (name.to_string(), id))
        .chain(
            user.additional_gids()
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, g)| (format!("additionalGids[{i}]"), *g)),
        );
    for (name, id) in ids {
        if id > MAX_ID {
            return Err(bad(
                path,
                format!("field `{field}.user.{name}`: {id} is out of range (ids run from 0 to {MAX_ID})"),
            ));
        }
    }
    Ok(())
}

/// Checks the parts of a process the kernel would otherwise reject late
/// with a vaguer error. `field` prefixes field names in messages.
pub fn validate_process(process: &Process, path: &Path, field: &str) -> Result<()> {
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => {
            return Err(bad(
                path,
                format!("field `{field}.args`: must name the program to run (a non-empty list)"),
            ))
        }
    }
    if !process.cwd().is_absolute() {
        return Err(bad(
            path,
            format!(
                "field `{field}.cwd`: {:?} must be an absolute path",
                process.cwd()
            ),
        ));
    }
    validate_user(process.user(), path, field)?;
    for (i, a) in process.args().iter().flatten().enumerate() {
        if a.contains('\0') {
            return Err(bad(
                path,
                format!("field `{field}.args[{i}]`: {a:?} contains a NUL byte"),
            ));
        }
    }
    if let Some(env) = process.env() {
        for (i, e) in env.iter().enumerate() {
            if e.contains('\0') {
                return Err(bad(
                    path,
                    format!("field `{field}.env[{i}]`: {e:?} contains a NUL byte"),
                ));
            }
            if !e.contains('=') || e.starts_with('=') {
                return Err(bad(
                    path,
                    format!("field `{field}.env[{i}]`: {e:?} is not of the form KEY=value"),
                ));
            }
        }
    }
    if let Some(rl) = process.rlimits() {
        let mut seen = HashSet::new();
        for (i, r) in rl.iter().enumerate() {
            if !seen.insert(format!("{:?}", r.typ())) {
                return Err(bad(
                    path,
                    format!("field `{field}.rlimits[{i}]`: duplicate {:?}", r.typ()),
                ));
            }
            if r.soft() > r.hard() {
                return Err(bad(
                    path,
                    format!(
                        "field `{field}.rlimits[{i}]`: soft limit {} is above the hard limit {}",
                        r.soft(),
                        r.hard()
                    ),
                ));
            }
        }
    }
    crate::process_attrs::check_process(process, field).map_err(|m| bad(path, m))?;
    Ok(())
}

/// The largest device major number the kernel encodes (12 bits).
const DEV_MAJOR_MAX: i64 = (1 << 12) - 1;
/// The largest device minor number the kernel encodes (20 bits).
const DEV_MINOR_MAX: i64 = (1 << 20) - 1;

/// Checks a parsed spec: the things runc refuses before it starts anything.
pub fn validate(spec: &Spec, bundle: &Path, path: &Path) -> Result<()> {
    let root = spec.root().as_ref().ok_or_else(|| {
        bad(
            path,
            "field `root`: missing; set root.path to the root filesystem directory",
        )
    })?;
    let rootfs = rootfs_path(spec, bundle);
    if !rootfs.is_dir() {
        return Err(bad(
            path,
            format!(
                "field `root.path`: rootfs {:?} does not exist or is not a directory",
                rootfs
            ),
        ));
    }
    let _ = root;
    let process = spec.process().as_ref().ok_or_else(|| {
        bad(
            path,
            "field `process`: missing; the container needs a process to run",
        )
    })?;
    validate_process(process, path, "process")?;
    let linux = spec.linux().as_ref().ok_or_else(|| {
        bad(
            path,
            "field `linux`: missing; berth runs Linux containers only",
        )
    })?;
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(bad(
                path,
                format!(
                    "field `linux.namespaces[{i}]`: duplicate namespace type {}",
                    ns.typ()
                ),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.exists() {
                return Err(bad(
                    path,
                    format!(
                        "field `linux.namespaces[{i}].path`: {} namespace path {:?} does not exist",
                        ns.typ(),
                        p
                    ),
                ));
            }
        }
    }
    if !seen.contains(&LinuxNamespaceType::Mount) {
        validate_inherited_mount_ns(spec, path)?;
    }
    let userns = seen.contains(&LinuxNamespaceType::User);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if maps && !userns {
        return Err(bad(path, "field `linux.uidMappings`: user namespace mappings given, but linux.namespaces has no user namespace"));
    }
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if new_userns && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
        return Err(bad(
            path,
            "field `linux.uidMappings`: a new user namespace needs uid and gid mappings",
        ));
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        && !seen.contains(&LinuxNamespaceType::Uts)
    {
        return Err(bad(
            path,
            "field `hostname`: unable to set hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty())
        && !seen.contains(&LinuxNamespaceType::Uts)
    {
        return Err(bad(
            path,
            "field `domainname`: unable to set domainname without a private UTS namespace",
        ));
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(bad(
                path,
                format!(
                    "field `mounts[{i}].destination`: {:?} must be an absolute path",
                    m.destination()
                ),
            ));
        }
        if let Err(e) = crate::mounts::parse_options(m.options().as_deref().unwrap_or(&[])) {
            return Err(bad(path, format!("field `mounts[{i}].options`: {e}")));
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if crate::mounts::propagation_flag(p).is_none() {
            return Err(bad(path, format!("field `linux.rootfsPropagation`: unknown propagation {p:?} (use shared, slave, private, unbindable or their r- forms)")));
        }
    }
    validate_sysctls(linux, path)?;
    crate::process_attrs::check_linux(linux).map_err(|m| bad(path, m))?;
    let new_ns = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty())
        && !new_ns(LinuxNamespaceType::Time)
    {
        return Err(bad(path, "field `linux.timeOffsets`: offsets need a new time namespace (their clocks can only be set before any process enters it); add {\"type\": \"time\"} without a path to linux.namespaces"));
    }
    // Devices move into the container's own network namespace, never the
    // runtime's.
    let own_netns = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .is_some_and(|n| n.path().as_deref().is_none_or(|p| !is_own_netns(p)));
    crate::netdev::check(linux, own_netns).map_err(|m| bad(path, m))?;
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if !d.path().is_absolute() || !d.path().starts_with("/dev") {
            return Err(bad(
                path,
                format!(
                    "field `linux.devices[{i}].path`: {:?} must be an absolute path under /dev",
                    d.path()
                ),
            ));
        }
        // mknod takes a 32-bit device number: beyond 12 bits of major and 20
        // of minor a number would wrap to another device (4294967297:1 is
        // /dev/mem's 1:1).
        for (name, number, max) in [
            ("major", d.major(), DEV_MAJOR_MAX),
            ("minor", d.minor(), DEV_MINOR_MAX),
        ] {
            if !(0..=max).contains(&number) {
                return Err(bad(
                    path,
                    format!(
                        "field `linux.devices[{i}].{name}`: {number} is out of range (0 to {max})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A container without a mount namespace of its own shares the runtime's
/// (the Runtime Spec's "inherited"): it is chroot'ed into root.path, and its
/// `mounts`, masked and read-only paths are made under the rootfs in the
/// runtime's namespace, recorded and removed at delete (host_mounts.rs).
/// What would change the runtime's namespace beyond the rootfs is refused,
/// naming the field: device nodes, a root propagation, a read-only root.
fn validate_inherited_mount_ns(spec: &Spec, path: &Path) -> Result<()> {
    let fix = "add {\"type\": \"mount\"} to linux.namespaces, or remove the field";
    let linux = spec.linux().clone().unwrap_or_default();
    let asked = [
        (
            "linux.devices",
            linux.devices().as_ref().is_some_and(|m| !m.is_empty()),
        ),
        (
            "linux.rootfsPropagation",
            linux.rootfs_propagation().is_some(),
        ),
        (
            "root.readonly",
            spec.root().as_ref().and_then(|r| r.readonly()) == Some(true),
        ),
    ];
    match asked.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(bad(
            path,
            format!(
                "field `{field}`: needs a mount namespace of the container's own (without one, linux.namespaces has the runtime's, where a mount would reach the host); {fix}"
            ),
        )),
        None => Ok(()),
    }
}

/// The namespace a sysctl (dotted key) belongs to, or `None` for one the
/// kernel keeps global (written from any container, it would change the
/// host). The list is runc's: IPC owns the System V IPC limits and POSIX
/// message queues, UTS the host and domain names, network the `net.` tree.
pub fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else {
        None
    }
}

/// Whether the namespace file at `p` is the runtime's own network
/// namespace (joining it would make `net.*` sysctls the host's).
fn is_own_netns(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), std::fs::metadata("/proc/self/ns/net")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Refuses a sysctl that would reach beyond the container: one the kernel
/// does not namespace, or one of a namespace the container shares with the
/// host (runc's rules). Keys may use dots or slashes.
fn validate_sysctls(linux: &oci_spec::runtime::Linux, path: &Path) -> Result<()> {
    let Some(sysctls) = linux.sysctl() else {
        return Ok(());
    };
    let own = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == t)
            .map(|n| n.path().clone())
    };
    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    for raw in keys {
        let key = raw.replace('/', ".");
        let field = format!("field `linux.sysctl`: {raw:?}");
        if key.is_empty() || key.split('.').any(|c| c.is_empty() || c == "..") {
            return Err(bad(path, format!("{field} is not a sysctl name")));
        }
        let Some(ns) = sysctl_namespace(&key) else {
            return Err(bad(path, format!("{field} is not in a separate kernel namespace: setting it would change the host; remove it")));
        };
        match own(ns) {
            None => {
                return Err(bad(path, format!("{field} belongs to the {ns} namespace, which the container shares with the host; add a {ns} namespace to linux.namespaces or remove the sysctl")))
            }
            Some(Some(p)) if ns == LinuxNamespaceType::Network && is_own_netns(&p) => {
                return Err(bad(path, format!("{field}: the network namespace {p:?} is the host's; join another one or remove the sysctl")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Reads a process.json (`exec --process`), naming the field of any error.
pub fn load_process(path: &Path) -> Result<Process> {
    let data =
        std::fs::read(path).map_err(|e| bad(path, format!("cannot read the process file: {e}")))?;
    let p: Process = parse_json(path, &data)?;
    validate_process(&p, path, "process")?;
    Ok(p)
}

/// Adds capabilities given by name (`CAP_SYS_ADMIN` or `SYS_ADMIN`) to the
/// bounding, effective and permitted sets of `p` (`exec --cap`).
pub fn add_capabilities(p: &mut Process, names: &[String]) -> Result<()> {
    use oci_spec::runtime::{Capability, LinuxCapabilities};
    let mut caps = p.capabilities().clone().unwrap_or_else(|| {
        let mut c = LinuxCapabilities::default();
        c.set_bounding(None)
            .set_effective(None)
            .set_permitted(None)
            .set_inheritable(None)
            .set_ambient(None);
        c
    });
    for name in names {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let cap: Capability = bare.parse().map_err(|_| Error::Config {
            path: PathBuf::from("--cap"),
            msg: format!("unknown capability {name:?} (use names like CAP_NET_ADMIN)"),
        })?;
        let add = |set: Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        let b = add(caps.bounding().clone());
        let e = add(caps.effective().clone());
        let pm = add(caps.permitted().clone());
        caps.set_bounding(b).set_effective(e).set_permitted(pm);
    }
    p.set_capabilities(Some(caps));
    Ok(())
}

/// Parses `LinuxResources` JSON (`update --resources`), naming the field of
/// any error; `path` names the source in messages.
pub fn parse_resources(path: &Path, data: &[u8]) -> Result<oci_spec::runtime::LinuxResources> {
    parse_json(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate` of the template spec changed by `edit`, in a bundle with
    /// a rootfs directory; the error message on failure.
    fn check(edit: impl FnOnce(&mut serde_json::Value)) -> std::result::Result<(), String> {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let mut json = crate::spec_template::default_spec_json(false);
        edit(&mut json);
        let spec: Spec = serde_json::from_value(json).unwrap();
        validate(&spec, bundle.path(), Path::new("config.json")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_template_is_valid() {
        check(|_| {}).unwrap();
    }

    #[test]
    fn without_a_mount_namespace_only_mounts_under_the_rootfs_are_allowed() {
        let no_mnt = |s: &mut serde_json::Value| {
            let ns = s["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "mount");
            s["root"]["readonly"] = false.into();
        };
        // mounts, maskedPaths and readonlyPaths: made under the rootfs.
        check(no_mnt).unwrap();
        for (field, value) in [
            ("rootfsPropagation", serde_json::json!("private")),
            (
                "devices",
                serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]),
            ),
        ] {
            let err = check(|s| {
                no_mnt(s);
                s["linux"][field] = value.clone();
            })
            .unwrap_err();
            assert!(
                err.contains(&format!("field `linux.{field}`: needs a mount namespace")),
                "{err}"
            );
        }
        let err = check(|s| {
            no_mnt(s);
            s["root"]["readonly"] = true.into();
        })
        .unwrap_err();
        assert!(err.contains("field `root.readonly`"), "{err}");
    }

    #[test]
    fn unsupported_mount_options_name_the_mount() {
        let err = check(|s| {
            s["mounts"][1]["options"] = serde_json::json!(["nosuid", "rro"]);
        })
        .unwrap_err();
        assert!(err.contains("field `mounts[1].options`"), "{err}");
        assert!(err.contains("\"rro\""), "{err}");
    }

    #[test]
    fn nul_bytes_in_args_and_env_are_refused() {
        let err =
            check(|s| s["process"]["args"] = serde_json::json!(["sh", "a\u{0}b"])).unwrap_err();
        assert!(err.contains("field `process.args[1]`"), "{err}");
        let err = check(|s| s["process"]["env"] = serde_json::json!(["A=\u{0}"])).unwrap_err();
        assert!(err.contains("field `process.env[0]`"), "{err}");
    }
}
