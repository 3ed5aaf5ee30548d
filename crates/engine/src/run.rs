//! From an image to a running container: create (unpack, claim the name,
//! record, snapshot, mount, runtime spec), start in the foreground, and the
//! teardown that `--rm` or a failure asks for.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use berth_image::PlatformSpec;
use std::os::fd::{AsFd, OwnedFd};

use berth_core::fs::{atomic_write, Durability};

use berth_runtime::foreground::copy_window_size;
use berth_runtime::{CreateOptions, Foreground, Runtime};
use berth_snapshot::{SnapshotError, Snapshotter};
use oci_spec::runtime::Spec;

use crate::container::{self, ContainerRecord, RestartPolicy, Status, SNAPSHOT_PREFIX};
use crate::error::{Error, Result};
use crate::layout::bundle_dir;
use crate::spec::{spec_from_config, Overrides};
use crate::volumes::MountRequest;
use crate::Engine;

/// What a new container is made of besides its image.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// Unique name (default: the first 12 digits of the id).
    pub name: Option<String>,
    /// The process, mounts and hostname asked for on top of the image's
    /// config. `hostname` defaults to the first 12 digits of the id; the
    /// engine sets `mounts` (from `mounts` below and the image's Volumes).
    pub overrides: Overrides,
    /// Volumes, binds and tmpfs mounts (`-v`, `--mount`, `--tmpfs`).
    pub mounts: Vec<MountRequest>,
    /// Remove the container (record, snapshot) when it exits.
    pub auto_remove: bool,
    /// The runtime's state root (default: the data root's `run/`).
    pub state_root: Option<PathBuf>,
    /// What the monitor of a detached container does when it exits.
    pub restart: RestartPolicy,
    /// The container's network (None: a namespace of its own with only
    /// `lo`, and no files written; see [`crate::network`]).
    pub network: Option<crate::NetworkOptions>,
    /// A detached container's stdin stays open for attach clients (`-i`).
    pub interactive: bool,
    /// A detached container's log is rotated past this many bytes.
    pub log_max_size: Option<u64>,
}

/// How a foreground container is attached to this process's stdio.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The container reads this process's stdin (else /dev/null).
    pub interactive: bool,
    /// After SIGINT/SIGTERM is forwarded, SIGKILL this much later.
    pub stop_timeout: Duration,
}

/// A container set up and recorded but not started: its snapshot mounted
/// at the bundle's rootfs, its runtime spec built in memory. Consumed by
/// [`NewContainer::run_foreground`], which tears down what `--rm` or a
/// failure asks for.
pub struct NewContainer<'e> {
    engine: &'e Engine,
    record: ContainerRecord,
    spec: Spec,
    bundle: PathBuf,
    mounted: bool,
    snapshotter: Snapshotter,
}

impl Engine {
    /// Creates a container from `image` (a name, ID or digest prefix of a
    /// local image): unpacks the image's missing layers, claims the id and
    /// name (reaping containers of killed owners first), writes the record,
    /// prepares and mounts the container's snapshot and builds the runtime
    /// spec. On failure nothing of the container is left.
    pub fn create(&self, image_name: &str, opts: &ContainerOptions) -> Result<NewContainer<'_>> {
        if let Some(name) = &opts.name {
            if !container::valid_name(name) {
                return Err(Error::invalid(
                    format!("container name {name:?}"),
                    "use letters, digits, '_', '.' and '-', starting with a letter or digit",
                ));
            }
        }
        // The lease keeps gc away from the blobs and snapshots from here
        // until the container's active snapshot exists (gc keeps active
        // snapshots and their parents).
        let lease = self.images().content().lease()?;
        let image = self.images().image(image_name, &PlatformSpec::host())?;
        let snapshotter = self.snapshotter()?;
        let parent = self.unpack_image(&snapshotter, &image)?;
        if let (false, Some(parent)) = (opts.auto_remove, &parent) {
            // A container kept across boots needs its image's layers after
            // a crash: they were committed unsynced.
            snapshotter.sync(parent)?;
        }

