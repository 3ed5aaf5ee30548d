//! `berth-runtime`: an OCI runtime with runc's command line, a thin layer
//! over the `berth-runtime` library.

mod logging;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_runtime::spec::MAX_ID;
use berth_runtime::{CreateOptions, ExecOptions, Intent, Runtime, Status};
use clap::{Parser, Subcommand, ValueEnum};
use oci_spec::runtime::Spec;

#[derive(Parser)]
#[command(
    name = "berth-runtime",
    version,
    about = "An OCI runtime with runc's command line"
)]
struct Cli {
    /// Root directory for storage of container state (default /run/berth,
    /// or $XDG_RUNTIME_DIR/berth when rootless).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Append log lines to this file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    /// Enable debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd for cgroups (not supported yet: a clear error).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless mode ('true', 'false', or 'auto': when not root): state
    /// under $XDG_RUNTIME_DIR; cgroups are used only where delegated.
    #[arg(long = "rootless", id = "global_rootless", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = ["true", "false", "auto"])]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Table,
    Json,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Container id.
    id: String,
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// File to write the init's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to (process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass N additional fds (3 .. 3+N) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
}

impl CreateArgs {
    fn options(&self, spec: Option<Spec>) -> CreateOptions {
        CreateOptions {
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            spec,
            stdio: None,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new config.json in the bundle.
    Spec {
        /// Bundle directory to write config.json to.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A spec for a rootless container.
        #[arg(long = "rootless", id = "spec_rootless")]
        rootless: bool,
    },
    /// Create a container (its init waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create, start and wait for a container, then delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after start instead of waiting.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the state of a container as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// List containers.
    List {
        /// Print ids only.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Send a signal to the container's init (default SIGTERM).
    Kill {
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container.
    Delete {
        /// Container id.
        id: String,
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// Container id.
        id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Print the features this runtime supports (JSON).
    Features,
    /// Change the resource limits of a running container.
    Update(UpdateArgs),
    /// Print the container's resource usage (JSON), once or every interval.
    Events {
        /// Container id.
        id: String,
        /// Print the stats once and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
    },
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// Container id.
    id: String,
    /// LinuxResources JSON file ("-" for stdin); the flags below override it.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Memory limit in bytes (k, m, g suffixes allowed).
    #[arg(long)]
    memory: Option<String>,
    /// Memory plus swap limit in bytes (-1 for unlimited).
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Maximum number of processes.
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CPUs to use (e.g. 0-1).
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
}

#[derive(clap::Args)]
struct ExecArgs {
    /// Container id.
    id: String,
    /// Command and arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// A process.json to run instead of the command line.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Environment variables KEY=value (repeatable).
    #[arg(short, long)]
    env: Vec<String>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Additional gids (repeatable).
    #[arg(short = 'g', long = "additional-gids", value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_ID)))]
    additional_gids: Vec<u32>,
    /// Add a capability (repeatable).
    #[arg(short, long)]
    cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Return once the process runs.
    #[arg(short, long)]
    detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Pass N additional fds (3 .. 3+N) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for runc compatibility; ignored.
    #[arg(long = "process-label", hide = true)]
    process_label: Option<String>,
    /// Accepted for runc compatibility; ignored.
    #[arg(long = "apparmor", hide = true)]
    apparmor: Option<String>,
}

/// The arguments, with runc's `--rootless VALUE` spelled `--rootless=VALUE`
/// (so a bare `--rootless` before the command does not take it as a value).
fn args() -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for a in std::env::args_os() {
        let value = matches!(a.to_str(), Some("true" | "false" | "auto"));
        match out.last_mut() {
            Some(prev) if value && prev == "--rootless" => {
                prev.push("=");
                prev.push(&a);
            }
            _ => out.push(a),
        }
    }
    out
}

/// The state root: `--root`, else /run/berth for root and
/// $XDG_RUNTIME_DIR/berth in rootless mode.
fn state_root(cli: &Cli) -> Result<PathBuf> {
    if let Some(root) = &cli.root {
        return Ok(root.clone());
    }
    let rootless = match cli.rootless.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => berth_rootless::is_rootless(),
    };
    if !rootless {
        return Ok(PathBuf::from("/run/berth"));
    }
    Ok(berth_rootless::dirs::runtime_dir()
        .context("rootless mode keeps container state in the user's runtime directory")?
        .join("berth"))
}

fn main() {
    let cli = Cli::parse_from(args());
    // Processes forked into the container must not expose the host's binary
    // writable through /proc/<pid>/exe (CVE-2019-5736 class): the library
    // decides whether to re-execute from a read-only mount first.
    let bundle = match &cli.cmd {
        Cmd::Create(args) | Cmd::Run { create: args, .. } => Some(args.bundle.as_path()),
        _ => None,
    };
    // Parsed only: create checks it, once.
    let spec = bundle.and_then(|b| berth_runtime::spec::read(b).ok());
    let intent = match (&cli.cmd, bundle) {
        (_, Some(_)) => Intent::Create(spec.as_ref()),
        (Cmd::Exec(_), None) => Intent::Exec,
        _ => Intent::Other,
    };
    if let Err(e) = berth_runtime::reexec_if_needed(intent) {
        logging::fatal(&anyhow::anyhow!(
            "cannot re-execute berth-runtime from a read-only mount of itself (needs open_tree and mount_setattr, Linux 5.12+): {e}"
        ));
    }
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("{}", berth_core::error_chain(e.as_ref()));
        std::process::exit(1);
    }
    match run(cli, spec) {
        Ok(code) => std::process::exit(code),
        Err(e) => logging::fatal(&e),
    }
}

/// Runs the command; `spec` is the bundle's config when `main` loaded it.
fn run(cli: Cli, spec: Option<Spec>) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup: the systemd cgroup driver is not supported yet; use the cgroupfs driver (podman: --cgroup-manager=cgroupfs; containerd: SystemdCgroup = false)");
    }
    let root = state_root(&cli)?;
    let rt = Runtime::new(&root);
    match cli.cmd {
        Cmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("File {} exists. Remove it first", path.display());
            }
            let spec = berth_runtime::spec_template::default_spec_json(rootless);
            let data = serde_json::to_vec_pretty(&spec)?;
            std::fs::write(&path, data)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Cmd::Create(args) => {
            rt.create(&args.id, &args.bundle, &args.options(spec))?;
        }
        Cmd::Start { id } => rt.load(&id)?.start()?,
        Cmd::Run {
            create,
            detach,
            keep,
        } => {
            if detach {
                let c = rt.create(&create.id, &create.bundle, &create.options(spec))?;
                if let Err(e) = c.start() {
                    let _ = c.delete(true);
                    return Err(e.into());
                }
                return Ok(0);
            }
            if keep {
                nix_subreaper()?;
                let c = rt.create(&create.id, &create.bundle, &create.options(spec))?;
                let fg = berth_runtime::Foreground::catch_signals()?;
                c.start()?;
                return Ok(fg.supervise(c.pid(), None, true, None)?);
            }
            return Ok(rt.run(&create.id, &create.bundle, &create.options(spec))?);
        }
        Cmd::State { id } => {
            let st = rt.load(&id)?.state();
            let mut out = std::io::stdout().lock();
            out.write_all(&serde_json::to_vec_pretty(&st)?)?;
            out.flush()?;
        }
        Cmd::List { quiet, format } => list(&rt, quiet, format)?,
        Cmd::Kill { id, signal, all } => {
            let sig = berth_runtime::signal::parse_signal(&signal)?;
            rt.load(&id)?.kill(sig, all)?;
        }
        Cmd::Delete { id, force } => match rt.load(&id) {
            Ok(c) => c.delete(force)?,
            Err(berth_runtime::Error::NotExist { .. }) if force => {
                // A create that died before writing its state leaves a bare
                // directory: --force removes it, as runc does.
                let dir = root.join(&id);
                if !id.contains('/') && id != "." && id != ".." && dir.is_dir() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("cannot remove {}", dir.display()))?;
                }
            }
            Err(e) => return Err(e.into()),
        },
        // runc: every exec failure is "exec failed: ..." with status 255, so
        // callers can tell it from the process's own exit status.
        Cmd::Exec(args) => match exec(&rt, args) {
            Ok(code) => return Ok(code),
            Err(e) => logging::fatal_with_code(&e.context("exec failed"), 255),
        },
        Cmd::Ps {
            id,
            format,
            ps_args,
        } => ps(&rt, &id, format, ps_args)?,
        Cmd::Pause { id } => rt.load(&id)?.pause()?,
        Cmd::Resume { id } => rt.load(&id)?.resume()?,
        Cmd::Update(args) => update(&rt, args)?,
        Cmd::Events {
            id,
            stats,
            interval,
        } => events(&rt, &id, stats, &interval)?,
        Cmd::Features => {
            let mut out = std::io::stdout().lock();
            out.write_all(&serde_json::to_vec_pretty(
                &berth_runtime::features::features(),
            )?)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(0)
}

