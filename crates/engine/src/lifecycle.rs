//! A recorded container's life after `create`, shared by every caller
//! (`berth`, its monitor, a later containerd shim): finding it by name or
//! id prefix, starting it under a monitor, stop, kill, wait and remove.
//!
//! The monitor of a container holds an exclusive flock on its
//! `monitor.lock` for as long as it lives: waiting for a container means
//! waiting for that lock, and a free lock means no monitor. A container
//! stopped on purpose (stop, kill, rm -f) gets a `stopped` marker beside
//! its record, which tells the monitor not to apply the restart policy.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_content::{FileLock, LockMode};
use berth_snapshot::SnapshotError;
use oci_spec::runtime::Spec;

use crate::container::{self, ContainerRecord, Status};
use crate::error::{Error, Result};
use crate::layout::bundle_dir;
use crate::spec::STOP_SIGNAL_ANNOTATION;
use crate::Engine;

/// How often a wait with a deadline looks at the monitor's lock again.
const POLL: Duration = Duration::from_millis(5);

impl Engine {
    /// The container named `query`: its exact name or id, or a unique
    /// prefix of its id. Containers whose monitor died are reaped first,
    /// so the record returned never says running for a dead container.
    pub fn find_container(&self, query: &str) -> Result<ContainerRecord> {
        self.reap_abandoned()?;
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == query || c.id == query) {
            return Ok(c.clone());
        }
        let matches: Vec<_> = if query.is_empty() || !query.bytes().all(|b| b.is_ascii_hexdigit()) {
            Vec::new()
        } else {
            all.iter().filter(|c| c.id.starts_with(query)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoSuchContainer {
                query: query.to_string(),
            }),
            many => Err(Error::Ambiguous {
                query: query.to_string(),
                ids: many
                    .iter()
                    .map(|c| &c.id[..12])
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Reads container `id`'s record again.
    pub fn container_record(&self, id: &str) -> Result<ContainerRecord> {
        let path = self.layout().container_record(id);
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoSuchContainer {
                query: id.to_string(),
            },
            _ => Error::io(&path, e),
        })?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::invalid(
                format!("container record {}", path.display()),
                e.to_string(),
            )
        })
    }

    /// Writes `record`; `durable` adds the fsyncs (an exit is recorded
    /// durably; "running" need not be: after a crash reaping corrects it).
    pub fn save_container(&self, record: &ContainerRecord, durable: bool) -> Result<()> {
        container::write(self.layout(), record, durable)
    }

    /// The runtime spec container `id` runs with (kept by
    /// [`crate::NewContainer::detach`]).
    pub fn container_spec(&self, id: &str) -> Result<Spec> {
        let path = self.layout().container_spec(id);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::invalid(format!("container spec {}", path.display()), e.to_string())
        })
    }

    /// Whether container `id`'s monitor is alive.
    pub fn monitor_alive(&self, id: &str) -> bool {
        let path = self.layout().monitor_lock(id);
        path.exists() && matches!(FileLock::try_acquire(&path, LockMode::Shared), Ok(None))
    }

    /// Waits until container `id` has no monitor any more (it exited and,
    /// under its restart policy, will not run again); at most `timeout`
    /// when given. Returns whether the monitor is gone.
    pub fn wait_monitor(&self, id: &str, timeout: Option<Duration>) -> Result<bool> {
        let path = self.layout().monitor_lock(id);
        if !path.exists() {
            return Ok(true);
        }
        // No timeout, or one past what an Instant holds (`stop -t
        // 18446744073709551615`): wait for as long as it takes.
        let Some((timeout, deadline)) =
            timeout.and_then(|t| Some((t, Instant::now().checked_add(t)?)))
        else {
            FileLock::acquire(&path, LockMode::Shared)?;
            return Ok(true);
        };
        // The monitor's exit wakes this wait through a pidfd; the lock is
        // looked at again after it (a new monitor may have the lock).
        if let Some(pidfd) = self.monitor_pidfd(id) {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            if let Ok(0) = poll(&mut fds, timeout) {
                return Ok(false);
            }
        }
        loop {
            if FileLock::try_acquire(&path, LockMode::Shared)?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// A pidfd of container `id`'s monitor (its record's owner, checked by
    /// its start time so a reused pid is not taken for it).
    fn monitor_pidfd(&self, id: &str) -> Option<OwnedFd> {
        let (pid, start) = self.container_record(id).ok()?.owner;
        let fd = berth_runtime::pidfd_open(pid).filter(|_| pid > 0)?;
        (berth_runtime::state::proc_start_time(pid) == Some((start, false))).then_some(fd)
    }

    /// Mounts `record`'s snapshot at its bundle's rootfs unless it is
    /// mounted already, and attaches its network unless it is attached;
    /// returns the bundle.
    pub fn mount_rootfs(&self, record: &ContainerRecord) -> Result<PathBuf> {
        let bundle = bundle_dir(&record.state_root, &record.id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| Error::io(&rootfs, e))?;
        if !is_mount_point(&rootfs)? {
            let mounts = self.snapshotter()?.mounts(&record.snapshot)?;
            berth_snapshot::mount_all(&mounts, &rootfs)?;
        }
        crate::network::attach(self.layout(), &record.id)?;
        Ok(bundle)
    }

    /// Deletes `record`'s container from the runtime (killing what is
    /// left of it), detaches its network, unmounts its rootfs and removes
    /// its bundle.
    pub fn release_rootfs(&self, record: &ContainerRecord) -> Result<()> {
        match berth_runtime::Runtime::new(&record.state_root).load(&record.id) {
            Ok(c) => c.delete(true)?,
            // Deleted already, or its state was lost (a reboot).
            Err(_) => container::kill_cgroup(self.layout(), record)?,
        }
        crate::network::teardown(self.layout(), &record.id)?;
        let bundle = bundle_dir(&record.state_root, &record.id);
        let rootfs = bundle.join("rootfs");
        if rootfs.exists() && is_mount_point(&rootfs)? {
            berth_snapshot::unmount(&rootfs)?;
        }
        container::remove_dir(&bundle)
    }

    /// Starts `record`'s container under a new monitor (`monitor` is the
    /// monitor program, `berth-monitor`): it detaches from this process's
    /// session, creates and starts the container, and this call returns
    /// once the container runs, or with the monitor's error.
    pub fn start_detached(&self, record: &ContainerRecord, monitor: &Path) -> Result<()> {
        self.spawn_monitor(record, monitor, None)
    }

    /// As [`Engine::start_detached`], with an attach client connected
    /// before the container starts (`berth start -a`: no output is missed);
    /// returns its end, which speaks [`crate::attach`]'s protocol.
    pub fn start_attached(&self, record: &ContainerRecord, monitor: &Path) -> Result<UnixStream> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::io("an attach socket pair", e))?;
        self.spawn_monitor(record, monitor, Some(theirs.into()))?;
        Ok(ours)
    }

    fn spawn_monitor(
        &self,
        record: &ContainerRecord,
        monitor: &Path,
        client: Option<OwnedFd>,
    ) -> Result<()> {
        let layout = self.layout();
        let _ = std::fs::remove_file(layout.stop_marker(&record.id));
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("creating the monitor's ready pipe", e))?;
        let log = layout.monitor_log(&record.id);
        let errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io(&log, e))?;
        let mut cmd = Command::new(monitor);
        cmd.arg("--root")
            .arg(layout.root())
            .arg("--ready-fd")
            .arg("3");
        if client.is_some() {
            cmd.arg("--client-fd").arg("4");
        }
        cmd.arg(&record.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors);
        let fd = ready_w.as_raw_fd();
        let client_fd = client.as_ref().map_or(-1, |c| c.as_raw_fd());
        // SAFETY: between fork and exec the closure only calls fcntl, dup2
        // and setsid, all async-signal-safe, and touches no Rust state.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first (either may be 3 or 4 already), then
                // down to 3 and 4 without close-on-exec.
                let high = |fd: i32| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                let (ready, client) = (high(fd), if client_fd >= 0 { high(client_fd) } else { -1 });
                if ready < 0
                    || libc::dup2(ready, 3) < 0
                    || (client_fd >= 0 && (client < 0 || libc::dup2(client, 4) < 0))
                    || libc::setsid() < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The monitor forks once more and its first process exits at once,
        // so it is nobody's child here.
        let status = cmd
            .status()
            .map_err(|e| Error::io(format!("starting the monitor {}", monitor.display()), e))?;
        drop(ready_w);
        drop(client);
        if !status.success() {
            return Err(self.monitor_failed(record, &log, String::new()));
        }
        let mut answer = String::new();
        std::fs::File::from(ready_r)
            .read_to_string(&mut answer)
            .map_err(|e| Error::io("the monitor's ready pipe", e))?;
        match answer.strip_prefix("ok") {
            Some(_) => Ok(()),
            None => Err(self.monitor_failed(record, &log, answer)),
        }
    }

    fn monitor_failed(&self, record: &ContainerRecord, log: &Path, answer: String) -> Error {
        let reason = if answer.trim().is_empty() {
            format!(
                "its monitor exited before the container started (see {})",
                log.display()
            )
        } else {
            answer.trim().to_string()
        };
        Error::State {
            name: record.name.clone(),
            reason,
        }
    }

    /// Stops `record`'s container: sends the image's StopSignal (SIGTERM
    /// when it has none) to its process, SIGKILL to all of it after
    /// `timeout`, and waits for its monitor to record the exit. The
    /// restart policy does not restart it. A stopped container is left
    /// alone.
    pub fn stop(&self, record: &ContainerRecord, timeout: Duration) -> Result<()> {
        if !self.monitor_alive(&record.id) {
            return Ok(());
        }
        self.mark_stopped(record)?;
        let signal = self
            .container_spec(&record.id)
            .ok()
            .and_then(|s| s.annotations().clone())
            .and_then(|a| a.get(STOP_SIGNAL_ANNOTATION).cloned())
            .map(|s| berth_runtime::signal::parse_signal(&s))
            .transpose()?
            .unwrap_or(libc::SIGTERM);
        if !timeout.is_zero() {
            self.signal(record, signal, false)?;
            if self.wait_monitor(&record.id, Some(timeout))? {
                return Ok(());
            }
        }
        self.signal(record, libc::SIGKILL, true)?;
        self.wait_monitor(&record.id, None)?;
        Ok(())
    }

    /// Sends `signal` to `record`'s running container (`berth kill`); the
    /// restart policy does not restart it if it exits.
    pub fn kill(&self, record: &ContainerRecord, signal: i32) -> Result<()> {
        if !self.monitor_alive(&record.id) {
            return Err(Error::State {
                name: record.name.clone(),
                reason: "it is not running".into(),
            });
        }
        self.mark_stopped(record)?;
        self.signal(record, signal, false)
    }

    fn mark_stopped(&self, record: &ContainerRecord) -> Result<()> {
        let marker = self.layout().stop_marker(&record.id);
        std::fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))
    }

    fn signal(&self, record: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        match berth_runtime::Runtime::new(&record.state_root).load(&record.id) {
            Ok(c) => match c.kill(signal, all) {
                Ok(()) => Ok(()),
                // It exited meanwhile: what the signal was for.
                Err(
                    berth_runtime::Error::BadState(_) | berth_runtime::Error::NotRunning { .. },
                ) => Ok(()),
                Err(e) => Err(e.into()),
            },
            // Between two runs (restarting) or gone: nothing to signal.
            Err(_) => Ok(()),
        }
    }

    /// Removes `record`'s container: its runtime state, rootfs mount,
    /// bundle, snapshot and directory (log, spec), freeing its name; for a
    /// `--rm` container its anonymous volumes too. A running one is
    /// refused unless `force`, which kills it first.
    pub fn remove_container(&self, record: &ContainerRecord, force: bool) -> Result<()> {
        if self.monitor_alive(&record.id) {
            if !force {
                return Err(Error::State {
                    name: record.name.clone(),
                    reason: "cannot remove it as it is running (stop it first, or use rm -f)"
                        .into(),
                });
            }
            self.stop(record, Duration::ZERO)?;
        }
        let _names = container::lock(self.layout())?;
        self.release_rootfs(record)?;
        match self.snapshotter()?.remove(&record.snapshot) {
            Ok(()) | Err(SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        container::remove_dir(&self.layout().container(&record.id))?;
        if record.auto_remove {
            self.remove_anonymous_volumes(record)?;
        }
        Ok(())
    }

    /// Removes every container that is not running, with its anonymous
    /// volumes; returns their ids.
    pub fn prune_containers(&self) -> Result<Vec<String>> {
        self.reap_abandoned()?;
        let mut removed = Vec::new();
        for rec in self.containers()? {
            if rec.status != Status::Running && !self.monitor_alive(&rec.id) {
                self.remove_container(&rec, false)?;
                self.remove_anonymous_volumes(&rec)?;
                removed.push(rec.id);
            }
        }
        Ok(removed)
    }
}

/// Whether `path` is a mount point in this mount namespace
/// (/proc/self/mountinfo, whose octal escapes are decoded).
fn is_mount_point(path: &Path) -> Result<bool> {
    let info = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(info).map_err(|e| Error::io(info, e))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| berth_core::mountinfo::unescape(p) == path))
}
