//! `berth pull`, `push`, `login`, `logout`: the command line mapped onto
//! berth-distribution, with progress on stderr (bars on a terminal, one
//! line per blob event otherwise).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use berth_distribution::registries::RegistriesConf;
use berth_distribution::{Credentials, Event, Options, Progress, PullOptions, Registry, State};
use berth_engine::Engine;
use berth_image::{PlatformSpec, Reference};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::Global;

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Pull an image from a registry (and unpack it, ready to run).
    Pull(PullArgs),
    /// Push a local image to a registry.
    Push(crate::push::PushArgs),
    /// Store credentials for a registry (the password is read from stdin).
    Login(LoginArgs),
    /// Remove the stored credentials for a registry.
    Logout(LogoutArgs),
    /// Attach artifacts to an image in a registry, list its referrers.
    Artifact {
        /// What to do.
        #[command(subcommand)]
        command: crate::artifact::Command,
    },
}

/// How to reach a registry (podman's flag names).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Require HTTPS with a verified certificate (false: also plain HTTP,
    /// and any certificate). localhost and 127.0.0.1 may always use HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Credentials USER:PASSWORD (instead of the stored ones).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Auth file to read and write (default: $REGISTRY_AUTH_FILE, then
    /// containers' auth.json, then ~/.docker/config.json).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    /// Directory of HOST[:PORT]/*.crt CA certificates (default
    /// /etc/containers/certs.d and /etc/docker/certs.d).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// registries.conf to use (default $CONTAINERS_REGISTRIES_CONF, then
    /// ~/.config/containers/registries.conf, then /etc/containers/registries.conf).
    #[arg(long, value_name = "PATH")]
    pub registries_conf: Option<PathBuf>,
}

impl RegistryArgs {
    /// The client options these flags give.
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            all_insecure: !self.tls_verify,
            credentials: self.creds.as_deref().map(Credentials::parse).transpose()?,
            auth_file: self.authfile.clone(),
            cert_dirs: self.cert_dir.iter().cloned().collect(),
            registries_conf: self.registries_conf.clone(),
            ..Default::default()
        })
    }
}

/// `berth pull` options.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Print only the pulled image's digest.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Platform to choose from an index: OS/ARCH[/VARIANT] (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Blobs downloaded at once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_downloads: u16,
    /// Only download and record the image; its layers are unpacked when it
    /// is first run.
    #[arg(long)]
    pub download_only: bool,
    /// Also fetch the image's referrers (signatures, SBOMs: artifacts whose
    /// subject is the pulled index or manifest) and theirs, listed by
    /// `berth artifact ls --local` and sent on by `berth push --referrers`.
    /// Off by default, as with skopeo, podman and `oras cp` (without -r).
    #[arg(long)]
    pub referrers: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image, e.g. 127.0.0.1:5000/app:v1 or busybox@sha256:….
    pub image: String,
}

/// `berth login` options.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, short = 'u')]
    pub username: String,
    /// Read the password from stdin (the only way: never on the command line).
    #[arg(long)]
    pub password_stdin: bool,
    /// How to reach the registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The registry, HOST[:PORT].
    pub server: String,
}

/// `berth logout` options.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Auth file (default as for login).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    /// The registry, HOST[:PORT].
    pub server: String,
}

/// When `berth run` pulls its image (podman's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the local store.
    Missing,
    /// Pull every time (the local image is replaced if the registry's changed).
    Always,
    /// Never pull: a missing image is an error.
    Never,
}

/// Pulls `image` for `berth run` as `policy` says, with progress on stderr;
/// returns the name to run (a short name resolved by registries.conf is
/// recorded under its full name).
pub fn ensure_image(
    engine: &Engine,
    image: &str,
    policy: PullPolicy,
    registry: &RegistryArgs,
) -> Result<String> {
    let local = local_name(engine, image, registry);
    let pull_it = match policy {
        PullPolicy::Never => false,
        PullPolicy::Missing => local.is_none(),
        PullPolicy::Always => true,
    };
    if !pull_it || (local.is_none() && Reference::parse(image).is_err()) {
        return Ok(local.unwrap_or_else(|| image.to_string()));
    }
    let pulled = pull(engine, image, registry, &PullOptions::default(), false)?;
    Ok(pulled.name.to_string())
}

/// The local image `image` names: itself, or for a short name the first
/// name registries.conf resolves it to that is in the store.
fn local_name(engine: &Engine, image: &str, registry: &RegistryArgs) -> Option<String> {
    if engine.images().get(image).is_ok() {
        return Some(image.to_string());
    }
    let conf = RegistriesConf::load(registry.registries_conf.as_deref()).ok()?;
    conf.resolve(image)
        .ok()?
        .into_iter()
        .map(|r| r.to_string())
        .find(|name| engine.images().get(name).is_ok())
}