fn nix_subreaper() -> Result<()> {
    berth_runtime::set_child_subreaper().context("PR_SET_CHILD_SUBREAPER")
}

fn list(rt: &Runtime, quiet: bool, format: Format) -> Result<()> {
    let containers = rt.list()?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &containers {
            writeln!(out, "{}", c.id())?;
        }
        return Ok(());
    }
    let states: Vec<_> = containers
        .iter()
        .map(|c| {
            let mut s = c.state();
            s.owner = c.owner();
            s
        })
        .collect();
    if format == Format::Json {
        if states.is_empty() {
            writeln!(out, "null")?;
        } else {
            writeln!(out, "{}", serde_json::to_string(&states)?)?;
        }
        return Ok(());
    }
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        .map(String::from)
        .to_vec()];
    for s in &states {
        rows.push(vec![
            s.id.clone(),
            s.pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(())
}

/// Go's tabwriter as runc configures it (minwidth 12, padding 3).
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(cols.saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + 3).max(12));
        }
    }
    let mut s = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                s.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                s.push_str(cell);
            }
        }
        s.push('\n');
    }
    s
}

fn parse_user(u: &str) -> Result<(u32, Option<u32>)> {
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let num = |s: &str| -> Result<u32> {
        let id: u32 = s
            .parse()
            .with_context(|| format!("--user {u:?}: {s:?} is not a numeric id (use uid[:gid])"))?;
        if id > MAX_ID {
            bail!("--user {u:?}: {id} is out of range (ids run from 0 to {MAX_ID})");
        }
        Ok(id)
    };
    Ok((num(uid)?, gid.map(num).transpose()?))
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<i32> {
    let c = rt.load(&a.id)?;
    let process = if let Some(path) = &a.process {
        berth_runtime::spec::load_process(path)?
    } else {
        if a.command.is_empty() {
            bail!("exec: no command given (pass the command after the container id, or --process FILE)");
        }
        let mut p = c.record().config.process().clone().unwrap_or_default();
        p.set_args(Some(a.command.clone()));
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(a.env.iter().cloned());
        p.set_env(Some(env));
        if let Some(cwd) = &a.cwd {
            p.set_cwd(cwd.clone());
        }
        p.set_terminal(Some(a.tty));
        if let Some(u) = &a.user {
            let (uid, gid) = parse_user(u)?;
            let mut user = p.user().clone();
            user.set_uid(uid);
            if let Some(g) = gid {
                user.set_gid(g);
            }
            p.set_user(user);
        }
        if !a.additional_gids.is_empty() {
            let mut user = p.user().clone();
            user.set_additional_gids(Some(a.additional_gids.clone()));
            p.set_user(user);
        }
        if a.no_new_privs {
            p.set_no_new_privileges(Some(true));
        }
        if !a.cap.is_empty() {
            berth_runtime::spec::add_capabilities(&mut p, &a.cap)?;
        }
        p
    };
    let opts = ExecOptions {
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        stdio: None,
    };
    if a.detach {
        c.exec(&process, &opts)?;
        return Ok(0);
    }
    nix_subreaper()?;
    Ok(c.exec_foreground(&process, &opts)?)
}

fn ps(rt: &Runtime, id: &str, format: Format, ps_args: Vec<String>) -> Result<()> {
    let c = rt.load(id)?;
    if c.status() == Status::Stopped {
        bail!("container not running");
    }
    let pids = c.pids()?;
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string(&pids)?)?;
        return Ok(());
    }
    let args = if ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_args
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("cannot run ps(1)")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column; include it in the ps options")?;
    writeln!(out, "{header}")?;
    for line in lines {
        if let Some(pid) = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&pid) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// "512m" → 536870912 (k, m, g: powers of 1024, optional trailing "b");
