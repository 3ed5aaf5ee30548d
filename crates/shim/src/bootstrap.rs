//! The shim's life outside the task service: the `start` handshake (one
//! shim per container, or per sandbox group), the `delete` cleanup after a
//! shim died, and `serve`, which runs the ttrpc task service until
//! containerd shuts it down.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use containerd_shim_protos::protobuf::Message;
use sha2::Digest;

use crate::service::Service;

/// The annotation containerd's CRI plugin puts on every container of a pod;
/// its value groups them under one shim.
const SANDBOX_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.SandboxID",
];

/// The label a caller may set to group containers under one shim (as
/// containerd's runc shim reads it).
const GROUP_LABEL: &str = "io.containerd.runc.v2.group";

/// The file descriptor the serving shim receives its listening socket on.
const LISTENER_FD: i32 = 3;

/// The environment variable holding containerd's ttrpc address.
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// The flags containerd passes (Go flag syntax: `-name value`,
/// `-name=value`, `--name`), and the action after them.
#[derive(Debug, Default)]
pub struct Flags {
    /// The containerd namespace.
    pub namespace: String,
    /// The container (task) id.
    pub id: String,
    /// containerd's gRPC address.
    pub address: String,
    /// The containerd binary (to publish events with; unused here).
    pub publish_binary: String,
    /// The bundle directory (`delete`; otherwise the working directory).
    pub bundle: String,
    /// The socket the serving shim listens on (informational).
    pub socket: String,
    /// Debug logging.
    pub debug: bool,
    /// Print the version.
    pub version: bool,
    /// Print the runtime info (containerd 2).
    pub info: bool,
    /// `start`, `delete`, or empty to serve.
    pub action: String,
}

impl Flags {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Flags> {
        let mut f = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix('-') else {
                if !f.action.is_empty() {
                    bail!(
                        "unexpected argument {arg:?} after the action {:?}",
                        f.action
                    );
                }
                f.action = arg.clone();
                continue;
            };
            let flag = flag.strip_prefix('-').unwrap_or(flag);
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let boolean = match name {
                "debug" => Some(&mut f.debug),
                "v" | "version" => Some(&mut f.version),
                "info" => Some(&mut f.info),
                _ => None,
            };
            if let Some(b) = boolean {
                *b = inline.as_deref().is_none_or(|v| v == "true" || v == "1");
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("flag -{name} needs a value"))?,
            };
            let slot = match name {
                "namespace" => &mut f.namespace,
                "id" => &mut f.id,
                "address" => &mut f.address,
                "publish-binary" => &mut f.publish_binary,
                "bundle" => &mut f.bundle,
                "socket" => &mut f.socket,
                other => bail!("unknown flag -{other}"),
            };
            *slot = value;
        }
        Ok(f)
    }
}

/// The socket address containerd expects for a shim of `group`: a hash of
/// containerd's address, the namespace and the group under /run/containerd/s.
fn socket_address(containerd: &str, namespace: &str, group: &str) -> String {
    let hash = sha2::Sha256::digest(format!("{containerd}/{namespace}/{group}"));
    format!("unix:///run/containerd/s/{}", hex::encode(hash))
}

/// Where berth's runtime keeps the state of containers of `namespace`.
pub fn state_root(namespace: &str) -> Result<PathBuf> {
    let ok = !namespace.is_empty()
        && namespace != "."
        && namespace != ".."
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !ok {
        bail!("namespace {namespace:?} is not a valid containerd namespace (letters, digits, '_', '-', '.')");
    }
    Ok(Path::new("/run/containerd/berth").join(namespace))
}

/// The shim group of the container whose bundle is `bundle`: its sandbox
/// (pod) id or grouping label, else the container id itself.
fn grouping(bundle: &Path, id: &str) -> String {
    let Ok(bytes) = std::fs::read(bundle.join("config.json")) else {
        return id.to_string();
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return id.to_string();
    };
    let annotations = &spec["annotations"];
    SANDBOX_ANNOTATIONS
        .iter()
        .chain([GROUP_LABEL].iter())
        .find_map(|k| annotations[*k].as_str())
        .filter(|g| !g.is_empty())
        .unwrap_or(id)
        .to_string()
}

/// `-info`: describes the runtime (containerd 2 asks before any shim runs).
pub fn info() -> Result<()> {
    let info = containerd_shim_protos::types::introspection::RuntimeInfo {
        name: crate::RUNTIME_NAME.to_string(),
        ..Default::default()
    };
    std::io::stdout()
        .write_all(&info.write_to_bytes()?)
        .context("write the runtime info")?;
    Ok(())
}

