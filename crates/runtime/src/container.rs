//! The container life cycle over a state root: [`Runtime`] loads and lists
//! containers; [`Container`] reports its state and status, starts, signals,
//! pauses, resumes, updates and deletes. Creating a container is in
//! `create.rs` (parent) and `init.rs` (the container's side), `exec` in
//! `exec.rs`.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{io_err, sys_err, Error, Result};
use crate::hooks::{run_hooks_warn, HookStage};
use crate::message::Message;
use crate::state::{self, annotations, Record, State, Status, STATE_FILE};

/// The socket the init waits on for `start`; it exists while the container
/// is created.
pub(crate) const EXEC_SOCK: &str = "exec.sock";

/// A state root (runc's `--root`): the directory holding one state
/// directory per container.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub(crate) root: PathBuf,
}

/// One container known to a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Container {
    pub(crate) dir: PathBuf,
    pub(crate) record: Record,
}

/// Whether `id` is a container id runc accepts.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
}

/// Binds a unix socket, going through /proc/self/fd for paths longer than
/// sun_path allows.
pub(crate) fn bind_unix(dir: &Path, name: &str) -> Result<UnixListener> {
    let path = dir.join(name);
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(&path)
            .map_err(io_err(format!("cannot listen on {}", path.display())));
    }
    let d = std::fs::File::open(dir).map_err(io_err(format!("cannot open {}", dir.display())))?;
    UnixListener::bind(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
        .map_err(io_err(format!("cannot listen on {}", path.display())))
}

pub(crate) fn connect_unix(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let path = dir.join(name);
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(&path);
    }
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

