//! The ttrpc task service: containerd's requests on the containers of this
//! shim's group, each carried out with berth's runtime library in this
//! process, and the exits the reaper hands in.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use berth_runtime::{Container, CreateOptions, ExecOptions, Runtime};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim::shim::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim_protos::types::empty::Empty;
use containerd_shim_protos::types::task::{ProcessInfo, Status};

use crate::events::{now, Publisher};
use crate::stdio::{ConsoleSocket, Handles, Paths};

/// A ttrpc error with `code` and `msg` (containerd maps the code to its
/// errdefs: NotFound, FailedPrecondition, ...).
fn err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// A runtime error as a ttrpc error.
fn rt_err(what: &str, e: berth_runtime::Error) -> ttrpc::Error {
    let code = match &e {
        berth_runtime::Error::NotExist { .. } => Code::NOT_FOUND,
        berth_runtime::Error::Exists { .. } => Code::ALREADY_EXISTS,
        berth_runtime::Error::InvalidId { .. } | berth_runtime::Error::Config { .. } => {
            Code::INVALID_ARGUMENT
        }
        berth_runtime::Error::NotRunning { .. } | berth_runtime::Error::BadState(_) => {
            Code::FAILED_PRECONDITION
        }
        _ => Code::UNKNOWN,
    };
    err(code, format!("{what}: {e}"))
}

/// Milliseconds since `t0` (for the debug log's step times).
fn ms(t0: std::time::Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Any other failure as a ttrpc error.
fn other(what: &str, e: impl std::fmt::Display) -> ttrpc::Error {
    err(Code::UNKNOWN, format!("{what}: {e:#}"))
}

/// How a process ended.
#[derive(Debug, Clone)]
struct Exited {
    code: u32,
    at: Timestamp,
}

/// One process of a container: its init or an exec'd one.
struct Proc {
    pid: i32,
    io: Paths,
    handles: Handles,
    started: bool,
    exit: Option<Exited>,
}

impl Proc {
    fn new(io: Paths) -> Proc {
        Proc {
            pid: 0,
            io,
            handles: Handles::default(),
            started: false,
            exit: None,
        }
    }
}

/// A container this shim serves.
struct Task {
    container: Container,
    bundle: PathBuf,
    init: Proc,
    execs: HashMap<String, (Proc, oci_spec::runtime::Process)>,
    /// OOM kills already reported with TaskOOM.
    oom_reported: u64,
}

impl Task {
    fn proc(&self, exec_id: &str) -> Option<&Proc> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id).map(|(p, _)| p)
        }
    }
}

#[derive(Default)]
struct State {
    tasks: HashMap<String, Task>,
    /// Exits of pids no process was registered for yet (an exec'd process
    /// that ended before `exec` returned; the runtime's helper processes).
    unclaimed: HashMap<i32, Exited>,
    /// Ids whose create is under way: a second create of one is refused
    /// (its failure path would unmount the first one's rootfs).
    creating: HashSet<String>,
    shutdown: bool,
}

/// The shim's containers and their processes.
pub struct Service {
    namespace: String,
    runtime: Runtime,
    events: Publisher,
    state: Mutex<State>,
    /// Notified on every exit and on shutdown.
    changed: Condvar,
    /// Held while a start and its event happen, so that a process's exit
    /// event never overtakes its start event.
    order: Mutex<()>,
    /// Keeps the reaper off children the runtime waits for itself.
    pub(crate) gate: crate::reaper::Gate,
}

/// The ttrpc face of [`Service`].
pub struct TaskService(pub Arc<Service>);

/// Unmounts the rootfs containerd's mounts were put on (if mounted).
pub fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    while berth_snapshot::unmount(&rootfs).is_ok() {}
}

impl Service {
    /// A service for `namespace` keeping runtime state under `root`.
    pub fn new(namespace: String, root: PathBuf, events: Publisher) -> Service {
        Service {
            namespace,
            runtime: Runtime::new(root),
            events,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            order: Mutex::new(()),
            gate: crate::reaper::Gate::default(),
        }
    }

