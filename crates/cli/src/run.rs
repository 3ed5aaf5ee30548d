//! `berth run IMAGE [CMD...]`: the command line mapped onto
//! [`berth_engine::Engine::run`], which unpacks, creates and runs the
//! container in the foreground with the runtime linked in.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use berth_engine::{Attach, BindMount, ContainerOptions, Engine, Overrides};

use crate::Global;

/// Exit code for errors of berth itself (not the container's), as docker.
const BERTH_ERROR: i32 = 125;

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
    let outcome = overrides(&args).and_then(|overrides| {
        let engine = Engine::open(&global.root)?;
        let opts = ContainerOptions {
            name: args.name.clone(),
            overrides,
            auto_remove: args.rm,
            state_root: args.state_root.clone(),
        };
        let attach = Attach {
            interactive: args.interactive,
            stop_timeout: Duration::from_secs(args.stop_timeout),
        };
        Ok(engine.run(&args.image, &opts, &attach)?)
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            Ok(BERTH_ERROR)
        }
    }
}

/// Builds the spec overrides from the command line.
fn overrides(args: &RunArgs) -> Result<Overrides> {
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
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        binds,
        volume_root: None,
        terminal: args.tty,
        group_add: Vec::new(),
        labels: Vec::new(),
        security: Default::default(),
        limits: Default::default(),
    })
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
        assert!(ov.binds[0].readonly);
        let bad = parse(&["-v", "relative:/x", "img"]);
        let err = overrides(&bad).unwrap_err();
        assert!(err.to_string().contains("relative:/x"), "{err}");
    }
}
