//! What the runtime remembers about a container (`<root>/<id>/state.json`)
//! and the state JSON it prints (runc's shape).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_core::fs::{atomic_write, Durability};
use chrono::{DateTime, Utc};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result};

/// The life-cycle status of a container, as runc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is still setting the container up.
    Creating,
    /// The init is set up and waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// The container's cgroup is frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The record kept in `<root>/<id>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the init (later: the user process).
    pub init_pid: i32,
    /// The init's start time (field 22 of /proc/<pid>/stat), to tell it from
    /// a later process that reuses the pid.
    pub init_start_time: u64,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// Absolute root filesystem.
    pub rootfs: PathBuf,
    /// When `create` finished.
    pub created: DateTime<Utc>,
    /// The cgroupsPath the container was created with.
    pub cgroups_path: String,
    /// The container's cgroup directory in each hierarchy, resolved once by
    /// `create`: later commands reopen exactly these, whatever cgroup their
    /// caller runs in (a relative or empty cgroupsPath depends on it).
    /// Empty in states written before it was recorded.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// A rootless container without a cgroup (none was delegated to the
    /// user): its processes are the init's descendants.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cgroup: bool,
    /// The whole runtime spec (hooks for delete, namespaces for exec, ...).
    pub config: Spec,
    /// While `create` runs: the process running it and its start time. The
    /// container is `creating` while that process lives, `stopped` if it
    /// died before finishing. None once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<(i32, u64)>,
    /// Without a mount namespace of its own: the mounts `create` made under
    /// the rootfs in the runtime's namespace, which `delete` removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_mounts: Vec<PathBuf>,
}

impl Record {
    /// Writes the record to `state.json` in the state directory `dir`
    /// (temp file and rename; with `durable`, fsynced first).
    pub(crate) fn save(&self, dir: &Path, durable: bool) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| {
            crate::Error::Init(format!("cannot encode the state of {}: {e}", self.id))
        })?;
        let path = dir.join(STATE_FILE);
        let durability = if durable {
            Durability::Durable
        } else {
            Durability::Volatile
        };
        atomic_write(&path, &data, durability)
            .map_err(io_err(format!("cannot write {}", path.display())))
    }
}

/// The file holding a container's [`Record`] in its state directory.
pub(crate) const STATE_FILE: &str = "state.json";

/// The container state printed by `state` and `list --format json`: runc's
/// `containerState` (the OCI state plus `rootfs`, `created`, `owner`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// The OCI version of the config.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Init pid, 0 once stopped.
    pub pid: i32,
    /// created | running | paused | stopped.
    pub status: Status,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// The config's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Owner of the container (user name; empty in `state`, as runc).
    pub owner: String,
}

/// Formats like Go's time.RFC3339Nano (trailing zeros of the fraction dropped).
pub fn rfc3339_nano(t: &DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((head, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{head}Z")
            } else {
                format!("{head}.{digits}Z")
            }
        }
        None => s,
    }
}

/// The start time of `pid` and whether it is a zombie, from /proc/<pid>/stat.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// Reads `state.json` from a container's state directory.
pub fn read_record(dir: &Path) -> Result<Record> {
    let path = dir.join(STATE_FILE);
    let data = std::fs::read(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
    crate::spec::parse_json(&path, &data)
}

/// The user name of `uid` from the host's /etc/passwd (runc's `owner`).
pub fn user_name(uid: u32) -> String {
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let mut f = line.split(':');
            let (name, _, id) = (f.next(), f.next(), f.next());
            if id.and_then(|i| i.parse::<u32>().ok()) == Some(uid) {
                if let Some(name) = name {
                    return name.to_string();
                }
            }
        }
    }
    format!("#{uid}")
}

/// Writes `pid` to the pid file `path` (relative to the current
/// directory), atomically.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(io_err("cannot read the current directory"))?
            .join(path)
    };
    atomic_write(&path, pid.to_string().as_bytes(), Durability::Durable)
        .map_err(io_err(format!("cannot write {}", path.display())))
}

/// The config's annotations, sorted.
pub(crate) fn annotations(spec: &Spec) -> BTreeMap<String, String> {
    spec.annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_time_drops_trailing_zeros_like_go() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.120000000Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_nano(&t), "2024-01-02T03:04:05.12Z");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_nano(&t), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn own_start_time_is_readable() {
        let (t, zombie) = proc_start_time(std::process::id() as i32).expect("own stat");
        assert!(t > 0);
        assert!(!zombie);
        assert!(proc_start_time(0).is_none());
    }
}
