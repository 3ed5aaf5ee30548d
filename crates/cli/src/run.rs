//! `berth run IMAGE [CMD...]`: containerd's image → container flow in one
//! process, no daemon. Resolve the image, unpack missing layers into
//! committed snapshots, prepare and mount the container's active snapshot,
//! build the runtime spec, then create, start and wait for the container
//! with the runtime library in-process.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_archive::{ApplyOptions, Compression};
use berth_content::{atomic_write, FileLock, LockMode};
use berth_image::gc::SNAPSHOTTER_DIR;
use berth_image::spec::{BindMount, Overrides};
use berth_image::{Images, PlatformSpec};
use berth_runtime::{CreateOptions, Runtime};
use berth_snapshot::Snapshotter;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::Global;

/// Exit code for errors of berth itself (not the container's), as docker.
const BERTH_ERROR: i32 = 125;
/// Directory under the data root holding one directory per container.
pub const CONTAINERS_DIR: &str = "containers";
/// Prefix of a container's active snapshot key (followed by its id).
pub const SNAPSHOT_PREFIX: &str = "container-";

/// `berth run` options (docker's names).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container (state, snapshot, mounts) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open: the container reads berth's stdin (else /dev/null).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the container a terminal (a pty proxied to berth's stdio).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable (`KEY=value`, or `KEY` to pass berth's value).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Bind mount a host path: `/host/path:/container/path[:ro]`.
    #[arg(long = "volume", short = 'v', value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// User to run as: name, uid, name:group or uid:gid (resolved in the image).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory in the container.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint (`""` clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Name of the container (unique in the data root).
    #[arg(long)]
    pub name: Option<String>,
    /// The container's hostname (default: the first 12 digits of its id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Seconds to wait after forwarding SIGINT/SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub stop_timeout: u64,
    /// Runtime state directory (default: `<root>/run`).
    #[arg(long, env = "BERTH_STATE_ROOT")]
    pub state_root: Option<PathBuf>,
    /// The image (name, ID or digest prefix).
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What berth keeps about a container in `<root>/containers/<id>/container.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id (also the runtime's id).
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
    /// `created`, `running` or `exited`.
    pub status: String,
    /// Exit code once exited (128+signal when killed).
    pub exit_code: Option<i32>,
    /// Started with `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// The `berth run` process that owns the container, and its start time
    /// (so a reused pid is not taken for it).
    #[serde(default)]
    pub owner: (i32, u64),
    /// The runtime state root (holding the bundle too).
    #[serde(default)]
    pub state_root: PathBuf,
}

/// The calling process as a record's owner.
fn this_owner() -> (i32, u64) {
    let pid = std::process::id() as i32;
    let start = berth_runtime::state::proc_start_time(pid).map_or(0, |(t, _)| t);
    (pid, start)
}

/// Whether the `berth run` that owns `record` is gone while the record still
/// says the container was created or running (berth was killed).
fn abandoned(record: &ContainerRecord) -> bool {
    let (pid, start) = record.owner;
    record.status != "exited"
        && pid > 0
        && berth_runtime::state::proc_start_time(pid) != Some((start, false))
}

