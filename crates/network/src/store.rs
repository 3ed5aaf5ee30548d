//! The networks of one data root (`<root>/networks/`): one CNI conflist
//! per network, host-local's allocations, and one attachment record per
//! networked container (the conflist it was attached with and ADD's
//! result, so that DEL gets exactly what ADD returned, even after a
//! crash or a change of the network):
//!
//! ```text
//! networks/<name>.conflist        bridge → portmap
//! networks/ipam/<name>/           host-local's allocations (survive restarts)
//! networks/attachments/<id>.json  one per attached container
//! ```
//!
//! Bridges and subnets are host-wide while data roots are not: each new
//! network is checked against the host's interfaces and routes and
//! against the networks of every data root, which reserve their bridge
//! under [`RESERVATIONS`].

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_content::{FileLock, LockMode};
use berth_core::fs::{atomic_write, Durability};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni::{self, Target, CNI_VERSION};
use crate::error::{Error, Result};
use crate::netns;
use crate::ports::PortMapping;
use crate::rules;
use crate::subnet::{host_routes, Subnet};

/// The network `--network bridge` means, created on first use.
pub const DEFAULT_NETWORK: &str = "berth";

/// Where the networks of all data roots reserve their bridge name and
/// subnet (`<bridge>` files naming their conflist), host-wide.
pub const RESERVATIONS: &str = "/run/berth/bridges";

/// What `--network` takes as a mode, not as a network's name (podman
/// refuses them as names too).
pub const MODE_NAMES: [&str; 3] = ["bridge", "none", "host"];

/// The interface name a container gets in its namespace.
pub const IFNAME: &str = "eth0";

/// A network, as its conflist describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// The host bridge its containers are plugged into.
    pub bridge: String,
    /// Its IPv4 subnet.
    #[serde(serialize_with = "display")]
    pub subnet: Subnet,
    /// The bridge's address, the containers' gateway.
    pub gateway: Ipv4Addr,
    /// No route out and no masquerading: containers reach each other and
    /// the host only.
    pub internal: bool,
    /// The conflist file.
    pub conflist: PathBuf,
}

fn display<S: serde::Serializer>(v: &Subnet, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What `berth network create` asks for; what is not given is chosen.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The subnet (default: the first free 10.89.N.0/24).
    pub subnet: Option<Subnet>,
    /// The gateway (default: the subnet's first address).
    pub gateway: Option<Ipv4Addr>,
    /// The bridge's name (default: `berthN`).
    pub bridge: Option<String>,
    /// An internal network.
    pub internal: bool,
}

/// One container's attachment to a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// The container.
    pub container_id: String,
    /// The network's name.
    pub network: String,
    /// The conflist ADD ran (DEL runs the same).
    pub conflist: Value,
    /// The container's network namespace.
    pub netns: PathBuf,
    /// Its published ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// ADD's result (none while ADD runs, or after it failed half-way).
    #[serde(default)]
    pub result: Option<Value>,
}

impl Attachment {
    /// The container's address and gateway, once attached.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, Option<Ipv4Addr>)> {
        self.result.as_ref().and_then(cni::ipv4_of)
    }

    fn target(&self) -> Target<'_> {
        Target {
            container_id: &self.container_id,
            netns: &self.netns,
            ifname: IFNAME,
            ports: &self.ports,
        }
    }
}

/// The networks of one data root.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

/// Whether `name` can name a network.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `name` can name a bridge: an interface name of the kernel
/// (at most 15 bytes) that is none of "." and "..", nor "all" and
/// "default", which the kernel refuses (they name its per-interface
/// settings in /proc/sys/net/*/conf/).
fn valid_bridge(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && ![".", "..", "all", "default"].contains(&name)
}

impl Networks {
    /// The networks under `dir` (`<root>/networks`).
    pub fn open(dir: impl Into<PathBuf>) -> Networks {
        Networks { dir: dir.into() }
    }

    fn conflist_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conflist"))
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    fn attachment_path(&self, id: &str) -> PathBuf {
        self.dir.join("attachments").join(format!("{id}.json"))
    }