/// `start`: prints the address of the shim serving this container's group,
/// starting one (a child of this process, in its own process group) when
/// none serves yet. containerd runs this in the bundle directory.
pub fn start(flags: &Flags) -> Result<()> {
    state_root(&flags.namespace)?;
    let bundle = std::env::current_dir().context("the bundle directory (cwd)")?;
    let group = grouping(&bundle, &flags.id);
    let address = socket_address(&flags.address, &flags.namespace, &group);
    let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(&address));
    if UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        let pid = spawn_server(flags, &address, &listener)?;
        std::fs::write(bundle.join("shim.pid"), pid.to_string()).context("write shim.pid")?;
    }
    // containerd reads it back to reconnect after it restarts.
    std::fs::write(bundle.join("address"), &address).context("write the address file")?;
    let mut out = std::io::stdout();
    out.write_all(address.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Starts the serving shim with `listener` as its fd 3; returns its pid.
fn spawn_server(flags: &Flags, address: &str, listener: &UnixListener) -> Result<u32> {
    let exe = std::env::current_exe().context("the shim's own path")?;
    // The server starts from a read-only mount of this binary, so that it
    // need not re-execute itself to seal /proc/self/exe (see `serve`).
    let sealed = berth_runtime::reexec::read_only_exe()
        .context("a read-only mount of the shim binary (Linux 5.12+)")?;
    // Not on fd 3, which the listener takes in the child before the exec.
    let sealed = if sealed.as_raw_fd() == LISTENER_FD {
        sealed.try_clone().context("dup the read-only mount")?
    } else {
        sealed
    };
    let mut cmd = Command::new(format!("/proc/self/fd/{}", sealed.as_raw_fd()));
    cmd.arg0(&exe);
    cmd.args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", address]);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if flags.debug {
        cmd.arg("-debug");
    }
    // containerd reads this process's stdout to its end: the server must
    // not hold it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let fd = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl,
    // which are async-signal-safe; `fd` is open in the parent and so in the
    // child.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let ok = if fd == LISTENER_FD {
                libc::fcntl(fd, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, LISTENER_FD) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("start the shim server")?;
    Ok(child.id())
}

/// `delete`: containerd's cleanup after the shim serving this container
/// died. Kills and deletes the container, unmounts its rootfs and reports
/// it killed (128+SIGKILL), as runc's shim does.
pub fn delete(flags: &Flags) -> Result<()> {
    let root = state_root(&flags.namespace)?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("the bundle directory (cwd)")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let runtime = berth_runtime::Runtime::new(root);
    let mut pid = 0;
    match runtime.load(&flags.id) {
        Ok(c) => {
            pid = c.pid();
            c.delete(true)
                .with_context(|| format!("delete container {}", flags.id))?;
        }
        Err(berth_runtime::Error::NotExist { .. }) => {}
        Err(e) => return Err(e).with_context(|| format!("load container {}", flags.id)),
    }
    crate::service::unmount_rootfs(&bundle);
    // The dead shim's socket, unless another shim of the group serves on it.
    let address = socket_address(
        &flags.address,
        &flags.namespace,
        &grouping(&bundle, &flags.id),
    );
    let path = address.strip_prefix("unix://").unwrap_or(&address);
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    // The namespace's state root, once it holds no container.
    let _ = std::fs::remove_dir(runtime.root().join("@console"));
    let _ = std::fs::remove_dir(runtime.root());
    let response = containerd_shim_protos::shim::shim::DeleteResponse {
        pid: pid.max(0) as u32,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(crate::events::now()).into(),
        ..Default::default()
    };
    std::io::stdout().write_all(&response.write_to_bytes()?)?;
    Ok(())
}

/// Serves the task service on fd 3 until containerd shuts the shim down.
pub fn serve(flags: &Flags) -> Result<()> {
    // Before any thread: every process forked into a container must see a
    // read-only /proc/self/exe (CVE-2019-5736), exec'd processes included.
    // `start` runs the server from a read-only mount already; this
    // re-executes only a server started some other way.
    berth_runtime::reexec_read_only().context("re-execute from a read-only mount")?;
    crate::logger::init(flags.debug);
    let root = state_root(&flags.namespace)?;
    let fd = LISTENER_FD;
    let st = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .context("fd 3 (the listening socket from `start`)")?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&st.file_type()) {
        bail!("fd 3 is not the listening socket: run the shim through containerd (`start`)");
    }
    berth_runtime::set_child_subreaper().context("PR_SET_CHILD_SUBREAPER")?;
    let ttrpc_address = std::env::var(TTRPC_ADDRESS)
        .context("TTRPC_ADDRESS is not set: run the shim through containerd")?;
    let events = crate::events::Publisher::start(ttrpc_address, flags.namespace.clone());
    let service = Arc::new(Service::new(flags.namespace.clone(), root.clone(), events));
    crate::reaper::start(service.clone())?;
    let task: Arc<dyn containerd_shim_protos::Task + Send + Sync> =
        Arc::new(crate::service::TaskService(service.clone()));
    // containerd 1.6 and 1.7 call the task API as containerd.task.v2.Task,
    // newer ones as v3: the messages are the same, so serve both names.
    let v3 = containerd_shim_protos::create_task(task.clone());
    let v2 = containerd_shim_protos::create_task(task)
        .into_iter()
        .map(|(k, v)| (k.replace("containerd.task.v3.", "containerd.task.v2."), v))
        .collect();
    // Every Wait holds a worker thread until its process exits; the pool
    // grows on demand (one idle worker kept), so a pod with many processes
    // never starves the other requests.
    let mut server = containerd_shim_protos::ttrpc::Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(1024)
        .add_listener(fd)?
        .register_service(v3)
        .register_service(v2);
    server.start().context("start the ttrpc server")?;
    log::info!(
        "serving {} for namespace {}",
        crate::RUNTIME_NAME,
        flags.namespace
    );
    service.wait_for_shutdown();
    server.shutdown();
    // The namespace's state root, once it holds no container.
    let _ = std::fs::remove_dir(root.join("@console"));
    let _ = std::fs::remove_dir(&root);
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    if !path.is_empty() {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