/// Cleans up after `berth run`s that were killed (SIGKILL, OOM): kills and
/// deletes their containers, unmounts and removes their bundles; `--rm`
/// containers lose their snapshot and record, kept ones are marked exited.
/// Problems are reported as warnings: they must not stop a new run.
fn reap_abandoned(root: &Path, records: &[ContainerRecord], snapshotter: &Snapshotter) {
    for rec in records.iter().filter(|r| abandoned(r)) {
        let warn = |what: &str, e: &dyn std::fmt::Display| {
            eprintln!(
                "berth: warning: abandoned container {} ({}): {what}: {e}",
                rec.name, rec.id
            );
        };
        if let Ok(c) = Runtime::new(&rec.state_root).load(&rec.id) {
            if let Err(e) = c.delete(true) {
                warn("deleting it from the runtime", &e);
            }
        }
        let bundle = rec.state_root.join("bundles").join(&rec.id);
        let _ = berth_snapshot::unmount(&bundle.join("rootfs"));
        match std::fs::remove_dir_all(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn("removing its bundle", &e),
        }
        if rec.auto_remove {
            match snapshotter.remove(&rec.snapshot) {
                Ok(()) | Err(berth_snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => warn("removing its snapshot", &e),
            }
            if let Err(e) = std::fs::remove_dir_all(containers_dir(root).join(&rec.id)) {
                warn("removing its record", &e);
            }
        } else {
            let mut done = rec.clone();
            done.status = "exited".into();
            done.exit_code = None;
            if let Err(e) = write_record(root, &done, true) {
                warn("marking it exited", &e);
            }
        }
    }
}

/// Reaps, under the containers lock, the containers of every `berth run`
/// that was killed (see [`reap_abandoned`]): what `berth gc` does before
/// collecting. Returns the names of the containers reaped.
pub fn reap_abandoned_containers(root: &Path) -> Result<Vec<String>> {
    let cdir = containers_dir(root);
    if !cdir.is_dir() {
        return Ok(Vec::new());
    }
    let _names = FileLock::acquire(&cdir.join(".lock"), LockMode::Exclusive)?;
    let records = list_containers(root)?;
    let gone: Vec<ContainerRecord> = records.into_iter().filter(|r| abandoned(r)).collect();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let snapshot_root = root.join(SNAPSHOTTER_DIR);
    let snapshotter = Snapshotter::open(&snapshot_root, None)
        .with_context(|| format!("opening the snapshotter in {}", snapshot_root.display()))?;
    reap_abandoned(root, &gone, &snapshotter);
    Ok(gone.into_iter().map(|r| r.name).collect())
}

/// Runs `berth run`: returns the container's exit code, or 125 (with the
/// error printed) when berth itself fails.
pub fn run(args: RunArgs, global: &Global) -> Result<i32> {
    // The runtime forks container processes from this process: their
    // /proc/self/exe must never be a writable host binary (CVE-2019-5736).
    // The image's spec always has a new pid namespace and no hooks, so the
    // runtime's exec trampoline covers it; without one, re-execute from a
    // read-only mount of berth first.
    if !berth_runtime::trampoline::available() {
        if let Err(e) = berth_runtime::reexec_read_only() {
            eprintln!("berth: cannot re-execute from a read-only copy of berth: {e}");
            return Ok(BERTH_ERROR);
        }
    }
    match run_container(&args, global) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            Ok(BERTH_ERROR)
        }
    }
}

fn containers_dir(root: &Path) -> PathBuf {
    root.join(CONTAINERS_DIR)
}