    fn check_name(name: &str) -> Result<()> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(Error::invalid(
                format!("network name {name:?}"),
                "use at most 64 letters, digits, '_', '.' and '-', starting with a letter or digit",
            ))
        }
    }

    /// Network `name`.
    pub fn get(&self, name: &str) -> Result<Network> {
        Self::check_name(name)?;
        let path = self.conflist_path(name);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(name.to_string()))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let list: Value = serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        describe(name, &list, path)
    }

    /// The conflist of network `name`, as stored.
    pub fn conflist(&self, name: &str) -> Result<Value> {
        let net = self.get(name)?;
        let data = std::fs::read(&net.conflist).map_err(|e| Error::io(&net.conflist, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(net.conflist.display().to_string(), e.to_string()))
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".conflist") {
                if valid_name(name) {
                    out.push(self.get(name)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The default network, created on first use.
    pub fn default_network(&self) -> Result<Network> {
        match self.get(DEFAULT_NETWORK) {
            Err(Error::NotFound(_)) => {
                match self.create(DEFAULT_NETWORK, &CreateOptions::default()) {
                    Err(Error::Exists(_)) => self.get(DEFAULT_NETWORK),
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Creates network `name`: chooses what `opts` leaves open so that its
    /// bridge and subnet collide with no interface, route or network of
    /// any data root on this host, reserves them and writes its conflist.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> Result<Network> {
        Self::check_name(name)?;
        if MODE_NAMES.contains(&name) {
            return Err(Error::invalid(
                format!("network name {name:?}"),
                format!("--network {name} means another network mode: choose another name"),
            ));
        }
        if let Some(b) = &opts.bridge {
            if !valid_bridge(b) {
                return Err(Error::invalid(
                    format!("bridge name {b:?}"),
                    "use at most 15 letters, digits, '_', '.' and '-' (not all or default)",
                ));
            }
        }
        if let Some(s) = &opts.subnet {
            s.check_usable()?;
        }
        std::fs::create_dir_all(RESERVATIONS).map_err(|e| Error::io(RESERVATIONS, e))?;
        let _host = FileLock::acquire(&Path::new(RESERVATIONS).join(".lock"), LockMode::Exclusive)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.conflist_path(name);
        if path.exists() {
            return Err(Error::Exists(name.to_string()));
        }
        let taken = Taken::scan()?;
        if let Some(b) = &opts.bridge {
            taken.check_bridge(b)?;
        }
        if let Some(s) = &opts.subnet {
            taken.check_subnet(s)?;
        }
        let (bridge, subnet) = taken.choose(opts.bridge.as_deref(), opts.subnet)?;
        let gateway = opts.gateway.unwrap_or_else(|| subnet.host(1));
        if !subnet.is_host(gateway) {
            return Err(Error::invalid(
                format!("gateway {gateway}"),
                format!("must be a host address of the subnet {subnet}"),
            ));
        }
        let net = Network {
            name: name.to_string(),
            bridge,
            subnet,
            gateway,
            internal: opts.internal,
            conflist: path.clone(),
        };
        let list = conflist(&net, &self.ipam_dir());
        let data = serde_json::to_vec_pretty(&list)
            .map_err(|e| Error::invalid("conflist", e.to_string()))?;
        atomic_write(&path, &data, Durability::Durable).map_err(|e| Error::io(&path, e))?;
        reserve(&net)?;
        Ok(net)
    }

    /// Removes network `name`: its conflist, allocations, reservation and
    /// bridge. Refused while containers are attached to it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let net = self.get(name)?;
        let users: Vec<String> = self
            .attachments()?
            .into_iter()
            .filter(|a| a.network == name)
            .map(|a| a.container_id[..12.min(a.container_id.len())].to_string())
            .collect();
        if !users.is_empty() {
            return Err(Error::InUse {
                name: name.to_string(),
                ids: users.join(", "),
            });
        }
        let reservation = Path::new(RESERVATIONS).join(&net.bridge);
        let owner = reserved_by(&reservation);
        // The bridge and its rules are another data root's now (see
        // `reserve`): only this network's files go.
        let theirs = owner.as_ref().is_some_and(|c| !same_file(c, &net.conflist));
        if !theirs {
            rules::remove(&net)?;
            netns::delete_link(&net.bridge)?;
        }
        let ipam = self.ipam_dir().join(name);
        match std::fs::remove_dir_all(&ipam) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&ipam, e)),
        }
        if owner.is_some() && !theirs {
            let _ = std::fs::remove_file(&reservation);
        }
        std::fs::remove_file(&net.conflist).map_err(|e| Error::io(&net.conflist, e))
    }

    /// Every attachment record (attached containers, and those whose
    /// attachment a crash interrupted).
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let dir = self.dir.join("attachments");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if let Some(a) = self.attachment(id)? {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// Container `id`'s attachment record, if it has a readable one. One
    /// that does not parse (what a power loss can leave of a record
    /// written without fsync) says nothing usable: it is logged and taken
    /// as none, so that it blocks neither other containers' attachments
    /// nor this one's next (which rewrites it); [`Networks::detach`]
    /// removes it.
    pub fn attachment(&self, id: &str) -> Result<Option<Attachment>> {
        let path = self.attachment_path(id);
        match std::fs::read(&path) {
            Ok(data) => match serde_json::from_slice(&data) {
                Ok(a) => Ok(Some(a)),
                Err(e) => {
                    tracing::warn!("{}: unreadable, ignored: {e}", path.display());
                    Ok(None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn save(&self, a: &Attachment) -> Result<()> {
        let path = self.attachment_path(&a.container_id);
        let dir = self.dir.join("attachments");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let data =
            serde_json::to_vec(a).map_err(|e| Error::invalid("attachment", e.to_string()))?;
        // Volatile: a killed process leaves it in the page cache for gc; a
        // power loss takes the namespace and the rules with it, and
        // host-local does not fsync its own allocation files either.
        atomic_write(&path, &data, Durability::Volatile).map_err(|e| Error::io(&path, e))
    }

    /// Attaches container `id`, whose network namespace is `netns`, to
    /// network `name` with `ports` published (CNI ADD). The record is
    /// written before ADD runs, so a crash leaves something for
    /// [`Networks::detach`]; a failed ADD is undone with DEL.
    pub fn attach(
        &self,
        name: &str,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        if !ports.is_empty() && id.len() < 12 {
            return Err(Error::invalid(format!("container id {id:?}"), "too short"));
        }
        // Two of its own mappings on one host port: portmap would install
        // both and the first would silently win.
        for (i, p) in ports.iter().enumerate() {
            if let Some(q) = ports[..i].iter().find(|q| p.clashes(q)) {
                return Err(Error::invalid(
                    format!("-p {}", p.host_port),
                    format!(
                        "host port {} is published twice (to container ports {} and {}): give each mapping its own host port",
                        p.host_port, q.container_port, p.container_port
                    ),
                ));
            }
        }
        // Held until this container's record (with its ports) is written:
        // two containers attaching at once must not both find a port free.
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let ports_lock = FileLock::acquire(&self.dir.join(".ports.lock"), LockMode::Exclusive)?;
        for other in self.attachments()? {
            if other.container_id == id {
                continue;
            }
            if let Some(p) = ports
                .iter()
                .find(|p| other.ports.iter().any(|o| p.clashes(o)))
            {
                return Err(Error::invalid(
                    format!("-p {}", p.host_port),
                    format!(
                        "host port {} is already published by container {} (choose another host port)",
                        p.host_port,
                        &other.container_id[..12.min(other.container_id.len())]
                    ),
                ));
            }
        }
        crate::ports::check_host_free(ports)?;
        let net = self.get(name)?;
        reserve(&net)?;
        rules::ensure(&net)?;
        let mut a = Attachment {
            container_id: id.to_string(),
            network: name.to_string(),
            conflist: self.conflist(name)?,
            netns: netns.to_path_buf(),
            ports: ports.to_vec(),
            result: None,
        };
        self.save(&a)?;
        drop(ports_lock);
        match cni::add(&a.conflist, &a.target()) {
            Ok(result) => {
                a.result = Some(result);
                self.save(&a)?;
                Ok(a)
            }
            Err(e) => {
                let _ = cni::del(&a.conflist, &a.target(), None);
                let _ = std::fs::remove_file(self.attachment_path(id));
                Err(e)
            }
        }
    }

    /// CNI CHECK of container `id`'s attachment.
    pub fn check(&self, id: &str) -> Result<()> {
        let a = self.attachment(id)?.ok_or_else(|| {
            Error::invalid(format!("container {id}"), "it is not attached to a network")
        })?;
        let result = a.result.as_ref().ok_or_else(|| {
            Error::invalid(format!("container {id}"), "its attachment did not complete")
        })?;
        cni::check(&a.conflist, &a.target(), result)
    }

    /// Detaches container `id` (CNI DEL with ADD's result) and forgets its
    /// attachment; returns the network it was attached to, if any.
    pub fn detach(&self, id: &str) -> Result<Option<String>> {
        let path = self.attachment_path(id);
        let Some(a) = self.attachment(id)? else {
            // None, or an unreadable one: nothing to run DEL with.
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(&path, e)),
            };
        };
        cni::del(&a.conflist, &a.target(), a.result.as_ref())?;
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some(a.network))
    }
}

/// The conflist of `net`, whose addresses host-local keeps under `ipam`.
/// Masquerading and FORWARD accepts are the network's own rules
/// ([`crate::rules`]), not the bridge plugin's `ipMasq` or the firewall
/// plugin's, which cost iptables runs on every attach and detach.
fn conflist(net: &Network, ipam: &Path) -> Value {
    // No rangeStart: host-local hands out every host address but the
    // gateway's (wherever the gateway is), from the first.
    let range = json!({"subnet": net.subnet.to_string(), "gateway": net.gateway.to_string()});
    let mut ipam = json!({"type": "host-local", "ranges": [[range]], "dataDir": ipam});
    if !net.internal {
        ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": net.name,
        "plugins": [
            {"type": "bridge", "bridge": net.bridge, "isGateway": true, "ipMasq": false,
             "hairpinMode": true, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Reads a network back from its conflist (the first plugin, a bridge).
fn describe(name: &str, list: &Value, conflist: PathBuf) -> Result<Network> {
    let bad = |why: &str| Error::invalid(conflist.display().to_string(), why.to_string());
    let bridge = list["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["type"] == "bridge"))
        .ok_or_else(|| bad("no bridge plugin: berth manages bridge networks only"))?;
    let range = &bridge["ipam"]["ranges"][0][0];
    let subnet: Subnet = range["subnet"]
        .as_str()
        .ok_or_else(|| bad("no ipam subnet"))?
        .parse()?;
    let gateway = range["gateway"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| subnet.host(1));
    Ok(Network {
        name: name.to_string(),
        bridge: bridge["bridge"].as_str().unwrap_or("cni0").to_string(),
        subnet,
        gateway,
        internal: bridge["ipam"]["routes"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        conflist,
    })
}

/// Reserves `net`'s bridge and subnet host-wide (again after a reboot
/// emptied /run: [`Networks::attach`] calls it too).
fn reserve(net: &Network) -> Result<()> {
    let reservation = Path::new(RESERVATIONS).join(&net.bridge);
    match reserved_by(&reservation) {
        Some(c) if same_file(&c, &net.conflist) => return Ok(()),
        // Another data root's network took the bridge while /run had
        // forgotten ours (a reboot): sharing it would hand out its
        // addresses twice.
        Some(other) => {
            return Err(Error::invalid(
                format!("network {}", net.name),
                format!(
                    "its bridge {} is the bridge of network {} now: remove this network and create it again",
                    net.bridge,
                    other.display()
                ),
            ))
        }
        None => {}
    }
    std::fs::create_dir_all(RESERVATIONS).map_err(|e| Error::io(RESERVATIONS, e))?;
    let note = json!({"conflist": net.conflist, "subnet": net.subnet.to_string()});
    atomic_write(
        &reservation,
        note.to_string().as_bytes(),
        Durability::Volatile,
    )
    .map_err(|e| Error::io(&reservation, e))
}

/// Whether paths `a` and `b` name one file (however each is spelt).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The conflist a reservation file names, when that conflist still
/// exists (a reservation of a removed data root is stale).
fn reserved_by(file: &Path) -> Option<PathBuf> {
    let note: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let conflist = PathBuf::from(note["conflist"].as_str()?);
    conflist.exists().then_some(conflist)
}

/// The bridges and subnets in use on this host.
struct Taken {
    links: Vec<String>,
    subnets: Vec<(String, Subnet)>,
}

impl Taken {
    fn scan() -> Result<Taken> {
        let mut links = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
            links.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        let mut subnets: Vec<(String, Subnet)> = host_routes()?
            .into_iter()
            .map(|(dev, s)| (format!("the host's route via {dev}"), s))
            .collect();
        for entry in std::fs::read_dir(RESERVATIONS)
            .into_iter()
            .flatten()
            .flatten()
        {
            let bridge = entry.file_name().to_string_lossy().into_owned();
            if bridge.starts_with('.') {
                continue;
            }
            match reserved_by(&entry.path()) {
                Some(conflist) => {
                    let note: Value = std::fs::read(entry.path())
                        .ok()
                        .and_then(|d| serde_json::from_slice(&d).ok())
                        .unwrap_or_default();
                    if let Some(s) = note["subnet"].as_str().and_then(|s| s.parse().ok()) {
                        subnets.push((format!("network {}", conflist.display()), s));
                    }
                    links.push(bridge);
                }
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Taken { links, subnets })
    }

    /// A free bridge name and subnet: `berthN` and 10.89.N.0/24 for the
    /// first free N, with what is given kept as given.
    fn choose(&self, bridge: Option<&str>, subnet: Option<Subnet>) -> Result<(String, Subnet)> {
        for n in 0..=255u8 {
            let b = bridge.map_or_else(|| format!("berth{n}"), String::from);
            let s = match subnet {
                Some(s) => s,
                None => Subnet::new(Ipv4Addr::new(10, 89, n, 0), 24)?,
            };
            if self.check(&b, &s).is_ok() {
                return Ok((b, s));
            }
        }
        Err(Error::invalid(
            "new network",
            "no free bridge name or subnet in 10.89.0.0/16: give --subnet and --bridge",
        ))
    }

    fn check(&self, bridge: &str, subnet: &Subnet) -> Result<()> {
        self.check_bridge(bridge)?;
        self.check_subnet(subnet)
    }

    fn check_bridge(&self, bridge: &str) -> Result<()> {
        if self.links.iter().any(|l| l == bridge) {
            return Err(Error::invalid(
                format!("bridge {bridge}"),
                "the host has an interface or network of that name already (choose another --bridge)",
            ));
        }
        Ok(())
    }

    fn check_subnet(&self, subnet: &Subnet) -> Result<()> {
        if let Some((who, s)) = self.subnets.iter().find(|(_, s)| s.overlaps(subnet)) {
            return Err(Error::invalid(
                format!("subnet {subnet}"),
                format!("it overlaps {s} of {who} (choose another --subnet)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflists_describe_their_network() {
        let net = Network {
            name: "n1".into(),
            bridge: "br-n1".into(),
            subnet: "10.89.7.0/24".parse().unwrap(),
            gateway: "10.89.7.1".parse().unwrap(),
            internal: true,
            conflist: "/x/n1.conflist".into(),
        };
        let list = conflist(&net, Path::new("/x/ipam"));
        assert_eq!(list["plugins"][0]["ipMasq"], false);
        assert!(
            list["plugins"][0]["ipam"]["routes"].is_null(),
            "internal: no route out"
        );
        assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/x/ipam");
        assert_eq!(describe("n1", &list, "/x/n1.conflist".into()).unwrap(), net);
        assert!(valid_name("web_net-1.a") && !valid_name("a/b") && !valid_name("-a"));
        assert!(!valid_bridge("a-very-long-bridge") && !valid_bridge(".."));
        assert!(!valid_bridge("all") && !valid_bridge("default"));
        assert!(valid_bridge("berth0") && valid_bridge("all0"));
    }

    #[test]
    fn a_network_cannot_take_the_name_of_a_mode() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open(dir.path());
        for name in MODE_NAMES {
            let err = nets.create(name, &CreateOptions::default()).unwrap_err();
            assert!(
                err.to_string().contains("means another network mode"),
                "{name}: {err}"
            );
            assert!(!dir.path().join(format!("{name}.conflist")).exists());
        }
    }

    #[test]
    fn a_network_on_loopback_addresses_is_refused_but_an_old_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open(dir.path());
        let opts = CreateOptions {
            subnet: Some("127.89.0.0/24".parse().unwrap()),
            ..CreateOptions::default()
        };
        let err = nets.create("lo-net", &opts).unwrap_err();
        assert!(err.to_string().contains("overlaps 127.0.0.0/8"), "{err}");
        assert!(!dir.path().join("lo-net.conflist").exists());
        // One made before the check is listed and removed all the same.
        let old = Network {
            name: "old".into(),
            bridge: "bthold0".into(),
            subnet: opts.subnet.unwrap(),
            gateway: "127.89.0.1".parse().unwrap(),
            internal: true,
            conflist: dir.path().join("old.conflist"),
        };
        let list = conflist(&old, &dir.path().join("ipam"));
        std::fs::write(&old.conflist, list.to_string()).unwrap();
        assert_eq!(nets.list().unwrap(), [old]);
        nets.remove("old").unwrap();
        assert!(nets.list().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_attachment_record_blocks_no_other_container() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open(dir.path());
        // What a power loss can leave of a record written without fsync.
        let lost = "0123456789abcdef0123456789abcdef";
        std::fs::create_dir_all(dir.path().join("attachments")).unwrap();
        let record = nets.attachment_path(lost);
        std::fs::write(&record, "").unwrap();
        assert!(nets.attachments().unwrap().is_empty());
        let ports = crate::ports::parse_publish("127.0.0.1:18433:80").unwrap();
        let err = nets
            .attach("n1", "fedcba9876543210", Path::new("/x"), &ports)
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(nets.attachment(lost).unwrap().is_none());
        assert_eq!(nets.detach(lost).unwrap(), None);
        assert!(!record.exists(), "detach removes the unreadable record");
    }

    #[test]
    fn one_container_cannot_publish_a_host_port_twice() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open(dir.path());
        let mut ports = crate::ports::parse_publish("8000-8002:80-82").unwrap();
        ports.extend(crate::ports::parse_publish("127.0.0.1:8001:90").unwrap());
        let err = nets
            .attach("n1", "0123456789abcdef", Path::new("/x"), &ports)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("host port 8001 is published twice"),
            "{err}"
        );
        // Another protocol or two distinct addresses are not the same port.
        let mut ok = crate::ports::parse_publish("8001:80").unwrap();
        ok.extend(crate::ports::parse_publish("8001:80/udp").unwrap());
        ok.extend(crate::ports::parse_publish("127.0.0.1:8002:80").unwrap());
        ok.extend(crate::ports::parse_publish("127.0.0.2:8002:80").unwrap());
        let err = nets
            .attach("n1", "0123456789abcdef", Path::new("/x"), &ok)
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
    }

    #[test]
    fn a_chosen_subnet_avoids_what_is_taken() {
        let taken = Taken {
            links: vec!["berth0".into()],
            subnets: vec![("route".into(), "10.89.1.0/24".parse().unwrap())],
        };
        let (b, s) = taken.choose(None, None).unwrap();
        assert_eq!(
            (b.as_str(), s.to_string().as_str()),
            ("berth2", "10.89.2.0/24")
        );
        let err = taken
            .check("x", &"10.89.0.0/16".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("overlaps 10.89.1.0/24"), "{err}");
    }
}