/// Waits until `pid` (started at `start_time`) has exited.
pub(crate) fn wait_gone(pid: i32, start_time: u64, timeout: Duration) -> Result<()> {
    let pidfd = crate::sys::pidfd_open(pid);
    if let Some(fd) = &pidfd {
        if state::proc_start_time(pid).is_some_and(|(t, _)| t == start_time) {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let _ = nix::poll::poll(
                &mut fds,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            );
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        match state::proc_start_time(pid) {
            Some((t, zombie)) if t == start_time && !zombie => {}
            _ => return Ok(()),
        }
        if Instant::now() > deadline {
            return Err(Error::Init(format!(
                "process {pid} did not exit within {timeout:?} of SIGKILL"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Runtime {
    /// A runtime whose state lives under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads the container `id`.
    pub fn load(&self, id: &str) -> Result<Container> {
        if !valid_id(id) {
            return Err(Error::NotExist { id: id.to_string() });
        }
        let dir = self.root.join(id);
        if !dir.join(STATE_FILE).exists() {
            return Err(Error::NotExist { id: id.to_string() });
        }
        let record = state::read_record(&dir)?;
        Ok(Container { dir, record })
    }

    /// Every container under the root, sorted by id. Directories without a
    /// state file (a create that crashed) are skipped.
    pub fn list(&self) -> Result<Vec<Container>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot read {}", self.root.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str() {
                if let Ok(c) = self.load(id) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(out)
    }
}

/// `spec` with `linux.resources` updated by `update`: every field set in
/// `update` replaces the saved one (objects merged field by field, lists
/// replaced whole), fields it leaves unset keep their saved value.
fn merge_resources(spec: &Spec, update: &oci_spec::runtime::LinuxResources) -> Result<Spec> {
    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (_, serde_json::Value::Null) => {}
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let encode = |e: serde_json::Error| Error::Init(format!("cannot record the update: {e}"));
    let mut config = serde_json::to_value(spec).map_err(encode)?;
    merge(
        &mut config["linux"]["resources"],
        serde_json::to_value(update).map_err(encode)?,
    );
    serde_json::from_value(config).map_err(encode)
}

/// `update` resources completed from the saved ones where the cgroup files
/// need both halves of a pair, as runc's update (which starts from the saved
/// config) writes them: cgroup v2 keeps quota and period in one file
/// (cpu.max, so a period alone would reset the quota to "max") and derives
/// memory.swap.max from memory+swap minus the memory limit (so a limit
/// alone would change memory+swap, and swap alone could not be computed).
fn with_saved_pairs(
    update: &oci_spec::runtime::LinuxResources,
    saved: Option<&oci_spec::runtime::LinuxResources>,
) -> oci_spec::runtime::LinuxResources {
    let mut out = update.clone();
    if let (Some(mem), Some(old)) = (out.memory_mut(), saved.and_then(|s| s.memory().as_ref())) {
        match (mem.limit(), mem.swap()) {
            (Some(_), None) => {
                mem.set_swap(old.swap());
            }
            (None, Some(_)) => {
                mem.set_limit(old.limit());
            }
            _ => {}
        }
    }
    if let (Some(cpu), Some(old)) = (out.cpu_mut(), saved.and_then(|s| s.cpu().as_ref())) {
        match (cpu.quota(), cpu.period()) {
            (Some(_), None) => {
                cpu.set_period(old.period());
            }
            (None, Some(_)) => {
                cpu.set_quota(old.quota());
            }
            _ => {}
        }
    }
    out
}

impl Container {
    /// A container of the state directory `dir` with the record `record`.
    pub(crate) fn new(dir: PathBuf, record: Record) -> Container {
        Container { dir, record }
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The init's host pid (also after it exited).
    pub fn pid(&self) -> i32 {
        self.record.init_pid
    }

    /// The saved record (config, bundle, cgroups path, ...).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The state directory under the root.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn alive(&self) -> bool {
        matches!(state::proc_start_time(self.record.init_pid),
            Some((t, zombie)) if t == self.record.init_start_time && !zombie)
    }

    /// The container's cgroup: the directories `create` recorded (so a
    /// relative cgroupsPath is not re-resolved against this caller's own
    /// cgroup), or for an older state the cgroupsPath resolved again.
    pub(crate) fn cgroup(&self) -> Result<Box<dyn berth_cgroups::Manager>> {
        if self.record.no_cgroup {
            return Ok(Box::new(crate::rootless::NoCgroup {
                init: self.record.init_pid,
                start_time: self.record.init_start_time,
            }));
        }
        if !self.record.cgroup_paths.is_empty() {
            return Ok(berth_cgroups::manager_from_paths(
                &self.record.cgroup_paths,
            )?);
        }
        Ok(berth_cgroups::manager(
            &self.record.cgroups_path,
            &self.record.id,
        )?)
    }

    /// The current status, derived from the process running `create` (while
    /// it has not finished), the init process, the start socket and the
    /// freezer.
    pub fn status(&self) -> Status {
        if let Some((pid, start)) = self.record.creator {
            return match state::proc_start_time(pid) {
                Some((t, false)) if t == start => Status::Creating,
                _ => Status::Stopped,
            };
        }
        if !self.alive() {
            return Status::Stopped;
        }
        if self.dir.join(EXEC_SOCK).exists() {
            return Status::Created;
        }
        if self
            .cgroup()
            .and_then(|c| Ok(c.is_frozen()?))
            .unwrap_or(false)
        {
            return Status::Paused;
        }
        Status::Running
    }

    /// The state as `state` prints it (runc's shape; owner empty).
    pub fn state(&self) -> State {
        let status = self.status();
        State {
            oci_version: self.record.config.version().clone(),
            id: self.record.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.record.init_pid
            },
            status,
            bundle: self.record.bundle.clone(),
            rootfs: self.record.rootfs.clone(),
            created: state::rfc3339_nano(&self.record.created),
            annotations: annotations(&self.record.config),
            owner: String::new(),
        }
    }

    /// The owner's user name (of the state directory), for `list`.
    pub fn owner(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir)
            .map(|m| state::user_name(m.uid()))
            .unwrap_or_default()
    }

    /// The state handed to hooks: `status` as the stage implies, and the
    /// init's pid even if it has already exited.
    fn state_json(&self, status: &str) -> Vec<u8> {
        let mut v = serde_json::to_value(self.state()).unwrap_or_default();
        v["status"] = status.into();
        v["pid"] = self.record.init_pid.into();
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Releases the init so it execs the user process, then runs the
    /// poststart hooks (failures are warnings).
    pub fn start(&self) -> Result<()> {
        match self.status() {
            Status::Created => {}
            Status::Creating => return Err(self.still_creating("start")),
            Status::Stopped => {
                return Err(Error::BadState(
                    "cannot start a container that has stopped".into(),
                ))
            }
            _ => {
                return Err(Error::BadState(
                    "cannot start an already running container".into(),
                ))
            }
        }
        let mut conn = connect_unix(&self.dir, EXEC_SOCK).map_err(|e| {
            Error::Init(format!(
                "cannot reach the container init (it may have died): {e}"
            ))
        })?;
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        let _ = std::fs::remove_file(self.dir.join(EXEC_SOCK));
        let reply = crate::message::decode_stream(&reply)
            .map_err(|e| Error::Init(format!("the container init's answer to start: {e}")))?;
        match reply.as_slice() {
            [Message::Exec] => {}
            [Message::Exec, Message::ExecFailed(errno)] => {
                let process = self.record.config.process().clone().unwrap_or_default();
                return Err(Error::Init(crate::trampoline::failure(*errno, &process)));
            }
            [Message::Exec, Message::Error(msg)] | [Message::Error(msg)] => {
                return Err(Error::Init(msg.clone()))
            }
            [] => {
                return Err(Error::Init(
                    "the container init exited before it could start the process".into(),
                ))
            }
            other => {
                let names: Vec<String> = other.iter().map(Message::to_string).collect();
                return Err(Error::Init(format!(
                    "the container init's answer to start: unexpected messages {}",
                    names.join(", ")
                )));
            }
        }
        run_hooks_warn(&self.record.config, HookStage::Poststart, || {
            self.state_json("running")
        });
        Ok(())
    }

    /// Sends `signal` to the init, or with `all` to every process of the
    /// container's cgroup.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        match self.status() {
            Status::Stopped => {
                return Err(Error::NotRunning {
                    id: self.record.id.clone(),
                })
            }
            Status::Creating => return Err(self.still_creating("signal")),
            _ => {}
        }
        if all {
            return Ok(self.cgroup()?.kill_all(signal)?);
        }
        self.signal_init(signal)
    }

    /// The error for an operation on a container `create` has not finished.
    fn still_creating(&self, what: &str) -> Error {
        Error::BadState(format!(
            "cannot {what} container {}: it is still being created",
            self.record.id
        ))
    }

    fn signal_init(&self, signal: i32) -> Result<()> {
        let pid = self.record.init_pid;
        if pid <= 0 {
            // Never kill(0, ..): that would signal our own process group.
            return Err(Error::NotRunning {
                id: self.record.id.clone(),
            });
        }
        let ctx = || format!("cannot send signal {signal} to the container init (pid {pid})");
        if let Some(fd) = crate::sys::pidfd_open(pid) {
            if !self.alive() {
                return Err(Error::NotRunning {
                    id: self.record.id.clone(),
                });
            }
            return crate::sys::pidfd_send_signal(&fd, signal).map_err(sys_err(ctx()));
        }
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(sys_err(ctx()))?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(sys_err(ctx()))
    }

    /// Freezes every process of the container.
    pub fn pause(&self) -> Result<()> {
        match self.status() {
            Status::Running => Ok(self.cgroup()?.freeze()?),
            Status::Stopped => Err(Error::NotRunning {
                id: self.record.id.clone(),
            }),
            s => Err(Error::BadState(format!(
                "cannot pause a container that is {s}"
            ))),
        }
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        match self.status() {
            Status::Paused => Ok(self.cgroup()?.thaw()?),
            _ => Err(Error::BadState("container not paused".into())),
        }
    }

    /// Writes new resource limits to the container's cgroup (`update`) and,
    /// as runc does, records them in the saved config (state.json): the
    /// fields given replace the saved ones, the others are kept.
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        match self.status() {
            Status::Stopped => {
                return Err(Error::NotRunning {
                    id: self.record.id.clone(),
                })
            }
            Status::Creating => return Err(self.still_creating("update")),
            _ => {}
        }
        let saved = self
            .record
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref());
        self.cgroup()?.set(&with_saved_pairs(resources, saved))?;
        let mut record = self.record.clone();
        record.config = merge_resources(&record.config, resources)?;
        record.save(&self.dir, true)
    }

    /// Usage counters of the container's cgroup (`events --stats`).
    pub fn stats(&self) -> Result<berth_cgroups::Stats> {
        if matches!(self.status(), Status::Stopped | Status::Creating) {
            return Err(Error::NotRunning {
                id: self.record.id.clone(),
            });
        }
        Ok(self.cgroup()?.stats()?)
    }

    /// How many of the container's processes the OOM killer has killed.
    pub fn oom_kills(&self) -> Result<u64> {
        Ok(self.cgroup()?.oom_kills()?)
    }

    /// Host pids of every process in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup()?.pids()?)
    }

    /// Deletes the container: a created one is killed; a running or paused
    /// one only with `force`; one still being created never (the process
    /// running `create` cleans up if it fails). Removes the cgroup, runs
    /// poststop hooks (failures are warnings) and removes the state
    /// directory.
    pub fn delete(&self, force: bool) -> Result<()> {
        let status = self.status();
        match status {
            Status::Creating => return Err(self.still_creating("delete")),
            // A `create` that died half-way: what it started is killed.
            Status::Stopped if self.record.creator.is_some() => self.kill_abandoned()?,
            Status::Stopped => {}
            Status::Created => self.kill_and_wait()?,
            Status::Running | Status::Paused if force => self.kill_and_wait()?,
            s => {
                return Err(Error::BadState(format!(
                    "cannot delete container {} that is not stopped: {s}",
                    self.record.id
                )))
            }
        }
        let cg = self.cgroup()?;
        cg.destroy()?;
        crate::host_mounts::unmount_all(&self.record.host_mounts, &self.record.rootfs);
        run_hooks_warn(&self.record.config, HookStage::Poststop, || {
            self.state_json("stopped")
        });
        std::fs::remove_dir_all(&self.dir)
            .map_err(io_err(format!("cannot remove {}", self.dir.display())))
    }

    fn kill_and_wait(&self) -> Result<()> {
        let cg = self.cgroup()?;
        if self.status() == Status::Paused {
            let _ = cg.thaw();
        }
        let _ = self.signal_init(libc::SIGKILL);
        if !crate::spec::has_namespace(&self.record.config, LinuxNamespaceType::Pid) {
            let _ = cg.kill_all(libc::SIGKILL);
        }
        wait_gone(
            self.record.init_pid,
            self.record.init_start_time,
            Duration::from_secs(10),
        )
    }

    /// Kills whatever a `create` that died half-way left in the cgroup and
    /// waits until the cgroup is empty.
    fn kill_abandoned(&self) -> Result<()> {
        let cg = self.cgroup()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = cg.pids().unwrap_or_default();
            if pids.is_empty() {
                return Ok(());
            }
            let _ = cg.kill_all(libc::SIGKILL);
            if Instant::now() > deadline {
                return Err(Error::Init(format!(
                    "processes {pids:?} of the abandoned container {} did not exit within 10s of SIGKILL",
                    self.record.id
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn destroy_after_failure(&self, cg: &dyn berth_cgroups::Manager) -> Result<()> {
        let _ = self.kill_and_wait();
        let _ = cg.destroy();
        crate::host_mounts::unmount_all(&self.record.host_mounts, &self.record.rootfs);
        std::fs::remove_dir_all(&self.dir).map_err(io_err("cannot remove the state directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(creator: Option<(i32, u64)>) -> Record {
        Record {
            host_mounts: Vec::new(),
            id: "c1".into(),
            init_pid: 0,
            init_start_time: 0,
            bundle: PathBuf::from("/bundle"),
            rootfs: PathBuf::from("/bundle/rootfs"),
            created: chrono::Utc::now(),
            cgroups_path: String::new(),
            cgroup_paths: Vec::new(),
            no_cgroup: false,
            config: serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap(),
            creator,
        }
    }

    #[test]
    fn a_container_is_creating_while_the_creating_process_lives() {
        let me = std::process::id() as i32;
        let (start, _) = state::proc_start_time(me).unwrap();
        let c = Container::new(PathBuf::from("/nonexistent"), record(Some((me, start))));
        assert_eq!(c.status(), Status::Creating);
        let st = serde_json::to_value(c.state()).unwrap();
        assert_eq!(st["status"], "creating");
        for err in [
            c.start().unwrap_err(),
            c.kill(libc::SIGKILL, false).unwrap_err(),
            c.delete(true).unwrap_err(),
        ] {
            assert!(err.to_string().contains("still being created"), "{err}");
        }
        // A creator that died (or a reused pid) leaves a stopped container.
        let c = Container::new(PathBuf::from("/nonexistent"), record(Some((me, start + 1))));
        assert_eq!(c.status(), Status::Stopped);
    }

    #[test]
    fn a_record_without_a_creator_reads_as_created() {
        let mut json = serde_json::to_value(record(None)).unwrap();
        assert!(json.get("creator").is_none(), "{json}");
        json.as_object_mut().unwrap().remove("creator");
        let r: Record = serde_json::from_value(json).unwrap();
        assert_eq!(r.creator, None);
    }

    #[test]
    fn an_update_gets_the_other_half_of_a_pair_from_the_saved_config() {
        let saved: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 100, "swap": 300},
            "cpu": {"quota": 5000, "period": 10000, "shares": 2}
        }))
        .unwrap();
        let update = |json| -> oci_spec::runtime::LinuxResources {
            let u = serde_json::from_value(json).unwrap();
            with_saved_pairs(&u, Some(&saved))
        };
        let r = update(serde_json::json!({"memory": {"limit": 200}, "cpu": {"period": 20000}}));
        let (mem, cpu) = (r.memory().unwrap(), r.cpu().as_ref().unwrap());
        assert_eq!((mem.limit(), mem.swap()), (Some(200), Some(300)));
        assert_eq!(
            (cpu.quota(), cpu.period(), cpu.shares()),
            (Some(5000), Some(20000), None)
        );
        let r = update(serde_json::json!({"memory": {"swap": 400}, "cpu": {"quota": 1000}}));
        let (mem, cpu) = (r.memory().unwrap(), r.cpu().as_ref().unwrap());
        assert_eq!((mem.limit(), mem.swap()), (Some(100), Some(400)));
        assert_eq!((cpu.quota(), cpu.period()), (Some(1000), Some(10000)));
        let r = update(serde_json::json!({"pids": {"limit": 3}}));
        assert!(r.memory().is_none() && r.cpu().is_none());
        let alone: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"cpu": {"period": 20000}})).unwrap();
        assert_eq!(with_saved_pairs(&alone, None), alone);
    }

    #[test]
    fn an_update_replaces_the_fields_it_sets_and_keeps_the_others() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {
                "memory": {"limit": 1000000, "reservation": 500000},
                "pids": {"limit": 10},
                "devices": [{"allow": false, "access": "rwm"}]
            }}
        }))
        .unwrap();
        let update: oci_spec::runtime::LinuxResources = serde_json::from_value(
            serde_json::json!({"memory": {"limit": 2000000}, "cpu": {"shares": 512}}),
        )
        .unwrap();
        let merged = merge_resources(&spec, &update).unwrap();
        let r = merged
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap();
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(2000000));
        assert_eq!(mem.reservation(), Some(500000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.devices().as_ref().unwrap().len(), 1);
        assert_eq!(merged.root().as_ref().unwrap().path(), Path::new("rootfs"));
    }
}