        let layout = self.layout();
        let names = container::lock(layout)?;
        let id = container::new_id()?;
        let name = opts.name.clone().unwrap_or_else(|| id[..12].to_string());
        let existing = container::list(layout)?;
        for warning in container::reap(layout, &existing, &snapshotter) {
            tracing::warn!("{warning}");
        }
        if let Some(holder) = existing
            .iter()
            .find(|c| c.name == name && !(c.auto_remove && c.abandoned()))
        {
            return Err(Error::NameInUse {
                name,
                id: holder.id.clone(),
            });
        }
        let dir = layout.container(&id);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let state_root = opts
            .state_root
            .clone()
            .unwrap_or_else(|| layout.default_state_root());
        let mut new = NewContainer {
            engine: self,
            bundle: bundle_dir(&state_root, &id),
            mounted: false,
            snapshotter,
            spec: Spec::default(),
            record: ContainerRecord {
                id: id.clone(),
                name,
                image: image_name.to_string(),
                image_ref: image.record.name.to_string(),
                image_id: image.id().to_string(),
                snapshot: format!("{SNAPSHOT_PREFIX}{id}"),
                args: Vec::new(),
                created: chrono::Utc::now().to_rfc3339(),
                status: Status::Created,
                exit_code: None,
                auto_remove: opts.auto_remove,
                owner: container::this_process(),
                state_root,
                restart: opts.restart,
                restart_count: 0,
                pid: 0,
                started: None,
                finished: None,
                volumes: Vec::new(),
                stdin_open: opts.interactive,
                log_max_size: opts.log_max_size,
            },
        };
        let result = (|| {
            let rootfs = new.bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(|e| Error::io(&rootfs, e))?;
            let (claimed, volumes_lock) = self.claim_mounts(&image.config, &opts.mounts)?;
            new.record.volumes = claimed.volumes.clone();
            container::write(layout, &new.record, !opts.auto_remove)?;
            drop(volumes_lock);
            drop(names);
            let mounts = new
                .snapshotter
                .prepare(&new.record.snapshot, parent.as_deref())?;
            drop(lease);
            berth_snapshot::mount_all(&mounts, &rootfs)?;
            new.mounted = true;
            self.copy_up(&claimed, &rootfs)?;
            let mut ov = opts.overrides.clone();
            ov.hostname.get_or_insert_with(|| id[..12].to_string());
            ov.mounts = claimed.mounts;
            new.spec = spec_from_config(&image.config, &ov, &rootfs)?;
            if let Some(net) = &opts.network {
                let default_hostname = opts.overrides.hostname.is_none();
                crate::network::setup(self, &new.record, &mut new.spec, net, default_hostname)?;
            }
            if let Some(p) = new.spec.process() {
                make_workdir(&rootfs, &p.cwd().to_string_lossy())?;
            }
            new.record.args = new
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.args().clone())
                .unwrap_or_default();
            Ok(())
        })();
        match result {
            Ok(()) => Ok(new),
            Err(e) => {
                let _ = new.cleanup(true);
                Err(e)
            }
        }
    }

    /// `berth run`: [`Engine::create`], then [`NewContainer::run_foreground`].
    pub fn run(&self, image: &str, opts: &ContainerOptions, attach: &Attach) -> Result<i32> {
        self.create(image, opts)?.run_foreground(attach)
    }
}

/// Creates the working directory `cwd` inside `rootfs` when it is missing,
/// as podman does for `-w`: each component is resolved inside the rootfs
/// (symlinks cannot lead out of it).
fn make_workdir(rootfs: &std::path::Path, cwd: &str) -> Result<()> {
    use berth_archive::fsops::{mkdir_at, open_dir_in};
    let what = || format!("working directory {cwd}");
    let root = File::open(rootfs).map_err(|e| Error::io(rootfs, e))?;
    let mut prefix = String::new();
    for part in cwd.split('/').filter(|p| !p.is_empty()) {
        let dir = open_dir_in(root.as_fd(), prefix.as_bytes())
            .map_err(|e| Error::sys(format!("{}: opening {prefix:?}", what()), e))?;
        match mkdir_at(dir.as_fd(), part.as_bytes(), 0o755) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::sys(format!("{}: creating {part:?}", what()), e)),
        }
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
    }
    Ok(())
}

