//! Namespaces: which ones a new child joins (by path, or those of a running
//! container for `exec`) and which it creates, in the order the kernel
//! needs; becoming root of a user namespace; the id maps the parent writes.

use std::os::fd::OwnedFd;
use std::path::Path;

use berth_rootless::idmap::IdMap;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::channel::Channel;
use crate::error::{io_err, Result};

/// The clone flag of a namespace type.
pub(crate) fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
        other => CloneFlags::from_bits_retain(other as i32),
    }
}

/// The name of a namespace type under `/proc/<pid>/ns/`.
fn ns_proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Which namespaces a child joins (by fd) and which it creates.
pub(crate) struct NsPlan {
    /// Namespaces to join, in the order to join them (see [`order_joins`]).
    pub joins: Vec<(CloneFlags, OwnedFd)>,
    /// New namespaces other than the user namespace.
    pub new_flags: CloneFlags,
    /// Whether a new user namespace is created (the parent writes its maps).
    pub new_user: bool,
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(io_err(format!("cannot open namespace {}", path.display())))
}

/// Sorts joins: user first (it grants the rights to join the others),
/// mount last.
pub(crate) fn order_joins(joins: &mut [(CloneFlags, OwnedFd)]) {
    joins.sort_by_key(|(f, _)| {
        if f.contains(CloneFlags::CLONE_NEWUSER) {
            0
        } else if f.contains(CloneFlags::CLONE_NEWNS) {
            2
        } else {
            1
        }
    });
}

/// The namespaces of a new container: those with a path are opened (to be
/// joined), the others are created.
pub(crate) fn ns_plan(spec: &Spec) -> Result<NsPlan> {
    let mut joins = Vec::new();
    let mut new_flags = CloneFlags::empty();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let flag = ns_flag(ns.typ());
        match ns.path() {
            Some(p) => joins.push((flag, open_ns(p)?)),
            None => new_flags |= flag,
        }
    }
    order_joins(&mut joins);
    let new_user = new_flags.contains(CloneFlags::CLONE_NEWUSER);
    new_flags.remove(CloneFlags::CLONE_NEWUSER);
    Ok(NsPlan {
        joins,
        new_flags,
        new_user,
    })
}

/// The namespaces of the running container whose init is `init` that differ
/// from ours, opened and in join order (what `exec` joins).
pub(crate) fn container_joins(init: i32) -> Result<Vec<(CloneFlags, OwnedFd)>> {
    let mut joins = Vec::new();
    for t in [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Time,
        LinuxNamespaceType::Mount,
    ] {
        let name = ns_proc_name(t);
        let theirs = format!("/proc/{init}/ns/{name}");
        let same = match (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{name}")),
        ) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            (Err(_), _) => continue,
            _ => false,
        };
        if !same {
            joins.push((ns_flag(t), open_ns(Path::new(&theirs))?));
        }
    }
    Ok(joins)
}

/// In a child: joins every namespace of `joins` in order; after the user
/// namespace becomes its root. `what` names the namespaces in errors.
pub(crate) fn join_all(ch: &Channel, joins: Vec<(CloneFlags, OwnedFd)>, what: &str) {
    for (flag, fd) in joins {
        if let Err(e) = nix::sched::setns(&fd, flag) {
            ch.fail(&format!("cannot join {what} {flag:?}: {e}"));
        }
        if flag.contains(CloneFlags::CLONE_NEWUSER) {
            become_ns_root(ch);
        }
    }
}

/// After entering a user namespace: become its root (container uid/gid 0),
/// so files the setup creates get a mapped owner.
pub(crate) fn become_ns_root(ch: &Channel) {
    let root_u = nix::unistd::Uid::from_raw(0);
    let root_g = nix::unistd::Gid::from_raw(0);
    if let Err(e) = nix::unistd::setresgid(root_g, root_g, root_g)
        .and_then(|_| nix::unistd::setresuid(root_u, root_u, root_u))
    {
        ch.fail(&format!(
            "cannot become root in the user namespace (map container id 0): {e}"
        ));
    }
}

/// In the parent: writes the spec's uid and gid maps for the user
/// namespace process `pid` has just created (through newuidmap and
/// newgidmap when the caller is not root and maps more than its own ids).
pub(crate) fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    let maps = |m: &Option<Vec<LinuxIdMapping>>| -> Vec<IdMap> {
        m.iter()
            .flatten()
            .map(|m| IdMap {
                container: m.container_id(),
                host: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    berth_rootless::idmap::write(
        pid,
        &maps(linux.uid_mappings()),
        &maps(linux.gid_mappings()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
    }

    #[test]
    fn the_user_namespace_is_joined_first_and_the_mount_namespace_last() {
        let mut joins = vec![
            (CloneFlags::CLONE_NEWNS, fd()),
            (CloneFlags::CLONE_NEWNET, fd()),
            (CloneFlags::CLONE_NEWUSER, fd()),
            (CloneFlags::CLONE_NEWPID, fd()),
        ];
        order_joins(&mut joins);
        let order: Vec<CloneFlags> = joins.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            order,
            [
                CloneFlags::CLONE_NEWUSER,
                CloneFlags::CLONE_NEWNET,
                CloneFlags::CLONE_NEWPID,
                CloneFlags::CLONE_NEWNS
            ]
        );
    }

    #[test]
    fn namespaces_with_a_path_are_joined_the_others_created() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/proc/self/ns/net"},
                {"type": "user"},
                {"type": "mount"},
                {"type": "time"}
            ]}
        }))
        .unwrap();
        let plan = ns_plan(&spec).unwrap();
        assert!(plan.new_user);
        assert_eq!(
            plan.new_flags,
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)
        );
        assert_eq!(plan.joins.len(), 1);
        assert_eq!(plan.joins[0].0, CloneFlags::CLONE_NEWNET);
    }
}
