//! The commands on containers after `run`, with podman's names, flags and
//! exit codes: ps, logs, exec, stop, kill, start, restart, rm, wait,
//! attach, container prune (and the container half of inspect). Each maps
//! onto [`berth_engine::Engine`]'s lifecycle calls; detached containers
//! run under `berth-monitor`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_engine::logs::{self, LogEntry};
use berth_engine::{ContainerRecord, Engine, Status};
use serde_json::{json, Value};

use crate::Global;

/// Exit code for errors of berth itself, as podman.
const BERTH_ERROR: i32 = 125;

/// The container commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List containers (running ones; -a for all).
    Ps {
        /// Show every container, not only running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Print only the ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Output format: `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Print a container's output.
    Logs {
        /// Keep printing new output until the container exits.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Prefix each line with its time.
        #[arg(long, short = 't')]
        timestamps: bool,
        /// The container (name or id prefix).
        container: String,
    },
    /// Run a command in a running container.
    Exec(Box<ExecArgs>),
    /// Stop containers: the image's StopSignal (SIGTERM), SIGKILL after a timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(long = "time", short = 't', default_value_t = 10)]
        time: u64,
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers (default SIGKILL).
    Kill {
        /// The signal (name or number).
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Start stopped containers again, on their existing snapshot.
    Start {
        /// Attach to the container (as `berth attach`) until it exits; exit with its code.
        #[arg(long, short = 'a')]
        attach: bool,
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop and start containers.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(long = "time", short = 't', default_value_t = 10)]
        time: u64,
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers: runtime state, mounts, snapshot, log, name.
    Rm {
        /// Kill and remove running containers too.
        #[arg(long, short = 'f')]
        force: bool,
        /// Remove the container's anonymous volumes too.
        #[arg(long, short = 'v')]
        volumes: bool,
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to exit; print their exit codes.
    Wait {
        /// The containers (names or id prefixes).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Connect this terminal to a running container through its monitor:
    /// its output, and stdin when it was run with -i (ctrl-p ctrl-q
    /// detaches from a -t container).
    Attach {
        /// Do not forward stdin.
        #[arg(long)]
        no_stdin: bool,
        /// The container (name or id prefix).
        container: String,
    },
    /// Manage containers.
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
}

/// `berth container ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Remove every container that is not running.
    Prune {
        /// Do not ask (berth never asks; accepted for podman's scripts).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// `berth exec` options (podman's).
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Run in the background; print nothing.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// User: name, uid, name:group or uid:gid (resolved in the container).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Set an environment variable (`KEY=value`).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The container (name or id prefix).
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs one container command; errors of berth itself exit 125.
pub fn run(cmd: Command, global: &Global) -> Result<i32> {
    let engine = Engine::open(&global.root)?;
    match cmd {
        Command::Ps { all, quiet, format } => ps(&engine, all, quiet, &format),
        Command::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => each(&engine, &[container], |rec| {
            print_logs(&engine, rec, follow, tail, timestamps)
        }),
        Command::Exec(args) => exec(&engine, &args),
        Command::Stop { time, containers } => each(&engine, &containers, |rec| {
            engine.stop(rec, Duration::from_secs(time))?;
            println!("{}", rec.name);
            Ok(0)
        }),
        Command::Kill { signal, containers } => {
            let sig = berth_runtime::signal::parse_signal(&signal)?;
            each(&engine, &containers, |rec| {
                engine.kill(rec, sig)?;
                println!("{}", rec.name);
                Ok(0)
            })
        }
        Command::Start { attach, containers } => each(&engine, &containers, |rec| {
            if engine.monitor_alive(&rec.id) {
                println!("{}", rec.name);
                return Ok(0);
            }
            if attach {
                let sock = engine.start_attached(rec, &monitor_program())?;
                return attach_to(&engine, rec, sock, true);
            }
            engine.start_detached(rec, &monitor_program())?;
            println!("{}", rec.name);
            Ok(0)
        }),
        Command::Restart { time, containers } => each(&engine, &containers, |rec| {
            engine.stop(rec, Duration::from_secs(time))?;
            engine.start_detached(rec, &monitor_program())?;
            println!("{}", rec.id);
            Ok(0)
        }),
        Command::Rm {
            force,
            volumes,
            containers,
        } => {
            let mut code = 0;
            for query in &containers {
                let removed = engine.find_container(query).and_then(|rec| {
                    engine.remove_container(&rec, force)?;
                    if volumes {
                        engine.remove_anonymous_volumes(&rec)?;
                    }
                    Ok(rec)
                });
                match removed {
                    Ok(rec) => println!("{}", rec.id),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        code = match e {
                            berth_engine::Error::State { .. } => 2,
                            _ => 1,
                        };
                    }
                }
            }
            Ok(code)
        }
        Command::Wait { containers } => each(&engine, &containers, |rec| {
            let socket = engine.layout().attach_socket(&rec.id);
            if rec.auto_remove {
                // Its record goes with its exit: the monitor tells the code.
                if let Ok(sock) = berth_engine::attach::connect(&socket) {
                    if let Some(code) = crate::attach::exit_code(sock)? {
                        println!("{code}");
                        return Ok(0);
                    }
                }
            }
            engine.wait_monitor(&rec.id, None)?;
            let rec = engine.container_record(&rec.id)?;
            println!("{}", rec.exit_code.unwrap_or(-1));
            Ok(0)
        }),
        Command::Attach {
            no_stdin,
            container,
        } => each(&engine, &[container], |rec| {
            let socket = engine.layout().attach_socket(&rec.id);
            if !engine.monitor_alive(&rec.id) || !socket.exists() {
                bail!(
                    "container {}: it is not running (start it with `berth start -a`)",
                    rec.name
                );
            }
            let sock = berth_engine::attach::connect(&socket)?;
            attach_to(&engine, rec, sock, !no_stdin)
        }),
        Command::Container {
            command: ContainerCommand::Prune { force: _ },
        } => {
            for id in engine.prune_containers()? {
                println!("{id}");
            }
            Ok(0)
        }
    }
}

/// Runs `f` on the container each query names; the last failure's code
/// (125, errors printed) when one fails.
fn each(
    engine: &Engine,
    queries: &[String],
    mut f: impl FnMut(&ContainerRecord) -> Result<i32>,
) -> Result<i32> {
    let mut code = 0;
    for q in queries {
        match engine
            .find_container(q)
            .map_err(anyhow::Error::from)
            .and_then(|rec| f(&rec))
        {
            Ok(c) => code = c,
            Err(e) => {
                eprintln!("berth: {}", crate::describe(&e));
                code = BERTH_ERROR;
            }
        }
    }
    Ok(code)
}

/// The monitor program: `$BERTH_MONITOR`, else `berth-monitor` beside
/// this binary.
pub(crate) fn monitor_program() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_MONITOR") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("berth-monitor")))
        .unwrap_or_else(|| PathBuf::from("berth-monitor"))
}

/// The state podman shows: running, exited or created.
fn state(engine: &Engine, rec: &ContainerRecord) -> &'static str {
    match rec.status {
        Status::Running if engine.monitor_alive(&rec.id) => "running",
        Status::Created => "created",
        _ => "exited",
    }
}

/// podman's STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago".
fn status_text(engine: &Engine, rec: &ContainerRecord) -> String {
    match state(engine, rec) {
        "running" => format!("Up {}", ago(rec.started.as_deref())),
        "created" => "Created".to_string(),
        _ => {
            let code = rec
                .exit_code
                .map_or_else(|| "exit code unknown".to_string(), |c| c.to_string());
            format!("Exited ({code}) {} ago", ago(rec.finished.as_deref()))
        }
    }
}

/// How long ago `time` was, in words ("a while" when it is unknown).
fn ago(time: Option<&str>) -> String {
    crate::table::since(time).unwrap_or_else(|| "a while".to_string())
}

fn ps(engine: &Engine, all: bool, quiet: bool, format: &str) -> Result<i32> {
    engine.reap_abandoned()?;
    let mut recs: Vec<_> = engine
        .containers()?
        .into_iter()
        .filter(|r| all || state(engine, r) == "running")
        .collect();
    recs.sort_by(|a, b| b.created.cmp(&a.created));
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in &recs {
            writeln!(out, "{}", &r.id[..12])?;
        }
        return Ok(0);
    }
    match format {
        "json" => {
            let list: Vec<Value> = recs
                .iter()
                .map(|r| {
                    json!({
                        "Id": r.id,
                        "Names": [r.name],
                        "Image": r.image_ref,
                        "ImageID": r.image_id,
                        "Command": r.args,
                        "Created": r.created,
                        "State": state(engine, r),
                        "Status": status_text(engine, r),
                        "Exited": state(engine, r) == "exited",
                        "ExitCode": r.exit_code,
                        "Pid": r.pid,
                        "StartedAt": r.started,
                        "ExitedAt": r.finished,
                        "Restarts": r.restart_count,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        "table" => {
            let mut rows = vec![[
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "NAMES".into(),
            ]];
            for r in &recs {
                rows.push([
                    r.id[..12].to_string(),
                    r.image_ref.clone(),
                    truncate(&r.args.join(" "), 20),
                    format!("{} ago", ago(Some(&r.created))),
                    status_text(engine, r),
                    r.name.clone(),
                ]);
            }
            crate::table::write_table(&mut out, &rows, 2)?;
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(0)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The container half of `berth inspect`: the JSON of the container
/// `query` names, None when no container does.
pub(crate) fn inspect_json(root: &Path, query: &str) -> Result<Option<Value>> {
    let engine = Engine::open(root)?;
    let rec = match engine.find_container(query) {
        Ok(r) => r,
        Err(berth_engine::Error::NoSuchContainer { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let spec = engine.container_spec(&rec.id).ok();
    let process = spec.as_ref().and_then(|s| s.process().clone());
    let mounts: Vec<Value> = spec
        .as_ref()
        .and_then(|s| s.mounts().clone())
        .unwrap_or_default()
        .iter()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .map(|m| {
            // A volume's mount is a bind of its _data.
            let volume = rec
                .volumes
                .iter()
                .find(|v| m.source().as_deref() == Some(engine.volume_mountpoint(v).as_path()));
            json!({
                "Type": if volume.is_some() { "volume" } else { "bind" },
                "Name": volume,
                "Source": m.source(),
                "Destination": m.destination(),
                "Options": m.options(),
            })
        })
        .collect();
    let state = state(&engine, &rec);
    let annotations = spec
        .as_ref()
        .and_then(|s| s.annotations().clone())
        .unwrap_or_default();
    Ok(Some(json!({
        "Id": rec.id,
        "Name": rec.name,
        "Created": rec.created,
        "Path": rec.args.first(),
        "Args": rec.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": state,
            "Running": state == "running",
            "Pid": rec.pid,
            "ExitCode": rec.exit_code,
            "Error": if state == "exited" && rec.exit_code.is_none() {
                "exit code unknown: its monitor was killed or the machine restarted"
            } else { "" },
            "StartedAt": rec.started,
            "FinishedAt": rec.finished,
            "RestartCount": rec.restart_count,
        },
        "Image": rec.image_id,
        "ImageName": rec.image_ref,
        "RestartCount": rec.restart_count,
        "Mounts": mounts,
        "NetworkSettings": berth_engine::network::inspect(engine.layout(), &rec.id)?,
        "LogPath": engine.layout().container_log(&rec.id),
        "HostConfig": {
            "RestartPolicy": rec.restart.to_string(),
            "AutoRemove": rec.auto_remove,
        },
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()),
            "Env": process.as_ref().and_then(|p| p.env().clone()),
            "Cmd": rec.args,
            "WorkingDir": process.as_ref().map(|p| p.cwd().clone()),
            "Tty": process.as_ref().and_then(|p| p.terminal()).unwrap_or(false),
            "User": process.as_ref().map(|p| format!("{}:{}", p.user().uid(), p.user().gid())),
            "StopSignal": annotations.get(berth_engine::spec::STOP_SIGNAL_ANNOTATION),
            "Annotations": annotations,
        },
    })))
}

/// The entries of `rec`'s log and where its current file ends.
fn log_end(engine: &Engine, rec: &ContainerRecord) -> (Vec<LogEntry>, LogPos) {
    let path = engine.layout().container_log(&rec.id);
    let (entries, end) = logs::read_log(&path).unwrap_or_default();
    (entries, LogPos::at(&path, end))
}

/// A place in a log file that may be rotated under the reader.
#[derive(Debug, Clone, Copy)]
struct LogPos {
    inode: u64,
    offset: u64,
}

impl LogPos {
    fn at(path: &Path, offset: u64) -> LogPos {
        use std::os::unix::fs::MetadataExt;
        LogPos {
            inode: std::fs::metadata(path).map_or(0, |m| m.ino()),
            offset,
        }
    }

    /// The entries written after this place; follows one rotation.
    fn read_new(&mut self, path: &Path) -> Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        let now = LogPos::at(path, 0);
        if now.inode != self.inode {
            logs::read_from(&logs::rotated(path), self.offset, &mut out)?;
            *self = now;
        }
        self.offset = logs::read_from(path, self.offset, &mut out)?;
        Ok(out)
    }
}

fn print_entries(entries: &[LogEntry], timestamps: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut stderr
        } else {
            &mut stdout
        };
        if timestamps {
            write!(w, "{} ", e.time)?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    stdout.flush()?;
    Ok(())
}

/// How often `logs -f` and `attach` look for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

fn print_logs(
    engine: &Engine,
    rec: &ContainerRecord,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<i32> {
    let (entries, mut pos) = log_end(engine, rec);
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    print_entries(&entries[skip..], timestamps)?;
    if follow {
        let path = engine.layout().container_log(&rec.id);
        loop {
            let alive = engine.monitor_alive(&rec.id);
            print_entries(&pos.read_new(&path)?, timestamps)?;
            if !alive {
                break;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
    Ok(0)
}

/// Attaches this terminal to `rec`'s container through `sock` (stdin
/// too when `stdin` and the container keeps its stdin open); returns its
/// exit code, 0 when the user detached.
fn attach_to(
    engine: &Engine,
    rec: &ContainerRecord,
    sock: std::os::unix::net::UnixStream,
    stdin: bool,
) -> Result<i32> {
    let tty = engine
        .container_spec(&rec.id)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false);
    match crate::attach::attach(sock, tty, stdin && rec.stdin_open)? {
        crate::attach::Outcome::Exited(code) => Ok(code),
        crate::attach::Outcome::Detached => Ok(0),
        crate::attach::Outcome::Lost => {
            engine.wait_monitor(&rec.id, None)?;
            let rec = engine.find_container(&rec.id)?;
            match rec.exit_code {
                Some(code) => Ok(code),
                None => bail!(
                    "container {}: lost its monitor; its exit code is unknown",
                    rec.name
                ),
            }
        }
    }
}

/// `berth exec`: the container's process settings (env, cwd, user) with
/// the command line's changes, run in the container with the runtime
/// linked in.
fn exec(engine: &Engine, args: &ExecArgs) -> Result<i32> {
    let outcome = (|| -> Result<i32> {
        let rec = engine.find_container(&args.container)?;
        if !engine.monitor_alive(&rec.id) {
            bail!("container {}: it is not running (start it first)", rec.name);
        }
        let spec = engine.container_spec(&rec.id)?;
        let mut process = spec
            .process()
            .clone()
            .context("the container's spec has no process")?;
        process.set_args(Some(args.command.clone()));
        process.set_terminal(Some(args.tty));
        process.set_console_size(None);
        let mut env = process.env().clone().unwrap_or_default();
        let mut extra = args.env.clone();
        if args.tty {
            extra.insert(0, "TERM=xterm".to_string());
        }
        for e in &extra {
            let Some((key, _)) = e.split_once('=') else {
                bail!("-e {e:?}: expected KEY=value");
            };
            env.retain(|old| old.split_once('=').map(|(k, _)| k) != Some(key));
            env.push(e.clone());
        }
        process.set_env(Some(env));
        if let Some(w) = &args.workdir {
            if !w.starts_with('/') {
                bail!("-w {w:?}: give an absolute path in the container");
            }
            process.set_cwd(PathBuf::from(w));
        }
        if let Some(u) = &args.user {
            let rootfs = berth_engine::bundle_dir(&rec.state_root, &rec.id).join("rootfs");
            let user = berth_engine::user::resolve_user(&rootfs, u)?;
            let mut spec_user = process.user().clone();
            spec_user.set_uid(user.uid);
            spec_user.set_gid(user.gid);
            spec_user.set_additional_gids(
                (!user.additional_gids.is_empty()).then_some(user.additional_gids),
            );
            process.set_user(spec_user);
        }
        let container = berth_runtime::Runtime::new(&rec.state_root).load(&rec.id)?;
        if !args.interactive {
            let null = std::fs::File::open("/dev/null")?;
            nix::unistd::dup2_stdin(&null)?;
        }
        if args.detach {
            if args.tty {
                bail!("-d and -t together: a detached exec has no terminal to give");
            }
            container.exec(&process, &Default::default())?;
            return Ok(0);
        }
        berth_runtime::set_child_subreaper()?;
        Ok(container.exec_foreground(&process, &Default::default())?)
    })();
    outcome.or_else(|e| {
        eprintln!("berth: {}", crate::describe(&e));
        Ok(exec_error_code(&e))
    })
}

/// podman's exit codes for a failed exec: 127 when the command is not
/// found, 126 when it cannot be run, 125 for everything else.
fn exec_error_code(e: &anyhow::Error) -> i32 {
    berth_engine::command_failure_code(&crate::describe(e)).unwrap_or(BERTH_ERROR)
}