    /// The pids of the container processes (inits and execs) that have
    /// not exited yet.
    pub fn live_pids(&self) -> Vec<i32> {
        let st = self.lock();
        let mut pids = Vec::new();
        for t in st.tasks.values() {
            let procs = std::iter::once(&t.init).chain(t.execs.values().map(|(p, _)| p));
            pids.extend(
                procs
                    .filter(|p| p.pid > 0 && p.exit.is_none())
                    .map(|p| p.pid),
            );
        }
        pids
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until containerd asked the shim to shut down.
    pub fn wait_for_shutdown(&self) {
        let mut st = self.lock();
        while !st.shutdown {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The reaper's report: process `pid` ended with `code`.
    pub fn reaped(&self, pid: i32, code: i32) {
        let exited = Exited {
            code: code as u32,
            at: now(),
        };
        let mut st = self.lock();
        let mut found = None;
        for (id, t) in st.tasks.iter_mut() {
            if t.init.pid == pid && t.init.exit.is_none() {
                t.init.exit = Some(exited.clone());
                found = Some((id.clone(), id.clone(), true));
                break;
            }
            if let Some((eid, (p, _))) = t
                .execs
                .iter_mut()
                .find(|(_, (p, _))| p.pid == pid && p.exit.is_none())
            {
                p.exit = Some(exited.clone());
                found = Some((id.clone(), eid.clone(), false));
                break;
            }
        }
        let Some((cid, id, init)) = found else {
            if st.unclaimed.len() > 4096 {
                st.unclaimed.clear();
            }
            st.unclaimed.insert(pid, exited);
            return;
        };
        drop(st);
        self.changed.notify_all();
        if init {
            self.check_oom(&cid);
        }
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        self.events.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: cid,
                id,
                pid: pid as u32,
                exit_status: exited.code,
                exited_at: Some(exited.at).into(),
                ..Default::default()
            },
        );
    }

    /// Sends TaskOOM when the OOM killer struck in container `id` since the
    /// last report.
    fn check_oom(&self, id: &str) {
        let Ok(container) = self.container(id) else {
            return;
        };
        let kills = container.oom_kills().unwrap_or(0);
        let mut st = self.lock();
        let Some(t) = st.tasks.get_mut(id) else {
            return;
        };
        if kills <= t.oom_reported {
            return;
        }
        t.oom_reported = kills;
        drop(st);
        log::info!("container {id}: the OOM killer struck ({kills} kills so far)");
        self.events.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            },
        );
    }

    /// Takes a registered exit for `pid` that happened before it was known:
    /// only if no live process has that pid now (else the entry is an older
    /// process's and is dropped).
    fn claim(st: &mut State, pid: i32) -> Option<Exited> {
        let e = st.unclaimed.remove(&pid)?;
        if Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
        Some(e)
    }

    fn task<'a>(st: &'a MutexGuard<'_, State>, id: &str) -> ttrpc::Result<&'a Task> {
        st.tasks.get(id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("container {id} does not exist in this shim"),
            )
        })
    }

    fn create(self: &Arc<Self>, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        {
            let mut st = self.lock();
            if st.tasks.contains_key(&req.id) || !st.creating.insert(req.id.clone()) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("container {} exists in this shim already", req.id),
                ));
            }
        }
        let id = req.id.clone();
        let created = self.create_new(req);
        self.lock().creating.remove(&id);
        created
    }

    /// Creates a task whose id no other task or create holds.
    fn create_new(self: &Arc<Self>, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "restoring from a checkpoint is not supported by the berth shim",
            ));
        }
        let mut opts = CreateOptions::default();
        if let Some(any) = req.options.as_ref() {
            if any.type_url.ends_with("containerd.runc.v1.Options") {
                let o = Options::parse_from_bytes(&any.value)
                    .map_err(|e| other("decode the runc options", e))?;
                opts.no_pivot = o.no_pivot_root;
                opts.no_new_keyring = o.no_new_keyring;
                if !o.binary_name.is_empty() || !o.root.is_empty() || o.systemd_cgroup {
                    log::info!(
                        "ignoring runc options BinaryName={:?} Root={:?} SystemdCgroup={}: berth's runtime is linked into this shim",
                        o.binary_name,
                        o.root,
                        o.systemd_cgroup
                    );
                }
            } else if !any.type_url.is_empty() {
                log::info!("ignoring runtime options of type {}", any.type_url);
            }
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs = bundle.join("rootfs");
        let mounts: Vec<berth_snapshot::Mount> = req
            .rootfs
            .iter()
            .map(|m| berth_snapshot::Mount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| other(&format!("create {}", rootfs.display()), e))?;
            berth_snapshot::mount_all(&mounts, &rootfs)
                .map_err(|e| other("mount the container's rootfs", e))?;
        }
        let io = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let t0 = std::time::Instant::now();
        let own_waits = self.gate.own_waits();
        let created = self.create_container(&req.id, &bundle, opts, &io);
        log::debug!("runtime step create {}: {:.3} ms", req.id, ms(t0));
        let (container, handles) = match created {
            Ok(c) => c,
            Err(e) => {
                if !mounts.is_empty() {
                    unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        let pid = container.pid();
        let memory = crate::oom::memory_cgroup_v1(&container.record().cgroup_paths);
        let mut init = Proc::new(io.clone());
        init.pid = pid;
        init.handles = handles;
        self.lock().tasks.insert(
            req.id.clone(),
            Task {
                container,
                bundle: bundle.clone(),
                init,
                execs: HashMap::new(),
                oom_reported: 0,
            },
        );
        // An init that died meanwhile is reaped now that it is known.
        drop(own_waits);
        if let Some(dir) = memory {
            let service = Arc::downgrade(self);
            let id = req.id.clone();
            let watching = crate::oom::watch(&dir, move || {
                if let Some(s) = service.upgrade() {
                    s.check_oom(&id);
                }
            });
            if !watching {
                log::warn!(
                    "container {}: no OOM notifications from {}",
                    req.id,
                    dir.display()
                );
            }
        }
        self.events.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: io.stdin,
                    stdout: io.stdout,
                    stderr: io.stderr,
                    terminal: io.terminal,
                    ..Default::default()
                })
                .into(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// Creates the container with its stdio (FIFOs or a pty).
    fn create_container(
        &self,
        id: &str,
        bundle: &Path,
        mut opts: CreateOptions,
        io: &Paths,
    ) -> ttrpc::Result<(Container, Handles)> {
        if io.terminal {
            let console = ConsoleSocket::bind(self.runtime.root())
                .map_err(|e| other("the console socket", e))?;
            opts.console_socket = Some(console.path().to_path_buf());
            let c = self
                .runtime
                .create(id, bundle, &opts)
                .map_err(|e| rt_err("create", e))?;
            match console.attach(io) {
                Ok(h) => Ok((c, h)),
                Err(e) => {
                    let _ = c.delete(true);
                    Err(other("attach the terminal", e))
                }
            }
        } else {
            let (fds, handles) = crate::stdio::pipes(io).map_err(|e| other("stdio", e))?;
            opts.stdio = Some(fds);
            let c = self
                .runtime
                .create(id, bundle, &opts)
                .map_err(|e| rt_err("create", e))?;
            Ok((c, handles))
        }
    }

    fn start(&self, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        // Poststart hooks, and the intermediate process of an exec.
        let _own_waits = self.gate.own_waits();
        if req.exec_id.is_empty() {
            let container = Self::task(&self.lock(), &req.id)?.container.clone();
            let t0 = std::time::Instant::now();
            container.start().map_err(|e| rt_err("start", e))?;
            log::debug!("runtime step start {}: {:.3} ms", req.id, ms(t0));
            let pid = container.pid();
            if let Some(t) = self.lock().tasks.get_mut(&req.id) {
                t.init.started = true;
            }
            self.events.publish(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            );
            return Ok(StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }
        let (container, process, io) = {
            let st = self.lock();
            let t = Self::task(&st, &req.id)?;
            let (p, spec) = t.execs.get(&req.exec_id).ok_or_else(|| {
                err(
                    Code::NOT_FOUND,
                    format!(
                        "exec {} does not exist in container {}",
                        req.exec_id, req.id
                    ),
                )
            })?;
            if p.started {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} was already started", req.exec_id),
                ));
            }
            (t.container.clone(), spec.clone(), p.io.clone())
        };
        let (pid, handles) = self.exec_process(&container, &process, &io)?;
        let mut st = self.lock();
        let early = Self::claim(&mut st, pid);
        if let Some((p, _)) = st
            .tasks
            .get_mut(&req.id)
            .and_then(|t| t.execs.get_mut(&req.exec_id))
        {
            p.pid = pid;
            p.started = true;
            p.handles = handles;
            p.exit = early.clone();
        }
        drop(st);
        self.events.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        if let Some(e) = early {
            self.changed.notify_all();
            self.events.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                TaskExit {
                    container_id: req.id.clone(),
                    id: req.exec_id.clone(),
                    pid: pid as u32,
                    exit_status: e.code,
                    exited_at: Some(e.at).into(),
                    ..Default::default()
                },
            );
        }
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// Runs an exec'd process with its stdio; returns its pid.
    fn exec_process(
        &self,
        container: &Container,
        process: &oci_spec::runtime::Process,
        io: &Paths,
    ) -> ttrpc::Result<(i32, Handles)> {
        let mut opts = ExecOptions::default();
        if io.terminal {
            let console = ConsoleSocket::bind(self.runtime.root())
                .map_err(|e| other("the console socket", e))?;
            opts.console_socket = Some(console.path().to_path_buf());
            let pid = container
                .exec(process, &opts)
                .map_err(|e| rt_err("exec", e))?;
            let handles = console
                .attach(io)
                .map_err(|e| other("attach the terminal", e))?;
            Ok((pid, handles))
        } else {
            let (fds, handles) = crate::stdio::pipes(io).map_err(|e| other("stdio", e))?;
            opts.stdio = Some(fds);
            let pid = container
                .exec(process, &opts)
                .map_err(|e| rt_err("exec", e))?;
            Ok((pid, handles))
        }
    }

    fn exec(&self, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&spec.value).map_err(|e| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("the exec's process spec: {e}"),
                )
            })?;
        let mut st = self.lock();
        let t = st.tasks.get_mut(&req.id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("container {} does not exist in this shim", req.id),
            )
        })?;
        if req.exec_id.is_empty() || t.execs.contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec id {:?} is empty or already used", req.exec_id),
            ));
        }
        let io = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        t.execs
            .insert(req.exec_id.clone(), (Proc::new(io), process));
        drop(st);
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn state(&self, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let st = self.lock();
        let t = Self::task(&st, &req.id)?;
        let p = t.proc(&req.exec_id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!(
                    "exec {} does not exist in container {}",
                    req.exec_id, req.id
                ),
            )
        })?;
        let status = match (&p.exit, p.started) {
            (Some(_), _) => Status::STOPPED,
            (None, false) => Status::CREATED,
            (None, true) if req.exec_id.is_empty() => match t.container.status() {
                berth_runtime::Status::Paused => Status::PAUSED,
                // STOPPED only once the reaper recorded the exit: a delete
                // that follows a STOPPED state then finds it.
                _ => Status::RUNNING,
            },
            (None, true) => Status::RUNNING,
        };
        Ok(StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: t.bundle.display().to_string(),
            pid: p.pid.max(0) as u32,
            status: status.into(),
            stdin: p.io.stdin.clone(),
            stdout: p.io.stdout.clone(),
            stderr: p.io.stderr.clone(),
            terminal: p.io.terminal,
            exit_status: p.exit.as_ref().map_or(0, |e| e.code),
            exited_at: p.exit.as_ref().map(|e| e.at.clone()).into(),
            ..Default::default()
        })
    }

    fn kill(&self, req: KillRequest) -> ttrpc::Result<Empty> {
        let st = self.lock();
        let t = Self::task(&st, &req.id)?;
        let signal = req.signal as i32;
        if req.exec_id.is_empty() {
            if t.init.exit.is_some() {
                return Err(err(Code::NOT_FOUND, "process already finished"));
            }
            let c = t.container.clone();
            drop(st);
            return c
                .kill(signal, req.all)
                .map(|()| Empty::new())
                .map_err(|e| rt_err("kill", e));
        }
        let p = t.proc(&req.exec_id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!(
                    "exec {} does not exist in container {}",
                    req.exec_id, req.id
                ),
            )
        })?;
        if p.exit.is_some() || p.pid <= 0 {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        // The raw number, as for the init: 0 and the real-time signals
        // too, which nix's Signal does not name. The pid is not reused: the
        // shim has not reaped it (no exit recorded).
        let pidfd = berth_runtime::pidfd_open(p.pid)
            .ok_or_else(|| err(Code::NOT_FOUND, "process already finished"))?;
        berth_runtime::pidfd_send_signal(&pidfd, signal).map_err(|e| match e {
            nix::errno::Errno::EINVAL => {
                err(Code::INVALID_ARGUMENT, format!("signal {signal}: {e}"))
            }
            e => other(&format!("signal exec {}", req.exec_id), e),
        })?;
        Ok(Empty::new())
    }

    fn delete(&self, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let mut st = self.lock();
        let t = st.tasks.get_mut(&req.id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("container {} does not exist in this shim", req.id),
            )
        })?;
        if !req.exec_id.is_empty() {
            let running = match t.execs.get(&req.exec_id) {
                None => {
                    return Err(err(
                        Code::NOT_FOUND,
                        format!(
                            "exec {} does not exist in container {}",
                            req.exec_id, req.id
                        ),
                    ))
                }
                Some((p, _)) => p.started && p.exit.is_none(),
            };
            if running {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is still running: kill it first", req.exec_id),
                ));
            }
            let (p, _) = t.execs.remove(&req.exec_id).expect("checked above");
            drop(st);
            // A wait on it (one that never started) ends: it is gone.
            self.changed.notify_all();
            let e = p.exit.unwrap_or_else(|| Exited { code: 0, at: now() });
            return Ok(DeleteResponse {
                pid: p.pid.max(0) as u32,
                exit_status: e.code,
                exited_at: Some(e.at).into(),
                ..Default::default()
            });
        }
        if t.init.started && t.init.exit.is_none() {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is still running: kill it first", req.id),
            ));
        }
        let t = st.tasks.remove(&req.id).expect("checked above");
        drop(st);
        // Waits on it or its execs end: they are gone.
        self.changed.notify_all();
        let t0 = std::time::Instant::now();
        {
            // Poststop hooks.
            let _own_waits = self.gate.own_waits();
            t.container.delete(true).map_err(|e| rt_err("delete", e))?;
        }
        log::debug!("runtime step delete {}: {:.3} ms", req.id, ms(t0));
        unmount_rootfs(&t.bundle);
        let e = t.init.exit.unwrap_or_else(|| Exited {
            code: 128 + libc::SIGKILL as u32,
            at: now(),
        });
        let pid = t.init.pid.max(0) as u32;
        self.events.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: e.code,
                exited_at: Some(e.at.clone()).into(),
                ..Default::default()
            },
        );
        Ok(DeleteResponse {
            pid,
            exit_status: e.code,
            exited_at: Some(e.at).into(),
            ..Default::default()
        })
    }

    fn wait(&self, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let mut st = self.lock();
        loop {
            let t = Self::task(&st, &req.id)?;
            let p = t.proc(&req.exec_id).ok_or_else(|| {
                err(
                    Code::NOT_FOUND,
                    format!(
                        "exec {} does not exist in container {}",
                        req.exec_id, req.id
                    ),
                )
            })?;
            if let Some(e) = &p.exit {
                return Ok(WaitResponse {
                    exit_status: e.code,
                    exited_at: Some(e.at.clone()).into(),
                    ..Default::default()
                });
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn container(&self, id: &str) -> ttrpc::Result<Container> {
        Ok(Self::task(&self.lock(), id)?.container.clone())
    }
}

impl containerd_shim_protos::Task for TaskService {
    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.0.state(req)
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        log::debug!("create {} in {}", req.id, req.bundle);
        self.0.create(req)
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.0.start(req)
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.0.delete(req)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pids = self
            .0
            .container(&req.id)?
            .pids()
            .map_err(|e| rt_err("pids", e))?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.0
            .container(&req.id)?
            .pause()
            .map_err(|e| rt_err("pause", e))?;
        self.0.events.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id,
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.0
            .container(&req.id)?
            .resume()
            .map_err(|e| rt_err("resume", e))?;
        self.0.events.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id,
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: containerd_shim_protos::shim::shim::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        Err(err(
            Code::UNIMPLEMENTED,
            format!(
                "checkpoint of container {}: not supported by the berth shim (berth's runtime has no CRIU support)",
                req.id
            ),
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.0.kill(req)
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.0.exec(req)
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let st = self.0.lock();
        let t = Service::task(&st, &req.id)?;
        let p = t.proc(&req.exec_id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("exec {} does not exist", req.exec_id),
            )
        })?;
        let Some(master) = &p.handles.master else {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "the process has no terminal to resize",
            ));
        };
        let (rows, cols) = (
            u16::try_from(req.height).unwrap_or(u16::MAX),
            u16::try_from(req.width).unwrap_or(u16::MAX),
        );
        berth_runtime::console::set_window_size(master, rows, cols)
            .map_err(|e| other("resize the terminal", e))?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let st = self.0.lock();
        let t = Service::task(&st, &req.id)?;
        if let Some(p) = t.proc(&req.exec_id) {
            if req.stdin {
                p.handles.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("the update's resources: {e}"),
                )
            })?;
        self.0
            .container(&req.id)?
            .update(&resources)
            .map_err(|e| rt_err("update", e))?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.0.wait(req)
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let c = self.0.container(&req.id)?;
        let stats = c.stats().map_err(|e| rt_err("stats", e))?;
        let metrics = crate::metrics::v1(&stats, c.oom_kills().unwrap_or(0));
        Ok(StatsResponse {
            stats: MessageField::some(
                crate::metrics::to_any(&metrics).map_err(|e| other("encode the metrics", e))?,
            ),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let st = self.0.lock();
        let task_pid = st
            .tasks
            .get(&req.id)
            .map_or(0, |t| t.init.pid.max(0) as u32);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let mut st = self.0.lock();
        if st.tasks.is_empty() {
            log::info!("shutting down the shim for namespace {}", self.0.namespace);
            st.shutdown = true;
            drop(st);
            self.0.changed.notify_all();
        }
        Ok(Empty::new())
    }
}