/// negative values ("-1": unlimited) are kept as they are.
fn parse_bytes(flag: &str, v: &str) -> Result<i64> {
    let lower = v.to_ascii_lowercase();
    let body = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match body.char_indices().last() {
        Some((i, 'k')) => (&body[..i], 1i64 << 10),
        Some((i, 'm')) => (&body[..i], 1 << 20),
        Some((i, 'g')) => (&body[..i], 1 << 30),
        _ => (body, 1),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("{flag} {v:?}: not a size (use bytes or a k/m/g suffix)"))?;
    if n < 0 {
        return Ok(n);
    }
    n.checked_mul(mult)
        .with_context(|| format!("{flag} {v:?}: more bytes than fit in 63 bits"))
}

fn update(rt: &Runtime, a: UpdateArgs) -> Result<()> {
    let c = rt.load(&a.id)?;
    let mut res = match &a.resources {
        Some(p) => {
            let data = if p.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                v
            } else {
                std::fs::read(p)
                    .with_context(|| format!("cannot read --resources {}", p.display()))?
            };
            serde_json::to_value(berth_runtime::spec::parse_resources(p, &data)?)?
        }
        None => serde_json::json!({}),
    };
    if let Some(m) = &a.memory {
        res["memory"]["limit"] = parse_bytes("--memory", m)?.into();
    }
    if let Some(m) = &a.memory_swap {
        res["memory"]["swap"] = parse_bytes("--memory-swap", m)?.into();
    }
    if let Some(p) = a.pids_limit {
        res["pids"]["limit"] = p.into();
    }
    if let Some(v) = a.cpu_shares {
        res["cpu"]["shares"] = v.into();
    }
    if let Some(v) = a.cpu_quota {
        res["cpu"]["quota"] = v.into();
    }
    if let Some(v) = a.cpu_period {
        res["cpu"]["period"] = v.into();
    }
    if let Some(v) = &a.cpuset_cpus {
        res["cpu"]["cpus"] = v.clone().into();
    }
    if let Some(v) = &a.cpuset_mems {
        res["cpu"]["mems"] = v.clone().into();
    }
    let res = berth_runtime::spec::parse_resources(
        std::path::Path::new("update flags"),
        &serde_json::to_vec(&res)?,
    )?;
    c.update(&res)?;
    Ok(())
}