/// Creates `record`'s container in the runtime from `spec` and the bundle
/// (whose rootfs is mounted): the init is forked as a child of the caller,
/// inherits its fds 0-2 (unless the spec asks for a terminal) and waits for
/// `start`. With `process.terminal` the pty master is returned too.
pub fn create_in_runtime(
    record: &ContainerRecord,
    spec: &Spec,
    bundle: &std::path::Path,
) -> Result<(berth_runtime::Container, Option<OwnedFd>)> {
    let (id, state_root) = (&record.id, &record.state_root);
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    std::fs::create_dir_all(state_root).map_err(|e| Error::io(state_root, e))?;
    let runtime = Runtime::new(state_root);
    let mut opts = CreateOptions {
        spec: Some(spec.clone()),
        ..Default::default()
    };
    let mut console = None;
    if tty {
        let path = state_root.join(format!(".tty-{id}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| Error::io(&path, e))?;
        opts.console_socket = Some(path.clone());
        console = Some((listener, path));
    }
    let created = runtime.create(id, bundle, &opts);
    if let Some((_, path)) = &console {
        let _ = std::fs::remove_file(path);
    }
    let container = created?;
    let master = match &console {
        Some((listener, _)) => match berth_runtime::console::recv_master(listener) {
            Ok((m, _)) => Some(m),
            Err(e) => {
                let _ = container.delete(true);
                return Err(Error::invalid(
                    "receiving the container's terminal",
                    e.to_string(),
                ));
            }
        },
        None => None,
    };
    Ok((container, master))
}

impl NewContainer<'_> {
    /// The container's record as written.
    pub fn record(&self) -> &ContainerRecord {
        &self.record
    }

    /// The runtime spec the container will run with.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Runs the container in the foreground of this process with the
    /// runtime linked in: creates and starts it, relays signals (and the
    /// terminal, with `process.terminal`), waits for it and deletes its
    /// runtime state. Returns its exit code (128+signal when killed). Then
    /// records the exit, or with `--rm` (or on failure) removes the
    /// container; the bundle and mount go either way.
    pub fn run_foreground(mut self, attach: &Attach) -> Result<i32> {
        let result = self.start_and_wait(attach);
        let remove = self.record.auto_remove || result.is_err();
        if let Ok(code) = &result {
            if !self.record.auto_remove {
                self.record.status = Status::Exited;
                self.record.exit_code = Some(*code);
                self.record.pid = 0;
                self.record.finished = Some(chrono::Utc::now().to_rfc3339());
                container::write(self.engine.layout(), &self.record, true)?;
            }
        }
        let cleaned = self.cleanup(remove);
        let code = result?;
        cleaned?;
        Ok(code)
    }

    fn start_and_wait(&mut self, attach: &Attach) -> Result<i32> {
        berth_runtime::set_child_subreaper()
            .map_err(|e| Error::sys("PR_SET_CHILD_SUBREAPER", e))?;
        if !attach.interactive {
            // The container inherits fds 0-2: without -i its stdin is /dev/null.
            let null = File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
            nix::unistd::dup2_stdin(&null)
                .map_err(|e| Error::sys("redirecting stdin from /dev/null", e))?;
        }
        let (container, master) = create_in_runtime(&self.record, &self.spec, &self.bundle)?;
        let outcome = (|| -> Result<i32> {
            if let Some(m) = &master {
                // Before start, so the process sees the size from its first ioctl.
                copy_window_size(m.as_fd());
            }
            // The init was forked already, so it keeps the original mask.
            let foreground = Foreground::catch_signals()?;
            container.start()?;
            self.record.status = Status::Running;
            self.record.pid = container.pid();
            self.record.started = Some(chrono::Utc::now().to_rfc3339());
            container::write(self.engine.layout(), &self.record, false)?;
            Ok(foreground.supervise(
                container.pid(),
                master.as_ref().map(|m| m.as_fd()),
                attach.interactive,
                Some(attach.stop_timeout),
            )?)
        })();
        if outcome.is_err() {
            let _ = container.kill(libc::SIGKILL, true);
            let _ = berth_runtime::wait_exit(container.pid());
        }
        container.delete(true)?;
        outcome
    }

    /// Hands the container to a monitor: keeps its spec beside its record
    /// (every later start reads it), leaves its rootfs mounted and returns
    /// its record; [`Engine::start_detached`] then starts it. On failure
    /// the container is removed.
    pub fn detach(mut self) -> Result<ContainerRecord> {
        // The record was written durably by create, as it stands.
        let path = self.engine.layout().container_spec(&self.record.id);
        let saved = serde_json::to_vec(&self.spec)
            .map_err(|e| Error::invalid("container spec", e.to_string()))
            .and_then(|data| {
                atomic_write(&path, &data, Durability::Durable).map_err(|e| Error::io(&path, e))
            });
        match saved {
            Ok(()) => Ok(self.record.clone()),
            Err(e) => {
                let _ = self.cleanup(true);
                Err(e)
            }
        }
    }

    /// Detaches the network, unmounts the rootfs and removes the bundle;
    /// with `remove` also removes the active snapshot, the container's
    /// directory and its anonymous volumes.
    fn cleanup(&mut self, remove: bool) -> Result<()> {
        crate::network::teardown(self.engine.layout(), &self.record.id)?;
        let rootfs = self.bundle.join("rootfs");
        if self.mounted {
            berth_snapshot::unmount(&rootfs)?;
            self.mounted = false;
        }
        container::remove_dir(&self.bundle)?;
        if remove {
            match self.snapshotter.remove(&self.record.snapshot) {
                Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            container::remove_dir(&self.engine.layout().container(&self.record.id))?;
            self.engine.remove_anonymous_volumes(&self.record)?;
        }
        Ok(())
    }
}
