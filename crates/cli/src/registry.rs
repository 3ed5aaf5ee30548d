//! `berth registry …`: run a distribution-spec registry server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::Global;

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a registry (filesystem storage; everything else from --config).
    Serve {
        /// Listen address, HOST:PORT (port 0 picks a free one). Overrides the config file.
        #[arg(long)]
        addr: Option<String>,
        /// Storage directory. Overrides the config file; default: <root>/registry.
        #[arg(long)]
        storage: Option<PathBuf>,
        /// YAML or TOML (by extension) config: auth, TLS, GC, limits, logging.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Refuse pushes and deletes.
        #[arg(long)]
        read_only: bool,
    },
    /// Print an htpasswd line (bcrypt) for USER; the password is read from stdin.
    Htpasswd {
        /// User name.
        user: String,
    },
}

/// Runs a registry subcommand.
pub fn run(cmd: Command, global: &Global) -> anyhow::Result<i32> {
    match cmd {
        Command::Htpasswd { user } => {
            if user.is_empty() || user.contains(':') {
                anyhow::bail!("user name {user:?} must be non-empty and contain no ':'");
            }
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("empty password on stdin: pipe the password in, e.g. `echo PW | berth registry htpasswd {user}`");
            }
            println!("{user}:{}", berth_registry::auth::hash_password(password)?);
            Ok(0)
        }
        Command::Serve {
            addr,
            storage,
            config,
            read_only,
        } => {
            let mut cfg = match &config {
                Some(path) => berth_registry::Config::load(path)?,
                None => berth_registry::Config {
                    storage: berth_registry::config::StorageConfig {
                        root: global.root.join("registry"),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            };
            if let Some(a) = addr {
                cfg.addr = a;
            }
            if let Some(s) = storage {
                cfg.storage.root = s;
            }
            cfg.read_only |= read_only;
            berth_registry::server::tune_malloc();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(32)
                .build()
                .context("starting the async runtime")?;
            rt.block_on(serve(cfg))?;
            Ok(0)
        }
    }
}

async fn serve(cfg: berth_registry::Config) -> anyhow::Result<()> {
    let storage = match &cfg.storage.s3 {
        Some(s3) => format!("s3 {}/{}/{}", s3.endpoint, s3.bucket, s3.prefix),
        None => cfg.storage.root.display().to_string(),
    };
    // Handlers first: a client may send SIGTERM as soon as it reads the
    // "listening" line, and the default action would kill us uncleanly.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let server = berth_registry::start(cfg)
        .await
        .context("starting the registry")?;
    let scheme = if server.app().tls { "https" } else { "http" };
    eprintln!(
        "berth registry: listening on {scheme}://{} (storage {storage})",
        server.addr()
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("berth registry: shutting down, finishing requests in flight");
    server.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
