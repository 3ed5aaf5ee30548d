//! A container's network, on berth-network: the mode `--network` asks for
//! (a CNI bridge network, none, the host's, another container's, or a
//! namespace by path), its published ports, and the `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf` berth writes into its directory
//! and bind-mounts into it.
//!
//! A bridge container gets a persistent network namespace
//! (`<state root>/netns/<id>`) that CNI ADD sets up before the runtime
//! joins it by path. It is attached when it is created and again when it
//! starts after a stop, and detached (CNI DEL, namespace removed) when it
//! exits for good, is stopped or removed, or is reaped after a crash;
//! `berth gc` detaches what no container record owns any more. The hosts
//! files of a network's containers name each other, so that they reach
//! each other by name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_content::{FileLock, LockMode};
use berth_core::fs::{atomic_write, Durability};
use berth_network::files::{self, hosts_file, resolv_conf, write_in_place};
use berth_network::{netns, Dns, HostEntry, Networks, PortMapping, DEFAULT_NETWORK};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, MountBuilder, Spec};
use serde::{Deserialize, Serialize};

use crate::container::{ContainerRecord, Status};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::Engine;

/// How a container is networked (podman's `--network` values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "target")]
pub enum NetworkMode {
    /// On a CNI bridge network (`bridge`: the default one; or a name).
    Bridge(String),
    /// A network namespace of its own with only `lo`, up.
    None,
    /// The host's network namespace.
    Host,
    /// Another container's network namespace (`container:NAME`).
    Container(String),
    /// The network namespace at a path (`ns:PATH`).
    Ns(PathBuf),
}

impl Default for NetworkMode {
    fn default() -> NetworkMode {
        NetworkMode::Bridge(DEFAULT_NETWORK.to_string())
    }
}

impl FromStr for NetworkMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<NetworkMode> {
        let bad = |why: &str| Error::invalid(format!("--network {s:?}"), why.to_string());
        Ok(match s.split_once(':') {
            None => match s {
                "bridge" | "" => NetworkMode::default(),
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                name if berth_network::store::valid_name(name) => {
                    NetworkMode::Bridge(name.to_string())
                }
                _ => {
                    return Err(bad(
                        "use bridge, none, host, container:NAME, ns:PATH or a network's name",
                    ))
                }
            },
            Some(("container", name)) if !name.is_empty() => {
                NetworkMode::Container(name.to_string())
            }
            Some(("ns", path)) if path.starts_with('/') => NetworkMode::Ns(PathBuf::from(path)),
            Some(("ns", _)) => return Err(bad("ns: needs an absolute path")),
            Some(_) => return Err(bad("use container:NAME or ns:PATH")),
        })
    }
}

/// The network a container asks for (`--network`, `-p`, `--dns*`,
/// `--add-host`).
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Where its network namespace comes from.
    pub mode: NetworkMode,
    /// Published ports (bridge networks only).
    pub ports: Vec<PortMapping>,
    /// Name servers, search domains and resolver options.
    pub dns: Dns,
    /// Extra `/etc/hosts` entries.
    pub add_hosts: Vec<HostEntry>,
}

/// What berth keeps about a container's network (`network.json` in its
/// directory): what was asked for, and its namespace while attached.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    #[serde(flatten)]
    mode: NetworkMode,
    #[serde(default)]
    ports: Vec<PortMapping>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    add_hosts: Vec<HostEntry>,
    name: String,
    hostname: String,
    /// The bridge network's name (the default one resolved).
    #[serde(default)]
    network: Option<String>,
    /// The pinned namespace of a bridge container.
    #[serde(default)]
    netns: Option<PathBuf>,
    /// The container whose files it shares (`container:NAME`).
    #[serde(default)]
    shares: Option<String>,
}

/// The files berth writes for a container and where they appear.
const FILES: [(&str, &str); 3] = [
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
];

fn settings_path(layout: &Layout, id: &str) -> PathBuf {
    layout.container(id).join("network.json")
}