/// A new container's id: 32 random hex digits.
fn new_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a container id")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Reads every container record under the data root.
pub fn list_containers(root: &Path) -> Result<Vec<ContainerRecord>> {
    let dir = containers_dir(root);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path().join("container.json");
        match std::fs::read(&path) {
            Ok(data) => out.push(
                serde_json::from_slice(&data)
                    .with_context(|| format!("invalid container record {}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(out)
}

/// Writes `container.json` atomically (temp file + rename); `durable` adds
/// the fsyncs, which a `--rm` container's record does not need (it is gone
/// after the run anyway, and a crash leaves a record of a dead container).
fn write_record(root: &Path, record: &ContainerRecord, durable: bool) -> Result<()> {
    let path = containers_dir(root).join(&record.id).join("container.json");
    let data = serde_json::to_vec_pretty(record).context("encoding the container record")?;
    write_file(&path, &data, durable)
}

/// Replaces `path` with `data` through a temp file and a rename, fsynced
/// when `durable`.
fn write_file(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    if durable {
        return atomic_write(path, data).with_context(|| format!("writing {}", path.display()));
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// Builds the spec overrides from the command line.
fn overrides(args: &RunArgs, id: &str, volume_root: PathBuf) -> Result<Overrides> {
    let mut env = Vec::new();
    for e in &args.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if e.is_empty() {
            bail!("-e \"\": expected KEY=value or KEY");
        } else if let Some(v) = std::env::var_os(e) {
            env.push(format!("{e}={}", v.to_string_lossy()));
        }
    }
    let binds = args
        .volumes
        .iter()
        .map(|v| BindMount::parse(v))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for b in &binds {
        if !b.source.exists() {
            bail!(
                "-v {}:{}: the host path {} does not exist (create it first)",
                b.source.display(),
                b.destination,
                b.source.display()
            );
        }
    }
    Ok(Overrides {
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        cmd: (!args.command.is_empty()).then(|| args.command.clone()),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        hostname: Some(
            args.hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string()),
        ),
        read_only: args.read_only,
        binds,
        volume_root: Some(volume_root),
        terminal: args.tty,
    })
}

/// Everything set up for one container, torn down by [`Prepared::cleanup`].
struct Prepared {
    dir: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    mounted: bool,
    snapshotter: Snapshotter,
    record: ContainerRecord,
}

impl Prepared {
    /// Unmounts the rootfs and removes the bundle; with `remove` also
    /// removes the active snapshot and the container's directory.
    fn cleanup(&mut self, remove: bool) -> Result<()> {
        if self.mounted {
            berth_snapshot::unmount(&self.rootfs)
                .with_context(|| format!("unmounting {}", self.rootfs.display()))?;
            self.mounted = false;
        }
        match std::fs::remove_dir_all(&self.bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", self.bundle.display())),
        }
        if remove {
            match self.snapshotter.remove(&self.record.snapshot) {
                Ok(()) | Err(berth_snapshot::SnapshotError::NotFound(_)) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing snapshot {}", self.record.snapshot))
                }
            }
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }
}

fn run_container(args: &RunArgs, global: &Global) -> Result<i32> {
    let root = &global.root;
    if let Some(name) = &args.name {
        if !valid_name(name) {
            bail!("invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
        }
    }
    let images = Images::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    // The lease keeps `berth gc` away from the blobs and snapshots from here
    // until the container's active snapshot exists (gc keeps active
    // snapshots and their parents).
    let lease = images.content().lease()?;
    let image = images
        .image(&args.image, &PlatformSpec::host())
        .with_context(|| format!("image {:?}", args.image))?;
    let snapshot_root = root.join(SNAPSHOTTER_DIR);
    let snapshotter = Snapshotter::open(&snapshot_root, None)
        .with_context(|| format!("opening the snapshotter in {}", snapshot_root.display()))?;
    let diff_ids = image.config.rootfs().diff_ids().clone();
    let layers = image.manifest.layers().clone();
    if diff_ids.len() != layers.len() {
        bail!(
            "image {}: the config lists {} diff_ids but the manifest {} layers",
            image.record.name,
            diff_ids.len(),
            layers.len()
        );
    }
    let content = images.content();
    let mut open_layer = |i: usize| -> std::result::Result<_, String> {
        let layer = &layers[i];
        let compression =
            Compression::from_media_type(layer.media_type().as_ref()).map_err(|e| e.to_string())?;
        let reader = content
            .reader(layer.digest())
            .map_err(|e| format!("layer {}: {e}", layer.digest()))?;
        Ok((
            Box::new(std::io::BufReader::with_capacity(1 << 20, reader))
                as Box<dyn std::io::Read + Send>,
            compression,
        ))
    };
    let parent = berth_snapshot::unpack_chain(
        &snapshotter,
        &diff_ids,
        &mut open_layer,
        &ApplyOptions::default(),
    )
    .with_context(|| format!("unpacking image {}", image.record.name))?;

    // Claim the id and name under the containers lock.
    let cdir = containers_dir(root);
    std::fs::create_dir_all(&cdir).with_context(|| format!("creating {}", cdir.display()))?;
    let names_lock = FileLock::acquire(&cdir.join(".lock"), LockMode::Exclusive)?;
    let id = new_id()?;
    let name = args.name.clone().unwrap_or_else(|| id[..12].to_string());
    let existing = list_containers(root)?;
    reap_abandoned(root, &existing, &snapshotter);
    if let Some(existing) = existing
        .into_iter()
        .find(|c| c.name == name && !(c.auto_remove && abandoned(c)))
    {
        bail!(
            "the container name {name:?} is already in use by container {} (choose another --name)",
            existing.id
        );
    }
    let dir = cdir.join(&id);
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The bundle (config.json, rootfs mount point) only lives while the
    // container runs: it goes in the state root, like containerd's.
    let state_root = args.state_root.clone().unwrap_or_else(|| root.join("run"));
    let bundle = state_root.join("bundles").join(&id);
    let rootfs = bundle.join("rootfs");
    let mut prepared = Prepared {
        dir,
        bundle: bundle.clone(),
        rootfs,
        mounted: false,
        snapshotter,
        record: ContainerRecord {
            id: id.clone(),
            name,
            image: args.image.clone(),
            image_ref: image.record.name.to_string(),
            image_id: image.id().to_string(),
            snapshot: format!("{SNAPSHOT_PREFIX}{id}"),
            args: Vec::new(),
            created: chrono::Utc::now().to_rfc3339(),
            status: "created".into(),
            exit_code: None,
            auto_remove: args.rm,
            owner: this_owner(),
            state_root: state_root.clone(),
        },
    };
    let durable = !args.rm;
    let result = (|| -> Result<i32> {
        std::fs::create_dir_all(&prepared.rootfs)
            .with_context(|| format!("creating {}", prepared.rootfs.display()))?;
        write_record(root, &prepared.record, durable)?;
        drop(names_lock);
        let mounts = prepared
            .snapshotter
            .prepare(&prepared.record.snapshot, parent.as_deref())
            .with_context(|| format!("preparing snapshot {}", prepared.record.snapshot))?;
        drop(lease);
        berth_snapshot::mount_all(&mounts, &prepared.rootfs)
            .with_context(|| format!("mounting the rootfs {}", prepared.rootfs.display()))?;
        prepared.mounted = true;
        let ov = overrides(args, &id, prepared.dir.join("volumes"))?;
        let spec = berth_image::spec::spec_from_config(&image.config, &ov, &prepared.rootfs)
            .with_context(|| format!("building the runtime spec for {}", image.record.name))?;
        prepared.record.args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let spec_json = serde_json::to_vec_pretty(&spec).context("encoding the runtime spec")?;
        let config = bundle.join("config.json");
        write_file(&config, &spec_json, false)?;
        start_and_wait(args, &state_root, &id, &bundle, &mut prepared, root)
    })();
    let remove = args.rm || result.is_err();
    if let Ok(code) = &result {
        if !args.rm {
            prepared.record.status = "exited".into();
            prepared.record.exit_code = Some(*code);
            write_record(root, &prepared.record, true)?;
        }
    }
    let cleaned = prepared.cleanup(remove);
    let code = result?;
    cleaned?;
    Ok(code)
}

/// Creates the container with the runtime library, starts it, relays
/// signals (and the terminal), waits for it and deletes its runtime state.
fn start_and_wait(
    args: &RunArgs,
    state_root: &Path,
    id: &str,
    bundle: &Path,
    prepared: &mut Prepared,
    root: &Path,
) -> Result<i32> {
    berth_runtime::set_child_subreaper().context("PR_SET_CHILD_SUBREAPER")?;
    if !args.interactive {
        // The container inherits fds 0-2: without -i its stdin is /dev/null.
        let null = File::open("/dev/null").context("opening /dev/null")?;
        nix::unistd::dup2_stdin(&null).context("redirecting stdin from /dev/null")?;
    }
    std::fs::create_dir_all(state_root)
        .with_context(|| format!("creating the runtime state root {}", state_root.display()))?;
    let runtime = Runtime::new(state_root);
    let mut opts = CreateOptions::default();
    let mut console = None;
    if args.tty {
        let path = state_root.join(format!(".tty-{id}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the console socket {}", path.display()))?;
        opts.console_socket = Some(path.clone());
        console = Some((listener, path));
    }
    let created = runtime.create(id, bundle, &opts);
    if let Some((_, path)) = &console {
        let _ = std::fs::remove_file(path);
    }
    let container = created.context("creating the container")?;
    let outcome = (|| -> Result<i32> {
        let master = match &console {
            Some((listener, _)) => Some(
                berth_runtime::console::recv_master(listener)
                    .context("receiving the container's terminal")?
                    .0,
            ),
            None => None,
        };
        if let Some(m) = &master {
            // Before start, so the process sees the size from its first ioctl.
            copy_window_size(m);
        }
        // Signals are blocked and read from a signalfd from here on (the
        // init was forked before, so it keeps berth's original mask).
        let mut mask = SigSet::empty();
        for s in berth_runtime::FORWARDED_SIGNALS {
            mask.add(s);
        }
        mask.add(Signal::SIGCHLD);
        mask.thread_block().context("blocking signals")?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context("creating a signalfd")?;
        container.start().context("starting the container")?;
        prepared.record.status = "running".into();
        write_record(root, &prepared.record, false)?;
        let terminal = master.as_ref().map(|_| Terminal::enter(args.interactive));
        let code = supervise(
            container.pid(),
            &sfd,
            master.as_ref(),
            args.interactive,
            Duration::from_secs(args.stop_timeout),
        );
        drop(terminal);
        code
    })();
    if outcome.is_err() {
        let _ = container.kill(libc::SIGKILL, true);
        let _ = berth_runtime::wait_exit(container.pid());
    }
    container
        .delete(true)
        .with_context(|| format!("deleting container {id} from the runtime"))?;
    outcome
}

/// The host terminal in raw mode while a `-t` container runs; restored on drop.
struct Terminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl Terminal {
    fn enter(interactive: bool) -> Terminal {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = if interactive {
            termios::tcgetattr(&stdin).ok()
        } else {
            None
        };
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        Terminal { saved }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Copies the host terminal's window size (stdin, else stdout) to the pty.
fn copy_window_size(master: &OwnedFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which we own.
        if unsafe { get_winsize(fd, &mut ws) }.is_ok() {
            // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
            let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
            return;
        }
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies what the pty has for us to stdout; false at EOF/EIO.
fn pump_master(master: &OwnedFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(master, buf) {
        Ok(0) | Err(Errno::EIO) => false,
        Ok(n) => write_all(std::io::stdout().as_fd(), &buf[..n]).is_ok(),
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// The container's exit code if its init has exited (reaped here).
fn reap(pid: i32) -> Result<Option<i32>> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("waiting for the container's init {pid}"))
            }
        }
    }
}

/// The event loop: signals from the signalfd, the pty both ways, until the
/// init exits. SIGINT/SIGTERM are forwarded and, if the container is still
/// running `stop_timeout` later, followed by SIGKILL.
fn supervise(
    pid: i32,
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    interactive: bool,
    stop_timeout: Duration,
) -> Result<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut kill_at: Option<Instant> = None;
    let mut master_open = master.is_some();
    let mut stdin_open = master.is_some() && interactive;
    let mut buf = vec![0u8; 32 * 1024];
    let code = loop {
        if let Some(code) = reap(pid)? {
            break code;
        }
        let timeout = match kill_at {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    kill_at = None;
                    PollTimeout::NONE
                } else {
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
            }
            None => PollTimeout::NONE,
        };
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let master_idx = match (master, master_open) {
            (Some(m), true) => {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_idx = if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents()).is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (sig_ready, master_ready, stdin_ready) =
            (ready(Some(0)), ready(master_idx), ready(stdin_idx));
        drop(fds);
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    continue;
                }
                if signo == libc::SIGWINCH {
                    if let Some(m) = master {
                        copy_window_size(m);
                    }
                    continue;
                }
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM) && kill_at.is_none() {
                        kill_at = Some(Instant::now() + stop_timeout);
                    }
                }
            }
        }
        if master_ready {
            if let Some(m) = master {
                master_open = pump_master(m, &mut buf);
            }
        }
        if stdin_ready {
            if let Some(m) = master {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(0) | Err(_) => {
                        // End of input: the terminal's EOF character, so a
                        // shell reading the pty ends as it would at ^D.
                        let _ = write_all(m.as_fd(), b"\x04");
                        stdin_open = false;
                    }
                    Ok(n) => {
                        if write_all(m.as_fd(), &buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                }
            }
        }
    };
    // Drain what the container wrote to its terminal before it exited.
    if let (Some(m), true) = (master, master_open) {
        nix::fcntl::fcntl(
            m,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .ok();
        loop {
            match nix::unistd::read(m, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_all(std::io::stdout().as_fd(), &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(argv: &[&str]) -> RunArgs {
        Wrap::parse_from(std::iter::once("run").chain(argv.iter().copied())).args
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn command_line_becomes_overrides() {
        std::env::set_var("BERTH_RUN_UNIT_PASS", "v");
        let args = parse(&[
            "-e",
            "A=1",
            "-e",
            "BERTH_RUN_UNIT_PASS",
            "-e",
            "BERTH_RUN_UNIT_UNSET",
            "-v",
            "/tmp:/t:ro",
            "--entrypoint",
            "",
            "-u",
            "7:8",
            "-t",
            "img",
            "ls",
            "-l",
        ]);
        let ov = overrides(&args, "0123456789abcdef", PathBuf::from("/v")).unwrap();
        assert_eq!(ov.env, ["A=1", "BERTH_RUN_UNIT_PASS=v"]);
        assert_eq!(ov.entrypoint, Some(Vec::new()));
        assert_eq!(ov.cmd, Some(vec!["ls".to_string(), "-l".to_string()]));
        assert_eq!(ov.user.as_deref(), Some("7:8"));
        assert_eq!(ov.hostname.as_deref(), Some("0123456789ab"));
        assert!(ov.terminal);
        assert!(ov.binds[0].readonly);
        let missing = parse(&["-v", "/nonexistent-berth-src:/x", "img"]);
        let err = overrides(&missing, "0123456789abcdef", PathBuf::from("/v")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-berth-src"), "{err}");
    }
}