/// The async runtime of one client command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs a registry client subcommand.
pub fn run(cmd: Command, global: &Global) -> Result<i32> {
    match cmd {
        Command::Pull(args) => {
            let engine = Engine::open(&global.root)?;
            let platform = match &args.platform {
                Some(p) => PlatformSpec::parse(p)?,
                None => PlatformSpec::host(),
            };
            let options = PullOptions {
                platform,
                max_concurrent: args.max_concurrent_downloads.into(),
                unpack: !args.download_only,
                referrers: args.referrers,
                ..Default::default()
            };
            let pulled = pull(&engine, &args.image, &args.registry, &options, args.quiet)?;
            if args.quiet {
                println!("{}", pulled.digest);
            } else {
                eprintln!(
                    "pulled {} (digest {}, image id {})",
                    pulled.name, pulled.digest, pulled.id
                );
                if args.referrers {
                    eprintln!("pulled {} referrers", pulled.referrers);
                }
            }
            Ok(0)
        }
        Command::Push(args) => crate::push::run(args, global),
        Command::Artifact { command } => crate::artifact::run(command, global),
        Command::Login(args) => login(args),
        Command::Logout(args) => {
            let host = server_host(&args.server)?;
            if berth_distribution::auth::remove(&host, args.authfile.as_deref())? {
                eprintln!("Removed login credentials for {host}");
                Ok(0)
            } else {
                bail!("not logged in to {host}")
            }
        }
    }
}

/// `HOST[:PORT]` from what the user typed (a scheme and path are dropped).
fn server_host(server: &str) -> Result<String> {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    };
    // Check it the way references check their registry part.
    Reference::parse(&format!("{host}/x")).with_context(|| format!("registry {server:?}"))?;
    Ok(host.to_string())
}

fn login(args: LoginArgs) -> Result<i32> {
    if !args.password_stdin {
        bail!("give the password on stdin with --password-stdin (e.g. `echo PW | berth login -u USER --password-stdin HOST`)");
    }
    let host = server_host(&args.server)?;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("empty password on stdin");
    }
    let creds = Credentials {
        username: args.username.clone(),
        password,
    };
    let mut options = args.registry.options()?;
    options.credentials = Some(creds.clone());
    runtime()?.block_on(async {
        let registry = Registry::connect(&host, &options).await?;
        registry.check_login().await
    })?;
    let path = berth_distribution::auth::store(&host, &creds, args.registry.authfile.as_deref())?;
    eprintln!("Login Succeeded ({host}, stored in {})", path.display());
    Ok(0)
}

/// Pulls `image` into `engine`, with progress on stderr unless `quiet`.
pub fn pull(
    engine: &Engine,
    image: &str,
    registry: &RegistryArgs,
    options: &PullOptions,
    quiet: bool,
) -> Result<berth_distribution::Pulled> {
    let client_options = registry.options()?;
    let display = Display::new(quiet);
    let pulled = runtime()?.block_on(berth_distribution::pull_name(
        engine,
        image,
        &client_options,
        options,
        &display,
    ));
    display.finish();
    pulled.with_context(|| format!("pulling {image}"))
}

/// Progress on stderr: bars on a terminal, one line per blob event
/// otherwise, nothing when quiet.
pub struct Display {
    bars: Option<MultiProgress>,
    quiet: bool,
    by_digest: Mutex<HashMap<String, ProgressBar>>,
}

impl Display {
    /// A display for this process's stderr.
    pub fn new(quiet: bool) -> Display {
        Display {
            bars: (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new),
            quiet,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// Ends every bar.
    pub fn finish(&self) {
        for bar in self.by_digest.lock().expect("bars").values() {
            bar.finish();
        }
    }

    fn bar(&self, bars: &MultiProgress, digest: &str, size: u64) -> ProgressBar {
        let mut map = self.by_digest.lock().expect("bars");
        map.entry(digest.to_string())
            .or_insert_with(|| {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("{prefix} {wide_bar} {bytes}/{total_bytes} {msg}")
                        .expect("a fixed template parses"),
                );
                bar.set_prefix(short(digest));
                bar
            })
            .clone()
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split(':').nth(1).unwrap_or(digest);
    hex[..hex.len().min(12)].to_string()
}

impl Progress for Display {
    fn event(&self, event: Event) {
        if self.quiet {
            return;
        }
        match (&self.bars, event) {
            (
                Some(bars),
                Event::Blob {
                    digest,
                    size,
                    state,
                },
            ) => {
                let bar = self.bar(bars, digest.as_ref(), size);
                if matches!(state, State::Exists | State::Done | State::Mounted) {
                    bar.set_position(size);
                }
                bar.set_message(state.word());
            }
            (Some(bars), Event::Bytes { digest, done }) => {
                self.bar(bars, digest.as_ref(), 0).set_position(done);
            }
            (
                None,
                Event::Blob {
                    digest,
                    size,
                    state,
                },
            ) => {
                eprintln!(
                    "{}: {} ({size} bytes)",
                    short(digest.as_ref()),
                    state.word()
                );
            }
            (None, Event::Bytes { .. }) => {}
        }
    }
}