fn load(layout: &Layout, id: &str) -> Result<Option<Settings>> {
    let path = settings_path(layout, id);
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::invalid(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes the settings; `durable` for a kept container (a `--rm` one's,
/// like its record, need not survive a power loss).
fn save(layout: &Layout, id: &str, s: &Settings, durable: bool) -> Result<()> {
    let path = settings_path(layout, id);
    let data =
        serde_json::to_vec(s).map_err(|e| Error::invalid("network settings", e.to_string()))?;
    let durability = if durable {
        Durability::Durable
    } else {
        Durability::Volatile
    };
    atomic_write(&path, &data, durability).map_err(|e| Error::io(&path, e))
}

fn networks(layout: &Layout) -> Networks {
    Networks::open(layout.networks())
}

/// Sets up `record`'s network as `opts` asks, before its runtime spec is
/// used: resolves the mode, attaches a bridge container (namespace, CNI
/// ADD), writes its files and points `spec` at its namespace and files.
/// `default_hostname`: the user gave no `--hostname` (a host-network
/// container then takes the host's, as podman's does).
pub(crate) fn setup(
    engine: &Engine,
    record: &ContainerRecord,
    spec: &mut Spec,
    opts: &NetworkOptions,
    default_hostname: bool,
) -> Result<()> {
    let layout = engine.layout();
    if !opts.ports.is_empty() && !matches!(opts.mode, NetworkMode::Bridge(_)) {
        return Err(Error::invalid(
            "-p",
            "ports can only be published from a bridge network (drop --network or -p)",
        ));
    }
    if default_hostname && opts.mode == NetworkMode::Host {
        let host = nix::unistd::gethostname()
            .map_err(|e| Error::sys("gethostname", e))?
            .to_string_lossy()
            .into_owned();
        spec.set_hostname(Some(host));
    }
    if let Some(h) = spec.hostname().as_deref() {
        // The kernel's host names are at most 64 bytes (HOST_NAME_MAX).
        if !files::valid_hostname(h) || h.len() > 64 {
            return Err(Error::invalid(
                format!("hostname {h:?}"),
                "use at most 64 characters: letters, digits and '-' in dot-separated labels of at most 63",
            ));
        }
    }
    let mut settings = Settings {
        mode: opts.mode.clone(),
        ports: opts.ports.clone(),
        dns: opts.dns.clone(),
        add_hosts: opts.add_hosts.clone(),
        name: record.name.clone(),
        hostname: spec.hostname().clone().unwrap_or_default(),
        network: None,
        netns: None,
        shares: None,
    };
    let netns_path = match &opts.mode {
        NetworkMode::None => None,
        NetworkMode::Host => {
            set_netns(spec, None);
            None
        }
        NetworkMode::Ns(path) => {
            if !netns::is_namespace(path) {
                return Err(Error::invalid(
                    format!("--network ns:{}", path.display()),
                    "not a namespace file (give /proc/PID/ns/net or a bind-mounted one like /run/netns/NAME)",
                ));
            }
            Some(path.clone())
        }
        NetworkMode::Container(query) => {
            let target = engine.find_container(query)?;
            let target_settings = load(layout, &target.id)?;
            let pinned = target_settings.as_ref().and_then(|s| s.netns.clone());
            let path = match pinned {
                Some(p) if netns::is_namespace(&p) => p,
                _ if target.status == Status::Running && target.pid > 0 => {
                    PathBuf::from(format!("/proc/{}/ns/net", target.pid))
                }
                _ => {
                    return Err(Error::State {
                        name: target.name,
                        reason: "it is not running: --network container: needs a running container"
                            .into(),
                    })
                }
            };
            if target_settings.is_some() {
                settings.shares = Some(target.id.clone());
            }
            Some(path)
        }
        NetworkMode::Bridge(name) => {
            let nets = networks(layout);
            let net = match name.as_str() {
                DEFAULT_NETWORK => nets.default_network()?,
                n => nets.get(n)?,
            };
            settings.network = Some(net.name);
            let path = record.state_root.join("netns").join(&record.id);
            settings.netns = Some(path.clone());
            Some(path)
        }
    };
    if let Some(path) = &netns_path {
        set_netns(spec, Some(path));
    }
    // Written before anything is attached: teardown finds it after a failure.
    save(layout, &record.id, &settings, !record.auto_remove)?;
    let files_dir = match &settings.shares {
        Some(other) => layout.container(other),
        None => layout.container(&record.id),
    };
    if settings.shares.is_none() {
        write_files(layout, &record.id, &settings)?;
    }
    attach(layout, &record.id)?;
    add_file_mounts(spec, &files_dir);
    Ok(())
}

/// Attaches container `id` to its bridge network unless it is attached
/// (its namespace exists): creates and pins the namespace, runs CNI ADD
/// and rewrites the hosts files of the network's containers. Nothing for
/// other modes.
pub(crate) fn attach(layout: &Layout, id: &str) -> Result<()> {
    let Some(s) = load(layout, id)? else {
        return Ok(());
    };
    let (Some(net), Some(ns)) = (&s.network, &s.netns) else {
        return Ok(());
    };
    let nets = networks(layout);
    let done = nets.attachment(id)?.is_some_and(|a| a.result.is_some());
    if done && netns::is_namespace(ns) {
        return Ok(());
    }
    // What a crash half-way through an attach or a detach left.
    if let Err(e) = nets.detach(id) {
        tracing::warn!("container {id}: detaching a stale attachment: {e}");
    }
    netns::remove(ns)?;
    if let Some(dir) = ns.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    netns::create(ns, berth_runtime::loopback_up)?;
    if let Err(e) = nets.attach(net, id, ns, &s.ports) {
        let _ = netns::remove(ns);
        return Err(e.into());
    }
    refresh_hosts(layout, net)
}

/// Detaches container `id` from its network (CNI DEL with ADD's cached
/// result, namespace unpinned) and rewrites the hosts files of the
/// containers left on it. Nothing when it is not attached.
pub(crate) fn teardown(layout: &Layout, id: &str) -> Result<()> {
    let Some(s) = load(layout, id)? else {
        return Ok(());
    };
    let (Some(_), Some(ns)) = (&s.network, &s.netns) else {
        return Ok(());
    };
    // A failed DEL keeps the attachment (and its address): `berth gc`
    // tries again once the container is gone. Removing the container must
    // not hang on it.
    let detached = match networks(layout).detach(id) {
        Ok(net) => net,
        Err(e) => {
            tracing::warn!("container {id}: detaching its network: {e}");
            s.network.clone()
        }
    };
    netns::remove(ns)?;
    match detached {
        Some(net) => refresh_hosts(layout, &net),
        None => Ok(()),
    }
}

/// `berth gc`'s part: detaches every attachment whose container record
/// is gone (a crash between attach and record removal); returns their
/// container ids.
pub(crate) fn gc(layout: &Layout) -> Result<Vec<String>> {
    let nets = networks(layout);
    let mut released = Vec::new();
    for a in nets.attachments()? {
        if layout.container_record(&a.container_id).exists() {
            continue;
        }
        nets.detach(&a.container_id)?;
        netns::remove(&a.netns)?;
        released.push(a.container_id);
    }
    Ok(released)
}

/// The network part of `berth inspect`: mode, network, address, gateway
/// and ports of container `id` (None when berth manages no network for it).
pub fn inspect(layout: &Layout, id: &str) -> Result<Option<serde_json::Value>> {
    let Some(s) = load(layout, id)? else {
        return Ok(None);
    };
    let attached = networks(layout).attachment(id)?;
    let (ip, gateway) = attached
        .as_ref()
        .and_then(|a| a.ipv4())
        .map_or((None, None), |(ip, gw)| (Some(ip), gw));
    Ok(Some(serde_json::json!({
        "Mode": match &s.mode {
            NetworkMode::Bridge(_) => "bridge".to_string(),
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(c) => format!("container:{c}"),
            NetworkMode::Ns(p) => format!("ns:{}", p.display()),
        },
        "Network": s.network,
        "IPAddress": ip,
        "Gateway": gateway,
        "SandboxKey": s.netns,
        "Ports": s.ports,
    })))
}

/// Points the spec's network namespace at `path`, or (None) removes it:
/// the container stays in the host's.
fn set_netns(spec: &mut Spec, path: Option<&Path>) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let namespaces = linux.namespaces_mut().get_or_insert_with(Vec::new);
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    if let Some(path) = path {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Network);
        ns.set_path(Some(path.to_path_buf()));
        namespaces.push(ns);
    }
}

/// Bind-mounts the files in `dir` at their places, unless the user
/// mounted something there.
fn add_file_mounts(spec: &mut Spec, dir: &Path) {
    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    for (file, dest) in FILES {
        if mounts.iter().any(|m| m.destination() == Path::new(dest)) {
            continue;
        }
        if let Ok(m) = MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(dir.join(file))
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
        {
            mounts.push(m);
        }
    }
}

/// Writes container `id`'s hostname, hosts and resolv.conf files.
fn write_files(layout: &Layout, id: &str, s: &Settings) -> Result<()> {
    let dir = layout.container(id);
    write_in_place(&dir.join("hostname"), &format!("{}\n", s.hostname))?;
    let host_network = s.mode == NetworkMode::Host;
    let resolv = resolv_conf(&files::host_resolv_conf(), &s.dns, host_network);
    write_in_place(&dir.join("resolv.conf"), &resolv)?;
    write_in_place(&dir.join("hosts"), &hosts_text(s, None, &[]))?;
    Ok(())
}

/// A container's hosts file: its own address (`own`: on a bridge
/// network, with the gateway), `--add-host` entries and its peers.
fn hosts_text(
    s: &Settings,
    own: Option<(Ipv4Addr, Option<Ipv4Addr>)>,
    peers: &[HostEntry],
) -> String {
    let names = |s: &Settings| {
        let mut n = vec![s.hostname.clone()];
        if s.name != s.hostname {
            n.push(s.name.clone());
        }
        n
    };
    if s.mode == NetworkMode::Host {
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for e in &s.add_hosts {
            text.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
        }
        return text;
    }
    let mut entries = s.add_hosts.clone();
    let ip = own.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |(ip, _)| IpAddr::V4(ip));
    entries.push(HostEntry {
        ip,
        names: names(s),
    });
    if let Some((_, Some(gw))) = own {
        entries.push(HostEntry {
            ip: IpAddr::V4(gw),
            names: vec!["host.containers.internal".into()],
        });
    }
    entries.extend(peers.iter().cloned());
    hosts_file(&entries)
}

