//! Container records (`<root>/containers/<id>/container.json`): what berth
//! keeps about a container between commands, its status, and the reaping of
//! containers whose owning process died.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_content::{FileLock, LockMode};
use berth_core::fs::{atomic_write, Durability};
use berth_snapshot::{SnapshotError, Snapshotter};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::{bundle_dir, Layout};

/// Where a container is in its life, as berth records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up (snapshot, mounts, runtime state) but not started.
    Created,
    /// Its process was started and has not been seen to exit.
    Running,
    /// Its process exited (or was reaped after its owner died).
    Exited,
}

/// What berth keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id (also the runtime's id): 32 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's full reference.
    pub image_ref: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// Key of the container's active snapshot.
    pub snapshot: String,
    /// The process's arguments.
    pub args: Vec<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Where the container is in its life.
    pub status: Status,
    /// Exit code once exited (128+signal when killed; none when unknown).
    pub exit_code: Option<i32>,
    /// Removed when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The process that owns the container, and its start time (so a
    /// reused pid is not taken for it).
    #[serde(default)]
    pub owner: (i32, u64),
    /// The runtime state root (holding the bundle too).
    #[serde(default)]
    pub state_root: PathBuf,
    /// What its monitor does when it exits (`--restart`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How many times its monitor restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// Host pid of its process while it runs (0 otherwise).
    #[serde(default)]
    pub pid: i32,
    /// When it was last started (RFC 3339).
    #[serde(default)]
    pub started: Option<String>,
    /// When it last exited, or was found dead (RFC 3339).
    #[serde(default)]
    pub finished: Option<String>,
    /// The volumes it mounts, named and anonymous.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Its stdin stays open for attach clients (`-i`).
    #[serde(default)]
    pub stdin_open: bool,
    /// Its log file is rotated past this many bytes (`--log-opt
    /// max-size`; none: [`crate::logs::DEFAULT_MAX_SIZE`]).
    #[serde(default)]
    pub log_max_size: Option<u64>,
}

/// What the monitor does when a container exits (podman's `--restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit, at most this many times (None: no limit).
    OnFailure(Option<u32>),
    /// Restart after every exit, unless stopped by the user.
    Always,
    /// As `Always` (berth has no daemon whose restart would tell them apart).
    UnlessStopped,
}