/// Go-style duration: "5s", "500ms", "1m".
fn parse_interval(v: &str) -> Result<std::time::Duration> {
    let bad = || anyhow::anyhow!("--interval {v:?}: use a duration like 5s or 500ms");
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| v.split_at(i))
        .ok_or_else(bad)?;
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    })
}

/// Prints the stats once (`--stats`) or every `interval`, and between
/// them, like runc, `{"type":"oom","id":ID}` each time the OOM killer
/// killed a process of the container (checked every 100 ms).
fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> Result<()> {
    let c = rt.load(id)?;
    let every = parse_interval(interval)?;
    let print = |line: serde_json::Value| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    let mut oom_kills = c.oom_kills()?;
    let mut next_stats = Some(std::time::Instant::now());
    loop {
        let now = std::time::Instant::now();
        if next_stats.is_some_and(|t| now >= t) {
            let stats = c.stats()?;
            print(serde_json::json!({"type": "stats", "id": id, "data": stats}))?;
            if once {
                return Ok(());
            }
            // An interval past what a clock holds: stats once, then OOM events.
            next_stats = now.checked_add(every);
        }
        let kills = c.oom_kills()?;
        if kills > oom_kills {
            print(serde_json::json!({"type": "oom", "id": id}))?;
        }
        oom_kills = kills;
        let tick = std::time::Duration::from_millis(100);
        let wait = next_stats.map_or(tick, |t| {
            t.saturating_duration_since(std::time::Instant::now())
        });
        std::thread::sleep(wait.min(tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_like_runc() {
        let rows = vec![
            vec!["ID".into(), "PID".into(), "OWNER".into()],
            vec!["t1".into(), "18285".into(), "root".into()],
        ];
        assert_eq!(
            table(&rows),
            "ID          PID         OWNER\nt1          18285       root\n"
        );
    }

    #[test]
    fn sizes_and_intervals_parse_like_runc() {
        assert_eq!(parse_bytes("--memory", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("--memory", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("--memory", "4096").unwrap(), 4096);
        assert_eq!(parse_bytes("--memory-swap", "-1").unwrap(), -1);
        assert!(parse_bytes("--memory", "lots")
            .unwrap_err()
            .to_string()
            .contains("lots"));
        assert_eq!(
            parse_interval("500ms").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            parse_interval("5s").unwrap(),
            std::time::Duration::from_secs(5)
        );
        assert!(parse_interval("soon").is_err());
        // Too large for the arithmetic: an error naming the value, no overflow.
        assert!(parse_interval("18446744073709551615m")
            .unwrap_err()
            .to_string()
            .contains("18446744073709551615m"));
        assert!(parse_bytes("--memory", "9223372036854775807g")
            .unwrap_err()
            .to_string()
            .contains("63 bits"));
    }

    #[test]
    fn user_flag_parses_uid_and_gid() {
        assert_eq!(parse_user("1000:100").unwrap(), (1000, Some(100)));
        assert_eq!(parse_user("7").unwrap(), (7, None));
        assert!(parse_user("bob").unwrap_err().to_string().contains("bob"));
    }
}