/// Rewrites (in place: they are bind-mounted) the hosts files of every
/// container attached to network `net`, each naming all the others.
fn refresh_hosts(layout: &Layout, net: &str) -> Result<()> {
    let nets = networks(layout);
    let lock = layout.networks().join(".hosts.lock");
    let _lock = FileLock::acquire(&lock, LockMode::Exclusive)
        .map_err(|e| Error::invalid("network lock", e.to_string()))?;
    let mut members = Vec::new();
    for a in nets.attachments()?.into_iter().filter(|a| a.network == net) {
        let Some(addr) = a.ipv4() else { continue };
        if let Some(s) = load(layout, &a.container_id)? {
            members.push((a.container_id, s, addr));
        }
    }
    for (id, s, addr) in &members {
        let peers: Vec<HostEntry> = members
            .iter()
            .filter(|(other, ..)| other != id)
            .map(|(_, p, (ip, _))| {
                let mut names = vec![p.name.clone()];
                if p.hostname != p.name {
                    names.push(p.hostname.clone());
                }
                HostEntry {
                    ip: IpAddr::V4(*ip),
                    names,
                }
            })
            .collect();
        let path = layout.container(id).join("hosts");
        if path.exists() {
            write_in_place(&path, &hosts_text(s, Some(*addr), &peers))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_as_podmans() {
        assert_eq!(
            "bridge".parse::<NetworkMode>().unwrap(),
            NetworkMode::default()
        );
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert_eq!("host".parse::<NetworkMode>().unwrap(), NetworkMode::Host);
        assert_eq!(
            "container:web".parse::<NetworkMode>().unwrap(),
            NetworkMode::Container("web".into())
        );
        assert_eq!(
            "ns:/run/netns/x".parse::<NetworkMode>().unwrap(),
            NetworkMode::Ns("/run/netns/x".into())
        );
        assert_eq!(
            "mynet".parse::<NetworkMode>().unwrap(),
            NetworkMode::Bridge("mynet".into())
        );
        for bad in ["ns:relative", "slirp4netns:x", "a/b", "container:"] {
            let err = bad.parse::<NetworkMode>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
