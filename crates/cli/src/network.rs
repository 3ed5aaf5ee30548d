//! `berth network create/ls/inspect/rm` and `berth run`'s network options
//! (`--network`, `-p`, `--dns*`, `--add-host`), mapped onto berth-network
//! and the engine's [`berth_engine::NetworkOptions`].

use std::io::Write;

use anyhow::{bail, Result};
use berth_engine::{Engine, NetworkMode, NetworkOptions};
use berth_network::files::{parse_add_host, parse_dns_option, parse_dns_search, parse_dns_server};
use berth_network::{parse_publish, CreateOptions, Dns, Networks};
use serde_json::{json, Value};

use crate::Global;

/// `berth run`'s network options (podman's names).
#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    /// bridge (the default network; for a rootless user: none), none,
    /// host, container:NAME, ns:PATH or a network's name.
    #[arg(long, visible_alias = "net", env = "BERTH_NETWORK")]
    pub network: Option<String>,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], ranges as 8000-8001:80-81.
    #[arg(
        long = "publish",
        short = 'p',
        value_name = "[IP:]HOST:CONTAINER[/PROTO]"
    )]
    pub publish: Vec<String>,
    /// A name server for the container's /etc/resolv.conf (replaces the host's).
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// A search domain for /etc/resolv.conf (`.`: none).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// A resolver option for /etc/resolv.conf (e.g. ndots:2).
    #[arg(long = "dns-option", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Add a NAME:IP line to the container's /etc/hosts.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
}

impl NetworkArgs {
    /// The engine's network options from the command line.
    pub fn options(&self) -> Result<NetworkOptions> {
        let mut ports = Vec::new();
        for p in &self.publish {
            ports.extend(parse_publish(p)?);
        }
        let rootless = berth_rootless::is_rootless();
        let mode: NetworkMode = match &self.network {
            Some(name) => name.parse()?,
            // Bridges and their rules live in the host's network namespace,
            // out of a rootless user's reach: podman gives such containers
            // slirp4netns or pasta; berth their own loopback for now.
            None if rootless => NetworkMode::None,
            None => NetworkMode::default(),
        };
        if rootless && matches!(mode, NetworkMode::Bridge(_)) {
            bail!(
                "--network {}: bridge networks need root (a rootless container gets its own \
                 loopback: use --network none, host, container:NAME or ns:PATH)",
                self.network.as_deref().unwrap_or("bridge")
            );
        }
        Ok(NetworkOptions {
            mode,
            ports,
            dns: Dns {
                servers: self
                    .dns
                    .iter()
                    .map(|s| parse_dns_server(s))
                    .collect::<berth_network::Result<_>>()?,
                search: self
                    .dns_search
                    .iter()
                    .map(|s| parse_dns_search(s))
                    .collect::<berth_network::Result<_>>()?,
                options: self
                    .dns_option
                    .iter()
                    .map(|s| parse_dns_option(s))
                    .collect::<berth_network::Result<_>>()?,
            },
            add_hosts: self
                .add_host
                .iter()
                .map(|h| parse_add_host(h))
                .collect::<berth_network::Result<_>>()?,
        })
    }
}

/// `berth network ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a bridge network (its subnet and bridge chosen unless given).
    Create {
        /// IPv4 subnet, e.g. 10.89.5.0/24 (default: the first free 10.89.N.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// The gateway (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        /// The host bridge's name (default: berthN).
        #[arg(long)]
        bridge: Option<String>,
        /// No route out: containers reach each other and the host only.
        #[arg(long)]
        internal: bool,
        /// The network's name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Output format: `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Print names only.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Print networks as JSON: subnet, gateway, bridge, conflist, containers.
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (their bridge too); refused while containers use them.
    #[command(alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a `berth network` subcommand.
pub fn run(cmd: Command, global: &Global) -> Result<i32> {
    let engine = Engine::open(&global.root)?;
    let nets = Networks::open(engine.layout().networks());
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Create {
            subnet,
            gateway,
            bridge,
            internal,
            name,
        } => {
            let opts = CreateOptions {
                subnet: subnet.as_deref().map(str::parse).transpose()?,
                gateway: match gateway {
                    Some(g) => Some(g.parse().map_err(|_| {
                        anyhow::anyhow!("--gateway {g:?}: expected an IPv4 address")
                    })?),
                    None => None,
                },
                bridge,
                internal,
            };
            let net = nets.create(&name, &opts)?;
            writeln!(out, "{}", net.name)?;
        }
        Command::Ls { format, quiet } => {
            let list = nets.list()?;
            if quiet {
                for n in &list {
                    writeln!(out, "{}", n.name)?;
                }
                return Ok(0);
            }
            match format.as_str() {
                "json" => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                "table" => {
                    let mut rows = vec![[
                        "NAME".to_string(),
                        "BRIDGE".into(),
                        "SUBNET".into(),
                        "GATEWAY".into(),
                        "INTERNAL".into(),
                    ]];
                    for n in &list {
                        rows.push([
                            n.name.clone(),
                            n.bridge.clone(),
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            n.internal.to_string(),
                        ]);
                    }
                    crate::table::write_table(&mut out, &rows, 2)?;
                }
                other => bail!("--format {other:?}: use table or json"),
            }
        }
        Command::Inspect { names } => {
            let attachments = nets.attachments()?;
            let containers = engine.containers()?;
            let mut list = Vec::new();
            for name in names {
                let net = nets.get(&name)?;
                let mut members = serde_json::Map::new();
                for a in attachments.iter().filter(|a| a.network == name) {
                    let cname = containers
                        .iter()
                        .find(|c| c.id == a.container_id)
                        .map(|c| c.name.clone());
                    members.insert(
                        a.container_id.clone(),
                        json!({"Name": cname, "IPv4Address": a.ipv4().map(|(ip, _)| ip)}),
                    );
                }
                let mut v = serde_json::to_value(&net)?;
                v["containers"] = Value::Object(members);
                v["config"] = nets.conflist(&name)?;
                list.push(v);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        Command::Rm { names } => {
            for name in names {
                nets.remove(&name)?;
                writeln!(out, "{name}")?;
            }
        }
    }
    Ok(0)
}
