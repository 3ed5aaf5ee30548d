//! The files that tell a container who it is and how to resolve names:
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, written as
//! podman writes them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A container's DNS settings (`--dns`, `--dns-search`, `--dns-option`):
/// each, when given, replaces the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<IpAddr>,
    /// Search domains (`.` alone: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options (`ndots:2`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One line of `/etc/hosts`: an address and its names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The address.
    pub ip: IpAddr,
    /// Its names, the canonical one first.
    pub names: Vec<String>,
}

/// Where podman sends DNS queries when the host has no server a
/// container can reach.
pub const FALLBACK_SERVERS: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

/// Whether `name` is a valid host name (RFC 1123 labels, at most 253
/// characters; what `--hostname` and `--add-host` accept).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses `--add-host NAME:IP` (the address may be IPv6: the name ends at
/// the first colon).
pub fn parse_add_host(text: &str) -> Result<HostEntry> {
    let bad = |why: &str| Error::invalid(format!("--add-host {text:?}"), why.to_string());
    let (name, ip) = text
        .split_once(':')
        .ok_or_else(|| bad("expected NAME:IP"))?;
    if !valid_hostname(name) {
        return Err(bad(&format!("{name:?} is not a host name")));
    }
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
    Ok(HostEntry {
        ip,
        names: vec![name.to_string()],
    })
}

/// Parses `--dns IP`.
pub fn parse_dns_server(text: &str) -> Result<IpAddr> {
    text.parse().map_err(|_| {
        Error::invalid(
            format!("--dns {text:?}"),
            "expected the IP address of a name server",
        )
    })
}

/// Parses `--dns-search DOMAIN` (`.`: no search domains).
pub fn parse_dns_search(text: &str) -> Result<String> {
    if text == "." || valid_hostname(text) {
        Ok(text.to_string())
    } else {
        Err(Error::invalid(
            format!("--dns-search {text:?}"),
            "expected a domain name (or `.` for none)",
        ))
    }
}

/// Parses `--dns-option OPTION` (one word, as `ndots:2`).
pub fn parse_dns_option(text: &str) -> Result<String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_string())
    } else {
        Err(Error::invalid(
            format!("--dns-option {text:?}"),
            "expected one resolver option like ndots:2",
        ))
    }
}

/// `/etc/hosts`: the localhost lines, then `entries` in order.
pub fn hosts_file(entries: &[HostEntry]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4\n\
         ::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6\n",
    );
    for e in entries {
        out.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
    }
    out
}

/// The host's resolver configuration as a container should start from:
/// `/etc/resolv.conf`, or systemd-resolved's upstream list when the host
/// only points at resolved's local stub (as podman reads it).
pub fn host_resolv_conf() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers = nameservers(&text);
    if !servers.is_empty()
        && servers
            .iter()
            .all(|s| *s == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)))
    {
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    text
}

fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().split('%').next()?.parse().ok())
        .collect()
}

/// A container's `/etc/resolv.conf` from the host's (`host`) and the
/// user's settings: each of `dns`'s fields replaces the host's. Unless
/// the container shares the host's network (`host_network`), the host's
/// loopback servers (127.0.0.0/8, ::1) are dropped, which the container
/// cannot reach; with no server left, podman's fallback servers are used.
pub fn resolv_conf(host: &str, dns: &Dns, host_network: bool) -> String {
    let mut servers: Vec<IpAddr> = if dns.servers.is_empty() {
        nameservers(host)
            .into_iter()
            .filter(|s| host_network || !s.is_loopback())
            .collect()
    } else {
        dns.servers.clone()
    };
    if servers.is_empty() {
        servers = FALLBACK_SERVERS.iter().map(|s| IpAddr::V4(*s)).collect();
    }
    let field = |key: &str| -> Vec<String> {
        host.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .flat_map(|rest| rest.split_whitespace().map(String::from))
            .collect()
    };
    let search = match dns.search.as_slice() {
        [] => field("search"),
        [dot] if dot == "." => Vec::new(),
        s => s.to_vec(),
    };
    let options = match dns.options.as_slice() {
        [] => field("options"),
        o => o.to_vec(),
    };
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Writes `data` into the file at `path` in place: the file may be
/// bind-mounted into a running container, whose mount keeps the inode
/// (a rename would leave it reading the old file).
pub fn write_in_place(path: &Path, data: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(data.as_bytes()).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers_and_falls_back_as_podman() {
        let host =
            "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n";
        let text = resolv_conf(host, &Dns::default(), false);
        assert_eq!(
            text,
            "search example.org\nnameserver 10.0.0.2\noptions edns0\n"
        );
        let local = "nameserver 127.0.0.1\nnameserver ::1\n";
        assert_eq!(
            resolv_conf(local, &Dns::default(), false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf(local, &Dns::default(), true),
            "nameserver 127.0.0.1\nnameserver ::1\n"
        );
        let dns = Dns {
            servers: vec!["1.1.1.1".parse().unwrap()],
            search: vec![".".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            resolv_conf(host, &dns, false),
            "nameserver 1.1.1.1\noptions ndots:2\n"
        );
    }

    #[test]
    fn add_host_and_hostnames_are_checked() {
        let e = parse_add_host("db:10.0.0.5").unwrap();
        assert_eq!(e.names, ["db"]);
        let v6 = parse_add_host("v6:[fd00::1]").unwrap();
        assert_eq!(v6.ip.to_string(), "fd00::1");
        for bad in ["db", "d b:1.2.3.4", "db:1.2.3", "-x:1.2.3.4"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
        assert!(valid_hostname("web-1.example"));
        assert!(parse_dns_option("ndots:2").is_ok());
        assert!(parse_dns_option("a\nnameserver 1.1.1.1").is_err());
        assert!(!valid_hostname("a/b") && !valid_hostname("") && !valid_hostname("a..b"));
        let hosts = hosts_file(&[e]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost"));
        assert!(hosts.ends_with("10.0.0.5\tdb\n"));
    }
}
