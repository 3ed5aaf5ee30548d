//! `berth run IMAGE [CMD...]`: the command line mapped onto
//! [`berth_engine::Engine::run`], which unpacks, creates and runs the
//! container in the foreground with the runtime linked in.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_engine::limits::{self, Ulimit};
use berth_engine::spec::{parse_label, read_env_file};
use berth_engine::{Attach, ContainerOptions, Engine, Limits, Overrides, RestartPolicy, Security};

use crate::Global;

/// Exit code for errors of berth itself (not the container's), as docker.
const BERTH_ERROR: i32 = 125;

/// `berth run` options (docker's names).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container (state, snapshot, mounts) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background under a monitor; print the container's id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Run a minimal init as pid 1 (berth itself, read-only at /dev/init)
    /// that forwards signals to the command and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Keep stdin open: the container reads berth's stdin (else /dev/null).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the container a terminal (a pty proxied to berth's stdio).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable (`KEY=value`, or `KEY` to pass berth's value).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// -v, --mount, --tmpfs.
    #[command(flatten)]
    pub mounts: crate::volumes::MountArgs,
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
    /// When to pull the image: missing, always, never (podman's names).
    #[arg(long, value_enum, default_value_t = crate::pull::PullPolicy::Missing)]
    pub pull: crate::pull::PullPolicy,
    /// The image (name, ID or digest prefix).
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// --restart, --env-file, --label, --group-add (boxed, like the option groups
    /// below, to keep the command enum small; last, so that the groups'
    /// help headings cover only their own options).
    #[command(flatten)]
    pub config: Box<ConfigArgs>,
    /// Capabilities, seccomp, no_new_privs, --privileged.
    #[command(flatten, next_help_heading = "Security")]
    pub security: Box<SecurityArgs>,
    /// cgroup limits, rlimits, sysctls.
    #[command(flatten, next_help_heading = "Resources")]
    pub limits: Box<LimitArgs>,
    /// --network, -p, --dns, --add-host.
    #[command(flatten, next_help_heading = "Network")]
    pub network: Box<crate::network::NetworkArgs>,
    /// How to reach the registry when the image is pulled.
    #[command(flatten, next_help_heading = "Registry")]
    pub registry: Box<crate::pull::RegistryArgs>,
}

/// `berth run`'s restart policy, environment files, labels and extra groups.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Restart policy of a detached container: no, on-failure[:MAX], always, unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Log option of a detached container: max-size=SIZE (rotate its log past SIZE).
    #[arg(long = "log-opt", value_name = "max-size=SIZE")]
    pub log_opts: Vec<String>,
    /// Read environment variables from a file (`KEY=value` lines; `-e` wins).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Add a label (`KEY=VALUE`) to the container's annotations.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add a supplementary group (name in the image's /etc/group, or gid).
    #[arg(long = "group-add", value_name = "GROUP", value_delimiter = ',')]
    pub group_add: Vec<String>,
}

/// `berth run`'s security options (podman's names and meanings; see
/// [`berth_engine::security`]).
#[derive(Debug, clap::Args)]
pub struct SecurityArgs {
    /// Add capabilities (NET_ADMIN, CAP_NET_ADMIN, ALL).
    #[arg(long = "cap-add", value_name = "CAP", value_delimiter = ',')]
    pub cap_add: Vec<String>,
    /// Drop capabilities (names, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP", value_delimiter = ',')]
    pub cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined, seccomp=FILE, no-new-privileges.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opts: Vec<String>,
    /// Every capability, no seccomp, no masked paths, the host's devices.
    #[arg(long)]
    pub privileged: bool,
    /// Add a host device: HOST[:CONTAINER][:PERMS], PERMS from rwm.
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
}

/// `berth run`'s resource options (podman's names and units; see
/// [`berth_engine::limits`]).
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(long, short = 'm', value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap; default twice --memory).
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs (0.5: a CFS quota of 50000 per 100000 µs).
    #[arg(long, value_name = "NUMBER", allow_hyphen_values = true)]
    pub cpus: Option<String>,
    /// Relative CPU weight (cgroup v1 cpu.shares).
    #[arg(long = "cpu-shares", short = 'c', value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may use (e.g. 0-2,4).
    #[arg(long = "cpuset-cpus", value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// rlimit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Namespaced sysctl: KEY=VALUE (net.*, kernel.shm*, kernel.msg*, ...).
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctls: Vec<String>,
    /// OOM score adjustment of the container's init (-1000..1000).
    #[arg(long = "oom-score-adj", value_name = "N", allow_hyphen_values = true)]
    pub oom_score_adj: Option<String>,
    /// Size of /dev/shm (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
}

