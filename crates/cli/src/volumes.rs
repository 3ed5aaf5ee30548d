//! `berth volume create/ls/inspect/rm/prune` and the mount flags of `berth
//! run` (`-v`, `--mount`, `--tmpfs`), with podman's names, output and exit
//! codes, mapped onto [`berth_engine::volumes`].

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Result};
use berth_engine::spec::parse_label;
use berth_engine::volumes::{parse_mount, parse_tmpfs, parse_volume};
use berth_engine::{Engine, MountRequest, Volume};
use serde_json::{json, Value};

use crate::Global;

/// Exit code for errors of berth itself, as podman.
const BERTH_ERROR: i32 = 125;

/// `berth run`'s mounts.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Mount a volume or host path: `NAME:/path[:ro]`, `/host/path:/path[:ro]`, or `/path` (a new anonymous volume).
    #[arg(long = "volume", short = 'v', value_name = "[SRC:]DST[:OPTS]")]
    pub volumes: Vec<String>,
    /// Mount with docker's keys: `type=volume|bind|tmpfs,source=…,target=…[,readonly]`.
    #[arg(long = "mount", value_name = "type=…,target=…")]
    pub mounts: Vec<String>,
    /// Mount a new tmpfs: `/path[:size=64m,mode=1777,…]`.
    #[arg(long = "tmpfs", value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,
}

impl MountArgs {
    /// Every mount asked for, parsed and checked.
    pub fn requests(&self) -> Result<Vec<MountRequest>> {
        let mut out = Vec::new();
        for (values, parse) in [
            (
                &self.volumes,
                parse_volume as fn(&str) -> berth_engine::Result<MountRequest>,
            ),
            (&self.mounts, parse_mount),
            (&self.tmpfs, parse_tmpfs),
        ] {
            for v in values {
                out.push(parse(v)?);
            }
        }
        Ok(out)
    }
}

/// The volume commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a volume (a random name when none is given); print its name.
    Create {
        /// Add a label (`KEY=VALUE`).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Do not fail when the volume exists already.
        #[arg(long)]
        ignore: bool,
        /// The volume driver: only `local` (a directory under the data root).
        #[arg(long, short = 'd', default_value = "local")]
        driver: String,
        /// The volume's name: letters, digits, '_', '.', '-', starting with a letter or digit.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Print only the names.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Output format: `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only volumes matching every filter: `dangling=true|false` (no container uses it),
        /// `label=KEY[=VALUE]`, `name=SUBSTRING`.
        #[arg(long, short = 'f', value_name = "KEY=VALUE")]
        filter: Vec<String>,
    },
    /// Print volumes' details as JSON.
    Inspect {
        /// The volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Exit 0 when the volume exists, 1 when it does not.
    Exists {
        /// The volume.
        name: String,
    },
    /// Remove volumes (refused while a container uses one, unless -f).
    #[command(alias = "remove")]
    Rm {
        /// Remove the containers using the volume too.
        #[arg(long, short = 'f')]
        force: bool,
        /// The volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Do not ask (berth never asks; accepted for podman's scripts).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// podman's `volume inspect` object.
fn volume_json(engine: &Engine, v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": engine.volume_mountpoint(&v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
        "Anonymous": v.anonymous,
    })
}

/// One `volume ls --filter KEY=VALUE`.
enum Filter {
    /// `dangling=true|false`: no container uses it (or some does).
    Dangling(bool),
    /// `label=KEY[=VALUE]`.
    Label(String, Option<String>),
    /// `name=SUBSTRING`.
    Name(String),
}

impl Filter {
    fn parse(filter: &str) -> Result<Filter> {
        let Some((key, value)) = filter.split_once('=') else {
            bail!("--filter {filter:?}: expected KEY=VALUE (dangling, label, name)");
        };
        Ok(match key {
            "dangling" => Filter::Dangling(match value {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => bail!("--filter {filter:?}: dangling takes true or false"),
            }),
            "label" => match value.split_once('=') {
                Some((k, v)) => Filter::Label(k.into(), Some(v.into())),
                None => Filter::Label(value.into(), None),
            },
            "name" => Filter::Name(value.into()),
            _ => bail!("--filter {filter:?}: unknown filter {key:?} (use dangling, label or name)"),
        })
    }

    /// Whether `v` passes; `used` names the volumes some container uses.
    fn matches(&self, v: &Volume, used: &[String]) -> bool {
        match self {
            Filter::Dangling(dangling) => used.contains(&v.name) != *dangling,
            Filter::Label(k, want) => v
                .labels
                .get(k)
                .is_some_and(|have| want.as_ref().is_none_or(|w| w == have)),
            Filter::Name(part) => v.name.contains(part.as_str()),
        }
    }
}

/// Runs one volume command.
pub fn run(cmd: Command, global: &Global) -> Result<i32> {
    let engine = Engine::open(&global.root)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Create {
            labels,
            ignore,
            driver,
            name,
        } => {
            if driver != "local" {
                bail!("--driver {driver:?}: berth has only the local driver (a directory under the data root)");
            }
            let labels = labels
                .iter()
                .map(|l| parse_label(l))
                .collect::<berth_engine::Result<BTreeMap<_, _>>>()?;
            let v = engine.create_volume(name.as_deref(), labels, ignore)?;
            writeln!(out, "{}", v.name)?;
            Ok(0)
        }
        Command::Ls {
            quiet,
            format,
            filter,
        } => {
            let used: Vec<String> = engine
                .containers()?
                .into_iter()
                .flat_map(|r| r.volumes)
                .collect();
            let mut volumes = engine.volumes()?;
            for f in &filter {
                let f = Filter::parse(f)?;
                volumes.retain(|v| f.matches(v, &used));
            }
            if quiet {
                for v in &volumes {
                    writeln!(out, "{}", v.name)?;
                }
                return Ok(0);
            }
            match format.as_str() {
                "json" => {
                    let list: Vec<Value> =
                        volumes.iter().map(|v| volume_json(&engine, v)).collect();
                    writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                }
                "table" => {
                    let mut rows = vec![["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                    rows.extend(
                        volumes
                            .iter()
                            .map(|v| ["local".to_string(), v.name.clone()]),
                    );
                    crate::table::write_table(&mut out, &rows, 6)?;
                }
                other => bail!("--format {other:?}: use table or json"),
            }
            Ok(0)
        }
        Command::Inspect { names } => {
            let mut list = Vec::new();
            let mut code = 0;
            for name in &names {
                match engine.volume(name) {
                    Ok(v) => list.push(volume_json(&engine, &v)),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        code = BERTH_ERROR;
                    }
                }
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            Ok(code)
        }
        Command::Exists { name } => match engine.volume(&name) {
            Ok(_) => Ok(0),
            Err(berth_engine::Error::NoSuchVolume { .. }) => Ok(1),
            Err(e) => Err(e.into()),
        },
        Command::Rm { force, names } => {
            let mut code = 0;
            for name in &names {
                match engine.remove_volume(name, force) {
                    Ok(()) => writeln!(out, "{name}")?,
                    Err(e) => {
                        eprintln!("berth: {e}");
                        code = match e {
                            berth_engine::Error::VolumeInUse { .. } => 2,
                            _ => 1,
                        };
                    }
                }
            }
            Ok(code)
        }
        Command::Prune { force: _ } => {
            for name in engine.prune_volumes()? {
                writeln!(out, "{name}")?;
            }
            Ok(0)
        }
    }
}
