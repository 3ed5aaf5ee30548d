//! `berth`: a daemonless container tool built on the berth crates.
//!
//! This file only parses arguments and dispatches; each group of subcommands
//! lives in its own module, and all logic lives in the library crates.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod artifact;
mod attach;
mod containers;
mod images;
mod network;
mod pull;
mod push;
mod registry;
mod run;
mod table;
mod volumes;

/// Options every subcommand sees.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Data root: content store, image records, snapshots, containers.
    #[arg(long, global = true, env = "BERTH_ROOT", default_value_os_t = default_root())]
    pub root: PathBuf,
    /// Log more (repeat for more detail).
    #[arg(long, short = 'D', global = true)]
    pub debug: bool,
}

/// The data root when none is given: /var/lib/berth for root, else the
/// user's data directory (also as root of berth's rootless user namespace).
fn default_root() -> PathBuf {
    if !berth_rootless::is_rootless() {
        return PathBuf::from("/var/lib/berth");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) => PathBuf::from(dir).join("berth"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".local/share/berth"),
    }
}

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A daemonless OCI container tool")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version.
    Version,
    #[command(flatten)]
    Image(images::Command),
    #[command(flatten)]
    Distribution(pull::Command),
    /// Run a command in a new container from an image (foreground, or -d).
    Run(run::RunArgs),
    #[command(flatten)]
    Container(containers::Command),
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: volumes::Command,
    },
    /// Manage networks (CNI bridge networks).
    Network {
        #[command(subcommand)]
        command: network::Command,
    },
    /// Run a distribution-spec registry server.
    Registry {
        #[command(subcommand)]
        command: registry::Command,
    },
}

/// An error and its causes on one line, each cause said once.
pub(crate) fn describe(err: &anyhow::Error) -> String {
    berth_core::error_chain(err.as_ref())
}

fn main() {
    // `--init`: berth is the container's pid 1 (see berth_runtime::mini_init).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == berth_engine::spec::INIT_ARG)
    {
        let command = match argv.get(2) {
            Some(dashes) if dashes == "--" => &argv[3..],
            _ => &argv[2..],
        };
        std::process::exit(berth_runtime::mini_init::run(command));
    }
    let mut cli = Cli::parse();
    // Container bundles name their rootfs by this path: make it absolute.
    if let Ok(root) = std::path::absolute(&cli.global.root) {
        cli.global.root = root;
    }
    // Rootless: the command runs again as root of a user namespace mapping
    // the user's ids (see berth_rootless::userns), except those that touch
    // no layer, mount or container, and `exec`, which joins the container's
    // own namespace (the user's) from here.
    let host_only = matches!(
        cli.command,
        Command::Version
            | Command::Registry { .. }
            | Command::Container(containers::Command::Exec(_))
            | Command::Distribution(
                pull::Command::Push(_) | pull::Command::Login(_) | pull::Command::Logout(_)
            )
            | Command::Image(
                images::Command::Images { .. }
                    | images::Command::Tag { .. }
                    | images::Command::Save { .. }
            )
    );
    if !host_only && !nix::unistd::Uid::effective().is_root() {
        match berth_rootless::userns::reenter() {
            Ok(berth_rootless::userns::Reentered::Inside) => {
                if let Err(e) = berth_rootless::userns::check_data_root(&cli.global.root) {
                    eprintln!("berth: {}", berth_core::error_chain(&e));
                    std::process::exit(1);
                }
            }
            Ok(berth_rootless::userns::Reentered::Exited(code)) => std::process::exit(code),
            Err(e) => {
                eprintln!("berth: {}", berth_core::error_chain(&e));
                std::process::exit(1);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.global.debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        })
        .init();
    let result: anyhow::Result<i32> = match cli.command {
        Command::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Image(cmd) => images::run(cmd, &cli.global),
        Command::Distribution(cmd) => pull::run(cmd, &cli.global),
        Command::Run(args) => run::run(args, &cli.global),
        Command::Container(cmd) => containers::run(cmd, &cli.global),
        Command::Volume { command } => volumes::run(command, &cli.global),
        Command::Network { command } => network::run(command, &cli.global),
        Command::Registry { command } => registry::run(command, &cli.global),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("berth: {}", describe(&err));
            std::process::exit(1);
        }
    }
}