/// Runs `berth run`: returns the container's exit code, or 125 (with the
/// error printed) when berth itself fails.
pub fn run(args: RunArgs, global: &Global) -> Result<i32> {
    // The runtime forks container processes from this process: their
    // /proc/self/exe must never be a writable host binary (CVE-2019-5736).
    // The image's spec always has a new pid namespace and no hooks, so the
    // runtime's exec trampoline covers it; without one, re-execute from a
    // read-only mount of berth first.
    if args.detach {
        return detached(&args, global);
    }
    if args.config.restart != "no" {
        eprintln!("berth: --restart needs -d (a foreground container is not restarted)");
        return Ok(BERTH_ERROR);
    }
    if !args.config.log_opts.is_empty() {
        eprintln!("berth: --log-opt needs -d (a foreground container's output is not logged)");
        return Ok(BERTH_ERROR);
    }
    if !berth_runtime::trampoline::available() {
        if let Err(e) = berth_runtime::reexec_read_only() {
            eprintln!("berth: cannot re-execute from a read-only copy of berth: {e}");
            return Ok(BERTH_ERROR);
        }
    }
    let outcome = overrides(&args).and_then(|overrides| {
        let engine = Engine::open(&global.root)?;
        let image = crate::pull::ensure_image(&engine, &args.image, args.pull, &args.registry)?;
        let opts = ContainerOptions {
            name: args.name.clone(),
            overrides,
            mounts: args.mounts.requests()?,
            auto_remove: args.rm,
            state_root: args.state_root.clone(),
            restart: RestartPolicy::No,
            network: Some(args.network.options()?),
            ..Default::default()
        };
        let attach = Attach {
            interactive: args.interactive,
            stop_timeout: Duration::from_secs(args.stop_timeout),
        };
        Ok(engine.run(&image, &opts, &attach)?)
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("berth: {text}");
            Ok(berth_engine::command_failure_code(&text).unwrap_or(BERTH_ERROR))
        }
    }
}

/// `berth run -d`: creates the container here, starts it under a new
/// monitor and prints its id; a container that fails to start is removed.
fn detached(args: &RunArgs, global: &Global) -> Result<i32> {
    let outcome = (|| -> Result<String> {
        let restart: RestartPolicy = args.config.restart.parse()?;
        if args.rm && restart != RestartPolicy::No {
            bail!("--rm and --restart {restart}: a removed container cannot restart; choose one");
        }
        let engine = Engine::open(&global.root)?;
        let image = crate::pull::ensure_image(&engine, &args.image, args.pull, &args.registry)?;
        let opts = ContainerOptions {
            name: args.name.clone(),
            overrides: overrides(args)?,
            mounts: args.mounts.requests()?,
            auto_remove: args.rm,
            state_root: args.state_root.clone(),
            restart,
            network: Some(args.network.options()?),
            interactive: args.interactive,
            log_max_size: log_max_size(&args.config.log_opts)?,
        };
        let record = engine.create(&image, &opts)?.detach()?;
        if let Err(e) = engine.start_detached(&record, &crate::containers::monitor_program()) {
            let _ = engine.remove_container(&record, true);
            let _ = engine.remove_anonymous_volumes(&record);
            return Err(e.into());
        }
        Ok(record.id)
    })();
    match outcome {
        Ok(id) => {
            println!("{id}");
            Ok(0)
        }
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("berth: {text}");
            Ok(berth_engine::command_failure_code(&text).unwrap_or(BERTH_ERROR))
        }
    }
}

/// The log size limit `--log-opt max-size=SIZE` asks for.
fn log_max_size(opts: &[String]) -> Result<Option<u64>> {
    let mut max = None;
    for opt in opts {
        match opt.split_once('=') {
            Some(("max-size", size)) => {
                let n = limits::parse_size("--log-opt max-size", size)?;
                if n < 1024 {
                    bail!("--log-opt {opt:?}: a log needs at least 1k before it is rotated");
                }
                max = Some(n);
            }
            _ => bail!("--log-opt {opt:?}: berth knows max-size=SIZE only"),
        }
    }
    Ok(max)
}

/// Builds the spec overrides from the command line.
fn overrides(args: &RunArgs) -> Result<Overrides> {
    let mut env = Vec::new();
    for file in &args.config.env_files {
        env.extend(read_env_file(file)?);
    }
    for e in &args.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if e.is_empty() {
            bail!("-e \"\": expected KEY=value or KEY");
        } else if let Some(v) = std::env::var_os(e) {
            env.push(format!("{e}={}", v.to_string_lossy()));
        }
    }
    let init = match args.init {
        true => Some(std::env::current_exe().context("--init: cannot find berth's own binary")?),
        false => None,
    };
    Ok(Overrides {
        init,
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
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        mounts: Vec::new(),
        terminal: args.tty,
        group_add: args.config.group_add.clone(),
        labels: each(&args.config.labels, parse_label)?,
        security: security(&args.security)?,
        limits: resource_limits(&args.limits)?,
    })
}

