//! Containers of an unprivileged user (or of root in a user namespace):
//! cgroups only where they are delegated. Such a caller gets the usual
//! cgroup when it may write the cgroup directories' parents; otherwise the
//! container runs without one ([`NoCgroup`]), which is refused when the
//! spec asks for resource limits, with an error naming the hierarchy that
//! is not delegated.

use std::path::{Path, PathBuf};

use berth_cgroups::{Error as CgError, Hierarchy, Manager, Stats};
use oci_spec::runtime::LinuxResources;

use crate::error::Result;

/// The first cgroup directory (or its nearest existing ancestor) that the
/// caller may not write, when it is rootless; None when every one is
/// delegated (or the caller is root).
fn undelegated(paths: &[PathBuf]) -> Option<PathBuf> {
    if !berth_rootless::is_rootless() {
        return None;
    }
    paths.iter().find_map(|p| {
        let existing = p.ancestors().find(|a| a.exists())?;
        let writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
        (!writable).then(|| existing.to_path_buf())
    })
}

/// Whether `r` limits anything a cgroup enforces (device rules aside: a
/// rootless container cannot create device nodes anyway).
pub(crate) fn limits_anything(r: &LinuxResources) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(r) else {
        return true;
    };
    fields.iter().any(|(k, v)| {
        k != "devices"
            && match v {
                serde_json::Value::Null => false,
                serde_json::Value::Array(a) => !a.is_empty(),
                serde_json::Value::Object(o) => !o.is_empty(),
                _ => true,
            }
    })
}

fn not_delegated(resource: &str, dir: &Path) -> CgError {
    let uid = berth_rootless::outer_uid();
    let how = match berth_cgroups::detect_hierarchy() {
        Ok(Hierarchy::V2) => {
            "delegate a cgroup v2 subtree to the user (systemd: run under `systemd-run --user --scope -p Delegate=yes`)"
        }
        _ => {
            "this machine mounts cgroup v1 hierarchies, which are not delegated to users: boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1) and delegate a subtree"
        }
    };
    CgError::Unsupported {
        resource: resource.into(),
        reason: format!(
            "resource limits need a cgroup delegated to user {} (uid {uid}), and {} is not writable: {how}; or drop the limits",
            berth_rootless::user_name(uid),
            dir.display()
        ),
    }
}

/// The cgroup of a new container `id` for `cg` (the usual manager): `cg`
/// itself, or [`NoCgroup`] when the caller is rootless and the cgroups are
/// not delegated — then `resources` must not limit anything.
pub(crate) fn container_cgroup(
    cg: Box<dyn Manager>,
    id: &str,
    resources: Option<&LinuxResources>,
) -> Result<Box<dyn Manager>> {
    let Some(dir) = undelegated(&cg.paths()) else {
        return Ok(cg);
    };
    if resources.is_some_and(limits_anything) {
        return Err(not_delegated("linux.resources", &dir).into());
    }
    tracing::debug!(
        "rootless: container {id} runs without a cgroup: {} is not writable (cgroups not delegated to uid {}); no resource limits, `pause` and `events --stats` unavailable",
        dir.display(),
        berth_rootless::outer_uid()
    );
    Ok(Box::new(NoCgroup {
        init: 0,
        start_time: 0,
    }))
}

/// The cgroup manager of a rootless container without a cgroup: its
/// processes are the init and the init's descendants.
pub(crate) struct NoCgroup {
    /// The container's init (0 while it is being created).
    pub(crate) init: i32,
    /// The init's start time, to tell it from a later process with its pid.
    pub(crate) start_time: u64,
}

impl NoCgroup {
    fn unavailable(&self, what: &str) -> CgError {
        CgError::Unsupported {
            resource: what.into(),
            reason: "this rootless container has no cgroup (none is delegated to the user)".into(),
        }
    }
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat, after the command
/// name in parentheses).
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Manager for NoCgroup {
    fn apply(&self, _pid: i32) -> Result<(), CgError> {
        Ok(())
    }
    fn set(&self, r: &LinuxResources) -> Result<(), CgError> {
        if limits_anything(r) {
            let dir = berth_cgroups::mountpoints()
                .ok()
                .and_then(|m| m.into_iter().next())
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
            return Err(not_delegated("linux.resources", &dir));
        }
        Ok(())
    }
    fn pids(&self) -> Result<Vec<i32>, CgError> {
        match crate::state::proc_start_time(self.init) {
            Some((t, false)) if t == self.start_time => {}
            _ => return Ok(Vec::new()),
        }
        let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|p| Some((p, ppid(p)?)))
            .collect();
        let mut out = vec![self.init];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
            i += 1;
        }
        Ok(out)
    }
    fn freeze(&self) -> Result<(), CgError> {
        Err(self.unavailable("pause"))
    }
    fn thaw(&self) -> Result<(), CgError> {
        Err(self.unavailable("resume"))
    }
    fn stats(&self) -> Result<Stats, CgError> {
        Err(self.unavailable("events --stats"))
    }
    fn oom_kills(&self) -> Result<u64, CgError> {
        Ok(0)
    }
    fn destroy(&self) -> Result<(), CgError> {
        Ok(())
    }
    fn paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn join(&self, _pid: i32) -> Result<(), CgError> {
        Ok(())
    }
    fn kill_all(&self, signal: i32) -> Result<(), CgError> {
        for p in self.pids()? {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(p, signal) };
        }
        Ok(())
    }
    fn is_frozen(&self) -> Result<bool, CgError> {
        Ok(false)
    }
    fn hierarchy(&self) -> Hierarchy {
        berth_cgroups::detect_hierarchy().unwrap_or(Hierarchy::V1)
    }
    fn create(&self) -> Result<(), CgError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_alone_limit_nothing() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}]
        }))
        .unwrap();
        assert!(!limits_anything(&r));
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"pids": {"limit": 20}})).unwrap();
        assert!(limits_anything(&r));
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 1048576}})).unwrap();
        assert!(limits_anything(&r));
    }

    #[test]
    fn the_descendants_of_the_init_are_the_containers_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let (start_time, _) = crate::state::proc_start_time(me).unwrap();
        let pids = NoCgroup {
            init: me,
            start_time,
        }
        .pids()
        .unwrap();
        assert_eq!(pids[0], me);
        assert!(pids.contains(&(child.id() as i32)));
        // Another process that took the init's pid is not the container.
        let reused = NoCgroup {
            init: me,
            start_time: start_time + 1,
        };
        assert!(reused.pids().unwrap().is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