impl RestartPolicy {
    /// Whether a container that exited with `code` after `restarts`
    /// restarts, when it was not stopped on purpose.
    pub fn restarts(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<RestartPolicy> {
        let bad = || {
            Error::invalid(
                format!("restart policy {s:?}"),
                "use no, on-failure[:MAX], always or unless-stopped",
            )
        };
        Ok(match s.split_once(':') {
            None => match s {
                "" | "no" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure(None),
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => return Err(bad()),
            },
            Some(("on-failure", n)) => {
                RestartPolicy::OnFailure(Some(n.parse().map_err(|_| bad())?))
            }
            Some(_) => return Err(bad()),
        })
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure(None) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = Error;
    fn try_from(s: String) -> Result<RestartPolicy> {
        s.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

/// Prefix of a container's active snapshot key (followed by its id).
pub const SNAPSHOT_PREFIX: &str = "container-";

/// The calling process as a record's owner (pid and start time).
pub fn this_process() -> (i32, u64) {
    let pid = std::process::id() as i32;
    let start = berth_runtime::state::proc_start_time(pid).map_or(0, |(t, _)| t);
    (pid, start)
}

impl ContainerRecord {
    /// Whether the process that owns this container is gone while the
    /// record still says created or running (it was killed).
    pub fn abandoned(&self) -> bool {
        self.status != Status::Exited && self.owner_gone()
    }

    /// Whether the process that owns (or last owned) this container is
    /// gone.
    pub fn owner_gone(&self) -> bool {
        let (pid, start) = self.owner;
        pid > 0 && berth_runtime::state::proc_start_time(pid) != Some((start, false))
    }
}

/// A new container's id: 32 random hex digits.
pub(crate) fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("/dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape of a container id ([`new_id`]'s).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a valid container name (docker's rule).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Reads every container record under the data root.
pub fn list(layout: &Layout) -> Result<Vec<ContainerRecord>> {
    let dir = layout.containers();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path().join("container.json");
        let bad = |reason: String| {
            Error::invalid(
                format!("container record {}", path.display()),
                format!("{reason}; remove the container's directory if it is left over"),
            )
        };
        let rec: ContainerRecord = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        // Every path of the container is built from its id: one that is not
        // its directory's name (32 hex digits) would lead elsewhere.
        if !valid_id(&rec.id) || entry.file_name() != rec.id.as_str() {
            return Err(bad(format!(
                "its id {:?} is not its directory's name of 32 hex digits",
                rec.id
            )));
        }
        out.push(rec);
    }
    Ok(out)
}

/// Writes `record` atomically; `durable` adds the fsyncs, which a `--rm`
/// container's record does not need (it is gone after the run anyway, and a
/// crash leaves a record of a dead container, which reaping handles).
pub(crate) fn write(layout: &Layout, record: &ContainerRecord, durable: bool) -> Result<()> {
    let path = layout.container_record(&record.id);
    let data = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::invalid("container record", e.to_string()))?;
    let durability = if durable {
        Durability::Durable
    } else {
        Durability::Volatile
    };
    atomic_write(&path, &data, durability).map_err(|e| Error::io(&path, e))
}

/// Takes the lock that serialises name claims and reaping.
pub(crate) fn lock(layout: &Layout) -> Result<FileLock> {
    let dir = layout.containers();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(FileLock::acquire(
        &layout.containers_lock(),
        LockMode::Exclusive,
    )?)
}

/// Cleans up after owners that were killed (SIGKILL, OOM): kills and
/// deletes their containers from the runtime, detaches their networks, unmounts and removes their
/// bundles; `--rm` containers lose their snapshot and record, kept ones are
/// marked exited with an unknown exit code. Call with [`lock`] held.
/// Problems are returned as warnings, one per line: reaping is best effort
/// and must never stop the caller (a new run, gc).
pub(crate) fn reap(
    layout: &Layout,
    records: &[ContainerRecord],
    snapshotter: &Snapshotter,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for rec in records.iter().filter(|r| r.abandoned()) {
        let mut warn = |what: &str, e: &dyn std::fmt::Display| {
            warnings.push(format!(
                "abandoned container {} ({}): {what}: {e}",
                rec.name, rec.id
            ));
        };
        match berth_runtime::Runtime::new(&rec.state_root).load(&rec.id) {
            Ok(c) => {
                if let Err(e) = c.delete(true) {
                    warn("deleting it from the runtime", &e);
                }
            }
            // Its runtime state is gone too (a reboot, a wiped state root):
            // its cgroup still names what is left of it.
            Err(_) => {
                if let Err(e) = kill_cgroup(layout, rec) {
                    warn("killing what is left in its cgroup", &e);
                }
            }
        }
        if let Err(e) = crate::network::teardown(layout, &rec.id) {
            warn("detaching its network", &e);
        }
        let bundle = bundle_dir(&rec.state_root, &rec.id);
        let _ = berth_snapshot::unmount(&bundle.join("rootfs"));
        if let Err(e) = remove_dir(&bundle) {
            warn("removing its bundle", &e);
        }
        if rec.auto_remove {
            match snapshotter.remove(&rec.snapshot) {
                Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                Err(e) => warn("removing its snapshot", &e),
            }
            if let Err(e) = remove_dir(&layout.container(&rec.id)) {
                warn("removing its record", &e);
            }
            if let Err(e) = crate::volumes::remove_anonymous(layout, rec) {
                warn("removing its anonymous volumes", &e);
            }
        } else {
            let mut done = rec.clone();
            done.status = Status::Exited;
            done.exit_code = None;
            done.pid = 0;
            done.finished = Some(chrono::Utc::now().to_rfc3339());
            if let Err(e) = write(layout, &done, true) {
                warn("marking it exited", &e);
            }
        }
    }
    warnings
}

/// Kills every process left in `rec`'s cgroup (found from the spec it
/// was created with) and removes the cgroup: what the runtime's delete
/// does, for a container whose runtime state is lost.
pub(crate) fn kill_cgroup(layout: &Layout, rec: &ContainerRecord) -> Result<()> {
    let path = layout.container_spec(&rec.id);
    let cgroups_path = std::fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice::<oci_spec::runtime::Spec>(&d).ok())
        .and_then(|s| s.linux().clone())
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let what = || format!("cgroup of container {}", rec.id);
    let cg = berth_cgroups::manager(&cgroups_path, &rec.id)
        .map_err(|e| Error::invalid(what(), e.to_string()))?;
    if !cg.paths().iter().any(|p| p.exists()) {
        return Ok(());
    }
    let cg_err = |e: berth_cgroups::Error| Error::invalid(what(), e.to_string());
    // A killed process leaves the cgroup once it is reaped (by its
    // subreaper or init): wait for that, a little.
    for attempt in 0..200 {
        if cg.pids().map_err(cg_err)?.is_empty() {
            break;
        }
        if attempt % 20 == 0 {
            cg.kill_all(libc::SIGKILL).map_err(cg_err)?;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cg.destroy().map_err(cg_err)
}

/// Removes a directory tree; one already gone is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn restart_policies_parse_print_and_decide_as_podmans() {
        for text in [
            "no",
            "on-failure",
            "on-failure:2",
            "always",
            "unless-stopped",
        ] {
            let p: RestartPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        let err = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert!(err.to_string().contains("\"sometimes\""), "{err}");
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        let two = RestartPolicy::OnFailure(Some(2));
        assert!(two.restarts(1, 0) && two.restarts(1, 1) && !two.restarts(1, 2));
        assert!(!two.restarts(0, 0));
        assert!(RestartPolicy::Always.restarts(0, 100));
        assert!(!RestartPolicy::No.restarts(1, 0));
    }

    #[test]
    fn a_record_whose_id_is_not_its_directory_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::Engine::open(dir.path()).unwrap();
        let record = |id: &str| {
            serde_json::json!({
                "id": id, "name": format!("n{}", id.len()), "image": "i",
                "image_ref": "i", "image_id": "sha256:0", "snapshot": "s",
                "args": [], "created": "2026-01-01T00:00:00Z",
                "status": "exited", "exit_code": 0,
            })
        };
        let write = |dir: &str, id: &str| {
            let d = engine.layout().container(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("container.json"), record(id).to_string()).unwrap();
        };
        let good = "ab".repeat(16);
        write(&good, &good);
        // A short id that prefixes the good one: the ambiguity's message
        // cut every id to 12 characters.
        write("short", "ab");
        let err = engine.find_container("a").unwrap_err().to_string();
        assert!(err.contains("\"ab\"") && err.contains("short"), "{err}");
        std::fs::remove_dir_all(engine.layout().container("short")).unwrap();
        // An id leading out of the containers directory.
        write(&"cd".repeat(16), "../../etc");
        let err = engine.containers().unwrap_err().to_string();
        assert!(err.contains("../../etc"), "{err}");
    }

    #[test]
    fn status_is_recorded_in_lowercase_as_before() {
        assert_eq!(
            serde_json::to_string(&Status::Running).unwrap(),
            "\"running\""
        );
        let s: Status = serde_json::from_str("\"exited\"").unwrap();
        assert_eq!(s, Status::Exited);
    }
}