fn security(args: &SecurityArgs) -> Result<Security> {
    let mut security = Security {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        devices: each(&args.devices, berth_engine::security::parse_device)?,
        ..Default::default()
    };
    for opt in &args.security_opts {
        security.security_opt(opt)?;
    }
    Ok(security)
}

/// `parse(flag, value)` of an optional flag value.
fn flag<T>(
    flag: &str,
    value: &Option<String>,
    parse: fn(&str, &str) -> berth_engine::Result<T>,
) -> Result<Option<T>> {
    match value {
        Some(v) => Ok(Some(parse(flag, v)?)),
        None => Ok(None),
    }
}

/// `parse` of every value of a repeated flag.
fn each<T>(values: &[String], parse: fn(&str) -> berth_engine::Result<T>) -> Result<Vec<T>> {
    Ok(values
        .iter()
        .map(String::as_str)
        .map(parse)
        .collect::<std::result::Result<_, _>>()?)
}

fn resource_limits(args: &LimitArgs) -> Result<Limits> {
    let limits = Limits {
        memory: flag("--memory", &args.memory, limits::parse_size)?.map(|m| m as i64),
        memory_swap: flag(
            "--memory-swap",
            &args.memory_swap,
            limits::parse_memory_swap,
        )?,
        cpus: flag("--cpus", &args.cpus, limits::parse_cpus)?,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: flag("--cpuset-cpus", &args.cpuset_cpus, limits::parse_cpuset)?,
        pids_limit: args.pids_limit,
        ulimits: each(&args.ulimits, Ulimit::parse)?,
        sysctls: each(&args.sysctls, limits::parse_sysctl)?,
        oom_score_adj: flag(
            "--oom-score-adj",
            &args.oom_score_adj,
            limits::parse_oom_score_adj,
        )?,
        shm_size: flag("--shm-size", &args.shm_size, limits::parse_size)?,
    };
    limits.validate()?;
    Ok(limits)
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
        let ov = overrides(&args).unwrap();
        assert_eq!(ov.env, ["A=1", "BERTH_RUN_UNIT_PASS=v"]);
        assert_eq!(ov.entrypoint, Some(Vec::new()));
        assert_eq!(ov.cmd, Some(vec!["ls".to_string(), "-l".to_string()]));
        assert_eq!(ov.user.as_deref(), Some("7:8"));
        assert_eq!(ov.hostname, None, "the engine names it after the id");
        assert!(ov.terminal);
        assert!(args.mounts.requests().unwrap()[0].readonly);
        assert!(matches!(
            ov.security.seccomp,
            berth_engine::seccomp::Seccomp::Default
        ));
        assert!(ov.limits.memory.is_none());
        let bad = parse(&["-v", "./relative:/x", "img"]);
        let err = bad.mounts.requests().unwrap_err();
        assert!(err.to_string().contains("./relative:/x"), "{err}");
    }

    #[test]
    fn security_and_resource_flags_map_onto_the_engine() {
        let args = parse(&[
            "--cap-add",
            "net_admin,SYS_TIME",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges",
            "--privileged",
            "-m",
            "1g",
            "--memory-swap",
            "-1",
            "--cpus",
            "1.5",
            "-c",
            "100",
            "--cpuset-cpus",
            "0,1",
            "--pids-limit",
            "-1",
            "--ulimit",
            "nofile=1:2",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--oom-score-adj",
            "-10",
            "--shm-size",
            "1m",
            "--group-add",
            "a,b",
            "-l",
            "k=v",
            "img",
        ]);
        let ov = overrides(&args).unwrap();
        let s = &ov.security;
        assert!(s.privileged && s.no_new_privileges);
        assert_eq!(s.cap_add, ["net_admin", "SYS_TIME"]);
        assert_eq!(s.cap_drop, ["ALL"]);
        assert!(matches!(
            s.seccomp,
            berth_engine::seccomp::Seccomp::Unconfined
        ));
        let l = &ov.limits;
        assert_eq!((l.memory, l.memory_swap), (Some(1 << 30), Some(-1)));
        assert_eq!((l.cpus, l.cpu_shares), (Some(1.5), Some(100)));
        assert_eq!(l.cpuset_cpus.as_deref(), Some("0,1"));
        assert_eq!(l.pids_limit, Some(-1));
        assert_eq!(l.ulimits[0].name, "RLIMIT_NOFILE");
        assert_eq!(l.sysctls, [("net.core.somaxconn".into(), "1024".into())]);
        assert_eq!((l.oom_score_adj, l.shm_size), (Some(-10), Some(1 << 20)));
        assert_eq!(ov.group_add, ["a", "b"]);
        assert_eq!(ov.labels, [("k".into(), "v".into())]);
        let err = overrides(&parse(&["--cpus", "lots", "img"])).unwrap_err();
        assert!(err.to_string().contains("--cpus \"lots\""), "{err}");
    }
}
